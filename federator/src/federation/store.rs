//! One forwarding cluster's check state at the global federator, kept compact: a global holds
//! every cluster's every (check, target, node), a million at 50 clusters × 100 nodes × 200
//! checks, so a state is ~100 bytes (node, target and agent names interned, the last result
//! without its details) instead of a full [`State`](crate::state::State) entry. The health
//! rules are the same as the cluster's own (`failureThreshold`/`successThreshold`, Unknown →
//! Healthy/Failing), so the global shows what the cluster's federator decided.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use vigil_proto::{Outcome, ProbeResult};

use crate::record::{ResultRecord, SCHEMA_VERSION, rfc3339};
use crate::state::{
    AGENT_OWNED_PREFIX, AGENT_OWNED_RULES, CheckRules, CheckSummary, Counts, Health, NodeCounts,
    StateKey, TargetState, is_agent_owned,
};

/// Results kept per check for the check's detail (`results`).
pub const HISTORY_PER_CHECK: usize = 50;

/// Names seen once, then referred to by number.
#[derive(Default)]
struct Names {
    names: Vec<Box<str>>,
    ids: HashMap<Box<str>, u32>,
}

impl Names {
    fn id(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        id
    }

    fn get(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", |n| n)
    }

    fn find(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }
}

/// A result without what the global does not show per target.
#[derive(Clone)]
struct Last {
    agent: u32,
    node: u32,
    target: u32,
    seq: u64,
    start_unix_nanos: i64,
    latency_nanos: u64,
    outcome: i32,
    attempt: u32,
    reason: Option<Box<str>>,
    /// `details.problem` of a node diagnostic (its problem class).
    problem: Option<Box<str>>,
}

struct Target {
    node: u32,
    target: u32,
    state: Health,
    consecutive_failures: u32,
    consecutive_successes: u32,
    since_unix_nanos: i64,
    failing_since_unix_nanos: Option<i64>,
    last: Last,
}

struct Check {
    rules: CheckRules,
    agent_owned: bool,
    /// Target names of this check (usually one).
    target_names: Names,
    index: HashMap<(u32, u32), u32>,
    targets: Vec<Target>,
    counts: Counts,
    history: VecDeque<Last>,
}

impl Check {
    /// Room for `nodes` targets and the whole history is taken now, in one go, rather than
    /// grown while results stream in: long-lived blocks allocated between millions of
    /// short-lived ones would each pin an allocator page (at 50 clusters that was 3.7 GiB of
    /// mostly empty pages for 1M states).
    fn new(rules: CheckRules, agent_owned: bool, nodes: usize) -> Self {
        let room = if rules.node_scoped { nodes.max(1) } else { 1 };
        Self {
            rules,
            agent_owned,
            target_names: Names::default(),
            index: HashMap::with_capacity(room),
            targets: Vec::with_capacity(room),
            counts: Counts::default(),
            history: VecDeque::with_capacity(HISTORY_PER_CHECK),
        }
    }
}

#[derive(Default)]
struct Inner {
    checks: HashMap<String, Check>,
    nodes: Names,
    agents: Names,
}

/// One cluster's state at the global federator.
pub struct ClusterStore {
    cluster: String,
    inner: Mutex<Inner>,
}

impl ClusterStore {
    pub fn new(cluster: &str) -> Self {
        Self {
            cluster: cluster.to_owned(),
            inner: Mutex::default(),
        }
    }

    /// The cluster's checks and their rules, and its agents (agent id, node); state of checks
    /// that are gone is dropped (its agents' node diagnostics stay), and a check whose scope
    /// changed starts again.
    pub fn set_rules<'a>(
        &self,
        rules: impl IntoIterator<Item = (String, CheckRules)>,
        agents: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) {
        let mut guard = self.inner.lock().unwrap();
        let inner = &mut *guard;
        for (agent, node) in agents {
            inner.agents.id(agent);
            inner.nodes.id(node);
        }
        let nodes = inner.nodes.names.len();
        let mut old = std::mem::take(&mut inner.checks);
        for (id, r) in rules {
            let check = match old.remove(&id) {
                Some(mut c) if c.rules.node_scoped == r.node_scoped && !c.agent_owned => {
                    c.rules = r;
                    c
                }
                _ => Check::new(r, false, nodes),
            };
            inner.checks.insert(id, check);
        }
        for (id, c) in old {
            if c.agent_owned {
                inner.checks.insert(id, c);
            }
        }
    }

    /// Folds one forwarded result in; returns whether the target's health changed.
    pub fn apply(&self, r: &ProbeResult) -> bool {
        let mut guard = self.inner.lock().unwrap();
        let inner = &mut *guard;
        if is_agent_owned(&r.check_id) && !inner.checks.contains_key(&r.check_id) {
            let nodes = inner.nodes.names.len();
            inner.checks.insert(
                r.check_id.clone(),
                Check::new(AGENT_OWNED_RULES, true, nodes),
            );
        }
        let Some(check) = inner.checks.get_mut(&r.check_id) else {
            return false;
        };
        let node = if check.rules.node_scoped {
            inner.nodes.id(&r.node)
        } else {
            u32::MAX
        };
        let last = Last {
            agent: inner.agents.id(&r.agent_id),
            node: inner.nodes.id(&r.node),
            target: check.target_names.id(&r.target),
            seq: r.seq,
            start_unix_nanos: r.start_unix_nanos,
            latency_nanos: r.latency_nanos,
            outcome: r.outcome,
            attempt: r.attempt,
            reason: (!r.reason.is_empty()).then(|| r.reason.as_str().into()),
            problem: r.details.get("problem").map(|p| p.as_str().into()),
        };
        if check.history.len() == HISTORY_PER_CHECK {
            check.history.pop_front();
        }
        check.history.push_back(last.clone());
        let now = r.start_unix_nanos;
        let key = (node, last.target);
        let i = match check.index.get(&key) {
            Some(i) => *i as usize,
            None => {
                check
                    .index
                    .insert(key, u32::try_from(check.targets.len()).unwrap_or(u32::MAX));
                check.targets.push(Target {
                    node,
                    target: last.target,
                    state: Health::Unknown,
                    consecutive_failures: 0,
                    consecutive_successes: 0,
                    since_unix_nanos: now,
                    failing_since_unix_nanos: None,
                    last: last.clone(),
                });
                check.counts.unknown += 1;
                check.targets.len() - 1
            }
        };
        let rules = &check.rules;
        let t = &mut check.targets[i];
        if now < t.last.start_unix_nanos {
            return false;
        }
        t.last = last;
        let ok = r.outcome() == Outcome::Success;
        if ok {
            t.consecutive_successes += 1;
            t.consecutive_failures = 0;
        } else {
            if t.consecutive_failures == 0 {
                t.failing_since_unix_nanos = Some(now);
            }
            t.consecutive_failures += 1;
            t.consecutive_successes = 0;
        }
        let next = match t.state {
            Health::Failing | Health::Unknown
                if t.consecutive_successes >= rules.success_threshold =>
            {
                Health::Healthy
            }
            Health::Healthy | Health::Unknown
                if t.consecutive_failures >= rules.failure_threshold =>
            {
                Health::Failing
            }
            same => same,
        };
        if ok && next == Health::Healthy {
            t.failing_since_unix_nanos = None;
        }
        if next == t.state {
            return false;
        }
        *check.counts.slot(t.state) -= 1;
        *check.counts.slot(next) += 1;
        t.state = next;
        t.since_unix_nanos = now;
        true
    }

    /// Every check's counts, sorted by id.
    pub fn summaries(&self) -> Vec<CheckSummary> {
        let inner = self.inner.lock().unwrap();
        let mut out: Vec<CheckSummary> = inner
            .checks
            .iter()
            .map(|(id, c)| CheckSummary {
                id: id.clone(),
                agent_owned: c.agent_owned,
                node_scoped: c.rules.node_scoped,
                clusters: if c.counts.total() > 0 {
                    vec![(self.cluster.clone(), c.counts)]
                } else {
                    Vec::new()
                },
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// The targets of one check (on one node, if given), ordered like [`State`]'s.
    pub fn targets(&self, id: &str, node: Option<&str>) -> Vec<TargetState> {
        let inner = self.inner.lock().unwrap();
        let Some(check) = inner.checks.get(id) else {
            return Vec::new();
        };
        let want = match node {
            Some(n) => match inner.nodes.find(n) {
                Some(n) => Some(n),
                None => return Vec::new(),
            },
            None => None,
        };
        let mut out: Vec<TargetState> = check
            .targets
            .iter()
            .filter(|t| want.is_none_or(|n| t.node == n))
            .map(|t| TargetState {
                key: StateKey {
                    cluster: self.cluster.clone(),
                    check: id.to_owned(),
                    target: check.target_names.get(t.target).to_owned(),
                    node: if t.node == u32::MAX {
                        String::new()
                    } else {
                        inner.nodes.get(t.node).to_owned()
                    },
                },
                state: t.state,
                consecutive_failures: t.consecutive_failures,
                consecutive_successes: t.consecutive_successes,
                since_unix_nanos: t.since_unix_nanos,
                failing_since_unix_nanos: t.failing_since_unix_nanos,
                last: Arc::new(self.record(&inner, id, check, &t.last)),
                // A view: this store does not forget stale targets (see `State::forget_stale`).
                seen: std::time::Instant::now(),
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Up to `limit` most recent results of one check, newest first.
    pub fn recent(&self, id: &str, limit: usize) -> Option<Vec<ResultRecord>> {
        let inner = self.inner.lock().unwrap();
        let check = inner.checks.get(id)?;
        Some(
            check
                .history
                .iter()
                .rev()
                .take(limit)
                .map(|l| self.record(&inner, id, check, l))
                .collect(),
        )
    }

    /// Per node, what its node-scoped state adds up to.
    pub fn nodes(&self) -> BTreeMap<String, NodeCounts> {
        let inner = self.inner.lock().unwrap();
        let mut nodes: BTreeMap<String, NodeCounts> = BTreeMap::new();
        for (id, c) in inner.checks.iter().filter(|(_, c)| c.rules.node_scoped) {
            for t in &c.targets {
                let n = nodes.entry(inner.nodes.get(t.node).to_owned()).or_default();
                if c.agent_owned {
                    n.diagnostics += 1;
                    if t.state == Health::Failing {
                        n.problems.push(t.last.problem.as_deref().map_or_else(
                            || id.trim_start_matches(AGENT_OWNED_PREFIX).to_owned(),
                            ToOwned::to_owned,
                        ));
                    }
                } else if t.state == Health::Failing {
                    n.failing_checks += 1;
                }
                *n.counts.slot(t.state) += 1;
            }
        }
        nodes
    }

    fn record(&self, inner: &Inner, id: &str, check: &Check, l: &Last) -> ResultRecord {
        let outcome = Outcome::try_from(l.outcome).unwrap_or(Outcome::Unspecified);
        ResultRecord {
            schema: SCHEMA_VERSION,
            agent: inner.agents.get(l.agent).to_owned(),
            seq: l.seq,
            check: id.to_owned(),
            target: check.target_names.get(l.target).to_owned(),
            cluster: self.cluster.clone(),
            node: inner.nodes.get(l.node).to_owned(),
            scope: if check.rules.node_scoped {
                "node"
            } else {
                "cluster"
            }
            .to_owned(),
            start: rfc3339(l.start_unix_nanos),
            start_unix_nanos: l.start_unix_nanos,
            latency_seconds: l.latency_nanos as f64 / 1e9,
            outcome: outcome.name().to_owned(),
            reason: l.reason.as_deref().unwrap_or_default().to_owned(),
            attempt: l.attempt,
            details: l
                .problem
                .as_deref()
                .map(|p| BTreeMap::from([("problem".to_owned(), p.to_owned())]))
                .unwrap_or_default(),
            values: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::State;

    fn rules(fail: u32, ok: u32, node_scoped: bool) -> CheckRules {
        CheckRules {
            failure_threshold: fail,
            success_threshold: ok,
            node_scoped,
            stale_after: crate::state::STALE_AFTER_AT_LEAST,
        }
    }

    fn result(seq: u64, node: &str, outcome: Outcome) -> ProbeResult {
        ProbeResult {
            check_id: "ns/c".into(),
            target: "t".into(),
            node: node.into(),
            cluster: "east".into(),
            agent_id: format!("agent-{node}"),
            seq,
            start_unix_nanos: i64::try_from(seq).unwrap() * 1_000,
            latency_nanos: 2_000_000,
            outcome: outcome as i32,
            reason: if outcome == Outcome::Success {
                String::new()
            } else {
                format!("r{seq}")
            },
            attempt: 1,
            ..Default::default()
        }
    }

    /// The compact store decides exactly as the full state does, result for result.
    #[test]
    fn decides_like_the_full_state() {
        let outcomes = [
            Outcome::Success,
            Outcome::Success,
            Outcome::Failure,
            Outcome::Timeout,
            Outcome::Failure,
            Outcome::Success,
            Outcome::Error,
            Outcome::Success,
            Outcome::Success,
        ];
        for node_scoped in [false, true] {
            let store = ClusterStore::new("east");
            let state = State::default();
            store.set_rules([("ns/c".to_owned(), rules(2, 2, node_scoped))], []);
            state.set_rules([("ns/c".to_owned(), rules(2, 2, node_scoped))]);
            for (i, o) in outcomes.iter().enumerate() {
                for node in ["n1", "n2"] {
                    let seq = i as u64 * 2 + u64::from(node == "n2") + 1;
                    let mut r = result(seq, node, *o);
                    let changed = store.apply(&r);
                    assert_eq!(changed, state.apply(&mut r).is_some(), "seq {seq}");
                }
                let full = state.targets("ns/c");
                let compact = store.targets("ns/c", None);
                let shape = |ts: &[TargetState]| -> Vec<String> {
                    ts.iter()
                        .map(|t| {
                            format!(
                                "{:?} {:?} {} {} {:?} {} {} {}",
                                t.key,
                                t.state,
                                t.consecutive_failures,
                                t.consecutive_successes,
                                t.failing_since_unix_nanos,
                                t.since_unix_nanos,
                                t.last.seq,
                                t.last.reason
                            )
                        })
                        .collect()
                };
                assert_eq!(shape(&compact), shape(&full), "after step {i}");
            }
            let summary = &store.summaries()[0];
            assert_eq!(
                summary.clusters[0].1.total(),
                if node_scoped { 2 } else { 1 }
            );
        }
    }

    #[test]
    fn history_is_bounded_newest_first_and_nodes_add_up() {
        let store = ClusterStore::new("east");
        store.set_rules(
            [("ns/c".to_owned(), rules(1, 1, true))],
            [("agent-n1", "n1")],
        );
        for seq in 1..=(HISTORY_PER_CHECK as u64 + 5) {
            store.apply(&result(seq, "n1", Outcome::Failure));
        }
        let recent = store.recent("ns/c", 1000).unwrap();
        assert_eq!(recent.len(), HISTORY_PER_CHECK);
        assert_eq!(recent[0].seq, HISTORY_PER_CHECK as u64 + 5);
        assert_eq!(
            (
                recent[0].cluster.as_str(),
                recent[0].node.as_str(),
                recent[0].outcome.as_str()
            ),
            ("east", "n1", "FAILURE")
        );
        let mut diag = result(1, "n2", Outcome::Failure);
        diag.check_id = "node/memory".into();
        diag.details
            .insert("problem".into(), "VigilMemoryPressure".into());
        store.apply(&diag);
        let nodes = store.nodes();
        assert_eq!(nodes["n1"].failing_checks, 1);
        assert_eq!(nodes["n2"].problems, ["VigilMemoryPressure"]);
        assert_eq!(store.targets("node/memory", Some("n2")).len(), 1);
        assert!(store.targets("node/memory", Some("n9")).is_empty());
        // Reloading the cluster's checks keeps its agents' node diagnostics.
        store.set_rules([], []);
        assert!(store.recent("ns/c", 1).is_none());
        assert_eq!(store.summaries().len(), 1);
    }
}
