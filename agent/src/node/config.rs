//! The `NodeDiagnostics` file: thresholds, intervals and switches per diagnostic, kernel-log
//! patterns and host paths; strict (unknown fields refused) and validated in one pass that
//! reports every problem with its field path.

mod sections;
mod validate;

pub use sections::*;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::HostPaths;
use sections::duration;

/// The `apiVersion` a file may declare.
pub const API_VERSION: &str = "vigil.dev/v1alpha1";
/// The `kind` a file may declare.
pub const KIND: &str = "NodeDiagnostics";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read the diagnostics file {path}: {source}; pass an existing file with --diagnostics (or VIGIL_DIAGNOSTICS)"
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("diagnostics file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("diagnostics file {path} is not valid:\n{}", problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

/// Everything the diagnostics need: the validated file and where the host's files are.
#[derive(Clone, Debug)]
pub struct Settings {
    pub config: NodeDiagnostics,
    pub paths: HostPaths,
}

impl Settings {
    /// Built-in defaults reading the host under `host_root` (`/` outside a container).
    pub fn defaults(host_root: &Path) -> Self {
        let config = NodeDiagnostics::default();
        let paths = config.host_paths(host_root);
        Self { config, paths }
    }

    /// The file at `file` (or the defaults without one), host paths under `host_root` unless
    /// the file overrides them.
    pub fn load(file: Option<&Path>, host_root: &Path) -> Result<Self, ConfigError> {
        let config = match file {
            Some(path) => NodeDiagnostics::load(path)?,
            None => NodeDiagnostics::default(),
        };
        let paths = config.host_paths(host_root);
        Ok(Self { config, paths })
    }
}

/// The whole file. Every section is optional; what is left out keeps its documented default.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct NodeDiagnostics {
    /// Optional; `vigil.dev/v1alpha1` when given.
    pub api_version: Option<String>,
    /// Optional; `NodeDiagnostics` when given.
    pub kind: Option<String>,
    /// Longest one pass of a diagnostic may take before it reports ERROR (a hung filesystem).
    /// Default 5s.
    #[serde(deserialize_with = "duration")]
    pub run_timeout: Duration,
    pub host_paths: HostPathsConfig,
    pub memory: Memory,
    pub disk: Disk,
    pub readonly_filesystem: ReadonlyFilesystem,
    pub pids: Percent,
    pub load: Load,
    pub psi: Psi,
    pub fds: Percent,
    pub conntrack: Percent,
    pub kmsg: Kmsg,
    pub clock: Clock,
    pub kubelet: Kubelet,
    pub runtime: Runtime,
}

impl Default for NodeDiagnostics {
    fn default() -> Self {
        Self {
            api_version: None,
            kind: None,
            run_timeout: Duration::from_secs(5),
            host_paths: HostPathsConfig::default(),
            memory: Memory::default(),
            disk: Disk::default(),
            readonly_filesystem: ReadonlyFilesystem::default(),
            pids: Percent::with(Duration::from_secs(10), 90.0),
            load: Load::default(),
            psi: Psi::default(),
            fds: Percent::with(Duration::from_secs(30), 90.0),
            conntrack: Percent::with(Duration::from_secs(10), 90.0),
            kmsg: Kmsg::default(),
            clock: Clock::default(),
            kubelet: Kubelet::default(),
            runtime: Runtime::default(),
        }
    }
}

/// Overrides of the paths derived from `--host-root`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", default)]
pub struct HostPathsConfig {
    /// The host's `/` as this process sees it. Default: `--host-root` (`/`).
    pub root: Option<PathBuf>,
    /// Default `<root>/proc`.
    pub proc: Option<PathBuf>,
    /// Default `<root>/sys`.
    pub sys: Option<PathBuf>,
    /// Default `<root>/dev/kmsg`.
    pub kmsg: Option<PathBuf>,
}

impl NodeDiagnostics {
    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates a file's text; `path` names the file in messages. An empty file
    /// is the defaults.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let config: Self = if text.trim().is_empty() {
            Self::default()
        } else {
            let de = serde_yaml::Deserializer::from_str(text);
            serde_path_to_error::deserialize(de).map_err(|e| {
                let at = e.path().to_string();
                let inner = e.into_inner().to_string();
                // serde_yaml starts its own message with the path too; keep one.
                let inner = match inner.split_once(": ") {
                    Some((p, rest)) if !p.contains(' ') && p != "." => rest.to_owned(),
                    _ => inner,
                };
                let message = if at == "." || at.is_empty() {
                    inner
                } else {
                    format!("{at}: {inner}")
                };
                ConfigError::Parse {
                    path: path.to_owned(),
                    message,
                }
            })?
        };
        let problems = config.validate();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    /// Every problem with its field path (`kmsg.patterns[2].regex: ...`); empty when valid.
    pub fn validate(&self) -> Vec<String> {
        validate::problems(self)
    }

    /// The host paths: `host_root` (or `hostPaths.root`) with the file's overrides.
    pub fn host_paths(&self, host_root: &Path) -> HostPaths {
        let h = &self.host_paths;
        let mut paths = HostPaths::under(h.root.clone().unwrap_or_else(|| host_root.to_owned()));
        if let Some(p) = &h.proc {
            paths.proc = p.clone();
        }
        if let Some(p) = &h.sys {
            paths.sys = p.clone();
        }
        if let Some(p) = &h.kmsg {
            paths.kmsg = p.clone();
        }
        paths
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_overrides_apply() {
        assert_eq!(NodeDiagnostics::default().validate(), Vec::<String>::new());
        let c = NodeDiagnostics::parse(
            "kind: NodeDiagnostics\nhostPaths: {kmsg: /tmp/fifo}\nmemory: {minAvailable: 1Gi}\n",
            Path::new("f.yaml"),
        )
        .unwrap();
        assert_eq!(c.memory.min_available, ByteSize(1 << 30));
        assert_eq!(c.memory.interval, Duration::from_secs(10));
        let paths = c.host_paths(Path::new("/host"));
        assert_eq!(paths.proc, PathBuf::from("/host/proc"));
        assert_eq!(paths.kmsg, PathBuf::from("/tmp/fifo"));
        assert_eq!(c.kmsg.effective_patterns().len(), default_patterns().len());
        assert!(NodeDiagnostics::parse("", Path::new("e.yaml")).is_ok());
    }
}
