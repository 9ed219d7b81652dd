//! The kernel-log follower on a FIFO the test writes to: matches become events carrying the
//! line, a 1 MiB line and garbage bytes are survived, event-only patterns clear on the next
//! quiet pass while condition patterns stay, writers may come and go, and an unreadable source
//! is an ERROR.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use vigil_agent::node::config::{Kmsg, Pattern};
use vigil_agent::node::kmsg::KmsgDiagnostic;
use vigil_agent::node::{Diagnostic, Finding, HostPaths, NodeDiagnostics, problem};
use vigil_proto::Outcome;

const WAIT: Duration = Duration::from_secs(20);

fn paths_with_kmsg(root: &Path, kmsg: &Path) -> HostPaths {
    let mut p = HostPaths::under(root);
    p.kmsg = kmsg.to_owned();
    p
}

/// Runs passes until `done` holds for everything found so far, or fails after `WAIT`.
fn pass_until(
    d: &mut KmsgDiagnostic,
    paths: &HostPaths,
    done: impl Fn(&[Finding]) -> bool,
) -> Vec<Finding> {
    let deadline = Instant::now() + WAIT;
    let mut all = Vec::new();
    loop {
        all.extend(d.run(paths));
        if done(&all) {
            return all;
        }
        assert!(Instant::now() < deadline, "gave up waiting; found {all:#?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn events(f: &[Finding]) -> Vec<&Finding> {
    f.iter().filter(|f| f.event).collect()
}

fn fifo(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("kmsg");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    path
}

#[test]
fn follows_a_fifo_and_reports_matches_as_events() {
    let dir = tempfile::tempdir().unwrap();
    let kmsg = fifo(dir.path());
    let paths = paths_with_kmsg(dir.path(), &kmsg);
    let mut d = KmsgDiagnostic::new(NodeDiagnostics::default().kmsg);

    // The first pass starts the follower and says what it watches.
    let first = d.run(&paths);
    assert_eq!(first.len(), 8, "{first:#?}");
    assert!(first.iter().all(|f| f.outcome == Outcome::Success));
    assert_eq!(first[0].target, "OOMKilling");

    // Opening for writing waits for the follower's open for reading.
    let mut w = std::fs::OpenOptions::new().write(true).open(&kmsg).unwrap();
    let mut input = Vec::new();
    input.extend_from_slice(b"6,100,5000000,-;NET: Registered protocol family 10\n");
    input.extend_from_slice(b" SUBSYSTEM=net\n"); // a /dev/kmsg continuation line
    input.extend_from_slice(
        b"3,101,6000000,-;Out of memory: Killed process 4242 (stress) total-vm:1024kB, anon-rss:512kB\n",
    );
    // A 1 MiB line that matches at its start: kept to maxLineBytes, the rest counted.
    let mut huge = b"EXT4-fs error (device sda1): ".to_vec();
    huge.resize(1024 * 1024, b'x');
    input.extend_from_slice(&huge);
    input.push(b'\n');
    // Garbage: invalid UTF-8, NULs, a bare prefix.
    input.extend_from_slice(&[0xff, 0xfe, 0x00, b';', 0x80, b'\n']);
    input.extend_from_slice(b",,,;\n");
    input.extend_from_slice(b"INFO: task jbd2/sda1-8:311 blocked for more than 120 seconds.\n");
    w.write_all(&input).unwrap();
    w.flush().unwrap();

    let found = pass_until(&mut d, &paths, |f| events(f).len() >= 3);
    let ev = events(&found);
    assert_eq!(ev.len(), 3, "{ev:#?}");

    let oom = ev[0];
    assert_eq!(oom.outcome, Outcome::Failure);
    assert_eq!(oom.target, "OOMKilling");
    assert_eq!(oom.problem.as_deref(), Some(problem::OOM_KILLING));
    assert_eq!(
        oom.details["line"],
        "Out of memory: Killed process 4242 (stress) total-vm:1024kB, anon-rss:512kB"
    );
    assert_eq!(oom.details["reason"], "OOMKilling");
    assert_eq!(oom.details["kernel_seq"], "101");
    assert_eq!(oom.values["kernel_time_seconds"], 6.0);
    assert_eq!(oom.values["priority"], 3.0);
    assert!(!oom.details.contains_key("condition"));
    assert!(
        oom.reason
            .starts_with("kernel: Out of memory: Killed process 4242")
    );

    let ext4 = ev[1];
    assert_eq!(ext4.target, "Ext4Error");
    assert_eq!(ext4.problem.as_deref(), Some(problem::FILESYSTEM_ERROR));
    assert_eq!(ext4.details["line"].len(), 4096);
    assert_eq!(
        ext4.details["truncated_bytes"],
        (1024 * 1024 - 4096).to_string()
    );
    assert!(ext4.reason.chars().count() < 400, "the reason is short");

    let hung = ev[2];
    assert_eq!(hung.target, "TaskHung");
    assert_eq!(hung.problem.as_deref(), Some(problem::KERNEL_DEADLOCK));
    assert_eq!(hung.details["condition"], "true");

    // The source reported itself as followed, once.
    let source = kmsg.display().to_string();
    let src: Vec<_> = found.iter().filter(|f| f.target == source).collect();
    assert_eq!(src.len(), 1, "{found:#?}");
    assert_eq!(src[0].outcome, Outcome::Success);
    // Every line was read, garbage included (7 lines, the continuation line included).
    assert_eq!(d.lines_seen(), 7);

    // A quiet pass clears the event-only patterns (some may have cleared already if their
    // events came in an earlier pass); the hung task stays (a condition).
    let quiet = d.run(&paths);
    let last = |target: &str| {
        found
            .iter()
            .chain(&quiet)
            .rev()
            .find(|f| f.target == target)
            .map(|f| f.outcome)
    };
    assert_eq!(last("OOMKilling"), Some(Outcome::Success));
    assert_eq!(last("Ext4Error"), Some(Outcome::Success));
    assert_eq!(last("TaskHung"), Some(Outcome::Failure));
    assert!(d.run(&paths).is_empty(), "nothing new, nothing said");

    // The writer goes away and comes back: the follower waits for it and goes on.
    drop(w);
    let mut w = std::fs::OpenOptions::new().write(true).open(&kmsg).unwrap();
    w.write_all(b"e1000e 0000:00:19.0 eth0: NIC Link is Down\n")
        .unwrap();
    let found = pass_until(&mut d, &paths, |f| !events(f).is_empty());
    assert_eq!(
        events(&found)[0].problem.as_deref(),
        Some(problem::NETWORK_LINK_DOWN)
    );
}

#[test]
fn extra_patterns_add_to_the_defaults_and_storms_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let kmsg = fifo(dir.path());
    let paths = paths_with_kmsg(dir.path(), &kmsg);
    let config = Kmsg {
        extra_patterns: vec![Pattern {
            name: "Custom".into(),
            regex: r"^custom \d+$".into(),
            problem: "VigilCustom".into(),
            condition: false,
        }],
        max_events_per_pass: 5,
        ..NodeDiagnostics::default().kmsg
    };
    let mut d = KmsgDiagnostic::new(config);
    assert_eq!(d.run(&paths).len(), 9);
    let mut w = std::fs::OpenOptions::new().write(true).open(&kmsg).unwrap();
    let mut text = String::new();
    for i in 0..1500 {
        text.push_str(&format!("custom {i}\n"));
    }
    w.write_all(text.as_bytes()).unwrap();
    drop(w);
    let deadline = Instant::now() + WAIT;
    while d.lines_seen() < 1500 {
        assert!(Instant::now() < deadline, "read {} lines", d.lines_seen());
        std::thread::sleep(Duration::from_millis(10));
    }
    let f = d.run(&paths);
    let ev = events(&f);
    // At most maxEventsPerPass per pass; what the bounded queue could not hold is counted.
    assert_eq!(ev.len(), 5);
    assert_eq!(ev[0].details["line"], "custom 0");
    assert_eq!(ev[0].details["dropped_events"], "500");
    assert_eq!(ev[0].problem.as_deref(), Some("VigilCustom"));
}

/// Writers that come and go, each opening the FIFO the moment the last one left, are never
/// refused (EPIPE, no reader) and lose no line: the follower keeps the FIFO open throughout.
#[test]
fn writers_coming_and_going_are_never_refused() {
    let dir = tempfile::tempdir().unwrap();
    let kmsg = fifo(dir.path());
    let paths = paths_with_kmsg(dir.path(), &kmsg);
    let mut d = KmsgDiagnostic::new(NodeDiagnostics::default().kmsg);
    d.run(&paths);
    const WRITERS: u64 = 300;
    for i in 0..WRITERS {
        let mut w = std::fs::OpenOptions::new().write(true).open(&kmsg).unwrap();
        w.write_all(format!("writer {i}\n").as_bytes())
            .unwrap_or_else(|e| panic!("writer {i} was refused: {e}"));
    }
    let deadline = Instant::now() + WAIT;
    while d.lines_seen() < WRITERS {
        assert!(Instant::now() < deadline, "read {} lines", d.lines_seen());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(d.lines_seen(), WRITERS);
}

#[test]
fn an_unreadable_source_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-kmsg");
    let paths = paths_with_kmsg(dir.path(), &missing);
    let mut d = KmsgDiagnostic::new(NodeDiagnostics::default().kmsg);
    let found = pass_until(&mut d, &paths, |f| {
        f.iter().any(|f| f.outcome == Outcome::Error)
    });
    let err = found.iter().find(|f| f.outcome == Outcome::Error).unwrap();
    assert_eq!(err.target, missing.display().to_string());
    assert!(
        err.reason
            .starts_with(&format!("cannot open {}: No such file", missing.display())),
        "{}",
        err.reason
    );
    assert!(err.reason.contains("hostPaths.kmsg"), "{}", err.reason);
    // Reported on change only: the next pass is silent.
    assert!(d.run(&paths).iter().all(|f| f.outcome != Outcome::Error));
}

#[test]
fn a_regular_file_is_followed_from_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kern.log");
    std::fs::write(
        &file,
        "Out of memory: Killed process 1 (old) before the agent\n",
    )
    .unwrap();
    let paths = paths_with_kmsg(dir.path(), &file);
    let mut d = KmsgDiagnostic::new(NodeDiagnostics::default().kmsg);
    pass_until(&mut d, &paths, |f| {
        f.iter().any(|f| f.target == file.display().to_string())
    });
    let mut a = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .unwrap();
    a.write_all(b"Out of memory: Killed process 2 (new) after\n")
        .unwrap();
    let found = pass_until(&mut d, &paths, |f| !events(f).is_empty());
    let ev = events(&found);
    assert_eq!(ev.len(), 1);
    assert!(ev[0].details["line"].contains("(new)"), "{ev:#?}");
}

#[test]
fn a_pattern_that_does_not_compile_is_an_error_not_a_panic() {
    // validate() refuses it in a file; a config built in code still cannot crash the agent.
    let dir = tempfile::tempdir().unwrap();
    let paths = HostPaths::under(dir.path());
    let config = Kmsg {
        patterns: Some(vec![Pattern {
            name: "Broken".into(),
            regex: "(unclosed".into(),
            problem: "VigilBroken".into(),
            condition: false,
        }]),
        ..NodeDiagnostics::default().kmsg
    };
    let f = KmsgDiagnostic::new(config).run(&paths);
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].outcome, Outcome::Error);
    assert_eq!(
        f[0].reason,
        "pattern \"Broken\" does not compile: unclosed group"
    );
}
