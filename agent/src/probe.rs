//! Probes: one kind per file, behind one small trait. A probe never knows about intervals,
//! retries or timeouts; the scheduler owns time and wraps every attempt in its timeout.

pub mod dns;
pub mod grpc;
pub mod http;
pub mod icmp;
pub mod tcp;
pub mod tls;
pub mod tls_client;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use vigil_proto::{CheckSpec, check_spec};

/// The probe kinds this agent runs, as advertised in Hello (`probe/<kind>`).
pub const KINDS: &[&str] = &["http", "tcp", "grpc", "dns", "icmp", "tls"];

/// What one attempt found, before the scheduler turns it into a result.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    Success,
    /// The target answered wrongly or not at all (refused, bad status, no match).
    Failure(String),
    /// The probe could not be carried out as configured (bad TLS material, unsupported kind).
    Error(String),
}

/// One attempt in progress: the probe notes its current phase (so a timeout can say where it
/// stopped) and the details and measurements it has so far.
#[derive(Default)]
pub struct Attempt {
    inner: Mutex<AttemptNotes>,
    /// Connect to this address instead of resolving the host (deep checks try every address).
    pinned: Option<std::net::IpAddr>,
}

#[derive(Default, Debug, Clone)]
pub struct AttemptNotes {
    pub phase: &'static str,
    /// The proto's own map types, so the result takes them without copying.
    pub details: BTreeMap<String, String>,
    pub values: BTreeMap<String, f64>,
}

impl Attempt {
    /// An attempt whose [`connect`] goes to `ip` without resolving the host (the host is still
    /// used for SNI and the Host header).
    pub fn pinned_to(ip: std::net::IpAddr) -> Self {
        Self {
            pinned: Some(ip),
            ..Self::default()
        }
    }

    pub fn phase(&self, phase: &'static str) {
        self.inner.lock().unwrap().phase = phase;
    }

    pub fn detail(&self, key: &str, value: impl Into<String>) {
        self.inner
            .lock()
            .unwrap()
            .details
            .insert(key.to_owned(), value.into());
    }

    pub fn value(&self, key: &str, value: f64) {
        self.inner
            .lock()
            .unwrap()
            .values
            .insert(key.to_owned(), value);
    }

    pub fn notes(&self) -> AttemptNotes {
        self.inner.lock().unwrap().clone()
    }

    /// The notes, taken out of the attempt (no copy).
    pub fn into_notes(self) -> AttemptNotes {
        self.inner
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A check's probe, built once per assignment and run once per attempt.
pub trait Probe: Send + Sync {
    fn run<'a>(&'a self, attempt: &'a Attempt) -> BoxFuture<'a, Verdict>;
}

/// Builds the probe for a spec, compiling what can be compiled once (regexes, TLS config).
pub fn build(spec: &CheckSpec) -> Result<Arc<dyn Probe>, String> {
    match &spec.probe {
        Some(check_spec::Probe::Http(p)) => Ok(Arc::new(http::HttpProbe::new(p)?)),
        Some(check_spec::Probe::Tcp(p)) => Ok(Arc::new(tcp::TcpProbe::new(p)?)),
        Some(check_spec::Probe::Grpc(p)) => Ok(Arc::new(grpc::GrpcProbe::new(p)?)),
        Some(check_spec::Probe::Dns(p)) => Ok(Arc::new(dns::DnsProbe::new(p)?)),
        // Unanswered echoes count as lost shortly before the attempt's timeout.
        Some(check_spec::Probe::Icmp(p)) => Ok(Arc::new(
            icmp::IcmpProbe::new(p)?
                .with_reply_deadline(std::time::Duration::from_millis(spec.timeout_ms) * 9 / 10),
        )),
        Some(check_spec::Probe::Tls(p)) => Ok(Arc::new(tls::TlsProbe::new(p)?)),
        None => Err("the check has no probe".to_owned()),
    }
}

/// Capabilities for Hello.
pub fn capabilities() -> Vec<String> {
    KINDS.iter().map(|k| format!("probe/{k}")).collect()
}

/// A readable cause from an I/O error (`connection refused`, not `Os { code: 111, .. }`).
pub fn io_cause(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
        std::io::ErrorKind::ConnectionReset => "connection reset by peer".into(),
        std::io::ErrorKind::UnexpectedEof => "connection closed by peer".into(),
        _ => {
            let text = e.to_string();
            text.split(" (os error")
                .next()
                .unwrap_or(&text)
                .to_lowercase()
        }
    }
}

/// Resolves `host` and connects, noting the phases (`DNS lookup`, `connect`), `resolved_ip`,
/// `phase_resolve_seconds` and `phase_connect_seconds` on the attempt.
pub async fn connect(
    host: &str,
    port: u16,
    pref: IpPreference,
    attempt: &Attempt,
) -> Result<(tokio::net::TcpStream, SocketAddr), Verdict> {
    attempt.phase("DNS lookup");
    let t = std::time::Instant::now();
    let addr = match attempt.pinned {
        Some(ip) => SocketAddr::new(ip, port),
        None => resolve(host, port, pref).await.map_err(Verdict::Failure)?,
    };
    attempt.value("phase_resolve_seconds", t.elapsed().as_secs_f64());
    attempt.detail("resolved_ip", addr.ip().to_string());
    attempt.phase("connect");
    let t = std::time::Instant::now();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| Verdict::Failure(format!("connect to {addr} failed: {}", io_cause(&e))))?;
    let _ = tcp.set_nodelay(true);
    attempt.value("phase_connect_seconds", t.elapsed().as_secs_f64());
    Ok((tcp, addr))
}

/// Which address family a host name may resolve to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpPreference {
    Any,
    V4,
    V6,
}

/// Resolves `host` (a name or an IP literal, IPv6 with or without brackets) to one address.
pub async fn resolve(host: &str, port: u16, pref: IpPreference) -> Result<SocketAddr, String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("DNS lookup of {host} failed: {}", io_cause(&e)))?;
    let mut any = None;
    for a in addrs {
        match pref {
            IpPreference::Any => return Ok(a),
            IpPreference::V4 if a.is_ipv4() => return Ok(a),
            IpPreference::V6 if a.is_ipv6() => return Ok(a),
            _ => any = any.or(Some(a)),
        }
    }
    Err(match (pref, any) {
        (IpPreference::V4, Some(_)) => {
            format!("DNS lookup of {host} found no IPv4 address (ipPreference ip4)")
        }
        (IpPreference::V6, Some(_)) => {
            format!("DNS lookup of {host} found no IPv6 address (ipPreference ip6)")
        }
        _ => format!("DNS lookup of {host} found no address"),
    })
}
