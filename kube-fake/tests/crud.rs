//! Typed k8s-openapi objects through the real kube client: create/get/list/replace/patch/delete, errors
//! as `kube::Error::Api` with the real codes and reasons, Lease optimistic concurrency, selectors.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use vigil_kube_fake::FakeApiServer;

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> (u16, String) {
    match result {
        Err(kube::Error::Api(status)) => (status.code, status.reason.clone()),
        other => panic!("expected kube::Error::Api, got {other:?}"),
    }
}

fn config_map(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    let mut map: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap();
    map.metadata.labels = Some(
        labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    );
    map
}

#[tokio::test]
async fn config_map_lifecycle_and_errors() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "shop");

    let created = maps
        .create(&PostParams::default(), &config_map("a", &[("app", "web")]))
        .await?;
    assert_eq!(created.metadata.namespace.as_deref(), Some("shop"));
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    let rv: u64 = created.metadata.resource_version.clone().unwrap().parse()?;

    assert_eq!(
        api_error(
            maps.create(&PostParams::default(), &config_map("a", &[]))
                .await
        ),
        (409, "AlreadyExists".into())
    );
    assert_eq!(
        api_error(maps.get("missing").await),
        (404, "NotFound".into())
    );
    match maps.get("missing").await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.message, "configmaps \"missing\" not found");
            let details = status.details.as_ref().unwrap();
            assert_eq!(
                (details.name.as_str(), details.kind.as_str()),
                ("missing", "configmaps")
            );
        }
        other => panic!("expected NotFound, got {other:?}"),
    }

    let mut fetched = maps.get("a").await?;
    fetched.data = Some(BTreeMap::from([("k".to_string(), "w".to_string())]));
    let replaced = maps.replace("a", &PostParams::default(), &fetched).await?;
    assert_eq!(replaced.data.unwrap()["k"], "w");
    let new_rv: u64 = replaced.metadata.resource_version.unwrap().parse()?;
    assert!(new_rv > rv, "{new_rv} > {rv}");

    assert_eq!(
        api_error(maps.replace("a", &PostParams::default(), &fetched).await),
        (409, "Conflict".into())
    );
    assert_eq!(
        api_error(
            maps.replace("zz", &PostParams::default(), &config_map("zz", &[]))
                .await
        )
        .0,
        404
    );

    let deleted = maps.delete("a", &DeleteParams::default()).await?;
    assert!(deleted.left().is_some(), "DELETE answers with the object");
    assert_eq!(
        api_error(maps.delete("a", &DeleteParams::default()).await).0,
        404
    );
    assert!(server.get("v1", "configmaps", "shop", "a").is_none());
    Ok(())
}

#[tokio::test]
async fn lists_filter_by_label_and_field_selectors() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let client = server.client();
    for (namespace, name, app) in [
        ("shop", "a", "web"),
        ("shop", "b", "db"),
        ("ops", "c", "web"),
    ] {
        let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        maps.create(&PostParams::default(), &config_map(name, &[("app", app)]))
            .await?;
    }
    let all: Api<ConfigMap> = Api::all(client.clone());
    let names = |list: kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        list.items
            .into_iter()
            .map(|m| m.metadata.name.unwrap())
            .collect()
    };
    assert_eq!(
        names(all.list(&ListParams::default()).await?),
        ["c", "a", "b"]
    );
    assert_eq!(
        names(all.list(&ListParams::default().labels("app=web")).await?),
        ["c", "a"]
    );
    assert_eq!(
        names(
            all.list(&ListParams::default().labels("app notin (web)"))
                .await?
        ),
        ["b"]
    );
    assert_eq!(
        names(
            all.list(&ListParams::default().fields("metadata.namespace=shop,metadata.name!=a"))
                .await?
        ),
        ["b"]
    );
    let shop: Api<ConfigMap> = Api::namespaced(client.clone(), "shop");
    assert_eq!(
        names(
            shop.list(&ListParams::default().labels("app in (web,db)"))
                .await?
        ),
        ["a", "b"]
    );

    let list = all.list(&ListParams::default()).await?;
    assert_eq!(
        list.metadata.resource_version,
        Some(server.resource_version().to_string())
    );

    let first = all.list(&ListParams::default().limit(2)).await?;
    assert_eq!(first.items.len(), 2);
    let token = first.metadata.continue_.clone().unwrap();
    assert_eq!(first.metadata.remaining_item_count, Some(1));
    let rest = all
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await?;
    assert_eq!(names(rest), ["b"]);

    let (code, reason) = api_error(all.list(&ListParams::default().labels("app in web")).await);
    assert_eq!((code, reason.as_str()), (400, "BadRequest"));
    Ok(())
}

#[tokio::test]
async fn node_status_patches_merge_conditions_by_type() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let nodes: Api<Node> = Api::all(server.client());
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": "n1", "labels": {"zone": "a"}},
        "status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady"},
            {"type": "MemoryPressure", "status": "False"}
        ]}
    }))?;
    let created = nodes.create(&PostParams::default(), &node).await?;
    assert_eq!(
        created.status.unwrap().conditions.unwrap().len(),
        2,
        "nodes keep their status on create"
    );

    let condition = json!({"status": {"conditions": [{"type": "VigilProbe", "status": "True", "reason": "Ok"}]}});
    nodes
        .patch_status("n1", &PatchParams::default(), &Patch::Strategic(condition))
        .await?;
    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
    let patched = nodes
        .patch_status("n1", &PatchParams::default(), &Patch::Strategic(ready))
        .await?;
    let conditions = patched.status.unwrap().conditions.unwrap();
    let summary: Vec<(String, String)> = conditions
        .iter()
        .map(|c| (c.type_.clone(), c.status.clone()))
        .collect();
    assert_eq!(
        summary,
        [
            ("Ready".into(), "False".into()),
            ("MemoryPressure".into(), "False".into()),
            ("VigilProbe".into(), "True".into())
        ]
    );
    assert_eq!(conditions[0].reason.as_deref(), Some("KubeletReady"));

    let spec_via_status =
        json!({"metadata": {"labels": {"zone": "b"}}, "spec": {"unschedulable": true}});
    let unchanged = nodes
        .patch_status(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(spec_via_status),
        )
        .await?;
    assert_eq!(unchanged.metadata.labels.unwrap()["zone"], "a");
    assert_eq!(unchanged.spec.and_then(|s| s.unschedulable), None);

    let status_via_main = json!({"spec": {"unschedulable": true}, "status": {"conditions": []}});
    let main = nodes
        .patch(
            "n1",
            &PatchParams::default(),
            &Patch::Merge(status_via_main),
        )
        .await?;
    assert_eq!(main.spec.unwrap().unschedulable, Some(true));
    assert_eq!(
        main.status.unwrap().conditions.unwrap().len(),
        3,
        "main writes ignore .status"
    );
    Ok(())
}

#[tokio::test]
async fn json_patch_and_its_failures() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    maps.create(&PostParams::default(), &config_map("a", &[]))
        .await?;
    let patch: Patch<()> = Patch::Json(serde_json::from_value(json!([
        {"op": "test", "path": "/data/k", "value": "v"},
        {"op": "add", "path": "/data/extra", "value": "x"},
        {"op": "remove", "path": "/data/k"}
    ]))?);
    let patched = maps.patch("a", &PatchParams::default(), &patch).await?;
    assert_eq!(
        patched.data.unwrap(),
        BTreeMap::from([("extra".to_string(), "x".to_string())])
    );

    let failing: Patch<()> = Patch::Json(serde_json::from_value(
        json!([{"op": "test", "path": "/data/extra", "value": "y"}]),
    )?);
    assert_eq!(
        api_error(maps.patch("a", &PatchParams::default(), &failing).await),
        (422, "Invalid".into())
    );
    let missing = maps
        .patch("zz", &PatchParams::default(), &Patch::Merge(json!({})))
        .await;
    assert_eq!(api_error(missing).0, 404);
    Ok(())
}

#[tokio::test]
async fn lease_replace_with_stale_resource_version_conflicts() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let leases: Api<Lease> = Api::namespaced(server.client(), "vigil");
    let lease: Lease = serde_json::from_value(json!({"metadata": {"name": "vigil-federator"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}))?;
    leases.create(&PostParams::default(), &lease).await?;

    // Two candidates read the same version; the first to write wins, the second gets 409.
    let mut first = leases.get("vigil-federator").await?;
    let mut second = first.clone();
    first.spec.as_mut().unwrap().holder_identity = Some("b".into());
    second.spec.as_mut().unwrap().holder_identity = Some("c".into());
    leases
        .replace("vigil-federator", &PostParams::default(), &first)
        .await?;
    let (code, reason) = api_error(
        leases
            .replace("vigil-federator", &PostParams::default(), &second)
            .await,
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    let holder = leases
        .get("vigil-federator")
        .await?
        .spec
        .unwrap()
        .holder_identity;
    assert_eq!(holder.as_deref(), Some("b"));
    Ok(())
}

#[tokio::test]
async fn job_status_subresource_and_generate_name() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let jobs: Api<Job> = Api::namespaced(server.client(), "shop");
    let job: Job = serde_json::from_value(json!({
        "metadata": {"generateName": "web-"},
        "spec": {"backoffLimit": 1, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "run", "image": "vigil-agent"}]}}},
        "status": {"active": 1}
    }))?;
    let created = jobs.create(&PostParams::default(), &job).await?;
    let name = created.metadata.name.clone().unwrap();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    assert!(created.status.is_none(), "Job create drops .status");
    assert_eq!(created.metadata.generation, Some(1));

    let status = json!({"status": {"succeeded": 1}});
    let patched = jobs
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
        .await?;
    assert_eq!(patched.status.unwrap().succeeded, Some(1));
    assert_eq!(
        patched.metadata.generation,
        Some(1),
        "status writes do not bump generation"
    );

    let spec = json!({"spec": {"backoffLimit": 3}});
    let patched = jobs
        .patch(&name, &PatchParams::default(), &Patch::Merge(spec))
        .await?;
    assert_eq!(patched.metadata.generation, Some(2));

    let dry = jobs
        .patch(
            &name,
            &PatchParams {
                dry_run: true,
                ..PatchParams::default()
            },
            &Patch::Merge(json!({"spec": {"backoffLimit": 9}})),
        )
        .await?;
    assert_eq!(dry.spec.unwrap().backoff_limit, Some(9));
    assert_eq!(
        jobs.get(&name).await?.spec.unwrap().backoff_limit,
        Some(3),
        "dryRun stores nothing"
    );
    Ok(())
}

#[tokio::test]
async fn delete_collection_by_label() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "shop");
    for (name, app) in [("a", "web"), ("b", "web"), ("c", "db")] {
        maps.create(&PostParams::default(), &config_map(name, &[("app", app)]))
            .await?;
    }
    let deleted = maps
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("app=web"),
        )
        .await?;
    let names: Vec<String> = deleted
        .left()
        .context("a list")?
        .items
        .into_iter()
        .map(|m| m.metadata.name.unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    let left: Vec<String> = maps
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .map(|m| m.metadata.name.unwrap())
        .collect();
    assert_eq!(left, ["c"]);
    Ok(())
}
