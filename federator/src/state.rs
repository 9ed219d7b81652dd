//! Live check state: per (cluster, check, target, node-scope) health with consecutive counts,
//! and a bounded history of recent results per check.

use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::watch;
use vigil_proto::{Outcome, ProbeResult};

use crate::record::{ResultRecord, Start};

/// The state's maps are looked up once per result; foldhash (seeded per process) costs a
/// fraction of SipHash on these short string keys.
type Fast = foldhash::fast::RandomState;

/// Results kept per check for `/api/v1/results`.
pub const HISTORY_PER_CHECK: usize = 200;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Health {
    Unknown,
    Healthy,
    Failing,
}

/// What the state needs to know of a check.
#[derive(Clone, Debug)]
pub struct CheckRules {
    pub failure_threshold: u32,
    pub success_threshold: u32,
    /// Whether each node's runs form their own state.
    pub node_scoped: bool,
    /// A target no result has come for in this long is forgotten (see [`State::forget_stale`]).
    pub stale_after: Duration,
}

/// The least time a target is kept without results: Prometheus's staleness lookback.
pub const STALE_AFTER_AT_LEAST: Duration = Duration::from_secs(300);

impl CheckRules {
    /// How long a check run every `interval` keeps a target without results: three missed
    /// runs, and never less than [`STALE_AFTER_AT_LEAST`].
    pub fn stale_after(interval: Duration) -> Duration {
        (interval.saturating_mul(3)).max(STALE_AFTER_AT_LEAST)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct StateKey {
    pub cluster: String,
    pub check: String,
    pub target: String,
    /// The node for node-scoped checks, empty for cluster-scoped ones.
    pub node: String,
}

/// A [`StateKey`] as borrowed parts (cluster, check, target, node), so that applying a result
/// finds its target without building a key; hashed and compared exactly as `StateKey`'s
/// derived `Hash` and `Eq`.
trait KeyParts {
    fn parts(&self) -> (&str, &str, &str, &str);
}

impl KeyParts for StateKey {
    fn parts(&self) -> (&str, &str, &str, &str) {
        (&self.cluster, &self.check, &self.target, &self.node)
    }
}

impl KeyParts for (&str, &str, &str, &str) {
    fn parts(&self) -> (&str, &str, &str, &str) {
        *self
    }
}

impl<'a> Borrow<dyn KeyParts + 'a> for StateKey {
    fn borrow(&self) -> &(dyn KeyParts + 'a) {
        self
    }
}

impl PartialEq for dyn KeyParts + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn KeyParts + '_ {}

impl std::hash::Hash for dyn KeyParts + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Field by field, as the derive hashes `StateKey`.
        let (cluster, check, target, node) = self.parts();
        cluster.hash(state);
        check.hash(state);
        target.hash(state);
        node.hash(state);
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TargetState {
    #[serde(flatten)]
    pub key: StateKey,
    pub state: Health,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    /// When the state last changed (Unix nanoseconds).
    pub since_unix_nanos: i64,
    /// Start of the first failed run in the current run of failures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since_unix_nanos: Option<i64>,
    /// Shared with the check's history: one record per result.
    #[serde(serialize_with = "serialize_record")]
    pub last: Arc<ResultRecord>,
    /// When the federator last took a result for it (its own clock: agents' clocks differ).
    #[serde(skip)]
    pub seen: Instant,
}

fn serialize_record<S: serde::Serializer>(
    record: &Arc<ResultRecord>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    record.as_ref().serialize(serializer)
}

impl TargetState {
    /// Folds in a result (not older than the last one, already in `last`) and returns the new
    /// health if it changed.
    fn observe(&mut self, ok: bool, now: i64, rules: &CheckRules) -> Option<Health> {
        if ok {
            self.consecutive_successes += 1;
            self.consecutive_failures = 0;
        } else {
            if self.consecutive_failures == 0 {
                self.failing_since_unix_nanos = Some(now);
            }
            self.consecutive_failures += 1;
            self.consecutive_successes = 0;
        }
        let next = match self.state {
            Health::Failing | Health::Unknown
                if self.consecutive_successes >= rules.success_threshold =>
            {
                Health::Healthy
            }
            Health::Healthy | Health::Unknown
                if self.consecutive_failures >= rules.failure_threshold =>
            {
                Health::Failing
            }
            same => same,
        };
        if ok && next == Health::Healthy {
            self.failing_since_unix_nanos = None;
        }
        if next == self.state {
            return None;
        }
        self.state = next;
        self.since_unix_nanos = now;
        Some(next)
    }
}

/// A change of health, for alerting and status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub key: StateKey,
    pub from: Health,
    pub to: Health,
    pub at_unix_nanos: i64,
    pub reason: String,
}

/// Check ids with this prefix are the agents' own node diagnostics (`node/memory`, ...): no
/// HealthCheck defines them, so their state is created on their first result.
pub const AGENT_OWNED_PREFIX: &str = "node/";

/// Whether a check id names an agent-owned node diagnostic.
pub fn is_agent_owned(check: &str) -> bool {
    check.starts_with(AGENT_OWNED_PREFIX)
}

/// The rules of agent-owned checks: every result counts at once, per node.
pub const AGENT_OWNED_RULES: CheckRules = CheckRules {
    failure_threshold: 1,
    success_threshold: 1,
    node_scoped: true,
    stale_after: STALE_AFTER_AT_LEAST,
};

/// How many targets of a check are in each health, in one cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub healthy: u32,
    pub failing: u32,
    pub unknown: u32,
}

impl Counts {
    pub fn total(&self) -> u32 {
        self.healthy + self.failing + self.unknown
    }

    /// The worst health: Failing if any target fails, Healthy if all are, else Unknown.
    pub fn health(&self) -> Health {
        if self.failing > 0 {
            Health::Failing
        } else if self.healthy > 0 && self.unknown == 0 {
            Health::Healthy
        } else {
            Health::Unknown
        }
    }

    pub(crate) fn slot(&mut self, health: Health) -> &mut u32 {
        match health {
            Health::Healthy => &mut self.healthy,
            Health::Failing => &mut self.failing,
            Health::Unknown => &mut self.unknown,
        }
    }

    pub fn add(&mut self, other: Counts) {
        self.healthy += other.healthy;
        self.failing += other.failing;
        self.unknown += other.unknown;
    }
}

/// One check's target counts per cluster, read without copying its targets.
#[derive(Clone, Debug)]
pub struct CheckSummary {
    pub id: String,
    pub agent_owned: bool,
    pub node_scoped: bool,
    /// Sorted by cluster.
    pub clusters: Vec<(String, Counts)>,
}

#[derive(Default)]
struct CheckEntry {
    rules: Option<CheckRules>,
    /// Created by a `node/` result rather than by a HealthCheck.
    agent_owned: bool,
    /// Hashed, not ordered: applying a result looks its target up, and a search through an
    /// ordered map of a busy check's targets (long keys sharing their prefixes) cost a fifth
    /// of the whole ingest. Readers sort what they return.
    targets: HashMap<StateKey, TargetState, Fast>,
    /// Per cluster, how many of `targets` are in each health (kept on every change).
    counts: BTreeMap<String, Counts>,
    history: VecDeque<Arc<ResultRecord>>,
}

/// All live state, behind one lock held only for map updates.
#[derive(Default)]
pub struct State {
    checks: Mutex<HashMap<String, CheckEntry, Fast>>,
    /// A generation bumped on every health transition and every change of the check set.
    changes: watch::Sender<u64>,
}

impl State {
    /// Replaces the set of known checks; state of removed checks is dropped, others kept.
    /// Returns the keys whose state was dropped (so their metric series can go too).
    pub fn set_rules(
        &self,
        rules: impl IntoIterator<Item = (String, CheckRules)>,
    ) -> Vec<StateKey> {
        let mut checks = self.checks.lock().unwrap();
        let mut fresh: HashMap<String, CheckEntry, Fast> = HashMap::default();
        let mut dropped = Vec::new();
        for (id, r) in rules {
            let mut entry = checks.remove(&id).unwrap_or_default();
            if entry
                .rules
                .as_ref()
                .is_some_and(|old| old.node_scoped != r.node_scoped)
            {
                dropped.extend(std::mem::take(&mut entry.targets).into_keys());
                entry.counts.clear();
            }
            entry.rules = Some(r);
            entry.agent_owned = false;
            fresh.insert(id, entry);
        }
        // What is left belongs to checks that are gone, except the agents' node diagnostics.
        for (id, e) in checks.drain() {
            if e.agent_owned {
                fresh.insert(id, e);
            } else {
                dropped.extend(e.targets.into_keys());
            }
        }
        *checks = fresh;
        self.changes.send_modify(|g| *g += 1);
        dropped
    }

    /// A receiver that sees a new generation after every health transition or check-set change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Folds one result into the state and stamps its `scope`; returns the health change it
    /// caused, if any. Results of unknown checks and results older than the last applied one
    /// leave the health as it is.
    pub fn apply(&self, result: &mut ProbeResult) -> Option<Transition> {
        self.apply_at(result, Instant::now())
    }

    /// [`apply`](Self::apply), the result taken at `seen` (a batch's results read the clock
    /// once).
    pub fn apply_at(&self, result: &mut ProbeResult, seen: Instant) -> Option<Transition> {
        let mut checks = self.checks.lock().unwrap();
        if is_agent_owned(&result.check_id) && !checks.contains_key(&result.check_id) {
            checks.insert(
                result.check_id.clone(),
                CheckEntry {
                    rules: Some(AGENT_OWNED_RULES),
                    agent_owned: true,
                    ..CheckEntry::default()
                },
            );
            self.changes.send_modify(|g| *g += 1);
        }
        let entry = checks.get_mut(&result.check_id)?;
        let rules = entry.rules.clone()?;
        let scope = if rules.node_scoped { "node" } else { "cluster" };
        if result.scope != scope {
            result.scope.clear();
            result.scope.push_str(scope);
        }
        // The oldest record makes room and is rewritten in place (unless a reader still holds
        // it): no allocation per result once the history is full.
        let mut slot = if entry.history.len() == HISTORY_PER_CHECK {
            entry.history.pop_front().unwrap_or_default()
        } else {
            Arc::default()
        };
        let start = Start::of(result);
        Arc::make_mut(&mut slot).fill_from_at(result, &start);
        entry.history.push_back(slot);

        let node = if rules.node_scoped { &result.node } else { "" };
        let parts = (
            result.cluster.as_str(),
            result.check_id.as_str(),
            result.target.as_str(),
            node,
        );
        let ok = result.outcome() == Outcome::Success;
        let now = result.start_unix_nanos;
        // One search of the targets on the common path; a key is built only for a new target.
        let change = match entry.targets.get_mut(&parts as &dyn KeyParts) {
            Some(target) => {
                if now < target.last.start_unix_nanos {
                    return None; // a late result from an agent that no longer runs this check
                }
                let from = target.state;
                Arc::make_mut(&mut target.last).fill_from_at(result, &start);
                target.seen = seen;
                target
                    .observe(ok, now, &rules)
                    .map(|to| (from, to, target.key.clone()))
            }
            None => {
                *entry
                    .counts
                    .entry(result.cluster.clone())
                    .or_default()
                    .slot(Health::Unknown) += 1;
                let key = StateKey {
                    cluster: result.cluster.clone(),
                    check: result.check_id.clone(),
                    target: result.target.clone(),
                    node: node.to_owned(),
                };
                let mut fresh = TargetState {
                    key: key.clone(),
                    state: Health::Unknown,
                    consecutive_failures: 0,
                    consecutive_successes: 0,
                    since_unix_nanos: now,
                    failing_since_unix_nanos: None,
                    last: Arc::new(ResultRecord::from_proto(result)),
                    seen,
                };
                let change = fresh
                    .observe(ok, now, &rules)
                    .map(|to| (Health::Unknown, to, key.clone()));
                entry.targets.insert(key, fresh);
                change
            }
        };
        let (from, to, key) = change?;
        let counts = entry.counts.entry(result.cluster.clone()).or_default();
        *counts.slot(from) -= 1;
        *counts.slot(to) += 1;
        self.changes.send_modify(|g| *g += 1);
        Some(Transition {
            key,
            from,
            to,
            at_unix_nanos: now,
            reason: result.reason.clone(),
        })
    }

    /// The targets of one check, in key order.
    pub fn targets(&self, check: &str) -> Vec<TargetState> {
        let checks = self.checks.lock().unwrap();
        checks
            .get(check)
            .map(|e| sorted(e.targets.values().cloned().collect()))
            .unwrap_or_default()
    }

    /// The targets of one check in one cluster (and on one node, if given), in key order.
    pub fn targets_in(&self, check: &str, cluster: &str, node: Option<&str>) -> Vec<TargetState> {
        let checks = self.checks.lock().unwrap();
        checks
            .get(check)
            .map(|e| {
                sorted(
                    e.targets
                        .values()
                        .filter(|t| {
                            t.key.cluster == cluster && node.is_none_or(|n| t.key.node == n)
                        })
                        .cloned()
                        .collect(),
                )
            })
            .unwrap_or_default()
    }

    /// Every check's target counts per cluster, sorted by check id; no target is copied.
    pub fn summaries(&self) -> Vec<CheckSummary> {
        let checks = self.checks.lock().unwrap();
        let mut out: Vec<CheckSummary> = checks
            .iter()
            .map(|(id, e)| CheckSummary {
                id: id.clone(),
                agent_owned: e.agent_owned,
                node_scoped: e.rules.as_ref().is_some_and(|r| r.node_scoped),
                clusters: e
                    .counts
                    .iter()
                    .filter(|(_, c)| c.total() > 0)
                    .map(|(k, c)| (k.clone(), *c))
                    .collect(),
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// The (cluster, node) pairs that have node-scoped state, with that state's counts.
    pub fn nodes(&self) -> BTreeMap<(String, String), NodeCounts> {
        let checks = self.checks.lock().unwrap();
        let mut nodes: BTreeMap<(String, String), NodeCounts> = BTreeMap::new();
        for e in checks.values() {
            for t in e.targets.values().filter(|t| !t.key.node.is_empty()) {
                let n = nodes
                    .entry((t.key.cluster.clone(), t.key.node.clone()))
                    .or_default();
                if e.agent_owned {
                    n.diagnostics += 1;
                    if t.state == Health::Failing {
                        let name = t.key.check.trim_start_matches(AGENT_OWNED_PREFIX);
                        let class = t.last.details.get("problem").cloned();
                        n.problems.push(class.unwrap_or_else(|| name.to_owned()));
                    }
                } else if t.state == Health::Failing {
                    n.failing_checks += 1;
                }
                *n.counts.slot(t.state) += 1;
            }
        }
        nodes
    }

    /// Up to `limit` most recent results of one check, newest first.
    pub fn recent(&self, check: &str, limit: usize) -> Option<Vec<ResultRecord>> {
        let checks = self.checks.lock().unwrap();
        checks.get(check).map(|e| {
            e.history
                .iter()
                .rev()
                .take(limit)
                .map(|r| ResultRecord::clone(r))
                .collect()
        })
    }

    /// The agent-owned checks (`node/...`) results have created, sorted.
    pub fn agent_owned_checks(&self) -> Vec<String> {
        let checks = self.checks.lock().unwrap();
        let mut ids: Vec<String> = checks
            .iter()
            .filter(|(_, e)| e.agent_owned)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Forgets the targets the federator has taken no result for in their check's
    /// `stale_after` before `now`, and node diagnostics left without targets: nothing
    /// checks them any more (their node left, or an AnyNode check moved to another cluster),
    /// so their last health must not stand for ever (a Failing one would keep its check
    /// Failing and its alert firing). Returns their keys, for their metric series to go too.
    pub fn forget_stale(&self, now: Instant) -> Vec<StateKey> {
        let mut checks = self.checks.lock().unwrap();
        let mut forgotten = Vec::new();
        checks.retain(|_, entry| {
            let Some(rules) = &entry.rules else {
                return true;
            };
            let stale = rules.stale_after;
            let counts = &mut entry.counts;
            entry.targets.retain(|key, t| {
                if now.saturating_duration_since(t.seen) <= stale {
                    return true;
                }
                if let Some(c) = counts.get_mut(&key.cluster) {
                    *c.slot(t.state) -= 1;
                }
                forgotten.push(key.clone());
                false
            });
            counts.retain(|_, c| c.total() > 0);
            !(entry.agent_owned && entry.targets.is_empty())
        });
        if !forgotten.is_empty() {
            self.changes.send_modify(|g| *g += 1);
        }
        forgotten
    }

    /// Every target state, for metrics.
    pub fn all_targets(&self) -> Vec<TargetState> {
        let checks = self.checks.lock().unwrap();
        checks
            .values()
            .flat_map(|e| e.targets.values().cloned())
            .collect()
    }
}

/// Targets in key order.
fn sorted(mut targets: Vec<TargetState>) -> Vec<TargetState> {
    targets.sort_unstable_by(|a, b| a.key.cmp(&b.key));
    targets
}

/// What a node's node-scoped state adds up to (diagnostics and EveryNode checks).
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeCounts {
    #[serde(skip)]
    pub counts: Counts,
    /// The problem classes of its failing diagnostics (`VigilMemoryPressure`, ...).
    pub problems: Vec<String>,
    pub diagnostics: u32,
    pub failing_checks: u32,
}

/// The worst health among targets: Failing if any fails, Healthy if all are, else Unknown.
pub fn aggregate(targets: &[TargetState]) -> Health {
    if targets.iter().any(|t| t.state == Health::Failing) {
        Health::Failing
    } else if !targets.is_empty() && targets.iter().all(|t| t.state == Health::Healthy) {
        Health::Healthy
    } else {
        Health::Unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(fail: u32, ok: u32) -> CheckRules {
        CheckRules {
            failure_threshold: fail,
            success_threshold: ok,
            node_scoped: false,
            stale_after: STALE_AFTER_AT_LEAST,
        }
    }

    fn result(seq: u64, outcome: Outcome) -> ProbeResult {
        ProbeResult {
            check_id: "ns/c".into(),
            target: "t".into(),
            node: format!("n{}", seq % 2),
            cluster: "local".into(),
            agent_id: "a".into(),
            seq,
            start_unix_nanos: i64::try_from(seq).unwrap() * 1_000,
            outcome: outcome as i32,
            reason: format!("r{seq}"),
            ..Default::default()
        }
    }

    #[test]
    fn thresholds_drive_transitions() {
        let state = State::default();
        state.set_rules([("ns/c".to_owned(), rules(3, 2))]);
        assert_eq!(state.apply(&mut result(1, Outcome::Success)), None);
        let t = state.apply(&mut result(2, Outcome::Success)).unwrap();
        assert_eq!((t.from, t.to), (Health::Unknown, Health::Healthy));
        assert_eq!(state.apply(&mut result(3, Outcome::Failure)), None);
        assert_eq!(state.apply(&mut result(4, Outcome::Timeout)), None);
        let t = state.apply(&mut result(5, Outcome::Error)).unwrap();
        assert_eq!(
            (t.from, t.to, t.reason.as_str()),
            (Health::Healthy, Health::Failing, "r5")
        );
        let target = &state.targets("ns/c")[0];
        assert_eq!(target.failing_since_unix_nanos, Some(3_000));
        assert_eq!(target.consecutive_failures, 3);
        assert_eq!(state.apply(&mut result(6, Outcome::Success)), None);
        let t = state.apply(&mut result(7, Outcome::Success)).unwrap();
        assert_eq!((t.from, t.to), (Health::Failing, Health::Healthy));
        assert_eq!(state.targets("ns/c")[0].failing_since_unix_nanos, None);
    }

    #[test]
    fn cluster_scope_merges_nodes_and_node_scope_splits_them() {
        let state = State::default();
        state.set_rules([("ns/c".to_owned(), rules(1, 1))]);
        state.apply(&mut result(1, Outcome::Success));
        state.apply(&mut result(2, Outcome::Success));
        assert_eq!(state.targets("ns/c").len(), 1);
        state.set_rules([(
            "ns/c".to_owned(),
            CheckRules {
                node_scoped: true,
                ..rules(1, 1)
            },
        )]);
        state.apply(&mut result(3, Outcome::Success));
        state.apply(&mut result(4, Outcome::Success));
        assert_eq!(state.targets("ns/c").len(), 2);
    }

    /// A target no result came for in its check's stale period goes, with its counts; one
    /// that reported within it stays, and a result brings a forgotten target back. Results
    /// are timed by when the federator took them, not by their (agent's) start time.
    #[test]
    fn targets_without_results_for_the_stale_period_are_forgotten() {
        let t0 = Instant::now();
        let secs = |n: u64| t0 + Duration::from_secs(n);
        let state = State::default();
        let node_scoped = CheckRules {
            node_scoped: true,
            stale_after: Duration::from_secs(60),
            ..rules(1, 1)
        };
        state.set_rules([("ns/c".to_owned(), node_scoped)]);
        let on = |seq: u64, node: &str| ProbeResult {
            node: node.into(),
            ..result(seq, Outcome::Failure)
        };
        state.apply_at(&mut on(1, "gone"), secs(10)).unwrap();
        state.apply_at(&mut on(2, "here"), secs(10)).unwrap();
        state.apply_at(&mut on(3, "here"), secs(50));
        // A node diagnostic of the node that left, too.
        let mut diagnostic = ProbeResult {
            check_id: "node/kernel".into(),
            ..on(4, "gone")
        };
        state.apply_at(&mut diagnostic, secs(10));
        let generation = *state.subscribe().borrow();

        assert!(state.forget_stale(secs(70)).is_empty(), "60 s is not past");
        let forgotten = state.forget_stale(secs(71));
        assert_eq!(
            forgotten
                .iter()
                .map(|k| (k.check.as_str(), k.node.as_str()))
                .collect::<Vec<_>>(),
            [("ns/c", "gone")],
            "the node diagnostic is kept for at least {STALE_AFTER_AT_LEAST:?}"
        );
        assert!(
            *state.subscribe().borrow() > generation,
            "readers see the change"
        );
        let targets = state.targets("ns/c");
        assert_eq!(targets.len(), 1);
        assert_eq!(targets[0].key.node, "here");
        let summary = |id: &str| state.summaries().into_iter().find(|c| c.id == id);
        assert_eq!(summary("ns/c").unwrap().clusters[0].1.total(), 1);
        assert!(state.forget_stale(secs(71)).is_empty());

        let t = state.apply_at(&mut on(5, "gone"), secs(80)).unwrap();
        assert_eq!((t.from, t.to), (Health::Unknown, Health::Failing));
        assert_eq!(summary("ns/c").unwrap().clusters[0].1.total(), 2);

        // The diagnostic goes after its own period, and with its last target the check.
        state.apply_at(&mut on(6, "here"), secs(300));
        state.apply_at(&mut on(7, "gone"), secs(300));
        let forgotten = state.forget_stale(secs(311));
        assert_eq!(forgotten.len(), 1);
        assert_eq!(forgotten[0].check, "node/kernel");
        assert!(summary("node/kernel").is_none());
        assert_eq!(summary("ns/c").unwrap().clusters[0].1.total(), 2);
    }

    #[test]
    fn removed_checks_report_the_state_they_drop() {
        let state = State::default();
        state.set_rules([
            ("ns/c".to_owned(), rules(1, 1)),
            ("ns/d".to_owned(), rules(1, 1)),
        ]);
        state.apply(&mut result(1, Outcome::Failure));
        let dropped = state.set_rules([("ns/d".to_owned(), rules(1, 1))]);
        assert_eq!(dropped.len(), 1);
        assert_eq!(
            (dropped[0].check.as_str(), dropped[0].target.as_str()),
            ("ns/c", "t")
        );
        assert!(state.targets("ns/c").is_empty());
        assert!(
            state
                .set_rules([("ns/d".to_owned(), rules(1, 1))])
                .is_empty()
        );
    }

    #[test]
    fn stale_results_and_unknown_checks_are_ignored() {
        let state = State::default();
        state.set_rules([("ns/c".to_owned(), rules(1, 1))]);
        state.apply(&mut result(5, Outcome::Success));
        assert_eq!(state.apply(&mut result(3, Outcome::Failure)), None);
        assert_eq!(state.targets("ns/c")[0].state, Health::Healthy);
        let mut other = result(6, Outcome::Failure);
        other.check_id = "ns/unknown".into();
        assert_eq!(state.apply(&mut other), None);
    }

    #[test]
    fn agent_owned_checks_need_no_rules_and_survive_reloads() {
        let state = State::default();
        state.set_rules([("ns/c".to_owned(), rules(3, 3))]);
        let mut r = result(1, Outcome::Failure);
        r.check_id = "node/memory".into();
        r.target = "memory".into();
        let t = state.apply(&mut r).unwrap();
        assert_eq!((t.from, t.to), (Health::Unknown, Health::Failing));
        assert_eq!(t.key.node, "n1");
        assert_eq!(r.scope, "node");
        assert_eq!(state.agent_owned_checks(), ["node/memory"]);
        // Reloading the HealthChecks keeps the node diagnostics' state.
        assert!(state.set_rules([]).is_empty());
        let mut ok = result(3, Outcome::Success);
        ok.check_id = "node/memory".into();
        ok.target = "memory".into();
        let t = state.apply(&mut ok).unwrap();
        assert_eq!((t.from, t.to), (Health::Failing, Health::Healthy));
        // A HealthCheck that happens to live in namespace "node" is not agent-owned.
        state.set_rules([("node/web".to_owned(), rules(1, 1))]);
        assert_eq!(state.agent_owned_checks(), ["node/memory"]);
    }

    #[test]
    fn history_is_bounded_and_newest_first() {
        let state = State::default();
        state.set_rules([("ns/c".to_owned(), rules(1, 1))]);
        for seq in 1..=(HISTORY_PER_CHECK as u64 + 10) {
            state.apply(&mut result(seq, Outcome::Success));
        }
        let recent = state.recent("ns/c", 1000).unwrap();
        assert_eq!(recent.len(), HISTORY_PER_CHECK);
        assert_eq!(recent[0].seq, HISTORY_PER_CHECK as u64 + 10);
    }

    /// A target's last result stays when the check's history moves past it. (The history and
    /// the targets keep their own records: sharing one, the history's oldest record would
    /// still be some target's last about half the time with 350 targets and 200 slots, and
    /// each such result would then allocate a new record instead of rewriting one.)
    #[test]
    fn a_quiet_targets_last_result_outlives_the_history() {
        let state = State::default();
        state.set_rules([("ns/c".to_owned(), rules(1, 1))]);
        let mut quiet = result(1, Outcome::Failure);
        quiet.target = "quiet".into();
        state.apply(&mut quiet);
        for seq in 2..=(2 * HISTORY_PER_CHECK as u64) {
            state.apply(&mut result(seq, Outcome::Success));
        }
        let targets = state.targets("ns/c");
        let quiet = targets.iter().find(|t| t.key.target == "quiet").unwrap();
        assert_eq!((quiet.last.seq, quiet.last.reason.as_str()), (1, "r1"));
        let busy = targets.iter().find(|t| t.key.target == "t").unwrap();
        assert_eq!(busy.last.seq, 2 * HISTORY_PER_CHECK as u64);
    }
}
