//! Node diagnostics (node-problem-detector's job): one diagnostic per file under `node/`, each
//! reading from configurable host paths and producing named findings that become `node/<name>`
//! results in the same outbox as probe results.
//!
//! A diagnostic is synchronous and cheap (a few `/proc` reads); [`runner`] runs each one on its
//! own interval in the blocking pool under a time limit, so a hung filesystem stalls only the
//! diagnostic that touched it.

pub mod clock;
pub mod config;
pub mod conntrack;
pub mod disk;
pub mod fds;
pub mod kmsg;
pub mod kubelet;
pub mod load;
pub mod memory;
pub mod mounts;
pub mod pids;
pub mod psi;
pub mod read;
pub mod readonly_fs;
pub mod runner;
pub mod runtime;

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use vigil_proto::Outcome;

pub use clock::FederatorClock;
pub use config::{ConfigError, NodeDiagnostics, Settings};

/// The prefix of every node diagnostic's check id: `node/memory`, `node/disk`, ...
pub const CHECK_PREFIX: &str = "node/";

/// The problem classes a failing finding names in `details["problem"]`; each is meant to be one
/// Kubernetes NodeCondition type (kernel-log patterns may name their own).
pub mod problem {
    pub const MEMORY_PRESSURE: &str = "VigilMemoryPressure";
    pub const DISK_PRESSURE: &str = "VigilDiskPressure";
    pub const PID_PRESSURE: &str = "VigilPIDPressure";
    pub const CPU_PRESSURE: &str = "VigilCPUPressure";
    pub const IO_PRESSURE: &str = "VigilIOPressure";
    pub const FD_PRESSURE: &str = "VigilFDPressure";
    pub const CONNTRACK_FULL: &str = "VigilConntrackFull";
    pub const KERNEL_DEADLOCK: &str = "VigilKernelDeadlock";
    pub const READONLY_FILESYSTEM: &str = "VigilReadonlyFilesystem";
    pub const FILESYSTEM_ERROR: &str = "VigilFilesystemError";
    pub const OOM_KILLING: &str = "VigilOOMKilling";
    pub const NETWORK_LINK_DOWN: &str = "VigilNetworkLinkDown";
    pub const CLOCK_SKEW: &str = "VigilClockSkew";
    pub const KUBELET_UNHEALTHY: &str = "VigilKubeletUnhealthy";
    pub const CONTAINER_RUNTIME_UNHEALTHY: &str = "VigilContainerRuntimeUnhealthy";
}

/// Where the host's files are. In a DaemonSet the host's `/` is mounted at `/host`, so these
/// are `/host/proc`, `/host/sys`, `/host/dev/kmsg`, and host paths such as mount points and
/// sockets are looked up under `root`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPaths {
    pub root: PathBuf,
    pub proc: PathBuf,
    pub sys: PathBuf,
    pub kmsg: PathBuf,
}

impl HostPaths {
    /// `<root>/proc`, `<root>/sys` and `<root>/dev/kmsg`.
    pub fn under(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Self {
            proc: root.join("proc"),
            sys: root.join("sys"),
            kmsg: root.join("dev/kmsg"),
            root,
        }
    }

    /// A file under the proc root, e.g. `proc("meminfo")`.
    pub fn proc(&self, rel: &str) -> PathBuf {
        self.proc.join(rel)
    }

    /// A file under the sys root.
    pub fn sys(&self, rel: &str) -> PathBuf {
        self.sys.join(rel)
    }

    /// Where the host path `host` (absolute, as the host sees it) is for this process: under
    /// `root`, with absolute symlinks (e.g. `/var/run -> /run`) resolved inside `root` rather
    /// than in this container.
    pub fn host(&self, host: &Path) -> PathBuf {
        if self.root == Path::new("/") {
            return host.to_owned();
        }
        resolve_in_root(&self.root, host)
    }
}

/// Follows `path` component by component under `root`, keeping absolute symlink targets inside
/// `root` (at most 40 links, like the kernel); a missing component ends the walk.
fn resolve_in_root(root: &Path, path: &Path) -> PathBuf {
    let mut pending: Vec<std::ffi::OsString> = path
        .components()
        .rev()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_owned()),
            _ => None,
        })
        .collect();
    let mut at = root.to_owned();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == ".." {
            if at != root {
                at.pop();
            }
            continue;
        }
        let next = at.join(&part);
        match std::fs::read_link(&next) {
            Ok(target) if links < 40 => {
                links += 1;
                if target.is_absolute() {
                    at = root.to_owned();
                }
                for c in target.components().rev() {
                    if let Component::Normal(s) = c {
                        pending.push(s.to_owned());
                    } else if c == Component::ParentDir {
                        pending.push("..".into());
                    }
                }
            }
            _ => at = next,
        }
    }
    at
}

/// The enabled diagnostics of `config`, in a stable order; the clock diagnostic compares with
/// `federator` (the offsets the stream client records).
pub fn build(
    config: &NodeDiagnostics,
    federator: std::sync::Arc<FederatorClock>,
) -> Vec<Box<dyn Diagnostic>> {
    let c = config;
    let mut v: Vec<Box<dyn Diagnostic>> = Vec::new();
    if c.memory.enabled {
        v.push(Box::new(memory::MemoryDiagnostic::new(c.memory.clone())));
    }
    if c.disk.enabled {
        v.push(Box::new(disk::DiskDiagnostic::new(c.disk.clone())));
    }
    if c.readonly_filesystem.enabled {
        v.push(Box::new(readonly_fs::ReadonlyFsDiagnostic::new(
            c.readonly_filesystem.clone(),
            c.disk.ignore_fs_types.clone(),
        )));
    }
    if c.pids.enabled {
        v.push(Box::new(pids::PidsDiagnostic::new(c.pids.clone())));
    }
    if c.load.enabled {
        v.push(Box::new(load::LoadDiagnostic::new(c.load.clone())));
    }
    if c.psi.enabled {
        v.push(Box::new(psi::PsiDiagnostic::new(c.psi.clone())));
    }
    if c.fds.enabled {
        v.push(Box::new(fds::FdsDiagnostic::new(c.fds.clone())));
    }
    if c.conntrack.enabled {
        v.push(Box::new(conntrack::ConntrackDiagnostic::new(
            c.conntrack.clone(),
        )));
    }
    if c.kmsg.enabled {
        v.push(Box::new(kmsg::KmsgDiagnostic::new(c.kmsg.clone())));
    }
    if c.clock.enabled {
        v.push(Box::new(clock::ClockDiagnostic::new(
            c.clock.clone(),
            Box::new(clock::Kernel),
            federator,
        )));
    }
    if c.kubelet.enabled {
        v.push(Box::new(kubelet::KubeletDiagnostic::new(
            c.kubelet.clone(),
            c.runtime.sockets.clone(),
        )));
    }
    if c.runtime.enabled {
        v.push(Box::new(runtime::RuntimeDiagnostic::new(c.runtime.clone())));
    }
    v
}

/// One diagnostic: reads what it needs and says what it found. It never panics and never
/// blocks for long; a file it cannot read becomes an ERROR finding naming the file.
pub trait Diagnostic: Send {
    /// The check id is `node/<name>`.
    fn name(&self) -> &'static str;
    /// How often it runs.
    fn interval(&self) -> Duration;
    /// One pass. Healthy targets give SUCCESS findings so that a cleared problem clears.
    fn run(&mut self, paths: &HostPaths) -> Vec<Finding>;
    /// The problem classes it can report, for the `vigil_node_problem` gauges.
    fn problems(&self) -> Vec<String>;
}

/// What a diagnostic found about one target.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    /// What was measured: a mount point, `memory`, a kernel-log pattern name, ...
    pub target: String,
    pub outcome: Outcome,
    /// The cause with numbers; empty on plain success.
    pub reason: String,
    /// The problem class (NodeCondition type) while failing.
    pub problem: Option<String>,
    /// A kernel-log match: an event, not a state.
    pub event: bool,
    pub details: BTreeMap<String, String>,
    pub values: BTreeMap<String, f64>,
}

impl Finding {
    pub fn ok(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            outcome: Outcome::Success,
            reason: String::new(),
            problem: None,
            event: false,
            details: BTreeMap::new(),
            values: BTreeMap::new(),
        }
    }

    /// A problem of class `problem`.
    pub fn fail(target: impl Into<String>, problem: &str, reason: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Failure,
            reason: reason.into(),
            problem: Some(problem.to_owned()),
            ..Self::ok(target)
        }
    }

    /// The diagnostic could not tell (unreadable file, garbage): not a problem of the node.
    pub fn error(target: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Error,
            reason: reason.into(),
            ..Self::ok(target)
        }
    }

    /// Nothing to check here (not a Kubernetes node, no conntrack module): SUCCESS with
    /// `details["skipped"]` saying why, so it never fails on a laptop.
    pub fn skipped(target: impl Into<String>, why: impl Into<String>) -> Self {
        Self::ok(target).detail("skipped", why)
    }

    /// What a healthy pass measured, in words (`details["summary"]`; a result's reason stays
    /// empty on success).
    pub fn summary(self, text: impl Into<String>) -> Self {
        self.detail("summary", text)
    }

    pub fn detail(mut self, key: &str, value: impl Into<String>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    pub fn value(mut self, key: &str, value: f64) -> Self {
        self.values.insert(key.to_owned(), value);
        self
    }

    pub fn is_failure(&self) -> bool {
        self.outcome == Outcome::Failure
    }
}

/// `245 MiB`, `7.8 GiB`: binary units with one decimal above KiB.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else if v >= 100.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A percentage with one decimal, without a trailing `.0` (`5%`, `3.1%`).
pub fn pct(v: f64) -> String {
    let s = format!("{v:.1}");
    format!("{}%", s.strip_suffix(".0").unwrap_or(&s))
}

/// `used / total` in percent; 0 when `total` is 0.
pub fn percent(used: f64, total: f64) -> f64 {
    if total > 0.0 {
        used / total * 100.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_units_read_naturally() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(245 * 1024 * 1024), "245 MiB");
        assert_eq!(human_bytes(7_800 * 1024 * 1024), "7.6 GiB");
        assert_eq!(pct(5.0), "5%");
        assert_eq!(pct(3.06), "3.1%");
        assert_eq!(percent(1.0, 0.0), 0.0);
    }

    #[test]
    fn host_paths_resolve_absolute_links_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("run/crio")).unwrap();
        std::fs::create_dir_all(dir.path().join("var")).unwrap();
        std::os::unix::fs::symlink("/run", dir.path().join("var/run")).unwrap();
        let paths = HostPaths::under(dir.path());
        assert_eq!(
            paths.host(Path::new("/var/run/crio/crio.sock")),
            dir.path().join("run/crio/crio.sock")
        );
        // Relative links stay relative; missing parts just end the walk.
        std::os::unix::fs::symlink("../run", dir.path().join("var/run2")).unwrap();
        assert_eq!(
            paths.host(Path::new("/var/run2/crio")),
            dir.path().join("run/crio")
        );
        assert_eq!(paths.host(Path::new("/nope/x")), dir.path().join("nope/x"));
        assert_eq!(
            HostPaths::under("/").host(Path::new("/var/run")),
            PathBuf::from("/var/run")
        );
    }
}
