//! gRPC health and TLS certificate probes against real servers on 127.0.0.1: a tonic health
//! server (plaintext and TLS), servers with wrong, untrusted or short-lived certificates, and
//! hostile servers that speak garbage or never answer. Every case ends with the right outcome
//! and a reason that names the cause, within the timeout.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic_health::ServingStatus;
use vigil_agent::probe::tls::earliest_expiry;
use vigil_agent::probe::{self, tls_client};
use vigil_agent::scheduler::{Identity, run_check};
use vigil_proto::{CheckSpec, Outcome, ProbeResult, TlsOptions, check_spec::Probe};

// ---------------------------------------------------------------------------------------------
// Certificates

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// A server certificate chain (leaf, CA) and key for `names`, valid until `not_after`.
struct ServerCert {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

fn server_cert(ca: &Ca, names: &[&str], not_after: Option<SystemTime>) -> ServerCert {
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, names[0].to_owned());
    if let Some(t) = not_after {
        params.not_before = (SystemTime::now() - Duration::from_secs(3600)).into();
        params.not_after = t.into();
    }
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    ServerCert {
        chain: vec![
            cert.der().clone(),
            CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap(),
        ],
        key: PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
    }
}

fn acceptor(cert: ServerCert, alpn: &[&[u8]]) -> TlsAcceptor {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(cert.chain, cert.key)
    .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsAcceptor::from(Arc::new(config))
}

fn trust(ca: &Ca) -> Option<TlsOptions> {
    Some(TlsOptions {
        ca_pem: ca.pem.clone(),
        ..Default::default()
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

// ---------------------------------------------------------------------------------------------
// Servers

/// Accepts TLS connections (handshakes run per connection, so one bad client blocks nobody)
/// for axum::serve.
struct TlsListener {
    conns: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    addr: SocketAddr,
}

impl TlsListener {
    fn new(listener: TcpListener, acceptor: TlsAcceptor) -> Self {
        let addr = listener.local_addr().unwrap();
        let (tx, conns) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            while let Ok((tcp, peer)) = listener.accept().await {
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = tx.send((tls, peer)).await;
                    }
                });
            }
        });
        Self { conns, addr }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.conns.recv().await {
            Some(conn) => conn,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// A tonic health server: "" and "ok" SERVING, "down" NOT_SERVING, everything else unknown.
async fn health_server(tls: Option<TlsAcceptor>) -> SocketAddr {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("ok", ServingStatus::Serving)
        .await;
    reporter
        .set_service_status("down", ServingStatus::NotServing)
        .await;
    let router = tonic::service::Routes::new(service).into_axum_router();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        // Keeps the statuses alive as long as the server runs.
        let _reporter = reporter;
        match tls {
            None => axum::serve(listener, router).await.unwrap(),
            Some(acceptor) => axum::serve(TlsListener::new(listener, acceptor), router)
                .await
                .unwrap(),
        }
    });
    addr
}

/// A TLS server that completes handshakes and then holds the connection open, silent.
async fn tls_server(acceptor: TlsAcceptor) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                if let Ok(tls) = acceptor.accept(tcp).await {
                    std::future::pending::<()>().await;
                    drop(tls);
                }
            });
        }
    });
    addr
}

/// Accepts TCP and answers every connection with `greeting` (then holds it open); an empty
/// greeting makes a server that accepts but never says anything.
async fn raw_server(greeting: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = tcp.write_all(greeting).await;
                std::future::pending::<()>().await;
                drop(tcp);
            });
        }
    });
    addr
}

/// A port nothing listens on.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    addr
}

const GARBAGE: &[u8] = b"SSH-2.0-OpenSSH_9.6\r\nthis is not TLS at all\r\n\x00\x01\x02\xff\xfe";

// ---------------------------------------------------------------------------------------------
// Running checks through the scheduler, as the agent does

fn identity() -> Identity {
    Identity {
        agent_id: "a".into(),
        node: "n".into(),
        cluster: "c".into(),
    }
}

fn spec(target: String, timeout_ms: u64, probe: Probe) -> CheckSpec {
    CheckSpec {
        id: "ns/c".into(),
        target,
        interval_ms: 10_000,
        timeout_ms,
        probe: Some(probe),
        ..Default::default()
    }
}

async fn run(spec: CheckSpec) -> ProbeResult {
    let built: Result<Arc<dyn probe::Probe>, String> = probe::build(&spec);
    run_check(&spec, &built, &identity()).await
}

fn outcome(r: &ProbeResult) -> (Outcome, &str) {
    (r.outcome(), r.reason.as_str())
}

fn grpc(addr: SocketAddr, service: &str, tls: Option<Option<TlsOptions>>) -> CheckSpec {
    grpc_to(addr.to_string(), service, tls, 2000)
}

fn grpc_to(
    address: String,
    service: &str,
    tls: Option<Option<TlsOptions>>,
    timeout_ms: u64,
) -> CheckSpec {
    let p = vigil_proto::GrpcProbe {
        address: address.clone(),
        service: service.into(),
        tls: tls.is_some(),
        tls_options: tls.flatten(),
    };
    spec(address, timeout_ms, Probe::Grpc(p))
}

fn tls(address: String, min_validity_ms: u64, opts: Option<TlsOptions>) -> CheckSpec {
    tls_to(address, min_validity_ms, opts, 2000)
}

fn tls_to(
    address: String,
    min_validity_ms: u64,
    opts: Option<TlsOptions>,
    timeout_ms: u64,
) -> CheckSpec {
    let p = vigil_proto::TlsProbe {
        address: address.clone(),
        server_name: String::new(),
        min_validity_ms,
        tls_options: opts,
    };
    spec(address, timeout_ms, Probe::Tls(p))
}

const DAY_MS: u64 = 86_400_000;

// ---------------------------------------------------------------------------------------------
// gRPC

#[tokio::test]
async fn grpc_plaintext_health_statuses() {
    let addr = health_server(None).await;

    let r = run(grpc(addr, "", None)).await;
    assert_eq!(outcome(&r), (Outcome::Success, ""));
    assert_eq!(r.details["grpc_status"], "SERVING");
    assert_eq!(r.details["resolved_ip"], "127.0.0.1");
    assert!(r.values.contains_key("phase_connect_seconds"), "{r:?}");

    let r = run(grpc(addr, "ok", None)).await;
    assert_eq!(outcome(&r), (Outcome::Success, ""));

    let r = run(grpc(addr, "down", None)).await;
    assert_eq!(
        outcome(&r),
        (Outcome::Failure, "service \"down\" is NOT_SERVING")
    );
    assert_eq!(r.details["grpc_status"], "NOT_SERVING");

    let r = run(grpc(addr, "nope", None)).await;
    assert_eq!(
        outcome(&r),
        (
            Outcome::Failure,
            "health check failed: NotFound: service not registered"
        )
    );
}

#[tokio::test]
async fn grpc_whole_server_not_serving() {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    let router = tonic::service::Routes::new(service).into_axum_router();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _reporter = reporter;
        axum::serve(listener, router).await.unwrap()
    });
    let r = run(grpc(addr, "", None)).await;
    assert_eq!(outcome(&r), (Outcome::Failure, "the server is NOT_SERVING"));
}

#[tokio::test]
async fn grpc_over_tls_verifies_the_server() {
    let ca = new_ca("Vigil Test CA");
    let cert = server_cert(&ca, &["localhost", "127.0.0.1"], None);
    let addr = health_server(Some(acceptor(cert, &[b"h2"]))).await;

    let r = run(grpc(addr, "ok", Some(trust(&ca)))).await;
    assert_eq!(outcome(&r), (Outcome::Success, ""), "{r:?}");
    assert_eq!(r.details["grpc_status"], "SERVING");
    assert!(r.values.contains_key("phase_tls_seconds"), "{r:?}");

    // By name, too.
    let r = run(grpc_to(
        format!("localhost:{}", addr.port()),
        "down",
        Some(trust(&ca)),
        2000,
    ))
    .await;
    assert_eq!(
        outcome(&r),
        (Outcome::Failure, "service \"down\" is NOT_SERVING")
    );

    // Not trusted: the webpki roots do not know our CA.
    let r = run(grpc(addr, "ok", Some(None))).await;
    assert_eq!(
        outcome(&r),
        (
            Outcome::Failure,
            format!("TLS handshake with {addr} failed: invalid peer certificate: UnknownIssuer")
                .as_str()
        )
    );

    // Plaintext against a TLS server.
    let r = run(grpc(addr, "ok", None)).await;
    assert_eq!(r.outcome(), Outcome::Failure, "{r:?}");
    assert!(r.reason.starts_with("health check failed: "), "{r:?}");
}

#[tokio::test]
async fn grpc_refused_port() {
    let addr = closed_port().await;
    let r = run(grpc(addr, "", None)).await;
    assert_eq!(
        outcome(&r),
        (
            Outcome::Failure,
            format!("connect to {addr} failed: connection refused").as_str()
        )
    );
}

#[tokio::test]
async fn grpc_tls_against_garbage_fails_in_the_handshake() {
    let addr = raw_server(GARBAGE).await;
    let r = run(grpc(
        addr,
        "",
        Some(Some(TlsOptions {
            insecure_skip_verify: true,
            ..Default::default()
        })),
    ))
    .await;
    assert_eq!(
        outcome(&r),
        (
            Outcome::Failure,
            format!("TLS handshake with {addr} failed: received corrupt message of type InvalidContentType")
                .as_str()
        )
    );
}

#[tokio::test]
async fn grpc_plaintext_against_garbage_fails() {
    let addr = raw_server(GARBAGE).await;
    let r = run(grpc(addr, "", None)).await;
    assert_eq!(r.outcome(), Outcome::Failure, "{r:?}");
    assert!(r.reason.starts_with("health check failed: "), "{r:?}");
}

#[tokio::test]
async fn grpc_silent_server_times_out_naming_the_phase() {
    let addr = raw_server(b"").await;
    let r = run(grpc_to(addr.to_string(), "", None, 300)).await;
    assert_eq!(
        outcome(&r),
        (
            Outcome::Timeout,
            "timed out after 300ms in waiting for the health answer"
        )
    );

    let r = run(grpc_to(addr.to_string(), "", Some(None), 300)).await;
    assert_eq!(
        outcome(&r),
        (Outcome::Timeout, "timed out after 300ms in TLS handshake")
    );
}

#[tokio::test]
async fn grpc_tls_server_without_h2_is_named() {
    let ca = new_ca("Vigil Test CA");
    let addr = tls_server(acceptor(server_cert(&ca, &["127.0.0.1"], None), &[])).await;
    let r = run(grpc(addr, "", Some(trust(&ca)))).await;
    assert_eq!(
        outcome(&r),
        (
            Outcome::Failure,
            format!(
                "TLS server at {addr} did not agree to HTTP/2 (ALPN h2); it does not serve gRPC"
            )
            .as_str()
        )
    );
}

#[tokio::test]
async fn grpc_bad_config_is_an_error() {
    let r = run(grpc_to("no-port".into(), "", None, 1000)).await;
    assert_eq!(
        outcome(&r),
        (Outcome::Error, "address \"no-port\" is not host:port")
    );
    let r = run(grpc_to(
        "127.0.0.1:1".into(),
        "",
        Some(Some(TlsOptions {
            ca_pem: "not pem".into(),
            ..Default::default()
        })),
        1000,
    ))
    .await;
    assert_eq!(outcome(&r), (Outcome::Error, "caPem holds no certificate"));
}

// ---------------------------------------------------------------------------------------------
// TLS

#[tokio::test]
async fn tls_valid_certificate_records_details() {
    let ca = new_ca("Vigil Test CA");
    let not_after = SystemTime::now() + Duration::from_secs(30 * 86_400);
    let cert = server_cert(&ca, &["localhost", "127.0.0.1"], Some(not_after));
    let leaf_expiry = earliest_expiry(&cert.chain[..1]).unwrap();
    let addr = tls_server(acceptor(cert, &[])).await;

    let r = run(tls(addr.to_string(), 7 * DAY_MS, trust(&ca))).await;
    assert_eq!(outcome(&r), (Outcome::Success, ""), "{r:?}");
    assert_eq!(r.details["subject"], "CN=localhost");
    assert_eq!(r.details["issuer"], "CN=Vigil Test CA");
    assert_eq!(r.details["tls_version"], "TLSv1_3");
    assert_eq!(r.details["resolved_ip"], "127.0.0.1");
    // The leaf expires before the CA (rcgen's default notAfter is the year 4096).
    assert_eq!(r.values["ssl_earliest_cert_expiry"], leaf_expiry as f64);
    assert!((leaf_expiry - (unix_now() + 30 * 86_400)).abs() < 60);
    assert!(r.details["cert_not_after"].ends_with('Z'), "{r:?}");
    assert!(r.values.contains_key("phase_tls_seconds"));

    // By host name.
    let r = run(tls(format!("localhost:{}", addr.port()), 0, trust(&ca))).await;
    assert_eq!(outcome(&r), (Outcome::Success, ""), "{r:?}");
}

#[tokio::test]
async fn tls_certificate_expiring_within_min_validity_fails() {
    let ca = new_ca("Vigil Test CA");
    // Two days and three hours, plus a minute of slack for the test itself.
    let left = Duration::from_secs(2 * 86_400 + 3 * 3600 + 60);
    let cert = server_cert(&ca, &["127.0.0.1"], Some(SystemTime::now() + left));
    let addr = tls_server(acceptor(cert, &[])).await;

    let r = run(tls(addr.to_string(), 3 * DAY_MS, trust(&ca))).await;
    assert_eq!(r.outcome(), Outcome::Failure, "{r:?}");
    assert!(
        r.reason.starts_with(
            "certificate for 127.0.0.1 expires in 2d 3h, less than minValidity 3d (notAfter "
        ),
        "{r:?}"
    );
    assert!(r.values.contains_key("ssl_earliest_cert_expiry"));

    // The same certificate with a shorter requirement passes.
    let r = run(tls(addr.to_string(), 2 * DAY_MS, trust(&ca))).await;
    assert_eq!(outcome(&r), (Outcome::Success, ""), "{r:?}");
}

#[tokio::test]
async fn tls_expired_certificate_fails() {
    let ca = new_ca("Vigil Test CA");
    let mut cert = server_cert(&ca, &["127.0.0.1"], None);
    {
        // Expired an hour ago (notBefore two hours ago).
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.not_before = (SystemTime::now() - Duration::from_secs(7200)).into();
        params.not_after = (SystemTime::now() - Duration::from_secs(3600)).into();
        let key = KeyPair::generate().unwrap();
        cert.chain[0] = params.signed_by(&key, &ca.issuer).unwrap().der().clone();
        cert.key = PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap();
    }
    let addr = tls_server(acceptor(cert, &[])).await;

    // Verified: rustls refuses it in the handshake.
    let r = run(tls(addr.to_string(), 0, trust(&ca))).await;
    assert_eq!(r.outcome(), Outcome::Failure, "{r:?}");
    assert!(
        r.reason.starts_with(&format!(
            "TLS handshake with {addr} failed: invalid peer certificate: certificate expired"
        )),
        "{r:?}"
    );

    // Unverified: the probe itself notices.
    let r = run(tls(
        addr.to_string(),
        0,
        Some(TlsOptions {
            insecure_skip_verify: true,
            ..Default::default()
        }),
    ))
    .await;
    assert_eq!(r.outcome(), Outcome::Failure, "{r:?}");
    assert!(
        r.reason.starts_with("certificate for 127.0.0.1 expired 1h"),
        "{r:?}"
    );
}

#[tokio::test]
async fn tls_wrong_name_and_untrusted_ca_fail_in_the_handshake() {
    let ca = new_ca("Vigil Test CA");
    let addr = tls_server(acceptor(server_cert(&ca, &["other.example"], None), &[])).await;
    let r = run(tls(addr.to_string(), 0, trust(&ca))).await;
    assert_eq!(
        outcome(&r),
        (
            Outcome::Failure,
            format!(
                "TLS handshake with {addr} failed: invalid peer certificate: certificate not \
                 valid for name \"127.0.0.1\"; certificate is only valid for DnsName(\"other.example\")"
            )
            .as_str()
        )
    );

    // The right name via serverName.
    let r = run(tls(
        addr.to_string(),
        0,
        Some(TlsOptions {
            server_name: "other.example".into(),
            ..trust(&ca).unwrap()
        }),
    ))
    .await;
    assert_eq!(outcome(&r), (Outcome::Success, ""), "{r:?}");

    // The wrong name, unverified: fine.
    let r = run(tls(
        addr.to_string(),
        0,
        Some(TlsOptions {
            insecure_skip_verify: true,
            ..Default::default()
        }),
    ))
    .await;
    assert_eq!(outcome(&r), (Outcome::Success, ""), "{r:?}");

    // A CA we do not trust.
    let other = new_ca("Someone Else's CA");
    let r = run(tls(addr.to_string(), 0, trust(&other))).await;
    assert_eq!(
        outcome(&r),
        (
            Outcome::Failure,
            format!("TLS handshake with {addr} failed: invalid peer certificate: UnknownIssuer")
                .as_str()
        )
    );
}

#[tokio::test]
async fn tls_against_garbage_fails_in_the_handshake() {
    let addr = raw_server(GARBAGE).await;
    let r = run(tls(addr.to_string(), 0, None)).await;
    assert_eq!(
        outcome(&r),
        (
            Outcome::Failure,
            format!("TLS handshake with {addr} failed: received corrupt message of type InvalidContentType")
                .as_str()
        )
    );
}

#[tokio::test]
async fn tls_silent_server_times_out_in_the_handshake() {
    let addr = raw_server(b"").await;
    let r = run(tls_to(addr.to_string(), 0, None, 300)).await;
    assert_eq!(
        outcome(&r),
        (Outcome::Timeout, "timed out after 300ms in TLS handshake")
    );
}

#[tokio::test]
async fn tls_refused_port() {
    let addr = closed_port().await;
    let r = run(tls(addr.to_string(), 0, None)).await;
    assert_eq!(
        outcome(&r),
        (
            Outcome::Failure,
            format!("connect to {addr} failed: connection refused").as_str()
        )
    );
}

#[test]
fn earliest_expiry_picks_the_soonest_certificate() {
    let ca = new_ca("Vigil Test CA");
    let soon = SystemTime::now() + Duration::from_secs(86_400);
    let cert = server_cert(&ca, &["localhost"], Some(soon));
    let leaf = earliest_expiry(&cert.chain[..1]).unwrap();
    let ca_only = earliest_expiry(&cert.chain[1..]).unwrap();
    assert!(leaf < ca_only);
    assert_eq!(earliest_expiry(&cert.chain), Some(leaf));
    assert_eq!(
        earliest_expiry(&[CertificateDer::from(b"junk".to_vec())]),
        None
    );
    assert_eq!(earliest_expiry(&[]), None);
    // tls_client is shared with the probes: the CA PEM is accepted as a trust root.
    assert!(tls_client::client_config(trust(&ca).as_ref(), &[]).is_ok());
}

#[tokio::test]
async fn https_probe_records_the_earliest_certificate_expiry() {
    let ca = new_ca("Vigil Test CA");
    let not_after = SystemTime::now() + Duration::from_secs(10 * 86_400);
    let cert = server_cert(&ca, &["127.0.0.1"], Some(not_after));
    let leaf_expiry = earliest_expiry(&cert.chain[..1]).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls = TlsListener::new(listener, acceptor(cert, &[b"h2", b"http/1.1"]));
    let addr = tls.addr;
    let app = axum::Router::new().route("/ok", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(tls, app).await.unwrap() });

    let url = format!("https://{addr}/ok");
    let p = vigil_proto::HttpProbe {
        url: url.clone(),
        tls: trust(&ca),
        ..Default::default()
    };
    let r = run(spec(url, 2000, Probe::Http(p))).await;
    assert_eq!(outcome(&r), (Outcome::Success, ""), "{r:?}");
    assert_eq!(r.values["ssl_earliest_cert_expiry"], leaf_expiry as f64);
    // The server offers h2 by ALPN, so the probe spoke HTTP/2.
    assert_eq!(r.details["http_version"], "HTTP/2.0");
    assert_eq!(r.details["status_code"], "200");
}

#[tokio::test]
async fn https_probe_speaks_http1_when_the_server_offers_only_that() {
    let ca = new_ca("Vigil Test CA");
    let cert = server_cert(&ca, &["127.0.0.1"], None);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls = TlsListener::new(listener, acceptor(cert, &[b"http/1.1"]));
    let addr = tls.addr;
    let app = axum::Router::new().route("/ok", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(tls, app).await.unwrap() });

    let url = format!("https://{addr}/ok");
    let p = vigil_proto::HttpProbe {
        url: url.clone(),
        tls: trust(&ca),
        body_matches: "^ok$".into(),
        ..Default::default()
    };
    let r = run(spec(url, 2000, Probe::Http(p))).await;
    assert_eq!(outcome(&r), (Outcome::Success, ""), "{r:?}");
    assert_eq!(r.details["http_version"], "HTTP/1.1");
}
