//! Results waiting for the federator's Ack: numbered with a per-agent seq, protobuf-encoded
//! once, kept until acknowledged, resent after every reconnect.
//!
//! The memory buffer is bounded (`--buffer-results`). When it is full, its oldest result goes
//! to the on-disk spill if there is one (`--spill-dir`, see [`crate::spill`]), else it is
//! dropped; every drop is counted and logged (at a limited rate), never silent. Spilled
//! results are always older than those in memory, so sending the spill first and memory next
//! keeps seq order.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use prost::Message;
use tokio::sync::Notify;
use vigil_proto::ProbeResult;

use crate::metrics::Metrics;
use crate::spill::{self, Next, Recovered, Spill};

/// Encoded results share allocations of this size (a slice each), so a result costs no
/// allocation of its own.
const ARENA_BYTES: usize = 64 << 10;
const LOG_EVERY: Duration = Duration::from_secs(10);

/// One result as it goes on the wire: a prost-encoded `ProbeResult` (seq included).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    pub seq: u64,
    pub bytes: Bytes,
}

pub struct Outbox {
    inner: Mutex<Inner>,
    notify: Notify,
    capacity: usize,
}

struct Inner {
    buf: VecDeque<Encoded>,
    arena: BytesMut,
    next_seq: u64,
    acked: u64,
    dropped: u64,
    last_drop_log: Option<Instant>,
    spill: Option<Spill>,
    last_spill_error_log: Option<Instant>,
    /// After [`Outbox::close`]: new results go straight to the spill.
    closed: bool,
}

impl Outbox {
    /// An outbox holding at most `capacity` unacknowledged results in memory, and no spill.
    pub fn new(capacity: usize) -> Self {
        Self::build(capacity, None, 1, 0)
    }

    /// An outbox that spills to `spill` and continues from what was `recovered` there.
    pub fn with_spill(capacity: usize, spill: Spill, recovered: &Recovered) -> Self {
        Self::build(capacity, Some(spill), recovered.next_seq, recovered.acked)
    }

    fn build(capacity: usize, spill: Option<Spill>, next_seq: u64, acked: u64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                buf: VecDeque::new(),
                arena: BytesMut::new(),
                next_seq,
                acked,
                dropped: 0,
                last_drop_log: None,
                spill,
                last_spill_error_log: None,
                closed: false,
            }),
            notify: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Numbers a result, encodes it and queues it.
    pub fn push(&self, mut result: ProbeResult, metrics: &Metrics) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        let seq = inner.next_seq;
        inner.next_seq += 1;
        if let Some(Err(e)) = inner.spill.as_mut().map(|s| s.reserve(seq)) {
            // Carry on: only a crash before the next successful reservation could reuse seqs.
            inner.spill_error(metrics, &e);
        }
        result.seq = seq;
        let entry = Encoded {
            seq,
            bytes: inner.encode(&result),
        };
        let spilled = if inner.closed {
            inner.spill_or_drop(entry, self.capacity, metrics);
            true
        } else if inner.buf.len() >= self.capacity {
            let oldest = inner.buf.pop_front().expect("the buffer is full");
            inner.spill_or_drop(oldest, self.capacity, metrics);
            inner.buf.push_back(entry);
            true
        } else {
            inner.buf.push_back(entry);
            false
        };
        // One write per spilled result: what reached the spill survives a crash of the agent
        // (not of the machine: segments are synced when closed).
        if spilled && let Some(Err(e)) = inner.spill.as_mut().map(Spill::flush) {
            inner.spill_error(metrics, &e);
        }
        inner.gauges(metrics);
        drop(guard);
        self.notify.notify_one();
    }

    /// Everything up to and including `seq` is durable at the federator.
    pub fn ack(&self, seq: u64, metrics: &Metrics) {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if seq <= inner.acked {
            return;
        }
        inner.acked = seq;
        let mut released = 0;
        while inner.buf.front().is_some_and(|r| r.seq <= seq) {
            inner.buf.pop_front();
            released += 1;
        }
        if let Some(spill) = inner.spill.as_mut() {
            released += spill.ack(seq);
        }
        metrics.results_acked.inc_by(released);
        inner.gauges(metrics);
    }

    pub fn acked(&self) -> u64 {
        self.lock().acked
    }

    /// Results waiting for an Ack, in memory and spilled.
    pub fn unacked(&self) -> usize {
        let inner = self.lock();
        let spilled = inner.spill.as_ref().map_or(0, Spill::records);
        inner.buf.len() + usize::try_from(spilled).unwrap_or(usize::MAX)
    }

    /// Highest seq handed out so far (0 before the first).
    pub fn last_seq(&self) -> u64 {
        self.lock().next_seq - 1
    }

    /// Up to `max` results (and about `max_bytes`) with seq above `cursor`, in seq order:
    /// spilled ones first (read from disk off the runtime thread), then those in memory.
    pub async fn batch_after(
        &self,
        cursor: u64,
        max: usize,
        max_bytes: usize,
        metrics: &Metrics,
    ) -> Vec<Encoded> {
        // Each round either returns or reads more of a segment, which shrinks what is left.
        for _ in 0..64 {
            let req = {
                let mut inner = self.lock();
                match inner.spill.as_mut().map(|s| s.next(cursor, max, max_bytes)) {
                    Some(Next::Records(records)) => {
                        return records
                            .into_iter()
                            .map(|(seq, bytes)| Encoded { seq, bytes })
                            .collect();
                    }
                    Some(Next::Read(req)) => req,
                    Some(Next::Done) | None => return inner.memory_after(cursor, max, max_bytes),
                }
            };
            let read = tokio::task::spawn_blocking(move || {
                let read = spill::read(&req);
                (req, read)
            })
            .await;
            let Ok((req, read)) = read else {
                return Vec::new(); // the runtime is shutting down
            };
            let mut guard = self.lock();
            let inner = &mut *guard;
            if let Some(spill) = inner.spill.as_mut() {
                let lost = spill.install(req, read);
                if lost > 0 {
                    inner.count_dropped(lost, metrics);
                }
                inner.gauges(metrics);
            }
        }
        Vec::new()
    }

    /// At shutdown, after the drain: writes the results still waiting in memory to the spill
    /// and syncs it; results pushed later go straight there. Returns how many were written
    /// (0 without a spill, where they are lost).
    pub fn close(&self, metrics: &Metrics) -> usize {
        let mut guard = self.lock();
        let inner = &mut *guard;
        if inner.spill.is_none() {
            return 0;
        }
        inner.closed = true;
        let waiting: Vec<Encoded> = inner.buf.drain(..).collect();
        let n = waiting.len();
        for entry in waiting {
            inner.spill_or_drop(entry, self.capacity, metrics);
        }
        let next_seq = inner.next_seq;
        if let Some(Err(e)) = inner.spill.as_mut().map(|s| s.close(next_seq)) {
            inner.spill_error(metrics, &e);
        }
        inner.gauges(metrics);
        n
    }

    /// Sets the buffer gauges (after start-up, before anything was pushed).
    pub fn report(&self, metrics: &Metrics) {
        self.lock().gauges(metrics);
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

impl Inner {
    /// Encodes into the shared arena and splits the result off as its own `Bytes`.
    fn encode(&mut self, result: &ProbeResult) -> Bytes {
        let len = result.encoded_len();
        if self.arena.capacity() < len {
            self.arena = BytesMut::with_capacity(ARENA_BYTES.max(len));
        }
        result
            .encode(&mut self.arena)
            .expect("the arena has room for the result");
        self.arena.split().freeze()
    }

    fn memory_after(&self, cursor: u64, max: usize, max_bytes: usize) -> Vec<Encoded> {
        let Some(first) = self.buf.front().map(|r| r.seq) else {
            return Vec::new();
        };
        // Seqs in memory are consecutive.
        let skip = usize::try_from(cursor.saturating_sub(first - 1)).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut size = 0;
        for r in self.buf.iter().skip(skip) {
            if out.len() >= max || (size + r.bytes.len() > max_bytes && !out.is_empty()) {
                break;
            }
            size += r.bytes.len();
            out.push(r.clone());
        }
        out
    }

    fn spill_or_drop(&mut self, entry: Encoded, capacity: usize, metrics: &Metrics) {
        let Some(spill) = self.spill.as_mut() else {
            self.count_dropped(1, metrics);
            let now = Instant::now();
            if self
                .last_drop_log
                .is_none_or(|t| now.duration_since(t) > LOG_EVERY)
            {
                self.last_drop_log = Some(now);
                tracing::warn!(
                    capacity,
                    dropped_total = self.dropped,
                    "result buffer full (federator unreachable or slow) and no --spill-dir; dropping the oldest unacknowledged results"
                );
            }
            return;
        };
        match spill.append(entry.seq, &entry.bytes) {
            Ok(dropped) => {
                metrics.results_spilled.inc();
                if dropped > 0 {
                    // The spill logged which segment went.
                    self.count_dropped(dropped, metrics);
                }
            }
            Err(e) => {
                self.count_dropped(1, metrics);
                self.spill_error(metrics, &e);
            }
        }
    }

    fn count_dropped(&mut self, n: u64, metrics: &Metrics) {
        self.dropped += n;
        metrics.results_dropped.inc_by(n);
    }

    fn spill_error(&mut self, metrics: &Metrics, e: &spill::SpillError) {
        metrics.spill_errors.inc();
        let now = Instant::now();
        if self
            .last_spill_error_log
            .is_none_or(|t| now.duration_since(t) > LOG_EVERY)
        {
            self.last_spill_error_log = Some(now);
            tracing::error!(error = %e, dropped_total = self.dropped, "spill failed");
        }
    }

    fn gauges(&self, metrics: &Metrics) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        metrics.buffered.set(gauge(self.buf.len() as u64));
        if let Some(spill) = &self.spill {
            metrics.spilled.set(gauge(spill.records()));
            metrics.spill_bytes.set(gauge(spill.bytes()));
        }
    }
}

#[cfg(test)]
mod tests;
