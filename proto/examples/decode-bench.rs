//! The federator's decoding of agent batches against prost's, side by side in one run:
//! `cargo run --release -p vigil-proto --example decode-bench`.
//!
//! Each round decodes the same encoded 100-result batches (a probe's usual shape: the same
//! detail and value keys every run) with prost and with the pooled decoder, alternating, and
//! drops them as the federator does; it prints ns per result and the ratio.

use std::hint::black_box;
use std::time::Instant;

use prost::Message;
use vigil_proto::pool::{Results, decode_agent_message};
use vigil_proto::{AgentMessage, ProbeResult, ResultBatch, agent_message};

const BATCHES: usize = 64;
const PER_BATCH: usize = 100;
const ROUNDS: usize = 7;
const PASSES: usize = 50;

fn main() {
    let messages: Vec<Vec<u8>> = (0..BATCHES).map(encoded_batch).collect();
    let results = (BATCHES * PER_BATCH * PASSES) as f64;
    let mut ratios = Vec::new();
    for round in 1..=ROUNDS {
        let prost = time(|| {
            for bytes in &messages {
                black_box(AgentMessage::decode(bytes.as_slice()).unwrap());
            }
        });
        let pooled = time(|| {
            for bytes in &messages {
                let message = decode_agent_message(bytes).unwrap();
                if let Some(agent_message::Msg::Results(batch)) = message.msg {
                    drop(black_box(Results::from(batch.results)));
                }
            }
        });
        let (prost, pooled) = (prost / results * 1e9, pooled / results * 1e9);
        println!(
            "round {round}: prost {prost:.0} ns/result, pooled {pooled:.0} ns/result, pooled/prost {:.2}",
            pooled / prost
        );
        ratios.push(pooled / prost);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "pooled/prost, median of {ROUNDS} rounds: {:.2}",
        ratios[ROUNDS / 2]
    );
}

fn time(mut pass: impl FnMut()) -> f64 {
    let started = Instant::now();
    for _ in 0..PASSES {
        pass();
    }
    started.elapsed().as_secs_f64()
}

fn encoded_batch(n: usize) -> Vec<u8> {
    let results = (0..PER_BATCH)
        .map(|i| {
            let seq = (n * PER_BATCH + i) as u64 + 1;
            ProbeResult {
                check_id: "shop/checkout".into(),
                target: format!("http://10.0.{}.{}:8080/healthz", seq % 7, seq % 50),
                agent_id: "node-a-7f3c".into(),
                node: "node-a".into(),
                seq,
                start_unix_nanos: 1_700_000_000_000_000_000 + seq as i64,
                latency_nanos: 1_250_000,
                outcome: 1,
                attempt: 1,
                details: [("status_code".to_owned(), "200".to_owned())].into(),
                values: [("probe_http_duration_seconds".to_owned(), 0.00125)].into(),
                scope: "cluster".into(),
                ..Default::default()
            }
        })
        .collect();
    AgentMessage {
        msg: Some(agent_message::Msg::Results(ResultBatch {
            results,
            ..ResultBatch::default()
        })),
    }
    .encode_to_vec()
}
