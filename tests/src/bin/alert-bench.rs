//! Detection-to-alert latency over the real binaries: a real Alertmanager, the real
//! `vigil-federator serve --alertmanager ...` and a real `vigil-agent` probe a local HTTP target
//! (`interval 1s, failingInterval 200ms, failureThreshold 3, timeout 100ms`). Each round takes the
//! target down and measures, from that moment, (a) the first FAILURE result in the results file
//! and (b) the alert in Alertmanager's `GET /api/v2/alerts` (polled every 10 ms), then brings it
//! back up and measures until the alert is resolved. Two ways of going down: `refuse` (the
//! listener closes: connection refused) and `hang` (connections are accepted, never answered:
//! the 100 ms timeout).
//!
//! `cargo build --release -p vigil-e2e -p vigil-federator -p vigil-agent &&
//!  target/release/alert-bench [ROUNDS]`

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use vigil_e2e::{Proc, bin, free_addr, get_json, read_results};

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
const POLL: Duration = Duration::from_millis(10);
const TIMEOUT: Duration = Duration::from_millis(100);
const FAILING_INTERVAL: Duration = Duration::from_millis(200);
const FAILURE_THRESHOLD: u32 = 3;

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let dir = tempfile::tempdir().expect("tempdir");
    let am = Alertmanager::start(dir.path()).await;
    let target = Target::start().await;
    let checks = dir.path().join("checks");
    std::fs::create_dir(&checks).unwrap();
    std::fs::write(
        checks.join("bench.yaml"),
        format!(
            "apiVersion: vigil.dev/v1alpha1\nkind: HealthCheck\nmetadata: {{name: web, namespace: bench}}\n\
             spec:\n  interval: 1s\n  failingInterval: 200ms\n  failureThreshold: {FAILURE_THRESHOLD}\n  \
             timeout: 100ms\n  probe: {{http: {{url: 'http://{}/healthz'}}}}\n",
            target.addr
        ),
    )
    .unwrap();
    let results = dir.path().join("results.jsonl");
    let (http, grpc) = (free_addr(), free_addr());
    let arg = |s: &str| s.to_owned();
    let _fed = Proc::start(
        "federator",
        &bin("vigil-federator"),
        &[
            arg("serve"),
            arg("--checks"),
            checks.display().to_string(),
            arg("--listen"),
            http.to_string(),
            arg("--grpc-listen"),
            grpc.to_string(),
            arg("--results"),
            results.display().to_string(),
            arg("--alertmanager"),
            format!("http://127.0.0.1:{}/", am.port),
            arg("--cluster"),
            arg("bench"),
        ],
        dir.path(),
    );
    let _agent = Proc::start(
        "agent",
        &bin("vigil-agent"),
        &[
            arg("--federator"),
            format!("http://{grpc}"),
            arg("--node"),
            arg("bench-node"),
            arg("--listen"),
            free_addr().to_string(),
            arg("--no-diagnostics"),
        ],
        dir.path(),
    );
    let client = reqwest::Client::new();
    println!(
        "check: interval 1s, failingInterval {FAILING_INTERVAL:?}, failureThreshold {FAILURE_THRESHOLD}, \
         timeout {TIMEOUT:?}, retries 0; {rounds} rounds per mode; Alertmanager polled every {POLL:?}"
    );
    let budget_failure = TIMEOUT + Duration::from_millis(50);
    let budget_alert = FAILING_INTERVAL * (FAILURE_THRESHOLD - 1) + Duration::from_secs(1);
    for mode in [Down::Refuse, Down::Hang] {
        let mut rows = Vec::new();
        for _ in 0..rounds {
            wait_healthy(&client, http).await;
            // Start each round at a random point of the 1 s run grid.
            tokio::time::sleep(Duration::from_millis(u64::from(rand_ms()))).await;
            rows.push(round(mode, &target, &results, &am).await);
        }
        println!("\n== target goes down by {mode:?} ==");
        let col = |f: fn(&Row) -> Duration| -> Vec<Duration> { rows.iter().map(f).collect() };
        report(
            "down -> first FAILURE result in the results file",
            &col(|r| r.down_to_failure),
            None,
        );
        report(
            "  first failed run's start -> FAILURE in the file",
            &col(|r| r.run_start_to_failure),
            Some(("timeout + 50 ms", budget_failure)),
        );
        report(
            "  first failed run's own latency (start -> verdict)",
            &col(|r| r.run_latency),
            Some(("timeout + 50 ms", budget_failure)),
        );
        report(
            "down -> alert in Alertmanager",
            &col(|r| r.down_to_alert),
            None,
        );
        report(
            "  first failed run's start -> alert in Alertmanager",
            &col(|r| r.run_start_to_alert),
            Some(("(failureThreshold-1) x failingInterval + 1 s", budget_alert)),
        );
        report(
            "up -> alert resolved in Alertmanager",
            &col(|r| r.up_to_resolved),
            None,
        );
    }
}

#[derive(Clone, Copy, Debug)]
enum Down {
    Refuse,
    Hang,
}

struct Row {
    down_to_failure: Duration,
    run_start_to_failure: Duration,
    run_latency: Duration,
    down_to_alert: Duration,
    run_start_to_alert: Duration,
    up_to_resolved: Duration,
}

async fn round(mode: Down, target: &Target, results: &Path, am: &Alertmanager) -> Row {
    let down_unix = unix_nanos();
    let down = Instant::now();
    target.set(mode);
    let mut failure = None;
    let mut alert_at = None;
    while failure.is_none() || alert_at.is_none() {
        assert!(
            down.elapsed() < Duration::from_secs(20),
            "no failure or alert 20 s after the target went down"
        );
        if failure.is_none() {
            failure = first_failure(results, down_unix).map(|r| (Instant::now(), unix_nanos(), r));
        }
        if alert_at.is_none() && am.firing().await {
            alert_at = Some((Instant::now(), unix_nanos()));
        }
        tokio::time::sleep(POLL).await;
    }
    let (failure_seen, failure_seen_unix, record) = failure.unwrap();
    let (alert_seen, alert_seen_unix) = alert_at.unwrap();
    let run_start = record["start_unix_nanos"].as_i64().unwrap();
    let latency = Duration::from_secs_f64(record["latency_seconds"].as_f64().unwrap());

    let up = Instant::now();
    target.set_up();
    while am.firing().await {
        assert!(
            up.elapsed() < Duration::from_secs(20),
            "alert not resolved 20 s after the target came back"
        );
        tokio::time::sleep(POLL).await;
    }
    let since = |unix: i64| Duration::from_nanos(u64::try_from(unix - run_start).unwrap_or(0));
    Row {
        down_to_failure: failure_seen - down,
        run_start_to_failure: since(failure_seen_unix),
        run_latency: latency,
        down_to_alert: alert_seen - down,
        run_start_to_alert: since(alert_seen_unix),
        up_to_resolved: up.elapsed(),
    }
}

/// The first non-SUCCESS result of a run started after `after_unix`.
fn first_failure(results: &Path, after_unix: i64) -> Option<Value> {
    read_results(results).into_iter().find(|r| {
        r["check"] == "bench/web"
            && r["outcome"] != "SUCCESS"
            && r["start_unix_nanos"]
                .as_i64()
                .is_some_and(|s| s >= after_unix)
    })
}

async fn wait_healthy(client: &reqwest::Client, http: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = get_json(client, &format!("http://{http}/api/v1/checks")).await
            && v["checks"][0]["state"] == "Healthy"
        {
            return;
        }
        assert!(Instant::now() < deadline, "check never Healthy");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn report(what: &str, values: &[Duration], budget: Option<(&str, Duration)>) {
    let mut v = values.to_vec();
    v.sort();
    let p50 = v[v.len() / 2];
    let max = v[v.len() - 1];
    let budget = budget.map_or(String::new(), |(name, b)| {
        format!(
            "   budget {name} = {} ms: {}",
            b.as_millis(),
            if max <= b {
                "max within"
            } else if p50 <= b {
                "p50 within, max over"
            } else {
                "OVER"
            }
        )
    });
    println!(
        "{what:<55} p50 {:>6.1} ms  max {:>6.1} ms{budget}",
        p50.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3
    );
}

fn unix_nanos() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    )
    .unwrap()
}

fn rand_ms() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 1000
}

/// The HTTP target on 127.0.0.1: answers 200 while up; when down, either refuses connections
/// (listener closed) or accepts and never answers.
struct Target {
    addr: SocketAddr,
    hang: Arc<AtomicBool>,
    /// Wakes the accept loop to close (refuse) or reopen its listener.
    change: Arc<Notify>,
    refusing: Arc<AtomicBool>,
}

impl Target {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let t = Self {
            addr,
            hang: Arc::default(),
            change: Arc::default(),
            refusing: Arc::default(),
        };
        let (hang, change, refusing) = (
            Arc::clone(&t.hang),
            Arc::clone(&t.change),
            Arc::clone(&t.refusing),
        );
        tokio::spawn(async move {
            let mut listener = Some(listener);
            loop {
                let Some(l) = &listener else {
                    change.notified().await;
                    if !refusing.load(Ordering::SeqCst) {
                        listener = Some(tokio::net::TcpListener::bind(addr).await.unwrap());
                    }
                    continue;
                };
                tokio::select! {
                    () = change.notified() => {
                        if refusing.load(Ordering::SeqCst) {
                            listener = None; // closed: connection refused
                        }
                    }
                    Ok((mut tcp, _)) = l.accept() => {
                        let hang = Arc::clone(&hang);
                        tokio::spawn(async move {
                            let mut buf = [0u8; 2048];
                            let _ = tcp.read(&mut buf).await;
                            if hang.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_secs(5)).await;
                                return;
                            }
                            let _ = tcp
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                                .await;
                        });
                    }
                }
            }
        });
        t
    }

    fn set(&self, mode: Down) {
        match mode {
            Down::Refuse => {
                self.refusing.store(true, Ordering::SeqCst);
                self.change.notify_one();
            }
            Down::Hang => self.hang.store(true, Ordering::SeqCst),
        }
    }

    fn set_up(&self) {
        self.hang.store(false, Ordering::SeqCst);
        self.refusing.store(false, Ordering::SeqCst);
        self.change.notify_one();
    }
}

/// A real Alertmanager on 127.0.0.1 (null receiver, no gossip port).
struct Alertmanager {
    child: Child,
    port: u16,
    client: reqwest::Client,
}

impl Alertmanager {
    async fn start(dir: &Path) -> Self {
        let port = free_addr().port();
        let config = dir.join("am.yml");
        std::fs::write(
            &config,
            "route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n",
        )
        .unwrap();
        let child = Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.join("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {ALERTMANAGER}: {e}"));
        let am = Self {
            child,
            port,
            client: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while am
            .client
            .get(format!("http://127.0.0.1:{port}/-/ready"))
            .send()
            .await
            .map_or(true, |r| !r.status().is_success())
        {
            assert!(Instant::now() < deadline, "Alertmanager not ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        am
    }

    /// Whether the bench check's alert is active.
    async fn firing(&self) -> bool {
        let url = format!("http://127.0.0.1:{}/api/v2/alerts", self.port);
        let Ok(r) = self.client.get(url).send().await else {
            return false;
        };
        let alerts: Vec<Value> = r.json().await.unwrap_or_default();
        alerts.iter().any(|a| {
            a["labels"]["alertname"] == "HealthCheckFailing" && a["labels"]["check"] == "web"
        })
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
