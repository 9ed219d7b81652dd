//! The alerts that are not about a HealthCheck: `NodeProblem` (a failing node diagnostic,
//! `node/<diagnostic>`) and `VigilAgentSilent` (an agent whose stream has been gone for longer
//! than a grace period).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use url::Url;

use super::model::{Alert, LastResult, generator_url};
use crate::hub::AgentView;
use crate::record::rfc3339;
use crate::state::{AGENT_OWNED_PREFIX, StateKey};

/// The `alertname` of a failing node diagnostic.
pub const NODE_PROBLEM: &str = "NodeProblem";
/// The `alertname` of an agent that went away and has not come back.
pub const AGENT_SILENT: &str = "VigilAgentSilent";
/// Both are warnings: they explain check alerts rather than page on their own.
const SEVERITY: &str = "warning";

/// The alert of a failing node diagnostic `key` (`node/<diagnostic>`) of problem class
/// `problem` (`details["problem"]` of its result), `ends_at` left empty for the sender.
pub fn node_problem(
    key: &StateKey,
    problem: &str,
    last: &LastResult,
    starts_at_unix_nanos: i64,
    external_url: &Url,
) -> Alert {
    let diagnostic = key
        .check
        .strip_prefix(AGENT_OWNED_PREFIX)
        .unwrap_or(&key.check);
    let mut labels = BTreeMap::new();
    for (name, value) in [
        ("alertname", NODE_PROBLEM),
        ("node", &key.node),
        ("cluster", &key.cluster),
        ("problem", problem),
        ("diagnostic", diagnostic),
        // Several targets of one diagnostic (disk: one per mount) are several alerts.
        ("target", &key.target),
        ("severity", SEVERITY),
    ] {
        if !value.is_empty() {
            labels.insert(name.to_owned(), value.to_owned());
        }
    }
    let mut alert = Alert {
        labels,
        annotations: BTreeMap::new(),
        starts_at: rfc3339(starts_at_unix_nanos),
        ends_at: String::new(),
        generator_url: generator_url(external_url, &key.check),
    };
    set_node_annotations(&mut alert, key, problem, last);
    alert
}

/// Rewrites a NodeProblem's summary and description from the latest result.
pub fn set_node_annotations(alert: &mut Alert, key: &StateKey, problem: &str, last: &LastResult) {
    let reason = if last.reason.is_empty() {
        "no reason given"
    } else {
        &last.reason
    };
    alert.annotations = BTreeMap::from([
        (
            "summary".to_owned(),
            format!("Node {} of cluster {} has {problem}", key.node, key.cluster),
        ),
        (
            "description".to_owned(),
            format!(
                "Vigil's {} diagnostic on node {} of cluster {} found a problem with {}: {reason}",
                key.check, key.node, key.cluster, key.target
            ),
        ),
    ]);
}

/// The state key a silent agent's alert is tracked under: no check (real ids are never
/// empty), the agent id as target.
pub fn silent_key(agent: &str, node: &str, cluster: &str) -> StateKey {
    StateKey {
        cluster: cluster.to_owned(),
        check: String::new(),
        target: agent.to_owned(),
        node: node.to_owned(),
    }
}

/// The VigilAgentSilent alert of an agent gone since `gone_unix_nanos`.
pub fn agent_silent(
    key: &StateKey,
    gone_unix_nanos: i64,
    after: Duration,
    external_url: &Url,
) -> Alert {
    let mut labels = BTreeMap::new();
    for (name, value) in [
        ("alertname", AGENT_SILENT),
        ("agent", &key.target),
        ("node", &key.node),
        ("cluster", &key.cluster),
        ("severity", SEVERITY),
    ] {
        if !value.is_empty() {
            labels.insert(name.to_owned(), value.to_owned());
        }
    }
    let mut url = external_url.clone();
    let base = url.path().trim_end_matches('/').to_owned();
    url.set_path(&format!("{base}/api/v1/agents"));
    Alert {
        labels,
        annotations: BTreeMap::from([
            (
                "summary".to_owned(),
                format!(
                    "Vigil agent {} on node {} of cluster {} is silent",
                    key.target, key.node, key.cluster
                ),
            ),
            (
                "description".to_owned(),
                format!(
                    "The agent's stream to the federator closed at {} and it has not reconnected \
                     within {}: checks placed on node {} do not run there and its node \
                     diagnostics are not reported",
                    rfc3339(gone_unix_nanos),
                    humantime::format_duration(after),
                    key.node
                ),
            ),
        ]),
        starts_at: rfc3339(gone_unix_nanos),
        ends_at: String::new(),
        generator_url: url.to_string(),
    }
}

/// The alert a cluster that stopped forwarding raises at the global federator.
pub const CLUSTER_SILENT: &str = "VigilClusterSilent";

/// The state key a silent cluster's alert is tracked under: no check, no target, no node.
pub fn cluster_silent_key(cluster: &str) -> StateKey {
    StateKey {
        cluster: cluster.to_owned(),
        check: String::new(),
        target: String::new(),
        node: String::new(),
    }
}

/// The VigilClusterSilent alert of a cluster last heard from at `last_seen_unix_nanos`.
pub fn cluster_silent(
    cluster: &str,
    last_seen_unix_nanos: i64,
    after: Duration,
    external_url: &Url,
) -> Alert {
    let labels = BTreeMap::from([
        ("alertname".to_owned(), CLUSTER_SILENT.to_owned()),
        ("cluster".to_owned(), cluster.to_owned()),
        ("severity".to_owned(), "critical".to_owned()),
    ]);
    let mut url = external_url.clone();
    url.set_query(Some(&format!("cluster={cluster}")));
    Alert {
        labels,
        annotations: BTreeMap::from([
            (
                "summary".to_owned(),
                format!("Vigil cluster {cluster} is silent"),
            ),
            (
                "description".to_owned(),
                format!(
                    "Nothing has arrived from cluster {cluster}'s federator since {} (more than \
                     {}): its link to this federator is down, or the federator itself is. Its \
                     checks show Unknown here until it is back; its own federator still alerts \
                     for them if it runs.",
                    rfc3339(last_seen_unix_nanos),
                    humantime::format_duration(after),
                ),
            ),
        ]),
        starts_at: rfc3339(last_seen_unix_nanos),
        ends_at: String::new(),
        generator_url: url.to_string(),
    }
}

/// What [`Silence::observe`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SilenceChange {
    /// Silent for longer than the grace period since `gone_unix_nanos`.
    Fire { key: StateKey, gone_unix_nanos: i64 },
    /// Back (or replaced by another agent on the same node).
    Resolve { key: StateKey },
}

struct Seen {
    node: String,
    cluster: String,
    gone_since: Option<i64>,
    alerted: bool,
}

/// Agents seen connected, and since when each one that left has been gone.
pub struct Silence {
    after: Duration,
    seen: HashMap<String, Seen>,
}

impl Silence {
    /// Agents gone for longer than `after` are silent.
    pub fn new(after: Duration) -> Self {
        Self {
            after,
            seen: HashMap::new(),
        }
    }

    pub fn after(&self) -> Duration {
        self.after
    }

    /// How often to compare with the connected agents: a quarter of the grace period, between
    /// 10 ms and 1 s.
    pub fn poll_every(&self) -> Duration {
        (self.after / 4).clamp(Duration::from_millis(10), Duration::from_secs(1))
    }

    /// Compares `connected` (the agents with a stream now) with what was seen before, at
    /// `now_unix_nanos`. An agent that left is silent once gone for longer than the grace
    /// period; it is resolved when it reconnects, or when another agent connects for the same
    /// node and cluster (a restarted agent without a spill directory comes back with a new id).
    pub fn observe(
        &mut self,
        connected: &[AgentView],
        departed: &[(String, String, String, i64)],
        now_unix_nanos: i64,
    ) -> Vec<SilenceChange> {
        let mut changes = Vec::new();
        // Agents that came and went between two looks are known from the hub's departures.
        for (id, node, cluster, gone) in departed {
            self.seen.entry(id.clone()).or_insert_with(|| Seen {
                node: node.clone(),
                cluster: cluster.clone(),
                gone_since: Some(*gone),
                alerted: false,
            });
        }
        let present: HashSet<&str> = connected.iter().map(|a| a.agent_id.as_str()).collect();
        let nodes: HashSet<(&str, &str)> = connected
            .iter()
            .map(|a| (a.cluster.as_str(), a.node.as_str()))
            .collect();
        for a in connected {
            if self.seen.get(&a.agent_id).is_some_and(|s| s.alerted) {
                changes.push(SilenceChange::Resolve {
                    key: silent_key(&a.agent_id, &a.node, &a.cluster),
                });
            }
            self.seen.insert(
                a.agent_id.clone(),
                Seen {
                    node: a.node.clone(),
                    cluster: a.cluster.clone(),
                    gone_since: None,
                    alerted: false,
                },
            );
        }
        let after = i64::try_from(self.after.as_nanos()).unwrap_or(i64::MAX);
        self.seen.retain(|id, s| {
            if present.contains(id.as_str()) {
                return true;
            }
            let key = || silent_key(id, &s.node, &s.cluster);
            if nodes.contains(&(s.cluster.as_str(), s.node.as_str())) {
                if s.alerted {
                    changes.push(SilenceChange::Resolve { key: key() });
                }
                return false;
            }
            let gone = *s.gone_since.get_or_insert(now_unix_nanos);
            if !s.alerted && now_unix_nanos.saturating_sub(gone) >= after {
                s.alerted = true;
                changes.push(SilenceChange::Fire {
                    key: key(),
                    gone_unix_nanos: gone,
                });
            }
            true
        });
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(agent: &str, node: &str) -> AgentView {
        AgentView {
            agent_id: agent.into(),
            node: node.into(),
            cluster: "prod".into(),
            capabilities: Vec::new(),
            checks: 0,
            connected_unix_nanos: 0,
        }
    }

    const S: i64 = 1_000_000_000;

    #[test]
    fn silent_after_the_grace_period_and_resolved_on_reconnect() {
        let mut s = Silence::new(Duration::from_secs(2));
        assert_eq!(s.poll_every(), Duration::from_millis(500));
        assert!(
            s.observe(&[view("a1", "n1"), view("b1", "n2")], &[], 0)
                .is_empty()
        );
        assert!(
            s.observe(&[view("b1", "n2")], &[], S).is_empty(),
            "gone at 1s"
        );
        assert!(
            s.observe(&[view("b1", "n2")], &[], 2 * S).is_empty(),
            "within grace"
        );
        let key = silent_key("a1", "n1", "prod");
        assert_eq!(
            s.observe(&[view("b1", "n2")], &[], 3 * S),
            [SilenceChange::Fire {
                key: key.clone(),
                gone_unix_nanos: S
            }]
        );
        assert!(
            s.observe(&[view("b1", "n2")], &[], 4 * S).is_empty(),
            "fires once"
        );
        assert_eq!(
            s.observe(&[view("a1", "n1"), view("b1", "n2")], &[], 5 * S),
            [SilenceChange::Resolve { key }]
        );
        assert!(s.observe(&[view("a1", "n1")], &[], 6 * S).is_empty());
    }

    #[test]
    fn an_agent_that_came_and_went_between_two_looks_is_not_missed() {
        let mut s = Silence::new(Duration::from_secs(1));
        let departed = [("a1".to_owned(), "n1".to_owned(), "prod".to_owned(), 0)];
        assert!(
            s.observe(&[], &departed, S / 2).is_empty(),
            "within the grace period"
        );
        assert_eq!(
            s.observe(&[], &departed, 2 * S),
            [SilenceChange::Fire {
                key: silent_key("a1", "n1", "prod"),
                gone_unix_nanos: 0,
            }]
        );
    }

    #[test]
    fn a_new_agent_on_the_same_node_resolves_the_old_one() {
        let mut s = Silence::new(Duration::from_secs(1));
        s.observe(&[view("a1", "n1")], &[], 0);
        s.observe(&[], &[], S);
        assert_eq!(s.observe(&[], &[], 2 * S).len(), 1);
        assert_eq!(
            s.observe(&[view("a2", "n1")], &[], 3 * S),
            [SilenceChange::Resolve {
                key: silent_key("a1", "n1", "prod")
            }]
        );
        // A quick restart under a new id never fires.
        s.observe(&[], &[], 4 * S);
        assert!(s.observe(&[view("a3", "n1")], &[], 4 * S + 1).is_empty());
        assert!(s.observe(&[view("a3", "n1")], &[], 10 * S).is_empty());
    }

    #[test]
    fn labels_of_both_alerts() {
        let url = Url::parse("http://vigil.example/ui/").unwrap();
        let key = StateKey {
            cluster: "prod".into(),
            check: "node/memory".into(),
            target: "memory".into(),
            node: "n1".into(),
        };
        let last = LastResult {
            reason: "MemAvailable 2% < 5%".into(),
            latency_seconds: 0.0,
            problem: Some("VigilMemoryPressure".into()),
            deep_check: None,
        };
        let a = node_problem(&key, "VigilMemoryPressure", &last, 0, &url);
        let labels: Vec<(&str, &str)> = a
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("alertname", "NodeProblem"),
                ("cluster", "prod"),
                ("diagnostic", "memory"),
                ("node", "n1"),
                ("problem", "VigilMemoryPressure"),
                ("severity", "warning"),
                ("target", "memory"),
            ]
        );
        assert_eq!(
            a.annotations["description"],
            "Vigil's node/memory diagnostic on node n1 of cluster prod found a problem with memory: MemAvailable 2% < 5%"
        );
        assert_eq!(
            a.generator_url,
            "http://vigil.example/ui/?check=node/memory"
        );

        let s = agent_silent(
            &silent_key("a1", "n1", "prod"),
            S,
            Duration::from_secs(120),
            &url,
        );
        assert_eq!(s.labels["alertname"], "VigilAgentSilent");
        assert_eq!(s.labels["agent"], "a1");
        assert_eq!(s.labels["node"], "n1");
        assert_eq!(s.labels["cluster"], "prod");
        assert_eq!(s.starts_at, "1970-01-01T00:00:01.000000000Z");
        assert!(
            s.annotations["description"].contains("within 2m"),
            "{:?}",
            s.annotations
        );
        assert_eq!(s.generator_url, "http://vigil.example/ui/api/v1/agents");
    }
}
