//! client-go, through kubectl, against the fake server: discovery, client- and server-side apply,
//! strategic status patches, `wait --for=condition`, label selectors and delete. Skipped (with a note)
//! when no kubectl is on the PATH. `--validate=false` because the fake serves no OpenAPI documents.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;
use tokio::process::Command;
use vigil_kube_fake::{FakeApiServer, Verb};

const NODE: &str = "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n  labels: {zone: a}\n";
const CHECK: &str = "apiVersion: vigil.dev/v1alpha1\nkind: HealthCheck\nmetadata: {name: web, namespace: shop}\nspec: {interval: 10s}\n";

struct Kubectl {
    kubeconfig: String,
    dir: tempfile::TempDir,
}

impl Kubectl {
    /// Runs kubectl; fails with its stderr when it exits non-zero.
    async fn run(&self, args: &[&str]) -> Result<String> {
        let output = tokio::time::timeout(
            Duration::from_secs(30),
            Command::new("kubectl")
                .args(args)
                .env("KUBECONFIG", &self.kubeconfig)
                .env("HOME", self.dir.path())
                .output(),
        )
        .await
        .context("kubectl took longer than 30 s")??;
        if !output.status.success() {
            bail!(
                "kubectl {args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8(output.stdout)?)
    }

    fn file(&self, name: &str, content: &str) -> Result<String> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, content)?;
        Ok(path.display().to_string())
    }
}

fn kubectl_available() -> bool {
    std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn kubectl_drives_the_fake_server() -> Result<()> {
    if !kubectl_available() {
        eprintln!("kubectl is not on the PATH: skipping the client-go conformance test");
        return Ok(());
    }
    let server = FakeApiServer::start().await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, server.kubeconfig())?;
    let kubectl = Kubectl {
        kubeconfig: kubeconfig.display().to_string(),
        dir,
    };

    let node = kubectl.file("node.yaml", NODE)?;
    assert_eq!(
        kubectl
            .run(&["apply", "--validate=false", "-f", &node])
            .await?
            .trim(),
        "node/n1 created"
    );
    let check = kubectl.file("hc.yaml", CHECK)?;
    assert_eq!(
        kubectl
            .run(&["apply", "--validate=false", "-f", &check])
            .await?
            .trim(),
        "healthcheck.vigil.dev/web created"
    );
    let applied = kubectl
        .run(&["apply", "--validate=false", "--server-side", "-f", &check])
        .await?;
    assert_eq!(
        applied.trim(),
        "healthcheck.vigil.dev/web serverside-applied"
    );

    let names = kubectl
        .run(&[
            "get",
            "hc",
            "-A",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .await?;
    assert_eq!(names, "web");

    kubectl
        .run(&["label", "node", "n1", "zone=b", "--overwrite"])
        .await?;
    let selected = kubectl
        .run(&["get", "nodes", "-l", "zone=b", "-o", "name"])
        .await?;
    assert_eq!(selected.trim(), "node/n1");

    let ready = r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#;
    kubectl
        .run(&[
            "patch",
            "node",
            "n1",
            "--subresource=status",
            "--type=strategic",
            "-p",
            ready,
        ])
        .await?;
    let waited = kubectl
        .run(&["wait", "--for=condition=Ready", "node/n1", "--timeout=10s"])
        .await?;
    assert_eq!(waited.trim(), "node/n1 condition met");

    let json: Value =
        serde_json::from_str(&kubectl.run(&["get", "node", "n1", "-o", "json"]).await?)?;
    assert_eq!(json["metadata"]["labels"]["zone"], "b");
    assert_eq!(json["status"]["conditions"][0]["type"], "Ready");

    kubectl.run(&["delete", "hc", "web", "-n", "shop"]).await?;
    assert!(
        server
            .get("vigil.dev/v1alpha1", "healthchecks", "shop", "web")
            .is_none()
    );
    assert!(
        server.count(Verb::Patch, "healthchecks") >= 1,
        "server-side apply arrived as a PATCH"
    );
    Ok(())
}
