//! The real agent (in-process) with a spill directory against the real federator: the
//! federator becomes unreachable, results spill to disk, the agent stops, the federator comes
//! back, the agent restarts on the same directory, and every (agent, seq) it produced lands in
//! the federator's results file exactly once.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vigil_agent::spill::{SpillConfig, segment};

mod common;
use common::Fed;

/// A check that fails fast (nothing listens on port 1), 20 times a second.
const CHECKS: &str = "apiVersion: vigil.dev/v1alpha1\nkind: HealthCheck\nmetadata: {name: fast, namespace: t}\nspec:\n  interval: 50ms\n  timeout: 40ms\n  probe: {tcp: {address: '127.0.0.1:1'}}\n";

/// A loopback TCP proxy that can cut every connection and refuse new ones (the federator
/// "down" for the agent, while its dedup ledger and results file stay).
struct Proxy {
    addr: SocketAddr,
    open: Arc<watch::Sender<bool>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(watch::Sender::new(true));
        let rx = open.subscribe();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !*rx.borrow() {
                    continue; // dropped: refused
                }
                let mut cut = rx.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Self { addr, open }
    }

    fn cut(&self) {
        self.open.send_replace(false);
    }

    fn restore(&self) {
        self.open.send_replace(true);
    }
}

/// A loopback port for the agent's HTTP server, from below the kernel's ephemeral range so that
/// no outgoing connection can take it between this pick and the agent's bind (the same picker
/// as `vigil_e2e::free_addr`, which this crate cannot depend on).
fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < 1_000, "no free loopback port left");
        let port = 21_000 + (std::process::id() % 8_000) as u16 + n;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr().unwrap();
        }
    }
}

fn agent_config(
    federator: SocketAddr,
    listen: SocketAddr,
    spill: &Path,
) -> vigil_agent::AgentConfig {
    vigil_agent::AgentConfig {
        federator: Some(format!("http://{federator}")),
        identity: vigil_agent::Identity {
            agent_id: String::new(), // the spill directory's
            node: "node-s".into(),
            cluster: String::new(),
        },
        listen: Some(listen),
        modules: None,
        max_in_flight: 16,
        buffer_results: 5,
        spill: Some(SpillConfig {
            dir: spill.to_owned(),
            max_bytes: 1 << 30,
        }),
        drain_grace: Duration::from_secs(1),
        diagnostics: None,
    }
}

/// Polls `check` every 20 ms until it returns `Some`, for at most 20 s.
async fn wait_for<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// How often each seq of `agent` appears in the results file.
fn written(results: &Path, agent: &str) -> BTreeMap<u64, usize> {
    let mut seen = BTreeMap::new();
    let text = std::fs::read_to_string(results).unwrap_or_default();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            continue; // a line being written
        };
        if v["agent"] == agent {
            *seen.entry(v["seq"].as_u64().unwrap()).or_default() += 1;
        }
    }
    seen
}

fn spilled_seqs(dir: &Path) -> Vec<u64> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "spill"))
        .collect();
    files.sort();
    let mut seqs = Vec::new();
    for f in files {
        let data = bytes::Bytes::from(std::fs::read(&f).unwrap());
        let parsed = segment::parse(data, 0, 0);
        assert!(
            parsed.cut.is_none(),
            "{} is whole: {:?}",
            f.display(),
            parsed.cut
        );
        seqs.extend(parsed.records.iter().map(|r| r.0));
    }
    seqs
}

/// The agent id, acknowledged seq and next seq stored in the spill directory.
fn stored_agent(dir: &Path) -> Option<(String, u64, u64)> {
    let text = std::fs::read_to_string(dir.join("agent-state.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some((
        v["agentId"].as_str()?.to_owned(),
        v["ackedSeq"].as_u64()?,
        v["nextSeq"].as_u64()?,
    ))
}

#[tokio::test]
async fn spilled_results_arrive_exactly_once_after_an_outage_and_a_restart() {
    let fed = Fed::start(CHECKS, |_| {}).await;
    let proxy = Proxy::start(fed.grpc).await;
    let spill = tempfile::tempdir().unwrap();

    // 1. The agent runs and the federator acknowledges its results.
    let listen = free_addr();
    let stop = CancellationToken::new();
    let agent = tokio::spawn(vigil_agent::run(
        agent_config(proxy.addr, listen, spill.path()),
        stop.clone(),
    ));
    wait_for("acknowledged results", || async {
        (metric(listen, "vigil_agent_results_acked_total").await? >= 10.0).then_some(())
    })
    .await;
    let (agent_id, _, _) = stored_agent(spill.path()).expect("the agent id is stored");

    // 2. The federator becomes unreachable: the 5-result memory buffer overflows to disk.
    proxy.cut();
    wait_for("results to spill", || async {
        (metric(listen, "vigil_agent_spilled_results").await? >= 30.0).then_some(())
    })
    .await;

    // 3. The agent stops (drain fails: nobody to drain to); memory goes to the spill too.
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("the agent stops within its grace")
        .unwrap()
        .unwrap();
    let (_, acked, next) = stored_agent(spill.path()).unwrap();
    assert!(acked >= 10, "the acknowledged position is kept: {acked}");
    let on_disk = spilled_seqs(spill.path());
    let last = *on_disk.last().expect("results were spilled");
    assert!(on_disk.len() >= 35, "{} spilled", on_disk.len());
    assert_eq!(
        on_disk,
        (on_disk[0]..=last).collect::<Vec<_>>(),
        "the spill holds a contiguous run of seqs"
    );
    assert!(
        on_disk[0] <= acked + 1,
        "nothing between the ack and the spill is missing"
    );
    assert!(
        next > last,
        "seqs go on after the spilled ones: next {next}, last {last}"
    );

    // 4. The federator is back; the agent restarts on the same directory.
    proxy.restore();
    let listen = free_addr();
    let stop = CancellationToken::new();
    let agent = tokio::spawn(vigil_agent::run(
        agent_config(proxy.addr, listen, spill.path()),
        stop.clone(),
    ));
    wait_for("the spilled results and new ones", || async {
        let seen = written(&fed.results, &agent_id);
        let old = (1..=last).all(|s| seen.contains_key(&s));
        let new = seen.range(last + 1..).count() >= 10;
        (old && new).then_some(())
    })
    .await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), agent)
        .await
        .expect("the agent stops within its grace")
        .unwrap()
        .unwrap();

    // 5. Exactly once, and the restarted agent went on where the first stopped (a clean stop
    //    records the exact next seq): every seq from 1 to the highest, each once.
    let seen = written(&fed.results, &agent_id);
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "written more than once: {dups:?}");
    let all: Vec<u64> = seen.keys().copied().collect();
    let top = *all.last().unwrap();
    assert!(top >= last + 10, "{top}");
    assert_eq!(all, (1..=top).collect::<Vec<_>>(), "no seq lost or skipped");
}
