//! Shared by the federator's integration tests: an in-process federator on loopback port 0,
//! its checks from a YAML string, stopped when dropped.

#![allow(dead_code)] // each test file uses its own part

pub mod am;

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
            results: Some(results.clone()),
            kafka: None,
            kubernetes: None,
            cluster: "test".into(),
            embedded_agent: false,
            node: "n".into(),
            shutdown_grace: Duration::from_secs(2),
            alertmanagers: Vec::new(),
            alert_resend_interval: Duration::from_secs(60),
            external_url: None,
            agent_silent_after: Duration::from_secs(120),
            deep_check_lease: Duration::from_secs(120),
            upstream: None,
            cluster_silent_after: Duration::from_secs(60),
            tls: None,
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

/// The Hello of a fake agent on node `node-1` that runs tcp probes.
pub fn hello(agent_id: &str) -> vigil_proto::AgentMessage {
    use vigil_proto::{AgentMessage, Hello, agent_message};
    AgentMessage {
        msg: Some(agent_message::Msg::Hello(Hello {
            agent_id: agent_id.into(),
            node: "node-1".into(),
            capabilities: vec!["probe/tcp".into()],
            ..Default::default()
        })),
    }
}

/// A ResultBatch message carrying `results`.
pub fn batch_of(results: Vec<vigil_proto::ProbeResult>) -> vigil_proto::AgentMessage {
    use vigil_proto::{AgentMessage, ResultBatch, agent_message};
    AgentMessage {
        msg: Some(agent_message::Msg::Results(ResultBatch {
            results,
            agent_id: String::new(),
            batch_seq: 0,
        })),
    }
}

/// Opens a Connect stream to `grpc` as fake agent `agent_id` (Hello already sent): the sender
/// for further messages and the federator's side of the stream.
pub async fn open_stream(
    grpc: SocketAddr,
    agent_id: &str,
) -> (
    tokio::sync::mpsc::Sender<vigil_proto::AgentMessage>,
    tonic::Streaming<vigil_proto::FederatorMessage>,
) {
    let channel = tonic::transport::Channel::from_shared(format!("http://{grpc}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tx.send(hello(agent_id)).await.unwrap();
    let inbound = vigil_proto::federator_client::FederatorClient::new(channel)
        .connect(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    (tx, inbound)
}
