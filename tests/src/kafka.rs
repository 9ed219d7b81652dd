//! A real Kafka-protocol broker for tests and benchmarks (tansu, memory engine, on loopback) and
//! reading a topic back to check every (agent, seq).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::{Proc, free_addr};

/// A tansu broker on 127.0.0.1; killed when dropped. Its data lives in memory only.
pub struct Tansu {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl Tansu {
    /// Starts `tansu` from the PATH in `dir` (it reads a `.env` in its working folder, so it
    /// gets a folder of its own) and waits until it accepts connections.
    pub fn start(dir: &Path) -> Self {
        let program = which("tansu").unwrap_or_else(|| {
            panic!(
                "tansu is not on the PATH; install it with `cargo install tansu --locked --features dynostore` \
                 (.ci/run does this on a fresh machine)"
            )
        });
        let addr = free_addr();
        let work = dir.join("tansu");
        std::fs::create_dir_all(&work).expect("tansu folder");
        let url = format!("tcp://{addr}");
        // tansu traces every span of every request at `info`, to its stdout (discarded here):
        // about 100 µs of broker CPU per produce request, which made the broker's cost depend
        // on how the client batches rather than on what it writes. Warnings and errors only.
        let proc = Proc::start_full(
            "tansu",
            &program,
            &[
                "broker".into(),
                "--listener-url".into(),
                url.clone(),
                "--advertised-listener-url".into(),
                url,
                "--storage-engine".into(),
                "memory://tansu/".into(),
            ],
            dir,
            &work,
            &[("RUST_LOG", "warn")],
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {addr} within 30s; its log:\n{}",
                proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self { proc, addr }
    }

    pub fn brokers(&self) -> String {
        self.addr.to_string()
    }

    /// Freezes the broker (an outage that keeps its in-memory data).
    pub fn freeze(&self) {
        self.proc.signal(nix::sys::signal::Signal::SIGSTOP);
    }

    pub fn thaw(&self) {
        self.proc.signal(nix::sys::signal::Signal::SIGCONT);
    }
}

/// The first `name` on the PATH.
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// The (agent, seq) headers of every record in `topic`, read from offset 0 of every partition,
/// until `done` says enough or nothing new arrived for `idle` (or `within` passed).
pub fn read_topic(
    brokers: &str,
    topic: &str,
    within: Duration,
    idle: Duration,
    mut done: impl FnMut(&[(String, u64)]) -> bool,
) -> Vec<(String, u64)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "vigil-e2e-reader")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50")
        .create()
        .expect("Kafka consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("topic metadata");
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len());
    assert!(partitions > 0, "topic {topic} has no partitions");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        // Offset 0, not Beginning: tansu's memory engine answers ListOffsets wrongly.
        tpl.add_partition_offset(
            topic,
            i32::try_from(p).expect("few partitions"),
            Offset::Offset(0),
        )
        .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = Instant::now() + within;
    let mut last_new = Instant::now();
    while Instant::now() < deadline && last_new.elapsed() < idle {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let headers = m.headers().expect("records carry headers");
                let header = |name: &str| {
                    headers
                        .iter()
                        .find(|h| h.key == name)
                        .and_then(|h| h.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_else(|| panic!("record without a {name} header"))
                };
                out.push((header("agent"), header("seq").parse().expect("numeric seq")));
                last_new = Instant::now();
                if done(&out) {
                    break;
                }
            }
            Some(Err(e)) => eprintln!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// Per agent: how many records, distinct seqs, the highest seq, and the seqs missing from
/// 1..=highest (a gap is a lost result).
#[derive(Debug, Default)]
pub struct SeqReport {
    pub records: usize,
    pub distinct: usize,
    pub max: u64,
    pub missing: Vec<u64>,
}

pub fn seq_report(records: &[(String, u64)]) -> BTreeMap<String, SeqReport> {
    let mut by_agent: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (agent, seq) in records {
        by_agent.entry(agent.clone()).or_default().push(*seq);
    }
    by_agent
        .into_iter()
        .map(|(agent, mut seqs)| {
            let records = seqs.len();
            seqs.sort_unstable();
            seqs.dedup();
            let max = seqs.last().copied().unwrap_or(0);
            let mut missing = Vec::new();
            let mut next = 1;
            for &s in &seqs {
                while next < s {
                    missing.push(next);
                    next += 1;
                }
                next = s + 1;
            }
            (
                agent,
                SeqReport {
                    records,
                    distinct: seqs.len(),
                    max,
                    missing,
                },
            )
        })
        .collect()
}
