//! `vigil-agent` standalone as a drop-in for blackbox_exporter: Debian's real
//! `prometheus-blackbox-exporter` and the real `vigil-agent` load the same modules file and
//! probe the same local targets (HTTP, TCP, gRPC health, DNS, ICMP to 127.0.0.1); for every
//! (module, target) pair both must agree on `probe_success`, and Vigil must emit every metric
//! name blackbox does, except the few listed in [`NOT_EMITTED`].

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::Redirect;
use axum::routing::{get, post};
use hickory_proto::op::{Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, UdpSocket};
use tonic_health::ServingStatus;
use vigil_e2e::{Proc, bin, free_addr, wait_for};

const BLACKBOX: &str = "/usr/bin/prometheus-blackbox-exporter";

/// Names blackbox may emit that Vigil does not (the probes do not measure them).
const NOT_EMITTED: &[&str] = &[
    // Needs the received packet's IP header; blackbox reads it from a raw socket.
    "probe_icmp_reply_hop_limit",
    // Only with an SOA answer.
    "probe_dns_serial",
    // Verified-chain details Vigil's probes do not record.
    "probe_ssl_last_chain_expiry_timestamp_seconds",
    "probe_ssl_last_chain_info",
];

/// Names Vigil must emit per prober, whatever blackbox does.
fn core_names(prober: &str) -> &'static [&'static str] {
    match prober {
        "http" => &[
            "probe_success",
            "probe_duration_seconds",
            "probe_http_status_code",
            "probe_http_duration_seconds",
            "probe_http_version",
        ],
        "dns" => &[
            "probe_success",
            "probe_duration_seconds",
            "probe_dns_answer_rrs",
        ],
        "icmp" => &[
            "probe_success",
            "probe_duration_seconds",
            "probe_icmp_duration_seconds",
        ],
        "grpc" => &[
            "probe_success",
            "probe_duration_seconds",
            "probe_grpc_status_code",
            "probe_grpc_healthcheck_response",
        ],
        _ => &["probe_success", "probe_duration_seconds"],
    }
}

const MODULES: &str = r#"
modules:
  http_2xx:
    prober: http
    timeout: 3s
  http_post_2xx:
    prober: http
    timeout: 3s
    http:
      method: POST
  http_body:
    prober: http
    timeout: 3s
    http:
      valid_status_codes: [200]
      fail_if_body_not_matches_regexp: ["healthy"]
  http_no_redirect:
    prober: http
    timeout: 3s
    http:
      follow_redirects: false
  tcp_connect:
    prober: tcp
    timeout: 3s
  tcp_banner:
    prober: tcp
    timeout: 3s
    tcp:
      query_response:
        - expect: "^READY"
  grpc_plain:
    prober: grpc
    timeout: 3s
    grpc:
      tls: false
  grpc_ok:
    prober: grpc
    timeout: 3s
    grpc:
      service: ok
  grpc_down:
    prober: grpc
    timeout: 3s
    grpc:
      service: down
  icmp:
    prober: icmp
    timeout: 3s
    icmp:
      preferred_ip_protocol: ip4
  dns_a:
    prober: dns
    timeout: 3s
    dns:
      query_name: one.test
      query_type: A
      validate_answer_rrs:
        fail_if_not_matches_regexp: ["10\\.0\\.0\\.1"]
  dns_wrong_answer:
    prober: dns
    timeout: 3s
    dns:
      query_name: one.test
      query_type: A
      validate_answer_rrs:
        fail_if_not_matches_regexp: ["10\\.9\\.9\\.9"]
  dns_nxdomain:
    prober: dns
    timeout: 3s
    dns:
      query_name: missing.test
      query_type: A
  dns_nxdomain_expected:
    prober: dns
    timeout: 3s
    dns:
      query_name: missing.test
      query_type: A
      valid_rcodes: [NXDOMAIN]
"#;

async fn http_server() -> SocketAddr {
    let app = Router::new()
        .route(
            "/ok",
            get(|| async { "all healthy\n" }).post(|| async { "posted" }),
        )
        .route("/post-only", post(|| async { "posted" }))
        .route(
            "/unavailable",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down\n") }),
        )
        .route("/other", get(|| async { "nothing to see\n" }))
        .route("/redirect", get(|| async { Redirect::to("/ok") }));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Accepts, says `READY`, and holds the connection a moment.
async fn banner_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(b"READY to serve\n").await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            });
        }
    });
    addr
}

/// A tonic health server: "" and "ok" SERVING, "down" NOT_SERVING.
async fn grpc_server() -> SocketAddr {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", ServingStatus::Serving)
        .await;
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
        let _reporter = reporter;
        axum::serve(listener, router).await.unwrap();
    });
    addr
}

/// A UDP DNS server: `one.test. A 10.0.0.1`, NXDOMAIN for everything else.
async fn dns_server() -> SocketAddr {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
            let Ok(query) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut m = Message::response(query.metadata.id, OpCode::Query);
            m.metadata.recursion_desired = query.metadata.recursion_desired;
            m.metadata.recursion_available = true;
            m.add_queries(query.queries.iter().cloned());
            if let Some(q) = query.queries.first() {
                let name = q.name().to_string().to_ascii_lowercase();
                if name == "one.test." && q.query_type() == RecordType::A {
                    m.add_answer(Record::from_rdata(
                        q.name().clone(),
                        60,
                        RData::A(A::from(Ipv4Addr::new(10, 0, 0, 1))),
                    ));
                } else {
                    m.metadata.response_code = ResponseCode::NXDomain;
                }
            }
            let _ = udp.send_to(&m.to_vec().unwrap(), peer).await;
        }
    });
    addr
}

async fn get_text(client: &reqwest::Client, url: &str) -> Option<(u16, String)> {
    let resp = client
        .get(url)
        .header("X-Prometheus-Scrape-Timeout-Seconds", "5")
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

/// Metric names and the value of `probe_success` in an exposition.
fn parse(text: &str) -> (BTreeSet<String>, Option<f64>) {
    let mut names = BTreeSet::new();
    let mut success = None;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name = line.split(['{', ' ']).next().unwrap_or_default().to_owned();
        if name == "probe_success" {
            success = line.rsplit(' ').next().and_then(|v| v.parse().ok());
        }
        names.insert(name);
    }
    (names, success)
}

async fn wait_up(client: &reqwest::Client, what: &str, url: &str) {
    wait_for(what, Duration::from_secs(20), || async {
        get_text(client, url).await.filter(|(s, _)| *s == 200)
    })
    .await;
}

fn start_agent(dir: &Path, listen: SocketAddr, modules: &Path) -> Proc {
    Proc::start(
        "vigil-agent",
        &bin("vigil-agent"),
        &[
            "--listen".into(),
            listen.to_string(),
            "--modules".into(),
            modules.display().to_string(),
        ],
        dir,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vigil_answers_probe_like_blackbox_exporter() {
    assert!(
        Path::new(BLACKBOX).exists(),
        "{BLACKBOX} is missing; install Debian's prometheus-blackbox-exporter package"
    );
    let dir = tempfile::tempdir().unwrap();
    let modules = dir.path().join("blackbox.yml");
    std::fs::write(&modules, MODULES).unwrap();

    let http = http_server().await;
    let banner = banner_server().await;
    let grpc = grpc_server().await;
    let dns = dns_server().await;
    let closed = free_addr();

    let bb_addr = free_addr();
    let _blackbox = Proc::start(
        "blackbox_exporter",
        Path::new(BLACKBOX),
        &[
            format!("--config.file={}", modules.display()),
            format!("--web.listen-address={bb_addr}"),
        ],
        dir.path(),
    );
    let vigil_addr = free_addr();
    let _vigil = start_agent(dir.path(), vigil_addr, &modules);
    let client = reqwest::Client::new();
    wait_up(
        &client,
        "blackbox_exporter",
        &format!("http://{bb_addr}/-/healthy"),
    )
    .await;
    wait_up(
        &client,
        "vigil-agent",
        &format!("http://{vigil_addr}/healthz"),
    )
    .await;

    // (module, prober, target, expected probe_success)
    let cases: Vec<(&str, &str, String, bool)> = vec![
        ("http_2xx", "http", format!("http://{http}/ok"), true),
        ("http_2xx", "http", format!("{http}/ok"), true),
        (
            "http_2xx",
            "http",
            format!("http://{http}/unavailable"),
            false,
        ),
        ("http_2xx", "http", format!("http://{http}/redirect"), true),
        ("http_2xx", "http", format!("http://{closed}/"), false),
        (
            "http_post_2xx",
            "http",
            format!("http://{http}/post-only"),
            true,
        ),
        (
            "http_post_2xx",
            "http",
            format!("http://{http}/other"),
            false,
        ),
        ("http_body", "http", format!("http://{http}/ok"), true),
        ("http_body", "http", format!("http://{http}/other"), false),
        (
            "http_no_redirect",
            "http",
            format!("http://{http}/redirect"),
            false,
        ),
        ("tcp_connect", "tcp", banner.to_string(), true),
        ("tcp_connect", "tcp", closed.to_string(), false),
        ("tcp_banner", "tcp", banner.to_string(), true),
        ("tcp_banner", "tcp", http.to_string(), false),
        ("grpc_plain", "grpc", grpc.to_string(), true),
        ("grpc_ok", "grpc", grpc.to_string(), true),
        ("grpc_down", "grpc", grpc.to_string(), false),
        ("grpc_plain", "grpc", closed.to_string(), false),
        ("icmp", "icmp", "127.0.0.1".to_owned(), true),
        ("dns_a", "dns", dns.to_string(), true),
        ("dns_wrong_answer", "dns", dns.to_string(), false),
        ("dns_nxdomain", "dns", dns.to_string(), false),
        ("dns_nxdomain_expected", "dns", dns.to_string(), true),
    ];
    let mut problems = Vec::new();
    for (module, prober, target, expected) in &cases {
        let query = format!("probe?module={module}&target={target}");
        let (bb_status, bb_text) = get_text(&client, &format!("http://{bb_addr}/{query}"))
            .await
            .expect("blackbox_exporter answers /probe");
        let (v_status, v_text) = get_text(&client, &format!("http://{vigil_addr}/{query}"))
            .await
            .expect("vigil-agent answers /probe");
        assert_eq!((bb_status, v_status), (200, 200), "{query}");
        let (bb_names, bb_success) = parse(&bb_text);
        let (v_names, v_success) = parse(&v_text);
        let want = Some(if *expected { 1.0 } else { 0.0 });
        if *prober == "icmp" && bb_success != want {
            eprintln!(
                "NOTE: blackbox_exporter cannot ping 127.0.0.1 here (probe_success {bb_success:?}); \
                 the ICMP pair is compared on metric names only. Vigil said {v_success:?}."
            );
        } else {
            if bb_success != want {
                problems.push(format!(
                    "{query}: blackbox probe_success {bb_success:?}, the test expected {want:?}"
                ));
            }
            if v_success != bb_success {
                let debug = get_text(&client, &format!("http://{vigil_addr}/{query}&debug=true"))
                    .await
                    .map(|(_, t)| t)
                    .unwrap_or_default();
                problems.push(format!(
                    "{query}: vigil probe_success {v_success:?}, blackbox {bb_success:?}\n{debug}"
                ));
            }
        }
        let missing: Vec<&String> = bb_names
            .iter()
            .filter(|n| !v_names.contains(*n) && !NOT_EMITTED.contains(&n.as_str()))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "{query}: vigil lacks {missing:?} that blackbox emits\n--- blackbox:\n{bb_text}--- vigil:\n{v_text}"
            ));
        }
        for name in core_names(prober) {
            if !v_names.contains(*name) {
                problems.push(format!("{query}: vigil lacks {name}\n{v_text}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));

    // The same refusals, word for word.
    for query in [
        format!("probe?module=nope&target={http}"),
        "probe?module=http_2xx".to_owned(),
    ] {
        let bb = get_text(&client, &format!("http://{bb_addr}/{query}")).await;
        let vigil = get_text(&client, &format!("http://{vigil_addr}/{query}")).await;
        assert_eq!(vigil, bb, "{query}");
        assert_eq!(vigil.map(|(s, _)| s), Some(400), "{query}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_modules_file_stops_the_agent_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let modules = dir.path().join("bad.yml");
    std::fs::write(
        &modules,
        "modules:\n  web:\n    prober: http\n    http:\n      valid_status_code: [200]\n",
    )
    .unwrap();
    let mut agent = start_agent(dir.path(), free_addr(), &modules);
    let status = agent.wait_exit(Duration::from_secs(20)).await;
    assert!(!status.success());
    let log = agent.log_text();
    let want = format!(
        "modules file {}: module \"web\", field http.valid_status_code: unknown field `valid_status_code`",
        modules.display()
    );
    assert!(log.contains(&want), "log lacks {want:?}:\n{log}");
}
