//! A small structural-schema checker for tests: what the API server would prune, refuse or
//! default in a value, given a CRD's `openAPIV3Schema`.

use serde_json::Value;

/// Root keys every object has that a CRD schema does not list.
const ROOT_KEYS: &[&str] = &["apiVersion", "kind", "metadata"];

/// The schema node of a printer-column style path such as `.status.lastResult.time`.
pub fn at_path<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    path.trim_start_matches('.')
        .split('.')
        .try_fold(root, |node, key| node.get("properties")?.get(key))
}

/// Fields of `value` the schema does not know (the API server would silently drop them).
pub fn unknown_fields(schema: &Value, value: &Value, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    unknown(schema, value, path, &mut out);
    out
}

fn unknown(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    if schema.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                let here = format!("{path}.{key}");
                if path.is_empty() && ROOT_KEYS.contains(&key.as_str()) {
                    continue;
                }
                if let Some(sub) = schema.get("properties").and_then(|p| p.get(key)) {
                    unknown(sub, item, &here, out);
                } else if let Some(sub) =
                    schema.get("additionalProperties").filter(|s| s.is_object())
                {
                    unknown(sub, item, &here, out);
                } else {
                    out.push(here);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    unknown(sub, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// What the schema refuses in `value`: types, `required`, `enum`, `pattern`, lengths and
/// bounds (not formats, not CEL: see `cel_eval`).
pub fn check_value(schema: &Value, value: &Value, path: &str) -> Vec<String> {
    let mut out = Vec::new();
    check(schema, value, path, &mut out);
    out
}

fn check(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    let mut fail = |what: String| out.push(format!("{path}: {what}"));
    if value.is_null() {
        if schema.get("nullable") != Some(&Value::Bool(true)) {
            fail("null is not allowed".into());
        }
        return;
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        fail(format!("{value} is not one of {allowed:?}"));
    }
    let int_or_string = schema.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let ty = schema.get("type").and_then(Value::as_str);
    let type_ok = match (ty, value) {
        _ if int_or_string => value.is_string() || value.is_i64() || value.is_u64(),
        (None, _) => true,
        (Some("string"), Value::String(_))
        | (Some("boolean"), Value::Bool(_))
        | (Some("number"), Value::Number(_))
        | (Some("object"), Value::Object(_))
        | (Some("array"), Value::Array(_)) => true,
        (Some("integer"), Value::Number(n)) => n.is_i64() || n.is_u64(),
        _ => false,
    };
    if !type_ok {
        fail(format!(
            "{value} is not of type {}",
            ty.unwrap_or("int-or-string")
        ));
        return;
    }
    if let Value::String(s) = value {
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            match regex::Regex::new(pattern) {
                Ok(re) if !re.is_match(s) => fail(format!("{s:?} does not match {pattern}")),
                Ok(_) => {}
                Err(e) => fail(format!("pattern {pattern} does not compile: {e}")),
            }
        }
        let len = s.chars().count() as u64;
        if schema
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| len < m)
        {
            fail(format!("{s:?} is shorter than minLength"));
        }
        if schema
            .get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| len > m)
        {
            fail(format!("{s:?} is longer than maxLength"));
        }
    }
    if let Value::Number(n) = value {
        let x = n.as_f64().unwrap_or(f64::NAN);
        if schema
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| x < m)
        {
            fail(format!("{n} is below the minimum"));
        }
        if schema
            .get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| x > m)
        {
            fail(format!("{n} is above the maximum"));
        }
    }
    match value {
        Value::Object(map) => {
            for key in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(key) = key.as_str()
                    && !map.contains_key(key)
                {
                    out.push(format!("{path}.{key}: is required"));
                }
            }
            for (key, item) in map {
                let here = format!("{path}.{key}");
                if let Some(sub) = schema.get("properties").and_then(|p| p.get(key)) {
                    check(sub, item, &here, out);
                } else if let Some(sub) =
                    schema.get("additionalProperties").filter(|s| s.is_object())
                {
                    check(sub, item, &here, out);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(sub, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// Every `default` in the schema that its own node refuses.
pub fn check_defaults(schema: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for_each_node(schema, "", &mut |path, node| {
        if let Some(default) = node.get("default") {
            out.extend(check_value(node, default, &format!("{path} (default)")));
        }
    });
    out
}

/// Every CEL rule in the schema, with the path of its node.
pub fn rules(schema: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for_each_node(schema, "", &mut |path, node| {
        for rule in node
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            out.push((
                path.to_owned(),
                rule["rule"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    });
    out
}

fn for_each_node(schema: &Value, path: &str, f: &mut dyn FnMut(&str, &Value)) {
    f(path, schema);
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (key, sub) in props {
            for_each_node(sub, &format!("{path}.{key}"), f);
        }
    }
    if let Some(sub) = schema.get("additionalProperties").filter(|s| s.is_object()) {
        for_each_node(sub, &format!("{path}.*"), f);
    }
    if let Some(sub) = schema.get("items") {
        for_each_node(sub, &format!("{path}[]"), f);
    }
}

/// Fills in schema defaults the way the API server does before validation.
pub fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (key, sub) in props {
                    if !map.contains_key(key)
                        && let Some(default) = sub.get("default")
                    {
                        map.insert(key.clone(), default.clone());
                    }
                }
            }
            for (key, item) in map.iter_mut() {
                if let Some(sub) = schema.get("properties").and_then(|p| p.get(key)) {
                    apply_defaults(sub, item);
                } else if let Some(sub) =
                    schema.get("additionalProperties").filter(|s| s.is_object())
                {
                    apply_defaults(sub, item);
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for item in items {
                    apply_defaults(sub, item);
                }
            }
        }
        _ => {}
    }
}
