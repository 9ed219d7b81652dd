//! ICMP echo probes against the loopback interface (127.0.0.1 and ::1 only).
//!
//! Where this process may open neither an unprivileged ICMP datagram socket nor a raw socket,
//! the probe reports ERROR with the reason; each test then prints `skipped: <reason>` to stderr
//! and returns, so the skip is visible in the test output rather than silent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vigil_agent::probe::Probe as _;
use vigil_agent::probe::icmp::IcmpProbe;
use vigil_agent::probe::{self, Verdict};
use vigil_agent::scheduler::{Identity, run_check};
use vigil_proto::{CheckSpec, IcmpProbe as IcmpSpec, Outcome, ProbeResult, check_spec::Probe};

fn identity() -> Identity {
    Identity {
        agent_id: "a".into(),
        node: "n".into(),
        cluster: "c".into(),
    }
}

fn icmp_spec(host: &str, count: u32, timeout_ms: u64) -> CheckSpec {
    CheckSpec {
        id: "ns/ping".into(),
        target: host.into(),
        interval_ms: 10_000,
        timeout_ms,
        probe: Some(Probe::Icmp(IcmpSpec {
            host: host.into(),
            count,
            max_loss_percent: 0,
        })),
        ..Default::default()
    }
}

/// Runs the check through the scheduler's `run_check`, with the probe built directly (so the
/// test does not depend on `probe::build` dispatching icmp).
async fn run(spec: &CheckSpec) -> ProbeResult {
    let Some(Probe::Icmp(p)) = &spec.probe else {
        unreachable!()
    };
    let built: Result<Arc<dyn probe::Probe>, String> =
        IcmpProbe::new(p).map(|p| Arc::new(p) as Arc<dyn probe::Probe>);
    run_check(spec, &built, &identity()).await
}

/// True (after saying so on stderr) when this host lets us open no ICMP socket at all.
fn skipped(r: &ProbeResult) -> bool {
    if r.outcome() == Outcome::Error && r.reason.starts_with("cannot open an ICMP") {
        eprintln!("skipped: {}", r.reason);
        return true;
    }
    false
}

fn assert_clean_success(r: &ProbeResult, ip: &str, count: f64) {
    assert_eq!(
        (r.outcome(), r.reason.as_str()),
        (Outcome::Success, ""),
        "{r:?}"
    );
    assert_eq!(r.details["resolved_ip"], ip);
    let socket = r.details["socket"].as_str();
    assert!(socket == "datagram" || socket == "raw", "{socket}");
    let v = &r.values;
    assert_eq!(v["icmp_sent"], count, "{v:?}");
    assert_eq!(v["icmp_received"], count, "{v:?}");
    assert_eq!(v["icmp_loss_ratio"], 0.0, "{v:?}");
    let (min, avg, max) = (
        v["icmp_rtt_min_seconds"],
        v["icmp_rtt_avg_seconds"],
        v["icmp_rtt_max_seconds"],
    );
    assert!(
        0.0 < min && min <= avg && avg <= max && max < 1.0,
        "{min} {avg} {max}"
    );
}

#[tokio::test]
async fn ping_ipv4_loopback_succeeds() {
    let r = run(&icmp_spec("127.0.0.1", 3, 5_000)).await;
    if skipped(&r) {
        return;
    }
    assert_clean_success(&r, "127.0.0.1", 3.0);
    eprintln!("socket kind: {}", r.details["socket"]);
}

#[tokio::test]
async fn ping_ipv6_loopback_succeeds() {
    if let Err(e) = std::net::UdpSocket::bind("[::1]:0") {
        eprintln!("skipped: this host has no IPv6 loopback (binding [::1]:0 failed: {e})");
        return;
    }
    let r = run(&icmp_spec("::1", 3, 5_000)).await;
    if skipped(&r) {
        return;
    }
    assert_clean_success(&r, "::1", 3.0);
}

#[tokio::test]
async fn ping_finishes_once_all_replies_are_in() {
    // Ten echoes under a 30 s timeout: the probe must not wait for the timeout, nor for the
    // full 100 ms spacing when each reply is already back.
    let t = Instant::now();
    let r = run(&icmp_spec("127.0.0.1", 10, 30_000)).await;
    if skipped(&r) {
        return;
    }
    assert_clean_success(&r, "127.0.0.1", 10.0);
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn concurrent_pings_keep_their_own_replies() {
    // Raw sockets see every echo reply on the host: each run must count only its own.
    let spec = icmp_spec("127.0.0.1", 5, 5_000);
    let results = futures::future::join_all((0..6).map(|_| run(&spec))).await;
    if skipped(&results[0]) {
        return;
    }
    for r in &results {
        assert_clean_success(r, "127.0.0.1", 5.0);
    }
}

#[tokio::test]
async fn the_probe_runs_without_the_scheduler_too() {
    let probe = IcmpProbe::new(&IcmpSpec {
        host: "[::1]".into(),
        count: 1,
        max_loss_percent: 0,
    })
    .unwrap();
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: this host has no IPv6 loopback");
        return;
    }
    let attempt = probe::Attempt::default();
    let verdict = tokio::time::timeout(Duration::from_secs(5), probe.run(&attempt))
        .await
        .expect("one echo on loopback comes back well within 5s");
    match verdict {
        Verdict::Error(reason) if reason.starts_with("cannot open an ICMP") => {
            eprintln!("skipped: {reason}");
        }
        v => {
            assert_eq!(v, Verdict::Success);
            let notes = attempt.notes();
            assert_eq!(notes.phase, "waiting for echo replies");
            assert_eq!(notes.details["resolved_ip"], "::1");
            assert_eq!(notes.values["icmp_received"], 1.0);
        }
    }
}

#[test]
fn invalid_specs_are_rejected_when_built() {
    let err = IcmpProbe::new(&IcmpSpec {
        host: "127.0.0.1".into(),
        count: 3,
        max_loss_percent: 150,
    })
    .err()
    .unwrap();
    assert_eq!(err, "maxLossPercent 150 is more than 100");
}
