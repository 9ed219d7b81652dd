//! Probe benchmark (not a test; CI does not run it). Prints its figures.
//!
//! (a) 1,000 loopback HTTP targets, each probed once a second, first by vigil-agent (driven by a
//!     vigil-federator) and then by Debian's prometheus-blackbox-exporter (driven through /probe
//!     like Prometheus would); reports each prober's CPU seconds per 10,000 probes and the ratio.
//! (b) 10,000 checks at a 10 s interval on one agent: p50/p99 start lateness, RSS, CPU share.
//!
//! Run: `cargo build --release --workspace && target/release/probe-bench [SECONDS]`
//! (SECONDS is each measuring window, default 20). CPU is read from /proc/<pid>/stat, so only the
//! prober process is counted, not the target server or the driver.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vigil_e2e::{Proc, bin, free_addr, wait_for};

const TARGETS: usize = 1_000;
const WIDE_CHECKS: usize = 10_000;

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    // Optional second argument: "a" or "b" runs one part only.
    let part = std::env::args().nth(2).unwrap_or_default();
    let window = Duration::from_secs(seconds);
    let dir = tempfile::tempdir().expect("temp dir");
    let target = start_target_server().await;
    println!(
        "probe-bench: targets on http://{target}/t/<n>, window {seconds}s, {} cores",
        cores()
    );

    if part != "b" {
        part_a(dir.path(), target, window).await;
    }
    if part != "a" {
        part_b(dir.path(), target, window).await;
    }
}

async fn part_a(dir: &Path, target: std::net::SocketAddr, window: Duration) {
    let vigil = vigil_round(dir, target, TARGETS, Duration::from_secs(1), window, "a").await;
    let blackbox = blackbox_round(dir, target, window).await;
    let per10k = |r: &Round| r.cpu_seconds / r.probes as f64 * 10_000.0;
    println!();
    println!("(a) {TARGETS} HTTP targets at 1/s, same machine, same run");
    println!(
        "    vigil-agent        {:>8} probes  {:>6.2} CPU s  {:>6.3} CPU s per 10k probes  (federator: {:.2} CPU s)",
        vigil.probes,
        vigil.cpu_seconds,
        per10k(&vigil),
        vigil.other_cpu_seconds
    );
    println!(
        "    blackbox_exporter  {:>8} probes  {:>6.2} CPU s  {:>6.3} CPU s per 10k probes",
        blackbox.probes,
        blackbox.cpu_seconds,
        per10k(&blackbox)
    );
    println!(
        "    ratio vigil/blackbox: {:.3} (target: at most 0.333)",
        per10k(&vigil) / per10k(&blackbox)
    );
}

async fn part_b(dir: &Path, target: std::net::SocketAddr, window: Duration) {
    let wide = vigil_round(
        dir,
        target,
        WIDE_CHECKS,
        Duration::from_secs(10),
        window.max(Duration::from_secs(30)),
        "b",
    )
    .await;
    println!();
    println!("(b) {WIDE_CHECKS} checks at 10s on one agent");
    println!(
        "    start lateness p50 {:.3} ms, p99 {:.3} ms (target p99 < 5 ms)",
        wide.lateness_p50 * 1e3,
        wide.lateness_p99 * 1e3
    );
    println!(
        "    RSS {:.1} MiB (max seen; target < 50 MiB), CPU {:.1} % of one core (target < 25 %), {:.0} probes/s",
        wide.max_rss_bytes as f64 / (1024.0 * 1024.0),
        wide.cpu_seconds / wide.seconds * 100.0,
        wide.probes as f64 / wide.seconds
    );
}

#[derive(Default)]
struct Round {
    probes: u64,
    cpu_seconds: f64,
    other_cpu_seconds: f64,
    seconds: f64,
    lateness_p50: f64,
    lateness_p99: f64,
    max_rss_bytes: u64,
}

async fn start_target_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new().route("/t/{n}", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("target server") });
    addr
}

/// Runs `checks` HTTP checks at `interval` through a real federator and agent and measures the
/// agent over `window` once a first full cycle has completed.
async fn vigil_round(
    dir: &Path,
    target: std::net::SocketAddr,
    checks: usize,
    interval: Duration,
    window: Duration,
    tag: &str,
) -> Round {
    let checks_dir = dir.join(format!("checks-{tag}"));
    std::fs::create_dir_all(&checks_dir).expect("checks dir");
    let mut yaml = String::with_capacity(checks * 260);
    for n in 0..checks {
        yaml.push_str(&format!(
            "---\napiVersion: vigil.dev/v1alpha1\nkind: HealthCheck\nmetadata: {{name: t{n}, namespace: bench}}\nspec:\n  interval: {}ms\n  timeout: 500ms\n  probe: {{http: {{url: 'http://{target}/t/{n}'}}}}\n",
            interval.as_millis()
        ));
    }
    std::fs::write(checks_dir.join("bench.yaml"), yaml).expect("write checks");
    let grpc = free_addr();
    let fed_http = free_addr();
    let agent_http = free_addr();
    let federator = Proc::start(
        &format!("bench-federator-{tag}"),
        &bin("vigil-federator"),
        &[
            "serve".into(),
            "--checks".into(),
            checks_dir.display().to_string(),
            "--listen".into(),
            fed_http.to_string(),
            "--grpc-listen".into(),
            grpc.to_string(),
            "--results".into(),
            dir.join(format!("results-{tag}.jsonl"))
                .display()
                .to_string(),
        ],
        dir,
    );
    let agent = Proc::start(
        &format!("bench-agent-{tag}"),
        &bin("vigil-agent"),
        &[
            "--federator".into(),
            format!("http://{grpc}"),
            "--node".into(),
            "bench".into(),
            "--listen".into(),
            agent_http.to_string(),
        ],
        dir,
    );
    let client = reqwest::Client::new();
    let metrics_url = format!("http://{agent_http}/metrics");
    // Warm up: two cycles of every check, so every phase slot has fired. Watched on the
    // federator's small /metrics: scraping the agent's (per-check series) every 50 ms would
    // itself load the agent.
    let fed_metrics = format!("http://{fed_http}/metrics");
    wait_for("a first full cycle", Duration::from_secs(120), || async {
        let m = scrape(&client, &fed_metrics).await?;
        (sum(&m, "vigil_results_received_total") >= 2.0 * checks as f64).then_some(())
    })
    .await;
    let m0 = scrape(&client, &metrics_url).await.expect("metrics");
    let (a0, f0) = (cpu_seconds(&agent), cpu_seconds(&federator));
    let t0 = Instant::now();
    let mut max_rss = 0;
    while t0.elapsed() < window {
        max_rss = max_rss.max(rss_bytes(&agent));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let seconds = t0.elapsed().as_secs_f64();
    let m1 = scrape(&client, &metrics_url).await.expect("metrics");
    let (a1, f1) = (cpu_seconds(&agent), cpu_seconds(&federator));
    let buckets =
        |m: &Vec<(String, f64)>| histogram(m, "vigil_probe_start_lateness_seconds_bucket");
    let (b0, b1) = (buckets(&m0), buckets(&m1));
    let delta: Vec<(f64, f64)> = b1
        .iter()
        .map(|(le, c)| (f64::from_bits(*le), c - b0.get(le).copied().unwrap_or(0.0)))
        .collect();
    Round {
        probes: (sum(&m1, "vigil_agent_results_total") - sum(&m0, "vigil_agent_results_total"))
            as u64,
        cpu_seconds: a1 - a0,
        other_cpu_seconds: f1 - f0,
        seconds,
        lateness_p50: quantile(&delta, 0.50),
        lateness_p99: quantile(&delta, 0.99),
        max_rss_bytes: max_rss,
    }
}

/// Drives blackbox_exporter's /probe for every target once a second (64 in flight at most).
async fn blackbox_round(dir: &Path, target: std::net::SocketAddr, window: Duration) -> Round {
    let config = dir.join("blackbox.yml");
    std::fs::write(&config, "modules:\n  http_2xx:\n    prober: http\n    timeout: 5s\n    http:\n      preferred_ip_protocol: ip4\n").expect("write config");
    let listen = free_addr();
    let exporter = Proc::start(
        "bench-blackbox",
        Path::new("/usr/bin/prometheus-blackbox-exporter"),
        &[
            format!("--config.file={}", config.display()),
            format!("--web.listen-address={listen}"),
        ],
        dir,
    );
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("client");
    wait_for(
        "blackbox_exporter to listen",
        Duration::from_secs(20),
        || async {
            client
                .get(format!("http://{listen}/metrics"))
                .send()
                .await
                .ok()
                .map(|_| ())
        },
    )
    .await;
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let permits = Arc::new(tokio::sync::Semaphore::new(64));
    let driver = {
        let (client, done, failed, permits) = (
            client.clone(),
            Arc::clone(&done),
            Arc::clone(&failed),
            Arc::clone(&permits),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                for n in 0..TARGETS {
                    let permit = Arc::clone(&permits)
                        .acquire_owned()
                        .await
                        .expect("semaphore");
                    let url = format!(
                        "http://{listen}/probe?module=http_2xx&target=http://{target}/t/{n}"
                    );
                    let (client, done, failed) =
                        (client.clone(), Arc::clone(&done), Arc::clone(&failed));
                    tokio::spawn(async move {
                        let ok = match client.get(url).send().await {
                            Ok(r) => r.text().await.is_ok_and(|t| t.contains("probe_success 1")),
                            Err(_) => false,
                        };
                        if ok { &done } else { &failed }.fetch_add(1, Ordering::Relaxed);
                        drop(permit);
                    });
                }
            }
        })
    };
    // Warm up two cycles, then measure.
    wait_for("blackbox warm-up", Duration::from_secs(60), || async {
        (done.load(Ordering::Relaxed) >= 2 * TARGETS as u64).then_some(())
    })
    .await;
    let (c0, n0) = (cpu_seconds(&exporter), done.load(Ordering::Relaxed));
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let (c1, n1) = (cpu_seconds(&exporter), done.load(Ordering::Relaxed));
    driver.abort();
    let failures = failed.load(Ordering::Relaxed);
    if failures > 0 {
        println!("    note: {failures} blackbox probes did not report probe_success 1");
    }
    Round {
        probes: n1 - n0,
        cpu_seconds: c1 - c0,
        seconds: t0.elapsed().as_secs_f64(),
        ..Round::default()
    }
}

/// User + system CPU seconds of a process (from /proc; USER_HZ is 100 on Linux).
fn cpu_seconds(p: &Proc) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", p.child.id())).unwrap_or_default();
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After "pid (comm)": state is field 3, utime 14, stime 15 (1-based over the whole line).
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn rss_bytes(p: &Proc) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", p.child.id())).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Every sample line of a Prometheus text page as (series, value).
async fn scrape(client: &reqwest::Client, url: &str) -> Option<Vec<(String, f64)>> {
    let text = client.get(url).send().await.ok()?.text().await.ok()?;
    Some(
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                Some((series.to_owned(), value.parse().ok()?))
            })
            .collect(),
    )
}

fn sum(samples: &[(String, f64)], name: &str) -> f64 {
    samples
        .iter()
        .filter(|(s, _)| s == name || s.starts_with(&format!("{name}{{")))
        .map(|(_, v)| v)
        .sum()
}

/// Cumulative bucket counts by upper bound (keyed by the f64's bits for exact lookup).
fn histogram(samples: &[(String, f64)], bucket: &str) -> BTreeMap<u64, f64> {
    samples
        .iter()
        .filter(|(s, _)| s.starts_with(bucket))
        .filter_map(|(s, v)| {
            let le = s.split("le=\"").nth(1)?.split('"').next()?;
            let le: f64 = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le.to_bits(), *v))
        })
        .collect()
}

/// Quantile from cumulative buckets by linear interpolation inside the bucket, like
/// Prometheus' histogram_quantile.
fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let mut b = buckets.to_vec();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    let Some(&(_, total)) = b.last() else {
        return f64::NAN;
    };
    if total <= 0.0 {
        return f64::NAN;
    }
    let rank = q * total;
    let (mut lo, mut below) = (0.0, 0.0);
    for (le, count) in b {
        if count >= rank {
            if le.is_infinite() {
                return lo;
            }
            let inside = count - below;
            return if inside > 0.0 {
                lo + (le - lo) * (rank - below) / inside
            } else {
                le
            };
        }
        (lo, below) = (le, count);
    }
    lo
}
