//! Server-side apply bookkeeping: the fields each manager applied, kept as `FieldsV1` in
//! `metadata.managedFields`, so that fields a manager stops applying are removed as on the real server.

use serde_json::{Map, Value, json};

use super::{Part, meta};
use crate::patch::merge_key;
use crate::resource::ResourceKind;

/// Metadata fields the server owns; never part of a manager's field set.
const SYSTEM_METADATA: [&str; 8] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "deletionTimestamp",
];

/// Removes what `manager` applied last time and no longer applies, then records its new field set. The
/// field set covers `.status` only for status applies, and leaves `.status` out of main applies of kinds
/// with a status subresource.
pub fn track(kind: &ResourceKind, part: Part, object: &mut Value, applied: &Value, manager: &str) {
    let subresource = (part == Part::Status).then_some("status");
    let scoped = match part {
        Part::Status => json!({"status": applied.get("status").cloned().unwrap_or(json!({}))}),
        Part::Main => {
            let mut scoped = applied.clone();
            if let (true, Value::Object(map)) = (kind.status_subresource, &mut scoped) {
                map.remove("status");
            }
            scoped
        }
    };
    let fields = field_set(&scoped);
    if let Some(old) = previous(object, manager, subresource) {
        // What another apply manager owns stays, even when this one stops applying it.
        let mut kept = fields.clone();
        for entry in entries(object)
            .iter()
            .filter(|e| !is_entry(e, manager, subresource))
        {
            if let Some(other) = entry.get("fieldsV1") {
                union(&mut kept, other);
            }
        }
        remove_dropped(object, &old, &kept);
    }
    record(object, manager, subresource, &kind.api_version(), fields);
}

/// The `FieldsV1` set of an applied configuration: `f:<field>` for fields, `k:{"<key>":...}` for list
/// items merged by key, `.` for the item itself.
pub fn field_set(applied: &Value) -> Value {
    let Value::Object(map) = applied else {
        return json!({});
    };
    let mut set = Map::new();
    for (name, value) in map {
        if name == "apiVersion" || name == "kind" {
            continue;
        }
        let subtree = if name == "metadata" {
            let mut metadata = value.clone();
            if let Value::Object(fields) = &mut metadata {
                fields.retain(|field, _| !SYSTEM_METADATA.contains(&field.as_str()));
            }
            subtree_of(name, &metadata)
        } else {
            subtree_of(name, value)
        };
        set.insert(format!("f:{name}"), subtree);
    }
    Value::Object(set)
}

fn subtree_of(name: &str, value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let set: Map<String, Value> = map
                .iter()
                .map(|(k, v)| (format!("f:{k}"), subtree_of(k, v)))
                .collect();
            Value::Object(set)
        }
        Value::Array(items) => match merge_key(name) {
            Some(key) => {
                let mut set = Map::new();
                for item in items {
                    let Some(key_value) = item.get(key) else {
                        continue;
                    };
                    let mut entry = match subtree_of("", item) {
                        Value::Object(map) => map,
                        _ => Map::new(),
                    };
                    entry.insert(".".into(), json!({}));
                    set.insert(
                        format!("k:{}", json!({ key: key_value })),
                        Value::Object(entry),
                    );
                }
                Value::Object(set)
            }
            None => json!({}),
        },
        _ => json!({}),
    }
}

/// The field set `manager` last applied to this object (or its `subresource`).
pub fn previous(object: &Value, manager: &str, subresource: Option<&str>) -> Option<Value> {
    entries(object)
        .iter()
        .find(|e| is_entry(e, manager, subresource))
        .and_then(|e| e.get("fieldsV1").cloned())
}

/// Records `fields` as what `manager` applied, replacing its earlier entry.
pub fn record(
    object: &mut Value,
    manager: &str,
    subresource: Option<&str>,
    api_version: &str,
    fields: Value,
) {
    let mut list: Vec<Value> = entries(object)
        .into_iter()
        .filter(|e| !is_entry(e, manager, subresource))
        .collect();
    let mut entry = json!({
        "manager": manager,
        "operation": "Apply",
        "apiVersion": api_version,
        "time": meta::now(),
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
    });
    if let Some(subresource) = subresource {
        entry["subresource"] = json!(subresource);
    }
    list.push(entry);
    if object.get("metadata").is_some_and(Value::is_object) {
        object["metadata"]["managedFields"] = Value::Array(list);
    }
}

fn entries(object: &Value) -> Vec<Value> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn is_entry(entry: &Value, manager: &str, subresource: Option<&str>) -> bool {
    entry.get("manager").and_then(Value::as_str) == Some(manager)
        && entry.get("operation").and_then(Value::as_str) == Some("Apply")
        && entry.get("subresource").and_then(Value::as_str) == subresource
}

/// Adds every path of `other` to `set`.
fn union(set: &mut Value, other: &Value) {
    let (Value::Object(set), Value::Object(other)) = (set, other) else {
        return;
    };
    for (key, subtree) in other {
        union(set.entry(key.clone()).or_insert_with(|| json!({})), subtree);
    }
}

/// Removes from `target` what the `old` field set held and the `new` one does not.
pub fn remove_dropped(target: &mut Value, old: &Value, new: &Value) {
    let (Value::Object(old), Some(new)) = (old, new.as_object()) else {
        return;
    };
    for (key, old_subtree) in old {
        let new_subtree = new.get(key);
        if let Some(name) = key.strip_prefix("f:") {
            let Value::Object(fields) = target else {
                continue;
            };
            match new_subtree {
                None => {
                    fields.remove(name);
                }
                Some(new_subtree) => {
                    if let Some(child) = fields.get_mut(name) {
                        remove_dropped(child, old_subtree, new_subtree);
                    }
                }
            }
        } else if let Some(item_key) = key.strip_prefix("k:") {
            let Value::Array(items) = target else {
                continue;
            };
            let Ok(Value::Object(item_key)) = serde_json::from_str::<Value>(item_key) else {
                continue;
            };
            let matches = |item: &Value| item_key.iter().all(|(k, v)| item.get(k) == Some(v));
            match new_subtree {
                None => items.retain(|item| !matches(item)),
                Some(new_subtree) => {
                    if let Some(item) = items.iter_mut().find(|item| matches(item)) {
                        remove_dropped(item, old_subtree, new_subtree);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
