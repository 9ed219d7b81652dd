//! `node/disk`: space and inode usage of every real filesystem in the host's mount table
//! (statvfs), one finding per filesystem, named by its mount point.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::config::Disk as Config;
use super::mounts::{self, Mount};
use super::{Diagnostic, Finding, HostPaths, human_bytes, pct, percent, problem};

pub struct DiskDiagnostic {
    config: Config,
}

impl DiskDiagnostic {
    pub fn new(config: Config) -> Self {
        Self { config }
    }
}

/// What statvfs says of one filesystem.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
    pub size_bytes: u64,
    pub used_bytes: u64,
    pub available_bytes: u64,
    pub inodes: u64,
    pub inodes_free: u64,
}

impl Diagnostic for DiskDiagnostic {
    fn name(&self) -> &'static str {
        "disk"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn problems(&self) -> Vec<String> {
        vec![problem::DISK_PRESSURE.to_owned()]
    }

    fn run(&mut self, paths: &HostPaths) -> Vec<Finding> {
        let (_, table) = match mounts::read(paths) {
            Ok(t) => t,
            Err(e) => return vec![Finding::error("mounts", e.to_string())],
        };
        filesystems(&self.config, &table)
            .into_iter()
            .map(|m| {
                let target = m.mount_point.display().to_string();
                let at = paths.host(&m.mount_point);
                match statvfs(&at) {
                    Ok(u) => judge(&self.config, &target, m, u),
                    Err(e) => Finding::error(target, format!("statvfs {}: {e}", at.display())),
                }
            })
            .collect()
    }
}

/// The mounts to measure: not ignored, and one per device (bind mounts of one filesystem
/// share its numbers; the shortest mount point names it).
pub fn filesystems<'a>(config: &Config, table: &'a [Mount]) -> Vec<&'a Mount> {
    let mut by_device: HashMap<&str, &Mount> = HashMap::new();
    for m in table {
        if m.ignored_by(&config.ignore_fs_types)
            || config
                .ignore_mount_prefixes
                .iter()
                .any(|p| m.mount_point.starts_with(p))
        {
            continue;
        }
        let keep = by_device
            .get(m.device.as_str())
            .is_none_or(|old| m.mount_point.as_os_str().len() < old.mount_point.as_os_str().len());
        if keep {
            by_device.insert(&m.device, m);
        }
    }
    let mut v: Vec<&Mount> = by_device.into_values().collect();
    v.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
    v
}

fn statvfs(path: &Path) -> Result<Usage, nix::Error> {
    let s = nix::sys::statvfs::statvfs(path)?;
    let frag = s.fragment_size() as u64;
    let blocks = s.blocks() as u64;
    let free = s.blocks_free() as u64;
    let avail = s.blocks_available() as u64;
    Ok(Usage {
        size_bytes: blocks.saturating_mul(frag),
        used_bytes: blocks.saturating_sub(free).saturating_mul(frag),
        available_bytes: avail.saturating_mul(frag),
        inodes: s.files() as u64,
        inodes_free: s.files_free() as u64,
    })
}

/// Judges one filesystem's usage: used share as `df` computes it (used / (used + available)).
pub fn judge(config: &Config, target: &str, m: &Mount, u: Usage) -> Finding {
    let used_pct = percent(
        u.used_bytes as f64,
        (u.used_bytes + u.available_bytes) as f64,
    );
    let inodes_used = u.inodes.saturating_sub(u.inodes_free);
    // Filesystems without a fixed inode table (btrfs) report 0 inodes.
    let inodes_pct = percent(inodes_used as f64, u.inodes as f64);
    let space = format!(
        "disk {target} {} used ({} of {})",
        pct(used_pct),
        human_bytes(u.used_bytes),
        human_bytes(u.size_bytes)
    );
    let inodes = format!(
        "inodes on {target} {} used ({inodes_used} of {})",
        pct(inodes_pct),
        u.inodes
    );
    let mut problems = Vec::new();
    if used_pct >= config.max_used_percent {
        problems.push(format!(
            "{space} at or above {}",
            pct(config.max_used_percent)
        ));
    }
    if u.inodes > 0 && inodes_pct >= config.max_inodes_used_percent {
        problems.push(format!(
            "{inodes} at or above {}",
            pct(config.max_inodes_used_percent)
        ));
    }
    let f = if problems.is_empty() {
        Finding::ok(target).summary(format!("{space}; {inodes}"))
    } else {
        Finding::fail(target, problem::DISK_PRESSURE, problems.join("; "))
    };
    f.detail("fs_type", m.fs_type.clone())
        .detail("device", m.source.clone())
        .value("filesystem_size_bytes", u.size_bytes as f64)
        .value("filesystem_used_bytes", u.used_bytes as f64)
        .value("filesystem_avail_bytes", u.available_bytes as f64)
        .value("filesystem_used_percent", used_pct)
        .value("filesystem_files", u.inodes as f64)
        .value("filesystem_files_free", u.inodes_free as f64)
        .value("filesystem_files_used_percent", inodes_pct)
}
