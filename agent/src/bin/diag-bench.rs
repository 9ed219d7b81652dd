//! `diag-bench`: what node diagnostics cost on this machine. Prints the CPU time of one full
//! pass (every diagnostic once, against the real `/proc`, `/sys` and `/dev/kmsg`) averaged over
//! many passes, per diagnostic and as a share of a core at the default intervals; and the
//! kernel-log matching throughput with the default patterns over a realistic mixed line set,
//! both in memory and through a FIFO followed by the real follower thread.
//!
//! Usage: `diag-bench [PASSES] [LINES] [ROOT]` (defaults 2000, 1000000, /). Build it with
//! `--release` for meaningful figures. Figures, not a pass/fail test.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::time::{ClockId, clock_gettime};
use vigil_agent::node::kmsg::{KmsgDiagnostic, LineBuffer, Matcher, check_line};
use vigil_agent::node::{Diagnostic, HostPaths, NodeDiagnostics, config::default_patterns};

fn cpu(clock: ClockId) -> Duration {
    clock_gettime(clock)
        .map(|t| Duration::new(t.tv_sec() as u64, t.tv_nsec() as u32))
        .unwrap_or_default()
}

/// utime + stime of this process from /proc/self/stat, in clock ticks (a cross-check).
fn stat_ticks() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = s.rsplit_once(')')?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let passes: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let lines: usize = args
        .get(2)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let root = PathBuf::from(args.get(3).map_or("/", String::as_str));
    let config = NodeDiagnostics::default();
    let paths = config.host_paths(&root);
    full_pass(&config, &paths, passes);
    matching(lines);
    through_fifo(lines);
}

fn full_pass(config: &NodeDiagnostics, paths: &HostPaths, passes: u32) {
    let mut diags = vigil_agent::node::build(config, Arc::default());
    // Warm up (the first kmsg pass starts its follower thread; page cache; DNS-free connects).
    for _ in 0..10 {
        for d in diags.iter_mut() {
            d.run(paths);
        }
    }
    let mut per: Vec<Duration> = vec![Duration::ZERO; diags.len()];
    let mut findings = 0usize;
    let ticks0 = stat_ticks();
    let p0 = cpu(ClockId::CLOCK_PROCESS_CPUTIME_ID);
    let w0 = Instant::now();
    for _ in 0..passes {
        for (i, d) in diags.iter_mut().enumerate() {
            let t0 = cpu(ClockId::CLOCK_THREAD_CPUTIME_ID);
            findings += d.run(paths).len();
            per[i] += cpu(ClockId::CLOCK_THREAD_CPUTIME_ID) - t0;
        }
    }
    let wall = w0.elapsed();
    let process = cpu(ClockId::CLOCK_PROCESS_CPUTIME_ID) - p0;
    let ticks = match (ticks0, stat_ticks()) {
        (Some(a), Some(b)) => b - a,
        _ => 0,
    };
    let hz = 100.0; // USER_HZ on Linux
    println!(
        "full diagnostics pass ({} diagnostics, root {}, {passes} passes, {} findings each):",
        diags.len(),
        paths.root.display(),
        findings / passes as usize
    );
    println!(
        "  CPU per pass: {:.3} ms (process CPU clock); {:.3} ms (/proc/self/stat utime+stime); wall {:.3} ms",
        process.as_secs_f64() * 1e3 / f64::from(passes),
        ticks as f64 / hz * 1e3 / f64::from(passes),
        wall.as_secs_f64() * 1e3 / f64::from(passes)
    );
    let mut share = 0.0;
    for (d, t) in diags.iter().zip(&per) {
        let each = t.as_secs_f64() / f64::from(passes);
        share += each / d.interval().as_secs_f64();
        println!(
            "    {:<12} {:>8.1} us/pass  every {}",
            d.name(),
            each * 1e6,
            humantime::format_duration(d.interval())
        );
    }
    println!(
        "  at the default intervals: {:.4}% of one core",
        share * 100.0
    );
}

/// A realistic mix of kernel records: mostly boot/driver/network chatter, about 1% matching.
fn line_set(n: usize) -> Vec<u8> {
    let chatter = [
        "NET: Registered PF_INET6 protocol family",
        "IPv6: ADDRCONF(NETDEV_CHANGE): eth0: link becomes ready",
        "cni0: port 3(veth1a2b3c4d) entered forwarding state",
        "cni0: port 3(veth1a2b3c4d) entered disabled state",
        "device veth1a2b3c4d entered promiscuous mode",
        "audit: type=1400 audit(1700000000.123:456): apparmor=\"STATUS\" operation=\"profile_load\" profile=\"unconfined\" name=\"cri-containerd.apparmor.d\" pid=12345 comm=\"apparmor_parser\"",
        "EXT4-fs (sda1): mounted filesystem with ordered data mode. Quota mode: none.",
        "overlayfs: upperdir is in-use as upperdir/workdir of another mount, accessing files from both mounts will result in undefined behavior.",
        "xfs filesystem being mounted at /var/lib/kubelet/pods/abc/volumes supports timestamps until 2038",
        "IPVS: rr: TCP 10.96.0.1:443 - no destination available",
        "nf_conntrack: default automatic helper assignment has been turned off for security reasons",
        "TCP: request_sock_TCP: Possible SYN flooding on port 8080. Sending cookies.",
        "kauditd_printk_skb: 12 callbacks suppressed",
        "usb 1-1: new high-speed USB device number 2 using xhci_hcd",
        "systemd[1]: Started kubelet.service - kubelet: The Kubernetes Node Agent.",
        "eth0: renamed from veth9f8e7d6",
        "bridge: filtering via arp/ip/ip6tables is no longer available by default.",
        "Memory cgroup stats for /kubepods/burstable/pod1234: anon 1048576 file 0",
        "oom_reaper: reaped process 4242 (java), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
        "sd 0:0:0:0: [sda] Write cache: enabled, read cache: enabled, doesn't support DPO or FUA",
    ];
    let problems = [
        "Memory cgroup out of memory: Killed process 4242 (java) total-vm:4194304kB, anon-rss:2097152kB, file-rss:0kB",
        "INFO: task kworker/u8:2:311 blocked for more than 120 seconds.",
        "EXT4-fs error (device sda1): ext4_find_entry:1455: inode #2: comm ls: reading directory lblock 0",
        "e1000e 0000:00:19.0 eth0: NIC Link is Down",
    ];
    let mut out = Vec::with_capacity(n * 100);
    for i in 0..n {
        let msg = if i % 100 == 50 {
            problems[(i / 100) % problems.len()]
        } else {
            chatter[i % chatter.len()]
        };
        let _ = writeln!(out, "6,{i},{},-;{msg}", 1_000_000 + i * 37);
    }
    out
}

fn matching(n: usize) {
    let input = line_set(n);
    let matcher = Matcher::new(default_patterns()).expect("the built-in patterns compile");
    let mut lb = LineBuffer::new(4096);
    let mut seen = 0usize;
    let mut matched = 0usize;
    let c0 = cpu(ClockId::CLOCK_THREAD_CPUTIME_ID);
    let w0 = Instant::now();
    // Fed in /dev/kmsg-sized reads: one record per read is the worst case; 64 KiB the best.
    for chunk in input.chunks(64 * 1024) {
        lb.feed(chunk, |line, cut| {
            seen += 1;
            if check_line(&matcher, line, cut).is_some() {
                matched += 1;
            }
        });
    }
    let wall = w0.elapsed();
    let c = cpu(ClockId::CLOCK_THREAD_CPUTIME_ID) - c0;
    println!(
        "kmsg matching in memory ({} patterns, {seen} lines of {:.0} bytes on average, {matched} matched):",
        matcher.patterns().len(),
        input.len() as f64 / seen as f64
    );
    println!(
        "  {:.0} lines/s per CPU second ({:.0} lines/s wall); {:.2} us per line",
        seen as f64 / c.as_secs_f64(),
        seen as f64 / wall.as_secs_f64(),
        c.as_secs_f64() * 1e6 / seen as f64
    );
}

fn through_fifo(n: usize) {
    let input = line_set(n);
    let dir = std::env::temp_dir().join(format!("diag-bench-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let fifo = dir.join("kmsg");
    let _ = std::fs::remove_file(&fifo);
    if let Err(e) = nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
        println!(
            "kmsg through a FIFO: skipped, cannot make {}: {e}",
            fifo.display()
        );
        return;
    }
    let mut paths = HostPaths::under("/");
    paths.kmsg = fifo.clone();
    let mut config = NodeDiagnostics::default().kmsg;
    config.max_events_per_pass = usize::MAX;
    let mut d = KmsgDiagnostic::new(config);
    d.run(&paths); // starts the follower
    let c0 = cpu(ClockId::CLOCK_PROCESS_CPUTIME_ID);
    let w0 = Instant::now();
    let mut w = match std::fs::OpenOptions::new().write(true).open(&fifo) {
        Ok(w) => w,
        Err(e) => {
            println!(
                "kmsg through a FIFO: skipped, cannot open {}: {e}",
                fifo.display()
            );
            return;
        }
    };
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&input);
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut events = 0usize;
    while (d.lines_seen() as usize) < n && Instant::now() < deadline {
        events += d.run(&paths).iter().filter(|f| f.event).count();
        std::thread::sleep(Duration::from_millis(5));
    }
    let wall = w0.elapsed();
    let c = cpu(ClockId::CLOCK_PROCESS_CPUTIME_ID) - c0;
    let _ = writer.join();
    events += d.run(&paths).iter().filter(|f| f.event).count();
    let seen = d.lines_seen();
    println!("kmsg through a FIFO with the follower thread ({seen} lines, {events} events):");
    println!(
        "  {:.0} lines/s wall; {:.0} lines per CPU second of the whole process (writer included)",
        seen as f64 / wall.as_secs_f64(),
        seen as f64 / c.as_secs_f64()
    );
    drop(d);
    let _ = std::fs::remove_file(&fifo);
    let _ = std::fs::remove_dir(&dir);
}
