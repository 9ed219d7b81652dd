//! NodeProblem and VigilAgentSilent against Debian's real Alertmanager: a failing node
//! diagnostic fires NodeProblem with its problem class and resolves when it clears; an agent
//! whose stream is gone for longer than --agent-silent-after fires VigilAgentSilent, resolved
//! when it reconnects.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use vigil_proto::{Outcome, ProbeResult};

mod common;
use common::Fed;
use common::am::{Am, wait_for};

const CHECKS: &str = "\
apiVersion: vigil.dev/v1alpha1
kind: HealthCheck
metadata: {name: web, namespace: shop}
spec:
  probe: {tcp: {address: '127.0.0.1:1'}}
";

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

fn labels(alert: &Value) -> BTreeMap<String, String> {
    alert["labels"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect()
}

fn memory(seq: u64, outcome: Outcome) -> ProbeResult {
    let mut r = ProbeResult {
        seq,
        check_id: "node/memory".into(),
        target: "memory".into(),
        start_unix_nanos: now(),
        outcome: outcome as i32,
        attempt: 1,
        ..Default::default()
    };
    if outcome != Outcome::Success {
        r.reason = "MemAvailable is 2% of MemTotal, below 5%".into();
        r.details
            .insert("problem".into(), "VigilMemoryPressure".into());
    }
    r
}

#[tokio::test]
async fn node_problem_fires_with_its_class_and_clears() {
    let am = Am::start().await;
    let fed = Fed::start(CHECKS, |o| {
        o.alertmanagers = vec![am.url()];
        o.alert_resend_interval = Duration::from_secs(1);
    })
    .await;
    let (tx, mut inbound) = common::open_stream(fed.grpc, "agent-1").await;
    tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });

    let sent = Instant::now();
    tx.send(common::batch_of(vec![memory(1, Outcome::Failure)]))
        .await
        .unwrap();
    let alert = wait_for(
        "NodeProblem in Alertmanager",
        Duration::from_secs(10),
        || am.alert("NodeProblem"),
    )
    .await;
    println!(
        "node problem -> visible in Alertmanager: {:?}",
        sent.elapsed()
    );
    let expected: BTreeMap<String, String> = [
        ("alertname", "NodeProblem"),
        ("cluster", "test"),
        ("diagnostic", "memory"),
        ("node", "node-1"),
        ("problem", "VigilMemoryPressure"),
        ("severity", "warning"),
        ("target", "memory"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(labels(&alert), expected);
    assert_eq!(
        alert["annotations"]["summary"],
        "Node node-1 of cluster test has VigilMemoryPressure"
    );
    assert!(
        alert["annotations"]["description"]
            .as_str()
            .unwrap()
            .ends_with("MemAvailable is 2% of MemTotal, below 5%"),
        "{alert}"
    );
    assert!(
        am.alert("HealthCheckFailing").await.is_none(),
        "a node problem is not a check alert"
    );

    tx.send(common::batch_of(vec![memory(2, Outcome::Success)]))
        .await
        .unwrap();
    wait_for("NodeProblem resolved", Duration::from_secs(10), || async {
        am.alert("NodeProblem").await.is_none().then_some(())
    })
    .await;

    // A diagnostic that could not tell (ERROR without a problem class) is not a node problem.
    let mut unsure = memory(3, Outcome::Error);
    unsure.details.clear();
    tx.send(common::batch_of(vec![unsure])).await.unwrap();
    let mut later = memory(4, Outcome::Success);
    later.check_id = "node/disk".into();
    tx.send(common::batch_of(vec![later])).await.unwrap();
    // Wait until the federator has taken both (node/disk listed), then two resends.
    let http = fed.http;
    wait_for(
        "node/disk in the API",
        Duration::from_secs(5),
        || async move {
            let v: Value = reqwest::get(format!("http://{http}/api/v1/checks"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            v["checks"]
                .as_array()?
                .iter()
                .any(|c| c["id"] == "node/disk")
                .then_some(())
        },
    )
    .await;
    tokio::time::timeout(Duration::from_millis(2_500), async {
        loop {
            assert!(
                am.alert("NodeProblem").await.is_none(),
                "no class, no alert"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .unwrap_err();
}

#[tokio::test]
async fn silent_agent_fires_and_reconnecting_resolves_it() {
    let am = Am::start().await;
    let fed = Fed::start(CHECKS, |o| {
        o.alertmanagers = vec![am.url()];
        o.alert_resend_interval = Duration::from_secs(1);
        o.agent_silent_after = Duration::from_millis(800);
    })
    .await;
    let (tx, mut inbound) = common::open_stream(fed.grpc, "agent-1").await;
    let reader = tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
    // Another agent, on another node, stays connected throughout.
    let _agent2 = other_node_agent(fed.grpc).await;
    let http = fed.http;
    let connected = move |n: usize| async move {
        let v: Value = reqwest::get(format!("http://{http}/api/v1/agents"))
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (v.as_array()?.len() == n).then_some(())
    };
    wait_for("both agents connected", Duration::from_secs(5), || {
        connected(2)
    })
    .await;

    // agent-1's stream ends.
    drop(tx);
    reader.abort();
    wait_for("agent-1 gone", Duration::from_secs(5), || connected(1)).await;
    let gone = Instant::now();
    let alert = wait_for("VigilAgentSilent", Duration::from_secs(10), || {
        am.alert("VigilAgentSilent")
    })
    .await;
    let after = gone.elapsed();
    println!("agent gone -> VigilAgentSilent visible: {after:?}");
    assert!(
        after >= Duration::from_millis(500),
        "fired only after the grace period: {after:?}"
    );
    let l = labels(&alert);
    assert_eq!(l["agent"], "agent-1");
    assert_eq!(l["node"], "node-1");
    assert_eq!(l["cluster"], "test");
    assert_eq!(l["severity"], "warning");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("agent-1 on node node-1"),
        "{alert}"
    );
    let silent: Vec<Value> = am
        .alerts()
        .await
        .into_iter()
        .filter(|a| a["labels"]["alertname"] == "VigilAgentSilent")
        .collect();
    assert_eq!(silent.len(), 1, "agent-2 is not silent: {silent:?}");

    // It reconnects: resolved.
    let (_tx, mut inbound) = common::open_stream(fed.grpc, "agent-1").await;
    tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
    wait_for(
        "VigilAgentSilent resolved",
        Duration::from_secs(10),
        || async { am.alert("VigilAgentSilent").await.is_none().then_some(()) },
    )
    .await;
}

/// A fake agent `agent-2` on node `node-2` (common::open_stream's agents are on node-1, and a
/// new agent on the same node would stand for agent-1).
async fn other_node_agent(
    grpc: std::net::SocketAddr,
) -> tokio::sync::mpsc::Sender<vigil_proto::AgentMessage> {
    use vigil_proto::{AgentMessage, Hello, agent_message};
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(AgentMessage {
        msg: Some(agent_message::Msg::Hello(Hello {
            agent_id: "agent-2".into(),
            node: "node-2".into(),
            ..Default::default()
        })),
    })
    .await
    .unwrap();
    let mut inbound = vigil_proto::federator_client::FederatorClient::new(channel)
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
    tx
}
