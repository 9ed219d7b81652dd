//! Alerts against Debian's real Alertmanager: a failing check shows up with the right labels,
//! recovery resolves it, a stopped Alertmanager delays nobody and catches up when it is back,
//! and the example routing config in `manifests/alertmanager/` is valid.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::mpsc;
use vigil_proto::{AgentMessage, Outcome, ProbeResult};

const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
const AMTOOL: &str = "/usr/bin/amtool";
const RESEND: Duration = Duration::from_secs(1);

const CHECKS: &str = "\
apiVersion: vigil.dev/v1alpha1
kind: HealthCheck
metadata: {name: web, namespace: shop}
spec:
  severity: critical
  failureThreshold: 2
  runbookUrl: https://runbooks.example/shop/web
  labels: {team: shop}
  probe: {tcp: {address: '127.0.0.1:1'}}
---
apiVersion: vigil.dev/v1alpha1
kind: HealthCheck
metadata: {name: db, namespace: shop}
spec:
  failureThreshold: 1
  probe: {tcp: {address: '127.0.0.1:2'}}
";

/// Waits until `probe` returns `Some`, polling every 10 ms, or panics after `within`.
async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A real Alertmanager on 127.0.0.1 with one null receiver and no gossip port.
struct Am {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Am {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("am.yml"),
            "route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n",
        )
        .unwrap();
        let child = spawn_am(dir.path(), port);
        let mut am = Self { child, port, dir };
        am.wait_ready().await;
        am
    }

    fn url(&self) -> url::Url {
        url::Url::parse(&format!("http://127.0.0.1:{}/", self.port)).unwrap()
    }

    async fn wait_ready(&mut self) {
        let url = format!("http://127.0.0.1:{}/-/ready", self.port);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(&url).await
                && r.status().is_success()
            {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("Alertmanager exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "Alertmanager not ready: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("am.log")).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port (alerts live in memory only: it starts empty).
    async fn restart(&mut self) {
        self.kill();
        self.child = spawn_am(self.dir.path(), self.port);
        self.wait_ready().await;
    }

    /// The active alerts (Alertmanager never lists resolved ones).
    async fn alerts(&self) -> Vec<Value> {
        let url = format!("http://127.0.0.1:{}/api/v2/alerts", self.port);
        match reqwest::get(&url).await {
            Ok(r) => r.json().await.unwrap_or_default(),
            Err(_) => Vec::new(),
        }
    }

    async fn alert(&self, check: &str) -> Option<Value> {
        self.alerts()
            .await
            .into_iter()
            .find(|a| a["labels"]["check"] == check)
    }

    /// How many alerts with this status (`firing` or `resolved`) it has been sent.
    async fn received(&self, status: &str) -> f64 {
        let url = format!("http://127.0.0.1:{}/metrics", self.port);
        let Ok(r) = reqwest::get(&url).await else {
            return 0.0;
        };
        metric_sum(
            &r.text().await.unwrap_or_default(),
            "alertmanager_alerts_received_total{",
            &format!("status=\"{status}\""),
        )
    }
}

impl Drop for Am {
    fn drop(&mut self) {
        self.kill(); // SIGKILL ends a stopped process too
    }
}

fn spawn_am(dir: &Path, port: u16) -> Child {
    let storage = dir.join("data");
    std::fs::create_dir_all(&storage).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("am.log"))
        .unwrap();
    Command::new(ALERTMANAGER)
        .arg(format!("--config.file={}", dir.join("am.yml").display()))
        .arg(format!("--storage.path={}", storage.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {ALERTMANAGER}: {e}"))
}

/// Sum of the samples of lines starting with `prefix` and containing `needle`.
fn metric_sum(text: &str, prefix: &str, needle: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix) && l.contains(needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

mod common;
use common::Fed;

async fn start_federator(alertmanagers: Vec<url::Url>) -> Fed {
    Fed::start(CHECKS, |o| {
        o.alertmanagers = alertmanagers;
        o.alert_resend_interval = RESEND;
    })
    .await
}

trait FedMetrics {
    async fn metric(&self, prefix: &str, needle: &str) -> f64;
}

impl FedMetrics for Fed {
    async fn metric(&self, prefix: &str, needle: &str) -> f64 {
        let text = reqwest::get(format!("http://{}/metrics", self.http))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        metric_sum(&text, prefix, needle)
    }
}

/// A fake agent on one Connect stream.
struct Agent {
    tx: mpsc::Sender<AgentMessage>,
    seq: u64,
}

impl Agent {
    async fn connect(fed: &Fed) -> Self {
        let (tx, mut inbound) = common::open_stream(fed.grpc, "agent-1").await;
        // Read assignments and acks so the federator never waits on us.
        tokio::spawn(async move { while let Ok(Some(_)) = inbound.message().await {} });
        Self { tx, seq: 0 }
    }

    /// Sends one result per `(check, outcome, start)`, in one batch.
    async fn send(&mut self, results: &[(&str, Outcome, i64)]) {
        let results = results
            .iter()
            .map(|&(check, outcome, start)| {
                self.seq += 1;
                let failed = outcome != Outcome::Success;
                ProbeResult {
                    seq: self.seq,
                    check_id: format!("shop/{check}"),
                    target: if check == "web" {
                        "127.0.0.1:1".into()
                    } else {
                        "127.0.0.1:2".into()
                    },
                    start_unix_nanos: start,
                    latency_nanos: 250_000_000,
                    outcome: outcome as i32,
                    reason: if failed {
                        "connection refused".into()
                    } else {
                        String::new()
                    },
                    ..Default::default()
                }
            })
            .collect();
        self.tx.send(common::batch_of(results)).await.unwrap();
    }
}

/// Now in Unix nanoseconds, rounded down to the millisecond (Alertmanager keeps milliseconds).
fn now_ms() -> i64 {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis();
    i64::try_from(ms).unwrap() * 1_000_000
}

fn unix_nanos(rfc3339: &Value) -> i64 {
    let t = humantime::parse_rfc3339_weak(rfc3339.as_str().unwrap()).unwrap();
    i64::try_from(t.duration_since(UNIX_EPOCH).unwrap().as_nanos()).unwrap()
}

#[tokio::test]
async fn failing_check_fires_with_its_labels_and_recovery_resolves_it() {
    let am = Am::start().await;
    let fed = start_federator(vec![am.url()]).await;
    let mut agent = Agent::connect(&fed).await;

    let first_failure = now_ms() - 2_000_000_000;
    agent
        .send(&[("web", Outcome::Failure, first_failure)])
        .await;
    // The second failure reaches failureThreshold: the transition.
    let transition = Instant::now();
    agent.send(&[("web", Outcome::Failure, now_ms())]).await;
    let alert = wait_for("the alert in Alertmanager", Duration::from_secs(10), || {
        am.alert("web")
    })
    .await;
    let visible = transition.elapsed();
    println!("fail -> visible in Alertmanager: {visible:?}");

    let labels: serde_json::Map<String, Value> = alert["labels"].as_object().unwrap().clone();
    let expected = serde_json::json!({
        "alertname": "HealthCheckFailing",
        "check": "web",
        "namespace": "shop",
        "target": "127.0.0.1:1",
        "cluster": "test",
        "severity": "critical",
        "team": "shop",
    });
    assert_eq!(
        Value::Object(labels),
        expected,
        "labels; no node on a cluster-scoped check"
    );
    let annotations = &alert["annotations"];
    assert_eq!(
        annotations["summary"],
        "HealthCheck shop/web is failing for 127.0.0.1:1 on cluster test"
    );
    assert_eq!(
        annotations["description"],
        "The last run of shop/web against 127.0.0.1:1 on cluster test failed after 0.250s: connection refused"
    );
    assert_eq!(
        annotations["runbook_url"],
        "https://runbooks.example/shop/web"
    );
    assert_eq!(
        alert["generatorURL"],
        format!("http://{}/?check=shop/web", fed.http)
    );
    assert_eq!(
        unix_nanos(&alert["startsAt"]),
        first_failure,
        "startsAt is the first failure of the run"
    );
    let ends_at = unix_nanos(&alert["endsAt"]);
    assert!(
        ends_at > now_ms(),
        "a firing alert ends in the future: {}",
        alert["endsAt"]
    );
    assert_eq!(fed.metric("vigil_alerts_firing", "").await, 1.0);

    // Resent every interval while firing.
    let firing_before = am.received("firing").await;
    wait_for("two resends", Duration::from_secs(10), || async {
        (am.received("firing").await >= firing_before + 2.0).then_some(())
    })
    .await;

    // Recovery: the same labels with endsAt = the recovery time, resent after that.
    let recovered_at = now_ms();
    let recovery = Instant::now();
    agent.send(&[("web", Outcome::Success, recovered_at)]).await;
    wait_for("the resolved alert", Duration::from_secs(10), || async {
        (am.received("resolved").await >= 1.0).then_some(())
    })
    .await;
    assert!(
        am.alert("web").await.is_none(),
        "a resolved alert is no longer listed"
    );
    let resolved = recovery.elapsed();
    println!("recover -> resolved in Alertmanager: {resolved:?}");
    // A firing alert would stay listed until its endsAt, at least 3 resend intervals away.
    assert!(resolved < 3 * RESEND, "resolved by endsAt, not by expiry");
    assert_eq!(fed.metric("vigil_alerts_firing", "").await, 0.0);
    wait_for(
        "the resolved alert resent",
        Duration::from_secs(10),
        || async { (am.received("resolved").await >= 2.0).then_some(()) },
    )
    .await;
    let sent = fed
        .metric("vigil_alert_notifications_total{", "result=\"sent\"")
        .await;
    assert!(sent >= 4.0, "sent {sent}");
}

#[tokio::test]
async fn stopped_alertmanager_delays_nobody_and_catches_up_when_back() {
    let a = Am::start().await;
    let mut b = Am::start().await;
    let fed = start_federator(vec![a.url(), b.url()]).await;
    let mut agent = Agent::connect(&fed).await;

    // B hangs: its POSTs time out, A must not wait for them.
    b.signal("-STOP");
    let start = now_ms();
    let transition = Instant::now();
    agent
        .send(&[
            ("web", Outcome::Failure, start),
            ("web", Outcome::Failure, start + 1_000_000),
        ])
        .await;
    wait_for("web firing in A", Duration::from_secs(5), || a.alert("web")).await;
    println!(
        "fail -> visible in A while B is stopped: {:?}",
        transition.elapsed()
    );

    // B dies; meanwhile db fails and recovers.
    b.kill();
    agent.send(&[("db", Outcome::Failure, now_ms())]).await;
    wait_for("db firing in A", Duration::from_secs(5), || a.alert("db")).await;
    agent.send(&[("db", Outcome::Success, now_ms())]).await;
    wait_for("db resolved in A", Duration::from_secs(5), || async {
        (a.received("resolved").await >= 1.0).then_some(())
    })
    .await;
    assert!(a.alert("db").await.is_none());
    let b_name = b.url().as_str().trim_end_matches('/').to_owned();
    let failed = fed
        .metric(
            "vigil_alert_notifications_total{",
            &format!("alertmanager=\"{b_name}\",result=\"failed\""),
        )
        .await;
    assert!(failed >= 1.0, "B's failures are counted");

    // B comes back empty; it gets the firing web alert and the resolved db alert.
    b.restart().await;
    let back = Instant::now();
    let web = wait_for("web firing in B", Duration::from_secs(20), || {
        b.alert("web")
    })
    .await;
    assert_eq!(web["labels"]["severity"], "critical");
    assert_eq!(unix_nanos(&web["startsAt"]), start);
    wait_for("db resolved in B", Duration::from_secs(20), || async {
        (b.received("resolved").await >= 1.0).then_some(())
    })
    .await;
    assert!(b.alert("db").await.is_none());
    println!("B caught up {:?} after it was back", back.elapsed());
    assert!(a.alert("web").await.is_some(), "A still has web firing");
}

#[test]
fn example_routing_config_is_valid() {
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../manifests/alertmanager/alertmanager.yml");
    let out = Command::new(AMTOOL)
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap_or_else(|e| panic!("running {AMTOOL}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "amtool check-config failed:\n{text}");
    assert!(text.contains("SUCCESS"), "{text}");
    assert!(text.contains("1 inhibit rules"), "{text}");
}
