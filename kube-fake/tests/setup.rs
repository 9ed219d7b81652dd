//! Direct store access for test set-up and asserts: typed and JSON puts (status included), gets,
//! deletes, and the errors they give for unknown or badly placed objects.

use anyhow::{Context, Result};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use serde_json::json;
use vigil_kube_fake::FakeApiServer;

#[tokio::test]
async fn direct_store_access_for_set_up_and_asserts() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let ready: Node = serde_json::from_value(json!({"metadata": {"name": "n1"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))?;
    let stored = server.put_resource(&ready)?;
    assert!(stored.metadata.uid.is_some());
    let nodes: Api<Node> = Api::all(server.client());
    let fetched = nodes.get("n1").await?;
    assert_eq!(
        fetched.status.unwrap().conditions.unwrap()[0].status,
        "True"
    );

    // put() bypasses the status rules: test set-up may write the status of a Job directly.
    let job = json!({"metadata": {"name": "run", "namespace": "shop"}, "spec": {"template": {}},
        "status": {"failed": 1}});
    server.put("batch/v1", "jobs", job)?;
    let job: Job = server.get_resource("shop", "run").context("stored job")?;
    assert_eq!(job.status.unwrap().failed, Some(1));

    let error = server.put("v1", "widgets", json!({})).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("no resource \"widgets\" in \"v1\""),
        "{error}"
    );
    let error = server
        .put("v1", "configmaps", json!({"metadata": {"name": "x"}}))
        .unwrap_err();
    assert!(
        error.to_string().contains("configmaps is namespaced"),
        "{error}"
    );
    assert!(server.get_resource::<Node>("", "missing").is_none());
    server.delete("v1", "nodes", "", "n1")?;
    assert!(server.objects("v1", "nodes").is_empty());
    Ok(())
}
