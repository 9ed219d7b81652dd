//! Unit tests for the patch formats.

use super::*;
use serde_json::json;

#[test]
fn merge_patch_follows_rfc7386() {
    // The example from RFC 7386 section 3.
    let mut target = json!({"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"},
        "tags": ["example", "sample"], "content": "This will be unchanged"});
    let patch = json!({"title": "Hello!", "phoneNumber": "+01-123-456-7890",
        "author": {"familyName": null}, "tags": ["example"]});
    merge_patch(&mut target, &patch);
    assert_eq!(
        target,
        json!({"title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"],
            "content": "This will be unchanged", "phoneNumber": "+01-123-456-7890"})
    );
}

#[test]
fn strategic_merge_keys_conditions_by_type() {
    let mut node = json!({"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "KubeletReady"},
        {"type": "MemoryPressure", "status": "False"}
    ]}});
    let patch = json!({"status": {"conditions": [
        {"type": "Ready", "status": "False"},
        {"type": "VigilProbe", "status": "True"}
    ]}});
    strategic_merge(&mut node, &patch);
    assert_eq!(
        node["status"]["conditions"],
        json!([
            {"type": "Ready", "status": "False", "reason": "KubeletReady"},
            {"type": "MemoryPressure", "status": "False"},
            {"type": "VigilProbe", "status": "True"}
        ])
    );
}

#[test]
fn strategic_merge_directives() {
    let mut object = json!({"metadata": {"finalizers": ["a", "b"]},
        "status": {"conditions": [{"type": "A"}, {"type": "B"}]}, "spec": {"x": 1, "y": 2}});
    let patch = json!({
        "metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]},
        "status": {"conditions": [{"type": "A", "$patch": "delete"}], "$setElementOrder/conditions": []},
        "spec": {"$patch": "replace", "z": 3}
    });
    strategic_merge(&mut object, &patch);
    assert_eq!(object["metadata"]["finalizers"], json!(["b", "c"]));
    assert_eq!(object["status"]["conditions"], json!([{"type": "B"}]));
    assert_eq!(object["spec"], json!({"z": 3}));
}

#[test]
fn strategic_merge_replaces_unkeyed_lists() {
    let mut object = json!({"spec": {"args": ["a", "b"]}});
    strategic_merge(&mut object, &json!({"spec": {"args": ["c"]}}));
    assert_eq!(object["spec"]["args"], json!(["c"]));
}

#[test]
fn json_patch_operations() {
    let mut object = json!({"metadata": {"labels": {"a/b": "1"}}, "spec": {"list": [1, 2]}});
    let patch = json!([
        {"op": "test", "path": "/metadata/labels/a~1b", "value": "1"},
        {"op": "add", "path": "/spec/list/-", "value": 3},
        {"op": "add", "path": "/spec/list/0", "value": 0},
        {"op": "replace", "path": "/spec/list/1", "value": 10},
        {"op": "remove", "path": "/metadata/labels/a~1b"},
        {"op": "copy", "from": "/spec/list", "path": "/spec/copy"},
        {"op": "move", "from": "/spec/copy", "path": "/spec/moved"}
    ]);
    json_patch(&mut object, &patch).unwrap();
    assert_eq!(
        object,
        json!({"metadata": {"labels": {}}, "spec": {"list": [0, 10, 2, 3], "moved": [0, 10, 2, 3]}})
    );
}

#[test]
fn json_patch_test_of_a_missing_member_against_null_passes() {
    let mut object = json!({"metadata": {}});
    let patch = json!([
        {"op": "test", "path": "/metadata/finalizers", "value": null},
        {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}
    ]);
    json_patch(&mut object, &patch).unwrap();
    assert_eq!(object, json!({"metadata": {"finalizers": ["f"]}}));
}

#[test]
fn json_patch_failures_leave_the_object_alone() {
    let original = json!({"spec": {"x": 1}});
    let cases = [
        (
            json!([{"op": "test", "path": "/spec/x", "value": 2}]),
            false,
            "json patch operation 0 (test /spec/x) failed",
        ),
        (
            json!([{"op": "remove", "path": "/spec/y"}]),
            false,
            "json patch operation 0 (remove /spec/y) failed",
        ),
        (
            json!([{"op": "add", "path": "/a/b", "value": 1}]),
            false,
            "does not exist",
        ),
        (
            json!([{"op": "replace", "path": "/spec/x"}]),
            true,
            "replace needs a \"value\"",
        ),
        (
            json!([{"op": "frobnicate", "path": "/spec/x"}]),
            true,
            "unknown op \"frobnicate\"",
        ),
        (
            json!([{"op": "add", "path": "spec", "value": 1}]),
            true,
            "does not start with '/'",
        ),
        (json!({"op": "add"}), true, "expected a JSON array"),
    ];
    for (patch, bad_request, message) in cases {
        let mut object = original.clone();
        let error = json_patch(&mut object, &patch).unwrap_err();
        assert_eq!(object, original);
        assert_eq!(error.is_bad_request(), bad_request, "{patch}");
        assert!(error.to_string().contains(message), "{patch}: {error}");
    }
}

#[test]
fn content_types_and_bodies() {
    assert_eq!(
        PatchKind::from_content_type("application/merge-patch+json; charset=utf-8"),
        Some(PatchKind::Merge)
    );
    assert_eq!(
        PatchKind::from_content_type("application/apply-patch+yaml"),
        Some(PatchKind::Apply)
    );
    assert_eq!(PatchKind::from_content_type("text/plain"), None);
    assert_eq!(
        decode(PatchKind::Apply, b"spec:\n  x: 1\n").unwrap(),
        json!({"spec": {"x": 1}})
    );
    let error = decode(PatchKind::Merge, b"spec: 1").unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("the patch body is not valid JSON")
    );
}
