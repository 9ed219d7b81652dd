//! Node diagnostics end to end inside the agent: findings become `node/*` results in the
//! outbox (numbered like probe results), the node-problem metrics follow them, and a hung
//! diagnostic is reported without stopping the others.

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use tokio_util::sync::CancellationToken;
use vigil_agent::metrics::Metrics;
use vigil_agent::node::memory::MemoryDiagnostic;
use vigil_agent::node::runner::{self, Sink};
use vigil_agent::node::{Diagnostic, Finding, HostPaths, NodeDiagnostics, problem};
use vigil_agent::outbox::Outbox;
use vigil_proto::{Outcome, ProbeResult};

async fn results(outbox: &Outbox, metrics: &Metrics) -> Vec<ProbeResult> {
    outbox
        .batch_after(0, 10_000, 64 << 20, metrics)
        .await
        .into_iter()
        .map(|e| ProbeResult::decode(e.bytes).unwrap())
        .collect()
}

/// Blocks until the test lets it go (or 20 s): far longer than the pass limit.
struct Hangs(std::sync::mpsc::Receiver<()>);

impl Diagnostic for Hangs {
    fn name(&self) -> &'static str {
        "hangs"
    }
    fn interval(&self) -> Duration {
        Duration::from_millis(100)
    }
    fn run(&mut self, _: &HostPaths) -> Vec<Finding> {
        let _ = self.0.recv_timeout(Duration::from_secs(20));
        vec![Finding::ok("late")]
    }
    fn problems(&self) -> Vec<String> {
        Vec::new()
    }
}

#[tokio::test]
async fn findings_go_through_the_outbox_and_a_hung_diagnostic_stays_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("proc")).unwrap();
    std::fs::write(
        dir.path().join("proc/meminfo"),
        "MemTotal: 8178892 kB\nMemAvailable: 250880 kB\n",
    )
    .unwrap();
    let metrics = Arc::new(Metrics::new());
    let outbox = Arc::new(Outbox::new(1000));
    let sink = Arc::new(Sink::new(Some(Arc::clone(&outbox)), Arc::clone(&metrics)));
    let mut memory = NodeDiagnostics::default().memory;
    memory.interval = Duration::from_millis(100);
    let cancel = CancellationToken::new();
    let (release, hold) = std::sync::mpsc::channel();
    let tasks = runner::spawn_all(
        vec![
            Box::new(MemoryDiagnostic::new(memory)),
            Box::new(Hangs(hold)),
        ],
        Arc::new(HostPaths::under(dir.path())),
        sink,
        Duration::from_millis(300),
        &cancel,
    );

    // Wait for the hung pass's report and three memory passes (it must not hold them up).
    let deadline = Instant::now() + Duration::from_secs(20);
    let all = loop {
        let all = results(&outbox, &metrics).await;
        let memory = all.iter().filter(|r| r.check_id == "node/memory").count();
        if memory >= 3 && all.iter().any(|r| r.check_id == "node/hangs") {
            break all;
        }
        assert!(Instant::now() < deadline, "{all:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mem = all.iter().find(|r| r.check_id == "node/memory").unwrap();
    assert_eq!(mem.outcome(), Outcome::Failure);
    assert_eq!(mem.target, "memory");
    assert_eq!(mem.scope, "node");
    assert_eq!(mem.details["problem"], problem::MEMORY_PRESSURE);
    assert_eq!(
        mem.reason,
        "memory available 3.1% (245 MiB of 7.8 GiB) below 5%"
    );
    assert!(mem.values["memory_available_bytes"] > 0.0);
    assert!(mem.start_unix_nanos > 0);
    // Numbered in the outbox like every other result.
    let seqs: Vec<u64> = all.iter().map(|r| r.seq).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let hung: Vec<_> = all.iter().filter(|r| r.check_id == "node/hangs").collect();
    assert_eq!(hung.len(), 1, "reported once while it hangs: {hung:#?}");
    assert_eq!(hung[0].outcome(), Outcome::Error);
    assert_eq!(
        hung[0].reason,
        "one pass took longer than 300ms (a hung filesystem?); it is not started again until it returns"
    );

    let text = metrics.render();
    assert!(
        text.contains("vigil_node_problem{type=\"VigilMemoryPressure\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("vigil_node_diagnostic_errors_total{diagnostic=\"hangs\"} 1"),
        "{text}"
    );
    cancel.cancel();
    release.send(()).unwrap();
    for t in tasks {
        t.await.unwrap();
    }
}

#[test]
fn problem_gauges_and_event_counters_follow_findings() {
    let metrics = Arc::new(Metrics::new());
    let sink = Sink::new(None, Arc::clone(&metrics));
    sink.register([
        problem::DISK_PRESSURE.to_owned(),
        problem::KERNEL_DEADLOCK.to_owned(),
    ]);
    let gauge = |class: &str| metrics.node_problem.with_label_values(&[class]).get();
    assert!(
        metrics
            .render()
            .contains("vigil_node_problem{type=\"VigilDiskPressure\"} 0")
    );

    let full = |target: &str| Finding::fail(target, problem::DISK_PRESSURE, "full");
    sink.publish("disk", vec![full("/"), full("/var")], 1, Duration::ZERO);
    assert_eq!(gauge(problem::DISK_PRESSURE), 1);
    sink.publish(
        "disk",
        vec![Finding::ok("/"), full("/var")],
        2,
        Duration::ZERO,
    );
    assert_eq!(
        gauge(problem::DISK_PRESSURE),
        1,
        "one filesystem still full"
    );
    // An ERROR cannot tell: the problem stays as it was.
    sink.publish(
        "disk",
        vec![Finding::error("/var", "statvfs failed")],
        3,
        Duration::ZERO,
    );
    assert_eq!(gauge(problem::DISK_PRESSURE), 1);
    sink.publish("disk", vec![Finding::ok("/var")], 4, Duration::ZERO);
    assert_eq!(gauge(problem::DISK_PRESSURE), 0);

    // Kernel-log events count; only condition patterns hold their class active.
    let mut oom = Finding::fail(
        "OOMKilling",
        problem::OOM_KILLING,
        "kernel: Killed process 1",
    )
    .detail("reason", "OOMKilling");
    oom.event = true;
    let mut hung = Finding::fail("TaskHung", problem::KERNEL_DEADLOCK, "kernel: task blocked")
        .detail("reason", "TaskHung")
        .detail("condition", "true");
    hung.event = true;
    sink.publish("kmsg", vec![oom.clone(), oom, hung], 5, Duration::ZERO);
    let text = metrics.render();
    assert!(
        text.contains(
            "vigil_node_problem_events_total{reason=\"OOMKilling\",type=\"VigilOOMKilling\"} 2"
        ),
        "{text}"
    );
    assert_eq!(gauge(problem::KERNEL_DEADLOCK), 1);
    assert_eq!(gauge(problem::OOM_KILLING), 0);
    assert_eq!(
        metrics
            .results_produced
            .with_label_values(&["FAILURE"])
            .get(),
        6
    );
}

#[test]
fn results_carry_what_node_conditions_need() {
    let mut f = Finding::fail(
        "TaskHung",
        problem::KERNEL_DEADLOCK,
        "kernel: task x blocked",
    )
    .detail("line", "INFO: task x:1 blocked for more than 120 seconds.")
    .value("kernel_time_seconds", 12.5);
    f.event = true;
    let r = runner::to_result("node/kmsg", f, 42, Duration::from_micros(3));
    assert_eq!(r.check_id, "node/kmsg");
    assert_eq!(r.target, "TaskHung");
    assert_eq!(r.scope, "node");
    assert_eq!(r.details["problem"], problem::KERNEL_DEADLOCK);
    assert_eq!(r.details["event"], "true");
    assert_eq!(r.latency_nanos, 3000);
    assert_eq!(r.attempt, 1);
    assert!(
        r.node.is_empty() && r.agent_id.is_empty(),
        "the federator stamps them"
    );
    // A success names no problem; a skipped check says why.
    let r = runner::to_result(
        "node/kubelet",
        Finding::skipped("http://127.0.0.1:10248/healthz", "not a Kubernetes node"),
        1,
        Duration::ZERO,
    );
    assert_eq!(r.outcome(), Outcome::Success);
    assert!(!r.details.contains_key("problem"));
    assert_eq!(r.details["skipped"], "not a Kubernetes node");
}
