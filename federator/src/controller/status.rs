//! Writes each HealthCheck's status (conditions Valid/Ready/Healthy, state, failing targets,
//! last result) with server-side apply under one field manager — the leader only, and only
//! when something changed, at most once per `min_interval` per check (a validity change goes
//! at once) and at most `max_per_second` writes overall, so a flapping check cannot flood the
//! API server. Failed writes are retried on the next pass.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::checks::{Catalog, Entry};
use crate::hub::Hub;
use crate::resource::{
    API_VERSION, CheckState, HealthCheck, HealthCheckStatus, KIND, LastResult, ResultOutcome,
};
use crate::state::{Health, State, aggregate};

/// The field manager of every write the federator makes.
pub const MANAGER: &str = "vigil-federator";

#[derive(Clone, Debug)]
pub struct StatusOptions {
    pub tick: Duration,
    pub min_interval: Duration,
    pub max_per_second: u32,
}

impl Default for StatusOptions {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(500),
            min_interval: Duration::from_secs(5),
            max_per_second: 20,
        }
    }
}

struct Written {
    status: HealthCheckStatus,
    at: Instant,
    valid: bool,
}

/// Runs until `cancel`; writes only while `leader` is true.
#[allow(clippy::too_many_arguments)] // one handle per collaborator, as the controller starts it
pub async fn run(
    client: kube::Client,
    catalog: Catalog,
    hub: Arc<Hub>,
    state: Arc<State>,
    notes: super::jobs::JobNotes,
    mut leader: watch::Receiver<bool>,
    options: StatusOptions,
    cancel: CancellationToken,
) {
    let mut written: HashMap<String, Written> = HashMap::new();
    let mut catalog_changes = catalog.subscribe();
    loop {
        tokio::select! {
            () = tokio::time::sleep(options.tick) => {}
            _ = catalog_changes.changed() => {}
            _ = leader.changed() => {
                // A new leader cannot trust what a previous term wrote: write everything again.
                written.clear();
            }
            () = cancel.cancelled() => return,
        }
        if !*leader.borrow() {
            continue;
        }
        let mut budget = options.max_per_second.max(1) as usize;
        let entries = catalog.entries();
        written.retain(|id, _| entries.iter().any(|e| &e.id() == id));
        for e in entries {
            let id = e.id();
            let previous = written.get(&id);
            let note = notes.lock().unwrap().get(&id).cloned();
            let status = desired(&e, &hub, &state, note, previous.map(|w| &w.status));
            let valid = e.verdict.is_ok();
            if let Some(w) = previous {
                if w.status == status {
                    continue;
                }
                if w.valid == valid && w.at.elapsed() < options.min_interval {
                    continue;
                }
            }
            if budget == 0 {
                break;
            }
            budget -= 1;
            let api: Api<HealthCheck> = Api::namespaced(client.clone(), &e.namespace);
            let patch = serde_json::json!({
                "apiVersion": API_VERSION,
                "kind": KIND,
                "status": status,
            });
            match api
                .patch_status(
                    &e.name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&patch),
                )
                .await
            {
                Ok(_) => {
                    written.insert(
                        id,
                        Written {
                            status,
                            at: Instant::now(),
                            valid,
                        },
                    );
                }
                Err(kube::Error::Api(err)) if err.code == 404 => {
                    // Deleted meanwhile; the watcher removes it from the catalog.
                }
                Err(err) => {
                    tracing::warn!(check = %id, error = %err, "writing HealthCheck status failed; retrying on the next pass");
                }
            }
        }
    }
}

fn now() -> Time {
    Time(Timestamp::now())
}

fn time_of(unix_nanos: i64) -> Time {
    Time(Timestamp::from_nanosecond(i128::from(unix_nanos)).unwrap_or_else(|_| Timestamp::now()))
}

/// A condition, keeping the previous transition time when its status did not change.
fn condition(
    previous: Option<&HealthCheckStatus>,
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    let since = previous
        .and_then(|p| p.conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .map_or_else(now, |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// The status a check should have now.
pub fn desired(
    e: &Entry,
    hub: &Hub,
    state: &State,
    job_note: Option<String>,
    previous: Option<&HealthCheckStatus>,
) -> HealthCheckStatus {
    let id = e.id();
    let generation = e.generation;
    let check = match &e.verdict {
        Err(problems) => {
            return HealthCheckStatus {
                observed_generation: generation,
                state: Some(CheckState::Invalid),
                conditions: vec![
                    condition(
                        previous,
                        "Valid",
                        "False",
                        "InvalidSpec",
                        problems.join("; "),
                        generation,
                    ),
                    condition(
                        previous,
                        "Ready",
                        "False",
                        "InvalidSpec",
                        "the check does not run until its spec is valid".into(),
                        generation,
                    ),
                    condition(
                        previous,
                        "Healthy",
                        "Unknown",
                        "InvalidSpec",
                        "the check does not run".into(),
                        generation,
                    ),
                ],
                ..Default::default()
            };
        }
        Ok(check) => check,
    };
    let (agents, not_running) = hub.placement_of(&id);
    let targets = state.targets(&id);
    let failing = targets
        .iter()
        .filter(|t| t.state == Health::Failing)
        .count();
    let health = aggregate(&targets);
    let last = targets.iter().max_by_key(|t| t.last.start_unix_nanos);
    let ready = if check.spec.placement == crate::resource::Placement::Isolated {
        condition(
            previous,
            "Ready",
            "True",
            "RunsAsJobs",
            job_note.unwrap_or_else(|| "each run is a Job; none created yet".into()),
            generation,
        )
    } else if agents.is_empty() {
        condition(
            previous,
            "Ready",
            "False",
            "NotPlaced",
            not_running.unwrap_or_else(|| "no agent can run it yet".into()),
            generation,
        )
    } else {
        condition(
            previous,
            "Ready",
            "True",
            "Placed",
            format!("runs on {} agent(s)", agents.len()),
            generation,
        )
    };
    let healthy = match health {
        Health::Healthy => condition(
            previous,
            "Healthy",
            "True",
            "AllTargetsHealthy",
            String::new(),
            generation,
        ),
        Health::Failing => condition(
            previous,
            "Healthy",
            "False",
            "TargetsFailing",
            format!(
                "{failing} of {} failing; last: {}",
                targets.len(),
                last.map(|t| t.last.reason.as_str()).unwrap_or_default()
            ),
            generation,
        ),
        Health::Unknown => condition(
            previous,
            "Healthy",
            "Unknown",
            "NoVerdictYet",
            "too few results to reach a threshold".into(),
            generation,
        ),
    };
    HealthCheckStatus {
        observed_generation: generation,
        probe: check.spec.probe.kind(),
        target: Some(e.target.clone()),
        state: Some(match health {
            Health::Healthy => CheckState::Healthy,
            Health::Failing => CheckState::Failing,
            Health::Unknown => CheckState::Unknown,
        }),
        failing_targets: Some(u32::try_from(failing).unwrap_or(u32::MAX)),
        last_result: last.map(|t| LastResult {
            time: time_of(t.last.start_unix_nanos),
            outcome: match t.last.outcome.as_str() {
                "SUCCESS" => ResultOutcome::Success,
                "FAILURE" => ResultOutcome::Failure,
                "TIMEOUT" => ResultOutcome::Timeout,
                _ => ResultOutcome::Error,
            },
            reason: t.last.reason.clone(),
            target: t.last.target.clone(),
            node: (!t.last.node.is_empty()).then(|| t.last.node.clone()),
            latency_ms: Some((t.last.latency_seconds * 1000.0).round() as u64),
        }),
        conditions: vec![
            condition(
                previous,
                "Valid",
                "True",
                "Valid",
                String::new(),
                generation,
            ),
            ready,
            healthy,
        ],
    }
}
