//! The `vigil.v1.Federator` gRPC service: agent streams, one-shot reports, dedup and acks.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Response, Status, Streaming};
use vigil_proto::pool::Results;
use vigil_proto::{
    Ack, AgentMessage, FederatorMessage, Hello, MAX_BATCH_RESULTS, ProbeResult, ResultBatch,
    agent_message, federator_message::Msg, federator_server::Federator,
};

use crate::hub::{Hub, Outbound, now_unix_nanos};
use crate::metrics::Metrics;
use crate::pipeline::{Durable, Pipeline};
use crate::placement::AgentInfo;
use crate::state::{Health, State};

mod ledgers;
mod link;

use ledgers::{Ledger, Ledgers};

/// How long a new stream may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Batches awaiting durability per stream before reading from it pauses (flow control).
const ACKS_IN_FLIGHT: usize = 32;

#[derive(Clone)]
pub struct FederatorService {
    hub: Arc<Hub>,
    state: Arc<State>,
    pipeline: Pipeline,
    metrics: Arc<Metrics>,
    ledgers: Arc<Ledgers>,
    cluster: String,
    alerts: Option<crate::alert::Notifier>,
    /// In Kubernetes mode with leader election: whether this replica leads. Standbys refuse
    /// agents, so every result goes through the leader's state and alerts.
    leader: Option<tokio::sync::watch::Receiver<bool>>,
    /// Claims and findings of deep checks (`ClaimDeepCheck`, `ReportDeepCheck`).
    deep_checks: Arc<crate::deep_check::DeepChecks>,
    /// Clusters that forward to this federator (links with the `federator/v1` capability).
    federation: Arc<crate::federation::Federation>,
}

impl FederatorService {
    pub fn new(
        hub: Arc<Hub>,
        state: Arc<State>,
        pipeline: Pipeline,
        metrics: Arc<Metrics>,
        cluster: String,
    ) -> Self {
        Self {
            hub,
            state,
            pipeline,
            ledgers: Arc::default(),
            cluster,
            alerts: None,
            leader: None,
            deep_checks: Arc::default(),
            federation: Arc::new(crate::federation::Federation::new(
                Duration::from_secs(60),
                Arc::clone(&metrics),
            )),
            metrics,
        }
    }

    /// Keeps forwarding clusters in `federation` (shared with the API and alerts).
    pub fn with_federation(mut self, federation: Arc<crate::federation::Federation>) -> Self {
        self.federation = federation;
        self
    }

    /// Serves deep-check claims and reports from `store` (shared with the API and alerts).
    pub fn with_deep_checks(mut self, store: Arc<crate::deep_check::DeepChecks>) -> Self {
        self.deep_checks = store;
        self
    }

    /// Hands every health change to the alert notifier.
    pub fn with_alerts(mut self, notifier: crate::alert::Notifier) -> Self {
        self.alerts = Some(notifier);
        self
    }

    /// Refuses agents unless this replica leads (see `leader`).
    pub fn with_leader(mut self, leader: tokio::sync::watch::Receiver<bool>) -> Self {
        self.leader = Some(leader);
        self
    }

    /// `UNAVAILABLE` while this replica is a standby: agents and claimers go to the leader.
    fn refuse_if_standby(&self) -> Result<(), Status> {
        if self.leader.as_ref().is_some_and(|l| !*l.borrow()) {
            return Err(self.reject(
                "standby",
                Status::unavailable(
                    "this federator replica is a standby (another holds the Lease); reconnect \
                     through the federator Service, which routes to the ready leader",
                ),
            ));
        }
        Ok(())
    }

    /// The ledger of `agent_id` (new at `acked` if it has none); ledgers long unused go, with
    /// their agents' metric series.
    fn ledger(&self, agent_id: &str, acked: u64) -> Arc<Ledger> {
        let (ledger, forgotten) = self.ledgers.get(agent_id, acked);
        for id in forgotten {
            tracing::debug!(agent = %id, "forgetting the dedup ledger and metrics of an agent gone for an hour");
            self.metrics.forget_agent(&id);
        }
        ledger
    }

    /// The dedup ledger of a stream that says it has `last_acked` acknowledged: a restarted
    /// federator learns the position from it; a peer that starts again at 1 is a new incarnation.
    async fn open_ledger(&self, id: &str, last_acked: u64) -> Arc<Ledger> {
        let mut ledger = self.ledger(id, last_acked);
        let taken_before = {
            let mut submitted = ledger.submitted.lock().await;
            if last_acked == 0 && *submitted > 0 {
                Some(*submitted)
            } else {
                // A restarted federator learns the agent's acknowledged position from Hello.
                *submitted = (*submitted).max(last_acked);
                ledger.mark_durable(last_acked);
                None
            }
        };
        if let Some(taken) = taken_before {
            // Nothing acknowledged, yet results of this id were taken: a new incarnation of the
            // agent (a fixed --agent-id without a spill directory starts again at seq 1), whose
            // results are new, not duplicates. The one case this gets wrong, an agent whose very
            // first Ack was lost, writes some results twice with the same (agent, seq).
            tracing::info!(agent = %id, previous_seq = taken, "agent restarted its seq at 1 (new incarnation); starting a new dedup ledger for it");
            ledger = Arc::new(Ledger::new(0));
            self.ledgers.replace(id, Arc::clone(&ledger));
        }
        ledger
    }

    fn reject(&self, reason: &'static str, status: Status) -> Status {
        self.metrics
            .results_rejected
            .with_label_values(&[reason])
            .inc();
        status
    }

    /// Checks a batch from `agent_id`, stamps identity and scope on it, folds it into the state,
    /// and hands the results not yet taken to the pipeline. Returns the seq to acknowledge and
    /// when it is durable.
    async fn ingest(
        &self,
        agent_id: &str,
        node: &str,
        cluster: &str,
        ledger: &Arc<Ledger>,
        last_seq: &mut u64,
        results: Vec<ProbeResult>,
    ) -> Result<(u64, Durable), Status> {
        // Whatever happens to the batch, its results go back to the decoder's pool.
        let mut results = Results::from(results);
        if results.len() > MAX_BATCH_RESULTS {
            return Err(self.reject(
                "batch_too_large",
                Status::out_of_range(format!(
                    "a ResultBatch holds at most {MAX_BATCH_RESULTS} results; this one held {}",
                    results.len()
                )),
            ));
        }
        if let Some(check) = self
            .hub
            .first_unknown_check(results.iter().map(|r| r.check_id.as_str()))
        {
            return Err(self.reject(
                "unassigned_check",
                Status::failed_precondition(format!(
                    "a result is for check {check:?}, which this federator never assigned: \
                     results are taken only for defined (or just removed) checks and node/ \
                     diagnostics"
                )),
            ));
        }
        for r in &mut results {
            if r.seq <= *last_seq {
                return Err(self.reject(
                    "seq_backwards",
                    Status::invalid_argument(format!(
                        "result seq must increase on a stream: got {} after {}",
                        r.seq, *last_seq
                    )),
                ));
            }
            *last_seq = r.seq;
            // Agents name themselves in every result already; rewritten only when they differ.
            set_if_different(&mut r.agent_id, agent_id);
            if !node.is_empty() {
                set_if_different(&mut r.node, node);
            }
            set_if_different(&mut r.cluster, cluster);
        }
        let Some(ack_seq) = results.last().map(|r| r.seq) else {
            let durable = *ledger.durable.borrow();
            return Ok((durable, Box::pin(async { Ok(()) })));
        };
        self.metrics
            .results_received
            .with_label_values(&[agent_id])
            .inc_by(results.len() as u64);

        let mut submitted = ledger.submitted.lock().await;
        let before = results.len();
        results.retain(|r| r.seq > *submitted);
        let duplicates = before - results.len();
        if duplicates > 0 {
            self.metrics
                .results_deduplicated
                .with_label_values(&[agent_id])
                .inc_by(duplicates as u64);
        }
        if results.is_empty() {
            drop(submitted);
            let mut durable = ledger.durable.subscribe();
            return Ok((
                ack_seq,
                Box::pin(async move {
                    durable
                        .wait_for(|d| *d >= ack_seq)
                        .await
                        .map(|_| ())
                        .map_err(|_| crate::pipeline::Stopped)
                }),
            ));
        }
        let seen = std::time::Instant::now();
        for r in &mut results {
            if let Some(t) = self.state.apply_at(r, seen) {
                let (ns, name) = t.key.check.split_once('/').unwrap_or(("", &t.key.check));
                let labels = [
                    name,
                    ns,
                    t.key.target.as_str(),
                    t.key.cluster.as_str(),
                    t.key.node.as_str(),
                ];
                self.metrics
                    .check_up
                    .with_label_values(&labels)
                    .set(match t.to {
                        Health::Healthy => 1,
                        Health::Failing => 0,
                        Health::Unknown => -1,
                    });
                tracing::info!(check = %t.key.check, target = %t.key.target, node = %t.key.node, from = ?t.from, to = ?t.to, reason = %t.reason, "check state changed");
                if let Some(alerts) = &self.alerts {
                    alerts.observe(&t, r);
                }
            }
        }
        *submitted = ack_seq;
        let written = self.pipeline.submit(Arc::new(results)).await;
        drop(submitted);
        let ledger = Arc::clone(ledger);
        let durable: Durable = Box::pin(async move {
            written.await?;
            ledger.mark_durable(ack_seq);
            Ok(())
        });
        Ok((ack_seq, durable))
    }
}

fn set_if_different(field: &mut String, value: &str) {
    if field != value {
        field.clear();
        field.push_str(value);
    }
}

/// What came next on a Connect stream after its Hello.
enum Next {
    Results(ResultBatch),
    ClusterState(vigil_proto::ClusterState),
    /// The stream is over: with the status to send back when the peer broke the protocol (or
    /// a newer stream replaced this one), without one when it just went away.
    End(Option<Status>),
}

impl FederatorService {
    /// Reads the next message of an agent stream or a cluster link (`peer` names it in logs).
    async fn next_message(
        &self,
        inbound: &mut Streaming<AgentMessage>,
        replaced: &tokio_util::sync::CancellationToken,
        peer: &str,
    ) -> Next {
        let msg = tokio::select! {
            m = inbound.message() => m,
            () = replaced.cancelled() => return Next::End(Some(Status::aborted(
                "stream closed by the federator: a newer stream of the same agent or cluster \
                 replaced it, or this replica stopped leading",
            ))),
        };
        match msg {
            Ok(Some(AgentMessage {
                msg: Some(agent_message::Msg::Results(b)),
            })) => Next::Results(b),
            Ok(Some(AgentMessage {
                msg: Some(agent_message::Msg::ClusterState(s)),
            })) => Next::ClusterState(s),
            Ok(Some(AgentMessage {
                msg: Some(agent_message::Msg::Hello(_)),
            })) => Next::End(Some(self.reject(
                "second_hello",
                Status::invalid_argument("Hello may only be sent once per stream"),
            ))),
            Ok(Some(AgentMessage { msg: None })) => Next::End(Some(self.reject(
                "empty_message",
                Status::invalid_argument("AgentMessage without a message"),
            ))),
            Ok(None) => Next::End(None),
            // A message we could not decode (too large, not protobuf) is answered with its
            // status; anything else means the peer or the connection went away.
            Err(status)
                if matches!(
                    status.code(),
                    Code::OutOfRange | Code::Internal | Code::ResourceExhausted
                ) =>
            {
                Next::End(Some(self.reject("bad_message", status)))
            }
            Err(status) => {
                tracing::info!(%peer, %status, "stream ended");
                Next::End(None)
            }
        }
    }
}

type ConnectStream = Pin<Box<dyn Stream<Item = Result<FederatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl Federator for FederatorService {
    type ConnectStream = ConnectStream;

    async fn connect(
        &self,
        request: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<ConnectStream>, Status> {
        self.refuse_if_standby()?;
        let peer = link::peer_of(&request);
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Hello within 10s of opening Connect"))??;
        let hello = match first.and_then(|m| m.msg) {
            Some(agent_message::Msg::Hello(h)) => h,
            _ => {
                return Err(self.reject(
                    "no_hello",
                    Status::invalid_argument("the first message on Connect must be Hello"),
                ));
            }
        };
        validate_hello(&hello).map_err(|s| self.reject("bad_hello", s))?;
        if hello
            .capabilities
            .iter()
            .any(|c| c == crate::federation::CAPABILITY)
        {
            return self.connect_cluster(hello, inbound, &peer).await;
        }
        let cluster = if hello.cluster.is_empty() {
            self.cluster.clone()
        } else {
            hello.cluster.clone()
        };
        let (tx, rx) = mpsc::channel(ACKS_IN_FLIGHT + 8);
        let ledger = self
            .open_ledger(&hello.agent_id, hello.last_acked_seq)
            .await;
        let info = AgentInfo {
            agent_id: hello.agent_id.clone(),
            node: hello.node.clone(),
            node_labels: Default::default(),
            capabilities: hello.capabilities.clone(),
        };
        let (conn_id, replaced) = self.hub.register(info, cluster.clone(), tx.clone());
        tracing::info!(agent = %hello.agent_id, node = %hello.node, %cluster, last_acked = hello.last_acked_seq, "agent connected");

        let (ack_tx, ack_rx) = mpsc::channel::<(u64, usize, Durable)>(ACKS_IN_FLIGHT);
        tokio::spawn(send_acks(
            ack_rx,
            tx.clone(),
            Arc::clone(&self.metrics),
            hello.agent_id.clone(),
        ));
        let svc = self.clone();
        tokio::spawn(async move {
            let mut last_seq = hello.last_acked_seq;
            let end: Option<Status> = loop {
                let batch = match svc
                    .next_message(&mut inbound, &replaced, &hello.agent_id)
                    .await
                {
                    Next::Results(b) => b,
                    Next::ClusterState(_) => {
                        break Some(svc.reject(
                            "not_a_cluster_link",
                            Status::invalid_argument(format!(
                                "ClusterState is only taken on a cluster link (Hello capability \
                                 {:?}); this stream said it is an agent",
                                crate::federation::CAPABILITY
                            )),
                        ));
                    }
                    Next::End(status) => break status,
                };
                let count = batch.results.len();
                match svc
                    .ingest(
                        &hello.agent_id,
                        &hello.node,
                        &cluster,
                        &ledger,
                        &mut last_seq,
                        batch.results,
                    )
                    .await
                {
                    Ok((seq, durable)) => {
                        if ack_tx.send((seq, count, durable)).await.is_err() {
                            break None;
                        }
                    }
                    Err(status) => break Some(status),
                }
            };
            if let Some(status) = end {
                tracing::warn!(agent = %hello.agent_id, %status, "closing agent stream");
                let _ = tx.send(Err(status)).await;
            }
            svc.hub.unregister(&hello.agent_id, conn_id);
            tracing::info!(agent = %hello.agent_id, "agent disconnected");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn claim_deep_check(
        &self,
        request: Request<vigil_proto::ClaimDeepCheckRequest>,
    ) -> Result<Response<vigil_proto::ClaimDeepCheckResponse>, Status> {
        self.refuse_if_standby()?;
        crate::deep_check::serve_claim(&self.deep_checks, &self.hub, &self.state, request.get_ref())
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn report_deep_check(
        &self,
        request: Request<vigil_proto::DeepCheckReport>,
    ) -> Result<Response<vigil_proto::ReportDeepCheckResponse>, Status> {
        crate::deep_check::serve_report(&self.deep_checks, &self.hub, request.into_inner())
            .map(Response::new)
            .map_err(Status::from)
    }

    async fn report(&self, request: Request<ResultBatch>) -> Result<Response<Ack>, Status> {
        let batch = request.into_inner();
        if batch.agent_id.is_empty() {
            return Err(self.reject(
                "bad_report",
                Status::invalid_argument("ResultBatch.agent_id is required on Report"),
            ));
        }
        let ledger = self.ledger(&batch.agent_id, 0);
        let node = batch
            .results
            .first()
            .map(|r| r.node.clone())
            .unwrap_or_default();
        let mut last_seq = 0;
        let (seq, durable) = self
            .ingest(
                &batch.agent_id,
                &node,
                &self.cluster,
                &ledger,
                &mut last_seq,
                batch.results,
            )
            .await?;
        durable
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(Ack {
            seq,
            federator_unix_nanos: now_unix_nanos(),
        }))
    }
}

/// Sends Acks in stream order, each once its batch is durable.
async fn send_acks(
    mut rx: mpsc::Receiver<(u64, usize, Durable)>,
    tx: Outbound,
    metrics: Arc<Metrics>,
    agent: String,
) {
    while let Some((seq, count, durable)) = rx.recv().await {
        if durable.await.is_err() {
            return;
        }
        metrics
            .results_acked
            .with_label_values(&[&agent])
            .inc_by(count as u64);
        let ack = FederatorMessage {
            msg: Some(Msg::Ack(Ack {
                seq,
                federator_unix_nanos: now_unix_nanos(),
            })),
        };
        if tx.send(Ok(ack)).await.is_err() {
            return;
        }
    }
}

fn validate_hello(h: &Hello) -> Result<(), Status> {
    let field = |name: &str, value: &str| {
        if value.is_empty() || value.len() > 253 || value.chars().any(char::is_control) {
            Err(Status::invalid_argument(format!(
                "Hello.{name} must be 1-253 printable characters (got {value:?})"
            )))
        } else {
            Ok(())
        }
    };
    field("agent_id", &h.agent_id)?;
    field("node", &h.node)?;
    if !h.cluster.is_empty() {
        field("cluster", &h.cluster)?;
    }
    Ok(())
}
