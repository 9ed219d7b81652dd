//! `vigil-agent`: the per-node prober.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use vigil_agent::{AgentConfig, Identity, runtime};

/// Runs health checks on this node and streams every result to the federator.
#[derive(Parser, Debug)]
#[command(name = "vigil-agent", version)]
struct Cli {
    /// The federator's gRPC URL, e.g. http://127.0.0.1:7443.
    #[arg(long, env = "VIGIL_FEDERATOR")]
    federator: String,
    /// This node's name (in Kubernetes: from the downward API). Default: the host name.
    #[arg(long, env = "VIGIL_NODE")]
    node: Option<String>,
    /// The cluster name stamped on results. Default: the federator's own.
    #[arg(long, env = "VIGIL_CLUSTER", default_value = "")]
    cluster: String,
    /// Stable agent id. Default: <node>-<random>, new per start (its seq starts again at 1).
    #[arg(long, env = "VIGIL_AGENT_ID")]
    agent_id: Option<String>,
    /// Address for /metrics and /healthz.
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
}

fn humantime_parse(s: &str) -> Result<Duration, String> {
    s.parse::<humantime::Duration>()
        .map(Into::into)
        .map_err(|e| format!("{e}; write it like 5s or 500ms"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    runtime::init_logging(cli.log_json);
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
        max_in_flight: cli.max_in_flight,
        buffer_results: cli.buffer_results,
        drain_grace: cli.drain_grace,
    };
    vigil_agent::run(config, cancel).await?;
    Ok(())
}
