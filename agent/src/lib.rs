//! vigil-agent: runs assigned probes on a precise schedule and streams every result to the
//! federator, keeping what is not yet acknowledged; without a federator, a standalone prober
//! answering blackbox_exporter's `/probe`.

pub mod blackbox;
pub mod client;
pub mod deep_check;
pub mod metrics;
pub mod node;
pub mod outbox;
pub mod probe;
pub mod probe_gauges;
pub mod run_once;
pub mod runtime;
pub mod scheduler;
pub mod server;
pub mod spill;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use scheduler::Identity;

/// Everything an agent needs to run.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// `http://host:port` of the federator's gRPC listener; `None` = standalone: only the HTTP
    /// server (`/probe`, `/metrics`, `/healthz`) runs.
    pub federator: Option<String>,
    /// An empty `agent_id` = the one stored in the spill directory, else [`fresh_agent_id`].
    pub identity: Identity,
    /// Serve `/probe`, `/metrics` and `/healthz` here; `None` = no HTTP server (in-process
    /// agent).
    pub listen: Option<SocketAddr>,
    /// The blackbox_exporter modules `/probe` offers; `None` = the built-in ones
    /// ([`blackbox::Modules::defaults`]).
    pub modules: Option<Arc<blackbox::Modules>>,
    /// Most runs going at once.
    pub max_in_flight: usize,
    /// Most unacknowledged results kept in memory; beyond it the oldest go to the spill, or
    /// without one are dropped and counted.
    pub buffer_results: usize,
    /// On-disk spill for results the memory buffer has no room for, and the agent's id and seq
    /// across restarts; `None` = memory only.
    pub spill: Option<spill::SpillConfig>,
    /// How long to keep sending unacknowledged results after a stop signal.
    pub drain_grace: Duration,
    /// Node diagnostics (memory, disk, kernel log, ...) as `node/*` results; `None` = off.
    pub diagnostics: Option<node::Settings>,
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "cannot listen on {addr} for the agent's HTTP endpoint: {source}; pass another --listen address"
    )]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Spill(#[from] spill::SpillError),
}

/// A random agent id for this process: `<node>-<8 hex digits>`. Seq restarts with a new id.
pub fn fresh_agent_id(node: &str) -> String {
    format!("{node}-{:08x}", rand::random::<u32>())
}

/// Runs the agent until `cancel`; returns after draining (or the grace period).
pub async fn run(mut config: AgentConfig, cancel: CancellationToken) -> Result<(), AgentError> {
    if config.identity.agent_id.is_empty() && (config.spill.is_none() || config.federator.is_none())
    {
        config.identity.agent_id = fresh_agent_id(&config.identity.node);
    }
    let metrics = Arc::new(metrics::Metrics::new());
    if let Some(addr) = config.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| AgentError::Listen { addr, source })?;
        let local = listener.local_addr().unwrap_or(addr);
        tracing::info!(addr = %local, "agent HTTP listening");
        let probes = Arc::new(server::ProbeContext {
            modules: config
                .modules
                .as_deref()
                .cloned()
                .unwrap_or_else(blackbox::Modules::defaults),
            identity: config.identity.clone(),
        });
        let app = server::router(Arc::clone(&metrics), probes);
        let stop = cancel.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
    }
    let Some(federator) = config.federator else {
        if let Some(diagnostics) = &config.diagnostics {
            // Standalone: no outbox; the diagnostics feed /metrics only.
            node::runner::spawn(
                diagnostics,
                None,
                Arc::clone(&metrics),
                cancel.child_token(),
            );
        }
        tracing::info!(agent = %config.identity.agent_id, node = %config.identity.node, "agent starting standalone (no federator): serving /probe only");
        cancel.cancelled().await;
        return Ok(());
    };
    let mut identity = config.identity;
    let outbox = match config.spill {
        Some(spill) => {
            let (agent_id, node) = (identity.agent_id.clone(), identity.node.clone());
            let opened =
                tokio::task::spawn_blocking(move || spill::Spill::open(&spill, &agent_id, &node))
                    .await
                    .expect("opening the spill does not panic");
            let (spill, recovered) = opened?;
            tracing::info!(dir = %spill.dir().display(), agent = %recovered.agent_id, next_seq = recovered.next_seq, acked = recovered.acked, spilled = recovered.spilled, "spill directory opened");
            identity.agent_id = recovered.agent_id.clone();
            let outbox = outbox::Outbox::with_spill(config.buffer_results, spill, &recovered);
            outbox.report(&metrics);
            Arc::new(outbox)
        }
        None => Arc::new(outbox::Outbox::new(config.buffer_results)),
    };
    if let Some(diagnostics) = &config.diagnostics {
        node::runner::spawn(
            diagnostics,
            Some(Arc::clone(&outbox)),
            Arc::clone(&metrics),
            cancel.child_token(),
        );
    }
    let schedule_stop = cancel.child_token();
    // Streamed results leave agent, node and cluster empty: the federator stamps them from
    // this stream's Hello (it must not trust them per result anyway), which saves three string
    // copies per result and their bytes on the wire.
    let scheduler = scheduler::spawn(
        Identity {
            agent_id: String::new(),
            node: String::new(),
            cluster: String::new(),
        },
        Arc::clone(&outbox),
        Arc::clone(&metrics),
        config.max_in_flight,
        schedule_stop.clone(),
    );
    tracing::info!(agent = %identity.agent_id, node = %identity.node, federator = %federator, "agent starting");
    let client = client::Client {
        url: federator,
        identity,
        outbox: Arc::clone(&outbox),
        scheduler,
        metrics: Arc::clone(&metrics),
    };
    client.run(cancel, config.drain_grace).await;
    let kept = outbox.close(&metrics);
    if kept > 0 {
        tracing::info!(
            results = kept,
            "wrote the unacknowledged results to the spill; they are sent after the restart"
        );
    }
    Ok(())
}
