//! A load generator: N simulated agents, each on its own gRPC connection and Connect stream,
//! sending results at a chosen rate with a window of unacknowledged results (like the real
//! agent's outbox), and timing every batch from send to the federator's Ack (which means every
//! sink, Kafka included, has it).
//!
//! Like the real agent, a simulated agent encodes each result once and writes batches through
//! the agent's own codec ([`AgentCodec`]) on a real Connect stream. The generator shares the
//! machine with the federator and the broker, so it does less work per result than that: the
//! bytes are what prost writes, but only the fields that change are encoded per result
//! ([`ResultEncoder`]).
//! At a fixed rate the agents' sends are spread evenly over the batch interval, as independent
//! agents' are, instead of all landing in the same instant.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, BytesMut};
use prost::Message;
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::http::uri::PathAndQuery;
use vigil_agent::client::codec::{AgentCodec, Outgoing};
use vigil_agent::outbox::Encoded;
use vigil_proto::{AgentMessage, Hello, ProbeResult, agent_message, federator_message::Msg};

/// Distinct targets the results cycle through (`http://10.0.{seq % 7}.{seq % 50}:8080/healthz`).
const TARGETS: u64 = 350;

#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// `http://host:port` of the federator's gRPC listener.
    pub federator: String,
    pub agents: usize,
    /// Results per second over all agents; `None` = as fast as acks allow.
    pub rate: Option<f64>,
    pub duration: Duration,
    /// Results per ResultBatch.
    pub batch: usize,
    /// Unacknowledged results each agent may have out.
    pub window: usize,
    /// The check every result is for (it must be defined in the federator).
    pub check_id: String,
    /// Agent ids are `<prefix>-<n>`.
    pub agent_prefix: String,
}

#[derive(Debug, Default)]
pub struct LoadReport {
    pub sent: u64,
    pub acked: u64,
    pub elapsed: Duration,
    /// Send-to-ack time of every batch.
    pub ack_latency: Vec<Duration>,
    pub errors: Vec<String>,
}

impl LoadReport {
    pub fn acked_per_second(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64()
    }

    /// The `q` quantile (0..=1) of the ack latencies.
    pub fn latency_quantile(&self, q: f64) -> Duration {
        let mut v = self.ack_latency.clone();
        v.sort_unstable();
        if v.is_empty() {
            return Duration::ZERO;
        }
        let i = ((v.len() - 1) as f64 * q).round() as usize;
        v[i]
    }
}

/// Runs the load and returns when every agent has sent for `duration` and received the acks
/// of what it sent (or 30 s more passed).
pub async fn run(config: LoadConfig) -> LoadReport {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for n in 0..config.agents {
        let config = config.clone();
        tasks.push(tokio::spawn(async move { one_agent(&config, n).await }));
    }
    let mut report = LoadReport::default();
    for t in tasks {
        match t.await {
            Ok(Ok(r)) => {
                report.sent += r.sent;
                report.acked += r.acked;
                report.ack_latency.extend(r.ack_latency);
            }
            Ok(Err(e)) => report.errors.push(e),
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    report.elapsed = started.elapsed();
    report
}

/// Every result an agent sends is this one with its seq, start time and target filled in.
/// Like the real agent's, each result names its agent and node.
fn template(config: &LoadConfig, agent_id: &str, node: &str) -> ProbeResult {
    ProbeResult {
        check_id: config.check_id.clone(),
        agent_id: agent_id.to_owned(),
        node: node.to_owned(),
        latency_nanos: 1_250_000,
        outcome: 1,
        attempt: 1,
        details: [("status_code".to_owned(), "200".to_owned())].into(),
        values: [("probe_http_duration_seconds".to_owned(), 0.00125)].into(),
        scope: "cluster".to_owned(),
        ..Default::default()
    }
}

/// Writes a simulated agent's results byte for byte as `ProbeResult::encode` does (fields in
/// number order, defaults left out), from three runs of fields every result of the agent
/// shares, encoded once: per result only the target (field 2), seq (6) and start (7) are
/// encoded. prost's encoding of the whole result (its lengths first, then every field) was
/// most of the generator's CPU, taken from the two cores it shares with what it measures.
struct ResultEncoder {
    /// Field 1, check_id.
    check: Vec<u8>,
    /// Fields 3 to 5: node, cluster, agent_id.
    identity: Vec<u8>,
    /// Fields 8 to 14: latency to scope.
    rest: Vec<u8>,
}

impl ResultEncoder {
    /// The shared fields are `template`'s; its target, seq and start are ignored.
    fn new(template: &ProbeResult) -> Self {
        let check = ProbeResult {
            check_id: template.check_id.clone(),
            ..Default::default()
        };
        let identity = ProbeResult {
            node: template.node.clone(),
            cluster: template.cluster.clone(),
            agent_id: template.agent_id.clone(),
            ..Default::default()
        };
        let rest = ProbeResult {
            check_id: String::new(),
            target: String::new(),
            node: String::new(),
            cluster: String::new(),
            agent_id: String::new(),
            seq: 0,
            start_unix_nanos: 0,
            ..template.clone()
        };
        Self {
            check: check.encode_to_vec(),
            identity: identity.encode_to_vec(),
            rest: rest.encode_to_vec(),
        }
    }

    fn encode(&self, target: &str, seq: u64, start_unix_nanos: i64, buf: &mut BytesMut) {
        use prost::encoding::{WireType, encode_key, encode_varint, int64, uint64};
        buf.put_slice(&self.check);
        if !target.is_empty() {
            encode_key(2, WireType::LengthDelimited, buf);
            encode_varint(target.len() as u64, buf);
            buf.put_slice(target.as_bytes());
        }
        buf.put_slice(&self.identity);
        if seq != 0 {
            uint64::encode(6, &seq, buf);
        }
        if start_unix_nanos != 0 {
            int64::encode(7, &start_unix_nanos, buf);
        }
        buf.put_slice(&self.rest);
    }

    fn max_len(&self, target: &str) -> usize {
        self.check.len() + self.identity.len() + self.rest.len() + target.len() + 32
    }
}

/// The next `count` results after `*seq`, each encoded once (as the agent's outbox does) into
/// one shared buffer.
fn encode_batch(
    encoder: &ResultEncoder,
    targets: &[String],
    seq: &mut u64,
    count: usize,
    now_nanos: i64,
) -> Vec<Encoded> {
    let mut buf = BytesMut::with_capacity(count * encoder.max_len(&targets[0]));
    (0..count)
        .map(|_| {
            *seq += 1;
            let target = &targets[usize::try_from(*seq % TARGETS).expect("small")];
            encoder.encode(target, *seq, now_nanos, &mut buf);
            Encoded {
                seq: *seq,
                bytes: buf.split().freeze(),
            }
        })
        .collect()
}

async fn one_agent(config: &LoadConfig, n: usize) -> Result<LoadReport, String> {
    let agent_id = format!("{}-{n}", config.agent_prefix);
    let node = format!("load-node-{n}");
    let channel = tonic::transport::Endpoint::from_shared(config.federator.clone())
        .map_err(|e| e.to_string())?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("{agent_id}: connect: {e}"))?;
    let (tx, rx) = mpsc::channel::<Outgoing>(64);
    tx.send(Outgoing::Message(AgentMessage {
        msg: Some(agent_message::Msg::Hello(Hello {
            agent_id: agent_id.clone(),
            node: node.clone(),
            version: "loadgen".into(),
            ..Default::default()
        })),
    }))
    .await
    .map_err(|e| e.to_string())?;
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_decoding_message_size(vigil_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(vigil_proto::MAX_MESSAGE_BYTES);
    grpc.ready()
        .await
        .map_err(|e| format!("{agent_id}: connect: {e}"))?;
    let mut inbound = grpc
        .streaming(
            tonic::Request::new(ReceiverStream::new(rx)),
            PathAndQuery::from_static("/vigil.v1.Federator/Connect"),
            AgentCodec,
        )
        .await
        .map_err(|e| format!("{agent_id}: Connect: {e}"))?
        .into_inner();

    let window = Arc::new(Semaphore::new(config.window));
    let in_flight: Arc<Mutex<VecDeque<(u64, usize, Instant)>>> = Arc::default();
    let acks = {
        let window = Arc::clone(&window);
        let in_flight = Arc::clone(&in_flight);
        let agent_id = agent_id.clone();
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut acked = 0u64;
            loop {
                match inbound.message().await {
                    Ok(Some(m)) => {
                        if let Some(Msg::Ack(ack)) = m.msg {
                            let mut q = in_flight.lock().unwrap();
                            while q.front().is_some_and(|(last, _, _)| *last <= ack.seq) {
                                let (_, count, sent) = q.pop_front().expect("front");
                                latencies.push(sent.elapsed());
                                acked += count as u64;
                                window.add_permits(count);
                            }
                        }
                    }
                    Ok(None) => return Ok((acked, latencies)),
                    Err(status) => {
                        return Err(format!("{agent_id}: stream ended: {status}"));
                    }
                }
            }
        })
    };

    let per_agent_rate = config.rate.map(|r| r / config.agents as f64);
    let batch_every = per_agent_rate.map(|r| Duration::from_secs_f64(config.batch as f64 / r));
    let encoder = ResultEncoder::new(&template(config, &agent_id, &node));
    let targets: Vec<String> = (0..TARGETS)
        .map(|i| format!("http://10.0.{}.{}:8080/healthz", i % 7, i % 50))
        .collect();
    let started = Instant::now();
    let mut seq = 0u64;
    let mut sent = 0u64;
    // Agent n of N first sends n/N of the way into the batch interval.
    let mut next_send = tokio::time::Instant::now()
        + batch_every.map_or(Duration::ZERO, |every| {
            every.mul_f64(n as f64 / config.agents as f64)
        });
    while started.elapsed() < config.duration {
        if let Some(every) = batch_every {
            tokio::time::sleep_until(next_send).await;
            next_send += every;
        }
        let permit = window
            .acquire_many(u32::try_from(config.batch).expect("batch fits u32"))
            .await
            .map_err(|e| e.to_string())?;
        permit.forget();
        let now_nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let results = encode_batch(&encoder, &targets, &mut seq, config.batch, now_nanos);
        in_flight
            .lock()
            .unwrap()
            .push_back((seq, config.batch, Instant::now()));
        tx.send(Outgoing::Results(results))
            .await
            .map_err(|_| format!("{agent_id}: stream closed while sending"))?;
        sent += config.batch as u64;
    }
    // Wait for the outstanding acks, then close the stream.
    let drained = tokio::time::timeout(
        Duration::from_secs(30),
        window.acquire_many(u32::try_from(config.window).expect("window fits u32")),
    )
    .await;
    drop(tx);
    let (acked, ack_latency) = match drained {
        Ok(_) => acks.await.map_err(|e| e.to_string())??,
        Err(_) => {
            acks.abort();
            return Err(format!("{agent_id}: acks still missing 30s after the end"));
        }
    };
    Ok(LoadReport {
        sent,
        acked,
        elapsed: started.elapsed(),
        ack_latency,
        errors: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_encoded_as_prost_encodes_them() {
        let config = LoadConfig {
            federator: String::new(),
            agents: 1,
            rate: None,
            duration: Duration::ZERO,
            batch: 1,
            window: 1,
            check_id: "bench/load".into(),
            agent_prefix: "load".into(),
        };
        let mut template = template(&config, "load-7", "load-node-7");
        template.cluster = "eu-1".into();
        template.reason = "because".into();
        let encoder = ResultEncoder::new(&template);
        let long = format!("http://{}/healthz", "a".repeat(200));
        for (target, seq, start) in [
            (
                "http://10.0.3.17:8080/healthz",
                1,
                1_795_460_400_123_456_789,
            ),
            (long.as_str(), u64::MAX, -5),
            ("", 0, 0),
        ] {
            let mut buf = BytesMut::new();
            encoder.encode(target, seq, start, &mut buf);
            template.target = target.to_owned();
            template.seq = seq;
            template.start_unix_nanos = start;
            assert_eq!(
                buf.to_vec(),
                template.encode_to_vec(),
                "{target:?} {seq} {start}"
            );
        }
    }
}
