//! Fans result batches out to every sink in parallel; a batch is durable once every sink has it.
//!
//! Each sink runs in its own task behind a bounded queue and commits whatever has queued up in
//! one write (group commit). A failed write is retried with backoff and nothing is acknowledged
//! meanwhile, so a full queue pushes back on the agents' streams instead of growing memory.

use std::sync::Arc;
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, join_all};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vigil_proto::ProbeResult;

use crate::metrics::Metrics;
use crate::sink::Sink;

/// Batches waiting per sink before submitters wait.
const QUEUE_BATCHES: usize = 256;
/// Results one group commit takes at most.
const GROUP_RESULTS: usize = 20_000;

struct Job {
    batch: Arc<Vec<ProbeResult>>,
    done: oneshot::Sender<()>,
}

/// Completes when every sink has durably written the batch; fails only if the federator stops.
pub type Durable = BoxFuture<'static, Result<(), Stopped>>;

#[derive(Debug, thiserror::Error)]
#[error("the federator is shutting down before the batch was durable")]
pub struct Stopped;

#[derive(Clone)]
pub struct Pipeline {
    queues: Arc<Vec<mpsc::Sender<Job>>>,
}

impl Pipeline {
    /// Starts one task per sink on `tracker`; they drain their queues and stop on `cancel`.
    pub fn start(
        sinks: Vec<Box<dyn Sink>>,
        metrics: Arc<Metrics>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        let queues = sinks
            .into_iter()
            .map(|sink| {
                let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
                tracker.spawn(run_sink(sink, rx, Arc::clone(&metrics), cancel.clone()));
                tx
            })
            .collect();
        Self {
            queues: Arc::new(queues),
        }
    }

    /// Queues a batch on every sink (waiting for room) and returns when it will be durable.
    pub async fn submit(&self, batch: Arc<Vec<ProbeResult>>) -> Durable {
        let mut waits = Vec::with_capacity(self.queues.len());
        for queue in self.queues.iter() {
            let (done, wait) = oneshot::channel();
            if queue
                .send(Job {
                    batch: Arc::clone(&batch),
                    done,
                })
                .await
                .is_err()
            {
                return async { Err(Stopped) }.boxed();
            }
            waits.push(wait);
        }
        async move {
            for r in join_all(waits).await {
                r.map_err(|_| Stopped)?;
            }
            Ok(())
        }
        .boxed()
    }
}

async fn run_sink(
    mut sink: Box<dyn Sink>,
    mut rx: mpsc::Receiver<Job>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let name = sink.name();
    let mut jobs: Vec<Job> = Vec::new();
    loop {
        // After cancellation, keep draining what is queued; the senders close when connections end.
        let first = tokio::select! {
            job = rx.recv() => job,
            () = cancel.cancelled(), if rx.is_empty() => None,
        };
        let Some(first) = first else { break };
        let mut count = first.batch.len();
        jobs.push(first);
        while count < GROUP_RESULTS {
            match rx.try_recv() {
                Ok(job) => {
                    count += job.batch.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let batches: Vec<Arc<Vec<ProbeResult>>> =
            jobs.iter().map(|j| Arc::clone(&j.batch)).collect();
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = std::time::Instant::now();
            match sink.write(&batches).await {
                Ok(()) => {
                    metrics
                        .sink_write_seconds
                        .with_label_values(&[name])
                        .observe(started.elapsed().as_secs_f64());
                    metrics
                        .sink_written
                        .with_label_values(&[name])
                        .inc_by(count as u64);
                    break;
                }
                Err(e) => {
                    metrics.sink_errors.with_label_values(&[name]).inc();
                    tracing::warn!(sink = name, error = %e, retry_in = ?backoff, "sink write failed; results stay unacknowledged");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = cancel.cancelled() => {
                            tracing::error!(sink = name, results = count, "shutting down with undelivered results; agents will resend them");
                            return;
                        }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
        for job in jobs.drain(..) {
            let _ = job.done.send(());
        }
    }
}
