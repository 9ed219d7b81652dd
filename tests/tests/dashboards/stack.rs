//! The running system the dashboard queries are asked against: an HTTP and a TLS target, a
//! Kafka broker, an Alertmanager, `vigil-federator local`, a standalone `vigil-agent` fed kernel
//! log lines through a FIFO, and Debian's Prometheus scraping the federator and the agent.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use vigil_e2e::kafka::Tansu;
use vigil_e2e::{
    Proc, bin, free_addr, http_target, refusing_addr, require, start_alertmanager, wait_for,
};

pub const PROMETHEUS: &str = "/usr/bin/prometheus";
const WAIT: Duration = Duration::from_secs(60);

/// The values the test gives the dashboards' template variables.
pub const CLUSTER: &str = "local";
pub const NAMESPACE: &str = "shop";
pub const AGENT_NODE: &str = "e2e-node";

/// Everything started; dropping it stops the processes and servers.
pub struct Stack {
    pub prometheus: SocketAddr,
    pub federator_http: SocketAddr,
    /// The write end of the agent's kernel-log FIFO, kept open for the test.
    _kmsg: std::fs::File,
    _procs: Vec<Proc>,
    _tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// A TLS server with a self-signed certificate for `localhost`: the handshake is all it does.
async fn tls_target() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let _ = acceptor.accept(tcp).await;
            });
        }
    });
    (addr, task)
}

/// The checks, all `EveryNode` so that the standalone agent runs (and exports) each of them:
/// an http check that passes, a tls check (certificate expiry), a tcp check that fails, and a
/// document the federator refuses (timeout not under interval: `vigil_config_errors` 1).
fn write_checks(dir: &Path, web: SocketAddr, tls: SocketAddr) -> PathBuf {
    let checks = dir.join("checks");
    std::fs::create_dir(&checks).unwrap();
    let check = |name: &str, extra: &str, probe: &str| {
        format!(
            "apiVersion: vigil.dev/v1alpha1\nkind: HealthCheck\nmetadata: {{name: {name}, namespace: {NAMESPACE}}}\n\
             spec:\n  placement: EveryNode\n{extra}  probe: {probe}\n"
        )
    };
    let every_second = "  interval: 1s\n  timeout: 500ms\n";
    let docs = [
        check(
            "web",
            every_second,
            &format!("{{http: {{url: 'http://{web}/healthz', bodyMatches: '^ok$'}}}}"),
        ),
        check(
            "cert",
            every_second,
            &format!(
                "{{tls: {{address: '{tls}', serverName: localhost, minValidity: 1h, tls: {{insecureSkipVerify: true}}}}}}"
            ),
        ),
        check(
            "down",
            &format!("{every_second}  failureThreshold: 1\n"),
            &format!("{{tcp: {{address: '{}'}}}}", refusing_addr()),
        ),
        check(
            "refused",
            "  interval: 1s\n  timeout: 1s\n",
            "{tcp: {address: '127.0.0.1:1'}}",
        ),
    ];
    std::fs::write(checks.join("shop.yaml"), docs.join("---\n")).unwrap();
    checks
}

/// The agent's node diagnostics read the kernel log from a FIFO the test writes to.
fn diagnostics_file(dir: &Path) -> (PathBuf, PathBuf) {
    let fifo = dir.join("kmsg");
    nix::unistd::mkfifo(
        &fifo,
        nix::sys::stat::Mode::S_IRUSR | nix::sys::stat::Mode::S_IWUSR,
    )
    .unwrap();
    let file = dir.join("diagnostics.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: vigil.dev/v1alpha1\nkind: NodeDiagnostics\nhostPaths: {{kmsg: '{}'}}\n",
            fifo.display()
        ),
    )
    .unwrap();
    (file, fifo)
}

/// Opens the FIFO for writing once the agent reads it (non-blocking: ENXIO until then), and
/// writes an OOM kill (an event) and a hung task (an event that sets VigilKernelDeadlock).
async fn feed_kernel_log(fifo: &Path) -> std::fs::File {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = wait_for("the agent to open its kernel-log FIFO", WAIT, || async {
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(fifo)
            .ok()
    })
    .await;
    file.write_all(
        b"Out of memory: Killed process 4242 (stress) total-vm:1024kB\n\
          INFO: task kworker:77 blocked for more than 120 seconds.\n",
    )
    .unwrap();
    file
}

fn prometheus_config(dir: &Path, federator: SocketAddr, agent: SocketAddr) -> PathBuf {
    let rules = super::repo().join("manifests/prometheus/vigil-rules.yaml");
    let config = dir.join("prometheus.yml");
    // As docs/dashboards.md says to scrape Vigil: every target labelled with its cluster, the
    // agents with their node, the federator with honor_labels (its vigil_check_up names the
    // cluster and node of each result itself).
    std::fs::write(
        &config,
        format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 900ms, evaluation_interval: 1s}}\n\
             rule_files: ['{}']\n\
             scrape_configs:\n\
             \x20 - job_name: vigil-federator\n\
             \x20   honor_labels: true\n\
             \x20   static_configs: [{{targets: ['{federator}'], labels: {{cluster: {CLUSTER}}}}}]\n\
             \x20 - job_name: vigil-agent\n\
             \x20   static_configs: [{{targets: ['{agent}'], labels: {{cluster: {CLUSTER}, node: {AGENT_NODE}}}}}]\n",
            rules.display()
        ),
    )
    .unwrap();
    config
}

impl Stack {
    pub async fn start(dir: &Path) -> Self {
        let prometheus_bin = require(PROMETHEUS, "prometheus");
        let mut procs = Vec::new();
        let (web, web_task) = http_target().await;
        let (tls, tls_task) = tls_target().await;
        let checks = write_checks(dir, web, tls);
        let tansu = Tansu::start(dir);
        let (am, am_proc) = start_alertmanager(dir);
        procs.push(am_proc);

        let federator_http = free_addr();
        let grpc = free_addr();
        procs.push(Proc::start(
            "federator",
            &bin("vigil-federator"),
            &[
                "local".into(),
                "--checks".into(),
                checks.display().to_string(),
                "--listen".into(),
                federator_http.to_string(),
                "--grpc-listen".into(),
                grpc.to_string(),
                "--results".into(),
                dir.join("results.jsonl").display().to_string(),
                "--node".into(),
                "e2e-local".into(),
                "--kafka-brokers".into(),
                tansu.brokers(),
                "--alertmanager".into(),
                format!("http://{am}"),
                "--alert-resend-interval".into(),
                "2s".into(),
            ],
            dir,
        ));
        procs.push(tansu.proc);

        let (diagnostics, fifo) = diagnostics_file(dir);
        let agent_http = free_addr();
        procs.push(Proc::start(
            "agent",
            &bin("vigil-agent"),
            &[
                "--federator".into(),
                format!("http://{grpc}"),
                "--node".into(),
                AGENT_NODE.into(),
                "--listen".into(),
                agent_http.to_string(),
                "--diagnostics".into(),
                diagnostics.display().to_string(),
            ],
            dir,
        ));
        let kmsg = feed_kernel_log(&fifo).await;

        let prometheus = free_addr();
        let config = prometheus_config(dir, federator_http, agent_http);
        procs.push(Proc::start(
            "prometheus",
            &prometheus_bin,
            &[
                format!("--config.file={}", config.display()),
                format!("--storage.tsdb.path={}", dir.join("tsdb").display()),
                format!("--web.listen-address={prometheus}"),
            ],
            dir,
        ));
        Self {
            prometheus,
            federator_http,
            _kmsg: kmsg,
            _procs: procs,
            _tasks: vec![web_task, tls_task],
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        for task in &self._tasks {
            task.abort();
        }
    }
}
