//! What the manifests promise a cluster admin: the agent has no API access and runs non-root
//! with a read-only root file system and only NET_RAW; the federator is HA and holds exactly the
//! RBAC docs/install.md lists; Services and NetworkPolicies agree with the containers' ports.

use std::collections::BTreeSet;

use k8s_openapi::Resource;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Container, PodSpec, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde_json::Value;

const IMAGE: &str = "ghcr.io/vigil-dev/vigil:0.1.0";

/// Every object of type `T` in the installed manifests.
fn all<T: Resource + DeserializeOwned>() -> Vec<T> {
    let dir = super::repo().join("manifests");
    let mut out = Vec::new();
    let text = std::fs::read_to_string(dir.join("kustomization.yaml")).unwrap();
    let k: Value = serde_yaml::from_str(&text).unwrap();
    for file in k["resources"].as_array().unwrap() {
        let file = file.as_str().unwrap();
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        for (_, value) in super::strict::documents(file, &text).unwrap() {
            if value["kind"] == T::KIND && value["apiVersion"] == T::API_VERSION {
                out.push(serde_json::from_value(value).unwrap());
            }
        }
    }
    out
}

fn one<
    T: Resource
        + DeserializeOwned
        + k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
>(
    name: &str,
) -> T {
    all::<T>()
        .into_iter()
        .find(|o| o.metadata().name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no {} {name} in manifests/", T::KIND))
}

fn pod_spec_of_daemonset(name: &str) -> PodSpec {
    one::<DaemonSet>(name).spec.template.spec.unwrap()
}

fn pod_spec_of_deployment(name: &str) -> PodSpec {
    one::<Deployment>(name).spec.template.spec.unwrap()
}

fn container<'a>(pod: &'a PodSpec, name: &str) -> &'a Container {
    pod.containers.iter().find(|c| c.name == name).unwrap()
}

fn caps(c: &Container) -> (Vec<String>, Vec<String>) {
    let caps = c
        .security_context
        .as_ref()
        .and_then(|s| s.capabilities.clone())
        .unwrap_or_default();
    (caps.drop.unwrap_or_default(), caps.add.unwrap_or_default())
}

fn quantity(
    r: &Option<
        std::collections::BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >,
    key: &str,
) -> String {
    r.as_ref()
        .and_then(|m| m.get(key))
        .map(|q| q.0.clone())
        .unwrap_or_default()
}

fn probe_path(p: &Option<k8s_openapi::api::core::v1::Probe>) -> (String, IntOrString) {
    let get = p
        .as_ref()
        .and_then(|p| p.http_get.clone())
        .expect("an httpGet probe");
    (get.path.unwrap_or_default(), get.port)
}

fn port_number(c: &Container, name: &str) -> i32 {
    c.ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("container {} has no port {name}", c.name))
        .container_port
}

#[test]
fn agent_has_no_api_access() {
    let pod = pod_spec_of_daemonset("vigil-agent");
    assert_eq!(pod.service_account_name.as_deref(), Some("vigil-agent"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    let sa = one::<ServiceAccount>("vigil-agent");
    assert_eq!(sa.automount_service_account_token, Some(false));
    let bound: Vec<String> = all::<ClusterRoleBinding>()
        .into_iter()
        .flat_map(|b| b.subjects.unwrap_or_default())
        .chain(
            all::<RoleBinding>()
                .into_iter()
                .flat_map(|b| b.subjects.unwrap_or_default()),
        )
        .map(|s| s.name)
        .collect();
    assert!(!bound.iter().any(|n| n == "vigil-agent"), "{bound:?}");
}

#[test]
fn agent_runs_non_root_read_only_with_only_net_raw_on_every_node() {
    let pod = pod_spec_of_daemonset("vigil-agent");
    let pod_sec = pod.security_context.clone().unwrap();
    assert_eq!(pod_sec.run_as_non_root, Some(true));
    assert!(pod_sec.run_as_user.is_some_and(|u| u != 0));
    assert_ne!(pod.host_pid, Some(true), "hostPID is not needed");
    let tolerations = pod.tolerations.clone().unwrap();
    assert_eq!(tolerations.len(), 1);
    assert_eq!(tolerations[0].operator.as_deref(), Some("Exists"));
    assert!(tolerations[0].key.is_none() && tolerations[0].effect.is_none());

    let agent = container(&pod, "agent");
    assert_eq!(agent.image.as_deref(), Some(IMAGE));
    let sec = agent.security_context.clone().unwrap();
    assert_eq!(sec.read_only_root_filesystem, Some(true));
    assert_eq!(sec.allow_privilege_escalation, Some(false));
    assert_ne!(sec.privileged, Some(true));
    assert_ne!(sec.run_as_user, Some(0));
    assert_eq!(caps(agent), (vec!["ALL".into()], vec!["NET_RAW".into()]));
    let args = agent.args.clone().unwrap();
    for arg in [
        "--federator=http://vigil-federator.vigil.svc:7443",
        "--listen=0.0.0.0:9115",
        "--host-root=/host",
        "--spill-dir=/var/lib/vigil/spill",
        "--diagnostics=/etc/vigil/diagnostics.yaml",
    ] {
        assert!(args.iter().any(|a| a == arg), "{arg} not in {args:?}");
    }
    let node = agent
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "VIGIL_NODE")
        .unwrap();
    let field = node.value_from.clone().unwrap().field_ref.unwrap();
    assert_eq!(field.field_path, "spec.nodeName");

    let mounts = agent.volume_mounts.clone().unwrap();
    let host = mounts.iter().find(|m| m.mount_path == "/host").unwrap();
    assert_eq!(host.read_only, Some(true), "the host is mounted read-only");
    assert!(
        mounts
            .iter()
            .any(|m| m.mount_path == "/var/lib/vigil" && m.read_only != Some(true))
    );
    assert!(
        mounts
            .iter()
            .any(|m| m.mount_path == "/etc/vigil" && m.read_only == Some(true))
    );
    let volumes = pod.volumes.clone().unwrap();
    let host_volume = volumes.iter().find(|v| v.name == host.name).unwrap();
    assert_eq!(host_volume.host_path.as_ref().unwrap().path, "/");
    let config = volumes.iter().find(|v| v.name == "config").unwrap();
    assert_eq!(
        config.config_map.as_ref().unwrap().name,
        "vigil-agent-config"
    );

    let res = agent.resources.clone().unwrap();
    assert_eq!(
        [
            quantity(&res.requests, "cpu"),
            quantity(&res.requests, "memory")
        ],
        ["50m", "64Mi"]
    );
    assert_eq!(
        [
            quantity(&res.limits, "cpu"),
            quantity(&res.limits, "memory")
        ],
        ["250m", "128Mi"]
    );
    let metrics = port_number(agent, "metrics");
    assert_eq!(metrics, 9115);
    for probe in [&agent.liveness_probe, &agent.readiness_probe] {
        assert_eq!(
            probe_path(probe),
            ("/healthz".into(), IntOrString::String("metrics".into()))
        );
    }
    // The one root step: chown the spill folder, with CHOWN and nothing else.
    for init in pod.init_containers.iter().flatten() {
        assert_eq!(
            caps(init),
            (vec!["ALL".into()], vec!["CHOWN".into()]),
            "{}",
            init.name
        );
        assert_eq!(init.image.as_deref(), Some(IMAGE));
    }
}

#[test]
fn federator_is_highly_available_non_root_and_probed() {
    let deployment = one::<Deployment>("vigil-federator");
    assert_eq!(deployment.spec.replicas, Some(2));
    let pod = pod_spec_of_deployment("vigil-federator");
    assert_eq!(pod.service_account_name.as_deref(), Some("vigil-federator"));
    assert_eq!(
        pod.security_context.clone().unwrap().run_as_non_root,
        Some(true)
    );
    let c = container(&pod, "federator");
    assert_eq!(c.image.as_deref(), Some(IMAGE));
    assert_eq!(
        c.args.clone().unwrap(),
        ["run", "--listen=0.0.0.0:8080", "--grpc-listen=0.0.0.0:7443"]
    );
    let sec = c.security_context.clone().unwrap();
    assert_eq!(sec.read_only_root_filesystem, Some(true));
    assert_eq!(sec.allow_privilege_escalation, Some(false));
    assert_eq!(caps(c), (vec!["ALL".into()], vec![]));
    for (var, path) in [
        ("VIGIL_POD_NAME", "metadata.name"),
        ("VIGIL_NAMESPACE", "metadata.namespace"),
    ] {
        let env = c.env.iter().flatten().find(|e| e.name == var).unwrap();
        assert_eq!(
            env.value_from
                .clone()
                .unwrap()
                .field_ref
                .unwrap()
                .field_path,
            path
        );
    }
    assert_eq!(port_number(c, "http"), 8080);
    assert_eq!(port_number(c, "grpc"), 7443);
    assert_eq!(probe_path(&c.liveness_probe).0, "/healthz");
    assert_eq!(probe_path(&c.readiness_probe).0, "/readyz");
    let res = c.resources.clone().unwrap();
    assert!(res.requests.is_some() && res.limits.is_some());

    let pdb = one::<PodDisruptionBudget>("vigil-federator").spec.unwrap();
    assert_eq!(pdb.min_available, Some(IntOrString::Int(1)));
    let pod_labels = deployment.spec.template.metadata.unwrap().labels.unwrap();
    for (k, v) in pdb.selector.unwrap().match_labels.unwrap() {
        assert_eq!(
            pod_labels.get(&k),
            Some(&v),
            "the PDB selects the federator pods"
        );
    }
}

/// (apiGroup, resource, verb) of every rule.
fn grants(
    rules: Vec<k8s_openapi::api::rbac::v1::PolicyRule>,
) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in rules {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
        for group in rule.api_groups.unwrap_or_default() {
            for resource in rule.resources.clone().unwrap_or_default() {
                for verb in &rule.verbs {
                    assert!(
                        group != "*" && resource != "*" && verb != "*",
                        "no wildcards"
                    );
                    out.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    out
}

fn expand(table: &[(&str, &str, &[&str])]) -> BTreeSet<(String, String, String)> {
    table
        .iter()
        .flat_map(|(g, r, verbs)| {
            verbs
                .iter()
                .map(move |v| (g.to_string(), r.to_string(), v.to_string()))
        })
        .collect()
}

#[test]
fn federator_rbac_is_exactly_the_documented_least_privilege() {
    let cluster = grants(one::<ClusterRole>("vigil-federator").rules.unwrap());
    let want = expand(&[
        ("vigil.dev", "healthchecks", &["get", "list", "watch"]),
        (
            "vigil.dev",
            "healthchecks/status",
            &["get", "patch", "update"],
        ),
        (
            "batch",
            "jobs",
            &["get", "list", "watch", "create", "delete"],
        ),
        ("", "pods", &["get", "list", "watch"]),
        ("", "nodes", &["get", "list", "watch"]),
        ("", "nodes/status", &["patch"]),
        ("", "events", &["create", "patch"]),
        ("events.k8s.io", "events", &["create", "patch"]),
    ]);
    assert_eq!(cluster, want);
    let role = one::<Role>("vigil-federator-leader-election");
    assert_eq!(role.metadata.namespace.as_deref(), Some("vigil"));
    let want = expand(&[(
        "coordination.k8s.io",
        "leases",
        &["get", "create", "update"],
    )]);
    assert_eq!(grants(role.rules.unwrap()), want);

    let crb = one::<ClusterRoleBinding>("vigil-federator");
    assert_eq!(
        (crb.role_ref.kind.as_str(), crb.role_ref.name.as_str()),
        ("ClusterRole", "vigil-federator")
    );
    let rb = one::<RoleBinding>("vigil-federator-leader-election");
    assert_eq!(
        (rb.role_ref.kind.as_str(), rb.role_ref.name.as_str()),
        ("Role", "vigil-federator-leader-election")
    );
    for subjects in [crb.subjects.unwrap(), rb.subjects.unwrap()] {
        assert_eq!(subjects.len(), 1);
        assert_eq!(
            (
                subjects[0].kind.as_str(),
                subjects[0].name.as_str(),
                subjects[0].namespace.as_deref()
            ),
            ("ServiceAccount", "vigil-federator", Some("vigil"))
        );
    }
}

#[test]
fn services_and_network_policies_match_the_containers() {
    let federator = one::<Service>("vigil-federator").spec.unwrap();
    let ports: Vec<(String, i32)> = federator
        .ports
        .unwrap()
        .into_iter()
        .map(|p| (p.name.unwrap(), p.port))
        .collect();
    assert_eq!(ports, [("grpc".into(), 7443), ("http".into(), 8080)]);
    let pod_labels = one::<Deployment>("vigil-federator")
        .spec
        .template
        .metadata
        .unwrap()
        .labels
        .unwrap();
    for (k, v) in federator.selector.unwrap() {
        assert_eq!(pod_labels.get(&k), Some(&v));
    }
    let agent = one::<Service>("vigil-agent").spec.unwrap();
    assert_eq!(agent.cluster_ip.as_deref(), Some("None"), "headless");

    // The federator's gRPC port admits agents (here and in Jobs of any namespace) and KEDA.
    let policy = one::<NetworkPolicy>("vigil-federator").spec.unwrap();
    let rules = policy.ingress.unwrap();
    let admits =
        |port: &str,
         check: &dyn Fn(&k8s_openapi::api::networking::v1::NetworkPolicyPeer) -> bool| {
            rules.iter().any(|r| {
                r.ports
                    .iter()
                    .flatten()
                    .any(|p| p.port == Some(IntOrString::String(port.into())))
                    && r.from.iter().flatten().any(check)
            })
        };
    let label_is =
        |peer: &k8s_openapi::api::networking::v1::NetworkPolicyPeer, key: &str, value: &str| {
            peer.pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.as_ref())
                .is_some_and(|m| m.get(key).map(String::as_str) == Some(value))
        };
    let ns_is = |peer: &k8s_openapi::api::networking::v1::NetworkPolicyPeer, ns: &str| {
        peer.namespace_selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .is_some_and(|m| m.get("kubernetes.io/metadata.name").map(String::as_str) == Some(ns))
    };
    assert!(admits("grpc", &|p| label_is(
        p,
        "app.kubernetes.io/name",
        "vigil-agent"
    ) && p.namespace_selector.is_none()));
    assert!(admits("grpc", &|p| label_is(
        p,
        "app.kubernetes.io/name",
        "vigil-agent"
    ) && p
        .namespace_selector
        .as_ref()
        .is_some_and(
            |s| s.match_labels.is_none() && s.match_expressions.is_none()
        )));
    assert!(admits("grpc", &|p| ns_is(p, "keda")));
    assert!(admits("http", &|p| ns_is(p, "monitoring")));
    let agent_policy = one::<NetworkPolicy>("vigil-agent").spec.unwrap();
    let port = &agent_policy.ingress.unwrap()[0].ports.clone().unwrap()[0];
    assert_eq!(port.port, Some(IntOrString::String("metrics".into())));
}
