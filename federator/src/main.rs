//! `vigil-federator`: the command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use vigil_agent::runtime;
use vigil_federator::app;
use vigil_federator::sink::kafka;
use vigil_federator::upstream;

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
    Local(FolderArgs),
    /// The federator alone, checks from a folder; agents connect over gRPC.
    Serve(FolderArgs),
    /// In a Kubernetes cluster: HealthChecks from the API server, status written back, Jobs for
    /// isolated checks, leader election among replicas.
    Run(RunArgs),
    /// Print the HealthCheck CRD generated from the Rust types.
    Crd,
}

#[derive(Args, Debug)]
struct FolderArgs {
    /// Folder of HealthCheck YAML files (*.yaml, *.yml; several documents per file allowed).
    #[arg(long, env = "VIGIL_CHECKS")]
    checks: PathBuf,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// The federator's own namespace (its Lease and node Events live there).
    #[arg(long, env = "VIGIL_NAMESPACE", default_value = "vigil")]
    namespace: String,
    /// Watch HealthChecks in this namespace only. Default: every namespace.
    #[arg(long, env = "VIGIL_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// This replica's identity for leader election (the pod name, from the downward API).
    /// Default: the host name.
    #[arg(long, env = "VIGIL_POD_NAME")]
    pod_name: Option<String>,
    /// Run without leader election: only for a single replica.
    #[arg(long, env = "VIGIL_NO_LEADER_ELECTION")]
    no_leader_election: bool,
    /// A leader that has not renewed its Lease for this long is replaced.
    #[arg(long, env = "VIGIL_LEASE_DURATION", default_value = "15s", value_parser = duration)]
    lease_duration: Duration,
    /// Image with vigil-agent, for the Jobs of `placement: Isolated` checks.
    #[arg(
        long,
        env = "VIGIL_AGENT_IMAGE",
        default_value = "ghcr.io/vigil-dev/vigil:0.1.0"
    )]
    agent_image: String,
    /// The federator's gRPC URL as a Job's pod reaches it.
    #[arg(
        long,
        env = "VIGIL_REPORT_URL",
        default_value = "http://vigil-federator.vigil.svc:7443"
    )]
    report_url: String,
    #[command(flatten)]
    common: Common,
}

#[derive(Args, Debug)]
struct Common {
    /// HTTP address: /, /api/v1/..., /metrics, /healthz, /readyz.
    #[arg(long, env = "VIGIL_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// gRPC address for agents and reporters.
    #[arg(long, env = "VIGIL_GRPC_LISTEN", default_value = "127.0.0.1:7443")]
    grpc_listen: SocketAddr,
    /// JSON-lines file every result is appended to. Default: vigil-results.jsonl in local and
    /// serve modes, none in run mode.
    #[arg(long, env = "VIGIL_RESULTS")]
    results: Option<PathBuf>,
    /// Write no JSON-lines file (with --kafka-brokers, Kafka is then the only sink).
    #[arg(long, env = "VIGIL_NO_RESULTS_FILE")]
    no_results_file: bool,
    #[command(flatten)]
    kafka: KafkaArgs,
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
    /// An agent whose stream has been gone this long (and no other agent took its node) fires
    /// a VigilAgentSilent alert.
    #[arg(long, env = "VIGIL_AGENT_SILENT_AFTER", default_value = "2m", value_parser = duration)]
    agent_silent_after: Duration,
    /// A deep-check claim (vigil-agent deep-check) without a report is released after this,
    /// so another deep-check pod can take the failing check.
    #[arg(long, env = "VIGIL_DEEP_CHECK_LEASE", default_value = "2m", value_parser = duration)]
    deep_check_lease: Duration,
    #[command(flatten)]
    federation: FederationArgs,
}

/// Multi-cluster flags: forwarding to a global federator, and being one.
#[derive(Args, Debug)]
struct FederationArgs {
    /// Forward every result and this cluster's checks and agents to a global federator at this
    /// gRPC URL (http:// only to a loopback address; https:// with --upstream-cert/-key).
    /// Needs --cluster.
    #[arg(long, value_name = "URL", env = "VIGIL_UPSTREAM")]
    upstream: Option<String>,
    /// PEM CA bundle the upstream's server certificate must chain to.
    #[arg(long, value_name = "FILE", env = "VIGIL_UPSTREAM_CA")]
    upstream_ca: Option<PathBuf>,
    /// PEM client certificate naming this cluster (subject CN), presented to the upstream.
    #[arg(long, value_name = "FILE", env = "VIGIL_UPSTREAM_CERT")]
    upstream_cert: Option<PathBuf>,
    /// PEM private key of --upstream-cert.
    #[arg(long, value_name = "FILE", env = "VIGIL_UPSTREAM_KEY")]
    upstream_key: Option<PathBuf>,
    /// Results kept for the upstream until it acknowledges them; beyond, the oldest are
    /// dropped and counted in vigil_upstream_results_total{result="dropped"}.
    #[arg(long, env = "VIGIL_UPSTREAM_BUFFER", default_value_t = 1_000_000)]
    upstream_buffer: usize,
    /// How often this cluster's picture is sent upstream when nothing changes.
    #[arg(long, env = "VIGIL_UPSTREAM_HEARTBEAT", default_value = "10s", value_parser = duration)]
    upstream_heartbeat: Duration,
    /// A forwarding cluster heard nothing from for this long is silent: shown Unknown, and
    /// VigilClusterSilent fires.
    #[arg(long, env = "VIGIL_CLUSTER_SILENT_AFTER", default_value = "1m", value_parser = duration)]
    cluster_silent_after: Duration,
    /// PEM certificate of the gRPC listener (turns TLS on).
    #[arg(
        long,
        value_name = "FILE",
        env = "VIGIL_TLS_CERT",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(
        long,
        value_name = "FILE",
        env = "VIGIL_TLS_KEY",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// PEM CA of client certificates: a cluster link's certificate names its cluster.
    #[arg(
        long,
        value_name = "FILE",
        env = "VIGIL_TLS_CLIENT_CA",
        requires = "tls_cert"
    )]
    tls_client_ca: Option<PathBuf>,
}

/// Kafka sink flags (all optional; without --kafka-brokers no Kafka is used).
#[derive(Args, Debug)]
struct KafkaArgs {
    /// Kafka bootstrap brokers, host:port[,host:port...]: every result is written to
    /// --kafka-topic, and acknowledged to agents only after the brokers confirm it.
    #[arg(long, env = "VIGIL_KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    /// Topic for results.
    #[arg(long, env = "VIGIL_KAFKA_TOPIC", default_value = kafka::config::DEFAULT_TOPIC)]
    kafka_topic: String,
    /// Record value encoding.
    #[arg(long, env = "VIGIL_KAFKA_ENCODING", value_enum, default_value = "json")]
    kafka_encoding: kafka::Encoding,
    /// Create the topic when it is missing.
    #[arg(long, env = "VIGIL_KAFKA_CREATE_TOPIC", default_value_t = true, action = clap::ArgAction::Set)]
    kafka_create_topic: bool,
    /// Partitions of a topic the federator creates.
    #[arg(long, env = "VIGIL_KAFKA_PARTITIONS", default_value_t = 6)]
    kafka_partitions: i32,
    /// Replication factor of a topic the federator creates.
    #[arg(long, env = "VIGIL_KAFKA_REPLICATION_FACTOR", default_value_t = 1)]
    kafka_replication_factor: i32,
    /// A librdkafka property, key=value (security.protocol, sasl.*, ssl.*, tuning); repeat it.
    /// Properties behind the delivery guarantee (acks, enable.idempotence) are refused.
    #[arg(long = "kafka-option", value_name = "KEY=VALUE", env = "VIGIL_KAFKA_OPTIONS", value_delimiter = ',', value_parser = kafka_option)]
    kafka_options: Vec<(String, String)>,
}

impl KafkaArgs {
    fn options(self) -> Option<kafka::KafkaOptions> {
        let brokers = self.kafka_brokers?;
        let mut o = kafka::KafkaOptions::new(brokers);
        o.topic = self.kafka_topic;
        o.encoding = self.kafka_encoding;
        o.create_topic = self.kafka_create_topic;
        o.partitions = self.kafka_partitions;
        o.replication_factor = self.kafka_replication_factor;
        o.librdkafka = self.kafka_options.into_iter().collect();
        Some(o)
    }
}

fn kafka_option(s: &str) -> Result<(String, String), String> {
    kafka::config::parse_option(s).map_err(|e| e.to_string())
}

fn duration(s: &str) -> Result<Duration, String> {
    s.parse::<humantime::Duration>()
        .map(Into::into)
        .map_err(|e| format!("{e}; write it like 10s or 500ms"))
}

fn options(checks: PathBuf, c: Common, embedded_agent: bool) -> app::Options {
    let results = c
        .results
        .unwrap_or_else(|| PathBuf::from("vigil-results.jsonl"));
    app::Options {
        checks,
        listen: c.listen,
        grpc_listen: c.grpc_listen,
        results: (!c.no_results_file).then_some(results),
        kafka: c.kafka.options(),
        kubernetes: None,
        embedded_agent,
        node: c.node.unwrap_or_else(runtime::hostname),
        shutdown_grace: c.shutdown_grace,
        alertmanagers: c.alertmanagers,
        alert_resend_interval: c.alert_resend_interval,
        external_url: c.external_url,
        agent_silent_after: c.agent_silent_after,
        deep_check_lease: c.deep_check_lease,
        upstream: c.federation.upstream.map(|url| upstream::UpstreamOptions {
            url,
            cluster: c.cluster.clone(),
            node: runtime::hostname(),
            buffer_results: c.federation.upstream_buffer,
            heartbeat: c.federation.upstream_heartbeat,
            tls: upstream::UpstreamTls {
                ca: c.federation.upstream_ca,
                cert: c.federation.upstream_cert,
                key: c.federation.upstream_key,
            },
        }),
        cluster_silent_after: c.federation.cluster_silent_after,
        tls: match (c.federation.tls_cert, c.federation.tls_key) {
            (Some(cert), Some(key)) => Some(app::ServerTls {
                cert,
                key,
                client_ca: c.federation.tls_client_ca,
            }),
            _ => None,
        },
        cluster: c.cluster,
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
        Command::Local(f) => options(f.checks, f.common, true),
        Command::Serve(f) => options(f.checks, f.common, false),
        Command::Run(r) => {
            runtime::init_logging(cli.log_json);
            return run_in_cluster(r).await;
        }
    };
    runtime::init_logging(cli.log_json);
    let cancel = runtime::cancel_on_signal();
    app::run(opts, cancel).await?;
    Ok(())
}

async fn run_in_cluster(r: RunArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot build a Kubernetes client: {e}; run inside a pod with a ServiceAccount, or set KUBECONFIG"
        )
    })?;
    let identity = r.pod_name.unwrap_or_else(runtime::hostname);
    let mut kube = vigil_federator::controller::KubeOptions::new(client, &r.namespace, &identity);
    kube.watch_namespace = r.watch_namespace;
    kube.leader_election = !r.no_leader_election;
    kube.lease_duration = r.lease_duration;
    kube.jobs.image = r.agent_image;
    kube.jobs.federator_url = r.report_url;
    let results = if r.common.no_results_file {
        None
    } else {
        r.common.results.clone()
    };
    let mut opts = options(PathBuf::new(), r.common, false);
    opts.results = results;
    opts.kubernetes = Some(kube);
    let cancel = runtime::cancel_on_signal();
    app::run(opts, cancel).await?;
    Ok(())
}
