//! Request paths: discovery endpoints and `/api/v1/...`, `/apis/{group}/{version}/...` resource paths.

use std::sync::Arc;

use crate::resource::{Registry, ResourceKind};
use crate::status::ApiError;
use crate::store::Part;

/// What a path addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// `/version`
    Version,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/{group}`
    Group(String),
    /// `/api/v1`, `/apis/{group}/{version}`
    Resources { group: String, version: String },
    /// A resource collection, object or subresource.
    Resource(Target),
}

/// A resource path, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The kind addressed.
    pub kind: Arc<ResourceKind>,
    /// `namespaces/{ns}` of the path; `None` for cluster-scoped kinds and cluster-wide lists.
    pub namespace: Option<String>,
    /// The object name; `None` for collections.
    pub name: Option<String>,
    /// The object or its `/status`.
    pub part: Part,
    /// The legacy `/watch/` path prefix was used.
    pub watch_prefix: bool,
}

impl Target {
    /// `plural` or `plural/status`, the resource name used for faults and the request log.
    pub fn resource(&self) -> String {
        match self.part {
            Part::Main => self.kind.plural.clone(),
            Part::Status => format!("{}/status", self.kind.plural),
        }
    }
}

/// Parses a request path.
pub fn parse(path: &str, registry: &Registry) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest) = match segments.as_slice() {
        ["version"] => return Ok(Route::Version),
        ["api"] => return Ok(Route::CoreVersions),
        ["apis"] => return Ok(Route::Groups),
        ["apis", group] => {
            if registry.versions(group).is_empty() {
                return Err(ApiError::unknown_path());
            }
            return Ok(Route::Group(group.to_string()));
        }
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(ApiError::unknown_path()),
    };
    if registry.in_group_version(group, version).next().is_none() {
        return Err(ApiError::unknown_path());
    }
    let (watch_prefix, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let find = |plural: &str| {
        registry
            .find(group, version, plural)
            .ok_or_else(ApiError::unknown_path)
    };
    let namespaced_plural = |plural: &str| {
        registry
            .find(group, version, plural)
            .filter(|k| k.namespaced)
    };
    let target = |kind: Arc<ResourceKind>,
                  namespace: Option<&str>,
                  name: Option<&str>,
                  sub: Option<&str>| {
        if namespace.is_some() != kind.namespaced && name.is_some() {
            return Err(ApiError::unknown_path());
        }
        if namespace.is_some() && !kind.namespaced {
            return Err(ApiError::unknown_path());
        }
        let part = match sub {
            None => Part::Main,
            Some("status") if kind.status_subresource => Part::Status,
            Some(_) => return Err(ApiError::unknown_path()),
        };
        Ok(Route::Resource(Target {
            kind,
            namespace: namespace.map(str::to_string),
            name: name.map(str::to_string),
            part,
            watch_prefix,
        }))
    };
    match rest {
        [] => Ok(Route::Resources {
            group: group.to_string(),
            version: version.to_string(),
        }),
        [plural] => target(find(plural)?, None, None, None),
        ["namespaces", namespace, plural] if namespaced_plural(plural).is_some() => {
            target(find(plural)?, Some(namespace), None, None)
        }
        [plural, name] => target(find(plural)?, None, Some(name), None),
        [plural, name, sub] => target(find(plural)?, None, Some(name), Some(sub)),
        ["namespaces", namespace, plural, name] => {
            target(find(plural)?, Some(namespace), Some(name), None)
        }
        ["namespaces", namespace, plural, name, sub] => {
            target(find(plural)?, Some(namespace), Some(name), Some(sub))
        }
        _ => Err(ApiError::unknown_path()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(path: &str) -> Target {
        match parse(path, &Registry::with_builtins()) {
            Ok(Route::Resource(target)) => target,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn resource_paths() {
        let hc = resource("/apis/vigil.dev/v1alpha1/namespaces/shop/healthchecks/web/status");
        assert_eq!(hc.kind.kind, "HealthCheck");
        assert_eq!(hc.namespace.as_deref(), Some("shop"));
        assert_eq!(hc.name.as_deref(), Some("web"));
        assert_eq!(hc.part, Part::Status);
        assert_eq!(hc.resource(), "healthchecks/status");

        let all = resource("/apis/vigil.dev/v1alpha1/healthchecks");
        assert_eq!((all.namespace, all.name), (None, None));

        let node = resource("/api/v1/nodes/n1/status");
        assert_eq!(
            (node.kind.plural.as_str(), node.name.as_deref(), node.part),
            ("nodes", Some("n1"), Part::Status)
        );

        let namespace = resource("/api/v1/namespaces/shop");
        assert_eq!(
            (namespace.kind.plural.as_str(), namespace.name.as_deref()),
            ("namespaces", Some("shop"))
        );

        let pods = resource("/api/v1/namespaces/shop/pods");
        assert_eq!(
            (pods.kind.plural.as_str(), pods.namespace.as_deref()),
            ("pods", Some("shop"))
        );

        let watched = resource("/api/v1/watch/namespaces/shop/pods");
        assert!(watched.watch_prefix);
    }

    #[test]
    fn discovery_paths() {
        let registry = Registry::with_builtins();
        assert_eq!(parse("/version", &registry).unwrap(), Route::Version);
        assert_eq!(parse("/api", &registry).unwrap(), Route::CoreVersions);
        assert_eq!(parse("/apis/", &registry).unwrap(), Route::Groups);
        assert_eq!(
            parse("/apis/batch", &registry).unwrap(),
            Route::Group("batch".into())
        );
        assert_eq!(
            parse("/apis/batch/v1", &registry).unwrap(),
            Route::Resources {
                group: "batch".into(),
                version: "v1".into()
            }
        );
    }

    #[test]
    fn unknown_paths_are_404() {
        let registry = Registry::with_builtins();
        for path in [
            "/apis/nope/v1/things",
            "/api/v2/pods",
            "/api/v1/widgets",
            "/api/v1/namespaces/a/nodes/n1",
            "/api/v1/pods/p1",
            "/api/v1/namespaces/a/configmaps/c/status",
            "/api/v1/namespaces/a/pods/p/log",
            "/healthz",
        ] {
            let error = parse(path, &registry).unwrap_err();
            assert_eq!(error.code, 404, "{path}");
        }
    }
}
