//! `node/fds`: open file handles against the system limit (`<proc>/sys/fs/file-nr`).

use std::time::Duration;

use super::config::Percent as Config;
use super::read::{ReadError, parse_u64, read_small};
use super::{Diagnostic, Finding, HostPaths, pct, percent, problem};

pub struct FdsDiagnostic {
    config: Config,
}

impl FdsDiagnostic {
    pub fn new(config: Config) -> Self {
        Self { config }
    }
}

impl Diagnostic for FdsDiagnostic {
    fn name(&self) -> &'static str {
        "fds"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn problems(&self) -> Vec<String> {
        vec![problem::FD_PRESSURE.to_owned()]
    }

    fn run(&mut self, paths: &HostPaths) -> Vec<Finding> {
        vec![match measure(paths) {
            Ok((used, max)) => {
                let share = percent(used as f64, max as f64);
                let text = format!("{used} of {max} file handles open ({})", pct(share));
                let f = if share >= self.config.max_used_percent {
                    Finding::fail(
                        "fds",
                        problem::FD_PRESSURE,
                        format!("{text} at or above {}", pct(self.config.max_used_percent)),
                    )
                } else {
                    Finding::ok("fds").summary(text)
                };
                f.value("filefd_allocated", used as f64)
                    .value("filefd_maximum", max as f64)
                    .value("filefd_used_percent", share)
            }
            Err(e) => Finding::error("fds", e.to_string()),
        }]
    }
}

/// `(allocated - unused, max)` from file-nr's three numbers.
fn measure(paths: &HostPaths) -> Result<(u64, u64), ReadError> {
    let path = paths.proc("sys/fs/file-nr");
    let text = read_small(&path)?;
    let f: Vec<&str> = text.split_whitespace().collect();
    if f.len() != 3 {
        return Err(ReadError::parse(
            &path,
            format!(
                "holds {} fields, not the 3 of allocated, unused, max",
                f.len()
            ),
        ));
    }
    let allocated = parse_u64(&path, f[0], "the allocated count")?;
    let unused = parse_u64(&path, f[1], "the unused count")?;
    let max = parse_u64(&path, f[2], "the maximum")?;
    if max == 0 {
        return Err(ReadError::parse(&path, "the maximum is 0"));
    }
    Ok((allocated.saturating_sub(unused), max))
}
