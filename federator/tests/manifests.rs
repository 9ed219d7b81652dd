//! Every manifest under manifests/ parses as its k8s-openapi type with no unknown field, the
//! kustomization lists them all, and kubectl builds and (client-side) applies the install.

#[path = "manifests/discovery.rs"]
mod discovery;
#[path = "manifests/kubectl.rs"]
mod kubectl;
#[path = "manifests/policy.rs"]
mod policy;
#[path = "manifests/strict.rs"]
mod strict;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use strict::Checked;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Folders under manifests/ that `kubectl apply -k manifests/` does not install, and why.
const NOT_INSTALLED: &[(&str, &str)] = &[
    (
        "keda/",
        "ScaledObject examples for the user's own namespaces; need KEDA",
    ),
    (
        "alertmanager/",
        "an Alertmanager routing example, not a Kubernetes object",
    ),
    (
        "prometheus/",
        "alert rules for the user's Prometheus: a plain rules file, or a PrometheusRule that \
         needs the Prometheus Operator's CRD",
    ),
];

/// Every YAML file under `dir`, relative to it, sorted.
fn yaml_files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                let rel = path.strip_prefix(root).unwrap();
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Checks every document of every manifest file; the results, or every problem at once.
pub fn check_all() -> Result<Vec<(String, Checked)>, Vec<String>> {
    let dir = repo().join("manifests");
    let (mut ok, mut problems) = (Vec::new(), Vec::new());
    for rel in yaml_files(&dir) {
        if rel == "kustomization.yaml" || strict::NOT_KUBERNETES.iter().any(|(f, _)| *f == rel) {
            continue;
        }
        let label = format!("manifests/{rel}");
        let text = std::fs::read_to_string(dir.join(&rel)).unwrap();
        match strict::documents(&label, &text) {
            Err(e) => problems.push(e),
            Ok(docs) => {
                for (index, value) in docs {
                    match strict::check(&label, index, &value) {
                        Ok(checked) => ok.push((rel.clone(), checked)),
                        Err(e) => problems.push(e),
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Ok(ok)
    } else {
        Err(problems)
    }
}

#[test]
fn every_manifest_parses_strictly_as_its_type() {
    let checked = check_all().unwrap_or_else(|p| panic!("{}", p.join("\n")));
    let kinds: BTreeSet<&str> = checked
        .iter()
        .filter_map(|(_, c)| match c {
            Checked::Typed { kind, .. } => Some(kind.as_str()),
            Checked::Skipped { .. } => None,
        })
        .collect();
    for kind in [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "DaemonSet",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ] {
        assert!(kinds.contains(kind), "no {kind} in manifests/: {kinds:?}");
    }
    // The KEDA examples are skipped by name, with a reason, not silently.
    assert!(checked.iter().any(|(file, c)| file.starts_with("keda/")
        && matches!(c, Checked::Skipped { kind, .. } if kind == "ScaledObject")));
}

fn daemonset_text() -> String {
    std::fs::read_to_string(repo().join("manifests/agent/daemonset.yaml")).unwrap()
}

fn check_text(text: &str) -> Result<Vec<Checked>, String> {
    let label = "manifests/agent/daemonset.yaml";
    strict::documents(label, text)?
        .into_iter()
        .map(|(i, v)| strict::check(label, i, &v))
        .collect()
}

#[test]
fn a_misspelled_field_is_caught_with_file_document_and_path() {
    let text = daemonset_text();
    assert!(check_text(&text).is_ok());

    // An optional field: k8s-openapi would drop it without a word.
    let typo = text.replacen("readOnlyRootFilesystem:", "readOnlyRootFilesytem:", 2);
    let err = check_text(&typo).unwrap_err();
    assert_eq!(
        err,
        "manifests/agent/daemonset.yaml document 1 (DaemonSet vigil-agent): field \
         spec.template.spec.containers[0].securityContext.readOnlyRootFilesytem is not a \
         field of this kind (the API would drop or refuse it): a typo?"
    );

    // A required field.
    let typo = text.replacen("      containers:", "      contaners:", 1);
    assert_eq!(
        check_text(&typo).unwrap_err(),
        "manifests/agent/daemonset.yaml document 1 (DaemonSet vigil-agent): field \
         spec.template.spec.contaners is not a field of this kind (the API would drop or refuse \
         it): a typo?"
    );
    let typo = text.replacen("- name: agent", "- nmae: agent", 1);
    let err = check_text(&typo).unwrap_err();
    assert!(err.contains("spec.template.spec.containers[0]"), "{err}");
    assert!(err.contains("nmae"), "{err}");

    // In a later document of a multi-document file.
    let two = format!(
        "{text}---\n{}",
        text.replacen("      hostNetwork: false", "      hostNetwrok: false", 1)
    );
    let err = check_text(&two).unwrap_err();
    assert!(
        err.starts_with("manifests/agent/daemonset.yaml document 2 (DaemonSet vigil-agent): field spec.template.spec.hostNetwrok "),
        "{err}"
    );
}

#[test]
fn wrong_types_and_unknown_kinds_are_refused() {
    let text = daemonset_text().replacen("maxUnavailable: 10%", "maxUnavailable: [10]", 1);
    let err = check_text(&text).unwrap_err();
    assert!(
        err.contains("field spec.updateStrategy.rollingUpdate.maxUnavailable: "),
        "{err}"
    );
    let err =
        check_text("apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n").unwrap_err();
    assert!(
        err.contains("no type is known for apiVersion example.com/v1 kind Widget"),
        "{err}"
    );
    // k8s-openapi fills in a missing required field; the check does not let it.
    let err = check_text(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {name: b}\n\
         subjects: [{kind: ServiceAccount, name: a, namespace: n}]\n",
    )
    .unwrap_err();
    assert_eq!(
        err,
        "manifests/agent/daemonset.yaml document 1 (ClusterRoleBinding b): field roleRef is \
         required but missing"
    );
    let err = check_text("just: a map\n").unwrap_err();
    assert!(err.contains("not a Kubernetes object"), "{err}");
}

#[test]
fn healthchecks_are_checked_with_vigils_own_type() {
    let file = "examples/kubernetes/healthcheck-http.yaml";
    let text = std::fs::read_to_string(repo().join(file)).unwrap();
    let docs = strict::documents(file, &text).unwrap();
    assert!(!docs.is_empty());
    for (index, value) in &docs {
        let checked = strict::check(file, *index, value).unwrap();
        assert!(matches!(checked, Checked::Typed { ref kind, .. } if kind == "HealthCheck"));
    }
    let typo = text.replacen("interval: 30s", "intreval: 30s", 1);
    let (index, value) = &strict::documents(file, &typo).unwrap()[0];
    let err = strict::check(file, *index, value).unwrap_err();
    assert!(
        err.starts_with(
            "examples/kubernetes/healthcheck-http.yaml document 1 (HealthCheck federator-healthz): \
             field spec.intreval: unknown field `intreval`"
        ),
        "{err}"
    );
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Kustomization {
    api_version: String,
    kind: String,
    pub resources: Vec<String>,
    #[serde(default)]
    images: Vec<KustomizeImage>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KustomizeImage {
    name: String,
    new_tag: Option<String>,
    new_name: Option<String>,
    digest: Option<String>,
}

pub fn kustomization() -> Kustomization {
    let path = repo().join("manifests/kustomization.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(&text))
        .unwrap_or_else(|e| panic!("{}: {}: {}", path.display(), e.path(), e.inner()))
}

#[test]
fn kustomization_installs_every_manifest() {
    let k = kustomization();
    assert_eq!(k.api_version, "kustomize.config.k8s.io/v1beta1");
    assert_eq!(k.kind, "Kustomization");
    let dir = repo().join("manifests");
    for resource in &k.resources {
        assert!(
            dir.join(resource).is_file(),
            "kustomization lists {resource}, which is not there"
        );
    }
    for rel in yaml_files(&dir) {
        let skipped = rel == "kustomization.yaml"
            || NOT_INSTALLED
                .iter()
                .any(|(prefix, _)| rel.starts_with(prefix));
        assert!(
            skipped || k.resources.contains(&rel),
            "manifests/{rel} is in no kustomization resource: add it to \
             manifests/kustomization.yaml, or to NOT_INSTALLED in federator/tests/manifests.rs"
        );
    }
    let image = k
        .images
        .iter()
        .find(|i| i.name == "ghcr.io/vigil-dev/vigil");
    let image = image.expect("kustomization pins the image");
    assert_eq!(image.new_tag.as_deref(), Some("0.1.0"));
    assert!(image.new_name.is_none() && image.digest.is_none());
}
