//! Parses Kubernetes manifests with k8s-openapi's types and refuses what those types would
//! silently drop: each document is deserialized, serialized back, and compared with the input.

use std::any::TypeId;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::{NamespaceResourceScope, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use vigil_federator::resource::HealthCheck;

/// Files under manifests/ that are not Kubernetes objects, and why.
pub const NOT_KUBERNETES: &[(&str, &str)] = &[
    (
        "alertmanager/alertmanager.yml",
        "Alertmanager's routing config; tests/alertmanager.rs checks it with amtool",
    ),
    (
        "prometheus/vigil-rules.yaml",
        "a plain Prometheus rules file; tests/tests/dashboards.rs runs promtool on it",
    ),
    (
        "prometheus/tests/vigil-rules.test.yaml",
        "a promtool rule test; tests/tests/dashboards.rs runs it",
    ),
];

/// Kinds whose types k8s-openapi does not have: skipped by name, never silently.
pub const UNTYPED_KINDS: &[(&str, &str, &str)] = &[
    (
        "keda.sh/v1alpha1",
        "ScaledObject",
        "KEDA's CRD (docs/keda.md)",
    ),
    ("keda.sh/v1alpha1", "ScaledJob", "KEDA's CRD (docs/keda.md)"),
    (
        "monitoring.coreos.com/v1",
        "PrometheusRule",
        "the Prometheus Operator's CRD; tests/tests/dashboards.rs checks its groups",
    ),
];

/// What became of one document.
#[derive(Debug, Clone, PartialEq)]
pub enum Checked {
    /// Parsed as its type with nothing lost.
    Typed {
        api_version: String,
        kind: String,
        name: String,
        namespace: Option<String>,
        /// The resource's URL segment (`daemonsets`) and scope, for API discovery.
        plural: &'static str,
        namespaced: bool,
    },
    /// An allow-listed kind without a type.
    Skipped { kind: String, reason: &'static str },
}

/// The documents of a (multi-document) YAML file; empty documents are left out, numbered from 1.
pub fn documents(file: &str, text: &str) -> Result<Vec<(usize, Value)>, String> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = <Value as serde::Deserialize>::deserialize(doc)
            .map_err(|e| format!("{file} document {}: not YAML: {e}", i + 1))?;
        if !value.is_null() {
            out.push((i + 1, value));
        }
    }
    Ok(out)
}

/// Parses one document as the type its `apiVersion`/`kind` name.
pub fn check(file: &str, index: usize, value: &Value) -> Result<Checked, String> {
    let at = format!("{file} document {index}");
    let field = |key: &str| value.get(key).and_then(Value::as_str).unwrap_or_default();
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    if api_version.is_empty() || kind.is_empty() {
        return Err(format!(
            "{at}: not a Kubernetes object (no apiVersion or kind); if the file is something \
             else, list it in NOT_KUBERNETES in federator/tests/manifests/strict.rs"
        ));
    }
    let meta = &value["metadata"];
    let name = meta["name"].as_str().unwrap_or_default().to_owned();
    let at = format!("{at} ({kind} {name})");
    macro_rules! typed {
        ($($t:ty),* $(,)?) => {$(
            if api_version == <$t as Resource>::API_VERSION && kind == <$t as Resource>::KIND {
                round_trip::<$t>(value, true).map_err(|e| format!("{at}: {e}"))?;
                return Ok(Checked::Typed {
                    api_version: api_version.to_owned(),
                    kind: kind.to_owned(),
                    name,
                    namespace: meta["namespace"].as_str().map(str::to_owned),
                    plural: <$t as Resource>::URL_PATH_SEGMENT,
                    namespaced: TypeId::of::<<$t as Resource>::Scope>()
                        == TypeId::of::<NamespaceResourceScope>(),
                });
            }
        )*};
    }
    typed!(
        Namespace,
        ServiceAccount,
        ConfigMap,
        Service,
        ClusterRole,
        ClusterRoleBinding,
        Role,
        RoleBinding,
        DaemonSet,
        Deployment,
        PodDisruptionBudget,
        NetworkPolicy,
        CustomResourceDefinition,
    );
    if api_version == vigil_federator::resource::API_VERSION
        && kind == vigil_federator::resource::KIND
    {
        round_trip::<HealthCheck>(value, false).map_err(|e| format!("{at}: {e}"))?;
        return Ok(Checked::Typed {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            name,
            namespace: meta["namespace"].as_str().map(str::to_owned),
            plural: "healthchecks",
            namespaced: true,
        });
    }
    if let Some((_, _, reason)) = UNTYPED_KINDS
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
    {
        return Ok(Checked::Skipped {
            kind: kind.to_owned(),
            reason,
        });
    }
    Err(format!(
        "{at}: no type is known for apiVersion {api_version} kind {kind}; add it to typed!(...) \
         in federator/tests/manifests/strict.rs, or to UNTYPED_KINDS with the reason"
    ))
}

/// Deserializes `value` as `T` and fails on the first field `T` does not keep; with
/// `fills_required` (k8s-openapi types), also on a required field `T` had to fill in. (Vigil's
/// own types fill in documented defaults instead, and refuse missing required fields.)
pub fn round_trip<T: DeserializeOwned + Serialize>(
    value: &Value,
    fills_required: bool,
) -> Result<(), String> {
    let typed: T = serde_path_to_error::deserialize(value.clone())
        .map_err(|e| format!("field {}: {}", e.path(), e.inner()))?;
    let back = serde_json::to_value(&typed).map_err(|e| format!("does not serialize: {e}"))?;
    match first_lost(value, &back, "") {
        Some(Lost::Field(path)) => Err(format!(
            "field {path} is not a field of this kind (the API would drop or refuse it): a typo?"
        )),
        Some(Lost::Changed(path, from, to)) => {
            Err(format!("field {path}: {from} reads back as {to}"))
        }
        // k8s-openapi fills a missing required field with its empty value and always writes
        // it back: what the output has and the input lacks was required.
        None if fills_required => match first_lost(&back, value, "") {
            Some(Lost::Field(path)) => Err(format!("field {path} is required but missing")),
            _ => Ok(()),
        },
        None => Ok(()),
    }
}

enum Lost {
    Field(String),
    Changed(String, Value, Value),
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// The first thing in `input` that `output` lost or changed (`null`s count as absent).
fn first_lost(input: &Value, output: &Value, path: &str) -> Option<Lost> {
    match input {
        Value::Object(map) => {
            for (key, item) in map {
                if item.is_null() {
                    continue;
                }
                let here = join(path, key);
                match output.get(key) {
                    None | Some(Value::Null) => return Some(Lost::Field(here)),
                    Some(back) => {
                        if let Some(lost) = first_lost(item, back, &here) {
                            return Some(lost);
                        }
                    }
                }
            }
            None
        }
        Value::Array(items) => items.iter().enumerate().find_map(|(i, item)| {
            let here = format!("{path}[{i}]");
            match output.get(i) {
                None => Some(Lost::Field(here)),
                Some(back) => first_lost(item, back, &here),
            }
        }),
        Value::Number(a) => match output.as_f64() {
            Some(b) if a.as_f64() == Some(b) => None,
            _ => Some(Lost::Changed(
                path.to_owned(),
                input.clone(),
                output.clone(),
            )),
        },
        _ if input == output => None,
        _ => Some(Lost::Changed(
            path.to_owned(),
            input.clone(),
            output.clone(),
        )),
    }
}
