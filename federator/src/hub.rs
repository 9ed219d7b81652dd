//! The connected agents and the checks they run: placement is recomputed whenever either
//! changes, and each agent whose list changed gets a new Assignment.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use vigil_proto::{Assignment, CheckSpec, FederatorMessage, federator_message::Msg};

use crate::loader::{LoadError, LoadedCheck};
use crate::metrics::Metrics;
use crate::placement::{AgentInfo, Placeable, Plan, place};
use crate::resource::HealthCheck;
use crate::spec::check_spec;
use crate::state::{CheckRules, State};

pub type Outbound = mpsc::Sender<Result<FederatorMessage, Status>>;

/// A check as the API shows it.
#[derive(Clone, Debug)]
pub struct CheckDef {
    pub check: HealthCheck,
    pub spec: CheckSpec,
    /// `file doc N` in local and serve modes.
    pub source: String,
}

struct Conn {
    info: AgentInfo,
    conn_id: u64,
    tx: Outbound,
    cancel: CancellationToken,
    assigned: Vec<(String, String, u64)>,
    sent_once: bool,
    cluster: String,
    connected_unix_nanos: i64,
}

#[derive(Default)]
struct Inner {
    checks: Vec<CheckDef>,
    /// The ids of `checks`, for the per-batch lookup on the result path.
    ids: HashSet<String>,
    load_errors: Vec<LoadError>,
    agents: HashMap<String, Conn>,
    plan: Plan,
    generation: u64,
    next_conn: u64,
    /// In Kubernetes mode, the cluster's Nodes: agents are placed on only when their node
    /// exists and is Ready, and NodeSelector matches the Node's labels. `None` elsewhere.
    nodes: Option<HashMap<String, NodeInfo>>,
    /// Agents whose stream ended and that have not come back: (node, cluster, gone since, Unix
    /// nanoseconds). Silence alerting reads it, so an agent that came and went between two of
    /// its looks is not missed; it keeps what it read, so an agent is forgotten here once gone
    /// for [`DEPARTED_KEPT`] (ids come and go for good: a restart without a spill directory
    /// takes a new one).
    departed: HashMap<String, (String, String, i64)>,
    /// Checks removed recently, with when: their in-flight results are still accepted.
    retired: HashMap<String, std::time::Instant>,
}

/// How long an agent that left is kept in `departed`.
const DEPARTED_KEPT: std::time::Duration = std::time::Duration::from_secs(3600);

/// How long results of a removed check are still accepted (agents may hold unsent ones).
const RETIRED_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// What placement needs to know of a Node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    pub ready: bool,
    pub labels: std::collections::BTreeMap<String, String>,
}

/// An agent as the API shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AgentView {
    pub agent_id: String,
    pub node: String,
    pub cluster: String,
    pub capabilities: Vec<String>,
    pub checks: usize,
    pub connected_unix_nanos: i64,
}

pub struct Hub {
    inner: Mutex<Inner>,
    state: Arc<State>,
    metrics: Arc<Metrics>,
}

impl Hub {
    pub fn new(state: Arc<State>, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Mutex::default(),
            state,
            metrics,
        }
    }

    /// Replaces the checks (and the load errors to show beside them) and re-places.
    pub fn set_checks(&self, loaded: Vec<LoadedCheck>, errors: Vec<LoadError>) {
        self.set_check_defs(
            loaded
                .into_iter()
                .map(|l| {
                    let source = format!("{} doc {}", l.file.display(), l.doc);
                    (l.check, source)
                })
                .collect(),
            errors,
        );
    }

    /// Replaces the checks, each with where it came from (`file doc N`, `HealthCheck ns/name`).
    pub fn set_check_defs(&self, checks: Vec<(HealthCheck, String)>, errors: Vec<LoadError>) {
        let defs: Vec<CheckDef> = checks
            .into_iter()
            .map(|(check, source)| CheckDef {
                spec: check_spec(&check),
                source,
                check,
            })
            .collect();
        let dropped = self.state.set_rules(defs.iter().map(|d| {
            let s = &d.check.spec;
            (
                d.spec.id.clone(),
                CheckRules {
                    failure_threshold: s.failure_threshold,
                    success_threshold: s.success_threshold,
                    node_scoped: s.placement.node_scoped(),
                    stale_after: CheckRules::stale_after(std::time::Duration::from_millis(
                        d.spec.interval_ms,
                    )),
                },
            )
        }));
        // Deleted checks leave /metrics (and a Prometheus-driven KEDA trigger) with their state.
        for key in &dropped {
            self.metrics.forget_target(key);
        }
        self.metrics
            .config_errors
            .set(i64::try_from(errors.len()).unwrap_or(i64::MAX));
        let mut inner = self.inner.lock().unwrap();
        let now = std::time::Instant::now();
        let ids: HashSet<String> = defs.iter().map(|d| d.spec.id.clone()).collect();
        let removed: Vec<String> = inner.ids.difference(&ids).cloned().collect();
        for id in removed {
            inner.retired.insert(id, now);
        }
        inner
            .retired
            .retain(|id, at| now.duration_since(*at) < RETIRED_GRACE && !ids.contains(id));
        inner.ids = ids;
        inner.checks = defs;
        inner.load_errors = errors;
        self.replan(&mut inner);
    }

    /// Registers a connected agent, closing an older stream of the same agent id.
    /// Returns the connection id and a token cancelled when this stream is replaced.
    pub fn register(
        &self,
        info: AgentInfo,
        cluster: String,
        tx: Outbound,
    ) -> (u64, CancellationToken) {
        let mut inner = self.inner.lock().unwrap();
        inner.next_conn += 1;
        let conn_id = inner.next_conn;
        let cancel = CancellationToken::new();
        let conn = Conn {
            info,
            conn_id,
            tx,
            cancel: cancel.clone(),
            assigned: Vec::new(),
            sent_once: false,
            cluster,
            connected_unix_nanos: now_unix_nanos(),
        };
        inner.departed.remove(&conn.info.agent_id);
        if let Some(old) = inner.agents.insert(conn.info.agent_id.clone(), conn) {
            tracing::info!(agent = %old.info.agent_id, "agent reconnected; closing its older stream");
            old.cancel.cancel();
        }
        self.metrics
            .agents_connected
            .set(i64::try_from(inner.agents.len()).unwrap_or(i64::MAX));
        self.replan(&mut inner);
        (conn_id, cancel)
    }

    /// Agents whose stream ended and that have not reconnected: (agent id, node, cluster, gone
    /// since in Unix nanoseconds).
    pub fn departed_agents(&self) -> Vec<(String, String, String, i64)> {
        let inner = self.inner.lock().unwrap();
        inner
            .departed
            .iter()
            .map(|(id, (node, cluster, at))| (id.clone(), node.clone(), cluster.clone(), *at))
            .collect()
    }

    /// Ends every agent stream (this replica stopped leading); agents reconnect elsewhere.
    pub fn disconnect_all(&self) {
        let inner = self.inner.lock().unwrap();
        for conn in inner.agents.values() {
            conn.cancel.cancel();
        }
    }

    /// Forgets a stream (only if it is still the agent's current one) and re-places its checks.
    pub fn unregister(&self, agent_id: &str, conn_id: u64) {
        let mut inner = self.inner.lock().unwrap();
        if inner
            .agents
            .get(agent_id)
            .is_some_and(|c| c.conn_id == conn_id)
        {
            let now = now_unix_nanos();
            forget_departed_before(&mut inner.departed, now, DEPARTED_KEPT);
            if let Some(conn) = inner.agents.remove(agent_id) {
                inner
                    .departed
                    .insert(agent_id.to_owned(), (conn.info.node, conn.cluster, now));
            }
            self.metrics
                .agents_connected
                .set(i64::try_from(inner.agents.len()).unwrap_or(i64::MAX));
            self.replan(&mut inner);
        }
    }

    /// The first of `ids` that no agent could have been assigned: not defined now, not removed
    /// within the grace period, and not an agent-owned node diagnostic.
    pub fn first_unknown_check<'a>(&self, ids: impl Iterator<Item = &'a str>) -> Option<&'a str> {
        let inner = self.inner.lock().unwrap();
        let mut last_ok = "";
        for id in ids {
            if id == last_ok || crate::state::is_agent_owned(id) {
                continue;
            }
            if inner.ids.contains(id) || inner.retired.contains_key(id) {
                last_ok = id;
                continue;
            }
            return Some(id);
        }
        None
    }

    /// Sets the cluster's Nodes (Kubernetes mode) and re-places.
    pub fn set_nodes(&self, nodes: HashMap<String, NodeInfo>) {
        let mut inner = self.inner.lock().unwrap();
        if inner.nodes.as_ref() == Some(&nodes) {
            return;
        }
        inner.nodes = Some(nodes);
        self.replan(&mut inner);
    }

    pub fn checks(&self) -> Vec<CheckDef> {
        self.inner.lock().unwrap().checks.clone()
    }

    pub fn load_errors(&self) -> Vec<LoadError> {
        self.inner.lock().unwrap().load_errors.clone()
    }

    /// Where a check runs: the agents it is placed on, or why it runs nowhere.
    pub fn placement_of(&self, check: &str) -> (Vec<String>, Option<String>) {
        let inner = self.inner.lock().unwrap();
        (
            inner.plan.placed_on.get(check).cloned().unwrap_or_default(),
            inner.plan.unplaced.get(check).cloned(),
        )
    }

    pub fn agents(&self) -> Vec<AgentView> {
        let inner = self.inner.lock().unwrap();
        let mut views: Vec<AgentView> = inner
            .agents
            .values()
            .map(|c| AgentView {
                agent_id: c.info.agent_id.clone(),
                node: c.info.node.clone(),
                cluster: c.cluster.clone(),
                capabilities: c.info.capabilities.clone(),
                checks: c.assigned.len(),
                connected_unix_nanos: c.connected_unix_nanos,
            })
            .collect();
        views.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        views
    }

    fn replan(&self, inner: &mut Inner) {
        let placeables: Vec<Placeable> = inner
            .checks
            .iter()
            .map(|d| Placeable {
                spec: d.spec.clone(),
                placement: d.check.spec.placement,
                node_selector: d.check.spec.node_selector.clone(),
            })
            .collect();
        let agents: Vec<AgentInfo> = inner
            .agents
            .values()
            .filter_map(|c| match &inner.nodes {
                None => Some(c.info.clone()),
                Some(nodes) => {
                    let node = nodes.get(&c.info.node).filter(|n| n.ready)?;
                    let mut info = c.info.clone();
                    info.node_labels = node.labels.clone();
                    Some(info)
                }
            })
            .collect();
        let plan = place(&placeables, &agents);
        let mut generation = inner.generation;
        for conn in inner.agents.values_mut() {
            let checks = plan
                .per_agent
                .get(&conn.info.agent_id)
                .cloned()
                .unwrap_or_default();
            let fingerprint: Vec<(String, String, u64)> = checks
                .iter()
                .map(|c| (c.id.clone(), c.target.clone(), c.revision))
                .collect();
            if conn.sent_once && fingerprint == conn.assigned {
                continue;
            }
            conn.sent_once = true;
            generation += 1;
            conn.assigned = fingerprint;
            let msg = FederatorMessage {
                msg: Some(Msg::Assignment(Assignment { generation, checks })),
            };
            let tx = conn.tx.clone();
            self.metrics
                .assignments_sent
                .with_label_values(&[&conn.info.agent_id])
                .inc();
            // Never block placement on one agent's full stream; the agent ignores stale generations.
            tokio::spawn(async move {
                let _ = tx.send(Ok(msg)).await;
            });
        }
        inner.generation = generation;
        inner.plan = plan;
    }
}

/// Drops the agents gone for `kept` or longer at `now` (Unix nanoseconds).
fn forget_departed_before(
    departed: &mut HashMap<String, (String, String, i64)>,
    now: i64,
    kept: std::time::Duration,
) {
    let kept = i64::try_from(kept.as_nanos()).unwrap_or(i64::MAX);
    departed.retain(|_, (_, _, gone)| now.saturating_sub(*gone) < kept);
}

pub fn now_unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::loader::{Loaded, parse_file};

    #[test]
    fn agents_gone_for_the_kept_period_are_forgotten() {
        let s = 1_000_000_000;
        let mut departed: HashMap<String, (String, String, i64)> = [
            ("old".to_owned(), ("n1".to_owned(), "c".to_owned(), 100 * s)),
            (
                "recent".to_owned(),
                ("n2".to_owned(), "c".to_owned(), 150 * s),
            ),
        ]
        .into();
        forget_departed_before(&mut departed, 160 * s, std::time::Duration::from_secs(60));
        assert_eq!(departed.keys().collect::<Vec<_>>(), ["recent"]);
    }

    #[test]
    fn deleted_checks_leave_metrics() {
        let state = Arc::new(State::default());
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new(Arc::clone(&state), Arc::clone(&metrics));
        let mut loaded = Loaded::default();
        parse_file(
            Path::new("c.yaml"),
            "apiVersion: vigil.dev/v1alpha1\nkind: HealthCheck\nmetadata: {name: c, namespace: ns}\nspec:\n  failureThreshold: 1\n  probe: {tcp: {address: '127.0.0.1:1'}}\n",
            &mut loaded,
        );
        hub.set_checks(loaded.checks, Vec::new());
        let mut failed = vigil_proto::ProbeResult {
            check_id: "ns/c".into(),
            target: "127.0.0.1:1".into(),
            cluster: "local".into(),
            outcome: vigil_proto::Outcome::Failure as i32,
            ..Default::default()
        };
        assert!(state.apply(&mut failed).is_some());
        metrics
            .check_up
            .with_label_values(&["c", "ns", "127.0.0.1:1", "local", ""])
            .set(0);
        assert!(metrics.render().contains("vigil_check_up{"));

        hub.set_checks(Vec::new(), Vec::new());
        assert!(
            !metrics.render().contains("vigil_check_up{"),
            "{}",
            metrics.render()
        );
    }
}
