//! `node/load`: a load average (`<proc>/loadavg`) per online CPU
//! (`<sys>/devices/system/cpu/online`).

use std::path::Path;
use std::time::Duration;

use super::config::{Load as Config, LoadAverage};
use super::read::{ReadError, parse_f64, parse_u64, read_small};
use super::{Diagnostic, Finding, HostPaths, problem};

pub struct LoadDiagnostic {
    config: Config,
}

impl LoadDiagnostic {
    pub fn new(config: Config) -> Self {
        Self { config }
    }
}

impl Diagnostic for LoadDiagnostic {
    fn name(&self) -> &'static str {
        "load"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn problems(&self) -> Vec<String> {
        vec![problem::CPU_PRESSURE.to_owned()]
    }

    fn run(&mut self, paths: &HostPaths) -> Vec<Finding> {
        vec![match measure(paths) {
            Ok((loads, cpus)) => {
                let (idx, label) = match self.config.average {
                    LoadAverage::One => (0, "1m"),
                    LoadAverage::Five => (1, "5m"),
                    LoadAverage::Fifteen => (2, "15m"),
                };
                let per_core = loads[idx] / cpus as f64;
                let text = format!(
                    "load average ({label}) {:.2} on {cpus} CPUs is {per_core:.2} per CPU",
                    loads[idx]
                );
                let f = if per_core > self.config.max_per_core {
                    Finding::fail(
                        "load",
                        problem::CPU_PRESSURE,
                        format!("{text}, above {}", self.config.max_per_core),
                    )
                } else {
                    Finding::ok("load").summary(text)
                };
                f.value("load1", loads[0])
                    .value("load5", loads[1])
                    .value("load15", loads[2])
                    .value("cpus", cpus as f64)
                    .value("load_per_cpu", per_core)
            }
            Err(e) => Finding::error("load", e.to_string()),
        }]
    }
}

fn measure(paths: &HostPaths) -> Result<([f64; 3], u64), ReadError> {
    let path = paths.proc("loadavg");
    let text = read_small(&path)?;
    let f: Vec<&str> = text.split_whitespace().collect();
    if f.len() < 3 {
        return Err(ReadError::parse(&path, "has fewer than 3 load averages"));
    }
    let loads = [
        parse_f64(&path, f[0], "the 1m load")?,
        parse_f64(&path, f[1], "the 5m load")?,
        parse_f64(&path, f[2], "the 15m load")?,
    ];
    let online = paths.sys("devices/system/cpu/online");
    let cpus = count_cpus(&online, read_small(&online)?.trim())?;
    Ok((loads, cpus))
}

/// Counts a CPU list such as `0-3,8,10-11`.
pub fn count_cpus(path: &Path, list: &str) -> Result<u64, ReadError> {
    let mut n = 0u64;
    for part in list.split(',') {
        let part = part.trim();
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (
                parse_u64(path, a, "a CPU number")?,
                parse_u64(path, b, "a CPU number")?,
            ),
            None => {
                let a = parse_u64(path, part, "a CPU number")?;
                (a, a)
            }
        };
        if b < a {
            return Err(ReadError::parse(
                path,
                format!("CPU range {part:?} runs backwards"),
            ));
        }
        n = n.saturating_add(b - a + 1);
    }
    if n == 0 {
        return Err(ReadError::parse(path, "lists no CPU"));
    }
    Ok(n)
}
