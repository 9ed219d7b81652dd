//! Runs a CRD schema's `x-kubernetes-validations` rules on a value with the `cel` crate, the way
//! the API server does: each rule with `self` bound to the value at its schema node.

use cel::{Context, Program, Value as CelValue};
use serde_json::Value;

/// A rule that evaluated to false.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    /// The node's path plus the rule's `fieldPath`, like `spec.timeout`.
    pub path: String,
    pub message: String,
    pub rule: String,
}

pub fn compile(rule: &str) -> Result<Program, String> {
    Program::compile(rule).map_err(|e| e.to_string())
}

/// CEL's `duration(text)`, in nanoseconds.
pub fn duration_nanos(text: &str) -> Result<i64, String> {
    let program = compile(&format!("duration('{text}')"))?;
    match program.execute(&Context::default()) {
        Ok(CelValue::Duration(d)) => d
            .num_nanoseconds()
            .ok_or_else(|| format!("{text}: out of range")),
        Ok(other) => Err(format!("{text}: not a duration: {other:?}")),
        Err(e) => Err(format!("{text}: {e}")),
    }
}

/// Every rule below `schema` that `value` breaks; `Err` when a rule does not compile or fails
/// to run (the API server refuses the object then too, with a less helpful message).
pub fn evaluate(schema: &Value, value: &Value, path: &str) -> Result<Vec<Violation>, String> {
    let mut out = Vec::new();
    walk(schema, value, path, &mut out)?;
    Ok(out)
}

fn walk(schema: &Value, value: &Value, path: &str, out: &mut Vec<Violation>) -> Result<(), String> {
    if value.is_null() {
        return Ok(());
    }
    if let Some(rules) = schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
    {
        for rule in rules {
            let text = rule["rule"].as_str().ok_or("a rule without `rule`")?;
            let program = compile(text).map_err(|e| format!("{path}: {text:?}: {e}"))?;
            let mut ctx = Context::default();
            let bound = cel::to_value(value).map_err(|e| format!("{path}: {e}"))?;
            ctx.add_variable_from_value("self", bound);
            match program.execute(&ctx) {
                Ok(CelValue::Bool(true)) => {}
                Ok(CelValue::Bool(false)) => out.push(Violation {
                    path: format!(
                        "{path}{}",
                        rule.get("fieldPath").and_then(Value::as_str).unwrap_or("")
                    ),
                    message: rule["message"].as_str().unwrap_or(text).to_owned(),
                    rule: text.to_owned(),
                }),
                Ok(other) => return Err(format!("{path}: {text:?} gave {other:?}, not a bool")),
                Err(e) => return Err(format!("{path}: {text:?} failed on {value}: {e}")),
            }
        }
    }
    match value {
        Value::Object(map) => {
            for (key, item) in map {
                if let Some(sub) = schema.get("properties").and_then(|p| p.get(key)) {
                    walk(sub, item, &format!("{path}.{key}"), out)?;
                } else if let Some(sub) =
                    schema.get("additionalProperties").filter(|s| s.is_object())
                {
                    walk(sub, item, &format!("{path}.{key}"), out)?;
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(sub, item, &format!("{path}[{i}]"), out)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}
