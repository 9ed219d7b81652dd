//! Global federator at fleet scale: the real `vigil-federator serve` takes links from simulated
//! cluster federators (real gRPC cluster links: Hello, ClusterState, batches, acks), by default
//! 50 clusters × 100 nodes × 200 EveryNode checks = 1,000,000 check states, and this prints:
//!   - how fast the links were taken in, and the global's RSS after (and its peak);
//!   - `/api/v1/clusters`, `/api/v1/matrix` and one check's detail: latency p50/p99 and size;
//!   - the web view's load in headless Chromium until the whole matrix is drawn.
//!
//! `cargo build --release -p vigil-federator -p vigil-e2e --bin federation-bench &&
//!  target/release/federation-bench [CLUSTERS] [NODES] [CHECKS] [ROUNDS]`
//! Targets (issue 8): RSS < 1 GiB, /api/v1/clusters < 50 ms, page < 1 s.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use vigil_e2e::{Proc, bin, free_addr, serve_args, wait_for};
use vigil_proto::federator_client::FederatorClient;
use vigil_proto::{
    AgentMessage, CheckSpec, ClusterAgent, ClusterCheck, ClusterState, Hello, Outcome, ProbeResult,
    ResultBatch, TcpProbe, agent_message, check_spec, federator_message,
};

const BATCH: usize = 2_000;
/// How many checks fail, on how many nodes, in how many clusters.
const FAILING: (usize, usize, usize) = (3, 3, 2);

#[derive(Clone, Copy)]
struct Shape {
    clusters: usize,
    nodes: usize,
    checks: usize,
    rounds: usize,
}

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers: CLUSTERS NODES CHECKS ROUNDS"))
        .collect();
    let shape = Shape {
        clusters: args.first().copied().unwrap_or(50),
        nodes: args.get(1).copied().unwrap_or(100),
        checks: args.get(2).copied().unwrap_or(200),
        rounds: args.get(3).copied().unwrap_or(2),
    };
    let states = shape.clusters * shape.nodes * shape.checks;
    println!(
        "global federator: {} clusters × {} nodes × {} EveryNode checks = {states} check states, {} rounds of results",
        shape.clusters, shape.nodes, shape.checks, shape.rounds
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let checks = dir.path().join("checks");
    std::fs::create_dir(&checks).unwrap();
    let (http, grpc) = (free_addr(), free_addr());
    let global = Proc::start(
        "global",
        &bin("vigil-federator"),
        &[
            serve_args(&checks, http, grpc),
            vec![
                "--results".into(),
                dir.path().join("global.jsonl").display().to_string(),
                "--cluster-silent-after".into(),
                "1h".into(),
            ],
        ]
        .concat(),
        dir.path(),
    );
    let pid = global.child.id();
    let client = reqwest::Client::new();
    wait_for("the global federator", Duration::from_secs(30), || async {
        client
            .get(format!("http://{http}/healthz"))
            .send()
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    let rss_idle = rss_kib(pid, "VmRSS");

    // Every cluster links and sends its rounds; links stay open to the end.
    let started = Instant::now();
    let (done_tx, mut done_rx) = mpsc::channel::<usize>(shape.clusters);
    let mut links = Vec::new();
    let url = format!("http://{grpc}");
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(4));
    for c in 0..shape.clusters {
        let (url, done_tx, gate) = (url.clone(), done_tx.clone(), gate.clone());
        links.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await.expect("gate");
            let hold = cluster_link(&url, c, shape).await;
            drop(permit);
            done_tx.send(c).await.expect("report");
            hold
        }));
    }
    for _ in 0..shape.clusters {
        done_rx.recv().await.expect("a cluster finished");
    }
    let took = started.elapsed();
    let results = states * shape.rounds;
    println!(
        "load: {results} results over {} links acknowledged in {:.1}s ({:.0} results/s)",
        shape.clusters,
        took.as_secs_f64(),
        results as f64 / took.as_secs_f64()
    );
    let rss = rss_kib(pid, "VmRSS");
    let hwm = rss_kib(pid, "VmHWM");
    println!(
        "global RSS: {:.0} MiB idle, {:.0} MiB with the fleet loaded (peak {:.0} MiB; target < 1024 MiB) = {:.0} bytes per check state",
        rss_idle / 1024.0,
        rss / 1024.0,
        hwm / 1024.0,
        (rss - rss_idle) * 1024.0 / states as f64
    );

    let clusters = timed(&client, &format!("http://{http}/api/v1/clusters"), 50).await;
    let listed = clusters.body["clusters"].as_array().map_or(0, Vec::len);
    assert_eq!(listed, shape.clusters, "every cluster in /api/v1/clusters");
    clusters.print("/api/v1/clusters", "target p99 < 50 ms");
    let matrix = timed(&client, &format!("http://{http}/api/v1/matrix"), 10).await;
    let rows = matrix.body["checks"].as_array().map_or(0, Vec::len);
    assert_eq!(rows, shape.checks, "every check in the matrix");
    let failing_row = &matrix.body["checks"][0];
    println!(
        "    matrix row 0: {} — {}",
        failing_row["id"], failing_row["summary"]
    );
    matrix.print("/api/v1/matrix", "what the page polls");
    let detail = timed(
        &client,
        &format!("http://{http}/api/v1/checks/ns0/check-0000"),
        10,
    )
    .await;
    detail.print(
        "/api/v1/checks/ns0/check-0000",
        "one check, every node of every cluster",
    );

    // The page draws big matrices windowed (only the rows in view), and says how many cells
    // it has laid out once the whole matrix is in.
    let ready = vigil_e2e::browser::matrix_ready(shape.clusters * shape.checks);
    let mut loads = Vec::new();
    let browser = vigil_e2e::browser::Browser::start().await;
    for _ in 0..3 {
        loads.push(browser.page_load(&format!("http://{http}/"), &ready).await);
    }
    let shot = vigil_e2e::target_dir().join("federation-bench-matrix.png");
    browser.screenshot(&shot).await;
    drop(browser);
    loads.sort();
    println!(
        "web view in Chromium, navigation to the whole {}×{} matrix drawn: {:?} (median of {:?}; target < 1 s); screenshot {}",
        shape.clusters,
        shape.checks,
        loads[loads.len() / 2],
        loads,
        shot.display()
    );
    println!(
        "global RSS after the queries: {:.0} MiB (peak {:.0} MiB)",
        rss_kib(pid, "VmRSS") / 1024.0,
        rss_kib(pid, "VmHWM") / 1024.0
    );
    for l in links {
        l.abort();
    }
    if std::env::var_os("VIGIL_BENCH_STOP_LOG").is_some() {
        // Stop the global cleanly and show the end of its log (allocator statistics, if asked
        // for with MIMALLOC_SHOW_STATS=1).
        let mut global = global;
        global.signal(nix::sys::signal::Signal::SIGTERM);
        global.wait_exit(Duration::from_secs(30)).await;
        let log = global.log_text();
        println!("{}", &log[log.len().saturating_sub(6000)..]);
    }
}

struct Timed {
    latencies: Vec<Duration>,
    bytes: usize,
    body: serde_json::Value,
}

impl Timed {
    fn print(&self, what: &str, note: &str) {
        let q = |p: f64| self.latencies[((self.latencies.len() - 1) as f64 * p) as usize];
        println!(
            "{what}: p50 {:.1} ms, p99 {:.1} ms over {} requests, {} KiB ({note})",
            q(0.5).as_secs_f64() * 1e3,
            q(0.99).as_secs_f64() * 1e3,
            self.latencies.len(),
            self.bytes / 1024
        );
    }
}

async fn timed(client: &reqwest::Client, url: &str, n: usize) -> Timed {
    let mut latencies = Vec::with_capacity(n);
    let mut last = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let resp = client.get(url).send().await.expect("GET");
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
        last = resp.bytes().await.expect("body").to_vec();
        latencies.push(t.elapsed());
    }
    latencies.sort();
    Timed {
        latencies,
        bytes: last.len(),
        body: serde_json::from_slice(&last).expect("JSON"),
    }
}

fn rss_kib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0.0)
}

fn check_id(k: usize) -> String {
    format!("ns{}/check-{k:04}", k % 10)
}

/// One simulated cluster federator: links, describes its checks and agents, sends every round
/// of results (one per node and check), and waits for every batch's Ack. Returns the open
/// link so it stays connected.
async fn cluster_link(
    url: &str,
    c: usize,
    shape: Shape,
) -> (
    mpsc::Sender<AgentMessage>,
    tonic::Streaming<vigil_proto::FederatorMessage>,
) {
    let name = format!("cluster-{c:02}");
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .expect("URL")
        .connect()
        .await
        .expect("connect to the global federator");
    let mut client = FederatorClient::new(channel)
        .max_decoding_message_size(vigil_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(vigil_proto::MAX_MESSAGE_BYTES);
    let (tx, rx) = mpsc::channel::<AgentMessage>(64);
    let send = |msg| AgentMessage { msg: Some(msg) };
    tx.send(send(agent_message::Msg::Hello(Hello {
        agent_id: format!("cluster/{name}"),
        node: format!("{name}-federator"),
        cluster: name.clone(),
        version: "bench".into(),
        capabilities: vec!["federator/v1".into()],
        last_acked_seq: 0,
        sent_unix_nanos: 0,
    })))
    .await
    .unwrap();
    let checks: Vec<ClusterCheck> = (0..shape.checks)
        .map(|k| ClusterCheck {
            spec: Some(CheckSpec {
                id: check_id(k),
                target: format!("svc-{k}.ns{}.svc:443", k % 10),
                interval_ms: 10_000,
                timeout_ms: 1_000,
                labels: HashMap::from([("team".to_owned(), format!("team-{}", k % 7))]),
                probe: Some(check_spec::Probe::Tcp(TcpProbe {
                    address: format!("svc-{k}.ns{}.svc:443", k % 10),
                    ..Default::default()
                })),
                ..Default::default()
            }),
            failure_threshold: 1,
            success_threshold: 1,
            placement: "EveryNode".into(),
            node_scoped: true,
            severity: "warning".into(),
            source: format!("HealthCheck {}", check_id(k)),
        })
        .collect();
    let agents: Vec<ClusterAgent> = (0..shape.nodes)
        .map(|n| ClusterAgent {
            agent_id: format!("{name}-node-{n:03}-agent"),
            node: format!("node-{n:03}"),
            connected_unix_nanos: 0,
        })
        .collect();
    tx.send(send(agent_message::Msg::ClusterState(ClusterState {
        checks,
        agents,
        sent_unix_nanos: 0,
        heartbeat_ms: 10_000,
    })))
    .await
    .unwrap();
    let mut inbound = client
        .connect(ReceiverStream::new(rx))
        .await
        .expect("link accepted")
        .into_inner();

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let mut seqs = vec![0u64; shape.nodes];
    let mut seq = |n: usize| {
        seqs[n] += 1;
        seqs[n]
    };
    let mut batch = Vec::with_capacity(BATCH);
    let mut batch_seq = 0u64;
    let mut in_flight = 0u64;
    let mut acked = 0u64;
    for round in 0..shape.rounds {
        for n in 0..shape.nodes {
            for k in 0..shape.checks {
                let seq = seq(n);
                let fails = k < FAILING.0 && n < FAILING.1 && c < FAILING.2;
                batch.push(ProbeResult {
                    check_id: check_id(k),
                    target: format!("svc-{k}.ns{}.svc:443", k % 10),
                    node: format!("node-{n:03}"),
                    cluster: name.clone(),
                    agent_id: format!("{name}-node-{n:03}-agent"),
                    seq,
                    start_unix_nanos: now + round as i64 * 10_000_000_000,
                    latency_nanos: 1_500_000 + (n * 1000 + k) as u64,
                    outcome: if fails {
                        Outcome::Failure
                    } else {
                        Outcome::Success
                    } as i32,
                    reason: if fails {
                        format!(
                            "connect to svc-{k}.ns{}.svc:443 failed: connection refused",
                            k % 10
                        )
                    } else {
                        String::new()
                    },
                    attempt: 1,
                    details: BTreeMap::from([(
                        "resolved_ip".to_owned(),
                        format!("10.0.{}.{}", k % 250, n % 250),
                    )]),
                    values: BTreeMap::from([("connect_seconds".to_owned(), 0.0012)]),
                    scope: "node".into(),
                });
                if batch.len() == BATCH {
                    batch_seq += 1;
                    in_flight += 1;
                    tx.send(send(agent_message::Msg::Results(ResultBatch {
                        results: std::mem::take(&mut batch),
                        agent_id: String::new(),
                        batch_seq,
                    })))
                    .await
                    .unwrap();
                    while in_flight >= 8 {
                        acked = next_ack(&mut inbound).await;
                        in_flight = batch_seq - acked;
                    }
                }
            }
        }
    }
    if !batch.is_empty() {
        batch_seq += 1;
        tx.send(send(agent_message::Msg::Results(ResultBatch {
            results: batch,
            agent_id: String::new(),
            batch_seq,
        })))
        .await
        .unwrap();
    }
    while acked < batch_seq {
        acked = next_ack(&mut inbound).await;
    }
    (tx, inbound)
}

async fn next_ack(inbound: &mut tonic::Streaming<vigil_proto::FederatorMessage>) -> u64 {
    loop {
        match inbound.next().await {
            Some(Ok(m)) => {
                if let Some(federator_message::Msg::Ack(a)) = m.msg {
                    return a.seq;
                }
            }
            other => panic!("link ended: {other:?}"),
        }
    }
}
