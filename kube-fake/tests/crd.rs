//! A CustomResource-derived HealthCheck and a registered CRD through the real kube client: status
//! subresource, server-side apply (`patch_status` included), owner-reference cascade, validation hooks,
//! dynamic objects and discovery.

use std::sync::Arc;

use anyhow::{Context, Result};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::discovery::{Discovery, Scope};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{CustomResource, CustomResourceExt, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use vigil_kube_fake::{FakeApiServer, FieldCause};

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
    target: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckStatus {
    #[serde(default)]
    conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    observed_generation: Option<i64>,
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
pub struct Condition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
}

fn check(name: &str, interval: &str) -> HealthCheck {
    HealthCheck::new(
        name,
        HealthCheckSpec {
            interval: interval.into(),
            target: "http://web".into(),
        },
    )
}

fn condition(type_: &str, status: &str) -> Condition {
    Condition {
        type_: type_.into(),
        status: status.into(),
    }
}

#[tokio::test]
async fn status_subresource_and_server_side_apply() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let checks: Api<HealthCheck> = Api::namespaced(server.client(), "shop");
    let mut with_status = check("web", "10s");
    with_status.status = Some(HealthCheckStatus {
        conditions: vec![condition("Ready", "True")],
        observed_generation: None,
    });
    let created = checks.create(&PostParams::default(), &with_status).await?;
    assert!(
        created.status.is_none(),
        "a CRD with a status subresource drops .status on create"
    );

    let manager = PatchParams::apply("vigil-federator");
    let apply = |conditions: Vec<Condition>| {
        Patch::Apply(
            json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "HealthCheck",
            "status": {"conditions": conditions, "observedGeneration": 1}}),
        )
    };
    checks
        .patch_status("web", &manager, &apply(vec![condition("Valid", "True")]))
        .await?;
    // Another manager's condition merges in by type.
    let other = Patch::Apply(
        json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "HealthCheck",
        "status": {"conditions": [{"type": "Scheduled", "status": "True"}]}}),
    );
    checks
        .patch_status("web", &PatchParams::apply("scheduler"), &other)
        .await?;
    // The same manager no longer applying Valid removes it, as field ownership does on a real server.
    let applied = checks
        .patch_status("web", &manager, &apply(vec![condition("Ready", "False")]))
        .await?;
    let status = applied.status.clone().unwrap();
    assert_eq!(
        status.conditions,
        [condition("Scheduled", "True"), condition("Ready", "False")]
    );
    let managers: Vec<(String, Option<String>)> = applied
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .map(|m| (m.manager.unwrap_or_default(), m.subresource))
        .collect();
    assert!(
        managers.contains(&("vigil-federator".into(), Some("status".into()))),
        "{managers:?}"
    );
    assert!(
        managers.contains(&("scheduler".into(), Some("status".into()))),
        "{managers:?}"
    );
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(applied.metadata.generation, Some(1));

    // A repeated identical apply is a no-op: no new resourceVersion, so no watch event.
    let rv = server.resource_version();
    checks
        .patch_status("web", &manager, &apply(vec![condition("Ready", "False")]))
        .await?;
    assert_eq!(server.resource_version(), rv);

    // Apply on the main resource creates a missing object and ignores .status.
    let new = json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "HealthCheck",
        "spec": {"interval": "5s", "target": "tcp://db:5432"}, "status": {"conditions": [{"type": "X", "status": "True"}]}});
    let created = checks
        .patch(
            "db",
            &PatchParams::apply("vigil-federator").force(),
            &Patch::Apply(new),
        )
        .await?;
    assert_eq!(created.spec.interval, "5s");
    assert!(created.status.is_none());

    let mut stale = checks.get("web").await?;
    stale.spec.interval = "20s".into();
    let replaced = checks
        .replace("web", &PostParams::default(), &stale)
        .await?;
    assert_eq!(replaced.metadata.generation, Some(2));
    assert_eq!(
        replaced.status.unwrap().conditions.len(),
        2,
        "replace keeps the stored status"
    );
    Ok(())
}

#[tokio::test]
async fn deleting_a_check_removes_its_jobs() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let client = server.client();
    let checks: Api<HealthCheck> = Api::namespaced(client.clone(), "shop");
    let jobs: Api<Job> = Api::namespaced(client.clone(), "shop");
    let owner = checks
        .create(&PostParams::default(), &check("web", "10s"))
        .await?;
    let owner_ref = owner.controller_owner_ref(&()).unwrap();
    for name in ["web-1", "web-2"] {
        let mut job: Job =
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"template": {}}}))?;
        job.metadata.owner_references = Some(vec![owner_ref.clone()]);
        jobs.create(&PostParams::default(), &job).await?;
    }
    let unrelated: Job =
        serde_json::from_value(json!({"metadata": {"name": "other"}, "spec": {"template": {}}}))?;
    jobs.create(&PostParams::default(), &unrelated).await?;

    checks.delete("web", &DeleteParams::background()).await?;
    let left: Vec<String> = jobs
        .list(&Default::default())
        .await?
        .items
        .iter()
        .map(|j| j.name_any())
        .collect();
    assert_eq!(left, ["other"]);
    Ok(())
}

#[tokio::test]
async fn finalizer_helper_adds_then_removes_its_finalizer_on_delete() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let checks: Api<HealthCheck> = Api::namespaced(server.client(), "shop");
    checks
        .create(&PostParams::default(), &check("web", "10s"))
        .await?;
    let run = |object: HealthCheck| {
        let checks = checks.clone();
        async move {
            finalizer(
                &checks,
                "vigil.dev/cleanup",
                Arc::new(object),
                |event| async move {
                    match event {
                        FinalizerEvent::Apply(_) => Ok::<_, std::io::Error>(Action::await_change()),
                        FinalizerEvent::Cleanup(_) => Ok(Action::await_change()),
                    }
                },
            )
            .await
        }
    };
    run(checks.get("web").await?).await?;
    assert_eq!(checks.get("web").await?.finalizers(), ["vigil.dev/cleanup"]);

    let deleting = checks
        .delete("web", &DeleteParams::default())
        .await?
        .left()
        .context("object")?;
    assert!(
        deleting.metadata.deletion_timestamp.is_some(),
        "a finalizer holds the object"
    );
    assert!(checks.get("web").await.is_ok());
    run(checks.get("web").await?).await?;
    assert!(
        checks.get_opt("web").await?.is_none(),
        "removing the last finalizer deletes it"
    );
    Ok(())
}

#[tokio::test]
async fn validators_answer_422_with_field_causes() -> Result<()> {
    let server = FakeApiServer::start().await?;
    server.set_validator("vigil.dev/v1alpha1", "healthchecks", |object| match object
        .pointer("/spec/interval")
        .and_then(|i| i.as_str())
    {
        Some("0s") => vec![FieldCause::invalid(
            "spec.interval",
            "\"0s\": must be at least 1s",
        )],
        _ => Vec::new(),
    })?;
    let checks: Api<HealthCheck> = Api::namespaced(server.client(), "shop");
    match checks
        .create(&PostParams::default(), &check("web", "0s"))
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
            let causes = &status.details.as_ref().unwrap().causes;
            assert_eq!(causes[0].field, "spec.interval");
            assert_eq!(causes[0].reason, "FieldValueInvalid");
        }
        other => panic!("expected 422 Invalid, got {other:?}"),
    }
    checks
        .create(&PostParams::default(), &check("web", "1s"))
        .await?;
    let error = server
        .set_validator("example.com/v1", "widgets", |_| Vec::new())
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("register it with FakeApiServer::register"),
        "{error}"
    );
    Ok(())
}

#[tokio::test]
async fn registered_crds_serve_dynamic_objects_and_discovery() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let mut crd = HealthCheck::crd();
    crd.spec.group = "example.com".into();
    crd.spec.names.kind = "Probe".into();
    crd.spec.names.plural = "probes".into();
    crd.spec.names.singular = Some("probe".into());
    crd.spec.scope = "Cluster".into();
    server.register_crd(&crd)?;

    let client = server.client();
    let gvk = GroupVersionKind::gvk("example.com", "v1alpha1", "Probe");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "probes");
    let probes: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
    let mut object = DynamicObject::new("p1", &resource);
    object.data = json!({"spec": {"interval": "1s", "target": "x"}});
    probes.create(&PostParams::default(), &object).await?;
    let listed = probes.list(&Default::default()).await?;
    assert_eq!(listed.items.len(), 1);
    assert_eq!(listed.items[0].data["spec"]["interval"], "1s");
    assert_eq!(server.objects("example.com/v1alpha1", "probes").len(), 1);

    let discovery = Discovery::new(client.clone()).run().await?;
    let (found, caps) = discovery
        .resolve_gvk(&gvk)
        .expect("discovery finds the registered CRD");
    assert_eq!(found.plural, "probes");
    assert_eq!(caps.scope, Scope::Cluster);
    let (hc, caps) = discovery
        .resolve_gvk(&GroupVersionKind::gvk(
            "vigil.dev",
            "v1alpha1",
            "HealthCheck",
        ))
        .unwrap();
    assert_eq!(hc.plural, HealthCheck::plural(&()));
    assert!(
        caps.subresources
            .iter()
            .any(|(sub, _)| sub.plural == "healthchecks/status" || sub.plural == "status")
    );

    let aggregated = Discovery::new(client.clone()).run_aggregated().await?;
    assert!(aggregated.resolve_gvk(&gvk).is_some());
    let nodes = aggregated
        .resolve_gvk(&GroupVersionKind::gvk("", "v1", "Node"))
        .unwrap();
    assert_eq!(nodes.1.scope, Scope::Cluster);

    let version = client.apiserver_version().await?;
    assert_eq!(version.major, "1");
    Ok(())
}

#[tokio::test]
async fn register_crd_refuses_incomplete_definitions() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let error = server.register_crd(
        &json!({"metadata": {"name": "x.example.com"}, "spec": {"group": "example.com"}}),
    );
    let message = error.unwrap_err().to_string();
    assert_eq!(
        message,
        "CustomResourceDefinition \"x.example.com\": spec.names.kind is missing or not a string; \
         set it as in apiextensions.k8s.io/v1"
    );
    Ok(())
}
