//! The multi-cluster API: clusters, the cluster × check matrix, one check across clusters, and
//! nodes. A federator's own agents (grouped by the cluster each names) and every cluster that
//! forwards to it are answered alike; see docs/api.md.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State as AxumState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde::{Deserialize, Serialize};
use vigil_proto::ClusterCheck;

use super::Api;
use crate::federation::Remote;
use crate::hub::now_unix_nanos;
use crate::record::ResultRecord;
use crate::resource::HumanDuration;
use crate::state::{AGENT_OWNED_PREFIX, Counts, Health, State, TargetState};

/// One cluster's part of the picture: where its checks and state live.
struct Slice {
    name: String,
    connected: bool,
    silent: bool,
    last_seen_unix_nanos: i64,
    agents: Vec<(String, String)>,
    source: Source,
    /// The cluster's checks by id (HealthChecks, then its agents' node diagnostics).
    checks: BTreeMap<String, Meta>,
    /// Target counts per check id in this cluster.
    counts: HashMap<String, Counts>,
}

/// Where a cluster's state lives: this federator's own, or a forwarding cluster's store.
enum Source {
    Local(Arc<State>),
    Remote(Arc<Remote>),
}

/// What the matrix and the filters need of a check.
#[derive(Clone, Debug, Serialize)]
struct Meta {
    id: String,
    namespace: String,
    name: String,
    probe: String,
    placement: String,
    labels: BTreeMap<String, String>,
    #[serde(skip)]
    node_scoped: bool,
    #[serde(skip)]
    agent_owned: bool,
}

impl Meta {
    fn of(c: &ClusterCheck) -> Option<Self> {
        let spec = c.spec.as_ref()?;
        let (namespace, name) = spec.id.split_once('/').unwrap_or(("", &spec.id));
        Some(Self {
            id: spec.id.clone(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            probe: spec.probe.as_ref().map_or("none", |p| p.kind()).to_owned(),
            placement: c.placement.clone(),
            labels: spec
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            node_scoped: c.node_scoped,
            agent_owned: false,
        })
    }

    fn diagnostic(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            namespace: "node".to_owned(),
            name: id.trim_start_matches(AGENT_OWNED_PREFIX).to_owned(),
            probe: "node".to_owned(),
            placement: "EveryNode".to_owned(),
            labels: BTreeMap::new(),
            node_scoped: true,
            agent_owned: true,
        }
    }
}

/// `cluster=`, `namespace=`, `state=`, `label=KEY=VALUE`.
#[derive(Debug, Default, Deserialize)]
pub struct Filter {
    cluster: Option<String>,
    namespace: Option<String>,
    state: Option<String>,
    label: Option<String>,
}

impl Filter {
    fn state(&self) -> Result<Option<Health>, String> {
        match self.state.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some("Healthy") => Ok(Some(Health::Healthy)),
            Some("Failing") => Ok(Some(Health::Failing)),
            Some("Unknown") => Ok(Some(Health::Unknown)),
            Some(other) => Err(format!(
                "state={other:?} is not a state; use Healthy, Failing or Unknown\n"
            )),
        }
    }

    fn label(&self) -> Result<Option<(&str, &str)>, String> {
        match self.label.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(l) => l.split_once('=').map(Some).ok_or_else(|| {
                format!("label={l:?} must be KEY=VALUE, like label=team=payments\n")
            }),
        }
    }

    fn cluster(&self, name: &str) -> bool {
        self.cluster
            .as_deref()
            .is_none_or(|c| c.is_empty() || c == name)
    }

    fn check(&self, meta: &Meta, label: Option<(&str, &str)>) -> bool {
        self.namespace
            .as_deref()
            .is_none_or(|n| n.is_empty() || n == meta.namespace)
            && label.is_none_or(|(k, v)| meta.labels.get(k).is_some_and(|x| x == v))
    }
}

/// Every cluster this federator knows, local ones first, each sorted by name.
fn slices(api: &Api) -> Vec<Slice> {
    let mut out = Vec::new();
    // This federator's own agents, grouped by the cluster each names.
    let defs = api.hub.checks();
    let summaries = api.state.summaries();
    let agents = api.hub.agents();
    let mut names: BTreeSet<String> = BTreeSet::from([api.cluster.clone()]);
    names.extend(agents.iter().map(|a| a.cluster.clone()));
    for s in &summaries {
        names.extend(s.clusters.iter().map(|(c, _)| c.clone()));
    }
    let remotes = api.federation.remotes();
    for r in &remotes {
        // A forwarding cluster's results never land in the local state; its name is its own.
        names.remove(&r.name);
    }
    for name in names {
        let has_agents = agents.iter().any(|a| a.cluster == name);
        let has_state = summaries
            .iter()
            .any(|s| s.clusters.iter().any(|(c, _)| *c == name));
        if !has_agents && !has_state && (name != api.cluster || defs.is_empty()) {
            // A global federator without checks or agents of its own is no cluster to show.
            continue;
        }
        let mut counts = HashMap::new();
        for s in &summaries {
            if let Some((_, c)) = s.clusters.iter().find(|(c, _)| *c == name) {
                counts.insert(s.id.clone(), *c);
            }
        }
        // Agents that name another cluster share this federator's checks; there a check shows
        // only where it has run (an AnyNode check runs in one of them), here always.
        let own = name == api.cluster;
        let mut checks: BTreeMap<String, Meta> = defs
            .iter()
            .filter(|d| own || counts.contains_key(&d.spec.id))
            .filter_map(|d| Meta::of(&crate::upstream::cluster_check(d)))
            .map(|m| (m.id.clone(), m))
            .collect();
        for s in summaries.iter().filter(|s| s.agent_owned) {
            if counts.contains_key(&s.id) {
                checks.insert(s.id.clone(), Meta::diagnostic(&s.id));
            }
        }
        out.push(Slice {
            connected: true,
            silent: false,
            last_seen_unix_nanos: now_unix_nanos(),
            agents: agents
                .iter()
                .filter(|a| a.cluster == name)
                .map(|a| (a.agent_id.clone(), a.node.clone()))
                .collect(),
            source: Source::Local(Arc::clone(&api.state)),
            checks,
            counts,
            name,
        });
    }
    for r in remotes {
        let view = api.federation.view(&r);
        out.push(remote_slice(r, &view));
    }
    out
}

fn remote_slice(r: Arc<Remote>, view: &crate::federation::RemoteView) -> Slice {
    let mut checks: BTreeMap<String, Meta> = r.with_checks(|cs| {
        cs.iter()
            .filter_map(Meta::of)
            .map(|m| (m.id.clone(), m))
            .collect()
    });
    let mut counts = HashMap::new();
    for s in r.store.summaries() {
        if s.agent_owned {
            checks.insert(s.id.clone(), Meta::diagnostic(&s.id));
        }
        let mut total = Counts::default();
        for (_, c) in &s.clusters {
            total.add(*c);
        }
        counts.insert(s.id, total);
    }
    Slice {
        name: r.name.clone(),
        connected: view.connected,
        silent: view.silent,
        last_seen_unix_nanos: view.last_seen_unix_nanos,
        agents: r
            .agents()
            .into_iter()
            .map(|a| (a.agent_id, a.node))
            .collect(),
        source: Source::Remote(r),
        checks,
        counts,
    }
}

impl Slice {
    /// A check's counts and health here; a silent cluster's checks are Unknown.
    fn cell(&self, id: &str) -> Cell {
        let c = self.counts.get(id).copied().unwrap_or_default();
        Cell {
            state: if self.silent {
                Health::Unknown
            } else {
                c.health()
            },
            failing: c.failing,
            total: c.total(),
        }
    }

    fn targets(&self, id: &str, node: Option<&str>) -> Vec<TargetState> {
        match &self.source {
            Source::Local(state) => state.targets_in(id, &self.name, node),
            Source::Remote(r) => r.store.targets(id, node),
        }
    }

    /// The check's last results here, newest first.
    fn recent(&self, id: &str, limit: usize) -> Vec<ResultRecord> {
        match &self.source {
            Source::Local(state) => state
                .recent(id, crate::state::HISTORY_PER_CHECK)
                .unwrap_or_default()
                .into_iter()
                .filter(|r| r.cluster == self.name)
                .take(limit)
                .map(|r| ResultRecord::clone(&r))
                .collect(),
            Source::Remote(r) => r.store.recent(id, limit).unwrap_or_default(),
        }
    }

    /// Per node, its node-scoped state here.
    fn nodes(&self) -> BTreeMap<String, crate::state::NodeCounts> {
        match &self.source {
            Source::Local(state) => state
                .nodes()
                .into_iter()
                .filter(|((c, _), _)| *c == self.name)
                .map(|((_, n), v)| (n, v))
                .collect(),
            Source::Remote(r) => r.store.nodes(),
        }
    }
}

#[derive(Clone, Copy, Debug, Serialize)]
struct Cell {
    state: Health,
    failing: u32,
    total: u32,
}

#[derive(Serialize)]
struct ClusterView {
    name: String,
    local: bool,
    connected: bool,
    silent: bool,
    state: Health,
    agents: usize,
    nodes: usize,
    checks: usize,
    healthy: usize,
    failing: usize,
    unknown: usize,
    last_seen_unix_nanos: i64,
}

#[derive(Serialize)]
struct ClustersResponse {
    now_unix_nanos: i64,
    clusters: Vec<ClusterView>,
}

pub async fn clusters(AxumState(api): AxumState<Api>) -> Response {
    let mut clusters: Vec<ClusterView> = slices(&api)
        .iter()
        .map(|s| {
            let (mut healthy, mut failing, mut unknown) = (0, 0, 0);
            for id in s.checks.keys() {
                match s.cell(id).state {
                    Health::Healthy => healthy += 1,
                    Health::Failing => failing += 1,
                    Health::Unknown => unknown += 1,
                }
            }
            let state = if s.silent {
                Health::Unknown
            } else if failing > 0 {
                Health::Failing
            } else if unknown == 0 && healthy > 0 {
                Health::Healthy
            } else {
                Health::Unknown
            };
            let nodes: BTreeSet<&str> = s.agents.iter().map(|(_, n)| n.as_str()).collect();
            ClusterView {
                name: s.name.clone(),
                local: matches!(s.source, Source::Local(_)),
                connected: s.connected,
                silent: s.silent,
                state,
                agents: s.agents.len(),
                nodes: nodes.len(),
                checks: s.checks.len(),
                healthy,
                failing,
                unknown,
                last_seen_unix_nanos: s.last_seen_unix_nanos,
            }
        })
        .collect();
    clusters.sort_by(|a, b| a.name.cmp(&b.name));
    Json(ClustersResponse {
        now_unix_nanos: now_unix_nanos(),
        clusters,
    })
    .into_response()
}

#[derive(Serialize)]
struct Row {
    #[serde(flatten)]
    meta: Meta,
    state: Health,
    summary: String,
    cells: Vec<Option<Cell>>,
}

#[derive(Serialize)]
struct MatrixResponse {
    now_unix_nanos: i64,
    clusters: Vec<String>,
    checks: Vec<Row>,
}

/// The worst health over cells, and the sentence people read.
fn overall(cells: &[Option<Cell>], meta: &Meta) -> (Health, String) {
    let node_scoped = meta.node_scoped && !meta.agent_owned;
    let defined: Vec<&Cell> = cells.iter().flatten().collect();
    let n = defined.len();
    // A silent cluster's cells are Unknown whatever it last said: not counted as failing.
    let failing_clusters = defined
        .iter()
        .filter(|c| c.state == Health::Failing)
        .count();
    let failing: u32 = defined
        .iter()
        .filter(|c| c.state == Health::Failing)
        .map(|c| c.failing)
        .sum();
    let total: u32 = defined.iter().map(|c| c.total).sum();
    let plural = |k: usize, one: &str| {
        if k == 1 {
            format!("{k} {one}")
        } else {
            format!("{k} {one}s")
        }
    };
    let state = if defined.iter().any(|c| c.state == Health::Failing) {
        Health::Failing
    } else if n > 0 && defined.iter().all(|c| c.state == Health::Healthy) {
        Health::Healthy
    } else {
        Health::Unknown
    };
    // A HealthCheck has one target, so on EveryNode its targets are nodes; a node diagnostic
    // has several per node (mounts, log patterns).
    let unit = if node_scoped {
        "node"
    } else if meta.agent_owned {
        "node target"
    } else {
        "target"
    };
    let summary = match state {
        Health::Failing if node_scoped => format!(
            "failing on {failing} of {total} nodes in {failing_clusters} of {}",
            plural(n, "cluster")
        ),
        Health::Failing => format!(
            "failing in {failing_clusters} of {} ({failing} of {})",
            plural(n, "cluster"),
            plural(total as usize, unit)
        ),
        Health::Healthy => format!(
            "healthy on {} in {}",
            plural(total as usize, unit),
            plural(n, "cluster")
        ),
        Health::Unknown if total == 0 => format!("no results yet in {}", plural(n, "cluster")),
        Health::Unknown => {
            let known = defined
                .iter()
                .filter(|c| c.state != Health::Unknown)
                .count();
            format!("unknown in {} of {}", n - known, plural(n, "cluster"))
        }
    };
    (state, summary)
}

pub async fn matrix(AxumState(api): AxumState<Api>, Query(f): Query<Filter>) -> Response {
    let (want, label) = match (f.state(), f.label()) {
        (Ok(s), Ok(l)) => (s, l),
        (Err(e), _) | (_, Err(e)) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let mut slices: Vec<Slice> = slices(&api)
        .into_iter()
        .filter(|s| f.cluster(&s.name))
        .collect();
    slices.sort_by(|a, b| a.name.cmp(&b.name));
    let mut rows: BTreeMap<&str, (&Meta, Vec<Option<Cell>>)> = BTreeMap::new();
    for (i, s) in slices.iter().enumerate() {
        for (id, meta) in &s.checks {
            if !f.check(meta, label) {
                continue;
            }
            let row = rows
                .entry(id.as_str())
                .or_insert_with(|| (meta, vec![None; slices.len()]));
            row.1[i] = Some(s.cell(id));
        }
    }
    let checks = rows
        .into_values()
        .filter_map(|(meta, cells)| {
            let (state, summary) = overall(&cells, meta);
            want.is_none_or(|w| w == state).then(|| Row {
                meta: meta.clone(),
                state,
                summary,
                cells,
            })
        })
        .collect();
    Json(MatrixResponse {
        now_unix_nanos: now_unix_nanos(),
        clusters: slices.into_iter().map(|s| s.name).collect(),
        checks,
    })
    .into_response()
}

/// A check's definition as one cluster runs it.
#[derive(Serialize)]
struct Definition {
    probe: String,
    target: String,
    placement: String,
    interval: String,
    timeout: String,
    failure_threshold: u32,
    success_threshold: u32,
    severity: String,
    source: String,
}

impl Definition {
    fn of(c: &ClusterCheck) -> Option<Self> {
        let spec = c.spec.as_ref()?;
        let human = |ms: u64| HumanDuration(Duration::from_millis(ms)).to_string();
        Some(Self {
            probe: spec.probe.as_ref().map_or("none", |p| p.kind()).to_owned(),
            target: spec.target.clone(),
            placement: c.placement.clone(),
            interval: human(spec.interval_ms),
            timeout: human(spec.timeout_ms),
            failure_threshold: c.failure_threshold,
            success_threshold: c.success_threshold,
            severity: c.severity.clone(),
            source: c.source.clone(),
        })
    }
}

#[derive(Serialize)]
struct ClusterBreakdown {
    cluster: String,
    state: Health,
    failing: u32,
    total: u32,
    silent: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    definition: Option<Definition>,
    targets: Vec<TargetState>,
}

#[derive(Serialize)]
struct CheckDetail {
    #[serde(flatten)]
    meta: Meta,
    state: Health,
    summary: String,
    clusters: Vec<ClusterBreakdown>,
    results: Vec<ResultRecord>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    deep_checks: Vec<crate::deep_check::TargetFindings>,
}

#[derive(Deserialize)]
pub struct DetailQuery {
    limit: Option<usize>,
    cluster: Option<String>,
}

pub async fn check(
    AxumState(api): AxumState<Api>,
    Path((namespace, name)): Path<(String, String)>,
    Query(q): Query<DetailQuery>,
) -> Response {
    let id = format!("{namespace}/{name}");
    let limit = q.limit.unwrap_or(50).min(crate::state::HISTORY_PER_CHECK);
    let slices: Vec<Slice> = slices(&api)
        .into_iter()
        .filter(|s| s.checks.contains_key(&id))
        .filter(|s| {
            q.cluster
                .as_deref()
                .is_none_or(|c| c.is_empty() || c == s.name)
        })
        .collect();
    let Some(meta) = slices.first().and_then(|s| s.checks.get(&id)).cloned() else {
        return (
            StatusCode::NOT_FOUND,
            format!("no check {id:?} in any cluster; GET /api/v1/matrix lists them\n"),
        )
            .into_response();
    };
    let local_def = api
        .hub
        .checks()
        .iter()
        .find(|d| d.spec.id == id)
        .map(crate::upstream::cluster_check);
    let mut clusters = Vec::new();
    let mut results: Vec<ResultRecord> = Vec::new();
    for s in &slices {
        let cell = s.cell(&id);
        let definition = match &s.source {
            Source::Local(_) => local_def.as_ref().and_then(Definition::of),
            Source::Remote(r) => r.with_checks(|cs| {
                cs.iter()
                    .find(|c| c.spec.as_ref().is_some_and(|sp| sp.id == id))
                    .and_then(Definition::of)
            }),
        };
        clusters.push(ClusterBreakdown {
            cluster: s.name.clone(),
            state: cell.state,
            failing: cell.failing,
            total: cell.total,
            silent: s.silent,
            definition,
            targets: s.targets(&id, None),
        });
        results.extend(s.recent(&id, limit));
    }
    results.sort_by_key(|r| std::cmp::Reverse(r.start_unix_nanos));
    results.truncate(limit);
    let cells: Vec<Option<Cell>> = clusters
        .iter()
        .map(|c| {
            Some(Cell {
                state: c.state,
                failing: c.failing,
                total: c.total,
            })
        })
        .collect();
    let (state, summary) = overall(&cells, &meta);
    Json(CheckDetail {
        meta,
        state,
        summary,
        clusters,
        results,
        deep_checks: api.deep_checks.of_check(&id),
    })
    .into_response()
}

#[derive(Serialize)]
struct NodeView {
    cluster: String,
    node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<String>,
    connected: bool,
    state: Health,
    problems: Vec<String>,
    diagnostics: u32,
    failing_checks: u32,
}

#[derive(Serialize)]
struct NodesResponse {
    nodes: Vec<NodeView>,
}

pub async fn nodes(AxumState(api): AxumState<Api>, Query(f): Query<Filter>) -> Response {
    let want = match f.state() {
        Ok(s) => s,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let mut nodes = Vec::new();
    for s in slices(&api).into_iter().filter(|s| f.cluster(&s.name)) {
        let mut counts = s.nodes();
        let agents: HashMap<&str, &str> = s
            .agents
            .iter()
            .map(|(a, n)| (n.as_str(), a.as_str()))
            .collect();
        for n in agents.keys() {
            counts.entry((*n).to_owned()).or_default();
        }
        for (node, c) in counts {
            let agent = agents.get(node.as_str()).map(|a| (*a).to_owned());
            let state = if s.silent {
                Health::Unknown
            } else {
                c.counts.health()
            };
            if want.is_some_and(|w| w != state) {
                continue;
            }
            nodes.push(NodeView {
                cluster: s.name.clone(),
                connected: agent.is_some() && !s.silent,
                agent,
                state,
                problems: c.problems,
                diagnostics: c.diagnostics,
                failing_checks: c.failing_checks,
                node,
            });
        }
    }
    nodes.sort_by(|a, b| (&a.cluster, &a.node).cmp(&(&b.cluster, &b.node)));
    Json(NodesResponse { nodes }).into_response()
}

#[derive(Serialize)]
struct NodeDetail {
    cluster: String,
    node: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<String>,
    state: Health,
    diagnostics: Vec<TargetState>,
    checks: Vec<TargetState>,
}

pub async fn node(
    AxumState(api): AxumState<Api>,
    Path((cluster, node)): Path<(String, String)>,
) -> Response {
    let Some(s) = slices(&api).into_iter().find(|s| s.name == cluster) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no cluster {cluster:?}; GET /api/v1/clusters lists them\n"),
        )
            .into_response();
    };
    let agent = s
        .agents
        .iter()
        .find(|(_, n)| *n == node)
        .map(|(a, _)| a.clone());
    let (mut diagnostics, mut checks) = (Vec::new(), Vec::new());
    for (id, meta) in &s.checks {
        if !meta.node_scoped {
            continue;
        }
        let targets = s.targets(id, Some(&node));
        if meta.agent_owned {
            diagnostics.extend(targets);
        } else {
            checks.extend(targets);
        }
    }
    if agent.is_none() && diagnostics.is_empty() && checks.is_empty() {
        return (
            StatusCode::NOT_FOUND,
            format!(
                "no node {node:?} in cluster {cluster:?}; GET /api/v1/nodes?cluster={cluster} lists them\n"
            ),
        )
            .into_response();
    }
    let worst = |ts: &[TargetState]| ts.iter().map(|t| t.state).collect::<Vec<_>>();
    let all: Vec<Health> = worst(&diagnostics)
        .into_iter()
        .chain(worst(&checks))
        .collect();
    let state = if s.silent {
        Health::Unknown
    } else if all.contains(&Health::Failing) {
        Health::Failing
    } else if !all.is_empty() && all.iter().all(|h| *h == Health::Healthy) {
        Health::Healthy
    } else {
        Health::Unknown
    };
    Json(NodeDetail {
        cluster,
        node,
        agent,
        state,
        diagnostics,
        checks,
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(state: Health, failing: u32, total: u32) -> Option<Cell> {
        Some(Cell {
            state,
            failing,
            total,
        })
    }

    fn every_node() -> Meta {
        Meta {
            node_scoped: true,
            agent_owned: false,
            ..Meta::diagnostic("shop/web")
        }
    }

    fn once() -> Meta {
        Meta {
            node_scoped: false,
            ..every_node()
        }
    }

    #[test]
    fn summaries_say_where_a_check_fails() {
        let cells = [
            cell(Health::Failing, 2, 40),
            cell(Health::Failing, 1, 40),
            cell(Health::Healthy, 0, 40),
            None,
            cell(Health::Healthy, 0, 40),
            cell(Health::Healthy, 0, 40),
        ];
        assert_eq!(
            overall(&cells, &every_node()),
            (
                Health::Failing,
                "failing on 3 of 200 nodes in 2 of 5 clusters".to_owned()
            )
        );
        assert_eq!(
            overall(&cells[..2], &once()).1,
            "failing in 2 of 2 clusters (3 of 80 targets)"
        );
        assert_eq!(
            overall(&[cell(Health::Healthy, 0, 1)], &once()).1,
            "healthy on 1 target in 1 cluster"
        );
        assert_eq!(
            overall(
                &[cell(Health::Failing, 1, 18)],
                &Meta::diagnostic("node/kmsg")
            )
            .1,
            "failing in 1 of 1 cluster (1 of 18 node targets)"
        );
        assert_eq!(
            overall(&[cell(Health::Unknown, 0, 0), None], &every_node()),
            (Health::Unknown, "no results yet in 1 cluster".to_owned())
        );
        assert_eq!(
            overall(
                &[cell(Health::Unknown, 0, 3), cell(Health::Healthy, 0, 3)],
                &every_node()
            ),
            (Health::Unknown, "unknown in 1 of 2 clusters".to_owned())
        );
    }

    #[test]
    fn filters_refuse_what_they_cannot_read() {
        let f = Filter {
            state: Some("Broken".into()),
            ..Filter::default()
        };
        assert!(f.state().is_err());
        let f = Filter {
            label: Some("team".into()),
            ..Filter::default()
        };
        assert!(f.label().is_err());
        let f = Filter {
            label: Some("team=shop".into()),
            namespace: Some("shop".into()),
            ..Filter::default()
        };
        let mut meta = Meta::diagnostic("node/memory");
        assert!(!f.check(&meta, f.label().unwrap()));
        meta.namespace = "shop".into();
        meta.labels.insert("team".into(), "shop".into());
        assert!(f.check(&meta, f.label().unwrap()));
    }
}
