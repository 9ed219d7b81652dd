//! Cluster links: a cluster's federator (`--upstream`) forwarding its results and its picture of
//! the cluster to this one over the agents' `Connect` contract. Acks count the link's batches
//! (`ResultBatch.batch_seq`); each result keeps the (agent, seq) its agent gave it.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use vigil_proto::{AgentMessage, Hello, MAX_BATCH_RESULTS, ResultBatch};

use super::{ACKS_IN_FLIGHT, ConnectStream, FederatorService, Ledger, Next, send_acks};
use crate::federation::{Peer, Remote, certificate_cluster, link_id, link_identity};
use crate::pipeline::Durable;

/// The peer's address and, over TLS, the cluster its verified client certificate names.
pub(super) fn peer_of<T>(request: &Request<T>) -> Peer {
    Peer {
        addr: request.remote_addr(),
        certificate: request
            .peer_certs()
            .and_then(|certs| certs.first().map(|c| certificate_cluster(c))),
    }
}

impl FederatorService {
    /// Serves one cluster link until it ends or a newer link of the same cluster replaces it.
    pub(super) async fn connect_cluster(
        &self,
        hello: Hello,
        mut inbound: Streaming<AgentMessage>,
        peer: &Peer,
    ) -> Result<Response<ConnectStream>, Status> {
        let cluster =
            link_identity(&hello, peer).map_err(|s| self.reject("cluster_identity", s))?;
        let id = link_id(&cluster);
        let ledger = self.open_ledger(&id, hello.last_acked_seq).await;
        let peer_text = peer.addr.map(|a| a.to_string()).unwrap_or_default();
        let (remote, link, replaced) = self.federation.connect(&cluster, peer_text);
        tracing::info!(%cluster, peer = ?peer.addr, last_acked = hello.last_acked_seq, "cluster linked");

        let (tx, rx) = mpsc::channel(ACKS_IN_FLIGHT + 8);
        let (ack_tx, ack_rx) = mpsc::channel::<(u64, usize, Durable)>(ACKS_IN_FLIGHT);
        tokio::spawn(send_acks(
            ack_rx,
            tx.clone(),
            Arc::clone(&self.metrics),
            id.clone(),
        ));
        let svc = self.clone();
        tokio::spawn(async move {
            let mut last_batch = hello.last_acked_seq;
            let end: Option<Status> = loop {
                let batch = match svc.next_message(&mut inbound, &replaced, &id).await {
                    Next::Results(b) => b,
                    Next::ClusterState(s) => {
                        remote.set_cluster_state(s);
                        continue;
                    }
                    Next::End(status) => break status,
                };
                let count = batch.results.len();
                match svc
                    .ingest_link(&remote, &id, &ledger, &mut last_batch, batch)
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
                tracing::warn!(%cluster, %status, "closing cluster link");
                let _ = tx.send(Err(status)).await;
            }
            svc.federation.disconnect(&remote, link);
            tracing::info!(%cluster, "cluster link closed");
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    /// Checks one forwarded batch, folds it into the cluster's state and hands it to the
    /// pipeline unless it was taken before. Returns the batch seq to acknowledge and when it is
    /// durable.
    async fn ingest_link(
        &self,
        remote: &Remote,
        id: &str,
        ledger: &Arc<Ledger>,
        last_batch: &mut u64,
        batch: ResultBatch,
    ) -> Result<(u64, Durable), Status> {
        let ResultBatch {
            mut results,
            batch_seq,
            ..
        } = batch;
        if results.len() > MAX_BATCH_RESULTS {
            return Err(self.reject(
                "batch_too_large",
                Status::out_of_range(format!(
                    "a ResultBatch holds at most {MAX_BATCH_RESULTS} results; this one held {}",
                    results.len()
                )),
            ));
        }
        if batch_seq <= *last_batch {
            return Err(self.reject(
                "seq_backwards",
                Status::invalid_argument(format!(
                    "ResultBatch.batch_seq must increase on a cluster link (1, 2, ...): got \
                     {batch_seq} after {}",
                    *last_batch
                )),
            ));
        }
        for r in &mut results {
            if r.agent_id.is_empty() {
                return Err(self.reject(
                    "bad_result",
                    Status::invalid_argument(format!(
                        "a forwarded result (check {:?}, seq {}) has no agent_id; a cluster \
                         federator forwards results as its agents sent them",
                        r.check_id, r.seq
                    )),
                ));
            }
            if !r.cluster.is_empty() && r.cluster != remote.name {
                return Err(self.reject(
                    "cluster_mismatch",
                    Status::permission_denied(format!(
                        "a result names cluster {:?} but this link speaks for cluster {:?}: a \
                         cluster forwards only its own results",
                        r.cluster, remote.name
                    )),
                ));
            }
            r.cluster.clone_from(&remote.name);
        }
        *last_batch = batch_seq;
        remote.touch();
        self.metrics
            .results_received
            .with_label_values(&[id])
            .inc_by(results.len() as u64);

        let mut submitted = ledger.submitted.lock().await;
        if batch_seq <= *submitted {
            drop(submitted);
            self.metrics
                .results_deduplicated
                .with_label_values(&[id])
                .inc_by(results.len() as u64);
            let mut durable = ledger.durable.subscribe();
            return Ok((
                batch_seq,
                Box::pin(async move {
                    durable
                        .wait_for(|d| *d >= batch_seq)
                        .await
                        .map(|_| ())
                        .map_err(|_| crate::pipeline::Stopped)
                }),
            ));
        }
        for r in &results {
            if remote.store.apply(r) {
                tracing::debug!(cluster = %remote.name, check = %r.check_id, target = %r.target, node = %r.node, "forwarded check state changed");
            }
        }
        *submitted = batch_seq;
        let written = self.pipeline.submit(Arc::new(results.into())).await;
        drop(submitted);
        let ledger = Arc::clone(ledger);
        Ok((
            batch_seq,
            Box::pin(async move {
                written.await?;
                ledger.mark_durable(batch_seq);
                Ok(())
            }),
        ))
    }
}
