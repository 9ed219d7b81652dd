//! The agent's stream to the federator: Hello, then results; Assignments and Acks come back.
//! On any break it reconnects with capped exponential backoff and resends everything after
//! the last Ack.
//!
//! Results leave the outbox already encoded and go out through [`codec::AgentCodec`] without
//! being decoded or copied into messages. A lone result waits up to [`LINGER`] for company, so
//! that one write (and one Ack) carries many.

pub mod codec;

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::PathAndQuery;
use rand::Rng;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;
use vigil_proto::{AgentMessage, Hello, MAX_MESSAGE_BYTES, agent_message, federator_message::Msg};

use crate::metrics::Metrics;
use crate::outbox::Outbox;
use crate::scheduler::{Identity, Scheduler, now_unix_nanos};
use codec::{AgentCodec, Outgoing};

/// Results per batch on the wire.
const BATCH_RESULTS: usize = 1_000;
/// Encoded bytes per batch, well below the federator's message limit.
const BATCH_BYTES: usize = 1 << 20;
/// Results sent but not yet acknowledged before the agent waits for Acks.
const WINDOW_RESULTS: u64 = 20_000;
/// How long a result may wait for others to share its batch.
pub const LINGER: Duration = Duration::from_millis(10);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
const CONNECT_PATH: &str = "/vigil.v1.Federator/Connect";

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("federator URL {url:?} is not valid: {source}")]
    BadUrl {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("connecting to {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the federator refused the stream: {0}")]
    Refused(#[source] tonic::Status),
    #[error("the stream broke: {0}")]
    Broken(#[source] tonic::Status),
    #[error("the federator closed the stream")]
    Closed,
}

pub struct Client {
    pub url: String,
    pub identity: Identity,
    pub outbox: Arc<Outbox>,
    pub scheduler: Scheduler,
    pub metrics: Arc<Metrics>,
}

impl Client {
    /// Keeps a stream open until `cancel`, then drains unacknowledged results for up to `grace`.
    pub async fn run(self, cancel: CancellationToken, grace: Duration) {
        let mut backoff = BACKOFF_MIN;
        let mut first = true;
        let mut generation = 0;
        loop {
            if !first {
                self.metrics.reconnects.inc();
            }
            first = false;
            let opened = Instant::now();
            let result = self.session(&cancel, grace, &mut generation).await;
            self.metrics.connected.set(0);
            match result {
                Ok(()) => return, // drained after cancellation
                Err(e) => {
                    if cancel.is_cancelled() {
                        tracing::warn!(error = %e, unacked = self.outbox.unacked(), "stopping with unacknowledged results");
                        return;
                    }
                    if opened.elapsed() > Duration::from_secs(30) {
                        backoff = BACKOFF_MIN;
                    }
                    let jitter = rand::rng().random_range(0.5..1.0);
                    let wait = backoff.mul_f64(jitter);
                    tracing::warn!(error = %e, retry_in = ?wait, unacked = self.outbox.unacked(), "federator stream lost");
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = cancel.cancelled() => {
                            tracing::warn!(unacked = self.outbox.unacked(), "stopping while disconnected");
                            return;
                        }
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    async fn session(
        &self,
        cancel: &CancellationToken,
        grace: Duration,
        generation: &mut u64,
    ) -> Result<(), SessionError> {
        let endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(|source| SessionError::BadUrl {
                url: self.url.clone(),
                source,
            })?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        let channel = tokio::select! {
            c = endpoint.connect() => c.map_err(|source| SessionError::Connect { url: self.url.clone(), source })?,
            () = cancel.cancelled() => return Err(SessionError::Closed),
        };
        let mut grpc = tonic::client::Grpc::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        grpc.ready().await.map_err(|source| SessionError::Connect {
            url: self.url.clone(),
            source,
        })?;
        let (tx, rx) = mpsc::channel::<Outgoing>(8);
        let acked = self.outbox.acked();
        let hello = Hello {
            agent_id: self.identity.agent_id.clone(),
            node: self.identity.node.clone(),
            cluster: self.identity.cluster.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            capabilities: crate::probe::capabilities(),
            last_acked_seq: acked,
            sent_unix_nanos: now_unix_nanos(),
        };
        let _ = tx
            .send(Outgoing::Message(AgentMessage {
                msg: Some(agent_message::Msg::Hello(hello)),
            }))
            .await;
        let mut inbound = grpc
            .streaming(
                tonic::Request::new(ReceiverStream::new(rx)),
                PathAndQuery::from_static(CONNECT_PATH),
                AgentCodec,
            )
            .await
            .map_err(SessionError::Refused)?
            .into_inner();
        self.metrics.connected.set(1);
        tracing::info!(federator = %self.url, resend_from = acked + 1, "connected to the federator");

        let mut cursor = acked;
        let mut draining: Option<tokio::time::Instant> = None;
        // Set while results wait for a batch to fill.
        let mut linger: Option<tokio::time::Instant> = None;
        self.outbox.poke();
        loop {
            if let Some(deadline) = draining {
                if self.outbox.unacked() == 0 {
                    tracing::info!("every result acknowledged; stopping");
                    return Ok(());
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(SessionError::Closed);
                }
            }
            let window_open = cursor.saturating_sub(self.outbox.acked()) < WINDOW_RESULTS;
            let send = tokio::select! {
                msg = inbound.message() => {
                    match msg.map_err(SessionError::Broken)? {
                        None => return Err(SessionError::Closed),
                        Some(m) => match m.msg {
                            Some(Msg::Assignment(a)) if a.generation > *generation => {
                                *generation = a.generation;
                                tracing::info!(generation = a.generation, checks = a.checks.len(), "new assignment");
                                self.scheduler.assign(a.checks);
                            }
                            Some(Msg::Assignment(_)) => {} // stale: a newer generation already arrived
                            Some(Msg::Ack(ack)) => {
                                self.outbox.ack(ack.seq, &self.metrics);
                                let offset_nanos = ack.federator_unix_nanos - now_unix_nanos();
                                self.metrics.clock_offset.set(offset_nanos as f64 / 1e9);
                                // For the node/clock diagnostic.
                                self.metrics.federator_clock.record(offset_nanos);
                                // Room in the window again: look for more to send.
                                self.outbox.poke();
                            }
                            None => {}
                        },
                    }
                    false
                }
                () = self.outbox.pushed(), if window_open && linger.is_none() => {
                    // A full batch (or a resend backlog) goes at once; a few results wait.
                    let waiting = self.outbox.last_seq().saturating_sub(cursor);
                    if waiting == 0 {
                        false
                    } else if waiting >= BATCH_RESULTS as u64 || draining.is_some() {
                        true
                    } else {
                        linger = Some(tokio::time::Instant::now() + LINGER);
                        false
                    }
                }
                () = sleep_until(linger), if window_open && linger.is_some() => true,
                () = cancel.cancelled(), if draining.is_none() => {
                    tracing::info!(unacked = self.outbox.unacked(), ?grace, "draining results before stopping");
                    draining = Some(tokio::time::Instant::now() + grace);
                    self.outbox.poke();
                    false
                }
                () = tokio::time::sleep(Duration::from_millis(100)), if draining.is_some() => false,
            };
            if !send {
                continue;
            }
            linger = None;
            let batch = self
                .outbox
                .batch_after(cursor, BATCH_RESULTS, BATCH_BYTES, &self.metrics)
                .await;
            let Some(last) = batch.last().map(|r| r.seq) else {
                continue;
            };
            cursor = last;
            let n = batch.len();
            if tx.send(Outgoing::Results(batch)).await.is_err() {
                return Err(SessionError::Closed);
            }
            self.metrics.results_sent.inc_by(n as u64);
            if self.outbox.last_seq() > cursor {
                self.outbox.poke(); // more is waiting
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
