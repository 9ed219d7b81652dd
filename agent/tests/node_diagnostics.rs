//! The file-reading node diagnostics against crafted host trees: every problem class firing and clearing, and
//! missing, truncated, garbage and huge files giving ERROR findings that name the file.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

#[path = "node_fixture/host.rs"]
mod host;

use host::*;
use vigil_agent::node::conntrack::ConntrackDiagnostic;
use vigil_agent::node::disk::{self, DiskDiagnostic, Usage};
use vigil_agent::node::fds::FdsDiagnostic;
use vigil_agent::node::load::LoadDiagnostic;
use vigil_agent::node::memory::MemoryDiagnostic;
use vigil_agent::node::pids::PidsDiagnostic;
use vigil_agent::node::psi::PsiDiagnostic;
use vigil_agent::node::readonly_fs::ReadonlyFsDiagnostic;
use vigil_agent::node::{Diagnostic, Finding, HostPaths, problem, runner};
use vigil_proto::Outcome;

#[test]
fn memory_pressure_fires_and_clears() {
    let h = Host::new();
    let mut d = MemoryDiagnostic::new(defaults().memory);
    let f = h.one(&mut d);
    assert_ok(&f);
    assert_eq!(f.target, "memory");
    assert_eq!(f.values["memory_available_percent"], 50.0);
    // 245 MiB of 7.8 GiB.
    h.write(
        "proc/meminfo",
        "MemTotal:        8178892 kB\nMemAvailable:     250880 kB\n",
    );
    assert_fails(
        &h.one(&mut d),
        problem::MEMORY_PRESSURE,
        "memory available 3.1% (245 MiB of 7.8 GiB) below 5%",
    );
    // Plenty of share but under the absolute floor (100 MiB).
    h.write(
        "proc/meminfo",
        "MemTotal:        1000000 kB\nMemAvailable:      90000 kB\n",
    );
    assert_fails(
        &h.one(&mut d),
        problem::MEMORY_PRESSURE,
        "memory available 9% (87.9 MiB of 977 MiB) below 100 MiB",
    );
    h.write(
        "proc/meminfo",
        "MemTotal:        8000000 kB\nMemAvailable:    4000000 kB\n",
    );
    assert_ok(&h.one(&mut d));
}

#[test]
fn memory_bad_files_are_errors_naming_the_file() {
    let h = Host::new();
    let mut d = MemoryDiagnostic::new(defaults().memory);
    let file = h.path("proc/meminfo").display().to_string();
    h.write("proc/meminfo", "MemTotal:        8000000 kB\nMemAvail");
    assert_error(&h.one(&mut d), &[&file, "no MemAvailable line"]);
    h.write(
        "proc/meminfo",
        "MemTotal: 8000000 kB\nMemAvailable: lots kB\n",
    );
    assert_error(
        &h.one(&mut d),
        &[&file, "MemAvailable is \"lots\", not a whole number"],
    );
    h.write_bytes("proc/meminfo", &vec![b'x'; 1024 * 1024]);
    assert_error(&h.one(&mut d), &[&file, "larger than 65536 bytes"]);
    h.write_bytes("proc/meminfo", &[0xff, 0x00, 0xfe, b'\n']);
    assert_error(&h.one(&mut d), &[&file, "no MemTotal line"]);
    h.remove("proc/meminfo");
    assert_error(&h.one(&mut d), &[&file, "No such file"]);
}

#[test]
fn disk_measures_real_filesystems_and_fires_on_thresholds() {
    let h = Host::new();
    // "/" of the fixture is the temporary folder: a real filesystem, statvfs works. How full
    // this machine's disk is must not matter: thresholds at 100% pass unless it is full.
    let mut cfg = defaults().disk;
    cfg.max_used_percent = 100.0;
    cfg.max_inodes_used_percent = 100.0;
    let mut d = DiskDiagnostic::new(cfg.clone());
    let f = h.one(&mut d);
    assert_ok(&f);
    assert_eq!(f.target, "/");
    assert_eq!(f.details["fs_type"], "ext4");
    assert!(f.values["filesystem_size_bytes"] > 0.0, "{f:#?}");
    // Any filesystem in use is above a tiny threshold.
    cfg.max_used_percent = 0.1;
    let mut d = DiskDiagnostic::new(cfg.clone());
    let f = h.one(&mut d);
    assert_eq!(f.outcome, Outcome::Failure, "{f:#?}");
    assert_eq!(f.problem.as_deref(), Some(problem::DISK_PRESSURE));
    assert!(f.reason.starts_with("disk / "), "{}", f.reason);
    assert!(f.reason.ends_with("at or above 0.1%"), "{}", f.reason);
    // A mount point that does not exist under the root is an ERROR for that target only.
    h.write(
        "proc/1/mountinfo",
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 8:2 / /data rw - xfs /dev/sdb rw\n",
    );
    cfg.max_used_percent = 100.0;
    let mut d = DiskDiagnostic::new(cfg);
    let f = h.run(&mut d);
    assert_eq!(f.len(), 2);
    assert_ok(&f[0]);
    assert_error(&f[1], &["statvfs", "/data", "No such file"]);
}

#[test]
fn disk_judges_space_and_inodes() {
    let cfg = defaults().disk;
    let table =
        vigil_agent::node::mounts::parse(Path::new("mi"), "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n")
            .unwrap();
    let gib = 1u64 << 30;
    let usage = |used: u64, avail: u64, inodes: u64, free: u64| Usage {
        size_bytes: used + avail,
        used_bytes: used,
        available_bytes: avail,
        inodes,
        inodes_free: free,
    };
    let f = disk::judge(&cfg, "/", &table[0], usage(95 * gib, 5 * gib, 1000, 900));
    assert_fails(
        &f,
        problem::DISK_PRESSURE,
        "disk / 95% used (95.0 GiB of 100 GiB) at or above 90%",
    );
    let f = disk::judge(&cfg, "/", &table[0], usage(gib, 99 * gib, 1000, 10));
    assert_fails(
        &f,
        problem::DISK_PRESSURE,
        "inodes on / 99% used (990 of 1000) at or above 95%",
    );
    // btrfs reports no inode table: never an inode problem.
    assert_ok(&disk::judge(
        &cfg,
        "/",
        &table[0],
        usage(gib, 99 * gib, 0, 0),
    ));
    assert_ok(&disk::judge(
        &cfg,
        "/",
        &table[0],
        usage(gib, 99 * gib, 1000, 900),
    ));
}

#[test]
fn disk_skips_pseudo_remote_and_pod_filesystems_and_bind_mounts() {
    let cfg = defaults().disk;
    let table = vigil_agent::node::mounts::parse(
        Path::new("mi"),
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
         2 1 0:5 / /proc rw - proc proc rw\n\
         3 1 0:6 / /run rw - tmpfs tmpfs rw\n\
         4 1 0:7 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n\
         5 1 8:1 /var/lib/docker /var/lib/docker rw - ext4 /dev/sda1 rw\n\
         6 1 8:2 / /var/lib/kubelet/pods/x/volumes/pvc rw - ext4 /dev/sdc rw\n\
         7 1 0:9 / /run/containerd/x/rootfs rw - overlay overlay rw\n\
         8 1 0:10 / /mnt/nfs rw - nfs4 server:/x rw\n\
         9 1 7:0 / /snap/core/1 ro - squashfs /dev/loop0 ro\n\
         10 1 0:11 / /home/u/.gvfs rw - fuse.gvfsd-fuse gvfsd rw\n\
         11 1 8:3 / /var/lib/containerd rw - xfs /dev/sdd rw\n",
    )
    .unwrap();
    let chosen: Vec<String> = disk::filesystems(&cfg, &table)
        .iter()
        .map(|m| m.mount_point.display().to_string())
        .collect();
    assert_eq!(chosen, ["/", "/var/lib/containerd"]);
    // A container host whose root is overlay still measures its root.
    let table =
        vigil_agent::node::mounts::parse(Path::new("mi"), "1 0 0:30 / / rw - overlay overlay rw\n")
            .unwrap();
    assert_eq!(disk::filesystems(&cfg, &table).len(), 1);
}

#[test]
fn mount_table_problems_are_errors() {
    let h = Host::new();
    let mut cfg = defaults().disk;
    cfg.max_used_percent = 100.0;
    cfg.max_inodes_used_percent = 100.0;
    let mut d = DiskDiagnostic::new(cfg);
    h.write("proc/1/mountinfo", "this is not a mount table\n");
    let file = h.path("proc/1/mountinfo").display().to_string();
    assert_error(&h.one(&mut d), &[&file, "line 1 is not a mountinfo line"]);
    h.remove("proc/1");
    let f = h.one(&mut d);
    assert_error(&f, &["proc/1/mountinfo", "proc/self/mountinfo"]);
    assert_eq!(f.target, "mounts");
    // The fallback is used when the host's init table is unreadable.
    h.write(
        "proc/self/mountinfo",
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n",
    );
    assert_ok(&h.one(&mut d));
}

#[test]
fn readonly_filesystems_fire_and_clear() {
    let h = Host::new();
    let mut d = ReadonlyFsDiagnostic::default();
    let f = h.one(&mut d);
    assert_ok(&f);
    assert_eq!(f.target, "/");
    assert!(f.details["paths"].contains("/var/lib/kubelet"));
    h.write(
        "proc/1/mountinfo",
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
         2 1 8:2 / /var/lib/kubelet ro,relatime - ext4 /dev/sdb rw\n\
         3 1 7:0 / /snap/core/1 ro - squashfs /dev/loop0 ro\n",
    );
    let f = h.run(&mut d);
    assert_eq!(f.len(), 2, "{f:#?}");
    assert_ok(&f[0]);
    assert_fails(
        &f[1],
        problem::READONLY_FILESYSTEM,
        "/var/lib/kubelet (ext4 /dev/sdb, holding /var/lib/kubelet) is mounted read-only (mount options ro,relatime)",
    );
    h.write(
        "proc/1/mountinfo",
        "1 0 8:1 / / rw - ext4 /dev/sda1 ro,errors=remount-ro\n",
    );
    let f = h.one(&mut d);
    assert_eq!(f.problem.as_deref(), Some(problem::READONLY_FILESYSTEM));
    assert!(
        f.reason.contains("filesystem options ro,errors=remount-ro"),
        "{}",
        f.reason
    );
    h.write("proc/1/mountinfo", "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n");
    assert_ok(&h.one(&mut d));
}

#[test]
fn pid_pressure_fires_and_clears() {
    let h = Host::new();
    let mut d = PidsDiagnostic::new(defaults().pids);
    assert_ok(&h.one(&mut d));
    h.write("proc/loadavg", "0.50 0.40 0.30 2/30000 12345\n");
    assert_fails(
        &h.one(&mut d),
        problem::PID_PRESSURE,
        "30000 of 32768 process ids in use (91.6%; limit from pid_max) at or above 90%",
    );
    // threads-max below pid_max is the real limit.
    h.write("proc/loadavg", "0.50 0.40 0.30 2/3000 12345\n");
    h.write("proc/sys/kernel/threads-max", "3100\n");
    assert_eq!(
        h.one(&mut d).problem.as_deref(),
        Some(problem::PID_PRESSURE)
    );
    h.write("proc/sys/kernel/threads-max", "100000\n");
    assert_ok(&h.one(&mut d));
    h.write("proc/loadavg", "0.50 0.40\n");
    assert_error(&h.one(&mut d), &["loadavg", "has no running/total field"]);
    h.write("proc/sys/kernel/pid_max", "-1\n");
    h.write("proc/loadavg", "0.50 0.40 0.30 2/300 12345\n");
    assert_error(&h.one(&mut d), &["pid_max", "\"-1\", not a whole number"]);
}

#[test]
fn load_per_core_fires_and_clears() {
    let h = Host::new();
    let mut d = LoadDiagnostic::new(defaults().load);
    assert_ok(&h.one(&mut d));
    h.write("proc/loadavg", "30.00 20.00 10.00 9/300 12345\n");
    assert_fails(
        &h.one(&mut d),
        problem::CPU_PRESSURE,
        "load average (5m) 20.00 on 4 CPUs is 5.00 per CPU, above 4",
    );
    h.write("sys/devices/system/cpu/online", "0-3,8-11\n");
    assert_ok(&h.one(&mut d));
    h.write("sys/devices/system/cpu/online", "3-0\n");
    assert_error(&h.one(&mut d), &["online", "runs backwards"]);
    h.write("sys/devices/system/cpu/online", "\n");
    assert_error(&h.one(&mut d), &["online", "not a whole number"]);
    h.write("sys/devices/system/cpu/online", "0-1\n");
    h.write("proc/loadavg", "high 1 1 1/1 1\n");
    assert_error(
        &h.one(&mut d),
        &["loadavg", "the 1m load is \"high\", not a number"],
    );
}

#[test]
fn psi_fires_per_resource_and_skips_without_kernel_support() {
    let h = Host::new();
    let mut d = PsiDiagnostic::new(defaults().psi);
    let f = h.run(&mut d);
    assert_eq!(f.len(), 3);
    f.iter().for_each(assert_ok);
    h.write(
        "proc/pressure/memory",
        "some avg10=60.00 avg60=40.00 avg300=10.00 total=1\nfull avg10=30.50 avg60=20.00 avg300=5.00 total=1\n",
    );
    let f = h.run(&mut d);
    assert_eq!(f[1].target, "memory");
    assert_fails(
        &f[1],
        problem::MEMORY_PRESSURE,
        "memory pressure: all tasks stalled 30.5% of the last 10s, at or above 20%",
    );
    assert_ok(&f[0]);
    h.write(
        "proc/pressure/io",
        "some avg10=99.00 avg60=40.00 avg300=10.00 total=1\nfull avg10=55.00 avg60=20.00 avg300=5.00 total=1\n",
    );
    assert_eq!(
        h.run(&mut d)[2].problem.as_deref(),
        Some(problem::IO_PRESSURE)
    );
    // Thresholds on "some" are off by default; a configured one fires.
    let mut cfg = defaults().psi;
    cfg.cpu_some_percent = Some(50.0);
    h.write(
        "proc/pressure/cpu",
        "some avg10=75.25 avg60=1 avg300=1 total=1\n",
    );
    let f = PsiDiagnostic::new(cfg).run(&h.paths());
    assert_fails(
        &f[0],
        problem::CPU_PRESSURE,
        "cpu pressure: some tasks stalled 75.2% of the last 10s, at or above 50%",
    );
    h.write("proc/pressure/cpu", "some avg10=garbage\n");
    assert_error(&h.run(&mut d)[0], &["pressure/cpu", "avg10 is \"garbage\""]);
    h.write("proc/pressure/cpu", "");
    assert_error(&h.run(&mut d)[0], &["has no \"some ... avg10=\" line"]);
    h.remove("proc/pressure");
    let f = h.run(&mut d);
    assert!(
        f.iter()
            .all(|f| f.outcome == Outcome::Success && f.details.contains_key("skipped")),
        "{f:#?}"
    );
}

#[test]
fn file_descriptors_fire_and_clear() {
    let h = Host::new();
    let mut d = FdsDiagnostic::new(defaults().fds);
    assert_ok(&h.one(&mut d));
    h.write("proc/sys/fs/file-nr", "96000\t1000\t100000\n");
    assert_fails(
        &h.one(&mut d),
        problem::FD_PRESSURE,
        "95000 of 100000 file handles open (95%) at or above 90%",
    );
    h.write("proc/sys/fs/file-nr", "1000 0\n");
    assert_error(&h.one(&mut d), &["file-nr", "holds 2 fields"]);
    h.write("proc/sys/fs/file-nr", "1000\t0\t100000\n");
    assert_ok(&h.one(&mut d));
}

#[test]
fn conntrack_fires_clears_and_skips_without_the_module() {
    let h = Host::new();
    let mut d = ConntrackDiagnostic::new(defaults().conntrack);
    assert_ok(&h.one(&mut d));
    h.write("proc/sys/net/netfilter/nf_conntrack_count", "950\n");
    assert_fails(
        &h.one(&mut d),
        problem::CONNTRACK_FULL,
        "950 of 1000 conntrack entries in use (95%) at or above 90%",
    );
    h.write("proc/sys/net/netfilter/nf_conntrack_max", "0\n");
    assert_error(&h.one(&mut d), &["nf_conntrack_max", "the table size is 0"]);
    h.remove("proc/sys/net/netfilter");
    let f = h.one(&mut d);
    assert_ok(&f);
    assert!(f.details["skipped"].contains("connection tracking is not loaded"));
}

struct Panics;

impl Diagnostic for Panics {
    fn name(&self) -> &'static str {
        "panics"
    }
    fn interval(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn run(&mut self, _: &HostPaths) -> Vec<Finding> {
        panic!("boom")
    }
    fn problems(&self) -> Vec<String> {
        Vec::new()
    }
}

#[test]
fn a_panicking_diagnostic_becomes_an_error_finding() {
    let h = Host::new();
    let f = h.one(&mut Panics);
    assert_error(&f, &["panics diagnostic failed unexpectedly (boom)"]);
}

#[test]
fn every_built_in_diagnostic_runs_on_a_bare_tree_without_panicking() {
    // An empty root: every diagnostic says what it could not read (or skips), none panics.
    let dir = tempfile::tempdir().unwrap();
    let paths = HostPaths::under(dir.path());
    let mut config = defaults();
    config.kmsg.enabled = false; // followed on a thread; covered in node_kmsg.rs
    config.kubelet.url = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/healthz", l.local_addr().unwrap())
    };
    let mut names = Vec::new();
    for mut d in vigil_agent::node::build(&config, Arc::default()) {
        let f = runner::run_once(d.as_mut(), &paths);
        assert!(!f.is_empty(), "{}", d.name());
        assert!(f.iter().all(|f| f.outcome != Outcome::Failure), "{f:#?}");
        names.push(d.name());
    }
    assert_eq!(
        names,
        [
            "memory",
            "disk",
            "readonly-fs",
            "pids",
            "load",
            "psi",
            "fds",
            "conntrack",
            "clock",
            "kubelet",
            "runtime"
        ]
    );
}
