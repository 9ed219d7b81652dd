//! Deep checks end to end, in process: a failing HTTP check on 127.0.0.1 is claimed by one of
//! two concurrent `vigil_agent::deep_check` runs, examined against the real server, and its
//! findings show in `/api/v1/checks` and, from the next resend, in the alert's description in
//! a real Alertmanager. A claimer that dies releases its claim after the lease.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vigil_agent::deep_check::{self, Done};
use vigil_proto::federator_client::FederatorClient;
use vigil_proto::{ClaimDeepCheckRequest, Outcome, ProbeResult};

mod common;
use common::Fed;
use common::am::{Am, wait_for};

const LEASE: Duration = Duration::from_millis(500);

/// An HTTP server on 127.0.0.1 that answers everything with 503.
async fn unavailable_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp
                    .write_all(
                        b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nconnection: close\r\n\r\ndown",
                    )
                    .await;
            });
        }
    });
    addr
}

fn checks(web: SocketAddr) -> String {
    format!(
        "apiVersion: vigil.dev/v1alpha1
kind: HealthCheck
metadata: {{name: web, namespace: shop}}
spec:
  failureThreshold: 1
  timeout: 500ms
  probe: {{http: {{url: 'http://{web}/healthz'}}}}
---
apiVersion: vigil.dev/v1alpha1
kind: HealthCheck
metadata: {{name: api, namespace: shop}}
spec:
  failureThreshold: 1
  probe: {{tcp: {{address: '127.0.0.1:1'}}}}
"
    )
}

fn failed(seq: u64, check: &str, target: &str, reason: &str) -> ProbeResult {
    ProbeResult {
        seq,
        check_id: check.into(),
        target: target.into(),
        start_unix_nanos: i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        )
        .unwrap(),
        outcome: Outcome::Failure as i32,
        reason: reason.into(),
        attempt: 1,
        ..Default::default()
    }
}

fn options(fed: &Fed, claimer: &str) -> deep_check::Options {
    deep_check::Options {
        federator: format!("http://{}", fed.grpc),
        claimer: claimer.into(),
        node: "deep-node".into(),
        selector: HashMap::from([("check".to_owned(), "shop/web".to_owned())]),
        resolver: Some("127.0.0.1:9".parse().unwrap()),
        max_hops: 2,
        hop_timeout: Duration::from_millis(300),
    }
}

async fn check_view(fed: &Fed, id: &str) -> Option<Value> {
    let v: Value = reqwest::get(format!("http://{}/api/v1/checks", fed.http))
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["checks"]
        .as_array()?
        .iter()
        .find(|c| c["id"] == id)
        .cloned()
}

#[tokio::test]
async fn one_of_two_claimers_examines_the_failing_check_and_findings_reach_api_and_alert() {
    let web = unavailable_server().await;
    let am = Am::start().await;
    let fed = Fed::start(&checks(web), |o| {
        o.alertmanagers = vec![am.url()];
        o.alert_resend_interval = Duration::from_millis(500);
        o.deep_check_lease = LEASE;
    })
    .await;
    let url = format!("http://{web}/healthz");
    let (tx, mut inbound) = common::open_stream(fed.grpc, "agent-1").await;
    tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
    tx.send(common::batch_of(vec![failed(
        1,
        "shop/web",
        &url,
        "status 503, expected 2xx",
    )]))
    .await
    .unwrap();
    wait_for(
        "web failing in Alertmanager",
        Duration::from_secs(10),
        || am.alert("HealthCheckFailing"),
    )
    .await;

    let (pod1, pod2) = (options(&fed, "pod-1"), options(&fed, "pod-2"));
    let (a, b) = tokio::join!(deep_check::run(&pod1), deep_check::run(&pod2));
    let (a, b) = (a.unwrap(), b.unwrap());
    let reported: Vec<&Done> = [&a, &b]
        .into_iter()
        .filter(|d| matches!(d, Done::Reported { .. }))
        .collect();
    assert_eq!(reported.len(), 1, "exactly one claimer got it: {a:?} {b:?}");
    assert!([&a, &b].contains(&&Done::NothingToDo), "{a:?} {b:?}");
    let Done::Reported {
        check,
        target,
        summary,
        claim_held,
    } = reported[0]
    else {
        unreachable!()
    };
    assert_eq!(
        (check.as_str(), target.as_str()),
        ("shop/web", url.as_str())
    );
    assert!(claim_held);
    assert!(
        summary.starts_with("the check run from here: FAILURE (status 503, expected 2xx)"),
        "{summary}"
    );
    assert!(summary.contains("1 of 1 addresses fail"), "{summary}");

    // Examined once per run of failures: a third claimer has nothing to do.
    assert_eq!(
        deep_check::run(&options(&fed, "pod-3")).await.unwrap(),
        Done::NothingToDo
    );

    let view = check_view(&fed, "shop/web").await.unwrap();
    let deep = &view["deep_checks"][0];
    assert_eq!(deep["target"], url);
    assert_eq!(deep["ran_on_node"], "deep-node");
    assert_eq!(deep["outcome"], "FAILURE");
    assert_eq!(deep["summary"], summary.as_str());
    let sections: Vec<&str> = deep["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["section"].as_str().unwrap())
        .collect();
    assert_eq!(
        sections[..3],
        ["run", "dns", &format!("address {web}")][..],
        "{deep}"
    );
    assert_eq!(
        deep["findings"][2]["details"]["status_code"], "503",
        "{deep}"
    );
    assert!(
        deep["findings"][2]["values"]["phase_connect_seconds"].is_number(),
        "{deep}"
    );
    println!(
        "traceroute finding: {}",
        deep["findings"][3]["summary"].as_str().unwrap_or("-")
    );

    // The next resend quotes the findings in the alert's description.
    let alert = wait_for(
        "the findings in the alert's description",
        Duration::from_secs(10),
        || async {
            let a = am.alert("HealthCheckFailing").await?;
            a["annotations"]["description"]
                .as_str()?
                .contains("Deep check by pod-")
                .then_some(a)
        },
    )
    .await;
    let description = alert["annotations"]["description"].as_str().unwrap();
    assert!(description.contains(summary.as_str()), "{description}");
}

#[tokio::test]
async fn a_claimer_that_dies_releases_its_claim_after_the_lease() {
    let web = unavailable_server().await;
    let fed = Fed::start(&checks(web), |o| o.deep_check_lease = LEASE).await;
    let (tx, mut inbound) = common::open_stream(fed.grpc, "agent-1").await;
    tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
    tx.send(common::batch_of(vec![failed(
        1,
        "shop/api",
        "127.0.0.1:1",
        "connection refused",
    )]))
    .await
    .unwrap();
    wait_for("api failing", Duration::from_secs(5), || async {
        (check_view(&fed, "shop/api").await?["state"] == "Failing").then_some(())
    })
    .await;

    let channel = tonic::transport::Channel::from_shared(format!("http://{}", fed.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FederatorClient::new(channel);
    let claim = |claimer: &str| ClaimDeepCheckRequest {
        claimer: claimer.into(),
        selector: HashMap::from([("check".to_owned(), "shop/api".to_owned())]),
    };
    // Taken before the claim, so the lease cannot have started earlier.
    let claimed = std::time::Instant::now();
    let dead = client
        .claim_deep_check(claim("dead-pod"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dead.check.as_ref().unwrap().id, "shop/api");
    assert_eq!(dead.last_reason, "connection refused");
    let other = client
        .claim_deep_check(claim("pod-2"))
        .await
        .unwrap()
        .into_inner();
    assert!(other.claim_id.is_empty(), "held by dead-pod: {other:?}");

    // dead-pod never reports: after the lease pod-2 gets it.
    let again = wait_for("the claim released", Duration::from_secs(5), || {
        let mut client = client.clone();
        async move {
            let r = client
                .claim_deep_check(claim("pod-2"))
                .await
                .ok()?
                .into_inner();
            (!r.claim_id.is_empty()).then_some(r)
        }
    })
    .await;
    assert!(claimed.elapsed() >= LEASE, "not before the lease ran out");
    assert_ne!(again.claim_id, dead.claim_id);

    // Bad input is refused with what to fix.
    let err = client
        .claim_deep_check(ClaimDeepCheckRequest {
            claimer: "pod-3".into(),
            selector: HashMap::from([("team".to_owned(), "shop".to_owned())]),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(
        err.message().contains("scalerMetadata.team is not a key"),
        "{err}"
    );
}
