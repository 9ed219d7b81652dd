//! `vigil-agent`: the per-node prober.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use vigil_agent::{AgentConfig, Identity, runtime};

/// Runs health checks on this node and streams every result to the federator; without
/// --federator, a standalone prober answering blackbox_exporter's /probe.
#[derive(Parser, Debug)]
#[command(name = "vigil-agent", version)]
struct Cli {
    /// The federator's gRPC URL, e.g. http://127.0.0.1:7443. Unset: standalone prober
    /// (only /probe, /metrics and /healthz).
    #[arg(long, env = "VIGIL_FEDERATOR")]
    federator: Option<String>,
    /// A blackbox_exporter modules file for /probe. Default: built-in http_2xx,
    /// http_post_2xx, tcp_connect, icmp, grpc, grpc_plain.
    #[arg(long, env = "VIGIL_MODULES")]
    modules: Option<PathBuf>,
    /// This node's name (in Kubernetes: from the downward API). Default: the host name.
    #[arg(long, env = "VIGIL_NODE")]
    node: Option<String>,
    /// The cluster name stamped on results. Default: the federator's own.
    #[arg(long, env = "VIGIL_CLUSTER", default_value = "")]
    cluster: String,
    /// Stable agent id. Default: <node>-<random>, new per start (its seq starts again at 1).
    #[arg(long, env = "VIGIL_AGENT_ID")]
    agent_id: Option<String>,
    /// Address for /probe, /metrics and /healthz.
    #[arg(long, env = "VIGIL_LISTEN", default_value = "127.0.0.1:9115")]
    listen: SocketAddr,
    /// Most probe runs going at once.
    #[arg(long, env = "VIGIL_MAX_IN_FLIGHT", default_value_t = 512)]
    max_in_flight: usize,
    /// Most unacknowledged results kept in memory before the oldest are dropped (and counted).
    #[arg(long, env = "VIGIL_BUFFER_RESULTS", default_value_t = 100_000)]
    buffer_results: usize,
    /// How long to keep delivering unacknowledged results after SIGTERM.
    #[arg(long, env = "VIGIL_DRAIN_GRACE", default_value = "5s", value_parser = humantime_parse)]
    drain_grace: Duration,
    /// Log as JSON lines.
    #[arg(long, env = "VIGIL_LOG_JSON")]
    log_json: bool,
    /// Runtime worker threads. 1 (the default) runs everything on one thread, which costs the
    /// least CPU per probe; more only helps with very slow or CPU-heavy probes.
    #[arg(long, env = "VIGIL_THREADS", default_value_t = 1)]
    threads: usize,
}

fn humantime_parse(s: &str) -> Result<Duration, String> {
    s.parse::<humantime::Duration>()
        .map(Into::into)
        .map_err(|e| format!("{e}; write it like 5s or 500ms"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut runtime = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(cli.threads);
        b
    };
    runtime.enable_all().build()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    runtime::init_logging(cli.log_json);
    let modules = match &cli.modules {
        Some(path) => Some(Arc::new(vigil_agent::blackbox::Modules::load(path)?)),
        None => None,
    };
    let node = cli.node.unwrap_or_else(runtime::hostname);
    let agent_id = cli
        .agent_id
        .unwrap_or_else(|| vigil_agent::fresh_agent_id(&node));
    let cancel = runtime::cancel_on_signal();
    let config = AgentConfig {
        federator: cli.federator,
        identity: Identity {
            agent_id,
            node,
            cluster: cli.cluster,
        },
        listen: Some(cli.listen),
        modules,
        max_in_flight: cli.max_in_flight,
        buffer_results: cli.buffer_results,
        drain_grace: cli.drain_grace,
    };
    vigil_agent::run(config, cancel).await?;
    Ok(())
}
