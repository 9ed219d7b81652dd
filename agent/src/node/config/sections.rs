//! The sections of a `NodeDiagnostics` file, one struct per diagnostic with its documented
//! defaults, and the built-in filesystem ignore list and kernel-log patterns.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::node::problem;

macro_rules! section {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident : $ty:ty = $default:expr),* $(,)? } interval $interval:expr) => {
        $(#[$m])*
        #[derive(Clone, Debug, Deserialize)]
        #[serde(deny_unknown_fields, rename_all = "camelCase", default)]
        pub struct $name {
            /// Default true.
            pub enabled: bool,
            #[serde(deserialize_with = "duration")]
            pub interval: Duration,
            $($(#[$fm])* pub $field: $ty,)*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { enabled: true, interval: $interval, $($field: $default,)* }
            }
        }
    };
}

section!(
    /// `node/memory`: MemAvailable against MemTotal from `<proc>/meminfo`.
    Memory {
        /// Fails below this share of memory available. Default 5.
        min_available_percent: f64 = 5.0,
        /// And below this many bytes available (`100Mi`, `1Gi` or a number). Default 100Mi.
        min_available: ByteSize = ByteSize(100 * 1024 * 1024),
    } interval Duration::from_secs(10)
);

section!(
    /// `node/disk`: space and inodes of every real filesystem (statvfs).
    Disk {
        /// Fails at or above this share of space used. Default 90.
        max_used_percent: f64 = 90.0,
        /// Fails at or above this share of inodes used. Default 95.
        max_inodes_used_percent: f64 = 95.0,
        /// Filesystem types never measured (pseudo, remote and image filesystems). A type
        /// ending in `*` is a prefix. `overlay` is measured only when mounted at `/`.
        ignore_fs_types: Vec<String> = default_ignored_fs_types(),
        /// Mount points under these host paths are not the node's own disks (pod volumes).
        ignore_mount_prefixes: Vec<PathBuf> = vec![
            PathBuf::from("/var/lib/kubelet/pods"),
            PathBuf::from("/var/lib/kubelet/plugins"),
        ],
    } interval Duration::from_secs(30)
);

section!(
    /// `node/readonly-fs`: the filesystems holding these host paths must be mounted read-write.
    ReadonlyFilesystem {
        /// Default `/`, `/var/lib/kubelet`, `/var/lib/containerd`, `/var/lib/docker`, `/var/log`.
        paths: Vec<PathBuf> = ["/", "/var/lib/kubelet", "/var/lib/containerd", "/var/lib/docker", "/var/log"]
            .into_iter()
            .map(PathBuf::from)
            .collect(),
    } interval Duration::from_secs(30)
);

section!(
    /// A section with one "used percent" threshold (`pids`, `fds`, `conntrack`).
    Percent {
        /// Fails at or above this share used. Default 90.
        max_used_percent: f64 = 90.0,
    } interval Duration::from_secs(10)
);

impl Percent {
    pub(super) fn with(interval: Duration, max_used_percent: f64) -> Self {
        Self {
            enabled: true,
            interval,
            max_used_percent,
        }
    }
}

/// Which load average `node/load` compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum LoadAverage {
    #[serde(rename = "1m")]
    One,
    #[serde(rename = "5m")]
    Five,
    #[serde(rename = "15m")]
    Fifteen,
}

section!(
    /// `node/load`: a load average per online CPU.
    Load {
        /// Fails above this load per CPU. Default 4.
        max_per_core: f64 = 4.0,
        /// `1m`, `5m` or `15m`. Default `5m`.
        average: LoadAverage = LoadAverage::Five,
    } interval Duration::from_secs(10)
);

section!(
    /// `node/psi`: pressure stall information, avg10, where the kernel has it. A threshold
    /// left out (or `null`) is not checked.
    Psi {
        /// Default: not checked (a busy node is not a sick one).
        cpu_some_percent: Option<f64> = None,
        /// Default: not checked.
        cpu_full_percent: Option<f64> = None,
        /// Default: not checked.
        memory_some_percent: Option<f64> = None,
        /// Default 20: a fifth of the time every task waits on memory (thrashing).
        memory_full_percent: Option<f64> = Some(20.0),
        /// Default: not checked.
        io_some_percent: Option<f64> = None,
        /// Default 50.
        io_full_percent: Option<f64> = Some(50.0),
    } interval Duration::from_secs(10)
);

/// One kernel-log pattern.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Pattern {
    /// The event reason (`OOMKilling`) and the result's target.
    pub name: String,
    /// Rust regular expression matched against the message of each kernel record.
    pub regex: String,
    /// The problem class (NodeCondition type) the event belongs to.
    pub problem: String,
    /// Whether a match also sets the problem as a condition until the agent restarts
    /// (a hung task stays hung); otherwise it is an event only. Default false.
    #[serde(default)]
    pub condition: bool,
}

section!(
    /// `node/kmsg`: kernel log records from `/dev/kmsg`, followed from the agent's start.
    Kmsg {
        /// Replaces the built-in patterns when given.
        patterns: Option<Vec<Pattern>> = None,
        /// Added to the built-in (or given) patterns.
        extra_patterns: Vec<Pattern> = Vec::new(),
        /// Longest part of one record matched and reported. Default 4096.
        max_line_bytes: usize = 4096,
        /// Most events reported per pass; the rest are counted in `details["dropped"]`.
        /// Default 100.
        max_events_per_pass: usize = 100,
    } interval Duration::from_secs(1)
);

impl Kmsg {
    /// The patterns in force: `patterns` (or the built-in ones) plus `extraPatterns`.
    pub fn effective_patterns(&self) -> Vec<Pattern> {
        let mut v = self.patterns.clone().unwrap_or_else(default_patterns);
        v.extend(self.extra_patterns.iter().cloned());
        v
    }
}

section!(
    /// `node/clock`: the kernel's time-sync status (adjtimex) and the offset against the
    /// federator's clock.
    Clock {
        /// Fail while the kernel says the clock is unsynchronised (STA_UNSYNC). Default false:
        /// many VMs keep time through the hypervisor without an NTP daemon.
        require_sync: bool = false,
        /// Fails when a synchronised clock's maximum error is above this. Default 1s.
        #[serde(deserialize_with = "duration")]
        max_error: Duration = Duration::from_secs(1),
        /// Fails when the federator's clock differs by more than this. Default 500ms.
        #[serde(deserialize_with = "duration")]
        max_federator_offset: Duration = Duration::from_millis(500),
        /// A federator clock sample older than this is not used. Default 5m.
        #[serde(deserialize_with = "duration")]
        federator_sample_max_age: Duration = Duration::from_secs(300),
    } interval Duration::from_secs(30)
);

section!(
    /// `node/kubelet`: the kubelet's `/healthz`.
    Kubelet {
        /// Default `http://127.0.0.1:10248/healthz` (plain HTTP; the agent needs hostNetwork).
        url: String = "http://127.0.0.1:10248/healthz".to_owned(),
        /// Default 2s.
        #[serde(deserialize_with = "duration")]
        timeout: Duration = Duration::from_secs(2),
        /// Fail even when this does not look like a Kubernetes node. Default false.
        required: bool = false,
    } interval Duration::from_secs(10)
);

section!(
    /// `node/runtime`: the container runtime's socket accepts connections.
    Runtime {
        /// Tried in order; the first that exists is checked.
        sockets: Vec<PathBuf> = vec![
            PathBuf::from("/run/containerd/containerd.sock"),
            PathBuf::from("/var/run/crio/crio.sock"),
        ],
        /// Fail even when no socket exists. Default false.
        required: bool = false,
    } interval Duration::from_secs(10)
);

/// A byte count written as a number or with a binary (`Ki`, `Mi`, `Gi`, `Ti`) or decimal
/// (`K`, `M`, `G`, `T`) suffix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => parse_bytes(&s).map(ByteSize).ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "{s:?} is not a size; write a number of bytes or e.g. 100Mi, 2Gi, 500M"
                ))
            }),
        }
    }
}

fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "K" | "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let v = n * mult;
    (v.is_finite() && v >= 0.0 && v < u64::MAX as f64).then_some(v as u64)
}

pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    s.parse::<humantime::Duration>()
        .map(Into::into)
        .map_err(|e| {
            serde::de::Error::custom(format!(
                "{s:?} is not a duration ({e}); write it like 10s, 500ms or 2m"
            ))
        })
}

/// Filesystem types `node/disk` and `node/readonly-fs` leave alone by default.
pub fn default_ignored_fs_types() -> Vec<String> {
    [
        "proc",
        "sysfs",
        "tmpfs",
        "devtmpfs",
        "devpts",
        "cgroup",
        "cgroup2",
        "debugfs",
        "tracefs",
        "securityfs",
        "pstore",
        "bpf",
        "configfs",
        "fusectl",
        "mqueue",
        "hugetlbfs",
        "autofs",
        "binfmt_misc",
        "rpc_pipefs",
        "nsfs",
        "ramfs",
        "efivarfs",
        "selinuxfs",
        "squashfs",
        "iso9660",
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "ceph",
        "fuse",
        "fuse.*",
        "overlay",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

/// The built-in kernel-log patterns.
pub fn default_patterns() -> Vec<Pattern> {
    let p = |name: &str, regex: &str, problem: &str, condition: bool| Pattern {
        name: name.to_owned(),
        regex: regex.to_owned(),
        problem: problem.to_owned(),
        condition,
    };
    vec![
        p(
            "OOMKilling",
            r"Killed process \d+ \(",
            problem::OOM_KILLING,
            false,
        ),
        p(
            "TaskHung",
            r"task \S+:\d+ blocked for more than \d+ seconds",
            problem::KERNEL_DEADLOCK,
            true,
        ),
        p(
            "SoftLockup",
            r"BUG: soft lockup - CPU#\d+ stuck for",
            problem::KERNEL_DEADLOCK,
            true,
        ),
        p(
            "HardLockup",
            r"Watchdog detected hard LOCKUP on cpu|NMI watchdog: .*hard LOCKUP",
            problem::KERNEL_DEADLOCK,
            true,
        ),
        p(
            "Ext4Error",
            r"EXT4-fs error",
            problem::FILESYSTEM_ERROR,
            false,
        ),
        p(
            "XfsError",
            r"XFS \(\S+\): (Corruption|metadata I/O error|Log I/O [Ee]rror|Internal error|Filesystem has been shut down)",
            problem::FILESYSTEM_ERROR,
            false,
        ),
        p(
            "FilesystemReadOnly",
            r"(?i)remounting filesystem read-only",
            problem::READONLY_FILESYSTEM,
            true,
        ),
        p(
            "NetworkLinkDown",
            r"(?i)\blink is down\b",
            problem::NETWORK_LINK_DOWN,
            false,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_units() {
        assert_eq!(parse_bytes("100Mi"), Some(100 * 1024 * 1024));
        assert_eq!(parse_bytes("2G"), Some(2_000_000_000));
        assert_eq!(parse_bytes("1.5Ki"), Some(1536));
        assert_eq!(parse_bytes("12"), Some(12));
        assert_eq!(parse_bytes("12 parsecs"), None);
        assert_eq!(parse_bytes("-1"), None);
    }
}
