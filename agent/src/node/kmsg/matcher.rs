//! Kernel-log matching: the compiled pattern set, `/dev/kmsg` record parsing and the line
//! splitter that caps every line as it is read.

use regex::{Regex, RegexSet, RegexSetBuilder};

use crate::node::config::Pattern;

/// Regex size limit per pattern (compiled program bytes).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles one pattern; the error is one line.
pub fn compile(regex: &str) -> Result<Regex, String> {
    regex::RegexBuilder::new(regex)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| one_line(&e))
}

fn one_line(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("error: "))
        .map(str::to_owned)
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The patterns, compiled together: one pass over a line finds the first that matches.
pub struct Matcher {
    set: RegexSet,
    patterns: Vec<Pattern>,
}

impl Matcher {
    /// Fails naming the first pattern that does not compile.
    pub fn new(patterns: Vec<Pattern>) -> Result<Self, String> {
        for p in &patterns {
            compile(&p.regex).map_err(|e| format!("pattern {:?} does not compile: {e}", p.name))?;
        }
        let set = RegexSetBuilder::new(patterns.iter().map(|p| &p.regex))
            .size_limit(REGEX_SIZE_LIMIT * patterns.len().max(1))
            .build()
            .map_err(|e| one_line(&e))?;
        Ok(Self { set, patterns })
    }

    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// The index of the first pattern matching `message`.
    pub fn first(&self, message: &str) -> Option<usize> {
        if !self.set.is_match(message) {
            return None;
        }
        self.set.matches(message).iter().next()
    }
}

/// One kernel record, split into its `/dev/kmsg` prefix and message. A line without the
/// `priority,seq,time,flags;` prefix (a plain file or FIFO) is all message.
#[derive(Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub priority: Option<u32>,
    pub seq: Option<u64>,
    /// Microseconds since boot.
    pub time_us: Option<u64>,
    pub message: &'a str,
}

pub fn parse_record(line: &str) -> Record<'_> {
    let plain = Record {
        priority: None,
        seq: None,
        time_us: None,
        message: line,
    };
    let Some((prefix, message)) = line.split_once(';') else {
        return plain;
    };
    let mut f = prefix.split(',');
    let (Some(p), Some(s), Some(t)) = (f.next(), f.next(), f.next()) else {
        return plain;
    };
    match (p.parse::<u32>(), s.parse::<u64>(), t.parse::<u64>()) {
        (Ok(p), Ok(s), Ok(t)) => Record {
            priority: Some(p & 7),
            seq: Some(s),
            time_us: Some(t),
            message,
        },
        _ => plain,
    }
}

/// Splits a byte stream into lines, keeping at most `cap` bytes of each and counting the rest.
pub struct LineBuffer {
    line: Vec<u8>,
    cut: usize,
    cap: usize,
}

impl LineBuffer {
    pub fn new(cap: usize) -> Self {
        Self {
            line: Vec::with_capacity(cap.min(4096)),
            cut: 0,
            cap,
        }
    }

    /// Feeds `chunk`; calls `on_line(kept bytes, bytes cut)` for each complete line.
    pub fn feed(&mut self, mut chunk: &[u8], mut on_line: impl FnMut(&[u8], usize)) {
        while !chunk.is_empty() {
            let (part, rest, done) = match chunk.iter().position(|&b| b == b'\n') {
                Some(i) => (&chunk[..i], &chunk[i + 1..], true),
                None => (chunk, &[][..], false),
            };
            if self.line.is_empty() && self.cut == 0 && done && part.len() <= self.cap {
                on_line(part, 0); // the common case: a whole line in one chunk, no copy
            } else {
                let room = self.cap - self.line.len();
                let take = room.min(part.len());
                self.line.extend_from_slice(&part[..take]);
                self.cut += part.len() - take;
                if done {
                    on_line(&self.line, self.cut);
                    self.line.clear();
                    self.cut = 0;
                }
            }
            chunk = rest;
        }
    }
}

/// A match waiting for the next pass.
#[derive(Clone, Debug)]
pub struct Event {
    pub pattern: usize,
    pub message: String,
    pub cut_bytes: usize,
    pub priority: Option<u32>,
    pub seq: Option<u64>,
    pub time_us: Option<u64>,
}

/// Turns one line into an event if a pattern matches it; `/dev/kmsg` continuation lines
/// (` KEY=value`) never match.
pub fn check_line(matcher: &Matcher, line: &[u8], cut: usize) -> Option<Event> {
    if line.first() == Some(&b' ') {
        return None;
    }
    let text = String::from_utf8_lossy(line);
    let rec = parse_record(&text);
    let pattern = matcher.first(rec.message)?;
    Some(Event {
        pattern,
        message: rec.message.trim_end_matches('\r').to_owned(),
        cut_bytes: cut,
        priority: rec.priority,
        seq: rec.seq,
        time_us: rec.time_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_caps_lines() {
        let mut lb = LineBuffer::new(4);
        let mut got = Vec::new();
        lb.feed(b"ab\nabcdef", |l, c| got.push((l.to_vec(), c)));
        lb.feed(b"gh\n\nxyz\n", |l, c| got.push((l.to_vec(), c)));
        assert_eq!(
            got,
            vec![
                (b"ab".to_vec(), 0),
                (b"abcd".to_vec(), 4),
                (Vec::new(), 0),
                (b"xyz".to_vec(), 0)
            ]
        );
    }

    #[test]
    fn parses_kmsg_records_and_plain_lines() {
        let r = parse_record("6,339,5140900,-;NET: Registered protocol family 10");
        assert_eq!(r.priority, Some(6));
        assert_eq!(r.seq, Some(339));
        assert_eq!(r.message, "NET: Registered protocol family 10");
        let r = parse_record("a;b");
        assert_eq!(r.message, "a;b");
        assert_eq!(parse_record("plain").message, "plain");
    }

    #[test]
    fn default_patterns_match_real_kernel_lines() {
        let m = Matcher::new(crate::node::config::default_patterns()).unwrap();
        let name = |line: &str| m.first(line).map(|i| m.patterns()[i].name.clone());
        for (line, want) in [
            (
                "Out of memory: Killed process 4242 (stress) total-vm:1024kB, anon-rss:512kB",
                Some("OOMKilling"),
            ),
            (
                "Memory cgroup out of memory: Killed process 77 (java) total-vm:1kB",
                Some("OOMKilling"),
            ),
            (
                "INFO: task jbd2/sda1-8:311 blocked for more than 120 seconds.",
                Some("TaskHung"),
            ),
            (
                "watchdog: BUG: soft lockup - CPU#3 stuck for 23s! [kworker/3:1:123]",
                Some("SoftLockup"),
            ),
            ("Watchdog detected hard LOCKUP on cpu 2", Some("HardLockup")),
            (
                "EXT4-fs error (device sda1): ext4_find_entry:1455: inode #2: comm ls: reading directory lblock 0",
                Some("Ext4Error"),
            ),
            (
                "XFS (dm-0): metadata I/O error in \"xfs_trans_read_buf_map\" at daddr 0x0 len 8 error 5",
                Some("XfsError"),
            ),
            (
                "EXT4-fs (sda1): Remounting filesystem read-only",
                Some("FilesystemReadOnly"),
            ),
            (
                "e1000e 0000:00:19.0 eth0: NIC Link is Down",
                Some("NetworkLinkDown"),
            ),
            (
                "r8169 0000:02:00.0 enp2s0: Link is Down",
                Some("NetworkLinkDown"),
            ),
            ("ata1: SATA link down (SStatus 0 SControl 300)", None),
            ("NET: Registered protocol family 10", None),
            (
                "oom_reaper: reaped process 4242 (stress), now anon-rss:0kB",
                None,
            ),
        ] {
            assert_eq!(name(line).as_deref(), want, "{line}");
        }
    }

    #[test]
    fn compile_errors_are_one_line() {
        let e = compile("(abc").unwrap_err();
        assert_eq!(e, "unclosed group");
        let e = Matcher::new(vec![Pattern {
            name: "Bad".into(),
            regex: "[z-a]".into(),
            problem: "X".into(),
            condition: false,
        }])
        .err()
        .unwrap();
        assert!(e.starts_with("pattern \"Bad\" does not compile: "), "{e}");
    }
}
