//! vigil-agent: runs assigned probes on a precise schedule and streams every result to the
//! federator, keeping what is not yet acknowledged; without a federator, a standalone prober
//! answering blackbox_exporter's `/probe`.

pub mod blackbox;
pub mod client;
pub mod metrics;
pub mod outbox;
pub mod probe;
pub mod probe_gauges;
pub mod runtime;
pub mod scheduler;
pub mod server;

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
    pub identity: Identity,
    /// Serve `/probe`, `/metrics` and `/healthz` here; `None` = no HTTP server (in-process
    /// agent).
    pub listen: Option<SocketAddr>,
    /// The blackbox_exporter modules `/probe` offers; `None` = the built-in ones
    /// ([`blackbox::Modules::defaults`]).
    pub modules: Option<Arc<blackbox::Modules>>,
    /// Most runs going at once.
    pub max_in_flight: usize,
    /// Most unacknowledged results kept; beyond it the oldest are dropped and counted.
    pub buffer_results: usize,
    /// How long to keep sending unacknowledged results after a stop signal.
    pub drain_grace: Duration,
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
}

/// A random agent id for this process: `<node>-<8 hex digits>`. Seq restarts with a new id.
pub fn fresh_agent_id(node: &str) -> String {
    format!("{node}-{:08x}", rand::random::<u32>())
}

/// Runs the agent until `cancel`; returns after draining (or the grace period).
pub async fn run(config: AgentConfig, cancel: CancellationToken) -> Result<(), AgentError> {
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
        tracing::info!(agent = %config.identity.agent_id, node = %config.identity.node, "agent starting standalone (no federator): serving /probe only");
        cancel.cancelled().await;
        return Ok(());
    };
    let outbox = Arc::new(outbox::Outbox::new(config.buffer_results));
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
    tracing::info!(agent = %config.identity.agent_id, node = %config.identity.node, federator = %federator, "agent starting");
    let client = client::Client {
        url: federator,
        identity: config.identity,
        outbox,
        scheduler,
        metrics,
    };
    client.run(cancel, config.drain_grace).await;
    Ok(())
}
