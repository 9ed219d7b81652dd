//! `node/memory`: MemAvailable against MemTotal from `<proc>/meminfo`.

use std::time::Duration;

use super::config::Memory as Config;
use super::read::{ReadError, parse_u64, read_small};
use super::{Diagnostic, Finding, HostPaths, human_bytes, pct, percent, problem};

pub struct MemoryDiagnostic {
    config: Config,
}

impl MemoryDiagnostic {
    pub fn new(config: Config) -> Self {
        Self { config }
    }
}

impl Diagnostic for MemoryDiagnostic {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn problems(&self) -> Vec<String> {
        vec![problem::MEMORY_PRESSURE.to_owned()]
    }

    fn run(&mut self, paths: &HostPaths) -> Vec<Finding> {
        vec![match measure(paths) {
            Ok((total, available)) => judge(&self.config, total, available),
            Err(e) => Finding::error("memory", e.to_string()),
        }]
    }
}

/// `(MemTotal, MemAvailable)` in bytes.
fn measure(paths: &HostPaths) -> Result<(u64, u64), ReadError> {
    let path = paths.proc("meminfo");
    let text = read_small(&path)?;
    let field = |name: &str| -> Result<u64, ReadError> {
        let line = text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .ok_or_else(|| ReadError::parse(&path, format!("no {name} line")))?;
        let kib = line.trim().trim_end_matches("kB").trim();
        Ok(parse_u64(&path, kib, name)?.saturating_mul(1024))
    };
    let total = field("MemTotal")?;
    let available = field("MemAvailable")?;
    if total == 0 {
        return Err(ReadError::parse(&path, "MemTotal is 0"));
    }
    Ok((total, available))
}

fn judge(config: &Config, total: u64, available: u64) -> Finding {
    let share = percent(available as f64, total as f64);
    let text = format!(
        "memory available {} ({} of {})",
        pct(share),
        human_bytes(available),
        human_bytes(total)
    );
    let low_share = share < config.min_available_percent;
    let low_bytes = available < config.min_available.0;
    let f = if low_share || low_bytes {
        let below = if low_share {
            pct(config.min_available_percent)
        } else {
            human_bytes(config.min_available.0)
        };
        Finding::fail(
            "memory",
            problem::MEMORY_PRESSURE,
            format!("{text} below {below}"),
        )
    } else {
        Finding::ok("memory").summary(text)
    };
    f.value("memory_total_bytes", total as f64)
        .value("memory_available_bytes", available as f64)
        .value("memory_available_percent", share)
}
