//! The resource kinds the fake server knows: built-ins, CRDs, and lookups by path or apiVersion/kind.

use std::sync::Arc;

use serde_json::Value;

/// Errors from turning a CustomResourceDefinition into resource kinds.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// A field the CRD needs is missing or has the wrong type.
    #[error(
        "CustomResourceDefinition {crd:?}: {field} is missing or not a {expected}; set it as in apiextensions.k8s.io/v1"
    )]
    ReadCrdField {
        crd: String,
        field: String,
        expected: &'static str,
    },
    /// The CRD serves no version.
    #[error("CustomResourceDefinition {crd:?}: spec.versions has no version with served: true")]
    NoServedVersion { crd: String },
}

/// One resource (group, version, plural) and how the server treats it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceKind {
    /// API group, `""` for the core group.
    pub group: String,
    /// Version, e.g. `v1`.
    pub version: String,
    /// Kind, e.g. `HealthCheck`.
    pub kind: String,
    /// Plural resource name used in paths, e.g. `healthchecks`.
    pub plural: String,
    /// Singular name, lower case kind by default.
    pub singular: String,
    /// Short names for discovery (`hc`).
    pub short_names: Vec<String>,
    /// Namespaced (true) or cluster-scoped (false).
    pub namespaced: bool,
    /// Has a `/status` subresource: main writes keep `.status`, status writes change only `.status`.
    pub status_subresource: bool,
    /// Create drops `.status` (true for CRDs and Jobs, as the real server does; false for Nodes and Pods so
    /// that tests can create them with a status).
    pub drop_status_on_create: bool,
}

impl ResourceKind {
    /// A namespaced resource without subresources.
    pub fn namespaced(group: &str, version: &str, kind: &str, plural: &str) -> Self {
        Self {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            singular: kind.to_lowercase(),
            short_names: Vec::new(),
            namespaced: true,
            status_subresource: false,
            drop_status_on_create: false,
        }
    }

    /// A cluster-scoped resource without subresources.
    pub fn cluster(group: &str, version: &str, kind: &str, plural: &str) -> Self {
        Self {
            namespaced: false,
            ..Self::namespaced(group, version, kind, plural)
        }
    }

    /// Adds a `/status` subresource; `drop_on_create` also clears `.status` on create.
    pub fn with_status(mut self, drop_on_create: bool) -> Self {
        self.status_subresource = true;
        self.drop_status_on_create = drop_on_create;
        self
    }

    /// Adds short names.
    pub fn with_short_names(mut self, names: &[&str]) -> Self {
        self.short_names = names.iter().map(|n| n.to_string()).collect();
        self
    }

    /// `group/version`, or `version` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The list kind, e.g. `HealthCheckList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// Parses the kinds (one per served version) out of a CustomResourceDefinition in JSON form.
    pub fn from_crd(crd: &Value) -> Result<Vec<Self>, ResourceError> {
        let name = crd
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("<unnamed>")
            .to_string();
        let text = |pointer: &str| -> Result<String, ResourceError> {
            crd.pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| ResourceError::ReadCrdField {
                    crd: name.clone(),
                    field: pointer_to_field(pointer),
                    expected: "string",
                })
        };
        let group = text("/spec/group")?;
        let kind = text("/spec/names/kind")?;
        let plural = text("/spec/names/plural")?;
        let scope = text("/spec/scope")?;
        let singular = crd
            .pointer("/spec/names/singular")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| kind.to_lowercase());
        let short_names: Vec<String> = crd
            .pointer("/spec/names/shortNames")
            .and_then(Value::as_array)
            .map(|names| {
                names
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        let versions = crd
            .pointer("/spec/versions")
            .and_then(Value::as_array)
            .ok_or_else(|| ResourceError::ReadCrdField {
                crd: name.clone(),
                field: "spec.versions".into(),
                expected: "list",
            })?;
        let mut kinds = Vec::new();
        for (index, version) in versions.iter().enumerate() {
            if version.get("served").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            let version_name = version.get("name").and_then(Value::as_str).ok_or_else(|| {
                ResourceError::ReadCrdField {
                    crd: name.clone(),
                    field: format!("spec.versions[{index}].name"),
                    expected: "string",
                }
            })?;
            let status = version.pointer("/subresources/status").is_some();
            kinds.push(ResourceKind {
                group: group.clone(),
                version: version_name.to_string(),
                kind: kind.clone(),
                plural: plural.clone(),
                singular: singular.clone(),
                short_names: short_names.clone(),
                namespaced: scope != "Cluster",
                status_subresource: status,
                drop_status_on_create: status,
            });
        }
        if kinds.is_empty() {
            return Err(ResourceError::NoServedVersion { crd: name });
        }
        Ok(kinds)
    }
}

fn pointer_to_field(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

/// The resource kinds every fake server knows from the start.
pub fn builtin_kinds() -> Vec<ResourceKind> {
    vec![
        ResourceKind::cluster("", "v1", "Namespace", "namespaces")
            .with_status(false)
            .with_short_names(&["ns"]),
        ResourceKind::cluster("", "v1", "Node", "nodes")
            .with_status(false)
            .with_short_names(&["no"]),
        ResourceKind::namespaced("", "v1", "Pod", "pods")
            .with_status(false)
            .with_short_names(&["po"]),
        ResourceKind::namespaced("", "v1", "Event", "events").with_short_names(&["ev"]),
        ResourceKind::namespaced("", "v1", "ConfigMap", "configmaps").with_short_names(&["cm"]),
        ResourceKind::namespaced("", "v1", "Secret", "secrets"),
        ResourceKind::namespaced("", "v1", "Service", "services")
            .with_status(false)
            .with_short_names(&["svc"]),
        ResourceKind::namespaced("", "v1", "ServiceAccount", "serviceaccounts")
            .with_short_names(&["sa"]),
        ResourceKind::namespaced("events.k8s.io", "v1", "Event", "events")
            .with_short_names(&["ev"]),
        ResourceKind::namespaced("batch", "v1", "Job", "jobs").with_status(true),
        ResourceKind::namespaced("apps", "v1", "Deployment", "deployments")
            .with_status(true)
            .with_short_names(&["deploy"]),
        ResourceKind::namespaced("apps", "v1", "DaemonSet", "daemonsets")
            .with_status(true)
            .with_short_names(&["ds"]),
        ResourceKind::namespaced("coordination.k8s.io", "v1", "Lease", "leases"),
        ResourceKind::cluster(
            "apiextensions.k8s.io",
            "v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
        )
        .with_status(true)
        .with_short_names(&["crd", "crds"]),
        ResourceKind::namespaced("vigil.dev", "v1alpha1", "HealthCheck", "healthchecks")
            .with_status(true)
            .with_short_names(&["hc"]),
    ]
}

/// All known kinds, in registration order (which is discovery order).
#[derive(Clone, Debug, Default)]
pub struct Registry {
    kinds: Vec<Arc<ResourceKind>>,
}

impl Registry {
    /// A registry holding the built-in kinds.
    pub fn with_builtins() -> Self {
        let mut registry = Self::default();
        for kind in builtin_kinds() {
            registry.register(kind);
        }
        registry
    }

    /// Adds a kind, replacing one with the same group, version and plural.
    pub fn register(&mut self, kind: ResourceKind) {
        let kind = Arc::new(kind);
        match self
            .kinds
            .iter_mut()
            .find(|k| k.group == kind.group && k.version == kind.version && k.plural == kind.plural)
        {
            Some(slot) => *slot = kind,
            None => self.kinds.push(kind),
        }
    }

    /// Looks a kind up by path parts.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceKind>> {
        self.kinds
            .iter()
            .find(|k| k.group == group && k.version == version && k.plural == plural)
            .cloned()
    }

    /// Looks a kind up by `apiVersion` and plural (`v1`, `vigil.dev/v1alpha1`).
    pub fn find_api_version(&self, api_version: &str, plural: &str) -> Option<Arc<ResourceKind>> {
        let (group, version) = split_api_version(api_version);
        self.find(group, version, plural)
    }

    /// Every kind with a group, in order.
    pub fn all(&self) -> &[Arc<ResourceKind>] {
        &self.kinds
    }

    /// Group names (without the core group), in registration order, each once.
    pub fn groups(&self) -> Vec<String> {
        let mut groups: Vec<String> = Vec::new();
        for kind in &self.kinds {
            if !kind.group.is_empty() && !groups.contains(&kind.group) {
                groups.push(kind.group.clone());
            }
        }
        groups
    }

    /// Versions of a group, in registration order, each once.
    pub fn versions(&self, group: &str) -> Vec<String> {
        let mut versions: Vec<String> = Vec::new();
        for kind in self.kinds.iter().filter(|k| k.group == group) {
            if !versions.contains(&kind.version) {
                versions.push(kind.version.clone());
            }
        }
        versions
    }

    /// The kinds served at one group/version.
    pub fn in_group_version<'a>(
        &'a self,
        group: &'a str,
        version: &'a str,
    ) -> impl Iterator<Item = &'a ResourceKind> {
        self.kinds
            .iter()
            .filter(move |k| k.group == group && k.version == version)
            .map(|k| k.as_ref())
    }
}

/// Splits `group/version` (or a bare core `version`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn crd_gives_one_kind_per_served_version() {
        let crd = json!({
            "metadata": {"name": "widgets.example.com"},
            "spec": {
                "group": "example.com", "scope": "Cluster",
                "names": {"kind": "Widget", "plural": "widgets", "shortNames": ["wd"]},
                "versions": [
                    {"name": "v1", "served": true, "subresources": {"status": {}}},
                    {"name": "v0", "served": false}
                ]
            }
        });
        let kinds = ResourceKind::from_crd(&crd).unwrap();
        assert_eq!(kinds.len(), 1);
        assert_eq!(kinds[0].api_version(), "example.com/v1");
        assert!(!kinds[0].namespaced);
        assert!(kinds[0].status_subresource);
        assert_eq!(kinds[0].singular, "widget");
        assert_eq!(kinds[0].short_names, vec!["wd".to_string()]);
    }

    #[test]
    fn crd_missing_group_names_the_field() {
        let crd =
            json!({"metadata": {"name": "x"}, "spec": {"names": {"kind": "X", "plural": "xs"}}});
        let error = ResourceKind::from_crd(&crd).unwrap_err().to_string();
        assert_eq!(
            error,
            "CustomResourceDefinition \"x\": spec.group is missing or not a string; set it as in apiextensions.k8s.io/v1"
        );
    }

    #[test]
    fn crd_without_served_version_is_refused() {
        let crd = json!({"metadata": {"name": "x"}, "spec": {"group": "g", "scope": "Namespaced",
            "names": {"kind": "X", "plural": "xs"}, "versions": [{"name": "v1", "served": false}]}});
        assert!(matches!(
            ResourceKind::from_crd(&crd),
            Err(ResourceError::NoServedVersion { .. })
        ));
    }

    #[test]
    fn registry_finds_builtins_by_path_and_kind() {
        let registry = Registry::with_builtins();
        assert_eq!(
            registry
                .find_api_version("vigil.dev/v1alpha1", "healthchecks")
                .unwrap()
                .kind,
            "HealthCheck"
        );
        assert!(!registry.find_api_version("v1", "nodes").unwrap().namespaced);
        assert!(registry.find("", "v1", "widgets").is_none());
        assert!(registry.groups().contains(&"events.k8s.io".to_string()));
        assert_eq!(registry.versions(""), vec!["v1".to_string()]);
    }
}
