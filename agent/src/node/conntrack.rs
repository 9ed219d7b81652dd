//! `node/conntrack`: connection-tracking entries against the table size
//! (`<proc>/sys/net/netfilter/nf_conntrack_{count,max}`), where the module is loaded.

use std::time::Duration;

use super::config::Percent as Config;
use super::read::read_u64;
use super::{Diagnostic, Finding, HostPaths, pct, percent, problem};

pub struct ConntrackDiagnostic {
    config: Config,
}

impl ConntrackDiagnostic {
    pub fn new(config: Config) -> Self {
        Self { config }
    }
}

impl Diagnostic for ConntrackDiagnostic {
    fn name(&self) -> &'static str {
        "conntrack"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn problems(&self) -> Vec<String> {
        vec![problem::CONNTRACK_FULL.to_owned()]
    }

    fn run(&mut self, paths: &HostPaths) -> Vec<Finding> {
        let count_path = paths.proc("sys/net/netfilter/nf_conntrack_count");
        let count = match read_u64(&count_path) {
            Ok(c) => c,
            Err(e) if e.is_missing() => {
                return vec![Finding::skipped(
                    "conntrack",
                    format!(
                        "{} does not exist: connection tracking is not loaded",
                        count_path.display()
                    ),
                )];
            }
            Err(e) => return vec![Finding::error("conntrack", e.to_string())],
        };
        let max = match read_u64(&paths.proc("sys/net/netfilter/nf_conntrack_max")) {
            Ok(0) => {
                return vec![Finding::error(
                    "conntrack",
                    format!(
                        "{}: the table size is 0",
                        paths.proc("sys/net/netfilter/nf_conntrack_max").display()
                    ),
                )];
            }
            Ok(m) => m,
            Err(e) => return vec![Finding::error("conntrack", e.to_string())],
        };
        let share = percent(count as f64, max as f64);
        let text = format!("{count} of {max} conntrack entries in use ({})", pct(share));
        let f = if share >= self.config.max_used_percent {
            Finding::fail(
                "conntrack",
                problem::CONNTRACK_FULL,
                format!("{text} at or above {}", pct(self.config.max_used_percent)),
            )
        } else {
            Finding::ok("conntrack").summary(text)
        };
        vec![
            f.value("nf_conntrack_entries", count as f64)
                .value("nf_conntrack_entries_limit", max as f64)
                .value("nf_conntrack_used_percent", share),
        ]
    }
}
