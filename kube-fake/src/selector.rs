//! Label selectors (`=`, `!=`, `in`, `notin`, exists, `!`) and field selectors (`=`, `!=` on dotted paths).

use serde_json::Value;

/// Errors from parsing a selector query parameter.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    /// A label requirement could not be parsed.
    #[error("unable to parse requirement {requirement:?} in labelSelector: {why}")]
    ParseLabelRequirement {
        requirement: String,
        why: &'static str,
    },
    /// A field requirement could not be parsed.
    #[error(
        "invalid fieldSelector requirement {requirement:?}: expected field=value, field==value or field!=value"
    )]
    ParseFieldRequirement { requirement: String },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum LabelOp {
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

/// A parsed `labelSelector`; all requirements must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<(String, LabelOp)>,
}

impl LabelSelector {
    /// Parses the `labelSelector` syntax of `kubectl -l`.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for part in split_top_level(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            requirements.push(parse_label_requirement(part)?);
        }
        Ok(Self { requirements })
    }

    /// Whether the object's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels");
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.requirements.iter().all(|(key, op)| match op {
            LabelOp::Equals(v) => label(key) == Some(v.as_str()),
            LabelOp::NotEquals(v) => label(key) != Some(v.as_str()),
            LabelOp::In(vs) => label(key).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelOp::NotIn(vs) => label(key).is_none_or(|l| vs.iter().all(|v| v != l)),
            LabelOp::Exists => label(key).is_some(),
            LabelOp::DoesNotExist => label(key).is_none(),
        })
    }
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (index, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

fn parse_label_requirement(part: &str) -> Result<(String, LabelOp), SelectorError> {
    let fail = |why| SelectorError::ParseLabelRequirement {
        requirement: part.to_string(),
        why,
    };
    if let Some(key) = part.strip_prefix('!') {
        return Ok((
            valid_key(key.trim()).ok_or_else(|| fail("invalid label key"))?,
            LabelOp::DoesNotExist,
        ));
    }
    for (token, negated) in [("!=", true), ("==", false), ("=", false)] {
        if let Some((key, value)) = part.split_once(token) {
            let key = valid_key(key.trim()).ok_or_else(|| fail("invalid label key"))?;
            let value = value.trim().to_string();
            if !valid_value(&value) {
                return Err(fail("invalid label value"));
            }
            return Ok((
                key,
                if negated {
                    LabelOp::NotEquals(value)
                } else {
                    LabelOp::Equals(value)
                },
            ));
        }
    }
    let mut words = part.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default();
    let rest = words.next().map(str::trim).unwrap_or_default();
    let key = valid_key(key).ok_or_else(|| fail("invalid label key"))?;
    if rest.is_empty() {
        return Ok((key, LabelOp::Exists));
    }
    let (negated, list) = if let Some(list) = rest.strip_prefix("notin") {
        (true, list)
    } else if let Some(list) = rest.strip_prefix("in") {
        (false, list)
    } else {
        return Err(fail("expected =, ==, !=, in or notin after the key"));
    };
    let list = list.trim();
    let inner = list
        .strip_prefix('(')
        .and_then(|l| l.strip_suffix(')'))
        .ok_or_else(|| fail("expected a parenthesised value list, e.g. in (a,b)"))?;
    let values: Vec<String> = inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() || values.iter().any(|v| !valid_value(v)) {
        return Err(fail(
            "the value list is empty or holds an invalid label value",
        ));
    }
    Ok((
        key,
        if negated {
            LabelOp::NotIn(values)
        } else {
            LabelOp::In(values)
        },
    ))
}

fn valid_key(key: &str) -> Option<String> {
    let name = key.rsplit('/').next().unwrap_or_default();
    let ok = !name.is_empty()
        && name.len() <= 63
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && key.matches('/').count() <= 1;
    ok.then(|| key.to_string())
}

fn valid_value(value: &str) -> bool {
    value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// A parsed `fieldSelector`: every `path=value` / `path!=value` must hold. Paths are dotted object paths
/// (`metadata.name`, `metadata.namespace`, `spec.nodeName`, `status.phase`, `involvedObject.name`, ...);
/// a missing field compares as the empty string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<(String, bool, String)>,
}

impl FieldSelector {
    /// Parses the `fieldSelector` syntax.
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        let mut requirements = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let fail = || SelectorError::ParseFieldRequirement {
                requirement: part.to_string(),
            };
            let (field, negated, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, false, v)
            } else {
                return Err(fail());
            };
            let field = field.trim();
            if field.is_empty() || field.split('.').any(str::is_empty) {
                return Err(fail());
            }
            requirements.push((field.to_string(), negated, value.trim().to_string()));
        }
        Ok(Self { requirements })
    }

    /// Whether the object satisfies every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|(field, negated, value)| {
            let mut current = Some(object);
            for segment in field.split('.') {
                current = current.and_then(|c| c.get(segment));
            }
            let actual = match current {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            (actual == *value) != *negated
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object() -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": {"app": "web", "tier": "front"}},
               "spec": {"nodeName": "n1", "replicas": 2}})
    }

    #[test]
    fn label_operators() {
        let cases = [
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app=db", false),
            ("app in (db, web)", true),
            ("app notin (db,web)", false),
            ("app notin (db)", true),
            ("missing notin (db)", true),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,tier in (front,back)", true),
            ("app=web,tier=back", false),
            ("", true),
        ];
        for (text, expected) in cases {
            let selector = LabelSelector::parse(text).unwrap();
            assert_eq!(selector.matches(&object()), expected, "{text}");
        }
    }

    #[test]
    fn label_parse_errors_name_the_requirement() {
        for text in [
            "app in web",
            "app between (a)",
            "a b=c",
            "app in ()",
            "app=we b",
        ] {
            let error = LabelSelector::parse(text).unwrap_err();
            assert!(
                error.to_string().contains("unable to parse requirement"),
                "{text}: {error}"
            );
        }
        let error = LabelSelector::parse("app in web").unwrap_err().to_string();
        assert_eq!(
            error,
            "unable to parse requirement \"app in web\" in labelSelector: \
             expected a parenthesised value list, e.g. in (a,b)"
        );
    }

    #[test]
    fn field_selectors() {
        let cases = [
            ("metadata.name=a", true),
            ("metadata.name==b", false),
            ("metadata.namespace!=ns", false),
            ("spec.nodeName=n1,metadata.name=a", true),
            ("spec.replicas=2", true),
            ("status.phase=", true),
            ("status.phase!=Running", true),
        ];
        for (text, expected) in cases {
            assert_eq!(
                FieldSelector::parse(text).unwrap().matches(&object()),
                expected,
                "{text}"
            );
        }
    }

    #[test]
    fn field_parse_errors() {
        for text in ["metadata.name", "=a", "metadata..name=a"] {
            let error = FieldSelector::parse(text).unwrap_err().to_string();
            assert!(
                error.starts_with("invalid fieldSelector requirement"),
                "{text}: {error}"
            );
        }
    }
}
