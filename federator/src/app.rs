//! Builds and runs the federator in `local` and `serve` modes: checks from a folder, results to
//! a JSON-lines file, gRPC for agents, HTTP for people and Prometheus.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use vigil_proto::externalscaler::external_scaler_server::ExternalScalerServer;
use vigil_proto::{MAX_MESSAGE_BYTES, federator_server::FederatorServer};

use crate::api::{Api, Readiness};
use crate::grpc::FederatorService;
use crate::hub::Hub;
use crate::loader;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::sink::{Sink, jsonl::JsonlSink, kafka::KafkaSink};
use crate::state::State;

/// How often the checks folder is looked at for changes.
const RESCAN_EVERY: Duration = Duration::from_secs(2);

#[derive(Clone, Debug)]
pub struct Options {
    pub checks: PathBuf,
    pub listen: SocketAddr,
    pub grpc_listen: SocketAddr,
    /// The JSON-lines file every result is appended to; `None` writes no file.
    pub results: Option<PathBuf>,
    /// Every result to Kafka as well (`--kafka-brokers`).
    pub kafka: Option<crate::sink::kafka::KafkaOptions>,
    /// Kubernetes mode (`run`): HealthChecks from the API server instead of `checks`.
    pub kubernetes: Option<crate::controller::KubeOptions>,
    pub cluster: String,
    /// Run an agent for this machine inside the process (`local` mode).
    pub embedded_agent: bool,
    pub node: String,
    pub shutdown_grace: Duration,
    /// Alertmanagers every alert goes to (`--alertmanager`); none turns alerting off.
    pub alertmanagers: Vec<url::Url>,
    /// Firing and recently resolved alerts are resent this often. Default 1m.
    pub alert_resend_interval: Duration,
    /// Where people reach the web view, for alert links. Default: `http://<HTTP address>/`.
    pub external_url: Option<url::Url>,
    /// An agent gone this long fires VigilAgentSilent (`--agent-silent-after`). Default 2m.
    pub agent_silent_after: Duration,
    /// A deep-check claim without a report is released after this (`--deep-check-lease`).
    /// Default 2m.
    pub deep_check_lease: Duration,
    /// Forward every result and the cluster's picture to a global federator (`--upstream`).
    pub upstream: Option<crate::upstream::UpstreamOptions>,
    /// A forwarding cluster heard nothing from this long is silent (`--cluster-silent-after`).
    pub cluster_silent_after: Duration,
    /// TLS on the gRPC listener (`--tls-cert`, `--tls-key`, `--tls-client-ca`).
    pub tls: Option<ServerTls>,
}

/// The gRPC listener's certificate, and the CA whose client certificates name clusters.
#[derive(Clone, Debug)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Clients may present a certificate from this CA; a cluster link's names its cluster.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Checks(#[from] loader::ReadDirError),
    #[error("cannot open the results file: {0}; pass a writable path with --results")]
    Results(#[source] crate::sink::SinkError),
    #[error("cannot listen on {addr} for {what}: {source}; pass another address with {flag}")]
    Listen {
        what: &'static str,
        flag: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Kafka(#[from] crate::sink::kafka::KafkaSinkError),
    #[error("no sink: pass --results FILE or --kafka-brokers (or both); results must go somewhere")]
    NoSink,
    #[error("the gRPC server failed: {0}")]
    Grpc(#[source] tonic::transport::Error),
    #[error(transparent)]
    Alerts(#[from] crate::alert::AlertError),
    #[error(transparent)]
    Upstream(#[from] crate::upstream::UpstreamError),
    #[error("{flag} {path}: {source}")]
    TlsFile {
        flag: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the gRPC listener's TLS settings: {0}; check --tls-cert, --tls-key and --tls-client-ca"
    )]
    Tls(#[source] tonic::transport::Error),
    #[error("--cluster-silent-after must be more than zero; write it like 1m")]
    ClusterSilentAfter,
}

/// A started federator: where it listens, and its task (which ends after `cancel` and draining).
pub struct Running {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub task: tokio::task::JoinHandle<Result<(), StartError>>,
}

/// Runs until `cancel`, then drains within the grace period.
pub async fn run(opts: Options, cancel: CancellationToken) -> Result<(), StartError> {
    let running = start(opts, cancel).await?;
    running.task.await.unwrap_or(Ok(()))
}

/// Loads the checks, opens the sinks and binds both listeners; the rest runs in `Running::task`.
pub async fn start(opts: Options, cancel: CancellationToken) -> Result<Running, StartError> {
    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(State::default());
    let hub = Arc::new(Hub::new(Arc::clone(&state), Arc::clone(&metrics)));
    let readiness = Arc::new(Readiness::default());

    let tracker = TaskTracker::new();
    let leader = match &opts.kubernetes {
        Some(kube) => Some(crate::controller::elect(kube, &tracker, cancel.clone())),
        None => {
            let loaded = loader::load_dir(&opts.checks)?;
            report_load(&opts, &loaded);
            hub.set_checks(loaded.checks, loaded.errors);
            None
        }
    };

    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if let Some(path) = &opts.results {
        sinks.push(Box::new(
            JsonlSink::open(path).map_err(StartError::Results)?,
        ));
    }
    if let Some(kafka) = &opts.kafka {
        sinks.push(Box::new(KafkaSink::new(
            kafka.clone(),
            Arc::clone(&metrics),
            Arc::clone(&readiness),
        )?));
        tracker.spawn(crate::sink::kafka::ensure_topic(
            kafka.clone(),
            Arc::clone(&readiness),
            cancel.clone(),
        ));
    }
    let sink_stop = CancellationToken::new();
    if let Some(upstream) = &opts.upstream {
        sinks.push(Box::new(crate::upstream::start(
            upstream.clone(),
            Arc::clone(&hub),
            Arc::clone(&metrics),
            &tracker,
            sink_stop.clone(),
            opts.shutdown_grace,
        )?));
    }
    if sinks.is_empty() {
        return Err(StartError::NoSink);
    }
    if opts.cluster_silent_after.is_zero() {
        return Err(StartError::ClusterSilentAfter);
    }
    let federation = Arc::new(crate::federation::Federation::new(
        opts.cluster_silent_after,
        Arc::clone(&metrics),
    ));
    let tls = opts.tls.as_ref().map(server_tls).transpose()?;
    let pipeline = Pipeline::start(
        sinks,
        Arc::clone(&metrics),
        Arc::clone(&readiness),
        &tracker,
        sink_stop.clone(),
    );

    let grpc_listener = bind(opts.grpc_listen, "gRPC", "--grpc-listen").await?;
    let http_listener = bind(opts.listen, "HTTP", "--listen").await?;
    let grpc_addr = grpc_listener.local_addr().unwrap_or(opts.grpc_listen);
    let http_addr = http_listener.local_addr().unwrap_or(opts.listen);
    tracing::info!(http = %http_addr, grpc = %grpc_addr, results = ?opts.results, kafka = ?opts.kafka.as_ref().map(|k| (&k.brokers, &k.topic)), checks = %opts.checks.display(), "federator listening");

    let deep_checks = Arc::new(crate::deep_check::DeepChecks::new(opts.deep_check_lease));
    let service = FederatorService::new(
        Arc::clone(&hub),
        Arc::clone(&state),
        pipeline,
        Arc::clone(&metrics),
        opts.cluster.clone(),
    )
    .with_deep_checks(Arc::clone(&deep_checks))
    .with_federation(Arc::clone(&federation));
    tracker.spawn(export_clusters(Arc::clone(&federation), cancel.clone()));
    tracker.spawn(forget_stale_targets(
        Arc::clone(&state),
        Arc::clone(&metrics),
        cancel.clone(),
    ));
    let service = match &leader {
        Some(leader) => {
            tracker.spawn(follow_leadership(
                leader.clone(),
                Arc::clone(&hub),
                Arc::clone(&metrics),
                cancel.clone(),
            ));
            service.with_leader(leader.clone())
        }
        None => service,
    };
    let service = if opts.alertmanagers.is_empty() {
        service
    } else {
        let external_url = opts.external_url.clone().unwrap_or_else(|| {
            url::Url::parse(&format!("http://{http_addr}/")).expect("a socket address is a host")
        });
        let config = crate::alert::Config {
            alertmanagers: opts.alertmanagers.clone(),
            resend_interval: opts.alert_resend_interval,
            external_url,
            agent_silent_after: opts.agent_silent_after,
            deep_checks: Arc::clone(&deep_checks),
            federation: Some(Arc::clone(&federation)),
        };
        service.with_alerts(crate::alert::Notifier::start(
            config,
            Arc::clone(&hub),
            Arc::clone(&state),
            Arc::clone(&metrics),
            &tracker,
            cancel.clone(),
        )?)
    };
    if let (Some(kube), Some(leader)) = (&opts.kubernetes, &leader) {
        crate::controller::start(
            kube.clone(),
            Arc::clone(&hub),
            Arc::clone(&state),
            service.clone(),
            leader.clone(),
            &tracker,
            cancel.clone(),
        );
    }
    let grpc_stop = cancel.clone();
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls).map_err(StartError::Tls)?;
    }
    let grpc = tokio::spawn(
        server
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .add_service(
                FederatorServer::new(service)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES),
            )
            .add_service(ExternalScalerServer::new(crate::keda::KedaScaler::new(
                Arc::clone(&hub),
                Arc::clone(&state),
                cancel.clone(),
            )))
            // Without TCP_NODELAY every Ack and StreamIsActive push waits ~40 ms for Nagle.
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc_listener).with_nodelay(Some(true)),
                async move { grpc_stop.cancelled().await },
            ),
    );

    let app = crate::api::router(Api {
        hub: Arc::clone(&hub),
        state,
        metrics,
        readiness,
        deep_checks,
        federation,
        cluster: opts.cluster.clone(),
    });
    let http_stop = cancel.clone();
    tracker.spawn(async move {
        if let Err(e) = axum::serve(http_listener, app)
            .with_graceful_shutdown(async move { http_stop.cancelled().await })
            .await
        {
            tracing::error!(error = %e, "HTTP server failed");
        }
    });

    tracker.spawn(watch_checks(opts.clone(), Arc::clone(&hub), cancel.clone()));

    let agent_stop = CancellationToken::new();
    let agent = opts.embedded_agent.then(|| {
        let config = vigil_agent::AgentConfig {
            federator: Some(format!("http://{grpc_addr}")),
            identity: vigil_agent::Identity {
                agent_id: vigil_agent::fresh_agent_id(&opts.node),
                node: opts.node.clone(),
                cluster: opts.cluster.clone(),
            },
            listen: None,
            modules: None,
            max_in_flight: 512,
            buffer_results: 100_000,
            spill: None,
            drain_grace: opts.shutdown_grace,
            // Local mode watches this machine: its real /proc, /sys and /dev/kmsg.
            diagnostics: Some(vigil_agent::node::Settings::defaults("/".as_ref())),
        };
        tokio::spawn(vigil_agent::run(config, agent_stop.clone()))
    });

    let task = tokio::spawn(async move {
        cancel.cancelled().await;
        shutdown(opts, agent, agent_stop, grpc, sink_stop, tracker).await
    });
    Ok(Running {
        http_addr,
        grpc_addr,
        task,
    })
}

async fn shutdown(
    opts: Options,
    agent: Option<tokio::task::JoinHandle<Result<(), vigil_agent::AgentError>>>,
    agent_stop: CancellationToken,
    grpc: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    sink_stop: CancellationToken,
    tracker: TaskTracker,
) -> Result<(), StartError> {
    // Stop order: the embedded agent drains into us first, then the servers, then the sinks.
    if let Some(agent) = agent {
        agent_stop.cancel();
        let _ = tokio::time::timeout(opts.shutdown_grace, agent).await;
    }
    match tokio::time::timeout(opts.shutdown_grace, grpc).await {
        Ok(Ok(Err(e))) => return Err(StartError::Grpc(e)),
        Ok(_) => {}
        Err(_) => tracing::warn!("gRPC streams still open after the grace period"),
    }
    sink_stop.cancel();
    tracker.close();
    if tokio::time::timeout(opts.shutdown_grace, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "sinks did not finish within the grace period; agents will resend what was not acknowledged"
        );
    }
    tracing::info!("federator stopped");
    Ok(())
}

/// The listener's TLS: its certificate, and (optionally) the CA of clients' certificates.
/// Client certificates stay optional, so agents can connect without one; a cluster link without
/// one is refused unless it comes from loopback.
fn server_tls(t: &ServerTls) -> Result<tonic::transport::ServerTlsConfig, StartError> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let read = |flag: &'static str, path: &PathBuf| {
        std::fs::read(path).map_err(|source| StartError::TlsFile {
            flag,
            path: path.display().to_string(),
            source,
        })
    };
    let mut config = ServerTlsConfig::new().identity(Identity::from_pem(
        read("--tls-cert", &t.cert)?,
        read("--tls-key", &t.key)?,
    ));
    if let Some(ca) = &t.client_ca {
        config = config
            .client_ca_root(Certificate::from_pem(read("--tls-client-ca", ca)?))
            .client_auth_optional(true);
    }
    Ok(config)
}

/// Keeps `vigil_cluster_up` current while nothing arrives from a cluster.
async fn export_clusters(
    federation: Arc<crate::federation::Federation>,
    cancel: CancellationToken,
) {
    let every =
        (federation.silent_after() / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(every) => federation.export(),
        }
    }
}

/// Every 30 s, forgets the targets no result has come for in their check's stale period (see
/// `State::forget_stale`) and their `vigil_check_up` series; alerts on them resolve at the
/// next resend.
async fn forget_stale_targets(state: Arc<State>, metrics: Arc<Metrics>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let forgotten = state.forget_stale(std::time::Instant::now());
        if !forgotten.is_empty() {
            tracing::info!(targets = forgotten.len(), first = ?forgotten[0], "forgot targets no result came for in their stale period (their agent or node left, or the check moved)");
        }
        for key in &forgotten {
            metrics.forget_target(key);
        }
    }
}

async fn bind(
    addr: SocketAddr,
    what: &'static str,
    flag: &'static str,
) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen {
            what,
            flag,
            addr,
            source,
        })
}

fn report_load(opts: &Options, loaded: &loader::Loaded) {
    for e in &loaded.errors {
        tracing::error!("{e}");
    }
    tracing::info!(checks = loaded.checks.len(), refused = loaded.errors.len(), folder = %opts.checks.display(), "checks loaded");
}

/// Reloads the folder when any file in it changes (name, size or modification time).
/// Exports leadership and drops this replica's agents when it stops leading. A standby stays
/// ready (so drains and rolling updates can proceed under the PodDisruptionBudget); it refuses
/// agents with UNAVAILABLE, and they reconnect through the Service until they reach the leader.
async fn follow_leadership(
    mut leader: tokio::sync::watch::Receiver<bool>,
    hub: Arc<Hub>,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    loop {
        let leading = *leader.borrow_and_update();
        metrics.leader.set(i64::from(leading));
        if !leading {
            hub.disconnect_all();
        }
        tokio::select! {
            r = leader.changed() => if r.is_err() { return },
            () = cancel.cancelled() => return,
        }
    }
}

async fn watch_checks(opts: Options, hub: Arc<Hub>, cancel: CancellationToken) {
    let mut seen = fingerprint(&opts.checks);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(RESCAN_EVERY) => {}
        }
        let now = fingerprint(&opts.checks);
        if now == seen {
            continue;
        }
        seen = now;
        match loader::load_dir(&opts.checks) {
            Ok(loaded) => {
                report_load(&opts, &loaded);
                hub.set_checks(loaded.checks, loaded.errors);
            }
            Err(e) => tracing::error!("{e}; keeping the checks loaded before"),
        }
    }
}

fn fingerprint(dir: &std::path::Path) -> Vec<(PathBuf, u64, Option<std::time::SystemTime>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            Some((e.path(), m.len(), m.modified().ok()))
        })
        .collect();
    v.sort();
    v
}
