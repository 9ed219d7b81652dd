//! The Kafka sink: every result to topic `healthcheck-results` through an idempotent, acks=all
//! rdkafka producer; a write succeeds only once the broker has confirmed every record in it.

pub mod config;
pub mod encode;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use futures::channel::oneshot;
use futures::future::BoxFuture;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::util::Timeout;
use tokio_util::sync::CancellationToken;
use vigil_proto::pool::Results;

pub use config::{ConfigError, Encoding, KafkaOptions};

use super::{Sink, SinkError};
use crate::api::Readiness;
use crate::metrics::Metrics;

/// The readiness part Kafka problems are reported under (the pipeline clears it on a write).
const PART: &str = "sink kafka";

/// How long a write waits for room in librdkafka's queue before failing (and being retried).
const QUEUE_FULL_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum KafkaSinkError {
    #[error("Kafka sink configuration: {0}")]
    Config(#[from] ConfigError),
    #[error(
        "cannot create the Kafka producer for {brokers}: {source}; check --kafka-brokers and --kafka-option values"
    )]
    Create {
        brokers: String,
        #[source]
        source: KafkaError,
    },
}

/// Reports librdkafka's client-level errors (brokers down, authentication) as metrics, logs and
/// readiness; record-level outcomes come back through the delivery reports, counted against the
/// write they belong to.
pub struct Context {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    brokers: String,
}

impl ClientContext for Context {
    fn error(&self, error: KafkaError, reason: &str) {
        let kind = error_kind(&error);
        self.metrics
            .kafka_errors
            .with_label_values(&[kind.as_str()])
            .inc();
        tracing::warn!(brokers = %self.brokers, kind = %kind, %reason, "Kafka client error; results stay unacknowledged until delivered");
        self.readiness.set(
            PART,
            Some(format!(
                "{kind} talking to {}: {reason} (results are held and retried)",
                self.brokers
            )),
        );
    }
}

impl ProducerContext for Context {
    type DeliveryOpaque = Arc<Write>;

    /// Runs on the producer's polling thread for every record: no allocation, no lock unless
    /// the record failed; the last record of a write wakes whoever waits for it.
    fn delivery(&self, result: &DeliveryResult<'_>, write: Arc<Write>) {
        self.metrics.kafka_in_flight.dec();
        match result {
            Ok(_) => self
                .metrics
                .kafka_delivery_seconds
                .observe(write.started.elapsed().as_secs_f64()),
            Err((e, message)) => {
                let kind = error_kind(e);
                self.metrics
                    .kafka_errors
                    .with_label_values(&[kind.as_str()])
                    .inc();
                write.fail(format!(
                    "Kafka did not take a record for topic {}: {e}",
                    message.topic()
                ));
            }
        }
        write.release();
    }
}

/// One write's records inside librdkafka: a count of the unconfirmed, the first failure, and
/// the wake-up of the write's future once the count reaches zero. Every record carries an
/// `Arc` of it as its delivery opaque (no allocation per record).
pub struct Write {
    /// Records queued and not yet reported, plus one held while records are still being queued.
    outstanding: AtomicUsize,
    failure: Mutex<Option<String>>,
    done: Mutex<Option<oneshot::Sender<()>>>,
    started: Instant,
}

impl Write {
    fn new(done: oneshot::Sender<()>) -> Self {
        Self {
            outstanding: AtomicUsize::new(1),
            failure: Mutex::new(None),
            done: Mutex::new(Some(done)),
            started: Instant::now(),
        }
    }

    fn fail(&self, problem: String) {
        self.failure.lock().unwrap().get_or_insert(problem);
    }

    /// One record reported (or the queuing finished); the last one completes the write.
    fn release(&self) {
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1
            && let Some(done) = self.done.lock().unwrap().take()
        {
            let _ = done.send(());
        }
    }
}

fn error_kind(e: &KafkaError) -> String {
    match e.rdkafka_error_code() {
        Some(code) => format!("{code:?}"),
        None => "Other".to_owned(),
    }
}

pub struct KafkaSink {
    producer: ThreadedProducer<Context>,
    options: KafkaOptions,
    metrics: Arc<Metrics>,
}

impl KafkaSink {
    /// Builds the producer (no network yet: librdkafka connects in the background).
    pub fn new(
        options: KafkaOptions,
        metrics: Arc<Metrics>,
        readiness: Arc<Readiness>,
    ) -> Result<Self, KafkaSinkError> {
        let config = options.client_config()?;
        let context = Context {
            metrics: Arc::clone(&metrics),
            readiness,
            brokers: options.brokers.clone(),
        };
        let producer =
            config
                .create_with_context(context)
                .map_err(|source| KafkaSinkError::Create {
                    brokers: options.brokers.clone(),
                    source,
                })?;
        Ok(Self {
            producer,
            options,
            metrics,
        })
    }

    /// Flushes what librdkafka still holds (shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(Timeout::After(timeout)) {
            tracing::warn!(error = %e, "Kafka producer did not flush within the grace period; agents will resend what was not acknowledged");
        }
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        self.flush(Duration::from_secs(5));
    }
}

impl Sink for KafkaSink {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn write(&mut self, batches: Vec<Arc<Results>>) -> BoxFuture<'static, Result<(), SinkError>> {
        let topic = self.options.topic.as_str();
        let encoding = self.options.encoding;
        let metrics = Arc::clone(&self.metrics);
        let (done, confirmed) = oneshot::channel();
        let write = Arc::new(Write::new(done));
        // Every record is counted before it is queued (its report may come before `send`
        // returns), all at once: the producer's thread counts them down, and a shared counter
        // touched from both threads for every record costs more than the rest of the count.
        let total: usize = batches.iter().map(|b| b.len()).sum();
        write.outstanding.fetch_add(total, Ordering::Relaxed);
        metrics.kafka_in_flight.add(total as i64);
        let mut value = Vec::with_capacity(512);
        let mut key = String::with_capacity(128);
        let mut outcome = Ok(());
        // Records are handed to the producer here, in order, before the next write starts;
        // only the wait for the delivery reports is left to the future.
        'records: for (queued, r) in batches.iter().flat_map(|b| b.iter()).enumerate() {
            value.clear();
            encode::value(r, encoding, &mut value);
            encode::key_into(r, &mut key);
            let mut record = BaseRecord::with_opaque_to(topic, Arc::clone(&write))
                .key(&key)
                .payload(&value)
                .headers(encode::headers(r, encoding));
            let mut full_since: Option<Instant> = None;
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                        // librdkafka's queue is full (its own thread drains it): wait briefly.
                        record = back;
                        let since = *full_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > QUEUE_FULL_WAIT {
                            outcome = Err(SinkError::Unavailable(format!(
                                "the Kafka producer's queue stayed full for {QUEUE_FULL_WAIT:?}"
                            )));
                            unqueued(&write, &metrics, total - queued);
                            break 'records;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((e, _)) => {
                        outcome = Err(SinkError::Unavailable(format!(
                            "cannot queue a record for topic {topic}: {e}"
                        )));
                        unqueued(&write, &metrics, total - queued);
                        break 'records;
                    }
                }
            }
        }
        // Every record is queued: drop the hold, so the last report completes the write.
        write.release();
        async move {
            // Wait for every queued record even after a failure, so none is left in flight.
            // The sender lives in `write`, which this future keeps: no cancellation.
            let _ = confirmed.await;
            outcome?;
            if let Some(problem) = write.failure.lock().unwrap().take() {
                return Err(SinkError::Unavailable(problem));
            }
            delivery_lag(&metrics, &batches);
            Ok(())
        }
        .boxed()
    }

    /// Several group commits in flight keep the producer's batches full; librdkafka keeps their
    /// order (idempotent producer), and the pipeline acknowledges them in order. Many small
    /// ones rather than a few large ones: a write encodes its records on the sink's task before
    /// the next completion (and Ack) can be taken.
    fn max_in_flight(&self) -> usize {
        8
    }

    fn max_group_results(&self) -> usize {
        5_000
    }

    fn healthcheck(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        let producer = self.producer.clone();
        let topic = self.options.topic.clone();
        let timeout = self.options.connect_timeout;
        async move {
            tokio::task::spawn_blocking(move || topic_exists(&producer, &topic, timeout))
                .await
                .unwrap_or_else(|e| Err(SinkError::Unavailable(e.to_string())))
        }
        .boxed()
    }
}

/// Records counted in `write` that were never queued (librdkafka refused the first of them):
/// they will never be reported.
fn unqueued(write: &Write, metrics: &Metrics, count: usize) {
    write.outstanding.fetch_sub(count, Ordering::Relaxed);
    metrics.kafka_in_flight.sub(count as i64);
}

/// Observes, for every result of a confirmed write, the time from its end on the agent (agent
/// clock) to now, when Kafka has confirmed the whole write and the result can be acknowledged.
fn delivery_lag(metrics: &Metrics, batches: &[Arc<Results>]) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    // Counted locally and added to the shared histogram once, at the end of the write (its
    // atomics per result cost more than the rest of this loop).
    let lag = metrics.result_delivery_lag_seconds.local();
    for r in batches.iter().flat_map(|b| b.iter()) {
        let finished = r.start_unix_nanos + r.latency_nanos as i64;
        if finished > 0 && now > finished {
            lag.observe((now - finished) as f64 / 1e9);
        }
    }
    lag.flush();
}

fn topic_exists(
    producer: &ThreadedProducer<Context>,
    topic: &str,
    timeout: Duration,
) -> Result<(), SinkError> {
    let metadata = producer
        .client()
        .fetch_metadata(Some(topic), Timeout::After(timeout))
        .map_err(|e| SinkError::Unavailable(format!("cannot reach the Kafka brokers: {e}")))?;
    match topic_state(&metadata, topic) {
        TopicState::Ready => Ok(()),
        TopicState::Failed(code) => Err(SinkError::Unavailable(format!("topic {topic}: {code:?}"))),
        TopicState::NoPartitions => Err(SinkError::Unavailable(format!(
            "topic {topic}: no partitions"
        ))),
        TopicState::Missing => Err(SinkError::Unavailable(format!(
            "topic {topic} does not exist"
        ))),
    }
}

/// What broker metadata says of a topic.
enum TopicState {
    Ready,
    Missing,
    NoPartitions,
    Failed(RDKafkaErrorCode),
}

fn topic_state(metadata: &rdkafka::metadata::Metadata, topic: &str) -> TopicState {
    match metadata.topics().iter().find(|t| t.name() == topic) {
        None => TopicState::Missing,
        Some(t) => match t.error() {
            Some(e) => TopicState::Failed(RDKafkaErrorCode::from(e)),
            None if t.partitions().is_empty() => TopicState::NoPartitions,
            None => TopicState::Ready,
        },
    }
}

/// Makes sure the topic exists (creating it when allowed), retrying with backoff until it does
/// or `cancel`; every failure is logged with what to do and shown in `/readyz` meanwhile.
pub async fn ensure_topic(
    options: KafkaOptions,
    readiness: Arc<Readiness>,
    cancel: CancellationToken,
) {
    let part = "kafka topic";
    let mut backoff = Duration::from_millis(500);
    loop {
        match try_ensure_topic(&options).await {
            Ok(created) => {
                if created {
                    tracing::info!(topic = %options.topic, brokers = %options.brokers, partitions = options.partitions, "created the Kafka topic");
                } else {
                    tracing::info!(topic = %options.topic, brokers = %options.brokers, "Kafka topic ready");
                }
                readiness.set(part, None);
                return;
            }
            Err(problem) => {
                tracing::error!(topic = %options.topic, brokers = %options.brokers, %problem, retry_in = ?backoff, "Kafka is not usable yet; results stay unacknowledged (agents keep them)");
                readiness.set(part, Some(problem));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = cancel.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// `Ok(true)` when the topic was created, `Ok(false)` when it was there.
async fn try_ensure_topic(options: &KafkaOptions) -> Result<bool, String> {
    let mut config = options.client_config().map_err(|e| e.to_string())?;
    // The admin client takes no producer settings; keep only connection and security ones.
    for key in [
        "enable.idempotence",
        "acks",
        "message.timeout.ms",
        "compression.type",
        "linger.ms",
        "batch.size",
        "batch.num.messages",
        "queue.buffering.max.messages",
        "queue.buffering.max.kbytes",
    ] {
        config.remove(key);
    }
    let admin: AdminClient<DefaultClientContext> = config
        .create()
        .map_err(|e| format!("cannot create a Kafka admin client: {e}"))?;
    let timeout = options.connect_timeout;
    let topic = options.topic.clone();
    let (admin, metadata) = tokio::task::spawn_blocking(move || {
        let m = admin
            .inner()
            .fetch_metadata(Some(&topic), Timeout::After(timeout));
        (admin, m)
    })
    .await
    .map_err(|e| e.to_string())?;
    let metadata = metadata.map_err(|e| {
        format!(
            "cannot reach the Kafka brokers {} within {:?}: {e}; check --kafka-brokers and that the brokers are up",
            options.brokers, timeout
        )
    })?;
    match topic_state(&metadata, &options.topic) {
        TopicState::Ready => return Ok(false),
        TopicState::Failed(RDKafkaErrorCode::TopicAuthorizationFailed) => {
            return Err(format!(
                "not authorized to use topic {}: grant this client Describe and Write on it",
                options.topic
            ));
        }
        _ => {}
    }
    if !options.create_topic {
        return Err(format!(
            "topic {} does not exist and --kafka-create-topic=false; create it, or let the federator create it",
            options.topic
        ));
    }
    let new = NewTopic::new(
        &options.topic,
        options.partitions,
        TopicReplication::Fixed(options.replication_factor),
    );
    let results = admin
        .create_topics(
            [&new],
            &AdminOptions::new().operation_timeout(Some(timeout)),
        )
        .await
        .map_err(|e| format!("cannot create topic {}: {e}", options.topic))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, RDKafkaErrorCode::TopicAuthorizationFailed))
            | Err((_, RDKafkaErrorCode::ClusterAuthorizationFailed)) => {
                return Err(format!(
                    "topic {} does not exist and this client may not create it: create it (e.g. {} partitions), or grant Create",
                    options.topic, options.partitions
                ));
            }
            Err((_, code)) => {
                return Err(format!("cannot create topic {}: {code:?}", options.topic));
            }
        }
    }
    Ok(true)
}
