//! Runs each diagnostic on its own interval in the blocking pool under a time limit, turns its
//! findings into `node/<name>` results in the outbox, and keeps the node-problem metrics.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use vigil_proto::{Outcome, ProbeResult};

use super::{CHECK_PREFIX, Diagnostic, Finding, HostPaths, Settings};
use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::scheduler::now_unix_nanos;

/// Where findings go: the outbox (when there is a federator) and the metrics.
pub struct Sink {
    outbox: Option<Arc<Outbox>>,
    metrics: Arc<Metrics>,
    /// Failing (check, target) pairs and the problem class each holds active.
    active: Mutex<HashMap<(String, String), String>>,
    /// Every class a running diagnostic can report: their gauges exist from the start at 0.
    known: Mutex<BTreeSet<String>>,
}

impl Sink {
    pub fn new(outbox: Option<Arc<Outbox>>, metrics: Arc<Metrics>) -> Self {
        Self {
            outbox,
            metrics,
            active: Mutex::default(),
            known: Mutex::default(),
        }
    }

    /// Makes the `vigil_node_problem` gauges of `classes` exist (at 0 until active).
    pub fn register(&self, classes: impl IntoIterator<Item = String>) {
        let mut known = self.known.lock().unwrap();
        for c in classes {
            self.metrics.node_problem.with_label_values(&[&c]).set(0);
            known.insert(c);
        }
    }

    /// One result per finding of one pass of `diagnostic`.
    pub fn publish(
        &self,
        diagnostic: &str,
        findings: Vec<Finding>,
        start_unix_nanos: i64,
        latency: Duration,
    ) {
        let check_id = format!("{CHECK_PREFIX}{diagnostic}");
        let mut changed = false;
        for f in findings {
            changed |= self.track(diagnostic, &check_id, &f);
            let result = to_result(&check_id, f, start_unix_nanos, latency);
            self.metrics
                .results_produced
                .with_label_values(&[result.outcome().name()])
                .inc();
            if let Some(outbox) = &self.outbox {
                outbox.push(result, &self.metrics);
            }
        }
        if changed {
            self.refresh_gauges();
        }
    }

    /// Updates the active problems and counters; true when the active set changed.
    fn track(&self, diagnostic: &str, check_id: &str, f: &Finding) -> bool {
        let key = (check_id.to_owned(), f.target.clone());
        let mut active = self.active.lock().unwrap();
        match f.outcome {
            Outcome::Error | Outcome::Timeout | Outcome::Unspecified => {
                self.metrics
                    .node_diagnostic_errors
                    .with_label_values(&[diagnostic])
                    .inc();
                tracing::debug!(diagnostic, target = %f.target, reason = %f.reason, "node diagnostic could not tell");
                false // unknown: whatever was active stays so
            }
            Outcome::Failure => {
                let class = f.problem.clone().unwrap_or_default();
                if f.event {
                    let reason = f.details.get("reason").map_or("", String::as_str);
                    self.metrics
                        .node_problem_events
                        .with_label_values(&[&class, reason])
                        .inc();
                    tracing::warn!(diagnostic, problem = %class, reason, line = %f.details.get("line").map_or("", String::as_str), "kernel log problem");
                    if f.details.get("condition").is_none_or(|c| c != "true") {
                        return false;
                    }
                }
                let before = active.insert(key, class.clone());
                if before.as_deref() != Some(class.as_str()) {
                    tracing::warn!(diagnostic, target = %f.target, problem = %class, reason = %f.reason, "node problem");
                    true
                } else {
                    false
                }
            }
            Outcome::Success => {
                let gone = active.remove(&key);
                if let Some(class) = &gone {
                    tracing::info!(diagnostic, target = %f.target, problem = %class, "node problem cleared");
                }
                gone.is_some()
            }
        }
    }

    fn refresh_gauges(&self) {
        let active = self.active.lock().unwrap();
        let mut known = self.known.lock().unwrap();
        known.extend(active.values().cloned());
        for class in known.iter() {
            let on = active.values().any(|c| c == class);
            self.metrics
                .node_problem
                .with_label_values(&[class])
                .set(i64::from(on));
        }
    }
}

/// A finding as a result: `node/<diagnostic>`, scope `node`; node, cluster and agent are left
/// empty for the federator to stamp from the stream's Hello, as probe results are.
pub fn to_result(
    check_id: &str,
    f: Finding,
    start_unix_nanos: i64,
    latency: Duration,
) -> ProbeResult {
    let mut details: BTreeMap<String, String> = f.details.into_iter().collect();
    if f.outcome == Outcome::Failure
        && let Some(p) = f.problem
    {
        details.insert("problem".to_owned(), p);
    }
    if f.event {
        details.insert("event".to_owned(), "true".to_owned());
    }
    ProbeResult {
        check_id: check_id.to_owned(),
        target: f.target,
        node: String::new(),
        cluster: String::new(),
        agent_id: String::new(),
        seq: 0,
        start_unix_nanos,
        latency_nanos: u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX),
        outcome: f.outcome as i32,
        reason: f.reason,
        attempt: 1,
        details,
        values: f.values.into_iter().collect(),
        scope: "node".to_owned(),
    }
}

/// Runs one pass of `diag` now, on this thread; a panic inside becomes an ERROR finding.
pub fn run_once(diag: &mut dyn Diagnostic, paths: &HostPaths) -> Vec<Finding> {
    let name = diag.name();
    match std::panic::catch_unwind(AssertUnwindSafe(|| diag.run(paths))) {
        Ok(f) => f,
        Err(p) => {
            let what = p
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            vec![Finding::error(
                name,
                format!(
                    "the {name} diagnostic failed unexpectedly ({what}); this is a bug, please report it"
                ),
            )]
        }
    }
}

/// Starts every enabled diagnostic; they stop on `cancel`.
pub fn spawn(
    settings: &Settings,
    outbox: Option<Arc<Outbox>>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let diagnostics = super::build(&settings.config, Arc::clone(&metrics.federator_clock));
    let names: Vec<&str> = diagnostics.iter().map(|d| d.name()).collect();
    tracing::info!(diagnostics = ?names, proc = %settings.paths.proc.display(), kmsg = %settings.paths.kmsg.display(), "node diagnostics starting");
    spawn_all(
        diagnostics,
        Arc::new(settings.paths.clone()),
        Arc::new(Sink::new(outbox, metrics)),
        settings.config.run_timeout,
        &cancel,
    )
}

/// Starts `diagnostics`, each on its own interval, every pass limited to `limit`.
pub fn spawn_all(
    diagnostics: Vec<Box<dyn Diagnostic>>,
    paths: Arc<HostPaths>,
    sink: Arc<Sink>,
    limit: Duration,
    cancel: &CancellationToken,
) -> Vec<JoinHandle<()>> {
    diagnostics
        .into_iter()
        .map(|d| {
            sink.register(d.problems());
            tokio::spawn(drive(
                d,
                Arc::clone(&paths),
                Arc::clone(&sink),
                limit,
                cancel.clone(),
            ))
        })
        .collect()
}

type Pass = (Box<dyn Diagnostic>, Vec<Finding>);

/// One diagnostic's loop. A pass that outlives `limit` is reported as ERROR and not started
/// again until it returns (a hung statvfs on a dead mount keeps one thread, not more).
async fn drive(
    diag: Box<dyn Diagnostic>,
    paths: Arc<HostPaths>,
    sink: Arc<Sink>,
    limit: Duration,
    cancel: CancellationToken,
) {
    let name = diag.name();
    let mut ticker = tokio::time::interval(diag.interval());
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut idle: Option<Box<dyn Diagnostic>> = Some(diag);
    let mut stuck: Option<JoinHandle<Pass>> = None;
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let mut diag = match idle.take() {
            Some(d) => d,
            None => match stuck.take() {
                Some(h) if h.is_finished() => match h.await {
                    Ok((d, _late)) => d,
                    Err(_) => return, // cannot happen: panics are caught inside the pass
                },
                Some(h) => {
                    stuck = Some(h);
                    continue;
                }
                None => return,
            },
        };
        let start = now_unix_nanos();
        let t = Instant::now();
        let p = Arc::clone(&paths);
        let mut handle = tokio::task::spawn_blocking(move || {
            let findings = run_once(diag.as_mut(), &p);
            (diag, findings)
        });
        match tokio::time::timeout(limit, &mut handle).await {
            Ok(Ok((d, findings))) => {
                idle = Some(d);
                sink.publish(name, findings, start, t.elapsed());
            }
            Ok(Err(e)) => {
                tracing::error!(diagnostic = name, error = %e, "node diagnostic task lost; it stops");
                return;
            }
            Err(_) => {
                sink.publish(
                    name,
                    vec![Finding::error(
                        name,
                        format!(
                            "one pass took longer than {} (a hung filesystem?); it is not started again until it returns",
                            humantime::format_duration(limit)
                        ),
                    )],
                    start,
                    t.elapsed(),
                );
                stuck = Some(handle);
            }
        }
    }
}
