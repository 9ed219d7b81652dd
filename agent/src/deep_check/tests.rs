//! Deep checks against servers on 127.0.0.1: an HTTPS target examined address by address with
//! its TLS chain, a refused port, and the target of every probe kind.

use std::sync::Arc;

use rcgen::{CertificateParams, DnType, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil_proto::check_spec::Probe;
use vigil_proto::{HttpProbe, IcmpProbe, TcpProbe, TlsOptions};

use super::*;

fn options() -> Options {
    Options {
        federator: "http://127.0.0.1:1".into(),
        claimer: "pod-1".into(),
        node: "n1".into(),
        selector: HashMap::new(),
        resolver: Some("127.0.0.1:9".parse().unwrap()),
        max_hops: 2,
        hop_timeout: Duration::from_millis(300),
    }
}

fn http_spec(url: &str) -> CheckSpec {
    CheckSpec {
        id: "shop/web".into(),
        target: url.into(),
        interval_ms: 1_000,
        timeout_ms: 500,
        probe: Some(Probe::Http(HttpProbe {
            url: url.into(),
            tls: Some(TlsOptions {
                insecure_skip_verify: true,
                ..Default::default()
            }),
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// An HTTPS server on 127.0.0.1 answering every request with 200 "ok", with a self-signed
/// certificate for `deep.test`.
async fn https_server() -> SocketAddr {
    let mut params = CertificateParams::new(vec!["deep.test".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "deep.test");
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(cert.der().to_vec())],
        PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap(),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

fn section<'a>(findings: &'a [DeepCheckFinding], prefix: &str) -> &'a DeepCheckFinding {
    findings
        .iter()
        .find(|f| f.section.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} section in {findings:#?}"))
}

#[tokio::test]
async fn https_target_is_examined_per_address_with_its_chain() {
    let addr = https_server().await;
    let spec = http_spec(&format!("https://127.0.0.1:{}/", addr.port()));
    let (outcome, summary, findings) = examine(&spec, &options()).await;
    assert_eq!(outcome, Outcome::Success, "{summary}");
    assert!(summary.contains("all 1 addresses answer"), "{summary}");

    let dns = section(&findings, "dns");
    assert_eq!(
        dns.summary,
        "127.0.0.1 is an IP address; nothing to resolve"
    );
    let per_ip = section(&findings, &format!("address {addr}"));
    assert_eq!(per_ip.outcome, Outcome::Success as i32, "{per_ip:?}");
    for phase in [
        "phase_connect_seconds",
        "phase_tls_seconds",
        "phase_processing_seconds",
    ] {
        assert!(per_ip.values.contains_key(phase), "{phase} in {per_ip:?}");
    }
    assert_eq!(per_ip.details["status_code"], "200");
    let chain = section(&findings, &format!("tls chain {addr}"));
    assert_eq!(chain.outcome, Outcome::Success as i32, "{chain:?}");
    assert_eq!(chain.details["cert_0_subject"], "CN=deep.test");
    assert_eq!(chain.details["cert_0_issuer"], "CN=deep.test");
    assert!(chain.details.contains_key("cert_0_not_after"));
    assert_eq!(chain.values["certificates"], 1.0);
    // TTL probing either reaches loopback or says why it cannot run; it never fails the run.
    let trace = section(&findings, "traceroute 127.0.0.1");
    assert!(
        trace.summary.starts_with("reached 127.0.0.1 in 1 hop")
            || trace
                .summary
                .starts_with("not done: TTL probing needs a raw ICMP socket"),
        "{trace:?}"
    );
}

#[tokio::test]
async fn a_refused_port_is_a_finding_not_an_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut opts = options();
    opts.max_hops = 0;
    let spec = http_spec(&format!("http://127.0.0.1:{port}/healthz"));
    let (outcome, summary, findings) = examine(&spec, &opts).await;
    assert_eq!(outcome, Outcome::Failure);
    assert!(
        summary.starts_with("the check run from here: FAILURE (connect to 127.0.0.1:"),
        "{summary}"
    );
    assert!(summary.contains("1 of 1 addresses fail"), "{summary}");
    let per_ip = section(&findings, "address 127.0.0.1:");
    assert!(per_ip.summary.ends_with("connection refused"), "{per_ip:?}");
    assert!(
        !findings.iter().any(|f| f.section.starts_with("tls chain")),
        "plain HTTP"
    );
    assert!(
        !findings.iter().any(|f| f.section.starts_with("traceroute")),
        "--max-hops 0"
    );
}

#[test]
fn targets_of_every_probe_kind() {
    let mut spec = http_spec("https://[::1]:8443/x");
    let t = target::of(&spec).unwrap();
    assert_eq!((t.host.as_str(), t.port, t.pinnable), ("::1", 8443, true));
    assert!(t.tls.unwrap().insecure_skip_verify);

    spec.probe = Some(Probe::Tcp(TcpProbe {
        address: "db.data.svc:5432".into(),
        ..Default::default()
    }));
    let t = target::of(&spec).unwrap();
    assert_eq!(
        (t.host.as_str(), t.port, t.tls),
        ("db.data.svc", 5432, None)
    );

    spec.probe = Some(Probe::Tls(vigil_proto::TlsProbe {
        address: "10.0.0.1:443".into(),
        server_name: "api.example".into(),
        ..Default::default()
    }));
    assert_eq!(
        target::of(&spec).unwrap().tls.unwrap().server_name,
        "api.example"
    );

    spec.probe = Some(Probe::Icmp(IcmpProbe {
        host: "10.0.0.1".into(),
        ..Default::default()
    }));
    let t = target::of(&spec).unwrap();
    assert_eq!((t.port, t.pinnable), (0, false));

    spec.probe = Some(Probe::Dns(vigil_proto::DnsProbe {
        name: "example.org".into(),
        server: "10.0.0.53:5353".into(),
        ..Default::default()
    }));
    let t = target::of(&spec).unwrap();
    assert_eq!((t.host.as_str(), t.port), ("10.0.0.53", 5353));
    assert_eq!(t.dns_name.as_deref(), Some("example.org"));

    spec.probe = Some(Probe::Tcp(TcpProbe {
        address: "no-port".into(),
        ..Default::default()
    }));
    assert_eq!(
        target::of(&spec).unwrap_err(),
        "address \"no-port\" is not host:port"
    );
    spec.probe = None;
    assert_eq!(target::of(&spec).unwrap_err(), "the check has no probe");
}

#[tokio::test]
async fn an_unreachable_federator_is_the_only_error() {
    let mut opts = options();
    opts.federator = "not a url".into();
    let err = run(&opts).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("federator URL \"not a url\" is not valid"),
        "{err}"
    );
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    opts.federator = format!("http://127.0.0.1:{port}");
    let err = run(&opts).await.unwrap_err();
    assert!(matches!(err, DeepCheckError::Connect { .. }), "{err}");
}
