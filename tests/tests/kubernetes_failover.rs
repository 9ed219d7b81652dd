//! Kubernetes mode with real processes: two `vigil-federator run` replicas against the
//! in-process API server (through a kubeconfig), leader election on a Lease, and a real agent
//! behind a stand-in for the Service (a proxy to the ready replica). The leader is SIGKILLed
//! mid-stream; the standby takes the Lease, the agent reconnects and resends, nothing is lost.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;
use vigil_e2e::proxy::CuttingProxy;
use vigil_e2e::{Proc, bin, free_addr, metric_value, read_results, wait_for};
use vigil_kube_fake::FakeApiServer;

const WAIT: Duration = Duration::from_secs(60);
const AGENT: &str = "failover-agent";

struct Replica {
    http: SocketAddr,
    grpc: SocketAddr,
    results: PathBuf,
    proc: Proc,
}

fn start_replica(dir: &Path, kubeconfig: &Path, identity: &str) -> Replica {
    let http = free_addr();
    let grpc = free_addr();
    let results = dir.join(format!("{identity}.jsonl"));
    let args: Vec<String> = [
        "run",
        "--namespace",
        "vigil",
        "--pod-name",
        identity,
        "--lease-duration",
        "3s",
        "--listen",
        &http.to_string(),
        "--grpc-listen",
        &grpc.to_string(),
        "--results",
        &results.display().to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    let log = dir.join(identity);
    std::fs::create_dir_all(&log).unwrap();
    let kubeconfig = kubeconfig.display().to_string();
    let proc = Proc::start_full(
        identity,
        &bin("vigil-federator"),
        &args,
        &log,
        Path::new("."),
        &[("KUBECONFIG", kubeconfig.as_str())],
    );
    Replica {
        http,
        grpc,
        results,
        proc,
    }
}

fn lease_holder(server: &FakeApiServer) -> Option<String> {
    server
        .get(
            "coordination.k8s.io/v1",
            "leases",
            "vigil",
            "vigil-federator",
        )
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
}

async fn acked(client: &reqwest::Client, http: SocketAddr) -> Option<u64> {
    let text = client
        .get(format!("http://{http}/metrics"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    metric_value(&text, "vigil_results_acked_total", AGENT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_sigkill_fails_over_to_the_standby_and_loses_no_result() {
    let dir = tempfile::tempdir().unwrap();
    let server = FakeApiServer::start().await.unwrap();
    // The CRD exactly as the binary generates it.
    let crd = std::process::Command::new(bin("vigil-federator"))
        .arg("crd")
        .output()
        .unwrap();
    let crd: serde_json::Value = serde_yaml::from_slice(&crd.stdout).unwrap();
    server.register_crd(&crd).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig()).unwrap();

    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target_addr = target.local_addr().unwrap();
    tokio::spawn(async move { while target.accept().await.is_ok() {} });
    server
        .put(
            "v1",
            "nodes",
            json!({
                "apiVersion": "v1", "kind": "Node", "metadata": {"name": "e2e-node"},
                "status": {"conditions": [{"type": "Ready", "status": "True"}]}
            }),
        )
        .unwrap();
    for i in 0..5 {
        server
            .put("vigil.dev/v1alpha1", "healthchecks", json!({
                "apiVersion": "vigil.dev/v1alpha1", "kind": "HealthCheck",
                "metadata": {"name": format!("tcp-{i}"), "namespace": "e2e"},
                "spec": {"interval": "100ms", "timeout": "50ms", "probe": {"tcp": {"address": target_addr.to_string()}}}
            }))
            .unwrap();
    }

    let mut a = start_replica(dir.path(), &kubeconfig, "fed-a");
    wait_for("fed-a to take the Lease", WAIT, || async {
        (lease_holder(&server).as_deref() == Some("fed-a")).then_some(())
    })
    .await;
    let b = start_replica(dir.path(), &kubeconfig, "fed-b");
    let client = reqwest::Client::new();
    wait_for("fed-b to report itself a standby", WAIT, || async {
        let r = client
            .get(format!("http://{}/metrics", b.http))
            .send()
            .await
            .ok()?;
        let text = r.text().await.ok()?;
        text.contains("\nvigil_federator_leader 0\n").then_some(())
    })
    .await;

    let service = CuttingProxy::start(a.grpc).await;
    let mut agent = Proc::start(
        "agent",
        &bin("vigil-agent"),
        &[
            "--federator".into(),
            format!("http://{}", service.addr),
            "--node".into(),
            "e2e-node".into(),
            "--agent-id".into(),
            AGENT.into(),
            "--listen".into(),
            free_addr().to_string(),
            "--no-diagnostics".into(),
            "--drain-grace".into(),
            "30s".into(),
        ],
        dir.path(),
    );
    wait_for("fed-a to acknowledge results", WAIT, || async {
        acked(&client, a.http).await.filter(|&n| n > 100)
    })
    .await;

    // The leader dies without releasing the Lease; the standby takes it once it expires, and
    // the "Service" now routes to it.
    a.proc.kill();
    service.set_upstream(b.grpc);
    service.cut();
    wait_for("fed-b to take over the Lease", WAIT, || async {
        (lease_holder(&server).as_deref() == Some("fed-b")).then_some(())
    })
    .await;
    wait_for("fed-b to acknowledge results", WAIT, || async {
        acked(&client, b.http).await.filter(|&n| n > 100)
    })
    .await;
    agent.signal(Signal::SIGTERM);
    assert!(agent.wait_exit(WAIT).await.success());
    assert!(
        agent
            .log_text()
            .contains("every result acknowledged; stopping"),
        "{}",
        agent.log_text()
    );

    let mut seqs = BTreeSet::new();
    for file in [&a.results, &b.results] {
        for r in read_results(file) {
            if r["agent"] == AGENT {
                seqs.insert(r["seq"].as_u64().unwrap());
            }
        }
    }
    let max = *seqs.last().unwrap();
    let missing: Vec<u64> = (1..=max).filter(|s| !seqs.contains(s)).collect();
    assert!(missing.is_empty(), "lost seqs: {missing:?}");
    assert!(max > 200, "only {max} results");
    // The new leader writes the checks' status (at most every 5 s per check).
    wait_for("fed-b to write tcp-0 Healthy", WAIT, || async {
        let hc = server.get("vigil.dev/v1alpha1", "healthchecks", "e2e", "tcp-0")?;
        (hc["status"]["state"] == "Healthy").then_some(())
    })
    .await;
}
