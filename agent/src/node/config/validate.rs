//! Cross-field checks of a `NodeDiagnostics` file: every problem, each with its field path and
//! how to fix it.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use super::{API_VERSION, KIND, NodeDiagnostics, Pattern};

/// Shortest interval any diagnostic may have.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// Longest kernel-log part matched: the kernel's own records are at most a few KiB.
const MAX_LINE_BYTES: usize = 1024 * 1024;

struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, path: &str, message: impl AsRef<str>) {
        self.0.push(format!("{path}: {}", message.as_ref()));
    }

    fn interval(&mut self, section: &str, d: Duration) {
        if d < MIN_INTERVAL {
            self.add(
                &format!("{section}.interval"),
                format!(
                    "{} is too short; use at least 100ms",
                    humantime::format_duration(d)
                ),
            );
        }
    }

    fn percent(&mut self, path: &str, v: f64) {
        if !(v.is_finite() && v > 0.0 && v <= 100.0) {
            self.add(
                path,
                format!("{v} is not a percentage; use a number above 0 and at most 100"),
            );
        }
    }

    fn positive(&mut self, path: &str, d: Duration) {
        if d.is_zero() {
            self.add(path, "must be above zero, e.g. 1s");
        }
    }

    fn absolute(&mut self, path: &str, p: &std::path::Path) {
        if !p.is_absolute() {
            self.add(
                path,
                format!("{} is not an absolute path; start it with /", p.display()),
            );
        }
    }

    fn absolute_all(&mut self, path: &str, list: &[PathBuf]) {
        for (i, p) in list.iter().enumerate() {
            self.absolute(&format!("{path}[{i}]"), p);
        }
    }
}

pub(super) fn problems(c: &NodeDiagnostics) -> Vec<String> {
    let mut p = Problems(Vec::new());
    if let Some(v) = &c.api_version
        && v != API_VERSION
    {
        p.add(
            "apiVersion",
            format!("{v:?} is not supported; use {API_VERSION}"),
        );
    }
    if let Some(k) = &c.kind
        && k != KIND
    {
        p.add(
            "kind",
            format!("{k:?} is not {KIND}; this file configures node diagnostics"),
        );
    }
    p.positive("runTimeout", c.run_timeout);
    for (name, path) in [
        ("root", &c.host_paths.root),
        ("proc", &c.host_paths.proc),
        ("sys", &c.host_paths.sys),
        ("kmsg", &c.host_paths.kmsg),
    ] {
        if let Some(path) = path {
            p.absolute(&format!("hostPaths.{name}"), path);
        }
    }

    p.interval("memory", c.memory.interval);
    p.percent("memory.minAvailablePercent", c.memory.min_available_percent);

    p.interval("disk", c.disk.interval);
    p.percent("disk.maxUsedPercent", c.disk.max_used_percent);
    p.percent("disk.maxInodesUsedPercent", c.disk.max_inodes_used_percent);
    p.absolute_all("disk.ignoreMountPrefixes", &c.disk.ignore_mount_prefixes);
    for (i, t) in c.disk.ignore_fs_types.iter().enumerate() {
        if t.is_empty() || t.contains(char::is_whitespace) {
            p.add(
                &format!("disk.ignoreFsTypes[{i}]"),
                format!("{t:?} is not a filesystem type name such as nfs or fuse.*"),
            );
        }
    }

    p.interval("readonlyFilesystem", c.readonly_filesystem.interval);
    p.absolute_all("readonlyFilesystem.paths", &c.readonly_filesystem.paths);

    for (name, s) in [
        ("pids", &c.pids),
        ("fds", &c.fds),
        ("conntrack", &c.conntrack),
    ] {
        p.interval(name, s.interval);
        p.percent(&format!("{name}.maxUsedPercent"), s.max_used_percent);
    }

    p.interval("load", c.load.interval);
    if !(c.load.max_per_core.is_finite() && c.load.max_per_core > 0.0) {
        p.add(
            "load.maxPerCore",
            format!("{} must be a number above 0, e.g. 4", c.load.max_per_core),
        );
    }

    p.interval("psi", c.psi.interval);
    for (name, v) in [
        ("cpuSomePercent", c.psi.cpu_some_percent),
        ("cpuFullPercent", c.psi.cpu_full_percent),
        ("memorySomePercent", c.psi.memory_some_percent),
        ("memoryFullPercent", c.psi.memory_full_percent),
        ("ioSomePercent", c.psi.io_some_percent),
        ("ioFullPercent", c.psi.io_full_percent),
    ] {
        if let Some(v) = v {
            p.percent(&format!("psi.{name}"), v);
        }
    }

    kmsg(&mut p, c);

    p.interval("clock", c.clock.interval);
    p.positive("clock.maxError", c.clock.max_error);
    p.positive("clock.maxFederatorOffset", c.clock.max_federator_offset);
    p.positive(
        "clock.federatorSampleMaxAge",
        c.clock.federator_sample_max_age,
    );

    p.interval("kubelet", c.kubelet.interval);
    p.positive("kubelet.timeout", c.kubelet.timeout);
    if c.kubelet.timeout >= c.kubelet.interval {
        p.add(
            "kubelet.timeout",
            format!(
                "{} must be shorter than kubelet.interval ({})",
                humantime::format_duration(c.kubelet.timeout),
                humantime::format_duration(c.kubelet.interval)
            ),
        );
    }
    if let Err(e) = crate::node::kubelet::parse_url(&c.kubelet.url) {
        p.add("kubelet.url", e);
    }

    p.interval("runtime", c.runtime.interval);
    p.absolute_all("runtime.sockets", &c.runtime.sockets);
    p.0
}

fn kmsg(p: &mut Problems, c: &NodeDiagnostics) {
    let k = &c.kmsg;
    p.interval("kmsg", k.interval);
    if !(256..=MAX_LINE_BYTES).contains(&k.max_line_bytes) {
        p.add(
            "kmsg.maxLineBytes",
            format!(
                "{} is out of range; use 256 to {MAX_LINE_BYTES}",
                k.max_line_bytes
            ),
        );
    }
    if k.max_events_per_pass == 0 {
        p.add("kmsg.maxEventsPerPass", "must be at least 1");
    }
    let mut seen = HashSet::new();
    let given = k.patterns.clone().unwrap_or_default();
    let lists: [(&str, &[Pattern]); 2] = [
        ("kmsg.patterns", &given),
        ("kmsg.extraPatterns", &k.extra_patterns),
    ];
    if k.patterns.is_none() {
        for d in super::default_patterns() {
            seen.insert(d.name);
        }
    }
    for (list, patterns) in lists {
        for (i, pat) in patterns.iter().enumerate() {
            let at = format!("{list}[{i}]");
            if pat.name.is_empty()
                || !pat
                    .name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
            {
                p.add(
                    &format!("{at}.name"),
                    format!(
                        "{:?} is not a name; use letters, digits, - and _ (e.g. OOMKilling)",
                        pat.name
                    ),
                );
            } else if !seen.insert(pat.name.clone()) {
                p.add(
                    &format!("{at}.name"),
                    format!("{:?} is used by another pattern (built-in ones included); pick another name", pat.name),
                );
            }
            if let Err(e) = crate::node::kmsg::compile(&pat.regex) {
                p.add(
                    &format!("{at}.regex"),
                    format!("pattern {:?} does not compile: {e}", pat.name),
                );
            }
            let mut chars = pat.problem.chars();
            let class_ok = chars.next().is_some_and(|ch| ch.is_ascii_uppercase())
                && chars.all(|ch| ch.is_ascii_alphanumeric());
            if !class_ok {
                p.add(
                    &format!("{at}.problem"),
                    format!(
                        "{:?} is not a problem class; use a NodeCondition type in CamelCase such as VigilKernelDeadlock",
                        pat.problem
                    ),
                );
            }
        }
    }
}
