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
#[command(name = "vigil-agent", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
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
    /// Stable agent id. Default: the one kept in --spill-dir, else <node>-<random>, new per
    /// start (its seq starts again at 1).
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
    /// Directory (a hostPath in the DaemonSet) for results the memory buffer has no room for
    /// and for those still unacknowledged at SIGTERM, and for the agent's id and seq across
    /// restarts; see docs/agent-buffering.md. Unset: memory only.
    #[arg(long, env = "VIGIL_SPILL_DIR")]
    spill_dir: Option<PathBuf>,
    /// Most bytes of spilled results on disk (e.g. 512MiB, 1GiB); beyond it the oldest are
    /// dropped (and counted).
    #[arg(long, env = "VIGIL_SPILL_MAX_BYTES", default_value = "1GiB", value_parser = vigil_agent::spill::parse_size)]
    spill_max_bytes: u64,
    /// How long to keep delivering unacknowledged results after SIGTERM.
    #[arg(long, env = "VIGIL_DRAIN_GRACE", default_value = "5s", value_parser = humantime_parse)]
    drain_grace: Duration,
    /// A NodeDiagnostics YAML file (thresholds, intervals, kernel-log patterns; see
    /// docs/node-diagnostics.md). Default: the built-in settings.
    #[arg(long, env = "VIGIL_DIAGNOSTICS")]
    diagnostics: Option<PathBuf>,
    /// Where the host's / is mounted (the DaemonSet mounts it at /host): node diagnostics
    /// read <DIR>/proc, <DIR>/sys and <DIR>/dev/kmsg.
    #[arg(long, env = "VIGIL_HOST_ROOT", default_value = "/")]
    host_root: PathBuf,
    /// Run no node diagnostics.
    #[arg(long, env = "VIGIL_NO_DIAGNOSTICS", conflicts_with = "diagnostics")]
    no_diagnostics: bool,
    /// Log as JSON lines.
    #[arg(long, env = "VIGIL_LOG_JSON")]
    log_json: bool,
    /// Runtime worker threads. 1 (the default) runs everything on one thread, which costs the
    /// least CPU per probe; more only helps with very slow or CPU-heavy probes.
    #[arg(long, env = "VIGIL_THREADS", default_value_t = 1)]
    threads: usize,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Run one check once and report it over Report (the Jobs of `placement: Isolated`).
    RunOnce(RunOnceArgs),
    /// Claim one failing check from the federator, examine it in isolation (every address, DNS,
    /// TLS chain, phase timings, TTL probing), report the findings and exit (KEDA ScaledJob).
    DeepCheck(DeepCheckArgs),
}

#[derive(clap::Args, Debug)]
struct DeepCheckArgs {
    /// The federator's gRPC URL.
    #[arg(long, env = "VIGIL_FEDERATOR")]
    federator: String,
    /// Who claims, shown with the findings. Default: the host name (the pod name).
    #[arg(long, env = "VIGIL_POD_NAME")]
    claimer: Option<String>,
    /// The node this pod runs on (downward API). Default: the host name.
    #[arg(long, env = "VIGIL_NODE")]
    node: Option<String>,
    /// Take only failing checks matching KEY=VALUE, with the keys of the KEDA trigger's
    /// scalerMetadata (namespace, labelSelector, check, cluster); repeat it for several.
    #[arg(long = "select", value_name = "KEY=VALUE", value_parser = key_value)]
    select: Vec<(String, String)>,
    /// DNS server for the DNS detail, IP:PORT. Default: the first nameserver in
    /// /etc/resolv.conf.
    #[arg(long, env = "VIGIL_RESOLVER")]
    resolver: Option<SocketAddr>,
    /// TTL probing goes up to this many hops; 0 turns it off.
    #[arg(long, env = "VIGIL_MAX_HOPS", default_value_t = 16)]
    max_hops: u8,
    /// How long to wait for each hop's answer.
    #[arg(long, default_value = "1s", value_parser = humantime_parse)]
    hop_timeout: Duration,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not KEY=VALUE; write it like namespace=shop"))
}

async fn deep_check(args: DeepCheckArgs, log_json: bool) -> anyhow::Result<()> {
    runtime::init_logging(log_json);
    let opts = vigil_agent::deep_check::Options {
        federator: args.federator,
        claimer: args.claimer.unwrap_or_else(runtime::hostname),
        node: args.node.unwrap_or_else(runtime::hostname),
        selector: args.select.into_iter().collect(),
        resolver: args.resolver,
        max_hops: args.max_hops,
        hop_timeout: args.hop_timeout,
    };
    vigil_agent::deep_check::run(&opts).await?;
    Ok(())
}

#[derive(clap::Args, Debug)]
struct RunOnceArgs {
    /// The federator's gRPC URL.
    #[arg(long, env = "VIGIL_FEDERATOR")]
    federator: String,
    /// The CheckSpec as hex protobuf (the federator writes it into the Job).
    #[arg(long, env = "VIGIL_CHECK_SPEC")]
    spec: String,
    /// The reporter id: the Job's name, so each run is its own (agent, seq).
    #[arg(long, env = "VIGIL_AGENT_ID")]
    agent_id: String,
    /// The node the Job's pod runs on (downward API).
    #[arg(long, env = "VIGIL_NODE", default_value = "")]
    node: String,
}

async fn run_once(args: RunOnceArgs, log_json: bool) -> anyhow::Result<()> {
    runtime::init_logging(log_json);
    let spec = vigil_agent::run_once::decode_spec(&args.spec)?;
    let identity = Identity {
        agent_id: args.agent_id,
        node: args.node,
        cluster: String::new(),
    };
    vigil_agent::run_once::run(&args.federator, &spec, &identity).await?;
    Ok(())
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
    let runtime = runtime.enable_all().build()?;
    match cli.command {
        Some(Command::RunOnce(args)) => runtime.block_on(run_once(args, cli.log_json)),
        Some(Command::DeepCheck(args)) => runtime.block_on(deep_check(args, cli.log_json)),
        None => runtime.block_on(run(cli)),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    runtime::init_logging(cli.log_json);
    let modules = match &cli.modules {
        Some(path) => Some(Arc::new(vigil_agent::blackbox::Modules::load(path)?)),
        None => None,
    };
    let diagnostics = if cli.no_diagnostics {
        None
    } else {
        Some(vigil_agent::node::Settings::load(
            cli.diagnostics.as_deref(),
            &cli.host_root,
        )?)
    };
    let node = cli.node.unwrap_or_else(runtime::hostname);
    // Empty: the spill directory's, or a fresh one.
    let agent_id = cli.agent_id.unwrap_or_default();
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
        spill: cli.spill_dir.map(|dir| vigil_agent::spill::SpillConfig {
            dir,
            max_bytes: cli.spill_max_bytes,
        }),
        drain_grace: cli.drain_grace,
        diagnostics,
    };
    vigil_agent::run(config, cancel).await?;
    Ok(())
}
