//! `vigil-federator local`: one process, embedded agent, checks from a folder, results to a
//! JSON-lines file, status page and API on one HTTP port.

use std::time::Duration;

use nix::sys::signal::Signal;
use vigil_e2e::{Proc, bin, free_addr, get_json, read_results, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_mode_runs_checks_with_its_embedded_agent() {
    let dir = tempfile::tempdir().unwrap();
    let checks = dir.path().join("checks");
    std::fs::create_dir(&checks).unwrap();
    let http = free_addr();
    // The federator probing its own health endpoint, and a TCP port nobody listens on.
    std::fs::write(
        checks.join("self.yaml"),
        format!(
            "apiVersion: vigil.dev/v1alpha1\nkind: HealthCheck\nmetadata: {{name: self, namespace: vigil}}\nspec:\n  interval: 500ms\n  timeout: 200ms\n  probe: {{http: {{url: 'http://{http}/healthz', bodyMatches: '^ok'}}}}\n---\napiVersion: vigil.dev/v1alpha1\nkind: HealthCheck\nmetadata: {{name: down, namespace: vigil}}\nspec:\n  interval: 500ms\n  timeout: 200ms\n  failureThreshold: 1\n  probe: {{tcp: {{address: '{}'}}}}\n",
            free_addr()
        ),
    )
    .unwrap();
    let results = dir.path().join("results.jsonl");
    let mut fed = Proc::start(
        "federator-local",
        &bin("vigil-federator"),
        &[
            "local".into(),
            "--checks".into(),
            checks.display().to_string(),
            "--listen".into(),
            http.to_string(),
            "--grpc-listen".into(),
            free_addr().to_string(),
            "--results".into(),
            results.display().to_string(),
            "--node".into(),
            "laptop".into(),
        ],
        dir.path(),
    );
    let client = reqwest::Client::new();
    let api = format!("http://{http}/api/v1/checks");
    let states = wait_for("both checks to settle", Duration::from_secs(20), || async {
        let v = get_json(&client, &api).await?;
        let states: Vec<(String, String)> = v["checks"]
            .as_array()?
            .iter()
            .map(|c| {
                (
                    c["id"].as_str().unwrap_or_default().to_owned(),
                    c["state"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        // The two checks and the embedded agent's 12 node diagnostics.
        (states.len() >= 14 && states.iter().all(|(_, s)| s != "Unknown")).then_some(states)
    })
    .await;
    // Listed in the order the folder defines them, then the node diagnostics (agent-owned).
    let (node, states): (Vec<_>, Vec<_>) = states
        .into_iter()
        .partition(|(id, _)| id.starts_with("node/"));
    let node: Vec<&str> = node.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(
        node,
        [
            "node/clock",
            "node/conntrack",
            "node/disk",
            "node/fds",
            "node/kmsg",
            "node/kubelet",
            "node/load",
            "node/memory",
            "node/pids",
            "node/psi",
            "node/readonly-fs",
            "node/runtime"
        ]
    );
    assert_eq!(
        states,
        [
            ("vigil/self".to_owned(), "Healthy".to_owned()),
            ("vigil/down".to_owned(), "Failing".to_owned())
        ]
    );

    // Recent results of one check, newest first, and a clear answer for a bad query.
    let recent = get_json(
        &client,
        &format!("http://{http}/api/v1/results?check=vigil/self&limit=2"),
    )
    .await
    .unwrap();
    let recent = recent.as_array().unwrap();
    assert!(!recent.is_empty() && recent.len() <= 2);
    assert_eq!(recent[0]["node"], "laptop");
    let missing = client
        .get(format!("http://{http}/api/v1/results"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    assert_eq!(
        missing.text().await.unwrap(),
        "the check parameter is required: /api/v1/results?check=NAMESPACE/NAME\n"
    );

    // The status page, metrics and readiness answer.
    let page = client
        .get(format!("http://{http}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("<title>Vigil</title>"));
    let metrics = client
        .get(format!("http://{http}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("vigil_agents_connected 1"), "{metrics}");
    assert_eq!(
        client
            .get(format!("http://{http}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A graceful stop drains the embedded agent: the file holds seqs 1..=max with no gap.
    fed.signal(Signal::SIGTERM);
    assert!(
        fed.wait_exit(Duration::from_secs(20)).await.success(),
        "{}",
        fed.log_text()
    );
    let all = read_results(&results);
    let mut seqs: Vec<u64> = all.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    assert_eq!(all.len(), seqs.len(), "no duplicates without a crash");
}
