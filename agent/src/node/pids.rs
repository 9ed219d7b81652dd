//! `node/pids`: tasks in use (the total in `<proc>/loadavg`) against the lower of
//! `<proc>/sys/kernel/pid_max` and `<proc>/sys/kernel/threads-max`.

use std::time::Duration;

use super::config::Percent as Config;
use super::read::{ReadError, parse_u64, read_small, read_u64};
use super::{Diagnostic, Finding, HostPaths, pct, percent, problem};

pub struct PidsDiagnostic {
    config: Config,
}

impl PidsDiagnostic {
    pub fn new(config: Config) -> Self {
        Self { config }
    }
}

impl Diagnostic for PidsDiagnostic {
    fn name(&self) -> &'static str {
        "pids"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn problems(&self) -> Vec<String> {
        vec![problem::PID_PRESSURE.to_owned()]
    }

    fn run(&mut self, paths: &HostPaths) -> Vec<Finding> {
        vec![match measure(paths) {
            Ok((used, max, limit_name)) => {
                let share = percent(used as f64, max as f64);
                let text = format!(
                    "{used} of {max} process ids in use ({}; limit from {limit_name})",
                    pct(share)
                );
                let f = if share >= self.config.max_used_percent {
                    Finding::fail(
                        "pids",
                        problem::PID_PRESSURE,
                        format!("{text} at or above {}", pct(self.config.max_used_percent)),
                    )
                } else {
                    Finding::ok("pids").summary(text)
                };
                f.value("pids_used", used as f64)
                    .value("pids_max", max as f64)
                    .value("pids_used_percent", share)
            }
            Err(e) => Finding::error("pids", e.to_string()),
        }]
    }
}

/// `(tasks in use, limit, which file the limit came from)`.
fn measure(paths: &HostPaths) -> Result<(u64, u64, &'static str), ReadError> {
    let loadavg = paths.proc("loadavg");
    let text = read_small(&loadavg)?;
    let running_total = text
        .split_whitespace()
        .nth(3)
        .ok_or_else(|| ReadError::parse(&loadavg, "has no running/total field"))?;
    let (_, total) = running_total.split_once('/').ok_or_else(|| {
        ReadError::parse(
            &loadavg,
            format!("field 4 is {running_total:?}, not running/total"),
        )
    })?;
    let used = parse_u64(&loadavg, total, "the task total")?;
    let pid_max_path = paths.proc("sys/kernel/pid_max");
    let pid_max = read_u64(&pid_max_path)?;
    let (max, name) = match read_u64(&paths.proc("sys/kernel/threads-max")) {
        Ok(t) if t < pid_max => (t, "threads-max"),
        _ => (pid_max, "pid_max"),
    };
    if max == 0 {
        return Err(ReadError::parse(&pid_max_path, "the limit is 0"));
    }
    Ok((used, max, name))
}
