//! A ScaledObject's `scalerMetadata`: which failing check targets it counts, and how.

use std::collections::{BTreeMap, HashMap};

use tonic::Status;

use super::selector::{LabelSelector, SelectorError};
use crate::state::StateKey;

/// The metric's name when `scalerMetadata.metricName` is not set.
pub const DEFAULT_METRIC_NAME: &str = "vigil-failing-checks";

/// Keys Vigil reads; each may also be given as `<key>FromEnv`, which KEDA resolves.
const KEYS: [&str; 6] = [
    "namespace",
    "labelSelector",
    "check",
    "cluster",
    "targetSize",
    "metricName",
];

/// Trigger metadata KEDA reads itself and passes along in `scalerMetadata`; ignored here.
const KEDA_KEYS: [&str; 3] = ["scalerAddress", "enableTLS", "unsafeSsl"];

#[derive(Debug, PartialEq, thiserror::Error)]
pub enum MetadataError {
    #[error(
        "scalerMetadata.{key} is not a key Vigil reads; use namespace, labelSelector, check, \
         cluster, targetSize or metricName (or <key>FromEnv)"
    )]
    UnknownKey { key: String },
    #[error("scalerMetadata has both {key} and {key}FromEnv; keep one")]
    Duplicate { key: &'static str },
    #[error(
        "scalerMetadata.{key} {value:?} is not an equality-based label selector: {source}; \
         write it like team=shop,tier!=db"
    )]
    LabelSelector {
        key: String,
        value: String,
        #[source]
        source: SelectorError,
    },
    #[error("scalerMetadata.{key} {value:?} must be a number above 0, like 1 or 2.5")]
    TargetSize { key: String, value: String },
    #[error("scalerMetadata.{key} {value:?} must be a check name or namespace/name")]
    Check { key: String, value: String },
    #[error(
        "scalerMetadata.check {check:?} is in namespace {check_namespace:?} but \
         scalerMetadata.namespace is {namespace:?}; drop one of them"
    )]
    CheckNamespace {
        check: String,
        check_namespace: String,
        namespace: String,
    },
}

impl From<MetadataError> for Status {
    fn from(e: MetadataError) -> Self {
        Status::invalid_argument(e.to_string())
    }
}

/// What one ScaledObject counts, parsed from its `scalerMetadata`.
#[derive(Clone, Debug, PartialEq)]
pub struct Selection {
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    /// The check's namespace (if given) and name.
    pub check: Option<(Option<String>, String)>,
    pub cluster: Option<String>,
    /// Failing targets per replica. Default 1.
    pub target_size: f64,
    /// Default [`DEFAULT_METRIC_NAME`].
    pub metric_name: String,
}

impl Selection {
    /// Reads the metadata; an empty value counts as not set.
    pub fn parse(metadata: &HashMap<String, String>) -> Result<Self, MetadataError> {
        let mut values: HashMap<&'static str, (String, &str)> = HashMap::new();
        let mut keys: Vec<&String> = metadata.keys().collect();
        keys.sort();
        for key in keys {
            if KEDA_KEYS.contains(&key.as_str()) {
                continue;
            }
            let base = key.strip_suffix("FromEnv").unwrap_or(key);
            let Some(known) = KEYS.iter().copied().find(|k| *k == base) else {
                return Err(MetadataError::UnknownKey { key: key.clone() });
            };
            let value = metadata[key].trim();
            if value.is_empty() {
                continue;
            }
            if values.insert(known, (key.clone(), value)).is_some() {
                return Err(MetadataError::Duplicate { key: known });
            }
        }
        let get = |k: &str| values.get(k).map(|(_, v)| (*v).to_owned());
        let key_of = |k: &str| {
            values
                .get(k)
                .map(|(key, _)| key.clone())
                .unwrap_or_default()
        };

        let labels = match values.get("labelSelector") {
            None => LabelSelector::default(),
            Some((key, v)) => {
                LabelSelector::parse(v).map_err(|source| MetadataError::LabelSelector {
                    key: key.clone(),
                    value: (*v).to_owned(),
                    source,
                })?
            }
        };
        let target_size = match get("targetSize") {
            None => 1.0,
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n > 0.0)
                .ok_or_else(|| MetadataError::TargetSize {
                    key: key_of("targetSize"),
                    value: v,
                })?,
        };
        let namespace = get("namespace");
        let check = match get("check") {
            None => None,
            Some(v) => Some(parse_check(&v).ok_or_else(|| MetadataError::Check {
                key: key_of("check"),
                value: v.clone(),
            })?),
        };
        if let (Some((Some(check_ns), name)), Some(ns)) = (&check, &namespace)
            && check_ns != ns
        {
            return Err(MetadataError::CheckNamespace {
                check: format!("{check_ns}/{name}"),
                check_namespace: check_ns.clone(),
                namespace: ns.clone(),
            });
        }
        Ok(Self {
            namespace,
            labels,
            check,
            cluster: get("cluster"),
            target_size,
            metric_name: get("metricName").unwrap_or_else(|| DEFAULT_METRIC_NAME.to_owned()),
        })
    }

    /// Whether a target of check `key.check` (whose `spec.labels` are `labels`) is counted.
    pub fn matches(&self, key: &StateKey, labels: &BTreeMap<String, String>) -> bool {
        let (ns, name) = key.check.split_once('/').unwrap_or(("", &key.check));
        self.namespace.as_deref().is_none_or(|want| want == ns)
            && self
                .cluster
                .as_deref()
                .is_none_or(|want| want == key.cluster)
            && self.check.as_ref().is_none_or(|(want_ns, want_name)| {
                want_name == name && want_ns.as_deref().is_none_or(|want| want == ns)
            })
            && self.labels.matches(labels)
    }
}

fn parse_check(v: &str) -> Option<(Option<String>, String)> {
    let ok = |s: &str| !s.is_empty() && !s.contains('/') && !s.contains(char::is_whitespace);
    match v.split_once('/') {
        Some((ns, name)) if ok(ns) && ok(name) => Some((Some(ns.to_owned()), name.to_owned())),
        None if ok(v) => Some((None, v.to_owned())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<Selection, MetadataError> {
        Selection::parse(
            &pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    fn key(check: &str, cluster: &str) -> StateKey {
        StateKey {
            cluster: cluster.into(),
            check: check.into(),
            target: "t".into(),
            node: String::new(),
        }
    }

    #[test]
    fn defaults_and_keda_keys() {
        let sel = parse(&[("scalerAddress", "vigil:7443"), ("enableTLS", "false")]).unwrap();
        assert_eq!(sel.metric_name, DEFAULT_METRIC_NAME);
        assert_eq!(sel.target_size, 1.0);
        assert!(sel.matches(&key("a/b", "c"), &BTreeMap::new()));
    }

    #[test]
    fn every_key_narrows_the_selection() {
        let labels: BTreeMap<_, _> = [("team".to_owned(), "shop".to_owned())].into();
        let sel = parse(&[
            ("namespace", "shop"),
            ("checkFromEnv", "web"),
            ("cluster", "eu"),
            ("labelSelector", "team=shop"),
        ])
        .unwrap();
        assert!(sel.matches(&key("shop/web", "eu"), &labels));
        assert!(!sel.matches(&key("shop/web", "us"), &labels));
        assert!(!sel.matches(&key("other/web", "eu"), &labels));
        assert!(!sel.matches(&key("shop/api", "eu"), &labels));
        assert!(!sel.matches(&key("shop/web", "eu"), &BTreeMap::new()));
        let by_id = parse(&[("check", "shop/web")]).unwrap();
        assert!(by_id.matches(&key("shop/web", "x"), &BTreeMap::new()));
        assert!(!by_id.matches(&key("other/web", "x"), &BTreeMap::new()));
    }

    #[test]
    fn bad_metadata_names_the_key() {
        let cases: [(&[(&str, &str)], &str); 6] = [
            (
                &[("namespaces", "shop")],
                "scalerMetadata.namespaces is not a key Vigil reads",
            ),
            (
                &[("labelSelector", "tier in (db)")],
                "scalerMetadata.labelSelector \"tier in (db)\" is not an equality-based label selector: term \"tier in (db)\" is set-based",
            ),
            (
                &[("targetSize", "0")],
                "scalerMetadata.targetSize \"0\" must be a number above 0",
            ),
            (
                &[("check", "a/b/c")],
                "scalerMetadata.check \"a/b/c\" must be a check name or namespace/name",
            ),
            (
                &[("check", "a/b"), ("namespace", "c")],
                "scalerMetadata.check \"a/b\" is in namespace \"a\" but scalerMetadata.namespace is \"c\"",
            ),
            (
                &[("cluster", "a"), ("clusterFromEnv", "b")],
                "scalerMetadata has both cluster and clusterFromEnv",
            ),
        ];
        for (pairs, want) in cases {
            let got = parse(pairs).unwrap_err().to_string();
            assert!(got.starts_with(want), "{got}");
        }
    }
}
