//! Discovery documents: `/version`, `/api`, `/apis`, `/apis/{group}`, resource lists, and the aggregated
//! (apidiscovery.k8s.io/v2) form that kubectl and `Discovery::run_aggregated` ask for.

use serde_json::{Value, json};

use crate::resource::{Registry, ResourceKind};
use crate::route::Route;

/// Content type of aggregated discovery answers.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

const VERBS: [&str; 8] = [
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

/// Whether an `Accept` header asks for aggregated discovery.
pub fn wants_aggregated(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=APIGroupDiscoveryList"))
}

/// The document for a discovery route, or `None` for resource routes. `aggregated` selects the v2 form
/// for `/api` and `/apis`.
pub fn document(
    route: &Route,
    registry: &Registry,
    server_address: &str,
    aggregated: bool,
) -> Option<Value> {
    Some(match route {
        Route::Version => json!({
            "major": "1", "minor": "32", "gitVersion": "v1.32.0-vigil-kube-fake", "gitCommit": "0",
            "gitTreeState": "clean", "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.23",
            "compiler": "gc", "platform": "linux/amd64"
        }),
        Route::CoreVersions if aggregated => aggregated_list(registry, &[String::new()]),
        Route::CoreVersions => json!({
            "kind": "APIVersions",
            "versions": registry.versions(""),
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}]
        }),
        Route::Groups if aggregated => aggregated_list(registry, &registry.groups()),
        Route::Groups => json!({
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": registry.groups().iter().map(|g| group(registry, g)).collect::<Vec<_>>()
        }),
        Route::Group(name) => {
            let mut document = group(registry, name);
            document["kind"] = json!("APIGroup");
            document["apiVersion"] = json!("v1");
            document
        }
        Route::Resources { group, version } => json!({
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": if group.is_empty() { version.clone() } else { format!("{group}/{version}") },
            "resources": registry.in_group_version(group, version).flat_map(resource_entries).collect::<Vec<_>>()
        }),
        Route::Resource(_) => return None,
    })
}

fn group(registry: &Registry, name: &str) -> Value {
    let versions: Vec<Value> = registry
        .versions(name)
        .iter()
        .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
        .collect();
    json!({"name": name, "versions": versions, "preferredVersion": versions.first().cloned().unwrap_or(Value::Null)})
}

fn resource_entries(kind: &ResourceKind) -> Vec<Value> {
    let mut entries = vec![json!({
        "name": kind.plural,
        "singularName": kind.singular,
        "namespaced": kind.namespaced,
        "kind": kind.kind,
        "verbs": VERBS,
        "shortNames": kind.short_names,
    })];
    if kind.status_subresource {
        entries.push(json!({
            "name": format!("{}/status", kind.plural),
            "singularName": "",
            "namespaced": kind.namespaced,
            "kind": kind.kind,
            "verbs": ["get", "patch", "update"],
        }));
    }
    entries
}

fn aggregated_list(registry: &Registry, groups: &[String]) -> Value {
    let items: Vec<Value> = groups
        .iter()
        .map(|group| {
            let versions: Vec<Value> = registry
                .versions(group)
                .iter()
                .map(|version| {
                    let resources: Vec<Value> = registry
                        .in_group_version(group, version)
                        .map(aggregated_resource)
                        .collect();
                    json!({"version": version, "resources": resources, "freshness": "Current"})
                })
                .collect();
            json!({"metadata": {"name": group}, "versions": versions})
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

fn aggregated_resource(kind: &ResourceKind) -> Value {
    let response_kind = json!({"group": kind.group, "version": kind.version, "kind": kind.kind});
    let subresources: Vec<Value> = if kind.status_subresource {
        vec![
            json!({"subresource": "status", "responseKind": response_kind, "verbs": ["get", "patch", "update"]}),
        ]
    } else {
        Vec::new()
    };
    json!({
        "resource": kind.plural,
        "responseKind": response_kind,
        "scope": if kind.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": kind.singular,
        "verbs": VERBS,
        "shortNames": kind.short_names,
        "subresources": subresources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_list_has_status_subresources() {
        let registry = Registry::with_builtins();
        let route = Route::Resources {
            group: "vigil.dev".into(),
            version: "v1alpha1".into(),
        };
        let document = document(&route, &registry, "127.0.0.1:1", false).unwrap();
        assert_eq!(document["groupVersion"], "vigil.dev/v1alpha1");
        let names: Vec<&str> = document["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["healthchecks", "healthchecks/status"]);
        assert_eq!(document["resources"][0]["shortNames"], json!(["hc"]));
    }

    #[test]
    fn aggregated_form_is_chosen_by_accept() {
        assert!(wants_aggregated(
            kube::core::discovery::v2::ACCEPT_AGGREGATED_DISCOVERY_V2
        ));
        assert!(!wants_aggregated("application/json"));
        let registry = Registry::with_builtins();
        let document = document(&Route::CoreVersions, &registry, "x", true).unwrap();
        assert_eq!(document["kind"], "APIGroupDiscoveryList");
        assert_eq!(document["items"][0]["metadata"]["name"], "");
    }
}
