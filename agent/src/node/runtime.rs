//! `node/runtime`: the container runtime's socket (containerd, CRI-O) accepts connections;
//! skipped with a reason when no socket exists (not a Kubernetes node).

use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use super::config::Runtime as Config;
use super::{Diagnostic, Finding, HostPaths, problem};

/// The result's target: a node has one runtime, whichever socket it uses.
const TARGET: &str = "runtime";

pub struct RuntimeDiagnostic {
    config: Config,
}

impl RuntimeDiagnostic {
    pub fn new(config: Config) -> Self {
        Self { config }
    }

    pub fn sockets(&self) -> Vec<PathBuf> {
        self.config.sockets.clone()
    }
}

impl Diagnostic for RuntimeDiagnostic {
    fn name(&self) -> &'static str {
        "runtime"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn problems(&self) -> Vec<String> {
        vec![problem::CONTAINER_RUNTIME_UNHEALTHY.to_owned()]
    }

    fn run(&mut self, paths: &HostPaths) -> Vec<Finding> {
        let found = self
            .config
            .sockets
            .iter()
            .map(|s| (s, paths.host(s)))
            .find(|(_, at)| at.symlink_metadata().is_ok());
        let Some((host_path, at)) = found else {
            let list: Vec<String> = self
                .config
                .sockets
                .iter()
                .map(|s| s.display().to_string())
                .collect();
            return vec![if self.config.required {
                Finding::fail(
                    TARGET,
                    problem::CONTAINER_RUNTIME_UNHEALTHY,
                    format!(
                        "no container runtime socket at {} under {}",
                        list.join(" or "),
                        paths.root.display()
                    ),
                )
            } else {
                Finding::skipped(
                    TARGET,
                    format!(
                        "not a Kubernetes node: no container runtime socket at {}",
                        list.join(" or ")
                    ),
                )
            }];
        };
        let shown = host_path.display().to_string();
        let f = match UnixStream::connect(&at) {
            Ok(_) => Finding::ok(TARGET).summary(format!("{shown} accepts connections")),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Finding::error(
                TARGET,
                format!(
                    "permission denied connecting to {} ({e}); run the agent as root or in the socket's group, or disable runtime",
                    at.display()
                ),
            ),
            Err(e) => Finding::fail(
                TARGET,
                problem::CONTAINER_RUNTIME_UNHEALTHY,
                format!(
                    "container runtime socket {} does not accept connections: {e}",
                    at.display()
                ),
            ),
        };
        vec![f.detail("socket", shown)]
    }
}
