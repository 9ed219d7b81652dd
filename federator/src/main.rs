//! `vigil-federator`: the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use vigil_agent::runtime;
use vigil_federator::app;

#[derive(Parser, Debug)]
#[command(
    name = "vigil-federator",
    version,
    about = "Vigil's federator: checks, state, results, alerts and the web view."
)]
struct Cli {
    /// Log as JSON lines.
    #[arg(long, global = true, env = "VIGIL_LOG_JSON")]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The embedded default: the federator plus an agent for this machine, checks from a folder.
    Local(Common),
    /// The federator alone, checks from a folder; agents connect over gRPC.
    Serve(Common),
    /// Print the HealthCheck CRD generated from the Rust types.
    Crd,
}

#[derive(Args, Debug)]
struct Common {
    /// Folder of HealthCheck YAML files (*.yaml, *.yml; several documents per file allowed).
    #[arg(long, env = "VIGIL_CHECKS")]
    checks: PathBuf,
    /// HTTP address: /, /api/v1/..., /metrics, /healthz, /readyz.
    #[arg(long, env = "VIGIL_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// gRPC address for agents and reporters.
    #[arg(long, env = "VIGIL_GRPC_LISTEN", default_value = "127.0.0.1:7443")]
    grpc_listen: SocketAddr,
    /// JSON-lines file every result is appended to.
    #[arg(long, env = "VIGIL_RESULTS", default_value = "vigil-results.jsonl")]
    results: PathBuf,
    /// This federator's cluster name, stamped on results of agents that do not name one.
    #[arg(long, env = "VIGIL_CLUSTER", default_value = "local")]
    cluster: String,
    /// Node name of the embedded agent (local mode). Default: the host name.
    #[arg(long, env = "VIGIL_NODE")]
    node: Option<String>,
    /// How long a stop may take to drain streams and sinks.
    #[arg(long, env = "VIGIL_SHUTDOWN_GRACE", default_value = "10s", value_parser = duration)]
    shutdown_grace: Duration,
    /// Alertmanager to send alerts to; repeat it (or comma-separate the variable) for several:
    /// every one gets every alert.
    #[arg(
        long = "alertmanager",
        value_name = "URL",
        env = "VIGIL_ALERTMANAGER",
        value_delimiter = ','
    )]
    alertmanagers: Vec<url::Url>,
    /// How often firing (and, for 15 minutes, resolved) alerts are sent again.
    #[arg(long, env = "VIGIL_ALERT_RESEND_INTERVAL", default_value = "1m", value_parser = duration)]
    alert_resend_interval: Duration,
    /// URL of this federator's web view for links in alerts. Default: http://<--listen>/.
    #[arg(long, value_name = "URL", env = "VIGIL_EXTERNAL_URL")]
    external_url: Option<url::Url>,
}

fn duration(s: &str) -> Result<Duration, String> {
    s.parse::<humantime::Duration>()
        .map(Into::into)
        .map_err(|e| format!("{e}; write it like 10s or 500ms"))
}

fn options(c: Common, embedded_agent: bool) -> app::Options {
    app::Options {
        checks: c.checks,
        listen: c.listen,
        grpc_listen: c.grpc_listen,
        results: c.results,
        cluster: c.cluster,
        embedded_agent,
        node: c.node.unwrap_or_else(runtime::hostname),
        shutdown_grace: c.shutdown_grace,
        alertmanagers: c.alertmanagers,
        alert_resend_interval: c.alert_resend_interval,
        external_url: c.external_url,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let opts = match cli.command {
        Command::Crd => {
            print!("{}", vigil_federator::resource::crd_yaml());
            return Ok(());
        }
        Command::Local(c) => options(c, true),
        Command::Serve(c) => options(c, false),
    };
    runtime::init_logging(cli.log_json);
    let cancel = runtime::cancel_on_signal();
    app::run(opts, cancel).await?;
    Ok(())
}
