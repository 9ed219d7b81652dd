//! Unit tests for server-side apply bookkeeping.

use super::*;
use crate::patch::PatchKind;
use crate::store::{Store, WriteOptions};
use std::sync::Arc;
use tokio::sync::broadcast;

const OPTIONS: WriteOptions = WriteOptions {
    dry_run: false,
    field_manager: None,
};

fn store() -> Store {
    Store::new(100, broadcast::channel(64).0)
}

fn kind(store: &Store, api_version: &str, plural: &str) -> Arc<ResourceKind> {
    store
        .registry()
        .find_api_version(api_version, plural)
        .unwrap()
}

#[test]
fn apply_creates_then_merges() {
    let mut store = store();
    let kind = kind(&store, "vigil.dev/v1alpha1", "healthchecks");
    let apply = json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "HealthCheck", "spec": {"interval": "10s"}});
    let (_, created) = store
        .patch(
            &kind,
            "shop",
            "web",
            Part::Main,
            PatchKind::Apply,
            &apply,
            &OPTIONS,
        )
        .unwrap();
    assert!(created);
    let status = json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "HealthCheck",
        "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    store
        .patch(
            &kind,
            "shop",
            "web",
            Part::Status,
            PatchKind::Apply,
            &status,
            &OPTIONS,
        )
        .unwrap();
    let status = json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "HealthCheck",
        "status": {"conditions": [{"type": "Valid", "status": "True"}]}});
    let other = WriteOptions {
        dry_run: false,
        field_manager: Some("other".into()),
    };
    let (object, _) = store
        .patch(
            &kind,
            "shop",
            "web",
            Part::Status,
            PatchKind::Apply,
            &status,
            &other,
        )
        .unwrap();
    let types = |object: &Value| -> Vec<String> {
        let conditions = object["status"]["conditions"].as_array().unwrap();
        conditions
            .iter()
            .map(|c| c["type"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        types(&object),
        ["Ready", "Valid"],
        "two managers' conditions merge by type"
    );
    assert_eq!(
        object["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // The same manager applying without Valid removes it: it no longer applies that item.
    let status = json!({"apiVersion": "vigil.dev/v1alpha1", "kind": "HealthCheck",
        "status": {"conditions": [{"type": "Degraded", "status": "True"}]}});
    let (object, _) = store
        .patch(
            &kind,
            "shop",
            "web",
            Part::Status,
            PatchKind::Apply,
            &status,
            &other,
        )
        .unwrap();
    assert_eq!(types(&object), ["Ready", "Degraded"]);

    let missing = store
        .patch(
            &kind,
            "shop",
            "gone",
            Part::Status,
            PatchKind::Apply,
            &status,
            &OPTIONS,
        )
        .unwrap_err();
    assert_eq!(missing.code, 404);
    let untyped = json!({"spec": {}});
    let error = store
        .patch(
            &kind,
            "shop",
            "web",
            Part::Main,
            PatchKind::Apply,
            &untyped,
            &OPTIONS,
        )
        .unwrap_err();
    assert_eq!(error.code, 400);
}

#[test]
fn field_sets_use_fieldsv1_keys() {
    let applied = json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "a", "labels": {"l": "1"}},
        "status": {"conditions": [{"type": "Ready", "status": "True"}], "count": 1}});
    assert_eq!(
        field_set(&applied),
        json!({"f:metadata": {"f:labels": {"f:l": {}}}, "f:status": {"f:count": {},
            "f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}, "f:type": {}, "f:status": {}}}}})
    );
}

#[test]
fn dropped_fields_and_items_are_removed() {
    let old = field_set(
        &json!({"status": {"a": 1, "b": 2, "conditions": [{"type": "A"}, {"type": "B"}]}}),
    );
    let new = field_set(&json!({"status": {"a": 1, "conditions": [{"type": "A"}]}}));
    let mut object = json!({"spec": {"x": 1}, "status": {"a": 1, "b": 2, "c": 3,
        "conditions": [{"type": "A"}, {"type": "B"}, {"type": "C"}]}});
    remove_dropped(&mut object, &old, &new);
    assert_eq!(
        object,
        json!({"spec": {"x": 1}, "status": {"a": 1, "c": 3, "conditions": [{"type": "A"}, {"type": "C"}]}})
    );
}

#[test]
fn fields_another_manager_applies_stay() {
    let kind = ResourceKind::namespaced("g", "v1", "K", "ks").with_status(true);
    let both = json!({"status": {"conditions": [{"type": "A"}, {"type": "B"}]}});
    let mut object = json!({"metadata": {"name": "x"}, "status": both["status"].clone()});
    track(&kind, Part::Status, &mut object, &both, "one");
    track(
        &kind,
        Part::Status,
        &mut object,
        &json!({"status": {"conditions": [{"type": "A"}]}}),
        "two",
    );
    track(
        &kind,
        Part::Status,
        &mut object,
        &json!({"status": {"conditions": []}}),
        "one",
    );
    assert_eq!(
        object["status"]["conditions"],
        json!([{"type": "A"}]),
        "two still applies A"
    );
}

#[test]
fn entries_are_per_manager_and_subresource() {
    let mut object = json!({"metadata": {"name": "a"}});
    record(&mut object, "m", None, "v1", json!({"f:spec": {}}));
    record(
        &mut object,
        "m",
        Some("status"),
        "v1",
        json!({"f:status": {}}),
    );
    record(&mut object, "m", None, "v1", json!({"f:spec": {"f:x": {}}}));
    assert_eq!(
        object["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        previous(&object, "m", None),
        Some(json!({"f:spec": {"f:x": {}}}))
    );
    assert_eq!(
        previous(&object, "m", Some("status")),
        Some(json!({"f:status": {}}))
    );
    assert_eq!(previous(&object, "other", None), None);
}
