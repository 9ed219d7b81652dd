//! The walking skeleton end to end: real federator and agent processes, a real HTTP server,
//! a check that goes from SUCCESS to FAILURE, and a federator SIGKILL that loses no result.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use nix::sys::signal::Signal;
use vigil_e2e::{Proc, bin, free_addr, get_json, read_results, serve_args, wait_for};

const WAIT: Duration = Duration::from_secs(20);

/// A local HTTP server answering `ok` on /healthz until it is stopped.
struct Target {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start_target() -> Target {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Target { addr, stop, task }
}

fn check_state(checks: &serde_json::Value, id: &str) -> Option<(String, String, String)> {
    let check = checks["checks"]
        .as_array()?
        .iter()
        .find(|c| c["id"] == id)?;
    let target = check["targets"].as_array()?.first()?;
    Some((
        check["state"].as_str()?.to_owned(),
        target["last"]["outcome"].as_str()?.to_owned(),
        target["last"]["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_fails_and_federator_crash_loses_no_result() {
    let dir = tempfile::tempdir().unwrap();
    let checks = dir.path().join("checks");
    std::fs::create_dir(&checks).unwrap();
    let target = start_target().await;
    std::fs::write(
        checks.join("web.yaml"),
        format!(
            "apiVersion: vigil.dev/v1alpha1\nkind: HealthCheck\nmetadata: {{name: web, namespace: shop}}\nspec:\n  interval: 500ms\n  timeout: 250ms\n  failureThreshold: 2\n  probe:\n    http: {{url: 'http://{}/healthz', bodyMatches: '^ok$'}}\n",
            target.addr
        ),
    )
    .unwrap();
    // A bad document beside it: reported with file, document and field; the good check runs.
    std::fs::write(
        checks.join("bad.yaml"),
        "apiVersion: vigil.dev/v1alpha1\nkind: HealthCheck\nmetadata: {name: ok-one, namespace: shop}\nspec:\n  probe: {tcp: {address: '127.0.0.1:1'}}\n---\napiVersion: vigil.dev/v1alpha1\nkind: HealthCheck\nmetadata: {name: bad, namespace: shop}\nspec:\n  interval: 5s\n  timeout: 5s\n  probe: {tcp: {address: '127.0.0.1:1'}}\n",
    )
    .unwrap();

    let http = free_addr();
    let grpc = free_addr();
    let results = dir.path().join("results.jsonl");
    let mut fed_args = serve_args(&checks, http, grpc);
    fed_args.extend(["--results".into(), results.display().to_string()]);
    let mut federator = Proc::start("federator", &bin("vigil-federator"), &fed_args, dir.path());
    let mut agent = Proc::start(
        "agent",
        &bin("vigil-agent"),
        &[
            "--federator".into(),
            format!("http://{grpc}"),
            "--node".into(),
            "e2e-node".into(),
            "--listen".into(),
            free_addr().to_string(),
        ],
        dir.path(),
    );
    let client = reqwest::Client::new();
    let api = format!("http://{http}/api/v1/checks");

    // 1. SUCCESS against the live server.
    wait_for("web to be Healthy", WAIT, || async {
        let checks = get_json(&client, &api).await?;
        (check_state(&checks, "shop/web")?.0 == "Healthy").then_some(())
    })
    .await;
    let checks = get_json(&client, &api).await.unwrap();
    assert_eq!(check_state(&checks, "shop/web").unwrap().1, "SUCCESS");
    assert_eq!(
        checks["errors"],
        serde_json::json!([format!(
            "{} doc 2: spec.timeout: must be less than spec.interval (5s >= 5s)",
            dir.path().join("checks").join("bad.yaml").display()
        )])
    );
    assert!(
        checks["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["id"] == "shop/ok-one"),
        "valid doc of the bad file runs"
    );

    // 2. FAILURE with a reason once the server is gone.
    target.stop.send(()).unwrap();
    target.task.await.unwrap();
    let (state, outcome, reason) = wait_for("web to be Failing", WAIT, || async {
        let checks = get_json(&client, &api).await?;
        let s = check_state(&checks, "shop/web")?;
        (s.0 == "Failing").then_some(s)
    })
    .await;
    assert_eq!((state.as_str(), outcome.as_str()), ("Failing", "FAILURE"));
    assert_eq!(
        reason,
        format!("connect to {} failed: connection refused", target.addr)
    );

    // 3. SIGKILL the federator while results keep coming, start it again.
    let seen_before_kill = read_results(&results).len();
    assert!(seen_before_kill > 0);
    federator.signal(Signal::SIGKILL);
    federator.wait_exit(WAIT).await;
    let mut federator = Proc::start(
        "federator-restarted",
        &bin("vigil-federator"),
        &fed_args,
        dir.path(),
    );
    wait_for("the agent to reconnect", WAIT, || async {
        let agents = get_json(&client, &format!("http://{http}/api/v1/agents")).await?;
        (agents.as_array()?.iter().any(|a| a["node"] == "e2e-node")).then_some(())
    })
    .await;
    // Let results flow through the new federator for a while, then stop the agent gracefully:
    // it drains everything still unacknowledged before exiting.
    let agent_id = read_results(&results).last().unwrap()["agent"]
        .as_str()
        .unwrap()
        .to_owned();
    let max_before = max_seq(&read_results(&results), &agent_id);
    wait_for("results after the restart", WAIT, || async {
        (max_seq(&read_results(&results), &agent_id) >= max_before + 6).then_some(())
    })
    .await;
    agent.signal(Signal::SIGTERM);
    let status = agent.wait_exit(WAIT).await;
    assert!(
        status.success(),
        "agent exit: {status:?}\n{}",
        agent.log_text()
    );
    assert!(
        agent
            .log_text()
            .contains("every result acknowledged; stopping"),
        "{}",
        agent.log_text()
    );

    // 4. Every seq from that agent is in the sink, no gap (duplicates only from the crash).
    let all = read_results(&results);
    let seqs: BTreeSet<u64> = all
        .iter()
        .filter(|r| r["agent"] == agent_id.as_str())
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    let max = *seqs.iter().next_back().unwrap();
    let missing: Vec<u64> = (1..=max).filter(|s| !seqs.contains(s)).collect();
    assert!(missing.is_empty(), "missing seqs {missing:?} of 1..={max}");
    assert!(
        max as usize > seen_before_kill,
        "results continued after the restart"
    );
    for r in all.iter().filter(|r| r["agent"] == agent_id.as_str()) {
        assert_eq!(r["node"], "e2e-node");
        assert_eq!(r["schema"], 1);
    }
    federator.signal(Signal::SIGTERM);
    assert!(federator.wait_exit(WAIT).await.success());
}

fn max_seq(results: &[serde_json::Value], agent: &str) -> u64 {
    results
        .iter()
        .filter(|r| r["agent"] == agent)
        .filter_map(|r| r["seq"].as_u64())
        .max()
        .unwrap_or(0)
}
