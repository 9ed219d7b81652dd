//! kube-runtime's Controller reconciling HealthChecks against the fake server, writing status with
//! server-side apply, plus a reflector store kept in sync.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{CustomResource, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use vigil_kube_fake::{FakeApiServer, Verb};

const DEADLINE: Duration = Duration::from_secs(10);

#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "vigil.dev",
    version = "v1alpha1",
    kind = "HealthCheck",
    namespaced,
    status = "HealthCheckStatus"
)]
pub struct HealthCheckSpec {
    interval: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckStatus {
    observed_generation: Option<i64>,
    interval: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("status patch failed: {0}")]
struct ReconcileError(#[source] kube::Error);

async fn reconcile(
    check: Arc<HealthCheck>,
    client: Arc<kube::Client>,
) -> Result<Action, ReconcileError> {
    let api: Api<HealthCheck> =
        Api::namespaced((*client).clone(), &check.namespace().unwrap_or_default());
    let status = json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "HealthCheck",
        "status": {"observedGeneration": check.metadata.generation, "interval": check.spec.interval}});
    api.patch_status(
        &check.name_any(),
        &PatchParams::apply("vigil-test").force(),
        &Patch::Apply(status),
    )
    .await
    .map_err(ReconcileError)?;
    Ok(Action::await_change())
}

fn error_policy(_: Arc<HealthCheck>, _: &ReconcileError, _: Arc<kube::Client>) -> Action {
    Action::requeue(Duration::from_millis(100))
}

/// Waits until the stored HealthCheck's status satisfies `done`.
async fn wait_for_status(
    server: &FakeApiServer,
    name: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> Result<()> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let object = server.get("vigil.dev/v1alpha1", "healthchecks", "shop", name);
        if object.as_ref().is_some_and(|o| done(&o["status"])) {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "status of {name} never got there: {object:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn controller_reconciles_and_writes_status_with_apply() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let client = server.client();
    let checks: Api<HealthCheck> = Api::all(client.clone());
    let controller = Controller::new(checks, watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(client.clone()))
        .for_each(|_| async {});
    let controller = tokio::spawn(controller);

    let shop: Api<HealthCheck> = Api::namespaced(client.clone(), "shop");
    shop.create(
        &PostParams::default(),
        &HealthCheck::new(
            "web",
            HealthCheckSpec {
                interval: "10s".into(),
            },
        ),
    )
    .await?;
    wait_for_status(&server, "web", |s| {
        s["observedGeneration"] == 1 && s["interval"] == "10s"
    })
    .await?;

    // A failed status write is retried by the error policy.
    server.fail_next(Verb::Patch, "healthchecks/status", 500);
    shop.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"interval": "5s"}})),
    )
    .await?;
    wait_for_status(&server, "web", |s| {
        s["observedGeneration"] == 2 && s["interval"] == "5s"
    })
    .await?;
    let failed = server
        .requests()
        .iter()
        .filter(|r| r.resource == "healthchecks/status" && r.code == 500)
        .count();
    assert_eq!(failed, 1);

    // Reconciling its own status change writes the same status again: a no-op, so the loop stops.
    let patches = server.count(Verb::Patch, "healthchecks/status");
    assert!(
        patches <= 5,
        "{patches} status patches for two spec versions"
    );
    controller.abort();
    Ok(())
}

#[tokio::test]
async fn reflector_store_follows_the_server() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let client = server.client();
    let checks: Api<HealthCheck> = Api::namespaced(client.clone(), "shop");
    checks
        .create(
            &PostParams::default(),
            &HealthCheck::new(
                "a",
                HealthCheckSpec {
                    interval: "1s".into(),
                },
            ),
        )
        .await?;
    let (reader, writer) = reflector::store::<HealthCheck>();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(checks.clone(), watcher::Config::default()),
    )
    .applied_objects()
    .for_each(|_| async {});
    let task = tokio::spawn(stream);
    tokio::time::timeout(DEADLINE, reader.wait_until_ready())
        .await
        .context("reflector never ready")??;
    assert_eq!(reader.state().len(), 1);
    checks
        .create(
            &PostParams::default(),
            &HealthCheck::new(
                "b",
                HealthCheckSpec {
                    interval: "1s".into(),
                },
            ),
        )
        .await?;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while reader.state().len() != 2 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the reflector never saw b"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task.abort();
    Ok(())
}

#[tokio::test]
async fn owned_jobs_trigger_reconciles() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let client = server.client();
    let checks: Api<HealthCheck> = Api::namespaced(client.clone(), "shop");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "shop");
    let reconciles = Arc::new(AtomicUsize::new(0));
    let counter = reconciles.clone();
    let controller = Controller::new(checks.clone(), watcher::Config::default())
        .owns(jobs.clone(), watcher::Config::default())
        .run(
            move |_, _| {
                counter.fetch_add(1, Ordering::SeqCst);
                async { Ok::<_, ReconcileError>(Action::await_change()) }
            },
            |_, _, _| Action::await_change(),
            Arc::new(()),
        )
        .for_each(|_| async {});
    let controller = tokio::spawn(controller);

    let owner = checks
        .create(
            &PostParams::default(),
            &HealthCheck::new(
                "web",
                HealthCheckSpec {
                    interval: "1s".into(),
                },
            ),
        )
        .await?;
    wait_until(|| reconciles.load(Ordering::SeqCst) >= 1).await?;
    let before = reconciles.load(Ordering::SeqCst);
    let mut job: Job =
        serde_json::from_value(json!({"metadata": {"name": "web-run"}, "spec": {"template": {}}}))?;
    job.metadata.owner_references = Some(vec![
        owner.controller_owner_ref(&()).context("owner reference")?,
    ]);
    jobs.create(&PostParams::default(), &job).await?;
    wait_until(|| reconciles.load(Ordering::SeqCst) > before).await?;
    controller.abort();
    Ok(())
}

#[tokio::test]
async fn event_recorder_creates_then_patches_a_series() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let client = server.client();
    let checks: Api<HealthCheck> = Api::namespaced(client.clone(), "shop");
    let check = checks
        .create(
            &PostParams::default(),
            &HealthCheck::new(
                "web",
                HealthCheckSpec {
                    interval: "1s".into(),
                },
            ),
        )
        .await?;
    let recorder = Recorder::new(client.clone(), "vigil-federator".into());
    let event = Event {
        type_: EventType::Warning,
        reason: "ProbeFailed".into(),
        note: Some("connection refused".into()),
        action: "Probe".into(),
        secondary: None,
    };
    let reference = check.object_ref(&());
    recorder.publish(&event, &reference).await?;
    recorder.publish(&event, &reference).await?;
    let events = server.objects("events.k8s.io/v1", "events");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["series"]["count"], 2);
    assert_eq!(events[0]["regarding"]["name"], "web");
    assert_eq!(server.count(Verb::Create, "events"), 1);
    assert_eq!(server.count(Verb::Patch, "events"), 1);
    Ok(())
}

/// Waits for a condition with a deadline.
async fn wait_until(condition: impl Fn() -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !condition() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}
