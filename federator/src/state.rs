//! Live check state: per (cluster, check, target, node-scope) health with consecutive counts,
//! and a bounded history of recent results per check.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::watch;
use vigil_proto::{Outcome, ProbeResult};

use crate::record::ResultRecord;

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
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct StateKey {
    pub cluster: String,
    pub check: String,
    pub target: String,
    /// The node for node-scoped checks, empty for cluster-scoped ones.
    pub node: String,
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
    pub last: ResultRecord,
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
};

#[derive(Default)]
struct CheckEntry {
    rules: Option<CheckRules>,
    /// Created by a `node/` result rather than by a HealthCheck.
    agent_owned: bool,
    targets: BTreeMap<StateKey, TargetState>,
    history: VecDeque<ResultRecord>,
}

/// All live state, behind one lock held only for map updates.
#[derive(Default)]
pub struct State {
    checks: Mutex<HashMap<String, CheckEntry>>,
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
        let mut fresh: HashMap<String, CheckEntry> = HashMap::new();
        let mut dropped = Vec::new();
        for (id, r) in rules {
            let mut entry = checks.remove(&id).unwrap_or_default();
            if entry
                .rules
                .as_ref()
                .is_some_and(|old| old.node_scoped != r.node_scoped)
            {
                dropped.extend(std::mem::take(&mut entry.targets).into_keys());
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
        result.scope = if rules.node_scoped { "node" } else { "cluster" }.to_owned();
        let record = ResultRecord::from_proto(result);
        if entry.history.len() == HISTORY_PER_CHECK {
            entry.history.pop_front();
        }
        entry.history.push_back(record.clone());

        let key = StateKey {
            cluster: result.cluster.clone(),
            check: result.check_id.clone(),
            target: result.target.clone(),
            node: if rules.node_scoped {
                result.node.clone()
            } else {
                String::new()
            },
        };
        let ok = result.outcome() == Outcome::Success;
        let now = result.start_unix_nanos;
        let target = entry
            .targets
            .entry(key.clone())
            .or_insert_with(|| TargetState {
                key: key.clone(),
                state: Health::Unknown,
                consecutive_failures: 0,
                consecutive_successes: 0,
                since_unix_nanos: now,
                failing_since_unix_nanos: None,
                last: record.clone(),
            });
        if result.start_unix_nanos < target.last.start_unix_nanos {
            return None; // a late result from an agent that no longer runs this check
        }
        target.last = record;
        if ok {
            target.consecutive_successes += 1;
            target.consecutive_failures = 0;
        } else {
            if target.consecutive_failures == 0 {
                target.failing_since_unix_nanos = Some(now);
            }
            target.consecutive_failures += 1;
            target.consecutive_successes = 0;
        }
        let next = match target.state {
            Health::Failing | Health::Unknown
                if target.consecutive_successes >= rules.success_threshold =>
            {
                Health::Healthy
            }
            Health::Healthy | Health::Unknown
                if target.consecutive_failures >= rules.failure_threshold =>
            {
                Health::Failing
            }
            same => same,
        };
        if ok && next == Health::Healthy {
            target.failing_since_unix_nanos = None;
        }
        if next == target.state {
            return None;
        }
        let transition = Transition {
            key,
            from: target.state,
            to: next,
            at_unix_nanos: now,
            reason: result.reason.clone(),
        };
        target.state = next;
        target.since_unix_nanos = now;
        self.changes.send_modify(|g| *g += 1);
        Some(transition)
    }

    /// The targets of one check, in key order.
    pub fn targets(&self, check: &str) -> Vec<TargetState> {
        let checks = self.checks.lock().unwrap();
        checks
            .get(check)
            .map(|e| e.targets.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Up to `limit` most recent results of one check, newest first.
    pub fn recent(&self, check: &str, limit: usize) -> Option<Vec<ResultRecord>> {
        let checks = self.checks.lock().unwrap();
        checks
            .get(check)
            .map(|e| e.history.iter().rev().take(limit).cloned().collect())
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

    /// Every target state, for metrics.
    pub fn all_targets(&self) -> Vec<TargetState> {
        let checks = self.checks.lock().unwrap();
        checks
            .values()
            .flat_map(|e| e.targets.values().cloned())
            .collect()
    }
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
}
