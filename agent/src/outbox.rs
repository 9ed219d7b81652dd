//! Results waiting for the federator's Ack: numbered with a per-agent seq, kept until
//! acknowledged, resent after every reconnect. Bounded: when full, the oldest are dropped,
//! counted and logged (at a limited rate), never silently.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use vigil_proto::ProbeResult;

use crate::metrics::Metrics;

pub struct Outbox {
    inner: Mutex<Inner>,
    notify: Notify,
    capacity: usize,
}

struct Inner {
    buf: VecDeque<ProbeResult>,
    next_seq: u64,
    acked: u64,
    dropped: u64,
    last_drop_log: Option<Instant>,
}

impl Outbox {
    /// An outbox holding at most `capacity` unacknowledged results.
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                buf: VecDeque::new(),
                next_seq: 1,
                acked: 0,
                dropped: 0,
                last_drop_log: None,
            }),
            notify: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    /// Numbers a result and queues it.
    pub fn push(&self, mut result: ProbeResult, metrics: &Metrics) {
        let mut inner = self.inner.lock().unwrap();
        result.seq = inner.next_seq;
        inner.next_seq += 1;
        if inner.buf.len() >= self.capacity {
            inner.buf.pop_front();
            inner.dropped += 1;
            metrics.results_dropped.inc();
            let now = Instant::now();
            if inner
                .last_drop_log
                .is_none_or(|t| now.duration_since(t) > Duration::from_secs(10))
            {
                inner.last_drop_log = Some(now);
                tracing::warn!(
                    capacity = self.capacity,
                    dropped_total = inner.dropped,
                    "result buffer full (federator unreachable or slow); dropping the oldest unacknowledged results"
                );
            }
        }
        inner.buf.push_back(result);
        metrics
            .buffered
            .set(i64::try_from(inner.buf.len()).unwrap_or(i64::MAX));
        drop(inner);
        self.notify.notify_one();
    }

    /// Everything up to and including `seq` is durable at the federator.
    pub fn ack(&self, seq: u64, metrics: &Metrics) {
        let mut inner = self.inner.lock().unwrap();
        if seq <= inner.acked {
            return;
        }
        inner.acked = seq;
        let mut released = 0;
        while inner.buf.front().is_some_and(|r| r.seq <= seq) {
            inner.buf.pop_front();
            released += 1;
        }
        metrics.results_acked.inc_by(released);
        metrics
            .buffered
            .set(i64::try_from(inner.buf.len()).unwrap_or(i64::MAX));
    }

    pub fn acked(&self) -> u64 {
        self.inner.lock().unwrap().acked
    }

    /// Results waiting for an Ack.
    pub fn unacked(&self) -> usize {
        self.inner.lock().unwrap().buf.len()
    }

    /// Up to `max` results with seq above `cursor`, in order.
    pub fn after(&self, cursor: u64, max: usize) -> Vec<ProbeResult> {
        let inner = self.inner.lock().unwrap();
        let Some(first) = inner.buf.front().map(|r| r.seq) else {
            return Vec::new();
        };
        let skip = usize::try_from(cursor.saturating_sub(first - 1)).unwrap_or(usize::MAX);
        inner.buf.iter().skip(skip).take(max).cloned().collect()
    }

    /// Highest seq handed out so far (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.inner.lock().unwrap().next_seq - 1
    }

    /// Waits until something new was pushed since the last call.
    pub async fn pushed(&self) {
        self.notify.notified().await;
    }

    /// Wakes a waiter in [`Outbox::pushed`] (used when a sender stopped before taking everything).
    pub fn poke(&self) {
        self.notify.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(v: &[ProbeResult]) -> Vec<u64> {
        v.iter().map(|r| r.seq).collect()
    }

    #[test]
    fn numbers_resends_and_releases_on_ack() {
        let m = Metrics::new();
        let o = Outbox::new(100);
        for _ in 0..5 {
            o.push(ProbeResult::default(), &m);
        }
        assert_eq!(seqs(&o.after(0, 10)), [1, 2, 3, 4, 5]);
        assert_eq!(seqs(&o.after(3, 10)), [4, 5]);
        o.ack(2, &m);
        assert_eq!(o.unacked(), 3);
        // After a reconnect the sender starts again from the ack.
        assert_eq!(seqs(&o.after(o.acked(), 2)), [3, 4]);
        o.ack(1, &m); // stale acks change nothing
        assert_eq!(o.acked(), 2);
    }

    #[test]
    fn full_buffer_drops_oldest_and_counts() {
        let m = Metrics::new();
        let o = Outbox::new(3);
        for _ in 0..5 {
            o.push(ProbeResult::default(), &m);
        }
        assert_eq!(seqs(&o.after(0, 10)), [3, 4, 5]);
        assert_eq!(m.results_dropped.get(), 2);
        assert_eq!(o.last_seq(), 5);
    }
}
