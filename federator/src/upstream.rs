//! The cluster side of federation (`--cluster NAME --upstream URL`): every result this federator
//! takes is forwarded to a global federator over the agents' `Connect` contract, with the
//! cluster's picture (its checks and agents) in `ClusterState`.
//!
//! Forwarding keeps the agents' guarantee: results wait in a bounded buffer until the upstream
//! acknowledges their batch, are resent after every reconnect, and when the buffer is full the
//! oldest are dropped and counted (`vigil_upstream_results_total{result="dropped"}`), never
//! silently. The buffer is the federator's own: a slow or absent upstream never holds up this
//! cluster's acks to its agents, its Kafka writes or its alerts.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use vigil_proto::federator_client::FederatorClient;
use vigil_proto::pool::Results;
use vigil_proto::{
    AgentMessage, ClusterAgent, ClusterCheck, ClusterState, Hello, MAX_MESSAGE_BYTES, ProbeResult,
    ResultBatch, agent_message, federator_message,
};

use crate::federation::CAPABILITY;
use crate::hub::{Hub, now_unix_nanos};
use crate::metrics::Metrics;
use crate::sink::{Sink, SinkError};

/// Batches sent and not yet acknowledged; below the upstream's per-stream window, so its acks
/// always flow.
const WINDOW: u64 = 16;
/// Results merged into one batch while it waits to be sent.
const COALESCE: usize = 2_000;
/// How often the cluster's picture is compared with what was sent.
const STATE_EVERY: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// `--upstream-ca`, `--upstream-cert`, `--upstream-key`: TLS to the upstream with a client
/// certificate that names this cluster.
#[derive(Clone, Debug, Default)]
pub struct UpstreamTls {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct UpstreamOptions {
    /// `http://host:port` (loopback only) or `https://host:port`.
    pub url: String,
    pub cluster: String,
    /// This federator's name on the link (Hello.node): its host or pod name.
    pub node: String,
    /// Results kept for the upstream at most; beyond it the oldest are dropped and counted.
    pub buffer_results: usize,
    /// ClusterState is sent at least this often, so the upstream knows the cluster is alive.
    pub heartbeat: Duration,
    pub tls: UpstreamTls,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error(
        "--upstream {url:?}: {why}; write it like http://127.0.0.1:7443 (loopback) or https://global.example:7443"
    )]
    Url { url: String, why: String },
    #[error("{flag} {path}: {source}")]
    Read {
        flag: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--upstream-cert and --upstream-key go together: pass both or neither")]
    HalfIdentity,
    #[error("--upstream-ca, --upstream-cert and --upstream-key need an https --upstream URL")]
    TlsOnHttp,
    #[error("--upstream-buffer must be at least 1000 results")]
    Buffer,
    #[error("--upstream-heartbeat must be between 100ms and 10m")]
    Heartbeat,
    #[error("--cluster must name this cluster when --upstream is set (it is \"local\")")]
    Cluster,
}

struct Entry {
    seq: u64,
    results: Vec<ProbeResult>,
    buffered_at: Instant,
}

struct Buffer {
    entries: VecDeque<Entry>,
    next_seq: u64,
    acked: u64,
    /// The highest seq ever handed to a link. Those batches never change again: the upstream
    /// may have written one whose Ack was lost, and a resend must carry the same results under
    /// the same seq (it is deduplicated by seq). Later entries may still grow.
    sealed_upto: u64,
    results: usize,
    cap: usize,
}

/// The results waiting for the upstream, shared by the sink and the link task.
pub struct Upstream {
    buf: Mutex<Buffer>,
    notify: Notify,
    metrics: Arc<Metrics>,
    /// The `upstream` label of its gauges (the URL).
    label: String,
}

impl Upstream {
    fn new(cap: usize, metrics: Arc<Metrics>, label: &str) -> Self {
        metrics
            .upstream_connected
            .with_label_values(&[label])
            .set(0);
        metrics.upstream_buffered.with_label_values(&[label]).set(0);
        Self {
            label: label.to_owned(),
            buf: Mutex::new(Buffer {
                entries: VecDeque::new(),
                next_seq: 1,
                acked: 0,
                sealed_upto: 0,
                results: 0,
                cap,
            }),
            notify: Notify::new(),
            metrics,
        }
    }

    fn push(&self, batches: &[Arc<Results>]) {
        let mut b = self.buf.lock().unwrap();
        let mut added = 0;
        for batch in batches.iter().filter(|b| !b.is_empty()) {
            added += batch.len();
            let sealed_upto = b.sealed_upto;
            match b.entries.back_mut() {
                Some(tail) if tail.seq > sealed_upto && tail.results.len() < COALESCE => {
                    tail.results.extend(batch.iter().cloned());
                }
                _ => {
                    let seq = b.next_seq;
                    b.next_seq += 1;
                    b.entries.push_back(Entry {
                        seq,
                        results: batch.to_vec(),
                        buffered_at: Instant::now(),
                    });
                }
            }
        }
        b.results += added;
        let mut dropped = 0;
        while b.results > b.cap {
            let Some(old) = b.entries.pop_front() else {
                break;
            };
            b.results -= old.results.len();
            dropped += old.results.len();
        }
        let m = &self.metrics;
        m.upstream_results
            .with_label_values(&["buffered"])
            .inc_by(added as u64);
        if dropped > 0 {
            m.upstream_results
                .with_label_values(&["dropped"])
                .inc_by(dropped as u64);
            tracing::warn!(
                dropped,
                buffer = b.cap,
                "the upstream federator's buffer is full: dropped the oldest results it had not \
                 acknowledged (they are still in this cluster's own sinks)"
            );
        }
        m.upstream_buffered
            .with_label_values(&[&self.label])
            .set(i64::try_from(b.results).unwrap_or(i64::MAX));
        drop(b);
        self.notify.notify_one();
    }

    /// Everything up to `seq` reached the upstream's sinks.
    fn ack(&self, seq: u64) {
        let mut b = self.buf.lock().unwrap();
        b.acked = b.acked.max(seq);
        let mut acked = 0;
        while b.entries.front().is_some_and(|e| e.seq <= seq) {
            let e = b.entries.pop_front().expect("checked");
            acked += e.results.len();
            self.metrics
                .upstream_ack_seconds
                .observe(e.buffered_at.elapsed().as_secs_f64());
        }
        b.results -= acked;
        self.metrics
            .upstream_results
            .with_label_values(&["acked"])
            .inc_by(acked as u64);
        self.metrics
            .upstream_buffered
            .with_label_values(&[&self.label])
            .set(i64::try_from(b.results).unwrap_or(i64::MAX));
    }

    /// Up to `limit` batches from `from` on, to send now; they are sealed (no more merging).
    fn take(&self, from: u64, limit: u64) -> Vec<ResultBatch> {
        let mut b = self.buf.lock().unwrap();
        let mut out = Vec::new();
        let mut upto = b.sealed_upto;
        for e in b
            .entries
            .iter()
            .filter(|e| e.seq >= from)
            .take(limit as usize)
        {
            out.push(ResultBatch {
                results: e.results.clone(),
                agent_id: String::new(),
                batch_seq: e.seq,
            });
            upto = upto.max(e.seq);
        }
        b.sealed_upto = upto;
        out
    }

    /// A new link resends everything after the last Ack: returns that position.
    fn restart(&self) -> u64 {
        self.buf.lock().unwrap().acked
    }

    fn connected(&self, up: bool) {
        self.metrics
            .upstream_connected
            .with_label_values(&[&self.label])
            .set(i64::from(up));
    }

    fn is_empty(&self) -> bool {
        self.buf.lock().unwrap().entries.is_empty()
    }
}

/// The pipeline's side: a write completes once the results are in the upstream buffer.
pub struct UpstreamSink(Arc<Upstream>);

impl Sink for UpstreamSink {
    fn name(&self) -> &'static str {
        "upstream"
    }

    fn write(&mut self, batches: Vec<Arc<Results>>) -> BoxFuture<'static, Result<(), SinkError>> {
        self.0.push(&batches);
        futures::future::ready(Ok(())).boxed()
    }

    fn healthcheck(&self) -> BoxFuture<'_, Result<(), SinkError>> {
        futures::future::ready(Ok(())).boxed()
    }
}

/// Checks the options and builds the endpoint; errors name the flag to fix.
pub fn endpoint(opts: &UpstreamOptions) -> Result<Endpoint, UpstreamError> {
    let url_error = |why: &str| UpstreamError::Url {
        url: opts.url.clone(),
        why: why.to_owned(),
    };
    if opts.cluster.is_empty() || opts.cluster == "local" {
        return Err(UpstreamError::Cluster);
    }
    if opts.buffer_results < 1000 {
        return Err(UpstreamError::Buffer);
    }
    if opts.heartbeat < Duration::from_millis(100) || opts.heartbeat > Duration::from_secs(600) {
        return Err(UpstreamError::Heartbeat);
    }
    let parsed = url::Url::parse(&opts.url).map_err(|e| url_error(&e.to_string()))?;
    let https = match parsed.scheme() {
        "http" => false,
        "https" => true,
        other => return Err(url_error(&format!("scheme {other:?} is not http or https"))),
    };
    if parsed.host_str().is_none() {
        return Err(url_error("it has no host"));
    }
    let read = |flag: &'static str, path: &PathBuf| {
        std::fs::read(path).map_err(|source| UpstreamError::Read {
            flag,
            path: path.display().to_string(),
            source,
        })
    };
    let mut endpoint = Endpoint::from_shared(opts.url.clone())
        .map_err(|e| url_error(&e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    let t = &opts.tls;
    if !https {
        if t.ca.is_some() || t.cert.is_some() || t.key.is_some() {
            return Err(UpstreamError::TlsOnHttp);
        }
        return Ok(endpoint);
    }
    // No web PKI roots are compiled in: only --upstream-ca is trusted.
    let mut tls = ClientTlsConfig::new();
    if let Some(ca) = &t.ca {
        tls = tls.ca_certificate(Certificate::from_pem(read("--upstream-ca", ca)?));
    }
    match (&t.cert, &t.key) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(Identity::from_pem(
                read("--upstream-cert", cert)?,
                read("--upstream-key", key)?,
            ));
        }
        (None, None) => {}
        _ => return Err(UpstreamError::HalfIdentity),
    }
    endpoint = endpoint
        .tls_config(tls)
        .map_err(|e| url_error(&format!("TLS: {e}")))?;
    Ok(endpoint)
}

/// Starts forwarding: returns the sink to add to the pipeline; the link task runs on `tracker`
/// until `cancel`, then for up to `grace` to hand over what is buffered.
pub fn start(
    opts: UpstreamOptions,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    tracker: &tokio_util::task::TaskTracker,
    cancel: CancellationToken,
    grace: Duration,
) -> Result<UpstreamSink, UpstreamError> {
    let endpoint = endpoint(&opts)?;
    let upstream = Arc::new(Upstream::new(opts.buffer_results, metrics, &opts.url));
    tracing::info!(upstream = %opts.url, cluster = %opts.cluster, "forwarding to the upstream federator");
    tracker.spawn(run(
        Arc::clone(&upstream),
        endpoint,
        opts,
        hub,
        cancel,
        grace,
    ));
    Ok(UpstreamSink(upstream))
}

async fn run(
    upstream: Arc<Upstream>,
    endpoint: Endpoint,
    opts: UpstreamOptions,
    hub: Arc<Hub>,
    cancel: CancellationToken,
    grace: Duration,
) {
    let mut backoff = Duration::from_millis(100);
    let mut last_error = String::new();
    loop {
        let deadline = cancel.is_cancelled().then(|| Instant::now() + grace);
        if deadline.is_some() && upstream.is_empty() {
            return;
        }
        let began = Instant::now();
        let end = link(&upstream, &endpoint, &opts, &hub, &cancel, grace).await;
        upstream.connected(false);
        match end {
            Ok(()) => return,
            Err(e) => {
                if e != last_error {
                    tracing::warn!(upstream = %opts.url, error = %e, "upstream link down; results wait in the buffer and are resent on reconnect");
                    last_error = e;
                }
            }
        }
        if began.elapsed() > Duration::from_secs(10) {
            backoff = Duration::from_millis(100);
        }
        if cancel.is_cancelled() {
            // Stopping: one more try within the grace period, no waiting between tries.
            if deadline.is_some_and(|d| Instant::now() >= d) {
                tracing::warn!(
                    "stopped with results the upstream has not acknowledged; they are in this \
                     cluster's own sinks but not upstream"
                );
                return;
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = cancel.cancelled(), if !cancel.is_cancelled() => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One link: Hello, the cluster's picture, then batches and acks until it fails. Returns Ok
/// only when stopping with nothing left to send.
async fn link(
    upstream: &Upstream,
    endpoint: &Endpoint,
    opts: &UpstreamOptions,
    hub: &Hub,
    cancel: &CancellationToken,
    grace: Duration,
) -> Result<(), String> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {}", error_chain(&e)))?;
    let mut client = FederatorClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let acked = upstream.restart();
    let (tx, rx) = mpsc::channel::<AgentMessage>(WINDOW as usize + 8);
    let hello = Hello {
        agent_id: crate::federation::link_id(&opts.cluster),
        node: opts.node.clone(),
        cluster: opts.cluster.clone(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        capabilities: vec![CAPABILITY.to_owned()],
        last_acked_seq: acked,
        sent_unix_nanos: now_unix_nanos(),
    };
    let mut picture = cluster_state(hub, opts.heartbeat);
    for msg in [
        agent_message::Msg::Hello(hello),
        agent_message::Msg::ClusterState(picture.clone()),
    ] {
        tx.send(AgentMessage { msg: Some(msg) })
            .await
            .map_err(|_| "the link closed".to_owned())?;
    }
    let mut inbound = client
        .connect(ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("Connect refused: {} ({:?})", s.message(), s.code()))?
        .into_inner();
    upstream.connected(true);
    tracing::info!(upstream = %opts.url, cluster = %opts.cluster, resend_after = acked, "linked to the upstream federator");
    let mut last_state_sent = Instant::now();
    let mut next = acked + 1;
    let mut acked = acked;
    let mut tick = tokio::time::interval(STATE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop_by: Option<Instant> = None;
    loop {
        let room = WINDOW.saturating_sub(next.saturating_sub(acked + 1));
        if room > 0 {
            for batch in upstream.take(next, room) {
                next = batch.batch_seq + 1;
                tx.send(AgentMessage {
                    msg: Some(agent_message::Msg::Results(batch)),
                })
                .await
                .map_err(|_| "the link closed".to_owned())?;
            }
        }
        if cancel.is_cancelled() {
            let by = *stop_by.get_or_insert_with(|| Instant::now() + grace);
            if upstream.is_empty() {
                return Ok(());
            }
            if Instant::now() >= by {
                return Err("stopping with results not acknowledged".to_owned());
            }
        }
        tokio::select! {
            m = inbound.message() => match m {
                Ok(Some(msg)) => {
                    if let Some(federator_message::Msg::Ack(a)) = msg.msg {
                        acked = acked.max(a.seq);
                        upstream.ack(a.seq);
                    }
                }
                Ok(None) => return Err("the upstream closed the link".to_owned()),
                Err(s) => return Err(format!("{} ({:?})", s.message(), s.code())),
            },
            () = upstream.notify.notified() => {}
            _ = tick.tick() => {
                let now = cluster_state(hub, opts.heartbeat);
                if !same_picture(&now, &picture) || last_state_sent.elapsed() >= opts.heartbeat {
                    picture = now;
                    last_state_sent = Instant::now();
                    tx.send(AgentMessage { msg: Some(agent_message::Msg::ClusterState(picture.clone())) })
                        .await
                        .map_err(|_| "the link closed".to_owned())?;
                }
            }
            () = cancel.cancelled(), if stop_by.is_none() => {}
        }
    }
}

fn same_picture(a: &ClusterState, b: &ClusterState) -> bool {
    a.checks == b.checks && a.agents == b.agents && a.heartbeat_ms == b.heartbeat_ms
}

/// This cluster's checks and agents as the upstream needs them.
pub fn cluster_state(hub: &Hub, heartbeat: Duration) -> ClusterState {
    let checks = hub.checks().iter().map(cluster_check).collect();
    let agents = hub
        .agents()
        .into_iter()
        .map(|a| ClusterAgent {
            agent_id: a.agent_id,
            node: a.node,
            connected_unix_nanos: a.connected_unix_nanos,
        })
        .collect();
    ClusterState {
        checks,
        agents,
        sent_unix_nanos: now_unix_nanos(),
        heartbeat_ms: u64::try_from(heartbeat.as_millis()).unwrap_or(u64::MAX),
    }
}

/// A check as a cluster shows it upstream (and as the API describes every check).
pub fn cluster_check(d: &crate::hub::CheckDef) -> ClusterCheck {
    let s = &d.check.spec;
    ClusterCheck {
        failure_threshold: s.failure_threshold,
        success_threshold: s.success_threshold,
        placement: s.placement.name().to_owned(),
        node_scoped: s.placement.node_scoped(),
        severity: s.severity.clone(),
        source: d.source.clone(),
        spec: Some(d.spec.clone()),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(n: usize, from: u64) -> Arc<Results> {
        Arc::new(
            (0..n as u64)
                .map(|i| ProbeResult {
                    agent_id: "a".into(),
                    seq: from + i,
                    ..Default::default()
                })
                .collect(),
        )
    }

    #[test]
    fn unsent_batches_merge_and_sent_ones_are_sealed() {
        let up = Upstream::new(100_000, Arc::new(Metrics::new()), "u");
        up.push(&[results(3, 1), results(2, 4)]);
        let sent = up.take(1, 10);
        assert_eq!(sent.len(), 1, "two small batches went out as one");
        assert_eq!(sent[0].batch_seq, 1);
        assert_eq!(sent[0].results.len(), 5);
        up.push(&[results(1, 6)]);
        let sent = up.take(2, 10);
        assert_eq!(
            (sent[0].batch_seq, sent[0].results.len()),
            (2, 1),
            "a sent batch never grows: a resend carries the same results under the same seq"
        );
        up.ack(1);
        // The link drops with batch 2 sent but not acknowledged; results keep coming.
        assert_eq!(up.restart(), 1);
        up.push(&[results(1, 7)]);
        let resent = up.take(2, 10);
        assert_eq!(
            (resent[0].batch_seq, resent[0].results.len()),
            (2, 1),
            "batch 2 is resent exactly as first sent (the upstream may have written it)"
        );
        assert_eq!(
            (resent[1].batch_seq, resent[1].results[0].seq),
            (3, 7),
            "what came after is a new batch"
        );
        up.ack(3);
        assert!(up.is_empty());
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_and_counts_them() {
        let metrics = Arc::new(Metrics::new());
        let up = Upstream::new(2_500, Arc::clone(&metrics), "u");
        up.push(&[results(2_000, 1)]);
        up.take(1, 1);
        up.push(&[results(1_000, 2_001)]);
        let dropped = metrics
            .upstream_results
            .with_label_values(&["dropped"])
            .get();
        assert_eq!(dropped, 2_000);
        let left = up.take(1, 10);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].results[0].seq, 2_001);
    }

    fn opts(url: &str) -> UpstreamOptions {
        UpstreamOptions {
            url: url.into(),
            cluster: "east".into(),
            node: "fed-0".into(),
            buffer_results: 100_000,
            heartbeat: Duration::from_secs(10),
            tls: UpstreamTls::default(),
        }
    }

    #[test]
    fn bad_options_name_the_flag() {
        let err = |o: UpstreamOptions| endpoint(&o).unwrap_err().to_string();
        assert!(err(opts("global:7443")).contains("is not http or https"));
        assert!(err(opts("ftp://global:7443")).contains("\"ftp\" is not http or https"));
        let mut o = opts("http://127.0.0.1:7443");
        o.cluster = "local".into();
        assert!(err(o).contains("--cluster must name this cluster"));
        let mut o = opts("http://127.0.0.1:7443");
        o.tls.ca = Some("/ca.pem".into());
        assert!(err(o).contains("need an https --upstream"));
        let mut o = opts("https://127.0.0.1:7443");
        o.tls.cert = Some("/c.pem".into());
        assert!(err(o).contains("go together"));
        let mut o = opts("https://127.0.0.1:7443");
        o.tls.ca = Some("/nonexistent/ca.pem".into());
        assert!(err(o).starts_with("--upstream-ca /nonexistent/ca.pem: "));
        let mut o = opts("http://127.0.0.1:7443");
        o.buffer_results = 10;
        assert!(err(o).contains("--upstream-buffer"));
        assert!(endpoint(&opts("http://127.0.0.1:7443")).is_ok());
    }
}
