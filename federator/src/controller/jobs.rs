//! `placement: Isolated`: every run of such a check is a `batch/v1` Job of its own, owned by the
//! HealthCheck, running `vigil-agent run-once` with the CheckSpec passed in, which reports back
//! over `Report`. Concurrency is CronJob's `Forbid`: a run is skipped (and the status says so)
//! while the previous Job is still active. A Job that never reports (image pull error, eviction,
//! deadline) becomes an ERROR result carrying the pod's reason.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, EnvVarSource, ObjectFieldSelector, Pod, PodSpec, PodTemplateSpec,
    ResourceRequirements, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, ListParams, PostParams};
use prost::Message;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use vigil_proto::federator_server::Federator;
use vigil_proto::{Outcome, ProbeResult, ResultBatch};

use super::checks::Catalog;
use crate::grpc::FederatorService;
use crate::resource::{API_VERSION, HealthCheck, KIND, Placement};
use crate::state::State;

/// Label on every Job (and so its pods) naming the HealthCheck it runs.
pub const CHECK_LABEL: &str = "vigil.dev/check";

#[derive(Clone, Debug)]
pub struct JobOptions {
    /// The image with `vigil-agent` (the Job runs `vigil-agent run-once`).
    pub image: String,
    /// The federator's gRPC URL as seen from a pod.
    pub federator_url: String,
    /// Finished Jobs are deleted this long after (`ttlSecondsAfterFinished`).
    pub ttl_after_finished: Duration,
    /// Extra time after a Job's deadline before it counts as never reported.
    pub report_grace: Duration,
    pub tick: Duration,
}

impl Default for JobOptions {
    fn default() -> Self {
        Self {
            image: "ghcr.io/vigil-dev/vigil:0.1.0".into(),
            federator_url: "http://vigil-federator.vigil.svc:7443".into(),
            ttl_after_finished: Duration::from_secs(600),
            report_grace: Duration::from_secs(30),
            tick: Duration::from_millis(250),
        }
    }
}

/// Per check id: the latest note about its Jobs (e.g. a skipped run), for the status.
pub type JobNotes = Arc<Mutex<HashMap<String, String>>>;

/// A Job created and not yet reported.
struct Run {
    check_id: String,
    namespace: String,
    target: String,
    /// When it counts as never reported.
    give_up_at: Instant,
}

#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: kube::Client,
    catalog: Catalog,
    state: Arc<State>,
    reporter: FederatorService,
    mut leader: watch::Receiver<bool>,
    options: JobOptions,
    notes: JobNotes,
    cancel: CancellationToken,
) {
    let mut next_due: HashMap<String, Instant> = HashMap::new();
    let mut runs: BTreeMap<String, Run> = BTreeMap::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(options.tick) => {}
            _ = leader.changed() => {}
            () = cancel.cancelled() => return,
        }
        if !*leader.borrow() {
            continue;
        }
        let now = Instant::now();
        for entry in catalog.entries() {
            let Ok(check) = &entry.verdict else { continue };
            if check.spec.placement != Placement::Isolated {
                continue;
            }
            let id = entry.id();
            let due = next_due.entry(id.clone()).or_insert(now);
            if now < *due {
                continue;
            }
            *due = now + check.spec.interval.0;
            let jobs: Api<Job> = Api::namespaced(client.clone(), &entry.namespace);
            match active_job(&jobs, &entry.name).await {
                Ok(Some(active)) => {
                    let note = format!(
                        "skipped a run: Job {active} is still active (concurrency policy Forbid)"
                    );
                    tracing::info!(check = %id, %note);
                    notes.lock().unwrap().insert(id, note);
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(check = %id, error = %e, "listing Jobs failed; retrying");
                    *due = now;
                    continue;
                }
            }
            let job = job_for(check, &options);
            let name = job.metadata.name.clone().unwrap_or_default();
            match jobs.create(&PostParams::default(), &job).await {
                Ok(_) => {
                    tracing::info!(check = %id, job = %name, "created a Job for an isolated run");
                    notes
                        .lock()
                        .unwrap()
                        .insert(id.clone(), format!("last run: Job {name}"));
                    let deadline = active_deadline(check);
                    runs.insert(
                        name,
                        Run {
                            check_id: id,
                            namespace: entry.namespace.clone(),
                            target: entry.target.clone(),
                            give_up_at: now + deadline + options.report_grace,
                        },
                    );
                }
                Err(e) => {
                    tracing::warn!(check = %id, error = %e, "creating a Job failed; retrying");
                    *due = now;
                }
            }
        }
        settle_runs(&client, &state, &reporter, &mut runs).await;
    }
}

/// Drops runs that reported; turns those that failed or passed their deadline into ERRORs.
async fn settle_runs(
    client: &kube::Client,
    state: &State,
    reporter: &FederatorService,
    runs: &mut BTreeMap<String, Run>,
) {
    let now = Instant::now();
    let mut settled = Vec::new();
    for (job_name, run) in runs.iter() {
        let reported = state
            .recent(&run.check_id, 200)
            .unwrap_or_default()
            .iter()
            .any(|r| &r.agent == job_name);
        if reported {
            settled.push(job_name.clone());
            continue;
        }
        let jobs: Api<Job> = Api::namespaced(client.clone(), &run.namespace);
        let failed = match jobs.get_opt(job_name).await {
            Ok(Some(job)) => job_failed(&job),
            Ok(None) => Some("the Job was deleted before it reported".to_owned()),
            Err(_) => None,
        };
        if failed.is_none() && now < run.give_up_at {
            continue;
        }
        let pods: Api<Pod> = Api::namespaced(client.clone(), &run.namespace);
        let (node, pod_reason) = pod_reason(&pods, job_name).await;
        let reason = format!(
            "Job {}/{job_name} never reported: {}",
            run.namespace,
            failed
                .map(|f| format!("{f}; {pod_reason}"))
                .unwrap_or(pod_reason)
        );
        tracing::warn!(check = %run.check_id, %reason);
        let result = ProbeResult {
            check_id: run.check_id.clone(),
            target: run.target.clone(),
            node,
            agent_id: job_name.clone(),
            seq: 1,
            start_unix_nanos: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64),
            outcome: Outcome::Error as i32,
            reason,
            attempt: 1,
            scope: "cluster".into(),
            ..Default::default()
        };
        let batch = ResultBatch {
            results: vec![result],
            agent_id: job_name.clone(),
            batch_seq: 0,
        };
        if let Err(status) = reporter.report(tonic::Request::new(batch)).await {
            tracing::warn!(job = %job_name, %status, "recording the Job's ERROR failed; retrying");
            continue;
        }
        settled.push(job_name.clone());
    }
    for name in settled {
        runs.remove(&name);
    }
}

/// The name of a Job of `check` that has not finished, if any.
async fn active_job(jobs: &Api<Job>, check: &str) -> Result<Option<String>, kube::Error> {
    let list = jobs
        .list(&ListParams::default().labels(&format!("{CHECK_LABEL}={check}")))
        .await?;
    Ok(list
        .items
        .into_iter()
        .find(|j| !job_finished(j))
        .and_then(|j| j.metadata.name))
}

fn job_finished(job: &Job) -> bool {
    job.status.as_ref().is_some_and(|s| {
        s.completion_time.is_some()
            || s.conditions.as_ref().is_some_and(|cs| {
                cs.iter()
                    .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
            })
    })
}

fn job_failed(job: &Job) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True")
        .map(|c| {
            format!(
                "Job failed: {} {}",
                c.reason.as_deref().unwrap_or_default(),
                c.message.as_deref().unwrap_or_default()
            )
            .trim_end()
            .to_owned()
        })
}

/// The node and the reason the Job's pod gives (waiting/terminated reason, eviction).
async fn pod_reason(pods: &Api<Pod>, job_name: &str) -> (String, String) {
    let Ok(list) = pods
        .list(&ListParams::default().labels(&format!("job-name={job_name}")))
        .await
    else {
        return (String::new(), "its pods could not be read".into());
    };
    let Some(pod) = list.items.into_iter().next() else {
        return (
            String::new(),
            "no pod was created (quota, admission or scheduling)".into(),
        );
    };
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default();
    let status = pod.status.unwrap_or_default();
    let container = status
        .container_statuses
        .unwrap_or_default()
        .into_iter()
        .find_map(|c| {
            let state = c.state?;
            if let Some(w) = state.waiting {
                return Some(format!(
                    "pod {}: {} {}",
                    c.name,
                    w.reason.unwrap_or_default(),
                    w.message.unwrap_or_default()
                ));
            }
            state.terminated.map(|t| {
                format!(
                    "pod {}: {} (exit {}) {}",
                    c.name,
                    t.reason.unwrap_or_default(),
                    t.exit_code,
                    t.message.unwrap_or_default()
                )
            })
        });
    let reason = container
        .or_else(|| {
            status
                .reason
                .map(|r| format!("pod {r}: {}", status.message.unwrap_or_default()))
        })
        .unwrap_or_else(|| format!("pod phase {}", status.phase.unwrap_or_default()));
    (node, reason.trim_end().to_owned())
}

/// `activeDeadlineSeconds`: every attempt's timeout, plus start-up slack.
fn active_deadline(check: &HealthCheck) -> Duration {
    let timeout = check.spec.effective_timeout().0;
    timeout * (check.spec.retries + 1) + Duration::from_secs(30)
}

/// The Job of one isolated run of `check`.
pub fn job_for(check: &HealthCheck, options: &JobOptions) -> Job {
    let name = check.metadata.name.clone().unwrap_or_default();
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    // Job names are DNS labels (63); leave room for the run stamp.
    let base: String = name.chars().take(40).collect();
    let job_name = format!("{}-{stamp}", base.trim_end_matches('-'));
    let spec = crate::spec::check_spec(check);
    let labels: BTreeMap<String, String> = [
        (CHECK_LABEL.to_owned(), name.clone()),
        (
            // The NetworkPolicy lets pods of this name reach the federator's gRPC port.
            "app.kubernetes.io/name".to_owned(),
            "vigil-agent".to_owned(),
        ),
        (
            "app.kubernetes.io/component".to_owned(),
            "run-once".to_owned(),
        ),
        (
            "app.kubernetes.io/managed-by".to_owned(),
            "vigil-federator".to_owned(),
        ),
    ]
    .into();
    let env = |name: &str, value: String| EnvVar {
        name: name.to_owned(),
        value: Some(value),
        ..Default::default()
    };
    let quantity = |s: &str| Quantity(s.to_owned());
    Job {
        metadata: ObjectMeta {
            name: Some(job_name.clone()),
            namespace: check.metadata.namespace.clone(),
            labels: Some(labels.clone()),
            owner_references: Some(vec![OwnerReference {
                api_version: API_VERSION.to_owned(),
                kind: KIND.to_owned(),
                name: name.clone(),
                uid: check.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(i32::try_from(check.spec.retries).unwrap_or(i32::MAX)),
            active_deadline_seconds: Some(
                i64::try_from(active_deadline(check).as_secs()).unwrap_or(i64::MAX),
            ),
            ttl_seconds_after_finished: Some(
                i32::try_from(options.ttl_after_finished.as_secs()).unwrap_or(i32::MAX),
            ),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    automount_service_account_token: Some(false),
                    containers: vec![Container {
                        name: "run-once".into(),
                        image: Some(options.image.clone()),
                        args: Some(vec!["run-once".into()]),
                        env: Some(vec![
                            env("VIGIL_FEDERATOR", options.federator_url.clone()),
                            env(
                                "VIGIL_CHECK_SPEC",
                                vigil_agent::run_once::to_hex(&spec.encode_to_vec()),
                            ),
                            env("VIGIL_AGENT_ID", job_name),
                            EnvVar {
                                name: "VIGIL_NODE".into(),
                                value_from: Some(EnvVarSource {
                                    field_ref: Some(ObjectFieldSelector {
                                        field_path: "spec.nodeName".into(),
                                        ..Default::default()
                                    }),
                                    ..Default::default()
                                }),
                                ..Default::default()
                            },
                        ]),
                        resources: Some(ResourceRequirements {
                            requests: Some(
                                [
                                    ("cpu".to_owned(), quantity("10m")),
                                    ("memory".to_owned(), quantity("32Mi")),
                                ]
                                .into(),
                            ),
                            limits: Some(
                                [
                                    ("cpu".to_owned(), quantity("200m")),
                                    ("memory".to_owned(), quantity("128Mi")),
                                ]
                                .into(),
                            ),
                            ..Default::default()
                        }),
                        security_context: Some(SecurityContext {
                            run_as_non_root: Some(true),
                            read_only_root_filesystem: Some(true),
                            allow_privilege_escalation: Some(false),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}
