//! Unit tests for the store: write semantics, status subresource, finalizers, cascade and history.

use super::*;
use crate::patch::PatchKind;
use serde_json::json;

fn store() -> Store {
    Store::new(100, broadcast::channel(64).0)
}

fn kind(store: &Store, api_version: &str, plural: &str) -> Arc<ResourceKind> {
    store
        .registry()
        .find_api_version(api_version, plural)
        .unwrap()
}

fn hc(name: &str) -> Value {
    json!({"metadata": {"name": name}, "spec": {"interval": "10s"}, "status": {"state": "x"}})
}

const OPTIONS: WriteOptions = WriteOptions {
    dry_run: false,
    field_manager: None,
};

#[test]
fn create_stamps_metadata_and_drops_status_of_crds() {
    let mut store = store();
    let kind = kind(&store, "vigil.dev/v1alpha1", "healthchecks");
    let created = store.create(&kind, "shop", hc("web"), &OPTIONS).unwrap();
    assert_eq!(created["apiVersion"], "vigil.dev/v1alpha1");
    assert_eq!(created["kind"], "HealthCheck");
    assert_eq!(created["metadata"]["namespace"], "shop");
    assert_eq!(created["metadata"]["generation"], 1);
    assert_eq!(
        created["metadata"]["resourceVersion"],
        store.resource_version().to_string()
    );
    assert_eq!(created["metadata"]["uid"].as_str().unwrap().len(), 36);
    assert!(
        created["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap()
            .ends_with('Z')
    );
    assert!(created.get("status").is_none());

    let error = store
        .create(&kind, "shop", hc("web"), &OPTIONS)
        .unwrap_err();
    assert_eq!((error.code, error.reason.as_str()), (409, "AlreadyExists"));
}

#[test]
fn create_refuses_bad_names_and_mismatched_bodies() {
    let mut store = store();
    let kind = kind(&store, "vigil.dev/v1alpha1", "healthchecks");
    let cases = [
        (
            json!({"metadata": {}}),
            422,
            "name or generateName is required",
        ),
        (json!({"metadata": {"name": "Bad_Name"}}), 422, "RFC 1123"),
        (
            json!({"metadata": {"name": "a", "namespace": "other"}}),
            400,
            "does not match the namespace",
        ),
        (
            json!({"apiVersion": "v1", "metadata": {"name": "a"}}),
            400,
            "API version in the data (v1)",
        ),
        (
            json!({"kind": "Pod", "metadata": {"name": "a"}}),
            400,
            "kind in the data (Pod)",
        ),
        (json!([1]), 400, "not a JSON object"),
        (
            json!({"metadata": {"name": "a", "resourceVersion": "3"}}),
            400,
            "should not be set",
        ),
    ];
    for (body, code, message) in cases {
        let error = store
            .create(&kind, "shop", body.clone(), &OPTIONS)
            .unwrap_err();
        assert_eq!(error.code, code, "{body}");
        assert!(error.message.contains(message), "{body}: {}", error.message);
    }
}

#[test]
fn generate_name_makes_unique_names() {
    let mut store = store();
    let kind = kind(&store, "batch/v1", "jobs");
    let body = json!({"metadata": {"generateName": "run-"}});
    let a = store.create(&kind, "shop", body.clone(), &OPTIONS).unwrap();
    let b = store.create(&kind, "shop", body, &OPTIONS).unwrap();
    let (a, b) = (meta::name(&a).to_string(), meta::name(&b).to_string());
    assert!(a.starts_with("run-") && a.len() == 9, "{a}");
    assert_ne!(a, b);
}

#[test]
fn replace_conflicts_on_stale_resource_version_and_keeps_status() {
    let mut store = store();
    let kind = kind(&store, "vigil.dev/v1alpha1", "healthchecks");
    let created = store.create(&kind, "shop", hc("web"), &OPTIONS).unwrap();
    let status = json!({"metadata": {"name": "web"}, "status": {"state": "Healthy"}});
    store
        .replace(&kind, "shop", "web", Part::Status, status, &OPTIONS)
        .unwrap();

    let mut stale = created.clone();
    stale["spec"]["interval"] = json!("5s");
    let error = store
        .replace(&kind, "shop", "web", Part::Main, stale.clone(), &OPTIONS)
        .unwrap_err();
    assert_eq!((error.code, error.reason.as_str()), (409, "Conflict"));
    assert!(error.message.contains("the object has been modified"));

    stale["metadata"]["resourceVersion"] = json!(store.resource_version().to_string());
    stale["status"] = json!({"state": "ignored"});
    let replaced = store
        .replace(&kind, "shop", "web", Part::Main, stale, &OPTIONS)
        .unwrap();
    assert_eq!(replaced["status"]["state"], "Healthy");
    assert_eq!(replaced["metadata"]["generation"], 2);
    assert_eq!(replaced["metadata"]["uid"], created["metadata"]["uid"]);

    let missing = store
        .replace(&kind, "shop", "nope", Part::Main, hc("nope"), &OPTIONS)
        .unwrap_err();
    assert_eq!(missing.code, 404);
}

#[test]
fn status_writes_change_only_status_and_not_generation() {
    let mut store = store();
    let kind = kind(&store, "vigil.dev/v1alpha1", "healthchecks");
    store.create(&kind, "shop", hc("web"), &OPTIONS).unwrap();
    let patch = json!({"spec": {"interval": "1s"}, "metadata": {"labels": {"a": "b"}}, "status": {"state": "Failing"}});
    let (patched, created) = store
        .patch(
            &kind,
            "shop",
            "web",
            Part::Status,
            PatchKind::Merge,
            &patch,
            &OPTIONS,
        )
        .unwrap();
    assert!(!created);
    assert_eq!(patched["spec"]["interval"], "10s");
    assert!(patched["metadata"].get("labels").is_none());
    assert_eq!(patched["status"]["state"], "Failing");
    assert_eq!(patched["metadata"]["generation"], 1);
}

#[test]
fn no_op_writes_commit_nothing() {
    let mut store = store();
    let kind = kind(&store, "vigil.dev/v1alpha1", "healthchecks");
    store.create(&kind, "shop", hc("web"), &OPTIONS).unwrap();
    let before = store.resource_version();
    let patch = json!({"spec": {"interval": "10s"}});
    store
        .patch(
            &kind,
            "shop",
            "web",
            Part::Main,
            PatchKind::Merge,
            &patch,
            &OPTIONS,
        )
        .unwrap();
    assert_eq!(store.resource_version(), before);
}

#[test]
fn put_keeps_status_and_dry_run_stores_nothing() {
    let mut store = store();
    let kind = kind(&store, "vigil.dev/v1alpha1", "healthchecks");
    let mut object = hc("web");
    object["metadata"]["namespace"] = json!("shop");
    let put = store.put(&kind, object.clone()).unwrap();
    assert_eq!(put["status"]["state"], "x");
    object["status"]["state"] = json!("y");
    assert_eq!(store.put(&kind, object).unwrap()["status"]["state"], "y");

    let before = store.resource_version();
    let dry = WriteOptions {
        dry_run: true,
        field_manager: None,
    };
    store.create(&kind, "shop", hc("dry"), &dry).unwrap();
    assert_eq!(store.resource_version(), before);
    assert!(store.get(&kind, "shop", "dry").is_err());
}

#[test]
fn watch_replays_history_and_expires_old_versions() {
    let mut store = Store::new(3, broadcast::channel(64).0);
    let kind = kind(&store, "v1", "configmaps");
    let start = store.resource_version();
    for name in ["a", "b", "c", "d"] {
        store
            .create(&kind, "ns", json!({"metadata": {"name": name}}), &OPTIONS)
            .unwrap();
    }
    let error = store.watch(&kind, Some(start)).unwrap_err();
    assert_eq!((error.code, error.reason.as_str()), (410, "Expired"));
    let (replay, _, _) = store.watch(&kind, Some(start + 2)).unwrap();
    let WatchStart::Replay(changes) = replay else {
        panic!("expected a replay")
    };
    assert_eq!(
        changes
            .iter()
            .map(|c| meta::name(&c.object))
            .collect::<Vec<_>>(),
        ["c", "d"]
    );

    store.compact();
    assert_eq!(
        store
            .watch(&kind, Some(store.resource_version() - 1))
            .unwrap_err()
            .code,
        410
    );
    assert!(store.watch(&kind, Some(store.resource_version())).is_ok());
}

#[test]
fn validators_refuse_with_causes() {
    let mut store = store();
    let kind = kind(&store, "vigil.dev/v1alpha1", "healthchecks");
    let validator: Validator = Arc::new(|object: &Value| {
        if object.pointer("/spec/interval").is_some_and(|i| i == "0s") {
            vec![FieldCause::invalid(
                "spec.interval",
                "\"0s\": must be positive",
            )]
        } else {
            Vec::new()
        }
    });
    store.set_validator("vigil.dev", "healthchecks", validator);
    let mut bad = hc("web");
    bad["spec"]["interval"] = json!("0s");
    let error = store.create(&kind, "shop", bad, &OPTIONS).unwrap_err();
    assert_eq!(error.code, 422);
    assert_eq!(
        error.message,
        "HealthCheck.vigil.dev \"web\" is invalid: spec.interval: Invalid value: \"0s\": must be positive"
    );
    assert!(store.create(&kind, "shop", hc("web"), &OPTIONS).is_ok());
}

#[test]
fn created_crds_are_served_and_bad_crds_refused() {
    let mut store = store();
    let crds = kind(
        &store,
        "apiextensions.k8s.io/v1",
        "customresourcedefinitions",
    );
    let crd = json!({"metadata": {"name": "widgets.example.com"}, "spec": {"group": "example.com",
        "scope": "Namespaced", "names": {"kind": "Widget", "plural": "widgets"},
        "versions": [{"name": "v1", "served": true, "storage": true}]}});
    store.create(&crds, "", crd, &OPTIONS).unwrap();
    assert!(
        store
            .registry()
            .find_api_version("example.com/v1", "widgets")
            .is_some()
    );
    let error = store
        .create(
            &crds,
            "",
            json!({"metadata": {"name": "bad.example.com"}, "spec": {}}),
            &OPTIONS,
        )
        .unwrap_err();
    assert_eq!(error.code, 422);
}

#[test]
fn odd_patches_give_errors_not_panics() {
    let mut store = store();
    let kind = kind(&store, "vigil.dev/v1alpha1", "healthchecks");
    store.create(&kind, "shop", hc("web"), &OPTIONS).unwrap();
    let patch = |store: &mut Store, patch_kind, body: Value, part| {
        store.patch(&kind, "shop", "web", part, patch_kind, &body, &OPTIONS)
    };
    let whole = json!([{"op": "replace", "path": "", "value": [1, 2]}]);
    assert_eq!(
        patch(&mut store, PatchKind::Json, whole, Part::Main)
            .unwrap_err()
            .code,
        422
    );
    assert_eq!(
        patch(&mut store, PatchKind::Merge, json!("text"), Part::Main)
            .unwrap_err()
            .code,
        422
    );
    let (object, _) = patch(
        &mut store,
        PatchKind::Strategic,
        json!({"metadata": "x"}),
        Part::Main,
    )
    .unwrap();
    assert_eq!(
        object["metadata"]["name"], "web",
        "system metadata survives"
    );
    let apply = json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "HealthCheck", "metadata": 5});
    assert_eq!(
        patch(&mut store, PatchKind::Apply, apply, Part::Main)
            .unwrap_err()
            .code,
        400
    );
    let (object, _) = patch(
        &mut store,
        PatchKind::Merge,
        json!({"status": 7}),
        Part::Status,
    )
    .unwrap();
    assert_eq!(object["status"], 7);
}
