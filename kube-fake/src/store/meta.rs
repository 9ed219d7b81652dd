//! Object metadata helpers: names, namespaces, resourceVersions, name rules and change detection.

use serde_json::{Value, json};

use super::Store;
use crate::resource::ResourceKind;

/// `metadata.name`, or `""`.
pub fn name(object: &Value) -> &str {
    text(object, "name")
}

/// `metadata.namespace`, or `""`.
pub fn namespace(object: &Value) -> &str {
    text(object, "namespace")
}

/// `metadata.uid`, or `""`.
pub fn uid(object: &Value) -> &str {
    text(object, "uid")
}

/// `metadata.resourceVersion`, or `""`.
pub fn resource_version(object: &Value) -> &str {
    text(object, "resourceVersion")
}

/// A string field of `metadata`, or `""`.
pub fn text<'a>(object: &'a Value, field: &str) -> &'a str {
    object
        .get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// `metadata.finalizers` is non-empty.
pub fn has_finalizers(object: &Value) -> bool {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// `metadata.deletionTimestamp` is set.
pub fn is_deleting(object: &Value) -> bool {
    object
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
}

/// Whether the object lists an owner with this uid.
pub fn is_owned_by(object: &Value, owner_uid: &str) -> bool {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|owners| {
            owners
                .iter()
                .any(|o| o.get("uid").and_then(Value::as_str) == Some(owner_uid))
        })
}

/// Why a name is not a valid DNS subdomain (RFC 1123), or `None` when it is.
pub fn name_problem(name: &str) -> Option<String> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    let valid_ends = name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if name.len() > 253 {
        return Some(format!("\"{name}\": must be no more than 253 characters"));
    }
    if !valid_chars || !valid_ends {
        return Some(format!(
            "\"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or \
             '.', and must start and end with an alphanumeric character (e.g. 'example.com')"
        ));
    }
    None
}

/// Whether a write changes more than metadata (and status, for kinds with a status subresource): the
/// rule for bumping `metadata.generation`.
pub fn spec_changed(kind: &ResourceKind, old: &Value, new: &Value) -> bool {
    strip_for_generation(kind, old) != strip_for_generation(kind, new)
}

fn strip_for_generation(kind: &ResourceKind, object: &Value) -> Value {
    let mut object = object.clone();
    if let Value::Object(map) = &mut object {
        map.remove("metadata");
        map.remove("apiVersion");
        map.remove("kind");
        if kind.status_subresource {
            map.remove("status");
        }
    }
    object
}

/// Whether two versions of an object are the same write-wise (ignoring resourceVersion, managedFields and
/// apiVersion): a no-op write is not committed, as on the real server.
pub fn same_content(old: &Value, new: &Value) -> bool {
    normalise(old) == normalise(new)
}

fn normalise(object: &Value) -> Value {
    let mut object = object.clone();
    if let Value::Object(map) = &mut object {
        map.remove("apiVersion");
        if let Some(Value::Object(metadata)) = map.get_mut("metadata") {
            metadata.remove("resourceVersion");
            metadata.remove("managedFields");
        }
    }
    object
}

/// The current time as the API formats it (`2024-01-02T03:04:05Z`).
pub fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl Store {
    pub(super) fn generate_name(
        &mut self,
        kind: &ResourceKind,
        namespace: &str,
        prefix: &str,
    ) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        loop {
            let mut random = self.next_random();
            let suffix: String = (0..5)
                .map(|_| {
                    let c = ALPHABET[(random % ALPHABET.len() as u64) as usize] as char;
                    random /= ALPHABET.len() as u64;
                    c
                })
                .collect();
            let name = format!("{prefix}{suffix}");
            if self.find(kind, namespace, &name).is_none() {
                return name;
            }
        }
    }

    pub(super) fn generate_uid(&mut self) -> String {
        let (a, b) = (self.next_random(), self.next_random());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            ((b >> 48) & 0x3fff) | 0x8000,
            b & 0xffff_ffff_ffff
        )
    }
}

/// Keeps the fields clients cannot change: uid, creation and deletion timestamps, name and namespace.
pub fn copy_system_metadata(existing: &Value, updated: &mut Value) {
    if !updated.get("metadata").is_some_and(Value::is_object) {
        updated["metadata"] = json!({});
    }
    for field in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "name",
        "namespace",
    ] {
        let Value::Object(metadata) = &mut updated["metadata"] else {
            return;
        };
        match existing.get("metadata").and_then(|m| m.get(field)) {
            Some(value) => metadata.insert(field.to_string(), value.clone()),
            None => metadata.remove(field),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_follow_rfc1123() {
        assert_eq!(name_problem("web-1.example"), None);
        for bad in ["Web", "-web", "web-", "we_b", ""] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
        assert!(
            name_problem(&"a".repeat(254))
                .unwrap()
                .contains("no more than 253")
        );
    }

    #[test]
    fn generation_ignores_metadata_and_status_subresource() {
        let kind = ResourceKind::namespaced("g", "v1", "K", "ks").with_status(true);
        let old = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"x": 1}, "status": {"s": 1}});
        let relabelled =
            json!({"metadata": {"labels": {"a": "2"}}, "spec": {"x": 1}, "status": {"s": 2}});
        let respecced = json!({"metadata": {}, "spec": {"x": 2}, "status": {"s": 1}});
        assert!(!spec_changed(&kind, &old, &relabelled));
        assert!(spec_changed(&kind, &old, &respecced));
        let plain = ResourceKind::namespaced("g", "v1", "K", "ks");
        assert!(spec_changed(&plain, &old, &relabelled));
    }

    #[test]
    fn no_op_detection_ignores_resource_version() {
        let old = json!({"metadata": {"name": "a", "resourceVersion": "3"}, "spec": {}});
        let new = json!({"metadata": {"name": "a", "resourceVersion": "9"}, "spec": {}});
        assert!(same_content(&old, &new));
        assert!(!same_content(
            &old,
            &json!({"metadata": {"name": "a"}, "spec": {"x": 1}})
        ));
    }
}
