//! A crafted host tree for node diagnostic tests, healthy until a test changes a file, and
//! assertions on findings. Shared by the node_* test files through `#[path]`.
#![allow(dead_code)]

use std::path::PathBuf;

use vigil_agent::node::{Diagnostic, Finding, HostPaths, NodeDiagnostics, runner};
use vigil_proto::Outcome;

/// A host tree in a temporary folder, healthy until a test changes a file.
pub struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    pub fn new() -> Self {
        let h = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        h.write(
            "proc/meminfo",
            "MemTotal:        8000000 kB\nMemFree:         1000000 kB\nMemAvailable:    4000000 kB\n",
        );
        h.write("proc/loadavg", "0.50 0.40 0.30 2/300 12345\n");
        h.write("proc/sys/kernel/pid_max", "32768\n");
        h.write("proc/sys/kernel/threads-max", "100000\n");
        h.write("sys/devices/system/cpu/online", "0-3\n");
        for r in ["cpu", "memory", "io"] {
            h.write(
                &format!("proc/pressure/{r}"),
                "some avg10=1.00 avg60=0.50 avg300=0.10 total=100\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n",
            );
        }
        h.write("proc/sys/fs/file-nr", "1000\t0\t100000\n");
        h.write("proc/sys/net/netfilter/nf_conntrack_count", "100\n");
        h.write("proc/sys/net/netfilter/nf_conntrack_max", "1000\n");
        h.write(
            "proc/1/mountinfo",
            "1 0 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n22 1 0:21 / /proc rw - proc proc rw\n",
        );
        h
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, content: &str) {
        self.write_bytes(rel, content.as_bytes());
    }

    pub fn write_bytes(&self, rel: &str, content: &[u8]) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    pub fn remove(&self, rel: &str) {
        let p = self.path(rel);
        if p.is_dir() {
            std::fs::remove_dir_all(p).unwrap();
        } else {
            std::fs::remove_file(p).unwrap();
        }
    }

    pub fn paths(&self) -> HostPaths {
        HostPaths::under(self.dir.path())
    }

    pub fn run(&self, d: &mut dyn Diagnostic) -> Vec<Finding> {
        runner::run_once(d, &self.paths())
    }

    pub fn one(&self, d: &mut dyn Diagnostic) -> Finding {
        let mut f = self.run(d);
        assert_eq!(f.len(), 1, "{f:#?}");
        f.pop().unwrap()
    }
}

pub fn defaults() -> NodeDiagnostics {
    NodeDiagnostics::default()
}

pub fn assert_ok(f: &Finding) {
    assert_eq!(f.outcome, Outcome::Success, "{f:#?}");
    assert_eq!(f.problem, None);
}

pub fn assert_fails(f: &Finding, class: &str, reason: &str) {
    assert_eq!(f.outcome, Outcome::Failure, "{f:#?}");
    assert_eq!(f.problem.as_deref(), Some(class));
    assert_eq!(f.reason, reason);
}

pub fn assert_error(f: &Finding, contains: &[&str]) {
    assert_eq!(f.outcome, Outcome::Error, "{f:#?}");
    for c in contains {
        assert!(f.reason.contains(c), "{:?} lacks {c:?}", f.reason);
    }
}
