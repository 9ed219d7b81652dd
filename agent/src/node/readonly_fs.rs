//! `node/readonly-fs`: the filesystems holding the root and the node's data paths must be
//! mounted read-write (from the mount options in the host's mount table).

use std::collections::BTreeMap;
use std::time::Duration;

use super::config::{ReadonlyFilesystem as Config, default_ignored_fs_types};
use super::mounts;
use super::{Diagnostic, Finding, HostPaths, problem};

pub struct ReadonlyFsDiagnostic {
    config: Config,
    ignore: Vec<String>,
}

impl ReadonlyFsDiagnostic {
    /// `ignore`: filesystem types never judged (image filesystems are read-only by design);
    /// the disk diagnostic's list.
    pub fn new(config: Config, ignore: Vec<String>) -> Self {
        Self { config, ignore }
    }
}

impl Default for ReadonlyFsDiagnostic {
    fn default() -> Self {
        Self::new(Config::default(), default_ignored_fs_types())
    }
}

impl Diagnostic for ReadonlyFsDiagnostic {
    fn name(&self) -> &'static str {
        "readonly-fs"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn problems(&self) -> Vec<String> {
        vec![problem::READONLY_FILESYSTEM.to_owned()]
    }

    fn run(&mut self, paths: &HostPaths) -> Vec<Finding> {
        let (file, table) = match mounts::read(paths) {
            Ok(t) => t,
            Err(e) => return vec![Finding::error("mounts", e.to_string())],
        };
        // One finding per mount, listing the configured paths it holds.
        let mut held: BTreeMap<String, (Vec<String>, &mounts::Mount)> = BTreeMap::new();
        for p in &self.config.paths {
            let Some(m) = mounts::containing(&table, p) else {
                continue;
            };
            if m.ignored_by(&self.ignore) {
                continue;
            }
            held.entry(m.mount_point.display().to_string())
                .or_insert_with(|| (Vec::new(), m))
                .0
                .push(p.display().to_string());
        }
        if held.is_empty() {
            return vec![Finding::skipped(
                "/",
                format!(
                    "no configured path is on a filesystem {} lists that is not ignored",
                    file.display()
                ),
            )];
        }
        held.into_iter()
            .map(|(target, (held_paths, m))| {
                let f = if m.read_only() {
                    let how = if m.super_options.iter().any(|o| o == "ro") {
                        "filesystem"
                    } else {
                        "mount"
                    };
                    Finding::fail(
                        target.clone(),
                        problem::READONLY_FILESYSTEM,
                        format!(
                            "{target} ({} {}, holding {}) is mounted read-only ({how} options {})",
                            m.fs_type,
                            m.source,
                            held_paths.join(", "),
                            if how == "mount" {
                                m.mount_options.join(",")
                            } else {
                                m.super_options.join(",")
                            }
                        ),
                    )
                } else {
                    Finding::ok(target.clone()).summary(format!(
                        "{target} is read-write (holds {})",
                        held_paths.join(", ")
                    ))
                };
                f.detail("fs_type", m.fs_type.clone())
                    .detail("paths", held_paths.join(","))
            })
            .collect()
    }
}
