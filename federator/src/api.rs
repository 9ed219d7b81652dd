//! The HTTP side: `/healthz`, `/readyz`, `/metrics`, the JSON API and the status page.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State as AxumState};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Json, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::hub::{AgentView, Hub};
use crate::metrics::Metrics;
use crate::record::ResultRecord;
use crate::state::{Health, State, TargetState, aggregate};

mod fleet;

/// Named reasons the federator is not ready; empty = ready.
#[derive(Default)]
pub struct Readiness {
    problems: Mutex<BTreeMap<String, String>>,
}

impl Readiness {
    pub fn set(&self, part: &str, problem: Option<String>) {
        let mut problems = self.problems.lock().unwrap();
        match problem {
            Some(p) => problems.insert(part.to_owned(), p),
            None => problems.remove(part),
        };
    }

    pub fn problems(&self) -> BTreeMap<String, String> {
        self.problems.lock().unwrap().clone()
    }
}

#[derive(Clone)]
pub struct Api {
    pub hub: Arc<Hub>,
    pub state: Arc<State>,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<Readiness>,
    /// Deep-check findings, shown with each check.
    pub deep_checks: Arc<crate::deep_check::DeepChecks>,
    /// Clusters that forward to this federator.
    pub federation: Arc<crate::federation::Federation>,
    /// This federator's own cluster name (`--cluster`).
    pub cluster: String,
}

pub fn router(api: Api) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/checks", get(checks))
        .route("/api/v1/results", get(results))
        .route("/api/v1/agents", get(agents))
        .route("/api/v1/clusters", get(fleet::clusters))
        .route("/api/v1/matrix", get(fleet::matrix))
        .route("/api/v1/checks/{namespace}/{name}", get(fleet::check))
        .route("/api/v1/nodes", get(fleet::nodes))
        .route("/api/v1/nodes/{cluster}/{node}", get(fleet::node))
        .with_state(api)
}

async fn readyz(AxumState(api): AxumState<Api>) -> Response {
    let problems = api.readiness.problems();
    if problems.is_empty() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        let text: String = problems
            .iter()
            .map(|(k, v)| format!("{k}: {v}\n"))
            .collect();
        (StatusCode::SERVICE_UNAVAILABLE, text).into_response()
    }
}

async fn metrics(AxumState(api): AxumState<Api>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        api.metrics.render(),
    )
        .into_response()
}

#[derive(Serialize)]
struct CheckView {
    id: String,
    namespace: String,
    name: String,
    probe: &'static str,
    target: String,
    placement: &'static str,
    interval: String,
    timeout: String,
    failure_threshold: u32,
    success_threshold: u32,
    severity: String,
    labels: BTreeMap<String, String>,
    source: String,
    state: Health,
    /// Agents the check runs on.
    agents: Vec<String>,
    /// Why the check runs nowhere, when it does not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    not_running: Option<String>,
    targets: Vec<TargetState>,
    /// The last deep-check findings per target (`vigil-agent deep-check`), if any.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    deep_checks: Vec<crate::deep_check::TargetFindings>,
}

#[derive(Serialize)]
struct ChecksResponse {
    checks: Vec<CheckView>,
    /// HealthCheck documents that were refused, each with file, document and field.
    errors: Vec<String>,
}

async fn checks(AxumState(api): AxumState<Api>) -> Json<ChecksResponse> {
    let mut checks: Vec<CheckView> = api
        .hub
        .checks()
        .into_iter()
        .map(|def| {
            let id = def.spec.id.clone();
            let targets = api.state.targets(&id);
            let (agents, not_running) = api.hub.placement_of(&id);
            let spec = &def.check.spec;
            CheckView {
                namespace: def
                    .check
                    .metadata
                    .namespace
                    .clone()
                    .unwrap_or_else(|| "default".into()),
                name: def.check.metadata.name.clone().unwrap_or_default(),
                probe: def.spec.probe.as_ref().map_or("none", |p| p.kind()),
                target: def.spec.target.clone(),
                placement: spec.placement.name(),
                interval: spec.interval.to_string(),
                timeout: spec.effective_timeout().to_string(),
                failure_threshold: spec.failure_threshold,
                success_threshold: spec.success_threshold,
                severity: spec.severity.clone(),
                labels: spec.labels.clone(),
                source: def.source.clone(),
                state: aggregate(&targets),
                agents,
                not_running,
                targets,
                deep_checks: api.deep_checks.of_check(&id),
                id,
            }
        })
        .collect();
    // The agents' node diagnostics (node/memory, ...) follow, though no HealthCheck defines them.
    checks.extend(
        api.state
            .agent_owned_checks()
            .into_iter()
            .map(|id| agent_owned_view(&api.state, id)),
    );
    let errors = api
        .hub
        .load_errors()
        .iter()
        .map(ToString::to_string)
        .collect();
    Json(ChecksResponse { checks, errors })
}

/// A node diagnostic as the API shows it: run by every agent on its own node, each result
/// counting at once (thresholds 1).
fn agent_owned_view(state: &State, id: String) -> CheckView {
    let targets = state.targets(&id);
    let mut agents: Vec<String> = targets.iter().map(|t| t.last.agent.clone()).collect();
    agents.sort();
    agents.dedup();
    let (namespace, name) = id.split_once('/').unwrap_or(("node", &id));
    CheckView {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        probe: "node",
        target: String::new(),
        placement: "EveryNode",
        interval: String::new(),
        timeout: String::new(),
        failure_threshold: crate::state::AGENT_OWNED_RULES.failure_threshold,
        success_threshold: crate::state::AGENT_OWNED_RULES.success_threshold,
        severity: String::new(),
        labels: BTreeMap::new(),
        source: "agent".to_owned(),
        state: aggregate(&targets),
        agents,
        not_running: None,
        targets,
        deep_checks: Vec::new(),
        id,
    }
}

#[derive(Deserialize)]
struct ResultsQuery {
    check: Option<String>,
    limit: Option<usize>,
}

async fn results(AxumState(api): AxumState<Api>, Query(q): Query<ResultsQuery>) -> Response {
    let Some(check) = q.check else {
        return (
            StatusCode::BAD_REQUEST,
            "the check parameter is required: /api/v1/results?check=NAMESPACE/NAME\n",
        )
            .into_response();
    };
    let limit = q.limit.unwrap_or(50).min(crate::state::HISTORY_PER_CHECK);
    match api.state.recent(&check, limit) {
        Some(results) => Json::<Vec<ResultRecord>>(results).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            format!("no check {check:?}; GET /api/v1/checks lists them\n"),
        )
            .into_response(),
    }
}

async fn agents(AxumState(api): AxumState<Api>) -> Json<Vec<AgentView>> {
    Json(api.hub.agents())
}

async fn index() -> Html<&'static str> {
    Html(include_str!("api/index.html"))
}
