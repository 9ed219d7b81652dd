//! Kubernetes mode against the in-process API server (vigil-kube-fake) with the real kube client
//! and kube-runtime watchers: HealthChecks reach agents and leave them, invalid specs get
//! `Valid=False`, status follows results, Nodes gate placement and carry problem conditions,
//! watches survive 410 Gone, and leadership moves between two federators.

use std::time::Duration;

use kube::CustomResourceExt;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use vigil_federator::app;
use vigil_federator::controller::KubeOptions;
use vigil_federator::resource::HealthCheck;
use vigil_kube_fake::FakeApiServer;
use vigil_proto::{FederatorMessage, ProbeResult, federator_message::Msg};

mod common;
use common::{batch_of, open_stream};

const WAIT: Duration = Duration::from_secs(10);

async fn api_server() -> FakeApiServer {
    let server = FakeApiServer::start().await.unwrap();
    server.register_crd(&HealthCheck::crd()).unwrap();
    server
}

fn ready_node(name: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "ok"}]}
    })
}

fn health_check(name: &str, address: &str) -> Value {
    json!({
        "apiVersion": "vigil.dev/v1alpha1", "kind": "HealthCheck",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"interval": "1s", "timeout": "500ms", "failureThreshold": 1, "probe": {"tcp": {"address": address}}}
    })
}

struct Federator {
    grpc: std::net::SocketAddr,
    http: std::net::SocketAddr,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), app::StartError>>,
    _dir: tempfile::TempDir,
}

impl Federator {
    async fn start(server: &FakeApiServer, identity: &str, leader_election: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut kube = KubeOptions::new(server.client(), "vigil", identity);
        kube.leader_election = leader_election;
        kube.lease_duration = Duration::from_secs(3);
        kube.retry_period = Duration::from_millis(200);
        kube.status.tick = Duration::from_millis(100);
        kube.status.min_interval = Duration::from_millis(300);
        let options = app::Options {
            checks: dir.path().to_owned(),
            listen: "127.0.0.1:0".parse().unwrap(),
            grpc_listen: "127.0.0.1:0".parse().unwrap(),
            results: Some(dir.path().join("results.jsonl")),
            kafka: None,
            kubernetes: Some(kube),
            cluster: "test".into(),
            embedded_agent: false,
            node: "n".into(),
            shutdown_grace: Duration::from_secs(2),
            alertmanagers: Vec::new(),
            alert_resend_interval: Duration::from_secs(60),
            external_url: None,
            agent_silent_after: Duration::from_secs(120),
            deep_check_lease: Duration::from_secs(120),
            upstream: None,
            cluster_silent_after: Duration::from_secs(60),
            tls: None,
        };
        let cancel = CancellationToken::new();
        let running = app::start(options, cancel.clone()).await.unwrap();
        Self {
            grpc: running.grpc_addr,
            http: running.http_addr,
            cancel,
            task: running.task,
            _dir: dir,
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}

/// The next Assignment on an agent stream, skipping Acks.
async fn next_assignment(inbound: &mut tonic::Streaming<FederatorMessage>) -> Vec<String> {
    loop {
        let msg = tokio::time::timeout(WAIT, inbound.message())
            .await
            .expect("an assignment in time")
            .expect("stream open")
            .expect("stream open");
        if let Some(Msg::Assignment(a)) = msg.msg {
            let mut ids: Vec<String> = a.checks.iter().map(|c| c.id.clone()).collect();
            ids.sort();
            return ids;
        }
    }
}

/// Polls the fake API server until `f` finds what it wants in the object.
async fn wait_object<T>(
    server: &FakeApiServer,
    api_version: &str,
    plural: &str,
    namespace: &str,
    name: &str,
    what: &str,
    f: impl Fn(&Value) -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(found) = server
            .get(api_version, plural, namespace, name)
            .as_ref()
            .and_then(&f)
        {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; object now: {:#?}",
            server.get(api_version, plural, namespace, name)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_reach_agents_change_and_leave() {
    let server = api_server().await;
    server.put("v1", "nodes", ready_node("node-1")).unwrap();
    let fed = Federator::start(&server, "fed-a", false).await;
    let (_tx, mut inbound) = open_stream(fed.grpc, "agent-1").await;
    assert_eq!(next_assignment(&mut inbound).await, Vec::<String>::new());

    let checks: kube::Api<HealthCheck> = kube::Api::namespaced(server.client(), "shop");
    let created = serde_json::from_value(health_check("web", "127.0.0.1:1")).unwrap();
    checks
        .create(&kube::api::PostParams::default(), &created)
        .await
        .unwrap();
    assert_eq!(next_assignment(&mut inbound).await, ["shop/web"]);

    // An update (a new address) reaches the agent as a new Assignment with the new target.
    // A merge patch: the status writer may have changed the object meanwhile (a replace
    // with the resourceVersion read before would rightly get 409 Conflict).
    checks
        .patch(
            "web",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(
                json!({"spec": {"probe": {"tcp": {"address": "127.0.0.1:3"}}}}),
            ),
        )
        .await
        .unwrap();
    let target = loop {
        let msg = tokio::time::timeout(WAIT, inbound.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(Msg::Assignment(a)) = msg.msg {
            break a.checks[0].target.clone();
        }
    };
    assert_eq!(target, "127.0.0.1:3");

    // The watch survives a 410 Gone: after compaction a new check still arrives.
    server.compact();
    server
        .put(
            "vigil.dev/v1alpha1",
            "healthchecks",
            health_check("api", "127.0.0.1:2"),
        )
        .unwrap();
    assert_eq!(
        next_assignment(&mut inbound).await,
        ["shop/api", "shop/web"]
    );

    checks
        .delete("web", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(next_assignment(&mut inbound).await, ["shop/api"]);
    fed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_invalid_with_the_field_and_follows_results() {
    let server = api_server().await;
    server.put("v1", "nodes", ready_node("node-1")).unwrap();
    let fed = Federator::start(&server, "fed-a", false).await;
    let (tx, mut inbound) = open_stream(fed.grpc, "agent-1").await;
    next_assignment(&mut inbound).await;

    // Passes the schema, fails deeper validation: timeout not below interval.
    let mut bad = health_check("bad", "127.0.0.1:1");
    bad["spec"]["timeout"] = json!("2s");
    server
        .put("vigil.dev/v1alpha1", "healthchecks", bad)
        .unwrap();
    server
        .put(
            "vigil.dev/v1alpha1",
            "healthchecks",
            health_check("web", "127.0.0.1:1"),
        )
        .unwrap();
    let message = wait_object(
        &server,
        "vigil.dev/v1alpha1",
        "healthchecks",
        "shop",
        "bad",
        "Valid=False",
        |o| {
            let c = condition(o, "Valid")?;
            (c["status"] == "False").then(|| c["message"].as_str().unwrap_or_default().to_owned())
        },
    )
    .await;
    assert_eq!(
        message,
        "spec.timeout: must be less than spec.interval (2s >= 1s)"
    );
    let bad = server
        .get("vigil.dev/v1alpha1", "healthchecks", "shop", "bad")
        .unwrap();
    assert_eq!(bad["status"]["state"], "Invalid");

    // The good one runs; a FAILURE result makes it Failing (failureThreshold 1) with the reason.
    assert_eq!(next_assignment(&mut inbound).await, ["shop/web"]);
    let failure = ProbeResult {
        check_id: "shop/web".into(),
        target: "127.0.0.1:1".into(),
        seq: 1,
        outcome: 2,
        reason: "connect to 127.0.0.1:1 failed: connection refused".into(),
        start_unix_nanos: 1_795_000_000_000_000_000,
        ..Default::default()
    };
    tx.send(batch_of(vec![failure])).await.unwrap();
    let status = wait_object(
        &server,
        "vigil.dev/v1alpha1",
        "healthchecks",
        "shop",
        "web",
        "state Failing",
        |o| (o["status"]["state"] == "Failing").then(|| o["status"].clone()),
    )
    .await;
    assert_eq!(status["failingTargets"], 1);
    assert_eq!(status["probe"], "tcp");
    assert_eq!(status["lastResult"]["outcome"], "FAILURE");
    assert_eq!(
        status["lastResult"]["reason"],
        "connect to 127.0.0.1:1 failed: connection refused"
    );
    let valid = condition(&json!({"status": status.clone()}), "Valid")
        .unwrap()
        .clone();
    assert_eq!(valid["status"], "True");
    let ready = condition(&json!({"status": status}), "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "True");
    fed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_on_missing_or_unready_nodes_get_nothing_and_problems_become_node_conditions() {
    let server = api_server().await;
    server
        .put(
            "vigil.dev/v1alpha1",
            "healthchecks",
            health_check("web", "127.0.0.1:1"),
        )
        .unwrap();
    let fed = Federator::start(&server, "fed-a", false).await;
    // node-1 does not exist yet: nothing is placed on its agent.
    let (tx, mut inbound) = open_stream(fed.grpc, "agent-1").await;
    assert_eq!(next_assignment(&mut inbound).await, Vec::<String>::new());
    server.put("v1", "nodes", ready_node("node-1")).unwrap();
    assert_eq!(next_assignment(&mut inbound).await, ["shop/web"]);
    let mut unready = ready_node("node-1");
    unready["status"]["conditions"][0]["status"] = json!("False");
    server.put("v1", "nodes", unready).unwrap();
    assert_eq!(next_assignment(&mut inbound).await, Vec::<String>::new());
    server.put("v1", "nodes", ready_node("node-1")).unwrap();
    assert_eq!(next_assignment(&mut inbound).await, ["shop/web"]);

    // A node diagnostic failing on node-1 becomes a NodeCondition; the kubelet's Ready stays.
    let problem = ProbeResult {
        check_id: "node/memory".into(),
        target: "memory".into(),
        seq: 1,
        outcome: 2,
        scope: "node".into(),
        reason: "memory available 3.1% below 5%".into(),
        details: [("problem".to_owned(), "VigilMemoryPressure".to_owned())].into(),
        start_unix_nanos: 1_795_000_000_000_000_000,
        ..Default::default()
    };
    tx.send(batch_of(vec![problem.clone()])).await.unwrap();
    let set = wait_object(
        &server,
        "v1",
        "nodes",
        "",
        "node-1",
        "VigilMemoryPressure=True",
        |o| {
            condition(o, "VigilMemoryPressure")
                .filter(|c| c["status"] == "True")
                .cloned()
        },
    )
    .await;
    assert_eq!(set["reason"], "VigilMemoryPressure");
    assert_eq!(set["message"], "memory available 3.1% below 5%");
    let node = server.get("v1", "nodes", "", "node-1").unwrap();
    assert_eq!(condition(&node, "Ready").unwrap()["status"], "True");

    // A kernel-log match becomes a Warning Event on the Node, like node-problem-detector's.
    let oom = ProbeResult {
        check_id: "node/kmsg".into(),
        target: "oom-kill".into(),
        seq: 2,
        outcome: 2,
        scope: "node".into(),
        reason: "Out of memory: Killed process 4242 (java)".into(),
        details: [
            ("problem".to_owned(), "VigilOOMKilling".to_owned()),
            ("event".to_owned(), "true".to_owned()),
        ]
        .into(),
        start_unix_nanos: 1_795_000_000_000_000_001,
        ..Default::default()
    };
    tx.send(batch_of(vec![oom])).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let event = loop {
        if let Some(e) = server
            .objects("v1", "events")
            .into_iter()
            .find(|e| e["reason"] == "VigilOOMKilling")
        {
            break e;
        }
        assert!(tokio::time::Instant::now() < deadline, "no node Event");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(event["involvedObject"]["kind"], "Node");
    assert_eq!(event["involvedObject"]["name"], "node-1");
    assert_eq!(event["type"], "Warning");
    assert_eq!(
        event["message"],
        "Out of memory: Killed process 4242 (java)"
    );

    // It clears when the diagnostic recovers.
    let ok = ProbeResult {
        seq: 3,
        outcome: 1,
        reason: String::new(),
        ..problem
    };
    tx.send(batch_of(vec![ok])).await.unwrap();
    wait_object(
        &server,
        "v1",
        "nodes",
        "",
        "node-1",
        "VigilMemoryPressure=False",
        |o| {
            condition(o, "VigilMemoryPressure")
                .filter(|c| c["status"] == "False")
                .map(|_| ())
        },
    )
    .await;
    fed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_fails_over_between_two_federators() {
    let server = api_server().await;
    server.put("v1", "nodes", ready_node("node-1")).unwrap();
    let a = Federator::start(&server, "fed-a", true).await;
    let lease_holder = || {
        server
            .get(
                "coordination.k8s.io/v1",
                "leases",
                "vigil",
                "vigil-federator",
            )
            .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while lease_holder().as_deref() != Some("fed-a") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "fed-a never took the Lease"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let b = Federator::start(&server, "fed-b", true).await;
    let client = reqwest::Client::new();
    // The standby says so in its metrics and refuses agents.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = client
            .get(format!("http://{}/metrics", b.http))
            .send()
            .await
            .unwrap();
        let text = r.text().await.unwrap();
        if text.contains("\nvigil_federator_leader 0\n") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "standby readiness: {text}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", b.grpc))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(common::hello("agent-1")).await.unwrap();
    let refused = vigil_proto::federator_client::FederatorClient::new(channel)
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable);

    // The leader stops (and releases the Lease): the standby takes over and takes agents.
    a.stop().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while lease_holder().as_deref() != Some("fed-b") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "fed-b never took over"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (_tx, mut inbound) = open_stream(b.grpc, "agent-1").await;
    next_assignment(&mut inbound).await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_checks_run_as_jobs_that_report_or_become_errors() {
    let server = api_server().await;
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_addr = target.local_addr().unwrap();
    let mut isolated = health_check("iso", &target_addr.to_string());
    isolated["spec"]["placement"] = json!("Isolated");
    isolated["spec"]["retries"] = json!(1);
    server
        .put("vigil.dev/v1alpha1", "healthchecks", isolated)
        .unwrap();
    let fed = Federator::start(&server, "fed-a", false).await;

    // A Job appears, owned by the HealthCheck, running run-once with the spec.
    let jobs = || server.objects("batch/v1", "jobs");
    let deadline = tokio::time::Instant::now() + WAIT;
    while jobs().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no Job created");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let job = jobs().remove(0);
    let hc = server
        .get("vigil.dev/v1alpha1", "healthchecks", "shop", "iso")
        .unwrap();
    assert_eq!(
        job["metadata"]["ownerReferences"][0]["uid"],
        hc["metadata"]["uid"]
    );
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "HealthCheck");
    assert_eq!(job["metadata"]["labels"]["vigil.dev/check"], "iso");
    assert_eq!(job["spec"]["backoffLimit"], 1);
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 31);
    assert_eq!(job["spec"]["ttlSecondsAfterFinished"], 600);
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"], json!(["run-once"]));
    let env = |name: &str| {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
            .unwrap()
            .to_owned()
    };
    let spec = vigil_agent::run_once::decode_spec(&env("VIGIL_CHECK_SPEC")).unwrap();
    assert_eq!(spec.id, "shop/iso");
    let job_name = env("VIGIL_AGENT_ID");
    assert_eq!(job["metadata"]["name"], job_name.as_str());

    // While it is active, no second Job (Forbid), and the status says so.
    wait_object(
        &server,
        "vigil.dev/v1alpha1",
        "healthchecks",
        "shop",
        "iso",
        "a skipped run",
        |o| {
            let ready = condition(o, "Ready")?;
            ready["message"]
                .as_str()?
                .contains("is still active (concurrency policy Forbid)")
                .then_some(())
        },
    )
    .await;
    assert_eq!(jobs().len(), 1);

    // What the Job's pod does: run once and report. Its SUCCESS reaches the status.
    let identity = vigil_agent::Identity {
        agent_id: job_name.clone(),
        node: "node-7".into(),
        cluster: String::new(),
    };
    let outcome = vigil_agent::run_once::run(&format!("http://{}", fed.grpc), &spec, &identity)
        .await
        .unwrap();
    assert_eq!(outcome, "SUCCESS");
    wait_object(
        &server,
        "vigil.dev/v1alpha1",
        "healthchecks",
        "shop",
        "iso",
        "the Job's result",
        |o| {
            (o["status"]["lastResult"]["outcome"] == "SUCCESS"
                && o["status"]["lastResult"]["node"] == "node-7")
                .then_some(())
        },
    )
    .await;

    // The Job finishes; the next one never reports: its pod cannot pull the image.
    let mut done = job.clone();
    done["status"] = json!({"completionTime": "2026-11-22T20:00:00Z", "succeeded": 1});
    server.put("batch/v1", "jobs", done).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    let second = loop {
        if let Some(j) = jobs()
            .into_iter()
            .find(|j| j["metadata"]["name"] != job_name.as_str())
        {
            break j;
        }
        assert!(tokio::time::Instant::now() < deadline, "no second Job");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let second_name = second["metadata"]["name"].as_str().unwrap().to_owned();
    server
        .put("v1", "pods", json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("{second_name}-x1"), "namespace": "shop", "labels": {"job-name": second_name}},
            "spec": {"nodeName": "node-3", "containers": [{"name": "run-once", "image": "nope"}]},
            "status": {"phase": "Pending", "containerStatuses": [{"name": "run-once", "ready": false, "restartCount": 0, "image": "nope", "imageID": "",
                "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image \"nope\""}}}]}
        }))
        .unwrap();
    let mut failed = second.clone();
    failed["status"] = json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer than specified deadline"}]});
    server.put("batch/v1", "jobs", failed).unwrap();
    let reason = wait_object(
        &server,
        "vigil.dev/v1alpha1",
        "healthchecks",
        "shop",
        "iso",
        "an ERROR for the silent Job",
        |o| {
            let last = &o["status"]["lastResult"];
            (last["outcome"] == "ERROR")
                .then(|| last["reason"].as_str().unwrap_or_default().to_owned())
        },
    )
    .await;
    assert_eq!(
        reason,
        format!(
            "Job shop/{second_name} never reported: Job failed: DeadlineExceeded Job was active longer than specified deadline; pod run-once: ImagePullBackOff Back-off pulling image \"nope\""
        )
    );
    fed.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_are_retried_and_a_flapping_check_cannot_flood_status_writes() {
    use vigil_kube_fake::{Fault, Verb};
    let server = api_server().await;
    server.put("v1", "nodes", ready_node("node-1")).unwrap();
    // The first status writes meet a server error and throttling.
    server.inject(Fault::new(Verb::Patch, "healthchecks/status", 500).times(2));
    server.inject(
        Fault::new(Verb::Patch, "healthchecks/status", 429)
            .times(2)
            .retry_after(Duration::from_secs(1)),
    );
    server
        .put(
            "vigil.dev/v1alpha1",
            "healthchecks",
            health_check("web", "127.0.0.1:1"),
        )
        .unwrap();
    let fed = Federator::start(&server, "fed-a", false).await;
    let (tx, mut inbound) = open_stream(fed.grpc, "agent-1").await;
    // The first Assignment may come before the HealthChecks are listed.
    while next_assignment(&mut inbound).await != ["shop/web"] {}
    wait_object(
        &server,
        "vigil.dev/v1alpha1",
        "healthchecks",
        "shop",
        "web",
        "a status despite errors",
        |o| condition(o, "Valid").map(|_| ()),
    )
    .await;

    // Flap for 2 s: a result every 10 ms, alternating. Status writes stay rate-limited
    // (min interval 300 ms in these tests) instead of one per change.
    server.clear_requests();
    let flap_start = tokio::time::Instant::now();
    let mut seq = 0;
    while flap_start.elapsed() < Duration::from_secs(2) {
        seq += 1;
        let r = ProbeResult {
            check_id: "shop/web".into(),
            target: "127.0.0.1:1".into(),
            seq,
            outcome: if seq % 2 == 0 { 1 } else { 2 },
            start_unix_nanos: 1_795_000_000_000_000_000 + i64::try_from(seq).unwrap(),
            ..Default::default()
        };
        tx.send(batch_of(vec![r])).await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let writes = server.count(Verb::Patch, "healthchecks/status");
    let elapsed_ms = flap_start.elapsed().as_millis() as usize;
    assert!(seq >= 20, "the flapping sent only {seq} results");
    assert!(
        writes >= 1 && writes <= elapsed_ms / 300 + 2 && writes * 3 < seq as usize,
        "{writes} status writes for {seq} flapping results in {elapsed_ms} ms"
    );
    fed.stop().await;
}
