//! Fans result batches out to every sink in parallel; a batch is durable once every sink has it.
//!
//! Each sink runs in its own task behind a bounded queue and commits whatever has queued up in
//! one write (group commit). A failed write is retried with backoff and nothing is acknowledged
//! meanwhile, so a full queue pushes back on the agents' streams instead of growing memory.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::future::{BoxFuture, FutureExt, join_all};
use futures::stream::FuturesOrdered;

use crate::sink::SinkError;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vigil_proto::pool::Results;

use crate::api::Readiness;
use crate::metrics::Metrics;
use crate::sink::Sink;

/// Batches waiting per sink before submitters wait.
const QUEUE_BATCHES: usize = 256;
/// Results taken and not yet written by every sink before submitters wait: the memory bound
/// when batches are large (a cluster link's hold thousands), where `QUEUE_BATCHES` is not one.
const QUEUE_RESULTS: usize = 30_000;
/// Results one group commit takes at most (a sink may ask for fewer).
const GROUP_RESULTS: usize = 20_000;

struct Job {
    batch: Arc<Results>,
    done: oneshot::Sender<()>,
    /// Its results' room in `QUEUE_RESULTS`, given back when every sink is done with it.
    _room: Arc<tokio::sync::OwnedSemaphorePermit>,
}

/// Completes when every sink has durably written the batch; fails only if the federator stops.
pub type Durable = BoxFuture<'static, Result<(), Stopped>>;

#[derive(Debug, thiserror::Error)]
#[error("the federator is shutting down before the batch was durable")]
pub struct Stopped;

#[derive(Clone)]
pub struct Pipeline {
    queues: Arc<Vec<mpsc::Sender<Job>>>,
    room: Arc<tokio::sync::Semaphore>,
}

impl Pipeline {
    /// Starts one task per sink on `tracker`; they drain their queues and stop on `cancel`.
    /// A sink whose writes fail makes the federator unready (with the reason) until one succeeds.
    pub fn start(
        sinks: Vec<Box<dyn Sink>>,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Self {
        let queues = sinks
            .into_iter()
            .map(|sink| {
                let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
                tracker.spawn(run_sink(
                    sink,
                    rx,
                    Arc::clone(&metrics),
                    Arc::clone(&readiness),
                    cancel.clone(),
                ));
                tx
            })
            .collect();
        Self {
            queues: Arc::new(queues),
            room: Arc::new(tokio::sync::Semaphore::new(QUEUE_RESULTS)),
        }
    }

    /// Queues a batch on every sink (waiting for room) and returns when it will be durable.
    pub async fn submit(&self, batch: Arc<Results>) -> Durable {
        let wanted = u32::try_from(batch.len().clamp(1, QUEUE_RESULTS)).unwrap_or(u32::MAX);
        let Ok(room) = Arc::clone(&self.room).acquire_many_owned(wanted).await else {
            return async { Err(Stopped) }.boxed();
        };
        let room = Arc::new(room);
        let mut waits = Vec::with_capacity(self.queues.len());
        for queue in self.queues.iter() {
            let (done, wait) = oneshot::channel();
            if queue
                .send(Job {
                    batch: Arc::clone(&batch),
                    done,
                    _room: Arc::clone(&room),
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

/// One group commit in flight: its jobs, its results, and when it started.
struct Group {
    jobs: Vec<Job>,
    batches: Vec<Arc<Results>>,
    count: usize,
    started: std::time::Instant,
}

async fn run_sink(
    mut sink: Box<dyn Sink>,
    mut rx: mpsc::Receiver<Job>,
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    cancel: CancellationToken,
) {
    let name = sink.name();
    let part = format!("sink {name}");
    let queue_depth = metrics.sink_queue_depth.with_label_values(&[name]);
    let max_in_flight = sink.max_in_flight().max(1);
    let group_results = sink.max_group_results().clamp(1, GROUP_RESULTS);
    let mut in_flight: FuturesOrdered<BoxFuture<'static, (Group, Result<(), SinkError>)>> =
        FuturesOrdered::new();
    let mut open = true;
    let mut backoff = Duration::from_millis(100);
    while open || !in_flight.is_empty() {
        tokio::select! {
            // Completions first: they acknowledge agents (whose windows then open) and free a
            // slot, while starting a group encodes thousands of records in one go.
            biased;
            Some((group, result)) = in_flight.next() => match result {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    metrics
                        .sink_write_seconds
                        .with_label_values(&[name])
                        .observe(group.started.elapsed().as_secs_f64());
                    metrics
                        .sink_written
                        .with_label_values(&[name])
                        .inc_by(group.count as u64);
                    readiness.set(&part, None);
                    for job in group.jobs {
                        let _ = job.done.send(());
                    }
                }
                Err(e) => {
                    metrics.sink_errors.with_label_values(&[name]).inc();
                    readiness.set(&part, Some(format!("{e} (results are held and retried)")));
                    tracing::warn!(sink = name, error = %e, retry_in = ?backoff, "sink write failed; results stay unacknowledged");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = cancel.cancelled() => {
                            tracing::error!(sink = name, results = group.count, "shutting down with undelivered results; agents will resend them");
                            return;
                        }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    // Retried first: completions (and so acks) stay in order.
                    in_flight.push_front(start(&mut *sink, group));
                }
            },
            // After cancellation, keep draining what is queued; the senders close when
            // connections end.
            first = rx.recv(), if open && in_flight.len() < max_in_flight => {
                let Some(first) = first else {
                    open = false;
                    continue;
                };
                let mut count = first.batch.len();
                let mut jobs = vec![first];
                while count < group_results {
                    match rx.try_recv() {
                        Ok(job) => {
                            count += job.batch.len();
                            jobs.push(job);
                        }
                        Err(_) => break,
                    }
                }
                queue_depth.set(rx.len() as i64);
                let batches: Vec<Arc<Results>> =
                    jobs.iter().map(|j| Arc::clone(&j.batch)).collect();
                let group = Group { jobs, batches, count, started: std::time::Instant::now() };
                in_flight.push_back(start(&mut *sink, group));
            }
            () = cancel.cancelled(), if open && rx.is_empty() && in_flight.is_empty() => {
                open = false;
            }
        }
    }
}

/// Starts one group's write; the future yields the group back with the outcome.
fn start(sink: &mut dyn Sink, group: Group) -> BoxFuture<'static, (Group, Result<(), SinkError>)> {
    let write = sink.write(group.batches.clone());
    async move { (group, write.await) }.boxed()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures::FutureExt;
    use vigil_proto::ProbeResult;

    use super::*;
    use crate::sink::SinkError;

    /// Fails its first `fail` writes, then records what it was given.
    struct Flaky {
        fail: Arc<AtomicUsize>,
        written: Arc<std::sync::Mutex<Vec<u64>>>,
    }

    impl Sink for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn write(
            &mut self,
            batches: Vec<Arc<Results>>,
        ) -> BoxFuture<'static, Result<(), SinkError>> {
            let fail = Arc::clone(&self.fail);
            let written = Arc::clone(&self.written);
            async move {
                if fail.load(Ordering::SeqCst) > 0 {
                    fail.fetch_sub(1, Ordering::SeqCst);
                    return Err(SinkError::Unavailable("disk on fire".into()));
                }
                written
                    .lock()
                    .unwrap()
                    .extend(batches.iter().flat_map(|b| b.iter().map(|r| r.seq)));
                Ok(())
            }
            .boxed()
        }
        fn healthcheck(&self) -> BoxFuture<'_, Result<(), SinkError>> {
            async { Ok(()) }.boxed()
        }
    }

    #[tokio::test]
    async fn large_batches_wait_for_room_in_results_not_batches() {
        let fail = Arc::new(AtomicUsize::new(usize::MAX));
        let pipeline = Pipeline::start(
            vec![Box::new(Flaky {
                fail: Arc::clone(&fail),
                written: Arc::default(),
            })],
            Arc::new(Metrics::new()),
            Arc::new(Readiness::default()),
            &TaskTracker::new(),
            CancellationToken::new(),
        );
        let big = || {
            Arc::new(Results::from(vec![
                ProbeResult::default();
                QUEUE_RESULTS * 2 / 3
            ]))
        };
        // The sink fails every write, so the first batch holds its room.
        let first = pipeline.submit(big()).await;
        assert!(
            pipeline.submit(big()).now_or_never().is_none(),
            "a second batch over the bound waits, though the queue has room for 255 batches"
        );
        assert!(
            pipeline
                .submit(Arc::new(vec![ProbeResult::default(); 10].into()))
                .now_or_never()
                .is_some(),
            "a small batch still fits"
        );
        fail.store(0, Ordering::SeqCst);
        first.await.unwrap();
        let _second = pipeline.submit(big()).await;
    }

    #[tokio::test]
    async fn nothing_is_durable_before_the_sink_has_it_and_readiness_follows() {
        let fail = Arc::new(AtomicUsize::new(2));
        let written = Arc::new(std::sync::Mutex::new(Vec::new()));
        let readiness = Arc::new(Readiness::default());
        let tracker = TaskTracker::new();
        let pipeline = Pipeline::start(
            vec![Box::new(Flaky {
                fail: Arc::clone(&fail),
                written: Arc::clone(&written),
            })],
            Arc::new(Metrics::new()),
            Arc::clone(&readiness),
            &tracker,
            CancellationToken::new(),
        );
        let batch = Arc::new(Results::from(vec![
            ProbeResult {
                seq: 1,
                ..Default::default()
            },
            ProbeResult {
                seq: 2,
                ..Default::default()
            },
        ]));
        let mut durable = pipeline.submit(batch).await;
        // The first write fails: not durable, and /readyz says why.
        tokio::task::yield_now().await;
        assert!((&mut durable).now_or_never().is_none());
        let mut waited = 0;
        while readiness.problems().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
            waited += 1;
            assert!(waited < 100, "readiness never reported the failing sink");
        }
        assert_eq!(
            readiness.problems()["sink flaky"],
            "disk on fire (results are held and retried)"
        );
        // Retries with backoff until it works; then durable, written once, and ready again.
        durable.await.unwrap();
        assert_eq!(*written.lock().unwrap(), [1, 2]);
        assert!(readiness.problems().is_empty());
        assert_eq!(fail.load(Ordering::SeqCst), 0);
    }
}
