//! `node/psi`: pressure stall information (`<proc>/pressure/{cpu,memory,io}`, `some` and
//! `full` avg10) where the kernel has it; one finding per resource.

use std::time::Duration;

use super::config::Psi as Config;
use super::read::{ReadError, parse_f64, read_small};
use super::{Diagnostic, Finding, HostPaths, pct, problem};

pub struct PsiDiagnostic {
    config: Config,
}

impl PsiDiagnostic {
    pub fn new(config: Config) -> Self {
        Self { config }
    }
}

/// `(some avg10, full avg10)`; `full` is absent for cpu on older kernels.
fn read(paths: &HostPaths, resource: &str) -> Result<(f64, Option<f64>), ReadError> {
    let path = paths.proc(&format!("pressure/{resource}"));
    let text = read_small(&path)?;
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let kind = words.next();
        let avg10 = words
            .find_map(|w| w.strip_prefix("avg10="))
            .map(|v| parse_f64(&path, v, "avg10"))
            .transpose()?;
        match kind {
            Some("some") => some = avg10,
            Some("full") => full = avg10,
            _ => {}
        }
    }
    let some = some.ok_or_else(|| ReadError::parse(&path, "has no \"some ... avg10=\" line"))?;
    Ok((some, full))
}

impl Diagnostic for PsiDiagnostic {
    fn name(&self) -> &'static str {
        "psi"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn problems(&self) -> Vec<String> {
        vec![
            problem::CPU_PRESSURE.to_owned(),
            problem::MEMORY_PRESSURE.to_owned(),
            problem::IO_PRESSURE.to_owned(),
        ]
    }

    fn run(&mut self, paths: &HostPaths) -> Vec<Finding> {
        let c = &self.config;
        let resources = [
            (
                "cpu",
                problem::CPU_PRESSURE,
                c.cpu_some_percent,
                c.cpu_full_percent,
            ),
            (
                "memory",
                problem::MEMORY_PRESSURE,
                c.memory_some_percent,
                c.memory_full_percent,
            ),
            (
                "io",
                problem::IO_PRESSURE,
                c.io_some_percent,
                c.io_full_percent,
            ),
        ];
        resources
            .into_iter()
            .map(|(resource, class, some_max, full_max)| match read(paths, resource) {
                Ok((some, full)) => {
                    let mut over = Vec::new();
                    if let Some(max) = some_max
                        && some >= max
                    {
                        over.push(format!(
                            "{resource} pressure: some tasks stalled {} of the last 10s, at or above {}",
                            pct(some),
                            pct(max)
                        ));
                    }
                    if let (Some(max), Some(full)) = (full_max, full)
                        && full >= max
                    {
                        over.push(format!(
                            "{resource} pressure: all tasks stalled {} of the last 10s, at or above {}",
                            pct(full),
                            pct(max)
                        ));
                    }
                    let f = if over.is_empty() {
                        Finding::ok(resource).summary(format!(
                            "{resource} pressure avg10: some {}{}",
                            pct(some),
                            full.map(|f| format!(", full {}", pct(f))).unwrap_or_default()
                        ))
                    } else {
                        Finding::fail(resource, class, over.join("; "))
                    };
                    let f = f.value("some_avg10_percent", some);
                    match full {
                        Some(v) => f.value("full_avg10_percent", v),
                        None => f,
                    }
                }
                Err(e) if e.is_missing() => Finding::skipped(
                    resource,
                    format!(
                        "{} does not exist: the kernel has no pressure stall information (PSI)",
                        paths.proc(&format!("pressure/{resource}")).display()
                    ),
                ),
                Err(e) => Finding::error(resource, e.to_string()),
            })
            .collect()
    }
}
