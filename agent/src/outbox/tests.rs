//! Outbox tests: numbering, acks and drops in memory; spilling, resending from disk and
//! continuing the seq space across restarts.

use prost::Message;
use vigil_proto::ProbeResult;

use super::*;
use crate::spill::{SEQ_BLOCK, SpillConfig};

const BIG: usize = usize::MAX;

fn result(n: u64) -> ProbeResult {
    ProbeResult {
        check_id: format!("ns/check-{n}"),
        target: "http://t/".into(),
        reason: "x".repeat(100),
        ..Default::default()
    }
}

fn seqs(v: &[Encoded]) -> Vec<u64> {
    v.iter().map(|r| r.seq).collect()
}

fn open(dir: &std::path::Path, max_bytes: u64, capacity: usize) -> (Outbox, Recovered) {
    let config = SpillConfig {
        dir: dir.to_owned(),
        max_bytes,
    };
    let (spill, recovered) = Spill::open(&config, "", "node-a").unwrap();
    (Outbox::with_spill(capacity, spill, &recovered), recovered)
}

#[tokio::test]
async fn numbers_resends_and_releases_on_ack() {
    let m = Metrics::new();
    let o = Outbox::new(100);
    for n in 0..5 {
        o.push(result(n), &m);
    }
    assert_eq!(seqs(&o.batch_after(0, 10, BIG, &m).await), [1, 2, 3, 4, 5]);
    assert_eq!(seqs(&o.batch_after(3, 10, BIG, &m).await), [4, 5]);
    assert_eq!(seqs(&o.batch_after(0, 2, BIG, &m).await), [1, 2]);
    o.ack(2, &m);
    assert_eq!(o.unacked(), 3);
    // After a reconnect the sender starts again from the ack.
    assert_eq!(seqs(&o.batch_after(o.acked(), 2, BIG, &m).await), [3, 4]);
    o.ack(1, &m); // stale acks change nothing
    assert_eq!(o.acked(), 2);
    assert_eq!(m.results_acked.get(), 2);
}

#[tokio::test]
async fn results_are_encoded_once_with_their_seq() {
    let m = Metrics::new();
    let o = Outbox::new(10);
    o.push(result(7), &m);
    o.push(result(8), &m);
    let batch = o.batch_after(0, 10, BIG, &m).await;
    for (r, n) in batch.iter().zip([7, 8]) {
        let decoded = ProbeResult::decode(r.bytes.clone()).unwrap();
        let mut want = result(n);
        want.seq = r.seq;
        assert_eq!(decoded, want);
    }
    // A byte budget keeps batches small, but never empty.
    let one = o.batch_after(0, 10, 10, &m).await;
    assert_eq!(seqs(&one), [1]);
}

#[tokio::test]
async fn full_buffer_without_spill_drops_oldest_and_counts() {
    let m = Metrics::new();
    let o = Outbox::new(3);
    for n in 0..5 {
        o.push(result(n), &m);
    }
    assert_eq!(seqs(&o.batch_after(0, 10, BIG, &m).await), [3, 4, 5]);
    assert_eq!(m.results_dropped.get(), 2);
    assert_eq!(o.last_seq(), 5);
    assert_eq!(o.close(&m), 0, "nothing to keep them in");
}

#[tokio::test]
async fn overflow_goes_to_the_spill_and_is_sent_first_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let m = Metrics::new();
    // 64 KiB spill: 16 KiB segments, so 290 spilled results of ~150 bytes make three.
    let (o, rec) = open(dir.path(), 64 << 10, 10);
    assert_eq!((rec.next_seq, rec.acked, rec.spilled), (1, 0, 0));
    for n in 0..300 {
        o.push(result(n), &m);
    }
    assert_eq!(m.results_dropped.get(), 0);
    assert_eq!(m.results_spilled.get(), 290);
    assert_eq!(m.spilled.get(), 290);
    assert_eq!(m.buffered.get(), 10);
    assert_eq!(o.unacked(), 300);

    // Read everything back the way the sender does, in small batches.
    let mut cursor = 0;
    let mut got = Vec::new();
    loop {
        let batch = o.batch_after(cursor, 37, BIG, &m).await;
        let Some(last) = batch.last() else { break };
        cursor = last.seq;
        for r in &batch {
            let decoded = ProbeResult::decode(r.bytes.clone()).unwrap();
            assert_eq!(decoded.seq, r.seq, "the bytes carry their seq");
        }
        got.extend(seqs(&batch));
    }
    assert_eq!(got, (1..=300).collect::<Vec<_>>());

    // Acks release the spill segment by segment, then memory.
    o.ack(150, &m);
    let left = m.spilled.get();
    assert!(
        left > 0 && left < 290,
        "whole segments up to 150 went: {left} left"
    );
    o.ack(300, &m);
    assert_eq!(o.unacked(), 0);
    assert_eq!(m.spilled.get(), 0);
    assert_eq!(m.results_acked.get(), 300);
    let segments = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("seg-")
        })
        .count();
    assert_eq!(segments, 0, "acknowledged segments are deleted");
}

#[tokio::test]
async fn the_sender_follows_the_segment_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let m = Metrics::new();
    let (o, _) = open(dir.path(), 1 << 30, 1);
    let mut cursor = 0;
    let mut got = Vec::new();
    for round in 0..5 {
        for n in 0..4 {
            o.push(result(round * 10 + n), &m);
        }
        // Spilled ones are read back while the segment is still open for appends.
        loop {
            let batch = o.batch_after(cursor, 1000, BIG, &m).await;
            let Some(last) = batch.last() else { break };
            cursor = last.seq;
            got.extend(seqs(&batch));
        }
    }
    assert_eq!(got, (1..=20).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_restart_resends_the_spill_and_continues_the_seq_space() {
    let dir = tempfile::tempdir().unwrap();
    let m = Metrics::new();
    let (o, first) = open(dir.path(), 1 << 30, 5);
    for n in 0..20 {
        o.push(result(n), &m);
    }
    o.ack(4, &m); // the federator took 1..=4
    // SIGTERM: memory goes to the spill too.
    assert_eq!(o.close(&m), 5);
    drop(o);

    let (o, second) = open(dir.path(), 1 << 30, 5);
    assert_eq!(second.agent_id, first.agent_id, "same agent");
    assert!(second.agent_id.starts_with("node-a-"));
    assert_eq!(second.acked, 4, "Hello carries the acknowledged position");
    assert_eq!(second.spilled, 16);
    assert_eq!(
        second.next_seq, 21,
        "a clean stop leaves no gap in the seqs"
    );
    assert_eq!(o.acked(), 4);
    o.push(result(99), &m);
    let mut cursor = o.acked();
    let mut got = Vec::new();
    loop {
        let batch = o.batch_after(cursor, 6, BIG, &m).await;
        let Some(last) = batch.last() else { break };
        cursor = last.seq;
        got.extend(seqs(&batch));
    }
    assert_eq!(got, (5..=21).collect::<Vec<_>>());
}

#[tokio::test]
async fn results_after_close_go_to_disk_and_keep_their_seq() {
    let dir = tempfile::tempdir().unwrap();
    let m = Metrics::new();
    let (o, _) = open(dir.path(), 1 << 30, 5);
    o.push(result(1), &m);
    assert_eq!(o.close(&m), 1);
    // A run that was still going when the agent stopped.
    o.push(result(2), &m);
    drop(o);
    let (o, rec) = open(dir.path(), 1 << 30, 5);
    assert_eq!((rec.spilled, rec.next_seq), (2, 3));
    let first = o.batch_after(0, 10, BIG, &m).await;
    assert_eq!(seqs(&first), [1], "one segment per batch");
    assert_eq!(seqs(&o.batch_after(1, 10, BIG, &m).await), [2]);
}

#[tokio::test]
async fn a_crash_never_reuses_a_seq() {
    let dir = tempfile::tempdir().unwrap();
    let m = Metrics::new();
    let (o, _) = open(dir.path(), 1 << 30, 100);
    for n in 0..(SEQ_BLOCK + 5) {
        o.push(result(n), &m);
    }
    // No close(): a crash. Everything up to SEQ_BLOCK + 5 was handed out.
    drop(o);
    let (o, rec) = open(dir.path(), 1 << 30, 100);
    assert_eq!(rec.next_seq, 2 * SEQ_BLOCK);
    o.push(result(0), &m);
    assert_eq!(o.last_seq(), 2 * SEQ_BLOCK);
}

#[tokio::test]
async fn a_full_spill_drops_its_oldest_segment_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let m = Metrics::new();
    // 64 KiB limit, 16 KiB segments; ~150 bytes per record: about 420 fit.
    let (o, _) = open(dir.path(), 64 << 10, 1);
    for n in 0..2_000 {
        o.push(result(n), &m);
    }
    let dropped = m.results_dropped.get();
    assert!(dropped > 1_000, "dropped {dropped}");
    assert!(m.spill_bytes.get() <= 64 << 10, "{}", m.spill_bytes.get());
    let first = o.batch_after(0, 1, BIG, &m).await;
    assert_eq!(seqs(&first), [dropped + 1], "the oldest went first");
    assert_eq!(
        u64::try_from(o.unacked()).unwrap() + dropped,
        2_000,
        "every result is either kept or counted"
    );
}
