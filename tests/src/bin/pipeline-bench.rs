//! Results pipeline benchmark, side by side in one run against one real Kafka-protocol broker
//! (tansu on 127.0.0.1):
//!   (a) a bare rdkafka producer (same settings as the federator's sink) writing records of the
//!       same size and shape as fast as it can;
//!   (b) the real `vigil-federator serve --kafka-brokers ...` fed by 100 simulated agents over
//!       real gRPC streams, counting only results the federator acknowledged (= Kafka confirmed);
//!   (a) and (b) alternate for three rounds (the federator idles through (a)), and their ratio
//!   is given per round and as the median, since this shared 2-core machine has slow spells;
//!   (c) send-to-ack latency at a steady 10,000 results/s;
//!   then, if asked, a soak: the same 100 agents at a steady rate for some minutes, with the
//!   federator's RSS each minute; and the federator's peak RSS throughout.
//!
//! `cargo build --release --workspace && target/release/pipeline-bench [SECONDS] [SOAK_MINUTES]
//! [SOAK_RATE]` (the soak runs at 50,000 results/s unless told)
//! (or `cargo build --release -p vigil-federator --bin vigil-federator -p vigil-e2e --bin
//! pipeline-bench`). `VIGIL_KAFKA_OPTIONS=key=value,...` changes the producer settings of both
//! sides alike.

use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use vigil_e2e::kafka::Tansu;
use vigil_e2e::loadgen::{self, LoadConfig};
use vigil_e2e::{Proc, bin, free_addr, serve_args};

const AGENTS: usize = 100;
/// Rounds of (a) then (b).
const ROUNDS: usize = 3;

/// The processes whose CPU time the phases read.
struct Pids {
    bench: u32,
    broker: u32,
    federator: u32,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let soak_minutes: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    let soak_rate: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(50_000.0);
    let duration = Duration::from_secs(seconds);
    let dir = tempfile::tempdir().expect("tempdir");
    let tansu = Tansu::start(dir.path());
    let brokers = tansu.brokers();
    create_topics(&brokers, &["bench-bare", "healthcheck-results"]).await;
    println!(
        "broker: tansu (memory engine) at {brokers}; {ROUNDS} rounds of (a) and (b), {seconds}s per phase, {AGENTS} agents"
    );

    let tansu_pid = tansu.proc.child.id();
    let fed = start_federator(dir.path(), &brokers).await;
    let fed_pid = fed.child.child.id();
    let rss = RssSampler::start(fed_pid);
    let pids = Pids {
        bench: std::process::id(),
        broker: tansu_pid,
        federator: fed_pid,
    };
    // The phases alternate, so a slow spell of this shared machine falls on both sides.
    let mut rounds = Vec::new();
    for round in 1..=ROUNDS {
        println!("round {round} of {ROUNDS}");
        let bare = bare_phase(&brokers, duration, &pids).await;
        let full = full_phase(&fed_url(&fed), duration, &pids, round).await;
        println!("    ratio (b)/(a): {:.2}", full / bare);
        rounds.push((bare, full));
    }
    let mut ratios: Vec<f64> = rounds.iter().map(|(a, b)| b / a).collect();
    ratios.sort_by(f64::total_cmp);
    let (bare, full) = rounds
        .iter()
        .fold((0.0, 0.0), |(a, b), (ra, rb)| (a + ra, b + rb));
    println!(
        "ratio (b)/(a) over {ROUNDS} rounds: median {:.2} (lowest {:.2}, highest {:.2}); of the mean rates {:.0}/s and {:.0}/s: {:.2}",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
        bare / ROUNDS as f64,
        full / ROUNDS as f64,
        full / bare
    );

    let before = delivery_histogram(&metrics_text(fed.http).await);
    let steady = loadgen::run(load(&fed_url(&fed), Some(10_000.0), duration, "steady")).await;
    assert!(steady.errors.is_empty(), "load errors: {:?}", steady.errors);
    println!(
        "(c) at 10,000 results/s: {:.0}/s acknowledged; send-to-ack (= Kafka delivery) p50 {:?}, p99 {:?}, max {:?}",
        steady.acked_per_second(),
        steady.latency_quantile(0.5),
        steady.latency_quantile(0.99),
        steady.latency_quantile(1.0)
    );
    println!(
        "    {}",
        slow_deliveries(&before, &delivery_histogram(&metrics_text(fed.http).await))
    );
    if soak_minutes > 0 {
        soak(&fed, &rss, tansu_pid, soak_minutes, soak_rate).await;
    }
    println!("    federator peak RSS: {:.0} MiB", rss.peak_mib());
    drop(fed);
    drop(tansu);
}

/// The soak: the same 100 agents stream at `rate` for `minutes`, as a cluster's agents stay
/// connected; each minute prints what the federator acknowledged, its RSS (now and the
/// minute's peak), the broker's, and how many Kafka deliveries were slow.
async fn soak(fed: &Fed, rss: &RssSampler, broker_pid: u32, minutes: u64, rate: f64) {
    let load = tokio::spawn(loadgen::run(load(
        &fed_url(fed),
        Some(rate),
        Duration::from_secs(minutes * 60),
        "soak",
    )));
    rss.minute_peak_mib(); // the soak's minutes only
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.tick().await;
    let text = metrics_text(fed.http).await;
    let (mut acked, mut deliveries) = (acked_total(&text), delivery_histogram(&text));
    for minute in 1..=minutes {
        tick.tick().await;
        let text = metrics_text(fed.http).await;
        let (acked_now, deliveries_now) = (acked_total(&text), delivery_histogram(&text));
        // The minute's own peak and the broker's size: a pause of the broker shows as slow
        // deliveries, and the federator then holds what agents have sent (up to their
        // windows) until it passes.
        println!(
            "    soak minute {minute}: {:.0} results/s acknowledged, federator RSS {:.0} MiB (peak in the minute {:.0} MiB), broker RSS {:.0} MiB",
            (acked_now - acked) as f64 / 60.0,
            rss.current_mib(),
            rss.minute_peak_mib(),
            rss_kib(broker_pid) as f64 / 1024.0
        );
        println!("        {}", slow_deliveries(&deliveries, &deliveries_now));
        (acked, deliveries) = (acked_now, deliveries_now);
    }
    let r = load.await.expect("the soak's load generator");
    assert!(r.errors.is_empty(), "load errors: {:?}", r.errors);
    println!(
        "    soak: {:.0} results/s acknowledged over {minutes} minutes; send-to-ack p50 {:?}, p99 {:?}, max {:?}",
        r.acked_per_second(),
        r.latency_quantile(0.5),
        r.latency_quantile(0.99),
        r.latency_quantile(1.0)
    );
}

/// The federator's `/metrics` text (empty if it cannot be read).
async fn metrics_text(http: std::net::SocketAddr) -> String {
    match reqwest::get(format!("http://{http}/metrics")).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The results the federator has acknowledged to agents, over all agents.
fn acked_total(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("vigil_results_acked_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// Phase (a): the bare producer's records/s, printed with the CPU it took.
async fn bare_phase(brokers: &str, duration: Duration, pids: &Pids) -> f64 {
    let (bench_cpu, broker_cpu) = (cpu_seconds(pids.bench), cpu_seconds(pids.broker));
    let machine = machine_ticks();
    let (bare, bare_records) = bare_producer(brokers, duration).await;
    println!("(a) bare rdkafka producer: {bare:>9.0} records/s");
    println!(
        "    CPU per record: producer {:.1} µs, broker {:.1} µs; {}",
        per_record(cpu_seconds(pids.bench) - bench_cpu, bare_records),
        per_record(cpu_seconds(pids.broker) - broker_cpu, bare_records),
        machine_use(machine, machine_ticks())
    );
    bare
}

/// Phase (b): the federator's results/s from 100 agents at full speed, acknowledged after
/// Kafka delivery, printed with the CPU each process took.
async fn full_phase(url: &str, duration: Duration, pids: &Pids, round: usize) -> f64 {
    let watched = [pids.federator, pids.bench, pids.broker];
    let cpu_before = watched.map(cpu_seconds);
    let machine = machine_ticks();
    let full = loadgen::run(load(url, None, duration, &format!("full{round}"))).await;
    let machine = machine_use(machine, machine_ticks());
    let cpu_used: Vec<f64> = watched
        .iter()
        .zip(cpu_before)
        .map(|(&pid, before)| cpu_seconds(pid) - before)
        .collect();
    assert!(full.errors.is_empty(), "load errors: {:?}", full.errors);
    let rate = full.acked_per_second();
    println!(
        "(b) federator end to end: {rate:>9.0} results/s acknowledged after Kafka delivery ({} of {} sent)",
        full.acked, full.sent
    );
    println!(
        "    CPU per result: federator {:.1} µs, load generator {:.1} µs, broker {:.1} µs; {machine}",
        per_record(cpu_used[0], full.acked),
        per_record(cpu_used[1], full.acked),
        per_record(cpu_used[2], full.acked)
    );
    println!(
        "    ack latency at full load: p50 {:?}, p99 {:?}",
        full.latency_quantile(0.5),
        full.latency_quantile(0.99)
    );
    rate
}

fn fed_url(fed: &Fed) -> String {
    format!("http://{}", fed.grpc)
}

fn load(federator: &str, rate: Option<f64>, duration: Duration, prefix: &str) -> LoadConfig {
    LoadConfig {
        federator: federator.to_owned(),
        agents: AGENTS,
        rate,
        duration,
        batch: 100,
        window: 2_000,
        check_id: "bench/load".into(),
        agent_prefix: format!("bench-{prefix}"),
    }
}

struct Fed {
    child: Proc,
    grpc: std::net::SocketAddr,
    http: std::net::SocketAddr,
}

impl std::ops::Deref for Fed {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.child
    }
}

async fn start_federator(dir: &std::path::Path, brokers: &str) -> Fed {
    let checks = dir.join("checks");
    std::fs::create_dir_all(&checks).expect("checks dir");
    std::fs::write(
        checks.join("bench.yaml"),
        "apiVersion: vigil.dev/v1alpha1\nkind: HealthCheck\nmetadata: {name: load, namespace: bench}\nspec:\n  interval: 1h\n  probe: {tcp: {address: '127.0.0.1:9'}}\n",
    )
    .expect("check file");
    let http = free_addr();
    let grpc = free_addr();
    let child = Proc::start(
        "vigil-federator",
        &bin("vigil-federator"),
        &[
            serve_args(&checks, http, grpc),
            vec![
                "--no-results-file".into(),
                "--kafka-brokers".into(),
                brokers.to_owned(),
            ],
        ]
        .concat(),
        dir,
    );
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = client
            .get(format!("http://{http}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "federator not ready in 60s:\n{}",
            child.log_text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Fed { child, grpc, http }
}

async fn create_topics(brokers: &str, topics: &[&str]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, 6, TopicReplication::Fixed(1)))
        .collect();
    let made = admin
        .create_topics(new.iter(), &AdminOptions::new())
        .await
        .expect("create topics");
    for r in made {
        if let Err((t, e)) = r {
            panic!("creating topic {t}: {e:?}");
        }
    }
}

/// Records per second a bare producer gets confirmed, and how many it sent in all; same
/// settings, key, headers and value size as the federator's Kafka sink.
async fn bare_producer(brokers: &str, duration: Duration) -> (f64, u64) {
    // The federator's own producer settings, so the two differ only in what surrounds them,
    // including any VIGIL_KAFKA_OPTIONS override (which the federator reads from the same
    // environment).
    let mut options = vigil_federator::sink::kafka::KafkaOptions::new(brokers);
    if let Ok(list) = std::env::var("VIGIL_KAFKA_OPTIONS") {
        for option in list.split(',').filter(|o| !o.trim().is_empty()) {
            let (key, value) = vigil_federator::sink::kafka::config::parse_option(option)
                .expect("VIGIL_KAFKA_OPTIONS holds key=value pairs");
            options.librdkafka.insert(key, value);
        }
    }
    let producer: FutureProducer = options
        .client_config()
        .expect("producer settings")
        .create()
        .expect("producer");
    let value = sample_value();
    let started = Instant::now();
    let mut pending = FuturesUnordered::new();
    let mut delivered = 0u64;
    let mut seq = 0u64;
    while started.elapsed() < duration {
        while pending.len() < 100_000 {
            seq += 1;
            let key = format!(
                "bench/bench/load/http://10.0.{}.{}:8080/healthz",
                seq % 7,
                seq % 50
            );
            let seq_text = seq.to_string();
            let headers = OwnedHeaders::new_with_capacity(6)
                .insert(Header {
                    key: "schema",
                    value: Some("1"),
                })
                .insert(Header {
                    key: "content-type",
                    value: Some("application/json"),
                })
                .insert(Header {
                    key: "cluster",
                    value: Some("bench"),
                })
                .insert(Header {
                    key: "node",
                    value: Some("load-node-1"),
                })
                .insert(Header {
                    key: "agent",
                    value: Some("bench-bare-1"),
                })
                .insert(Header {
                    key: "seq",
                    value: Some(seq_text.as_str()),
                });
            let record = FutureRecord::to("bench-bare")
                .key(&key)
                .payload(&value)
                .headers(headers);
            match producer.send_result(record) {
                Ok(f) => pending.push(f),
                Err(_) => break,
            }
        }
        if let Some(Ok(Ok(_))) = pending.next().await {
            delivered += 1;
        }
    }
    let elapsed = started.elapsed();
    while pending.next().await.is_some() {}
    (delivered as f64 / elapsed.as_secs_f64(), seq)
}

/// The federator's `vigil_kafka_delivery_seconds` buckets (upper bound, cumulative count).
fn delivery_histogram(metrics: &str) -> Vec<(String, u64)> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("vigil_kafka_delivery_seconds_bucket{le=\""))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            Some((le.to_owned(), count.trim().parse().ok()?))
        })
        .collect()
}

/// How many of the records Kafka confirmed between two readings took over 100 ms from their
/// group commit to the broker's confirmation: slow acks with slow deliveries are the broker's.
fn slow_deliveries(before: &[(String, u64)], after: &[(String, u64)]) -> String {
    let count =
        |v: &[(String, u64)], le: &str| v.iter().find(|(l, _)| l == le).map_or(0, |(_, c)| *c);
    let total = count(after, "+Inf").saturating_sub(count(before, "+Inf"));
    let within = count(after, "0.1").saturating_sub(count(before, "0.1"));
    format!(
        "the federator's Kafka deliveries (group commit to broker confirmation) over 100 ms: {} of {total} records",
        total - within
    )
}

/// A JSON value of the size and shape the federator writes for a load-generator result.
fn sample_value() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schema": 1, "agent": "bench-full-17", "seq": 123456, "check": "bench/load",
        "target": "http://10.0.3.17:8080/healthz", "cluster": "local", "node": "load-node-17",
        "scope": "cluster", "start": "2026-11-22T19:00:00.123456789Z",
        "start_unix_nanos": 1_795_460_400_123_456_789_i64, "latency_seconds": 0.00125,
        "outcome": "SUCCESS", "attempt": 1, "details": {"status_code": "200"},
        "values": {"probe_http_duration_seconds": 0.00125}
    }))
    .expect("json")
}

/// Samples a process's resident memory every 200 ms.
struct RssSampler {
    pid: u32,
    peak: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The peak since `minute_peak_mib` last read it.
    recent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let recent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let task = {
            let (peak, recent) = (std::sync::Arc::clone(&peak), std::sync::Arc::clone(&recent));
            tokio::spawn(async move {
                loop {
                    let now = rss_kib(pid);
                    peak.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
                    recent.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        Self {
            pid,
            peak,
            recent,
            task,
        }
    }

    fn minute_peak_mib(&self) -> f64 {
        self.recent.swap(0, std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0
    }

    fn peak_mib(&self) -> f64 {
        self.peak.load(std::sync::atomic::Ordering::Relaxed) as f64 / 1024.0
    }

    fn current_mib(&self) -> f64 {
        rss_kib(self.pid) as f64 / 1024.0
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// CPU time (user + system) a process has used so far, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which may hold spaces) close with ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of the whole line, in clock ticks (USER_HZ, 100).
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// The machine's CPU time so far, in ticks: (all, idle, stolen by the hypervisor), from the
/// first line of /proc/stat. The same code reads differently on a busy host; steal shows it.
fn machine_ticks() -> [u64; 3] {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .map(|t| t.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| ticks.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal (guest time is counted in user).
    [ticks.iter().take(8).sum(), at(3) + at(4), at(7)]
}

/// "busy B%, stolen S%" of the machine between two `machine_ticks`.
fn machine_use(before: [u64; 3], after: [u64; 3]) -> String {
    let [all, idle, steal] = [0, 1, 2].map(|i| after[i].saturating_sub(before[i]) as f64);
    let all = all.max(1.0);
    format!(
        "machine busy {:.0}%, stolen by the host {:.1}%",
        100.0 * (all - idle - steal) / all,
        100.0 * steal / all
    )
}

fn per_record(cpu_seconds: f64, records: u64) -> f64 {
    cpu_seconds * 1e6 / records.max(1) as f64
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}
