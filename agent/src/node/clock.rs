//! `node/clock`: the kernel's time-sync status and error bound (adjtimex(2)), and this node's
//! clock against the federator's (the offset the stream's Acks carry).

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use super::config::Clock as Config;
use super::{Diagnostic, Finding, HostPaths, problem};
use crate::scheduler::now_unix_nanos;

/// The last federator-minus-agent clock offset, recorded by the stream client on each Ack.
#[derive(Debug, Default)]
pub struct FederatorClock {
    offset_nanos: AtomicI64,
    /// When it was recorded (agent clock, Unix nanoseconds); 0 = never.
    at_unix_nanos: AtomicI64,
}

impl FederatorClock {
    /// Records `federator_unix_nanos - agent_unix_nanos` measured now.
    pub fn record(&self, offset_nanos: i64) {
        self.offset_nanos.store(offset_nanos, Ordering::Relaxed);
        self.at_unix_nanos
            .store(now_unix_nanos().max(1), Ordering::Release);
    }

    /// `(offset, recorded at)` of the last sample, if any.
    pub fn last(&self) -> Option<(i64, i64)> {
        let at = self.at_unix_nanos.load(Ordering::Acquire);
        (at != 0).then(|| (self.offset_nanos.load(Ordering::Relaxed), at))
    }
}

/// What adjtimex(2) reports, in the units it uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timex {
    /// Clock state (`TIME_OK` = 0 ... `TIME_ERROR` = 5).
    pub state: i32,
    /// `STA_*` flags.
    pub status: i32,
    /// Maximum error, microseconds.
    pub maxerror_us: i64,
    /// Estimated error, microseconds.
    pub esterror_us: i64,
}

/// Where the kernel's clock status comes from (the real syscall, or a test's numbers).
pub trait TimeSource: Send + Sync {
    fn adjtimex(&self) -> std::io::Result<Timex>;
}

/// adjtimex(2) with `modes = 0`: reads only, needs no privilege.
pub struct Kernel;

impl TimeSource for Kernel {
    #[allow(unsafe_code)]
    fn adjtimex(&self) -> std::io::Result<Timex> {
        // SAFETY: `timex` is a plain C struct for which all-zero bytes are a valid value
        // (modes = 0 asks the kernel to change nothing); adjtimex only writes into the struct
        // we pass by exclusive pointer, which lives until the call returns. nix does not wrap
        // adjtimex, hence the workspace's reviewed exception to `unsafe_code`.
        let (state, tx) = unsafe {
            let mut tx: libc::timex = std::mem::zeroed();
            let state = libc::adjtimex(&mut tx);
            (state, tx)
        };
        if state < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Timex {
            state,
            status: tx.status,
            maxerror_us: tx.maxerror,
            esterror_us: tx.esterror,
        })
    }
}

pub struct ClockDiagnostic {
    config: Config,
    source: Box<dyn TimeSource>,
    federator: std::sync::Arc<FederatorClock>,
}

impl ClockDiagnostic {
    pub fn new(
        config: Config,
        source: Box<dyn TimeSource>,
        federator: std::sync::Arc<FederatorClock>,
    ) -> Self {
        Self {
            config,
            source,
            federator,
        }
    }
}

fn secs(d: Duration) -> String {
    humantime::format_duration(Duration::from_millis(
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
    ))
    .to_string()
}

fn from_nanos_abs(n: i64) -> Duration {
    Duration::from_nanos(n.unsigned_abs())
}

impl Diagnostic for ClockDiagnostic {
    fn name(&self) -> &'static str {
        "clock"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn problems(&self) -> Vec<String> {
        vec![problem::CLOCK_SKEW.to_owned()]
    }

    fn run(&mut self, _paths: &HostPaths) -> Vec<Finding> {
        vec![self.kernel(), self.federator()]
    }
}

impl ClockDiagnostic {
    fn kernel(&self) -> Finding {
        let t = match self.source.adjtimex() {
            Ok(t) => t,
            Err(e) => return Finding::error("kernel", format!("adjtimex(2) failed: {e}")),
        };
        let unsync = t.status & libc::STA_UNSYNC != 0;
        let maxerror = Duration::from_micros(u64::try_from(t.maxerror_us).unwrap_or(0));
        let f = if unsync {
            let text = format!(
                "the kernel reports the clock unsynchronised (STA_UNSYNC, state {}): no time daemon disciplines it",
                t.state
            );
            if self.config.require_sync {
                Finding::fail("kernel", problem::CLOCK_SKEW, text)
            } else {
                Finding::ok("kernel").summary(format!(
                    "{text}; not a failure because clock.requireSync is false (the federator offset still counts)"
                ))
            }
        } else if maxerror > self.config.max_error {
            Finding::fail(
                "kernel",
                problem::CLOCK_SKEW,
                format!(
                    "the kernel's maximum clock error is {} (estimated {}), above {}",
                    secs(maxerror),
                    secs(Duration::from_micros(
                        u64::try_from(t.esterror_us).unwrap_or(0)
                    )),
                    secs(self.config.max_error)
                ),
            )
        } else {
            Finding::ok("kernel").summary(format!("synchronised; maximum error {}", secs(maxerror)))
        };
        f.detail("synchronised", if unsync { "false" } else { "true" })
            .value("timex_maxerror_seconds", t.maxerror_us as f64 / 1e6)
            .value("timex_esterror_seconds", t.esterror_us as f64 / 1e6)
            .value("timex_status", f64::from(t.status))
            .value("timex_state", f64::from(t.state))
    }

    fn federator(&self) -> Finding {
        let Some((offset, at)) = self.federator.last() else {
            return Finding::skipped("federator", "no clock sample from the federator yet");
        };
        let age = from_nanos_abs(now_unix_nanos().saturating_sub(at));
        if age > self.config.federator_sample_max_age {
            return Finding::skipped(
                "federator",
                format!(
                    "the last clock sample from the federator is {} old",
                    secs(age)
                ),
            );
        }
        let abs = from_nanos_abs(offset);
        let side = if offset > 0 { "behind" } else { "ahead of" };
        let f = if abs > self.config.max_federator_offset {
            Finding::fail(
                "federator",
                problem::CLOCK_SKEW,
                format!(
                    "this node's clock is {} {side} the federator's, more than {}",
                    secs(abs),
                    secs(self.config.max_federator_offset)
                ),
            )
        } else {
            Finding::ok("federator").summary(format!("{} {side} the federator's clock", secs(abs)))
        };
        f.value("federator_offset_seconds", offset as f64 / 1e9)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_syscall_answers() {
        let t = Kernel.adjtimex().unwrap();
        assert!((0..=5).contains(&t.state), "{t:?}");
    }

    #[test]
    fn federator_clock_keeps_the_last_sample() {
        let c = FederatorClock::default();
        assert_eq!(c.last(), None);
        c.record(-42);
        assert_eq!(c.last().unwrap().0, -42);
    }
}
