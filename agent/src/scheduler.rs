//! Runs assigned checks on a timer wheel (`tokio_util`'s `DelayQueue`).
//!
//! Each check keeps a stable phase within its interval (a hash of its id and target, anchored
//! to the Unix epoch), so thousands of checks spread evenly and keep their slots across
//! restarts. A run owns its retries and per-attempt timeouts; runs go concurrently up to an
//! in-flight limit, a slow target never delays another, a check never overlaps itself, and a
//! failing check switches to its `failingInterval`.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::time::{DelayQueue, delay_queue};
use vigil_proto::{CheckSpec, Outcome, ProbeResult};

use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::probe::{self, Attempt, Probe, Verdict};

/// Who produces the results.
#[derive(Clone, Debug)]
pub struct Identity {
    pub agent_id: String,
    pub node: String,
    pub cluster: String,
}

enum Command {
    Assign(Vec<CheckSpec>),
    Completed {
        key: String,
        revision: u64,
        failed: bool,
        started: Instant,
    },
}

/// Handle to the scheduler task.
#[derive(Clone)]
pub struct Scheduler {
    tx: mpsc::UnboundedSender<Command>,
}

impl Scheduler {
    /// Replaces the running checks; unchanged checks keep their timers.
    pub fn assign(&self, checks: Vec<CheckSpec>) {
        let _ = self.tx.send(Command::Assign(checks));
    }
}

struct Entry {
    spec: Arc<CheckSpec>,
    probe: Result<Arc<dyn Probe>, String>,
    qkey: delay_queue::Key,
    due: Instant,
    running: bool,
    failing: bool,
}

struct Shared {
    identity: Identity,
    outbox: Arc<Outbox>,
    metrics: Arc<Metrics>,
    permits: Arc<Semaphore>,
    done: mpsc::UnboundedSender<Command>,
}

/// Starts the scheduler; it stops scheduling on `cancel` (runs under way finish).
pub fn spawn(
    identity: Identity,
    outbox: Arc<Outbox>,
    metrics: Arc<Metrics>,
    max_in_flight: usize,
    cancel: CancellationToken,
) -> Scheduler {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        identity,
        outbox,
        metrics,
        permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
        done: tx.clone(),
    });
    tokio::spawn(run_loop(shared, rx, cancel));
    Scheduler { tx }
}

async fn run_loop(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Command>,
    cancel: CancellationToken,
) {
    let mut queue: DelayQueue<String> = DelayQueue::new();
    let mut entries: HashMap<String, Entry> = HashMap::new();
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            cmd = rx.recv() => match cmd {
                None => break,
                Some(Command::Assign(specs)) => assign(&mut queue, &mut entries, specs, &shared.metrics),
                Some(Command::Completed { key, revision, failed, started }) => {
                    let Some(entry) = entries.get_mut(&key) else { continue };
                    if entry.spec.revision != revision {
                        continue;
                    }
                    entry.running = false;
                    entry.failing = failed;
                    if failed && entry.spec.failing_interval_ms > 0 {
                        let sooner = started + Duration::from_millis(entry.spec.failing_interval_ms);
                        if sooner < entry.due {
                            queue.reset_at(&entry.qkey, sooner.into());
                            entry.due = sooner;
                        }
                    }
                }
            },
            Some(expired) = std::future::poll_fn(|cx| queue.poll_expired(cx)), if !queue.is_empty() => {
                let key = expired.into_inner();
                if let Some(entry) = entries.get_mut(&key) {
                    fire(&shared, &mut queue, key, entry);
                }
            }
        }
    }
}

fn assign(
    queue: &mut DelayQueue<String>,
    entries: &mut HashMap<String, Entry>,
    specs: Vec<CheckSpec>,
    metrics: &Metrics,
) {
    metrics
        .checks_assigned
        .set(i64::try_from(specs.len()).unwrap_or(i64::MAX));
    // Checks no longer assigned leave /metrics with their gauges.
    let assigned: std::collections::HashSet<(&str, &str)> = specs
        .iter()
        .map(|s| (s.id.as_str(), s.target.as_str()))
        .collect();
    metrics
        .probe
        .retain(|id, target| assigned.contains(&(id, target)));
    let mut wanted: HashMap<String, CheckSpec> =
        specs.into_iter().map(|s| (key_of(&s), s)).collect();
    entries.retain(|key, entry| {
        let keep = wanted
            .get(key)
            .is_some_and(|s| s.revision == entry.spec.revision);
        if keep {
            wanted.remove(key);
        } else {
            queue.remove(&entry.qkey);
        }
        keep
    });
    for (key, spec) in wanted {
        let probe = probe::build(&spec);
        if let Err(e) = &probe {
            tracing::warn!(check = %spec.id, target = %spec.target, error = %e, "check cannot run; each run reports ERROR");
        }
        let due = first_due(&key, Duration::from_millis(spec.interval_ms.max(1)));
        let qkey = queue.insert_at(key.clone(), due.into());
        entries.insert(
            key,
            Entry {
                spec: Arc::new(spec),
                probe,
                qkey,
                due,
                running: false,
                failing: false,
            },
        );
    }
}

fn fire(shared: &Arc<Shared>, queue: &mut DelayQueue<String>, key: String, entry: &mut Entry) {
    let due = entry.due;
    let now = Instant::now();
    let period_ms = if entry.failing && entry.spec.failing_interval_ms > 0 {
        entry.spec.failing_interval_ms
    } else {
        entry.spec.interval_ms
    };
    let period = Duration::from_millis(period_ms.max(1));
    let mut next = due + period;
    if next <= now {
        // Fell behind (suspended process, overload): skip missed slots, keep the phase.
        let behind = now.duration_since(due).as_nanos() % period.as_nanos();
        next = now + period - Duration::from_nanos(u64::try_from(behind).unwrap_or(0));
    }
    entry.due = next;
    entry.qkey = queue.insert_at(key.clone(), next.into());
    if entry.running {
        shared.metrics.runs_skipped.inc();
        return;
    }
    entry.running = true;
    let spec = Arc::clone(&entry.spec);
    let probe = entry.probe.clone();
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        let Ok(_permit) = Arc::clone(&shared.permits).acquire_owned().await else {
            return;
        };
        let started = Instant::now();
        shared
            .metrics
            .start_lateness
            .observe(started.saturating_duration_since(due).as_secs_f64());
        let result = run_check(&spec, &probe, &shared.identity).await;
        record_metrics(&shared.metrics, &spec, &result);
        let failed = result.outcome() != Outcome::Success;
        shared.outbox.push(result, &shared.metrics);
        let _ = shared.done.send(Command::Completed {
            key,
            revision: spec.revision,
            failed,
            started,
        });
    });
}

/// One run: attempts until success or retries are used up, each under the check's timeout.
pub async fn run_check(
    spec: &CheckSpec,
    probe: &Result<Arc<dyn Probe>, String>,
    id: &Identity,
) -> ProbeResult {
    let timeout = Duration::from_millis(spec.timeout_ms.max(1));
    let start_unix_nanos = now_unix_nanos();
    let attempts = spec.retries + 1;
    let mut attempt_no = 1;
    loop {
        let attempt = Attempt::default();
        let t = Instant::now();
        let (outcome, reason) = match probe {
            Err(e) => (Outcome::Error, e.clone()),
            Ok(probe) => match tokio::time::timeout(timeout, probe.run(&attempt)).await {
                Ok(Verdict::Success) => (Outcome::Success, String::new()),
                Ok(Verdict::Failure(r)) => (Outcome::Failure, r),
                Ok(Verdict::Error(r)) => (Outcome::Error, r),
                Err(_) => {
                    let phase = attempt.notes().phase;
                    let phase = if phase.is_empty() {
                        String::new()
                    } else {
                        format!(" in {phase}")
                    };
                    (
                        Outcome::Timeout,
                        format!("timed out after {}{phase}", humanize(timeout)),
                    )
                }
            },
        };
        let latency = t.elapsed();
        if outcome == Outcome::Success || attempt_no >= attempts || probe.is_err() {
            let notes = attempt.into_notes();
            return ProbeResult {
                check_id: spec.id.clone(),
                target: spec.target.clone(),
                node: id.node.clone(),
                cluster: id.cluster.clone(),
                agent_id: id.agent_id.clone(),
                seq: 0,
                start_unix_nanos,
                latency_nanos: u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX),
                outcome: outcome as i32,
                reason,
                attempt: attempt_no,
                details: notes.details,
                values: notes.values,
                scope: String::new(),
            };
        }
        attempt_no += 1;
    }
}

fn record_metrics(m: &Metrics, spec: &CheckSpec, r: &ProbeResult) {
    m.produced(r.outcome()).inc();
    m.probe.record(spec, r);
}

fn key_of(spec: &CheckSpec) -> String {
    format!("{}\0{}", spec.id, spec.target)
}

/// The next instant on the check's phase grid: `unix_time % interval == hash % interval`.
fn first_due(key: &str, interval: Duration) -> Instant {
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    let interval_ns = u64::try_from(interval.as_nanos())
        .unwrap_or(u64::MAX)
        .max(1);
    let offset = h.finish() % interval_ns;
    let now_ns = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    )
    .unwrap_or(0);
    let since_slot = (now_ns % interval_ns + interval_ns - offset) % interval_ns;
    let wait = if since_slot == 0 {
        0
    } else {
        interval_ns - since_slot
    };
    Instant::now() + Duration::from_nanos(wait)
}

pub fn now_unix_nanos() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    )
    .unwrap_or(i64::MAX)
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_is_stable_and_within_the_interval() {
        let interval = Duration::from_secs(10);
        let a = first_due("ns/a\0t", interval);
        let wait = a.saturating_duration_since(Instant::now());
        assert!(wait <= interval);
        // Re-computed a moment later, the same check lands on the same slot.
        let b = first_due("ns/a\0t", interval);
        let diff = if a > b { a - b } else { b - a };
        assert!(
            diff < Duration::from_millis(50) || diff > interval - Duration::from_millis(50),
            "{diff:?}"
        );
    }

    #[test]
    fn blackbox_named_gauges_follow_result_values() {
        let m = Metrics::new();
        let spec = CheckSpec {
            id: "ns/c".into(),
            target: "t".into(),
            probe: Some(vigil_proto::check_spec::Probe::Http(Default::default())),
            ..Default::default()
        };
        let mut r = ProbeResult {
            outcome: Outcome::Success as i32,
            ..Default::default()
        };
        r.values.insert("ssl_earliest_cert_expiry".into(), 1.9e9);
        r.values.insert("phase_connect_seconds".into(), 0.002);
        record_metrics(&m, &spec, &r);
        let text = m.render();
        for line in [
            r#"probe_success{check="c",namespace="ns",target="t"} 1"#,
            r#"probe_ssl_earliest_cert_expiry{check="c",namespace="ns",target="t"} 1900000000"#,
            r#"probe_http_duration_seconds{check="c",namespace="ns",target="t",phase="connect"} 0.002"#,
            r#"probe_http_duration_seconds{check="c",namespace="ns",target="t",phase="tls"} 0"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    #[test]
    fn humanize_picks_the_natural_unit() {
        assert_eq!(humanize(Duration::from_secs(2)), "2s");
        assert_eq!(humanize(Duration::from_millis(250)), "250ms");
    }
}
