//! Helpers for end-to-end tests over the real `vigil-federator` and `vigil-agent` binaries:
//! locating them, starting them with logs kept for the failure message, free loopback ports,
//! and waiting on a condition with a deadline (never sleeping as synchronisation).

pub mod browser;
pub mod kafka;
pub mod loadgen;
pub mod proxy;

use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The cargo target profile folder the test binary runs from (`target/debug`).
pub fn target_dir() -> PathBuf {
    // Tests run from target/<profile>/deps/, binaries (the benchmarks) from target/<profile>/.
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("executable folder");
    let profile = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("profile folder")
    } else {
        dir
    };
    profile.to_owned()
}

/// Path of a workspace binary; `cargo test --workspace` builds both.
pub fn bin(name: &str) -> PathBuf {
    let path = target_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing; build it with `cargo build -p {name}` (cargo test --workspace does)",
        path.display()
    );
    path
}

/// A program the test needs, or a failure naming the Debian package that brings it.
pub fn require(path: &str, package: &str) -> PathBuf {
    let p = PathBuf::from(path);
    assert!(
        p.is_file(),
        "{path} is missing: install the Debian package {package} (`apt-get install {package}`; .ci/run does)"
    );
    p
}

/// The first arguments of `vigil-federator serve` on the given checks folder and addresses.
pub fn serve_args(checks: &Path, http: SocketAddr, grpc: SocketAddr) -> Vec<String> {
    vec![
        "serve".into(),
        "--checks".into(),
        checks.display().to_string(),
        "--listen".into(),
        http.to_string(),
        "--grpc-listen".into(),
        grpc.to_string(),
    ]
}

/// An HTTP server on loopback answering `ok` on /healthz.
pub async fn http_target() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve /healthz");
    });
    (addr, task)
}

/// Debian's Alertmanager on a free loopback port, with one null receiver and no gossip port;
/// its files under `dir/alertmanager`.
pub fn start_alertmanager(dir: &Path) -> (SocketAddr, Proc) {
    let program = require(
        "/usr/bin/prometheus-alertmanager",
        "prometheus-alertmanager",
    );
    let work = dir.join("alertmanager");
    std::fs::create_dir(&work).expect("alertmanager folder");
    std::fs::write(
        work.join("am.yml"),
        "route: {receiver: 'null'}\nreceivers: [{name: 'null'}]\n",
    )
    .expect("alertmanager config");
    let addr = free_addr();
    let proc = Proc::start(
        "alertmanager",
        &program,
        &[
            format!("--config.file={}", work.join("am.yml").display()),
            format!("--storage.path={}", work.join("data").display()),
            format!("--web.listen-address={addr}"),
            "--cluster.listen-address=".into(),
        ],
        dir,
    );
    (addr, proc)
}

/// A loopback address with a port nobody listens on right now, for a server started next.
///
/// The port comes from below the kernel's ephemeral range (`ip_local_port_range`, 32768–60999
/// by default), not from a `:0` bind: an ephemeral port, once freed, can be handed to any
/// outgoing connection another test opens before the server binds it (CI saw "Address already
/// in use" that way). Ports below the range are taken only by explicit binds, and a
/// process-wide counter, started at an offset of the process id, keeps picks apart.
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // (first port, how many, where this process starts), read once.
    static RANGE: std::sync::OnceLock<(u32, u32, u32)> = std::sync::OnceLock::new();
    let (low, span, start) = *RANGE.get_or_init(|| {
        let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
            .unwrap_or(32_768);
        let low = ephemeral_low.saturating_sub(12_000).max(1_024);
        let span = ephemeral_low - low;
        (low, span, std::process::id().wrapping_mul(97) % span)
    });
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < span, "no free loopback port left below {}", low + span);
        let port = (low + (start + n) % span) as u16;
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr().expect("local addr");
        }
    }
}

/// A loopback address that refuses connections for the rest of this test process: a socket is
/// bound to it and never listens, so no server started later (on a [`free_addr`]) can take the
/// port and make a check that must fail pass.
pub fn refusing_addr() -> SocketAddr {
    use std::os::fd::IntoRawFd;
    static ADDR: std::sync::OnceLock<SocketAddr> = std::sync::OnceLock::new();
    *ADDR.get_or_init(|| {
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket
            .bind("127.0.0.1:0".parse().expect("loopback"))
            .expect("bind 127.0.0.1:0");
        let addr = socket.local_addr().expect("local addr");
        // Held until the process exits.
        let _ = socket.into_raw_fd();
        addr
    })
}

/// A child process that is killed when dropped; its stderr goes to a log file.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Proc {
    pub fn start(name: &str, program: &Path, args: &[String], log_dir: &Path) -> Self {
        Self::start_in(name, program, args, log_dir, Path::new("."))
    }

    /// Like [`Proc::start`], with `cwd` as the working folder.
    pub fn start_in(
        name: &str,
        program: &Path,
        args: &[String],
        log_dir: &Path,
        cwd: &Path,
    ) -> Self {
        Self::start_full(name, program, args, log_dir, cwd, &[])
    }

    /// Like [`Proc::start_in`], with extra environment variables for the child (they may
    /// override the default `RUST_LOG=info`).
    pub fn start_full(
        name: &str,
        program: &Path,
        args: &[String],
        log_dir: &Path,
        cwd: &Path,
        env: &[(&str, &str)],
    ) -> Self {
        let log = log_dir.join(format!("{name}.log"));
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let child = Command::new(program)
            .args(args)
            .current_dir(cwd)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        Self {
            name: name.to_owned(),
            child,
            log,
        }
    }

    pub fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits i32"))
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(self.pid(), sig).expect("signal the child");
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit on its own.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let name = self.name.clone();
        wait_for(&format!("{name} to exit"), within, || {
            let status = self.child.try_wait().expect("try_wait");
            async move { status }
        })
        .await
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- {} log ({}) ----\n{}",
                self.name,
                self.log.display(),
                self.log_text()
            );
        }
    }
}

/// Polls `probe` every 50 ms until it yields `Some`, or panics naming `what` after `within`.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// GET a JSON document; `None` while the server is not answering.
pub async fn get_json(client: &reqwest::Client, url: &str) -> Option<serde_json::Value> {
    let resp = client
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json().await.ok()
}

/// Every JSON line of a results file (a torn last line, from a crash mid-write, is skipped).
pub fn read_results(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The value of the first sample of `name` (e.g. `vigil_results_acked_total`) whose labels
/// contain `label_text`, in a Prometheus text exposition.
pub fn metric_value(text: &str, name: &str, label_text: &str) -> Option<u64> {
    text.lines()
        .find(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') && rest.contains(label_text))
        })?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}
