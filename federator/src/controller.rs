//! Kubernetes mode (`vigil-federator run`): HealthChecks come from the API server, their status
//! goes back to it, Nodes drive placement and carry the agents' problem conditions, and a Lease
//! elects the one replica that writes, alerts and takes agents.
//!
//! One module per building block, as in kube-runtime: `checks` (watch + validate), `status`
//! (server-side apply, rate-limited), `nodes` (inventory, conditions, events), `leader` (Lease).

pub mod checks;
pub mod jobs;
pub mod leader;
pub mod nodes;
pub mod status;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::hub::Hub;
use crate::state::State;

/// How the federator talks to Kubernetes.
#[derive(Clone)]
pub struct KubeOptions {
    pub client: kube::Client,
    /// Watch HealthChecks in this namespace only; `None` = every namespace.
    pub watch_namespace: Option<String>,
    /// The federator's own namespace: its Lease and the node Events live here.
    pub namespace: String,
    /// This replica's identity for the Lease (its pod name).
    pub identity: String,
    /// Elect a leader on a Lease; without it this replica always leads (one replica only).
    pub leader_election: bool,
    pub lease_duration: Duration,
    pub retry_period: Duration,
    pub status: status::StatusOptions,
    pub jobs: jobs::JobOptions,
}

impl std::fmt::Debug for KubeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeOptions")
            .field("watch_namespace", &self.watch_namespace)
            .field("namespace", &self.namespace)
            .field("identity", &self.identity)
            .field("leader_election", &self.leader_election)
            .finish_non_exhaustive()
    }
}

impl KubeOptions {
    pub fn new(client: kube::Client, namespace: &str, identity: &str) -> Self {
        Self {
            client,
            watch_namespace: None,
            namespace: namespace.to_owned(),
            identity: identity.to_owned(),
            leader_election: true,
            lease_duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
            status: status::StatusOptions::default(),
            jobs: jobs::JobOptions::default(),
        }
    }
}

/// Starts leader election on `tracker`; the receiver says whether this replica leads (always
/// true without leader election).
pub fn elect(
    options: &KubeOptions,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) -> watch::Receiver<bool> {
    if options.leader_election {
        let mut lease = leader::LeaseConfig::new(&options.namespace, &options.identity);
        lease.lease_duration = options.lease_duration;
        lease.retry_period = options.retry_period;
        let (rx, task) = leader::spawn(options.client.clone(), lease, cancel.clone());
        tracker.spawn(async move {
            let _ = task.await;
        });
        rx
    } else {
        // Keep the sender alive until the stop, so `changed()` never fires spuriously.
        let (tx, rx) = watch::channel(true);
        tracker.spawn(async move {
            cancel.cancelled().await;
            drop(tx);
        });
        rx
    }
}

/// Starts every controller task on `tracker`; `reporter` records the results of Jobs that
/// never reported.
pub fn start(
    options: KubeOptions,
    hub: Arc<Hub>,
    state: Arc<State>,
    reporter: crate::grpc::FederatorService,
    leader: watch::Receiver<bool>,
    tracker: &TaskTracker,
    cancel: CancellationToken,
) {
    // Until the Nodes are listed no agent's node is known to be Ready: place nothing yet.
    hub.set_nodes(std::collections::HashMap::new());
    let catalog = checks::Catalog::default();
    let notes = jobs::JobNotes::default();
    tracker.spawn(jobs::run(
        options.client.clone(),
        catalog.clone(),
        Arc::clone(&state),
        reporter,
        leader.clone(),
        options.jobs.clone(),
        Arc::clone(&notes),
        cancel.clone(),
    ));
    tracker.spawn(checks::run(
        options.client.clone(),
        options.watch_namespace.clone(),
        catalog.clone(),
        Arc::clone(&hub),
        cancel.clone(),
    ));
    tracker.spawn(status::run(
        options.client.clone(),
        catalog,
        Arc::clone(&hub),
        Arc::clone(&state),
        notes,
        leader.clone(),
        options.status.clone(),
        cancel.clone(),
    ));
    tracker.spawn(nodes::watch_nodes(
        options.client.clone(),
        hub,
        cancel.clone(),
    ));
    tracker.spawn(nodes::report_problems(
        options.client,
        state,
        leader.clone(),
        options.namespace,
        Duration::from_secs(1),
        cancel,
    ));
}
