//! The node diagnostics that talk to services rather than files: the clock (adjtimex and the
//! federator's offset), the kubelet's healthz and the container runtime's socket; each firing,
//! clearing, and skipped off Kubernetes.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[path = "node_fixture/host.rs"]
mod host;

use host::*;
use vigil_agent::node::clock::{ClockDiagnostic, FederatorClock, TimeSource, Timex};
use vigil_agent::node::kubelet::KubeletDiagnostic;
use vigil_agent::node::problem;
use vigil_agent::node::runtime::RuntimeDiagnostic;

struct FakeTime(std::io::Result<Timex>);

impl TimeSource for FakeTime {
    fn adjtimex(&self) -> std::io::Result<Timex> {
        match &self.0 {
            Ok(t) => Ok(*t),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        }
    }
}

fn timex(status: i32, maxerror_us: i64) -> Timex {
    Timex {
        state: 0,
        status,
        maxerror_us,
        esterror_us: maxerror_us / 2,
    }
}

#[test]
fn clock_skew_fires_on_kernel_error_and_federator_offset() {
    let h = Host::new();
    let fed = Arc::new(FederatorClock::default());
    let clock = |cfg, t| ClockDiagnostic::new(cfg, Box::new(FakeTime(t)), Arc::clone(&fed));
    let mut d = clock(defaults().clock, Ok(timex(0x2001, 20_000)));
    let f = h.run(&mut d);
    assert_ok(&f[0]);
    assert_eq!(f[0].target, "kernel");
    assert_eq!(f[1].target, "federator");
    assert_eq!(
        f[1].details["skipped"],
        "no clock sample from the federator yet"
    );
    // Synchronised, but the error bound is too large.
    let mut d = clock(defaults().clock, Ok(timex(0x2001, 3_000_000)));
    assert_fails(
        &h.run(&mut d)[0],
        problem::CLOCK_SKEW,
        "the kernel's maximum clock error is 3s (estimated 1s 500ms), above 1s",
    );
    // Unsynchronised: a failure only when required.
    let unsync = libc::STA_UNSYNC;
    let mut d = clock(defaults().clock, Ok(timex(unsync, 16_000_000)));
    let f = h.run(&mut d);
    assert_ok(&f[0]);
    assert_eq!(f[0].details["synchronised"], "false");
    let mut strict = defaults().clock;
    strict.require_sync = true;
    let mut d = clock(strict, Ok(timex(unsync, 16_000_000)));
    let f = h.run(&mut d);
    assert_eq!(f[0].problem.as_deref(), Some(problem::CLOCK_SKEW));
    assert!(f[0].reason.contains("STA_UNSYNC"), "{}", f[0].reason);
    // The federator's clock two seconds ahead: this node is behind.
    fed.record(2_000_000_000);
    let mut d = clock(defaults().clock, Ok(timex(0, 1000)));
    assert_fails(
        &h.run(&mut d)[1],
        problem::CLOCK_SKEW,
        "this node's clock is 2s behind the federator's, more than 500ms",
    );
    fed.record(-3_000_000);
    let f = h.run(&mut d);
    assert_ok(&f[1]);
    assert_eq!(f[1].values["federator_offset_seconds"], -0.003);
    let mut d = clock(
        defaults().clock,
        Err(std::io::Error::from_raw_os_error(libc::EPERM)),
    );
    assert_error(&h.run(&mut d)[0], &["adjtimex(2) failed"]);
}

/// Serves one canned HTTP answer per connection on 127.0.0.1 until dropped.
fn http_server(answer: &'static str) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/healthz", listener.local_addr().unwrap());
    let t = std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(answer.as_bytes());
        }
    });
    (url, t)
}

fn kubelet(url: &str, h: &Host) -> (KubeletDiagnostic, Vec<PathBuf>) {
    let mut cfg = defaults().kubelet;
    cfg.url = url.to_owned();
    cfg.timeout = Duration::from_secs(5);
    let sockets = defaults().runtime.sockets;
    let _ = h;
    (KubeletDiagnostic::new(cfg, sockets.clone()), sockets)
}

#[test]
fn kubelet_health_fires_clears_and_is_skipped_off_kubernetes() {
    let h = Host::new();
    let (url, t) = http_server("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    let (mut d, _) = kubelet(&url, &h);
    let f = h.one(&mut d);
    t.join().unwrap();
    assert_ok(&f);
    assert_eq!(f.target, url);

    let (url, t) = http_server("HTTP/1.1 500 Internal Server Error\r\n\r\n[-]syncloop failed");
    let (mut d, _) = kubelet(&url, &h);
    let f = h.one(&mut d);
    t.join().unwrap();
    assert_fails(
        &f,
        problem::KUBELET_UNHEALTHY,
        &format!("kubelet {url} answered 500: \"[-]syncloop failed\""),
    );

    let (url, t) = http_server("SSH-2.0-OpenSSH_9.2\r\n");
    let (mut d, _) = kubelet(&url, &h);
    let f = h.one(&mut d);
    t.join().unwrap();
    assert_eq!(f.problem.as_deref(), Some(problem::KUBELET_UNHEALTHY));
    assert!(f.reason.contains("not HTTP"), "{}", f.reason);

    // Nothing listens: skipped on a laptop, a failure on a Kubernetes node.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/healthz", l.local_addr().unwrap())
    };
    let (mut d, _) = kubelet(&closed, &h);
    let f = h.one(&mut d);
    assert_ok(&f);
    assert!(
        f.details["skipped"].starts_with("not a Kubernetes node"),
        "{f:#?}"
    );
    std::fs::create_dir_all(h.path("var/lib/kubelet")).unwrap();
    let f = h.one(&mut d);
    assert_eq!(
        f.problem.as_deref(),
        Some(problem::KUBELET_UNHEALTHY),
        "{f:#?}"
    );
    assert!(
        f.reason.starts_with("kubelet not listening on 127.0.0.1:"),
        "{}",
        f.reason
    );
}

#[test]
fn container_runtime_socket_fires_clears_and_is_skipped_without_one() {
    let h = Host::new();
    let mut d = RuntimeDiagnostic::new(defaults().runtime);
    let f = h.one(&mut d);
    assert_ok(&f);
    assert!(f.details["skipped"].contains("/run/containerd/containerd.sock"));
    // CRI-O's default path goes through the host's /var/run -> /run link, inside the root.
    std::fs::create_dir_all(h.path("run/crio")).unwrap();
    std::fs::create_dir_all(h.path("var")).unwrap();
    std::os::unix::fs::symlink("/run", h.path("var/run")).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(h.path("run/crio/crio.sock")).unwrap();
    let f = h.one(&mut d);
    assert_ok(&f);
    assert_eq!(f.details["socket"], "/var/run/crio/crio.sock");
    drop(listener); // the socket file stays; nobody accepts
    let f = h.one(&mut d);
    assert_eq!(
        f.problem.as_deref(),
        Some(problem::CONTAINER_RUNTIME_UNHEALTHY)
    );
    assert!(
        f.reason.contains("does not accept connections"),
        "{}",
        f.reason
    );
    let _listener = std::os::unix::net::UnixListener::bind({
        std::fs::remove_file(h.path("run/crio/crio.sock")).unwrap();
        h.path("run/crio/crio.sock")
    })
    .unwrap();
    assert_ok(&h.one(&mut d));
    // A required runtime without any socket fails.
    let mut cfg = defaults().runtime;
    cfg.required = true;
    cfg.sockets = vec![PathBuf::from("/nowhere.sock")];
    let f = h.one(&mut RuntimeDiagnostic::new(cfg));
    assert_eq!(
        f.problem.as_deref(),
        Some(problem::CONTAINER_RUNTIME_UNHEALTHY)
    );
}
