//! The dedup ledgers, one per agent id (and per cluster link), and their forgetting.
//!
//! A ledger is only worth keeping while its peer may come back with results it has already
//! sent. Agent ids come and go for good: an agent without a spill directory takes a new id on
//! every start, and every run of an isolated check reports under its Job's name. A ledger no
//! stream has used for [`KEPT`] is therefore forgotten, with the agent's metric series. A peer
//! that comes back after that starts a new ledger at the seq its Hello says was acknowledged,
//! so results it had sent without seeing their Ack are written a second time, each with the
//! same (agent, seq).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How long a ledger nothing uses is kept.
pub const KEPT: Duration = Duration::from_secs(3600);

/// Per agent id: the highest seq handed to the pipeline, and the highest seq durable.
pub struct Ledger {
    pub submitted: tokio::sync::Mutex<u64>,
    pub durable: watch::Sender<u64>,
}

impl Ledger {
    pub fn new(acked: u64) -> Self {
        Self {
            submitted: tokio::sync::Mutex::new(acked),
            durable: watch::Sender::new(acked),
        }
    }

    pub fn mark_durable(&self, seq: u64) {
        self.durable.send_if_modified(|d| {
            let advanced = seq > *d;
            *d = (*d).max(seq);
            advanced
        });
    }
}

/// The ledgers by peer id. A ledger is in use while anything besides this map holds it (a
/// stream, or a write not yet durable); one unused for `kept` is dropped by the next sweep.
pub struct Ledgers {
    kept: Duration,
    inner: Mutex<Inner>,
}

struct Inner {
    ledgers: HashMap<String, Entry>,
    last_sweep: Instant,
}

struct Entry {
    ledger: Arc<Ledger>,
    /// When a sweep first found it unused (reset whenever it is handed out).
    unused_since: Option<Instant>,
}

impl Default for Ledgers {
    fn default() -> Self {
        Self::new(KEPT)
    }
}

impl Ledgers {
    pub fn new(kept: Duration) -> Self {
        Self {
            kept,
            inner: Mutex::new(Inner {
                ledgers: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        }
    }

    /// The ledger of `id`, new at `acked` if there is none, and the ids whose ledgers a sweep
    /// just forgot. Only a new id can make the map grow, so only a new id sweeps (at most once
    /// per `kept`, or per minute if that is shorter).
    pub fn get(&self, id: &str, acked: u64) -> (Arc<Ledger>, Vec<String>) {
        let mut inner = self.inner.lock().unwrap();
        if let Some(entry) = inner.ledgers.get_mut(id) {
            entry.unused_since = None;
            return (Arc::clone(&entry.ledger), Vec::new());
        }
        let forgotten = if inner.last_sweep.elapsed() >= self.kept.min(Duration::from_secs(60)) {
            inner.sweep(self.kept)
        } else {
            Vec::new()
        };
        let ledger = Arc::new(Ledger::new(acked));
        inner.ledgers.insert(
            id.to_owned(),
            Entry {
                ledger: Arc::clone(&ledger),
                unused_since: None,
            },
        );
        (ledger, forgotten)
    }

    /// Puts a new ledger in place of `id`'s (a new incarnation of the agent).
    pub fn replace(&self, id: &str, ledger: Arc<Ledger>) {
        self.inner.lock().unwrap().ledgers.insert(
            id.to_owned(),
            Entry {
                ledger,
                unused_since: None,
            },
        );
    }
}

impl Inner {
    /// Marks the ledgers nothing else holds and drops those unused for `kept`; returns their ids.
    fn sweep(&mut self, kept: Duration) -> Vec<String> {
        let now = Instant::now();
        self.last_sweep = now;
        let mut forgotten = Vec::new();
        self.ledgers.retain(|id, entry| {
            if Arc::strong_count(&entry.ledger) > 1 {
                entry.unused_since = None;
                return true;
            }
            let since = *entry.unused_since.get_or_insert(now);
            if now.duration_since(since) < kept {
                return true;
            }
            forgotten.push(id.clone());
            false
        });
        forgotten
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(ledgers: &Ledgers) -> usize {
        ledgers.inner.lock().unwrap().ledgers.len()
    }

    #[test]
    fn unused_ledgers_are_forgotten_and_used_ones_kept() {
        let ledgers = Ledgers::new(Duration::ZERO);
        let (held, _) = ledgers.get("streaming", 0);
        let (gone, _) = ledgers.get("went-away", 7);
        *gone.submitted.try_lock().unwrap() = 9;
        drop(gone);
        // A new id sweeps: the one nothing holds goes, the held one stays.
        let (_new, forgotten) = ledgers.get("new", 0);
        assert_eq!(forgotten, ["went-away"]);
        assert_eq!(count(&ledgers), 2);
        assert!(Arc::ptr_eq(&ledgers.get("streaming", 0).0, &held));
        // One that comes back after it was forgotten starts again where its Hello says.
        let (back, _) = ledgers.get("went-away", 7);
        assert_eq!(*back.submitted.try_lock().unwrap(), 7);
    }

    #[test]
    fn a_ledger_is_kept_for_the_whole_period() {
        let ledgers = Ledgers::new(Duration::from_secs(3600));
        drop(ledgers.get("a", 0));
        // Sweeps are due only once a minute has passed; force one now.
        let forgotten = ledgers.inner.lock().unwrap().sweep(ledgers.kept);
        assert!(forgotten.is_empty());
        let (again, forgotten) = ledgers.get("a", 0);
        assert!(forgotten.is_empty());
        drop(again);
        assert_eq!(count(&ledgers), 1);
    }
}
