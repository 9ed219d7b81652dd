//! The Alertmanager v2 alert (`POST /api/v2/alerts`) and how one is built from a check's state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use url::Url;

use crate::hub::CheckDef;
use crate::record::rfc3339;
use crate::state::StateKey;

/// The `alertname` of every alert Vigil sends.
pub const ALERTNAME: &str = "HealthCheckFailing";

/// One alert as Alertmanager's v2 API takes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// RFC 3339: the first failed run of the run of failures.
    pub starts_at: String,
    /// RFC 3339: a little ahead while firing, the recovery time once resolved.
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// What an alert says about the last result.
#[derive(Clone, Debug, PartialEq)]
pub struct LastResult {
    pub reason: String,
    pub latency_seconds: f64,
    /// `details["problem"]` of a node diagnostic's result (its problem class).
    pub problem: Option<String>,
    /// The latest deep-check findings of this run of failures, as one line.
    pub deep_check: Option<String>,
}

impl LastResult {
    /// From a result record (the live state's last result), without deep-check findings.
    pub fn of_record(r: &crate::record::ResultRecord) -> Self {
        Self {
            reason: r.reason.clone(),
            latency_seconds: r.latency_seconds,
            problem: r.details.get("problem").cloned(),
            deep_check: None,
        }
    }
}

/// The alert of a failing `key` of check `def`, with `ends_at` left empty for the sender.
pub fn build(
    key: &StateKey,
    def: &CheckDef,
    last: &LastResult,
    starts_at_unix_nanos: i64,
    external_url: &Url,
) -> Alert {
    let spec = &def.check.spec;
    let (namespace, name) = key.check.split_once('/').unwrap_or(("", &key.check));
    let mut labels: BTreeMap<String, String> = spec
        .labels
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (label_name(k), v.clone()))
        .collect();
    // Vigil's own labels win over a check's labels of the same name.
    labels.insert("alertname".into(), ALERTNAME.into());
    labels.insert("check".into(), name.into());
    labels.insert("namespace".into(), namespace.into());
    labels.insert("target".into(), key.target.clone());
    labels.insert("cluster".into(), key.cluster.clone());
    labels.insert("severity".into(), spec.severity.clone());
    if key.node.is_empty() {
        labels.remove("node");
    } else {
        labels.insert("node".into(), key.node.clone());
    }
    labels.retain(|_, v| !v.is_empty());

    let mut alert = Alert {
        labels,
        annotations: BTreeMap::new(),
        starts_at: rfc3339(starts_at_unix_nanos),
        ends_at: String::new(),
        generator_url: generator_url(external_url, &key.check),
    };
    set_annotations(&mut alert, key, def, last);
    alert
}

/// Rewrites summary, description and runbook_url from the latest result.
pub fn set_annotations(alert: &mut Alert, key: &StateKey, def: &CheckDef, last: &LastResult) {
    let place = if key.node.is_empty() {
        format!("cluster {}", key.cluster)
    } else {
        format!("node {} of cluster {}", key.node, key.cluster)
    };
    let reason = if last.reason.is_empty() {
        "no reason given"
    } else {
        &last.reason
    };
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "summary".into(),
        format!(
            "HealthCheck {} is failing for {} on {place}",
            key.check, key.target
        ),
    );
    let mut description = format!(
        "The last run of {} against {} on {place} failed after {:.3}s: {reason}",
        key.check, key.target, last.latency_seconds
    );
    if let Some(deep) = &last.deep_check {
        description.push_str(". ");
        description.push_str(deep);
    }
    annotations.insert("description".into(), description);
    if let Some(url) = def
        .check
        .spec
        .runbook_url
        .as_ref()
        .filter(|u| !u.is_empty())
    {
        annotations.insert("runbook_url".into(), url.clone());
    }
    alert.annotations = annotations;
}

/// `<external>/?check=<ns>/<name>`: the web view of the check.
pub fn generator_url(external_url: &Url, check: &str) -> String {
    let mut url = external_url.clone();
    url.set_query(Some(&format!("check={check}")));
    url.to_string()
}

/// A Prometheus label name: invalid characters become `_`, a leading digit gets a `_` before it.
fn label_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::HealthCheck;

    fn def(extra: &str) -> CheckDef {
        let yaml = format!(
            "apiVersion: vigil.dev/v1alpha1\nkind: HealthCheck\nmetadata: {{name: web, namespace: shop}}\nspec:\n  probe: {{tcp: {{address: '127.0.0.1:1'}}}}\n{extra}"
        );
        let check: HealthCheck = serde_yaml::from_str(&yaml).unwrap();
        CheckDef {
            spec: crate::spec::check_spec(&check),
            check,
            source: "test".into(),
        }
    }

    fn key(node: &str) -> StateKey {
        StateKey {
            cluster: "prod".into(),
            check: "shop/web".into(),
            target: "127.0.0.1:1".into(),
            node: node.into(),
        }
    }

    fn last() -> LastResult {
        LastResult {
            reason: "connection refused".into(),
            latency_seconds: 0.25,
            problem: None,
            deep_check: None,
        }
    }

    #[test]
    fn labels_annotations_and_links() {
        let d = def(
            "  severity: critical\n  runbookUrl: https://runbooks.example/web\n  labels: {team: shop, alertname: nope, app.kubernetes.io/name: web}\n",
        );
        let url = Url::parse("http://127.0.0.1:8080/").unwrap();
        let a = build(&key("node-1"), &d, &last(), 1_700_000_000_123_000_000, &url);
        let labels: Vec<(&str, &str)> = a
            .labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            labels,
            [
                ("alertname", "HealthCheckFailing"),
                ("app_kubernetes_io_name", "web"),
                ("check", "web"),
                ("cluster", "prod"),
                ("namespace", "shop"),
                ("node", "node-1"),
                ("severity", "critical"),
                ("target", "127.0.0.1:1"),
                ("team", "shop"),
            ]
        );
        assert_eq!(a.starts_at, "2023-11-14T22:13:20.123000000Z");
        assert_eq!(
            a.annotations["description"],
            "The last run of shop/web against 127.0.0.1:1 on node node-1 of cluster prod failed after 0.250s: connection refused"
        );
        assert_eq!(a.annotations["runbook_url"], "https://runbooks.example/web");
        let mut with_deep = last();
        with_deep.deep_check = Some("Deep check by p1 on node n2 at T: refused".into());
        let b = build(&key("node-1"), &d, &with_deep, 0, &url);
        assert!(
            b.annotations["description"]
                .ends_with("connection refused. Deep check by p1 on node n2 at T: refused"),
            "{}",
            b.annotations["description"]
        );
        assert_eq!(a.generator_url, "http://127.0.0.1:8080/?check=shop/web");
        let json = serde_json::to_value(&a).unwrap();
        assert!(json.get("generatorURL").is_some());
        assert!(json.get("startsAt").is_some());
    }

    #[test]
    fn cluster_scoped_alert_has_no_node_and_default_severity() {
        let url = Url::parse("https://vigil.example/ui/").unwrap();
        let a = build(&key(""), &def(""), &last(), 0, &url);
        assert!(!a.labels.contains_key("node"));
        assert_eq!(a.labels["severity"], "warning");
        assert!(!a.annotations.contains_key("runbook_url"));
        assert_eq!(a.generator_url, "https://vigil.example/ui/?check=shop/web");
    }

    #[test]
    fn label_names_are_made_valid() {
        assert_eq!(label_name("team"), "team");
        assert_eq!(label_name("a-b.c/d"), "a_b_c_d");
        assert_eq!(label_name("1x"), "_1x");
        assert_eq!(label_name(""), "_");
    }
}
