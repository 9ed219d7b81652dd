//! kubectl on the manifests: `kubectl kustomize` builds the install, and `kubectl apply
//! --dry-run=client` maps and reads every object against a stand-in API server.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use super::strict::{self, Checked};
use super::{check_all, discovery, kustomization, repo};

/// `kubectl`, or a clear failure naming what CI must install.
fn kubectl() -> Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join("kubectl").is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "kubectl is not on PATH: these tests run `kubectl kustomize` and `kubectl apply \
         --dry-run=client` (kubectl v1.32, which bundles kustomize v5.5). The development \
         machines' image ships it as the apt package `kubectl` (1:528.0.0-0, Google's Cloud SDK \
         build); any kubectl 1.27 or newer works"
    );
    Command::new("kubectl")
}

#[test]
fn kubectl_kustomize_builds_the_install() {
    let out = kubectl()
        .arg("kustomize")
        .arg(repo().join("manifests"))
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "kubectl kustomize manifests/ failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut built = BTreeSet::new();
    for (index, value) in strict::documents("kustomize output", &stdout).unwrap() {
        match strict::check("kubectl kustomize manifests/", index, &value) {
            Ok(Checked::Typed { kind, name, .. }) => {
                built.insert((kind, name));
            }
            other => panic!("{other:?}"),
        }
    }
    let k = kustomization();
    let from_files: BTreeSet<(String, String)> = check_all()
        .unwrap()
        .into_iter()
        .filter(|(file, _)| k.resources.contains(file))
        .filter_map(|(_, c)| match c {
            Checked::Typed { kind, name, .. } => Some((kind, name)),
            Checked::Skipped { .. } => None,
        })
        .collect();
    assert_eq!(built, from_files);
    assert!(stdout.contains("image: ghcr.io/vigil-dev/vigil:0.1.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_dry_run_accepts_the_install_and_the_example() {
    let mut kinds: Vec<discovery::Kind> = check_all()
        .unwrap()
        .into_iter()
        .filter_map(|(_, c)| match c {
            Checked::Typed {
                api_version,
                kind,
                plural,
                namespaced,
                ..
            } => Some(discovery::Kind {
                api_version,
                kind,
                plural: plural.to_owned(),
                namespaced,
            }),
            Checked::Skipped { .. } => None,
        })
        .collect();
    kinds.push(discovery::Kind {
        api_version: "vigil.dev/v1alpha1".into(),
        kind: "HealthCheck".into(),
        plural: "healthchecks".into(),
        namespaced: true,
    });
    let server = discovery::start(kinds).await;
    let tmp = tempfile::tempdir().unwrap();
    let config = tmp.path().join("kubeconfig");
    std::fs::write(
        &config,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: stub\n  cluster: {{server: \
             'http://{}'}}\ncontexts:\n- name: stub\n  context: {{cluster: stub}}\n\
             current-context: stub\nusers: []\n",
            server.addr
        ),
    )
    .unwrap();
    let run = |args: Vec<String>| {
        let mut cmd = kubectl();
        cmd.arg("--kubeconfig")
            .arg(&config)
            .arg("--cache-dir")
            .arg(tmp.path().join("cache"))
            .args(args)
            .current_dir(repo());
        async move {
            let out = tokio::time::timeout(
                Duration::from_secs(120),
                tokio::process::Command::from(cmd).output(),
            )
            .await
            .expect("kubectl finished within 120s")
            .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            assert!(out.status.success(), "kubectl failed:\n{stdout}\n{stderr}");
            stdout
        }
    };
    let dry = ["--dry-run=client", "--validate=false"].map(String::from);
    let mut args = vec!["apply".to_owned(), "-k".to_owned(), "manifests/".to_owned()];
    args.extend(dry.clone());
    let stdout = run(args).await;
    for line in [
        "namespace/vigil created (dry run)",
        "customresourcedefinition.apiextensions.k8s.io/healthchecks.vigil.dev created (dry run)",
        "daemonset.apps/vigil-agent created (dry run)",
        "deployment.apps/vigil-federator created (dry run)",
        "poddisruptionbudget.policy/vigil-federator created (dry run)",
        "networkpolicy.networking.k8s.io/vigil-federator created (dry run)",
        "clusterrole.rbac.authorization.k8s.io/vigil-federator created (dry run)",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "no {line:?} in\n{stdout}"
        );
    }
    let created = stdout
        .lines()
        .filter(|l| l.ends_with("created (dry run)"))
        .count();
    assert_eq!(created, kustomized_objects(), "{stdout}");
    let mut args = vec![
        "apply".to_owned(),
        "-f".to_owned(),
        "examples/kubernetes/healthcheck-http.yaml".to_owned(),
    ];
    args.extend(dry);
    let stdout = run(args).await;
    assert_eq!(
        stdout.trim(),
        "healthcheck.vigil.dev/federator-healthz created (dry run)"
    );
    // kubectl looked each object up (and found none): it mapped every kind through discovery.
    let requests = server.requests.lock().unwrap().clone();
    for path in [
        "/apis/apps/v1/namespaces/vigil/daemonsets/vigil-agent",
        "/apis/policy/v1/namespaces/vigil/poddisruptionbudgets/vigil-federator",
        "/apis/vigil.dev/v1alpha1/namespaces/vigil/healthchecks/federator-healthz",
    ] {
        assert!(
            requests.iter().any(|r| r == path),
            "{path} not in {requests:#?}"
        );
    }
}

fn kustomized_objects() -> usize {
    let k = kustomization();
    check_all()
        .unwrap()
        .iter()
        .filter(|(file, _)| k.resources.contains(file))
        .count()
}
