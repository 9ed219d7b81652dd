//! The alert notifier: turns Failing and recovered check states into Alertmanager alerts,
//! resends them every interval, and hands them to every configured Alertmanager.
//!
//! Transitions arrive without blocking ingestion ([`Notifier::observe`]). One task keeps the
//! table of firing and recently resolved alerts and, every resend interval, reconciles it with
//! the live [`State`] (so a missed transition or a removed check is corrected) and requeues the
//! whole table. Each Alertmanager has its own queue and task ([`sender`]): a slow or dead one
//! delays nobody, and because its queue keeps only the latest version of each alert it catches
//! up on current state, not history, when it comes back.
//!
//! Besides `HealthCheckFailing`, a failing node diagnostic (`node/<diagnostic>` with a problem
//! class) fires `NodeProblem`, and an agent gone for longer than `agent_silent_after` fires
//! `VigilAgentSilent` ([`node`]). A firing check alert's description carries the latest
//! deep-check findings of its run of failures from the next resend on.

mod model;
mod node;
mod sender;
mod table;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use url::Url;
use vigil_proto::ProbeResult;

pub use model::{ALERTNAME, Alert, LastResult};
pub use node::{AGENT_SILENT, NODE_PROBLEM};
pub use sender::{MAX_BATCH, QUEUE_CAPACITY};

use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::state::{Health, State, Transition};

/// How long a resolved alert keeps being resent, so an Alertmanager that was away learns of it.
pub const RESOLVED_RESEND_FOR: Duration = Duration::from_secs(15 * 60);
/// A firing alert's `endsAt` is this many resend intervals ahead (as Prometheus does).
const ENDS_AT_INTERVALS: u32 = 4;
/// Transitions waiting for the notifier task; more are dropped and picked up at the next resend.
const EVENTS_CAPACITY: usize = 10_000;

/// Where alerts go and how often they are resent.
#[derive(Clone, Debug)]
pub struct Config {
    /// Every one of these Alertmanagers gets every alert (`--alertmanager`).
    pub alertmanagers: Vec<Url>,
    /// Firing and recently resolved alerts are sent again this often. Default 1m.
    pub resend_interval: Duration,
    /// Base of each alert's `generatorURL` (`<this>?check=<ns>/<name>`).
    pub external_url: Url,
    /// An agent whose stream has been gone this long fires VigilAgentSilent
    /// (`--agent-silent-after`). Default 2m.
    pub agent_silent_after: Duration,
    /// Deep-check findings, quoted in the description of the check's alert.
    pub deep_checks: Arc<crate::deep_check::DeepChecks>,
    /// Forwarding clusters: one gone silent fires VigilClusterSilent.
    pub federation: Option<Arc<crate::federation::Federation>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error(
        "--alertmanager {url}: only http and https URLs are supported; write it like http://alertmanager:9093"
    )]
    Scheme { url: String },
    #[error("--alert-resend-interval must be more than zero")]
    ResendInterval,
    #[error("--agent-silent-after must be more than zero; write it like 2m")]
    SilentAfter,
    #[error("cannot build the HTTP client for Alertmanager: {0}")]
    Client(#[source] reqwest::Error),
}

/// A handle to the notifier task, cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    events: mpsc::Sender<Event>,
    dropped: Arc<AtomicU64>,
}

struct Event {
    transition: Transition,
    last: LastResult,
}

impl Notifier {
    /// Starts the notifier task and one sender task per Alertmanager on `tracker`; they stop
    /// on `cancel`.
    pub fn start(
        config: Config,
        hub: Arc<Hub>,
        state: Arc<State>,
        metrics: Arc<Metrics>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<Self, AlertError> {
        if config.resend_interval.is_zero() {
            return Err(AlertError::ResendInterval);
        }
        if config.agent_silent_after.is_zero() {
            return Err(AlertError::SilentAfter);
        }
        if let Some(bad) = config
            .alertmanagers
            .iter()
            .find(|u| !matches!(u.scheme(), "http" | "https"))
        {
            return Err(AlertError::Scheme {
                url: bad.to_string(),
            });
        }
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("vigil-federator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(AlertError::Client)?;
        let max_backoff = config
            .resend_interval
            .clamp(Duration::from_secs(1), Duration::from_secs(30));
        let queues: Vec<Arc<sender::Queue>> = config
            .alertmanagers
            .iter()
            .map(|u| Arc::new(sender::Queue::new(u, &metrics)))
            .collect();
        for q in &queues {
            tracing::info!(alertmanager = %q.name, "sending alerts to Alertmanager");
            tracker.spawn(sender::run(
                Arc::clone(q),
                client.clone(),
                Arc::clone(&metrics),
                max_backoff,
                cancel.clone(),
            ));
        }
        let (tx, rx) = mpsc::channel(EVENTS_CAPACITY);
        let dropped = Arc::new(AtomicU64::new(0));
        let table = table::Table::new(config, hub, state, metrics, queues, Arc::clone(&dropped));
        tracker.spawn(table.run(rx, cancel));
        Ok(Self {
            events: tx,
            dropped,
        })
    }

    /// Hands over a health change and the result that caused it; never waits.
    pub fn observe(&self, transition: &Transition, result: &ProbeResult) {
        let relevant = transition.to == Health::Failing || transition.from == Health::Failing;
        if !relevant {
            return;
        }
        let event = Event {
            transition: transition.clone(),
            last: LastResult {
                reason: result.reason.clone(),
                latency_seconds: result.latency_nanos as f64 / 1e9,
                problem: result.details.get("problem").cloned(),
                deep_check: None,
            },
        };
        if self.events.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests;
