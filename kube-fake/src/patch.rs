//! Patch formats: JSON merge patch (RFC 7386), strategic merge (lists keyed like the real types),
//! JSON patch (RFC 6902) and the merge used to approximate server-side apply.

use serde_json::{Map, Value};

/// Errors from decoding or applying a patch.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// The body is not the JSON (or YAML) document the content type promises.
    #[error("the patch body is not valid {format}: {why}")]
    DecodeBody { format: &'static str, why: String },
    /// A JSON patch operation is malformed (unknown op, missing path or value).
    #[error("json patch operation {index} is malformed: {why}")]
    ReadOperation { index: usize, why: String },
    /// A JSON patch operation cannot be applied to the object.
    #[error("json patch operation {index} ({op} {path}) failed: {why}")]
    ApplyOperation {
        index: usize,
        op: String,
        path: String,
        why: String,
    },
}

impl PatchError {
    /// Whether the request itself is malformed (400) rather than not applicable (422).
    pub fn is_bad_request(&self) -> bool {
        !matches!(self, PatchError::ApplyOperation { .. })
    }
}

/// The patch formats the server accepts, by content type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchKind {
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    Strategic,
    /// `application/json-patch+json`
    Json,
    /// `application/apply-patch+yaml`
    Apply,
}

impl PatchKind {
    /// The kind for a `Content-Type` value, ignoring parameters.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        match content_type.split(';').next().unwrap_or_default().trim() {
            "application/merge-patch+json" => Some(Self::Merge),
            "application/strategic-merge-patch+json" => Some(Self::Strategic),
            "application/json-patch+json" => Some(Self::Json),
            "application/apply-patch+yaml" | "application/apply-patch+json" => Some(Self::Apply),
            _ => None,
        }
    }
}

/// Decodes a patch body: JSON, or YAML for apply patches.
pub fn decode(kind: PatchKind, body: &[u8]) -> Result<Value, PatchError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(value) => Ok(value),
        Err(_) if kind == PatchKind::Apply => {
            serde_yaml::from_slice::<Value>(body).map_err(|e| PatchError::DecodeBody {
                format: "YAML",
                why: e.to_string(),
            })
        }
        Err(e) => Err(PatchError::DecodeBody {
            format: "JSON",
            why: e.to_string(),
        }),
    }
}

/// Applies a decoded patch of the given kind to `target`.
pub fn apply(kind: PatchKind, target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    match kind {
        PatchKind::Merge => {
            merge_patch(target, patch);
            Ok(())
        }
        PatchKind::Strategic | PatchKind::Apply => {
            strategic_merge(target, patch);
            Ok(())
        }
        PatchKind::Json => json_patch(target, patch),
    }
}

/// RFC 7386 JSON merge patch: objects merge recursively, `null` deletes, everything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// The merge key of list fields that the real types merge by key (by field name, whatever the parent).
pub(crate) fn merge_key(field: &str) -> Option<&'static str> {
    match field {
        "conditions" | "addresses" => Some("type"),
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "ownerReferences" => Some("uid"),
        _ => None,
    }
}

/// Primitive lists merged as sets.
fn merges_primitives(field: &str) -> bool {
    field == "finalizers"
}

/// Strategic merge patch, as far as the fake knows the types: like a merge patch, but lists named in
/// [`merge_key`] merge item by item on their key (`status.conditions` by `type`), `finalizers` merge as a
/// set, and the directives `$patch: replace|delete`, `$deleteFromPrimitiveList/<field>` are honoured;
/// `$setElementOrder/<field>` and `$retainKeys` are accepted and ignored.
pub fn strategic_merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut replacement = patch.clone();
        replacement.remove("$patch");
        *target = Value::Object(replacement);
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target = target.as_object_mut().expect("made an object above");
    for (key, value) in patch {
        if key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Value::Array(remove)) =
                (target.get_mut(field), value)
            {
                items.retain(|item| !remove.contains(item));
            }
            continue;
        }
        match value {
            Value::Null => {
                target.remove(key);
            }
            Value::Array(items) => match (merge_key(key), target.get_mut(key)) {
                (Some(merge_on), Some(Value::Array(existing))) => {
                    merge_keyed_list(existing, items, merge_on)
                }
                (None, Some(Value::Array(existing))) if merges_primitives(key) => {
                    for item in items {
                        if !existing.contains(item) {
                            existing.push(item.clone());
                        }
                    }
                }
                _ => {
                    let cleaned = items
                        .iter()
                        .filter(|item| !is_delete_directive(item))
                        .cloned()
                        .collect();
                    target.insert(key.clone(), Value::Array(cleaned));
                }
            },
            Value::Object(_) => {
                strategic_merge(target.entry(key.clone()).or_insert(Value::Null), value)
            }
            _ => {
                target.insert(key.clone(), value.clone());
            }
        }
    }
}

fn is_delete_directive(item: &Value) -> bool {
    item.get("$patch").and_then(Value::as_str) == Some("delete")
}

fn merge_keyed_list(existing: &mut Vec<Value>, patch: &[Value], merge_on: &str) {
    for item in patch {
        let key = item.get(merge_on);
        let position = key.and_then(|k| existing.iter().position(|e| e.get(merge_on) == Some(k)));
        match (is_delete_directive(item), position) {
            (true, Some(index)) => {
                existing.remove(index);
            }
            (true, None) => {}
            (false, Some(index)) => strategic_merge(&mut existing[index], item),
            (false, None) => {
                let mut fresh = Value::Null;
                strategic_merge(&mut fresh, item);
                existing.push(fresh);
            }
        }
    }
}

/// RFC 6902 JSON patch: add, remove, replace, move, copy, test.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let operations = patch.as_array().ok_or_else(|| PatchError::DecodeBody {
        format: "JSON patch",
        why: "expected a JSON array of operations".into(),
    })?;
    let mut working = target.clone();
    for (index, operation) in operations.iter().enumerate() {
        let read = |field: &str| {
            operation
                .get(field)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| PatchError::ReadOperation {
                    index,
                    why: format!("missing string field {field:?}"),
                })
        };
        let op = read("op")?;
        let path = read("path")?;
        let fail = |why: String| PatchError::ApplyOperation {
            index,
            op: op.clone(),
            path: path.clone(),
            why,
        };
        let value = || {
            operation
                .get("value")
                .cloned()
                .ok_or_else(|| PatchError::ReadOperation {
                    index,
                    why: format!("{op} needs a \"value\""),
                })
        };
        let tokens =
            parse_pointer(&path).map_err(|why| PatchError::ReadOperation { index, why })?;
        match op.as_str() {
            "add" => add(&mut working, &tokens, value()?).map_err(fail)?,
            "remove" => {
                remove(&mut working, &tokens).map_err(fail)?;
            }
            "replace" => {
                remove(&mut working, &tokens).map_err(fail)?;
                add(&mut working, &tokens, value()?).map_err(fail)?;
            }
            "move" | "copy" => {
                let from = parse_pointer(&read("from")?)
                    .map_err(|why| PatchError::ReadOperation { index, why })?;
                let moved = if op == "move" {
                    remove(&mut working, &from).map_err(fail)?
                } else {
                    lookup(&working, &from)
                        .cloned()
                        .ok_or_else(|| fail("\"from\" does not exist".into()))?
                };
                add(&mut working, &tokens, moved).map_err(fail)?;
            }
            "test" => {
                let expected = value()?;
                // A missing member tests equal to null, as on the real server (kube-runtime's finalizer
                // helper relies on it).
                if lookup(&working, &tokens).unwrap_or(&Value::Null) != &expected {
                    return Err(fail(format!("the value is not {expected}")));
                }
            }
            other => {
                return Err(PatchError::ReadOperation {
                    index,
                    why: format!("unknown op {other:?}"),
                });
            }
        }
    }
    *target = working;
    Ok(())
}

fn parse_pointer(pointer: &str) -> Result<Vec<String>, String> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| format!("path {pointer:?} does not start with '/'"))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn lookup<'a>(value: &'a Value, tokens: &[String]) -> Option<&'a Value> {
    tokens
        .iter()
        .try_fold(value, |current, token| match current {
            Value::Object(map) => map.get(token),
            Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
}

fn parent<'a>(value: &'a mut Value, tokens: &[String]) -> Result<&'a mut Value, String> {
    let mut current = value;
    for token in tokens {
        current = match current {
            Value::Object(map) => map.get_mut(token),
            Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| format!("the parent path element {token:?} does not exist"))?;
    }
    Ok(current)
}

fn add(value: &mut Value, tokens: &[String], new: Value) -> Result<(), String> {
    let Some((last, init)) = tokens.split_last() else {
        *value = new;
        return Ok(());
    };
    match parent(value, init)? {
        Value::Object(map) => {
            map.insert(last.clone(), new);
            Ok(())
        }
        Value::Array(items) => {
            let index = if last == "-" {
                items.len()
            } else {
                array_index(last, items.len() + 1)?
            };
            items.insert(index, new);
            Ok(())
        }
        _ => Err("the parent is neither an object nor an array".into()),
    }
}

fn remove(value: &mut Value, tokens: &[String]) -> Result<Value, String> {
    let (last, init) = tokens
        .split_last()
        .ok_or("cannot remove the whole document")?;
    match parent(value, init)? {
        Value::Object(map) => map
            .remove(last)
            .ok_or_else(|| format!("{last:?} does not exist")),
        Value::Array(items) => {
            let index = array_index(last, items.len())?;
            Ok(items.remove(index))
        }
        _ => Err("the parent is neither an object nor an array".into()),
    }
}

fn array_index(token: &str, bound: usize) -> Result<usize, String> {
    match token.parse::<usize>() {
        Ok(index) if index < bound => Ok(index),
        _ => Err(format!("array index {token:?} is out of range")),
    }
}

#[cfg(test)]
#[path = "patch/tests.rs"]
mod tests;
