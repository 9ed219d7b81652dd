//! The global side of federation: clusters whose federators forward here (`--upstream` on
//! theirs). Each cluster has its own check definitions (from its `ClusterState`) and its own
//! state, so one cluster's results can never land in another's; and each is silent once nothing
//! has arrived from it for `--cluster-silent-after`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tonic::Status;
use vigil_proto::{ClusterAgent, ClusterCheck, ClusterState, Hello};

use crate::hub::now_unix_nanos;
use crate::metrics::Metrics;
use crate::state::CheckRules;

mod store;
pub use store::ClusterStore;

/// The Hello capability that marks a stream as a cluster link rather than an agent.
pub const CAPABILITY: &str = "federator/v1";

/// The ledger and metric name of a cluster's link (`cluster/<name>`).
pub fn link_id(cluster: &str) -> String {
    format!("cluster/{cluster}")
}

/// What a cluster link's peer proved about itself.
#[derive(Clone, Debug, Default)]
pub struct Peer {
    pub addr: Option<SocketAddr>,
    /// The verified client certificate's cluster name (its subject CN, else its first DNS
    /// name), or why none could be read from it.
    pub certificate: Option<Result<String, String>>,
}

/// The cluster a link speaks for: the name in its client certificate, never its own claim; a
/// link without a certificate only from a loopback address (local trials and tests).
pub fn link_identity(hello: &Hello, peer: &Peer) -> Result<String, Status> {
    match &peer.certificate {
        Some(Ok(name)) => {
            if !hello.cluster.is_empty() && hello.cluster != *name {
                return Err(Status::permission_denied(format!(
                    "this link's client certificate is for cluster {name:?} but its Hello says \
                     {:?}; a cluster federator forwards only under its certificate's name (set \
                     --cluster to {name:?} or issue it a certificate for {:?})",
                    hello.cluster, hello.cluster
                )));
            }
            Ok(name.clone())
        }
        Some(Err(why)) => Err(Status::unauthenticated(format!(
            "cannot read a cluster name from the link's client certificate: {why}; issue it with \
             the cluster name as subject CN (docs/federation.md)"
        ))),
        None if peer.addr.is_some_and(|a| a.ip().is_loopback()) => {
            if hello.cluster.is_empty() {
                return Err(Status::invalid_argument(
                    "a cluster link must name its cluster in Hello.cluster (--cluster NAME)",
                ));
            }
            Ok(hello.cluster.clone())
        }
        None => Err(Status::unauthenticated(format!(
            "cluster links from {} need TLS with a client certificate (plaintext links are taken \
             only from loopback addresses): start this federator with --tls-cert, --tls-key and \
             --tls-client-ca, and the cluster's with an https --upstream and --upstream-cert/--upstream-key",
            peer.addr
                .map_or_else(|| "an unknown address".to_owned(), |a| a.to_string())
        ))),
    }
}

/// The cluster name in a client certificate (DER): its subject CN, else its first DNS name.
pub fn certificate_cluster(der: &[u8]) -> Result<String, String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("not X.509: {e}"))?;
    if let Some(cn) = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
    {
        return Ok(cn.to_owned());
    }
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                return Ok((*dns).to_owned());
            }
        }
    }
    Err("it has neither a subject CN nor a DNS name".to_owned())
}

/// One forwarding cluster.
pub struct Remote {
    pub name: String,
    /// Its checks' state, under the rules its federator sent.
    pub store: ClusterStore,
    inner: Mutex<RemoteInner>,
}

#[derive(Default)]
struct RemoteInner {
    checks: Vec<ClusterCheck>,
    agents: Vec<ClusterAgent>,
    /// The link now open, if any: its id and the token that closes it.
    link: Option<(u64, CancellationToken)>,
    peer: String,
    last_seen_unix_nanos: i64,
    /// Whether VigilClusterSilent has been raised for the current silence.
    alerted: bool,
}

/// A cluster as the API shows it.
#[derive(Clone, Debug)]
pub struct RemoteView {
    pub name: String,
    pub connected: bool,
    pub silent: bool,
    pub last_seen_unix_nanos: i64,
    pub agents: usize,
    pub nodes: usize,
    pub peer: String,
}

impl Remote {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            store: ClusterStore::new(name),
            inner: Mutex::default(),
        }
    }

    /// Notes that something arrived from the cluster now.
    pub fn touch(&self) {
        self.inner.lock().unwrap().last_seen_unix_nanos = now_unix_nanos();
    }

    /// Takes the cluster's picture: its checks become the rules of its state.
    pub fn set_cluster_state(&self, s: ClusterState) {
        {
            // Heartbeats mostly repeat the picture: keep the one held (rebuilding it would
            // also scatter long-lived blocks among the results streaming in).
            let mut inner = self.inner.lock().unwrap();
            inner.last_seen_unix_nanos = now_unix_nanos();
            if inner.checks == s.checks && inner.agents == s.agents {
                return;
            }
        }
        self.store.set_rules(
            s.checks.iter().filter_map(|c| {
                let spec = c.spec.as_ref()?;
                Some((
                    spec.id.clone(),
                    CheckRules {
                        failure_threshold: c.failure_threshold.max(1),
                        success_threshold: c.success_threshold.max(1),
                        node_scoped: c.node_scoped,
                        stale_after: CheckRules::stale_after(Duration::from_millis(
                            spec.interval_ms,
                        )),
                    },
                ))
            }),
            s.agents
                .iter()
                .map(|a| (a.agent_id.as_str(), a.node.as_str())),
        );
        let mut inner = self.inner.lock().unwrap();
        inner.checks = s.checks;
        inner.agents = s.agents;
    }

    /// Runs `f` over the cluster's check definitions without copying them.
    pub fn with_checks<R>(&self, f: impl FnOnce(&[ClusterCheck]) -> R) -> R {
        f(&self.inner.lock().unwrap().checks)
    }

    pub fn agents(&self) -> Vec<ClusterAgent> {
        self.inner.lock().unwrap().agents.clone()
    }

    fn view(&self, silent_after: i64, now: i64) -> RemoteView {
        let inner = self.inner.lock().unwrap();
        let mut nodes: Vec<&str> = inner.agents.iter().map(|a| a.node.as_str()).collect();
        nodes.sort_unstable();
        nodes.dedup();
        RemoteView {
            name: self.name.clone(),
            connected: inner.link.is_some(),
            silent: now.saturating_sub(inner.last_seen_unix_nanos) >= silent_after,
            last_seen_unix_nanos: inner.last_seen_unix_nanos,
            agents: inner.agents.len(),
            nodes: nodes.len(),
            peer: inner.peer.clone(),
        }
    }
}

/// What [`Federation::silence`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterSilence {
    /// Nothing from the cluster since `last_seen_unix_nanos`, for longer than the grace period.
    Fire {
        cluster: String,
        last_seen_unix_nanos: i64,
    },
    /// Heard from again.
    Resolve { cluster: String },
}

/// Every cluster that has ever linked to this federator since it started.
pub struct Federation {
    clusters: Mutex<BTreeMap<String, Arc<Remote>>>,
    silent_after: Duration,
    next_link: std::sync::atomic::AtomicU64,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation")
            .field("silent_after", &self.silent_after)
            .finish_non_exhaustive()
    }
}

impl Federation {
    pub fn new(silent_after: Duration, metrics: Arc<Metrics>) -> Self {
        Self {
            clusters: Mutex::default(),
            silent_after,
            next_link: std::sync::atomic::AtomicU64::new(0),
            metrics,
        }
    }

    pub fn silent_after(&self) -> Duration {
        self.silent_after
    }

    /// Opens a link for `cluster`, closing an older link of the same cluster. Returns the
    /// cluster, the link id and a token cancelled when a newer link replaces this one.
    pub fn connect(&self, cluster: &str, peer: String) -> (Arc<Remote>, u64, CancellationToken) {
        let remote = {
            let mut clusters = self.clusters.lock().unwrap();
            Arc::clone(
                clusters
                    .entry(cluster.to_owned())
                    .or_insert_with(|| Arc::new(Remote::new(cluster))),
            )
        };
        let id = self
            .next_link
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let cancel = CancellationToken::new();
        {
            let mut inner = remote.inner.lock().unwrap();
            if let Some((_, old)) = inner.link.replace((id, cancel.clone())) {
                tracing::info!(%cluster, "cluster linked again; closing its older link");
                old.cancel();
            }
            inner.peer = peer;
            inner.last_seen_unix_nanos = now_unix_nanos();
        }
        self.export();
        (remote, id, cancel)
    }

    /// Forgets a link (only if it is still the cluster's current one).
    pub fn disconnect(&self, remote: &Remote, link: u64) {
        {
            let mut inner = remote.inner.lock().unwrap();
            if inner.link.as_ref().is_some_and(|(id, _)| *id == link) {
                inner.link = None;
            }
        }
        self.export();
    }

    pub fn get(&self, cluster: &str) -> Option<Arc<Remote>> {
        self.clusters.lock().unwrap().get(cluster).cloned()
    }

    /// The clusters, sorted by name.
    pub fn remotes(&self) -> Vec<Arc<Remote>> {
        self.clusters.lock().unwrap().values().cloned().collect()
    }

    fn silent_after_nanos(&self) -> i64 {
        i64::try_from(self.silent_after.as_nanos()).unwrap_or(i64::MAX)
    }

    /// A cluster as the API shows it, now.
    pub fn view(&self, remote: &Remote) -> RemoteView {
        remote.view(self.silent_after_nanos(), now_unix_nanos())
    }

    pub fn views(&self) -> Vec<RemoteView> {
        self.remotes().iter().map(|r| self.view(r)).collect()
    }

    /// Which clusters went silent, or came back, since the last look.
    pub fn silence(&self) -> Vec<ClusterSilence> {
        let after = self.silent_after_nanos();
        let now = now_unix_nanos();
        let mut changes = Vec::new();
        for remote in self.remotes() {
            let mut inner = remote.inner.lock().unwrap();
            let silent = now.saturating_sub(inner.last_seen_unix_nanos) >= after;
            if silent && !inner.alerted {
                inner.alerted = true;
                changes.push(ClusterSilence::Fire {
                    cluster: remote.name.clone(),
                    last_seen_unix_nanos: inner.last_seen_unix_nanos,
                });
            } else if !silent && inner.alerted {
                inner.alerted = false;
                changes.push(ClusterSilence::Resolve {
                    cluster: remote.name.clone(),
                });
            }
        }
        changes
    }

    /// `vigil_cluster_up` and `vigil_cluster_last_seen_seconds` per cluster.
    pub fn export(&self) {
        for v in self.views() {
            self.metrics
                .cluster_up
                .with_label_values(&[&v.name])
                .set(i64::from(v.connected && !v.silent));
            self.metrics
                .cluster_last_seen
                .with_label_values(&[&v.name])
                .set(v.last_seen_unix_nanos as f64 / 1e9);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(cluster: &str) -> Hello {
        Hello {
            agent_id: "federator/east".into(),
            node: "fed-0".into(),
            cluster: cluster.into(),
            capabilities: vec![CAPABILITY.into()],
            ..Default::default()
        }
    }

    fn addr(s: &str) -> Option<SocketAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn plaintext_links_only_from_loopback() {
        let local = Peer {
            addr: addr("127.0.0.1:5000"),
            certificate: None,
        };
        assert_eq!(link_identity(&hello("east"), &local).unwrap(), "east");
        let v6 = Peer {
            addr: addr("[::1]:5000"),
            certificate: None,
        };
        assert_eq!(link_identity(&hello("east"), &v6).unwrap(), "east");
        let err = link_identity(&hello(""), &local).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);

        let remote = Peer {
            addr: addr("10.1.2.3:5000"),
            certificate: None,
        };
        let err = link_identity(&hello("east"), &remote).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(err.message().contains("10.1.2.3:5000"), "{}", err.message());
        assert!(
            err.message().contains("--tls-client-ca"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn the_certificate_names_the_cluster_not_the_hello() {
        let peer = Peer {
            addr: addr("10.1.2.3:5000"),
            certificate: Some(Ok("east".into())),
        };
        assert_eq!(link_identity(&hello("east"), &peer).unwrap(), "east");
        assert_eq!(link_identity(&hello(""), &peer).unwrap(), "east");
        let err = link_identity(&hello("west"), &peer).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(err.message().contains("\"west\""), "{}", err.message());

        let unreadable = Peer {
            addr: addr("127.0.0.1:5000"),
            certificate: Some(Err("it has neither".into())),
        };
        let err = link_identity(&hello("east"), &unreadable).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }

    #[test]
    fn certificate_cluster_reads_cn_then_dns_name() {
        let mut params =
            rcgen::CertificateParams::new(vec!["east.clusters.example".into()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "east");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(certificate_cluster(cert.der()).unwrap(), "east");

        let mut params = rcgen::CertificateParams::new(vec!["west".into()]).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(certificate_cluster(cert.der()).unwrap(), "west");

        assert!(
            certificate_cluster(b"garbage")
                .unwrap_err()
                .contains("not X.509")
        );
    }

    #[test]
    fn silence_fires_once_and_resolves_when_heard_again() {
        let fed = Federation::new(Duration::from_millis(30), Arc::new(Metrics::new()));
        let (remote, link, _) = fed.connect("east", "127.0.0.1:1".into());
        assert!(fed.silence().is_empty());
        remote.inner.lock().unwrap().last_seen_unix_nanos -= 1_000_000_000;
        let fired = fed.silence();
        assert!(
            matches!(&fired[..], [ClusterSilence::Fire { cluster, .. }] if cluster == "east"),
            "{fired:?}"
        );
        assert!(fed.silence().is_empty(), "fires once");
        assert!(fed.views()[0].silent);
        remote.touch();
        assert_eq!(
            fed.silence(),
            [ClusterSilence::Resolve {
                cluster: "east".into()
            }]
        );
        fed.disconnect(&remote, link);
        assert!(!fed.views()[0].connected);
    }

    #[test]
    fn a_newer_link_replaces_the_older() {
        let fed = Federation::new(Duration::from_secs(30), Arc::new(Metrics::new()));
        let (remote, old, old_cancel) = fed.connect("east", "a".into());
        let (_, new, new_cancel) = fed.connect("east", "b".into());
        assert!(old_cancel.is_cancelled());
        fed.disconnect(&remote, old);
        assert!(
            fed.views()[0].connected,
            "the old link's end keeps the new one"
        );
        fed.disconnect(&remote, new);
        assert!(!fed.views()[0].connected);
        assert!(!new_cancel.is_cancelled());
    }
}
