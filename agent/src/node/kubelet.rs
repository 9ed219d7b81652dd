//! `node/kubelet`: the kubelet's `/healthz` (plain HTTP, default `127.0.0.1:10248`); skipped
//! with a reason when this is not a Kubernetes node.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::config::Kubelet as Config;
use super::{Diagnostic, Finding, HostPaths, problem};

/// Most bytes of an answer read.
const MAX_ANSWER: u64 = 16 * 1024;

pub struct KubeletDiagnostic {
    config: Config,
    /// The runtime sockets, to tell a Kubernetes node from a laptop.
    sockets: Vec<PathBuf>,
}

impl KubeletDiagnostic {
    pub fn new(config: Config, sockets: Vec<PathBuf>) -> Self {
        Self { config, sockets }
    }
}

/// `(host:port, path)` of an `http://` URL, or what is wrong with it.
pub fn parse_url(url: &str) -> Result<(String, String), String> {
    let u = url::Url::parse(url).map_err(|e| {
        format!("{url:?} is not a URL ({e}); write e.g. http://127.0.0.1:10248/healthz")
    })?;
    if u.scheme() != "http" {
        return Err(format!(
            "{url:?} uses {}; only http:// is supported (the kubelet's healthz port is plain HTTP)",
            u.scheme()
        ));
    }
    let host = u.host_str().ok_or_else(|| format!("{url:?} has no host"))?;
    let port = u.port_or_known_default().unwrap_or(80);
    let mut path = u.path().to_owned();
    if let Some(q) = u.query() {
        path.push('?');
        path.push_str(q);
    }
    Ok((format!("{host}:{port}"), path))
}

/// Whether the host looks like a Kubernetes node: `/var/lib/kubelet` or a runtime socket.
pub fn is_kubernetes_node(paths: &HostPaths, sockets: &[PathBuf]) -> bool {
    paths.host(Path::new("/var/lib/kubelet")).is_dir()
        || sockets.iter().any(|s| paths.host(s).exists())
}

enum Answer {
    Status(u16, String),
    Refused(std::io::Error),
    Failed(String),
}

fn get(addr: &str, path: &str, host: &str, timeout: Duration) -> Answer {
    let deadline = Instant::now() + timeout;
    let addrs: Vec<SocketAddr> = match addr.to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => return Answer::Failed(format!("cannot resolve {addr}: {e}")),
    };
    let Some(sa) = addrs.first() else {
        return Answer::Failed(format!("{addr} resolves to no address"));
    };
    let mut stream = match TcpStream::connect_timeout(sa, timeout) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Answer::Refused(e),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            return Answer::Failed(format!(
                "no connection to {addr} within {}",
                humantime::format_duration(timeout)
            ));
        }
        Err(e) => return Answer::Failed(format!("connecting to {addr}: {e}")),
    };
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let _ = stream.set_read_timeout(Some(left));
    let _ = stream.set_write_timeout(Some(left));
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: vigil-agent\r\nConnection: close\r\n\r\n"
    );
    if let Err(e) = stream.write_all(req.as_bytes()) {
        return Answer::Failed(format!("sending the request to {addr}: {e}"));
    }
    let mut buf = Vec::new();
    if let Err(e) = stream.take(MAX_ANSWER).read_to_end(&mut buf) {
        let what = if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            format!(
                "no answer from {addr} within {}",
                humantime::format_duration(timeout)
            )
        } else {
            format!("reading the answer from {addr}: {e}")
        };
        if buf.is_empty() {
            return Answer::Failed(what);
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse::<u16>().ok());
    match status {
        Some(code) => Answer::Status(code, body.trim().chars().take(200).collect()),
        None => Answer::Failed(format!(
            "{addr} answered something that is not HTTP: {:?}",
            super::read::shorten(&text)
        )),
    }
}

impl Diagnostic for KubeletDiagnostic {
    fn name(&self) -> &'static str {
        "kubelet"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn problems(&self) -> Vec<String> {
        vec![problem::KUBELET_UNHEALTHY.to_owned()]
    }

    fn run(&mut self, paths: &HostPaths) -> Vec<Finding> {
        let url = self.config.url.clone();
        let (addr, path) = match parse_url(&url) {
            Ok(v) => v,
            Err(e) => return vec![Finding::error(url, e)],
        };
        let host = addr
            .rsplit_once(':')
            .map_or(addr.as_str(), |(h, _)| h)
            .to_owned();
        let f = match get(&addr, &path, &host, self.config.timeout) {
            Answer::Status(200, _) => Finding::ok(&url).summary(format!("{url} answered 200")),
            Answer::Status(code, body) => Finding::fail(
                &url,
                problem::KUBELET_UNHEALTHY,
                format!("kubelet {url} answered {code}: {body:?}"),
            )
            .value("status_code", f64::from(code)),
            Answer::Refused(e) => {
                if self.config.required || is_kubernetes_node(paths, &self.sockets) {
                    Finding::fail(
                        &url,
                        problem::KUBELET_UNHEALTHY,
                        format!("kubelet not listening on {addr} ({e})"),
                    )
                } else {
                    Finding::skipped(
                        &url,
                        format!(
                            "not a Kubernetes node: nothing listens on {addr} and {} holds neither /var/lib/kubelet nor a container runtime socket",
                            paths.root.display()
                        ),
                    )
                }
            }
            Answer::Failed(why) => Finding::fail(
                &url,
                problem::KUBELET_UNHEALTHY,
                format!("kubelet {url}: {why}"),
            ),
        };
        vec![f]
    }
}
