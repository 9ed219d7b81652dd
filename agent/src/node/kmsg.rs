//! `node/kmsg`: follows the kernel log (`/dev/kmsg`, or any file or FIFO) from the agent's
//! start on a thread of its own, matches every record against the configured patterns, and
//! reports each match as an event finding carrying the kernel line.
//!
//! Lines are cut at `maxLineBytes` as they are read, so a 1 MiB line costs no more memory
//! than a short one; invalid UTF-8 is replaced; records overwritten before they were read
//! (`EPIPE`) are skipped. Matches wait in a bounded queue until the next pass.

use std::collections::{HashSet, VecDeque};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod matcher;

pub use matcher::{Event, LineBuffer, Matcher, Record, check_line, compile, parse_record};

use super::config::Kmsg as Config;
use super::{Diagnostic, Finding, HostPaths};

/// Matches waiting for a pass; beyond it new ones are counted and dropped.
const QUEUE_LIMIT: usize = 1000;
/// Bytes asked for per read: more than any one `/dev/kmsg` record (a smaller buffer makes
/// the kernel answer EINVAL).
const READ_BUFFER: usize = 64 * 1024;
/// Wait before opening the source again after it failed.
const REOPEN_AFTER: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, PartialEq)]
enum Status {
    Starting,
    Following,
    Failed(String),
}

struct Shared {
    events: VecDeque<Event>,
    dropped: u64,
    status: Status,
}

struct Follower {
    shared: Mutex<Shared>,
    stop: AtomicBool,
    lines: AtomicU64,
}

pub struct KmsgDiagnostic {
    config: Config,
    matcher: Option<Arc<Matcher>>,
    compile_error: Option<String>,
    follower: Option<Arc<Follower>>,
    /// The status last reported, so the source's state is reported on change only.
    reported: Option<Status>,
    /// Event-only patterns that matched in the last pass: the next quiet pass clears them.
    dirty: HashSet<usize>,
    /// Condition patterns that matched: stay failing until the agent restarts.
    sticky: HashSet<usize>,
}

impl KmsgDiagnostic {
    pub fn new(config: Config) -> Self {
        let (matcher, compile_error) = match Matcher::new(config.effective_patterns()) {
            Ok(m) => (Some(Arc::new(m)), None),
            Err(e) => (None, Some(e)),
        };
        Self {
            config,
            matcher,
            compile_error,
            follower: None,
            reported: None,
            dirty: HashSet::new(),
            sticky: HashSet::new(),
        }
    }

    /// Lines read so far (for benchmarks and tests).
    pub fn lines_seen(&self) -> u64 {
        self.follower
            .as_ref()
            .map_or(0, |f| f.lines.load(Ordering::Relaxed))
    }

    fn start(&mut self, path: &Path) {
        let Some(matcher) = self.matcher.clone() else {
            return;
        };
        let follower = Arc::new(Follower {
            shared: Mutex::new(Shared {
                events: VecDeque::new(),
                dropped: 0,
                status: Status::Starting,
            }),
            stop: AtomicBool::new(false),
            lines: AtomicU64::new(0),
        });
        let f = Arc::clone(&follower);
        let path = path.to_owned();
        let cap = self.config.max_line_bytes;
        let spawned = std::thread::Builder::new()
            .name("vigil-kmsg".into())
            .spawn(move || follow(&path, &f, &matcher, cap));
        if let Err(e) = spawned {
            follower.shared.lock().unwrap().status =
                Status::Failed(format!("cannot start the kernel-log thread: {e}"));
        }
        self.follower = Some(follower);
    }
}

impl Drop for KmsgDiagnostic {
    fn drop(&mut self) {
        if let Some(f) = &self.follower {
            f.stop.store(true, Ordering::Relaxed);
        }
    }
}

fn set_status(f: &Follower, status: Status) {
    f.shared.lock().unwrap().status = status;
}

/// Waits `d` in small steps; false when asked to stop.
fn pause(f: &Follower, d: Duration) -> bool {
    let step = Duration::from_millis(100);
    let mut left = d;
    while !left.is_zero() {
        if f.stop.load(Ordering::Relaxed) {
            return false;
        }
        let s = step.min(left);
        std::thread::sleep(s);
        left -= s;
    }
    !f.stop.load(Ordering::Relaxed)
}

fn open_error(path: &Path, e: &std::io::Error) -> String {
    let hint = if e.kind() == ErrorKind::PermissionDenied {
        "; the agent needs read access (root, or CAP_SYSLOG when kernel.dmesg_restrict=1), or set kmsg.enabled: false"
    } else if e.kind() == ErrorKind::NotFound {
        "; point hostPaths.kmsg (or --host-root) at the host's /dev/kmsg, or set kmsg.enabled: false"
    } else {
        ""
    };
    format!("cannot open {}: {e}{hint}", path.display())
}

fn follow(path: &Path, f: &Follower, matcher: &Matcher, cap: usize) {
    let mut buf = vec![0u8; READ_BUFFER];
    while !f.stop.load(Ordering::Relaxed) {
        // A FIFO is opened for writing too (Linux allows it): the follower is then a writer
        // of its own, so it never reads end-of-file when the last writer goes, and a writer
        // that comes back never finds the FIFO without a reader (EPIPE) while it is reopened.
        let is_fifo = std::fs::metadata(path)
            .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()));
        let mut file = match std::fs::OpenOptions::new()
            .read(true)
            .write(is_fifo)
            .open(path)
        {
            Ok(file) => file,
            Err(e) => {
                set_status(f, Status::Failed(open_error(path, &e)));
                if !pause(f, REOPEN_AFTER) {
                    return;
                }
                continue;
            }
        };
        // Follow from now: /dev/kmsg and regular files seek to their end; a FIFO cannot seek
        // and has no past anyway.
        if !is_fifo {
            let _ = file.seek(SeekFrom::End(0));
        }
        set_status(f, Status::Following);
        let mut lines = LineBuffer::new(cap);
        loop {
            if f.stop.load(Ordering::Relaxed) {
                return;
            }
            match file.read(&mut buf) {
                Ok(0) => {
                    if !pause(f, Duration::from_millis(200)) {
                        return;
                    }
                }
                Ok(n) => {
                    let mut found = Vec::new();
                    let mut count = 0u64;
                    lines.feed(&buf[..n], |line, cut| {
                        count += 1;
                        if let Some(ev) = check_line(matcher, line, cut) {
                            found.push(ev);
                        }
                    });
                    f.lines.fetch_add(count, Ordering::Relaxed);
                    if !found.is_empty() {
                        let mut s = f.shared.lock().unwrap();
                        for ev in found {
                            if s.events.len() >= QUEUE_LIMIT {
                                s.dropped += 1;
                            } else {
                                s.events.push_back(ev);
                            }
                        }
                    }
                }
                // Records overwritten before we read them: the next read continues after them.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    set_status(
                        f,
                        Status::Failed(format!("reading {}: {e}", path.display())),
                    );
                    if !pause(f, REOPEN_AFTER) {
                        return;
                    }
                    break;
                }
            }
        }
    }
}

impl Diagnostic for KmsgDiagnostic {
    fn name(&self) -> &'static str {
        "kmsg"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    fn problems(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .config
            .effective_patterns()
            .into_iter()
            .filter(|p| p.condition)
            .map(|p| p.problem)
            .collect();
        v.sort();
        v.dedup();
        v
    }

    fn run(&mut self, paths: &HostPaths) -> Vec<Finding> {
        let source = paths.kmsg.display().to_string();
        let Some(matcher) = self.matcher.clone() else {
            let e = self.compile_error.clone().unwrap_or_default();
            return vec![Finding::error(source, e)];
        };
        let mut out = Vec::new();
        if self.follower.is_none() {
            self.start(&paths.kmsg.clone());
            for p in matcher.patterns() {
                out.push(Finding::ok(&p.name).summary(format!(
                    "watching {source} for {:?} since the agent started",
                    p.regex
                )));
            }
        }
        let Some(follower) = self.follower.clone() else {
            return out;
        };
        let (events, dropped, status) = {
            let mut s = follower.shared.lock().unwrap();
            let n = s.events.len().min(self.config.max_events_per_pass);
            let events: Vec<Event> = s.events.drain(..n).collect();
            let dropped = std::mem::take(&mut s.dropped);
            (events, dropped, s.status.clone())
        };
        if self.reported.as_ref() != Some(&status) && status != Status::Starting {
            out.push(match &status {
                Status::Failed(e) => Finding::error(&source, e.clone()),
                _ => Finding::ok(&source)
                    .summary(format!("following {source} from the agent's start")),
            });
            self.reported = Some(status);
        }
        let matched: HashSet<usize> = events.iter().map(|e| e.pattern).collect();
        for i in std::mem::take(&mut self.dirty) {
            if !matched.contains(&i) {
                let p = &matcher.patterns()[i];
                out.push(Finding::ok(&p.name).summary("no new match since the last pass"));
            } else {
                self.dirty.insert(i);
            }
        }
        for (n, ev) in events.into_iter().enumerate() {
            let p = &matcher.patterns()[ev.pattern];
            if p.condition {
                self.sticky.insert(ev.pattern);
            } else {
                self.dirty.insert(ev.pattern);
            }
            let shown: String = ev.message.chars().take(300).collect();
            let mut f = Finding::fail(&p.name, &p.problem, format!("kernel: {shown}"))
                .detail("line", ev.message.clone())
                .detail("reason", p.name.clone())
                .detail("source", source.clone());
            f.event = true;
            if p.condition {
                f = f.detail("condition", "true");
            }
            if ev.cut_bytes > 0 {
                f = f.detail("truncated_bytes", ev.cut_bytes.to_string());
            }
            if let Some(s) = ev.seq {
                f = f.detail("kernel_seq", s.to_string());
            }
            if let Some(t) = ev.time_us {
                f = f.value("kernel_time_seconds", t as f64 / 1e6);
            }
            if let Some(p) = ev.priority {
                f = f.value("priority", f64::from(p));
            }
            if n == 0 && dropped > 0 {
                f = f.detail("dropped_events", dropped.to_string());
            }
            out.push(f);
        }
        out
    }
}
