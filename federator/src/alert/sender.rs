//! One Alertmanager: a bounded queue holding the latest version of each pending alert, and the
//! task that POSTs it in batches with retries, never waiting on any other Alertmanager.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use url::Url;

use super::model::Alert;
use crate::metrics::Metrics;
use crate::state::StateKey;

/// Alerts pending per Alertmanager; new alerts beyond this are dropped (and counted).
pub const QUEUE_CAPACITY: usize = 10_000;
/// Alerts per POST.
pub const MAX_BATCH: usize = 256;
/// First pause after a failed POST; it doubles up to the cap given to [`run`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// How long one POST may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The alerts waiting for one Alertmanager, one entry per state key: a newer version of an
/// alert replaces the pending one, so the queue holds current state, not history.
pub struct Queue {
    /// The Alertmanager as shown in logs and metrics (no credentials).
    pub name: String,
    endpoint: Url,
    auth: Option<(String, Option<String>)>,
    pending: Mutex<Pending>,
    ready: Notify,
    depth: IntGauge,
    dropped: IntCounter,
}

#[derive(Default)]
struct Pending {
    alerts: HashMap<StateKey, Alert>,
    order: VecDeque<StateKey>,
}

impl Queue {
    /// A queue for the Alertmanager at `base` (its API is under `<base>/api/v2/`).
    pub fn new(base: &Url, metrics: &Metrics) -> Self {
        let mut shown = base.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        let name = shown.as_str().trim_end_matches('/').to_owned();
        let mut endpoint = shown;
        if !endpoint.path().ends_with('/') {
            let path = format!("{}/", endpoint.path());
            endpoint.set_path(&path);
        }
        let endpoint = endpoint
            .join("api/v2/alerts")
            .expect("a relative path joins onto an http(s) URL");
        let auth = (!base.username().is_empty()).then(|| {
            (
                base.username().to_owned(),
                base.password().map(str::to_owned),
            )
        });
        Self {
            depth: metrics.alert_queue_depth.with_label_values(&[&name]),
            dropped: metrics.alerts_dropped.with_label_values(&[&name]),
            name,
            endpoint,
            auth,
            pending: Mutex::default(),
            ready: Notify::new(),
        }
    }

    /// Queues the latest version of some alerts without waiting; returns how many were dropped.
    pub fn push(&self, alerts: impl IntoIterator<Item = (StateKey, Alert)>) -> usize {
        let mut dropped = 0;
        {
            let mut p = self.pending.lock().unwrap();
            for (key, alert) in alerts {
                if let Some(slot) = p.alerts.get_mut(&key) {
                    *slot = alert;
                } else if p.alerts.len() < QUEUE_CAPACITY {
                    p.order.push_back(key.clone());
                    p.alerts.insert(key, alert);
                } else {
                    dropped += 1;
                }
            }
            self.depth.set(p.alerts.len() as i64);
        }
        if dropped > 0 {
            self.dropped.inc_by(dropped as u64);
        }
        self.ready.notify_one();
        dropped
    }

    /// Takes up to `max` alerts, oldest first.
    fn take(&self, max: usize) -> Vec<(StateKey, Alert)> {
        let mut p = self.pending.lock().unwrap();
        let mut out = Vec::with_capacity(max.min(p.order.len()));
        while out.len() < max {
            let Some(key) = p.order.pop_front() else {
                break;
            };
            if let Some(alert) = p.alerts.remove(&key) {
                out.push((key, alert));
            }
        }
        self.depth.set(p.alerts.len() as i64);
        out
    }

    /// Puts back a batch that failed, except alerts that have a newer version pending.
    fn put_back(&self, batch: Vec<(StateKey, Alert)>) {
        let mut dropped = 0u64;
        let mut p = self.pending.lock().unwrap();
        for (key, alert) in batch.into_iter().rev() {
            if p.alerts.contains_key(&key) {
                continue;
            }
            if p.alerts.len() < QUEUE_CAPACITY {
                p.order.push_front(key.clone());
                p.alerts.insert(key, alert);
            } else {
                dropped += 1;
            }
        }
        self.depth.set(p.alerts.len() as i64);
        drop(p);
        if dropped > 0 {
            self.dropped.inc_by(dropped);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.pending.lock().unwrap().alerts.len()
    }
}

/// How one POST went.
#[derive(Debug, thiserror::Error)]
enum PostError {
    #[error("cannot reach it: {0}")]
    Send(#[source] reqwest::Error),
    #[error("it answered {status}: {body}")]
    Status {
        status: reqwest::StatusCode,
        body: String,
    },
}

/// Sends `queue` to its Alertmanager until `cancel`: a failed POST is retried after a pause
/// that doubles up to `max_backoff`; an alert Alertmanager refuses as invalid (4xx) is dropped.
pub async fn run(
    queue: std::sync::Arc<Queue>,
    client: reqwest::Client,
    metrics: std::sync::Arc<Metrics>,
    max_backoff: Duration,
    cancel: CancellationToken,
) {
    let sent = metrics
        .alert_notifications
        .with_label_values(&[&queue.name, "sent"]);
    let failed = metrics
        .alert_notifications
        .with_label_values(&[&queue.name, "failed"]);
    let refused = metrics
        .alert_notifications
        .with_label_values(&[&queue.name, "refused"]);
    let mut backoff = FIRST_BACKOFF;
    let mut failing_since: Option<tokio::time::Instant> = None;
    loop {
        let batch = loop {
            let batch = queue.take(MAX_BATCH);
            if !batch.is_empty() {
                break batch;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = queue.ready.notified() => {}
            }
        };
        let n = batch.len() as u64;
        let result = tokio::select! {
            () = cancel.cancelled() => return,
            r = post(&client, &queue, &batch) => r,
        };
        match result {
            Ok(()) => {
                sent.inc_by(n);
                if let Some(since) = failing_since.take() {
                    tracing::info!(alertmanager = %queue.name, down_for = ?since.elapsed(), "Alertmanager reachable again");
                }
                backoff = FIRST_BACKOFF;
            }
            Err(PostError::Status { status, body })
                if status.is_client_error() && status != 429 =>
            {
                refused.inc_by(n);
                tracing::error!(alertmanager = %queue.name, %status, %body, alerts = n, "Alertmanager refused alerts; dropping them");
            }
            Err(e) => {
                failed.inc_by(n);
                if failing_since.is_none() {
                    failing_since = Some(tokio::time::Instant::now());
                    tracing::warn!(alertmanager = %queue.name, error = %e, "cannot send alerts; retrying with backoff");
                } else {
                    tracing::debug!(alertmanager = %queue.name, error = %e, "cannot send alerts");
                }
                queue.put_back(batch);
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

async fn post(
    client: &reqwest::Client,
    queue: &Queue,
    batch: &[(StateKey, Alert)],
) -> Result<(), PostError> {
    let alerts: Vec<&Alert> = batch.iter().map(|(_, a)| a).collect();
    let mut request = client
        .post(queue.endpoint.clone())
        .timeout(REQUEST_TIMEOUT)
        .json(&alerts);
    if let Some((user, password)) = &queue.auth {
        request = request.basic_auth(user, password.as_ref());
    }
    let response = request.send().await.map_err(PostError::Send)?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let mut body = response.text().await.unwrap_or_default();
    body.truncate(512);
    Err(PostError::Status { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: usize) -> StateKey {
        StateKey {
            cluster: "c".into(),
            check: "ns/c".into(),
            target: format!("t{i}"),
            node: String::new(),
        }
    }

    fn alert(ends: &str) -> Alert {
        Alert {
            labels: Default::default(),
            annotations: Default::default(),
            starts_at: "s".into(),
            ends_at: ends.into(),
            generator_url: String::new(),
        }
    }

    #[test]
    fn endpoint_keeps_a_path_prefix_and_hides_credentials() {
        let m = Metrics::new();
        let q = Queue::new(&Url::parse("http://u:p@am:9093/prefix").unwrap(), &m);
        assert_eq!(q.name, "http://am:9093/prefix");
        assert_eq!(q.endpoint.as_str(), "http://am:9093/prefix/api/v2/alerts");
        assert_eq!(q.auth, Some(("u".into(), Some("p".into()))));
        let q = Queue::new(&Url::parse("http://am:9093").unwrap(), &m);
        assert_eq!(q.endpoint.as_str(), "http://am:9093/api/v2/alerts");
        assert_eq!(q.auth, None);
    }

    #[test]
    fn newer_versions_replace_pending_ones_and_overflow_is_counted() {
        let m = Metrics::new();
        let q = Queue::new(&Url::parse("http://am:9093").unwrap(), &m);
        q.push([(key(0), alert("a")), (key(1), alert("a"))]);
        q.push([(key(0), alert("b"))]);
        assert_eq!(q.len(), 2);
        let batch = q.take(MAX_BATCH);
        assert_eq!(batch[0], (key(0), alert("b")));
        assert_eq!(batch[1].0, key(1));

        // A failed batch goes back, but never over a newer version.
        q.push([(key(1), alert("c"))]);
        q.put_back(batch);
        let batch = q.take(MAX_BATCH);
        assert_eq!(batch, [(key(0), alert("b")), (key(1), alert("c"))]);

        let dropped = q.push((0..QUEUE_CAPACITY + 5).map(|i| (key(i), alert("x"))));
        assert_eq!(dropped, 5);
        assert_eq!(m.alerts_dropped.with_label_values(&[&q.name]).get(), 5);
        assert_eq!(
            m.alert_queue_depth.with_label_values(&[&q.name]).get(),
            QUEUE_CAPACITY as i64
        );
        assert_eq!(q.take(MAX_BATCH).len(), MAX_BATCH);
    }
}
