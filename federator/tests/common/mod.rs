//! Shared by the federator's integration tests: an in-process federator on loopback port 0,
//! its checks from a YAML string, stopped when dropped.

#![allow(dead_code)] // each test file uses its own part

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use vigil_federator::app;

pub struct Fed {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub results: PathBuf,
    _dir: tempfile::TempDir,
    cancel: CancellationToken,
}

impl Drop for Fed {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Fed {
    /// Starts a `serve`-mode federator (no embedded agent) with `checks` as its only file;
    /// `tune` may change any option before the start.
    pub async fn start(checks: &str, tune: impl FnOnce(&mut app::Options)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let checks_dir = dir.path().join("checks");
        std::fs::create_dir(&checks_dir).unwrap();
        std::fs::write(checks_dir.join("checks.yaml"), checks).unwrap();
        let results = dir.path().join("results.jsonl");
        let mut options = app::Options {
            checks: checks_dir,
            listen: "127.0.0.1:0".parse().unwrap(),
            grpc_listen: "127.0.0.1:0".parse().unwrap(),
            results: results.clone(),
            cluster: "test".into(),
            embedded_agent: false,
            node: "n".into(),
            shutdown_grace: Duration::from_secs(2),
            alertmanagers: Vec::new(),
            alert_resend_interval: Duration::from_secs(60),
            external_url: None,
        };
        tune(&mut options);
        let cancel = CancellationToken::new();
        let running = app::start(options, cancel.clone()).await.unwrap();
        Self {
            grpc: running.grpc_addr,
            http: running.http_addr,
            results,
            _dir: dir,
            cancel,
        }
    }
}
