//! HTTP and TCP probes against real servers on 127.0.0.1, hostile ones included: every case
//! ends with the right outcome and a reason that names the cause, within the timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use vigil_agent::probe;
use vigil_agent::scheduler::{Identity, run_check};
use vigil_proto::{
    CheckSpec, HttpProbe, Outcome, ProbeResult, StatusRange, TcpProbe, check_spec::Probe,
};

async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn web() -> SocketAddr {
    serve(
        Router::new()
            .route("/ok", get(|| async { "ok" }))
            .route(
                "/fail",
                get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down") }),
            )
            .route(
                "/json",
                get(|| async {
                    (
                        [(header::CONTENT_TYPE, "application/json")],
                        r#"{"status":"green"}"#,
                    )
                }),
            )
            .route(
                "/redirect",
                get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/ok")]) }),
            )
            .route(
                "/loop",
                get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/loop")]) }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            )
            .route(
                "/endless",
                get(|| async {
                    // An endless body: the probe must stop reading at maxBodyBytes.
                    let chunks = futures::stream::repeat_with(|| {
                        Ok::<_, std::io::Error>(bytes::Bytes::from_static(&[b'x'; 8192]))
                    });
                    Response::new(Body::from_stream(chunks)).into_response()
                }),
            ),
    )
    .await
}

fn identity() -> Identity {
    Identity {
        agent_id: "a".into(),
        node: "n".into(),
        cluster: "c".into(),
    }
}

fn http_spec(url: String, timeout_ms: u64, f: impl FnOnce(&mut HttpProbe)) -> CheckSpec {
    let mut p = HttpProbe {
        url,
        follow_redirects: true,
        ..Default::default()
    };
    f(&mut p);
    CheckSpec {
        id: "ns/c".into(),
        target: p.url.clone(),
        interval_ms: 10_000,
        timeout_ms,
        probe: Some(Probe::Http(p)),
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

#[tokio::test]
async fn http_success_records_status_and_phases() {
    let addr = web().await;
    let r = run(http_spec(format!("http://{addr}/ok"), 1000, |p| {
        p.body_matches = "^ok$".into()
    }))
    .await;
    assert_eq!(outcome(&r), (Outcome::Success, ""));
    assert_eq!(r.details["status_code"], "200");
    assert_eq!(r.details["resolved_ip"], "127.0.0.1");
    for phase in [
        "phase_connect_seconds",
        "phase_processing_seconds",
        "phase_transfer_seconds",
    ] {
        assert!(r.values.contains_key(phase), "{phase} in {:?}", r.values);
    }
}

#[tokio::test]
async fn http_failures_name_their_cause() {
    let addr = web().await;
    let r = run(http_spec(format!("http://{addr}/fail"), 1000, |_| {})).await;
    assert_eq!(outcome(&r), (Outcome::Failure, "status 503, expected 2xx"));

    let r = run(http_spec(format!("http://{addr}/fail"), 1000, |p| {
        p.expect_status = vec![
            StatusRange { from: 200, to: 200 },
            StatusRange { from: 300, to: 399 },
        ];
    }))
    .await;
    assert_eq!(
        outcome(&r),
        (Outcome::Failure, "status 503, expected 200, 300-399")
    );

    let r = run(http_spec(format!("http://{addr}/ok"), 1000, |p| {
        p.body_matches = "^healthy$".into()
    }))
    .await;
    assert_eq!(
        outcome(&r),
        (Outcome::Failure, "body did not match \"^healthy$\"")
    );

    let r = run(http_spec(format!("http://{addr}/json"), 1000, |p| {
        p.body_contains = "red\"".into()
    }))
    .await;
    assert_eq!(
        outcome(&r),
        (Outcome::Failure, "body did not contain \"red\\\"\"")
    );

    let closed = {
        TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let r = run(http_spec(format!("http://{closed}/"), 1000, |_| {})).await;
    assert_eq!(
        outcome(&r),
        (
            Outcome::Failure,
            format!("connect to {closed} failed: connection refused").as_str()
        )
    );
}

#[tokio::test]
async fn http_redirects_are_followed_or_not_and_loops_are_cut() {
    let addr = web().await;
    let r = run(http_spec(format!("http://{addr}/redirect"), 1000, |_| {})).await;
    assert_eq!(outcome(&r), (Outcome::Success, ""));
    assert_eq!(r.details["redirects"], "1");

    let r = run(http_spec(format!("http://{addr}/redirect"), 1000, |p| {
        p.follow_redirects = false
    }))
    .await;
    assert_eq!(outcome(&r), (Outcome::Failure, "status 302, expected 2xx"));

    let r = run(http_spec(format!("http://{addr}/loop"), 2000, |_| {})).await;
    assert_eq!(
        outcome(&r),
        (
            Outcome::Failure,
            "more than 10 redirects (redirect loop?), last to /loop"
                .to_string()
                .as_str()
        )
    );
}

#[tokio::test]
async fn http_timeout_names_the_phase_and_never_hangs() {
    let addr = web().await;
    let started = Instant::now();
    let r = run(http_spec(format!("http://{addr}/slow"), 200, |_| {})).await;
    let took = started.elapsed();
    assert_eq!(
        outcome(&r),
        (
            Outcome::Timeout,
            "timed out after 200ms in waiting for the response headers"
        )
    );
    // Bounded by the timeout, not by the 30 s the server would take (precision is benchmarked).
    assert!(
        took < Duration::from_secs(5),
        "bounded by the timeout: {took:?}"
    );
}

#[tokio::test]
async fn http_server_that_never_sends_headers_times_out() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s); // accept, read nothing, answer nothing
        }
    });
    let r = run(http_spec(format!("http://{addr}/"), 300, |_| {})).await;
    assert_eq!(
        outcome(&r),
        (
            Outcome::Timeout,
            "timed out after 300ms in waiting for the response headers"
        )
    );
}

#[tokio::test]
async fn http_endless_body_is_read_only_to_the_limit() {
    let addr = web().await;
    let r = run(http_spec(format!("http://{addr}/endless"), 2000, |p| {
        p.max_body_bytes = 100_000;
        p.body_matches = "^x+$".into();
    }))
    .await;
    assert_eq!(outcome(&r), (Outcome::Success, ""));
    assert_eq!(r.values["content_length"], 100_000.0);
    assert!(r.details["body_truncated"].contains("100000"));
}

#[tokio::test]
async fn http_retries_report_the_attempt_that_decided() {
    let addr = web().await;
    let mut spec = http_spec(format!("http://{addr}/fail"), 500, |_| {});
    spec.retries = 2;
    let r = run(spec).await;
    assert_eq!((r.outcome(), r.attempt), (Outcome::Failure, 3));
}

#[tokio::test]
async fn https_against_a_plain_server_fails_in_the_handshake() {
    let addr = web().await;
    let r = run(http_spec(format!("https://{addr}/ok"), 1000, |_| {})).await;
    assert_eq!(r.outcome(), Outcome::Failure);
    assert!(
        r.reason
            .starts_with(&format!("TLS handshake with {addr} failed: ")),
        "{}",
        r.reason
    );
}

fn tcp_spec(address: String, send: &str, expect: &str) -> CheckSpec {
    CheckSpec {
        id: "ns/t".into(),
        target: address.clone(),
        interval_ms: 10_000,
        timeout_ms: 500,
        probe: Some(Probe::Tcp(TcpProbe {
            address,
            send: send.into(),
            expect: expect.into(),
            ..Default::default()
        })),
        ..Default::default()
    }
}

async fn line_server(greeting: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(greeting).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn tcp_connect_send_and_expect() {
    let addr = line_server(b"220 banner\r\n+PONG\r\n").await;
    let r = run(tcp_spec(addr.to_string(), "PING", "^\\+PONG$")).await;
    assert_eq!(outcome(&r), (Outcome::Success, ""));

    let r = run(tcp_spec(addr.to_string(), "PING", "^\\+OK$")).await;
    assert_eq!(
        outcome(&r),
        (
            Outcome::Failure,
            "connection closed before a line matched \"^\\\\+OK$\" (received 19 bytes)"
        )
    );

    let closed = {
        TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let r = run(tcp_spec(closed.to_string(), "", "")).await;
    assert_eq!(
        outcome(&r),
        (
            Outcome::Failure,
            format!("connect to {closed} failed: connection refused").as_str()
        )
    );
}

#[tokio::test]
async fn tcp_garbage_flood_is_bounded() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move { while s.write_all(&[b'z'; 4096]).await.is_ok() {} });
        }
    });
    let r = run(tcp_spec(addr.to_string(), "", "^never$")).await;
    assert_eq!(
        outcome(&r),
        (
            Outcome::Failure,
            "no line matched \"^never$\" in the first 65536 bytes"
        )
    );
}
