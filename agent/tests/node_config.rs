//! The NodeDiagnostics file: each invalid fixture in `tests/node-config/` paired with the exact
//! message it must produce, and a complete valid file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use vigil_agent::node::config::LoadAverage;
use vigil_agent::node::{ConfigError, NodeDiagnostics, Settings};

fn fixture(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/node-config")
        .join(file)
}

fn parse(file: &str) -> Result<NodeDiagnostics, ConfigError> {
    let text = std::fs::read_to_string(fixture(file)).unwrap();
    NodeDiagnostics::parse(&text, Path::new(file))
}

#[test]
fn invalid_files_give_exact_messages() {
    let cases: &[(&str, &str)] = &[
        (
            "invalid-unknown-field.yaml",
            "diagnostics file invalid-unknown-field.yaml: memory.minAvailablePercnt: unknown field `minAvailablePercnt`, expected one of `enabled`, `interval`, `minAvailablePercent`, `minAvailable` at line 2 column 3",
        ),
        (
            "invalid-pattern-field.yaml",
            "diagnostics file invalid-pattern-field.yaml: kmsg.patterns[0].regexp: unknown field `regexp`, expected one of `name`, `regex`, `problem`, `condition` at line 3 column 19",
        ),
        (
            "invalid-bad-regex.yaml",
            "diagnostics file invalid-bad-regex.yaml is not valid:\n  - kmsg.extraPatterns[0].regex: pattern \"GpuFallenOff\" does not compile: unclosed group",
        ),
        (
            "invalid-thresholds.yaml",
            "diagnostics file invalid-thresholds.yaml is not valid:\n\
             \x20 - memory.minAvailablePercent: 150 is not a percentage; use a number above 0 and at most 100\n\
             \x20 - disk.interval: 10ms is too short; use at least 100ms\n\
             \x20 - disk.maxInodesUsedPercent: 0 is not a percentage; use a number above 0 and at most 100\n\
             \x20 - load.maxPerCore: 0 must be a number above 0, e.g. 4\n\
             \x20 - psi.ioFullPercent: -5 is not a percentage; use a number above 0 and at most 100\n\
             \x20 - kmsg.maxLineBytes: 10 is out of range; use 256 to 1048576\n\
             \x20 - kmsg.maxEventsPerPass: must be at least 1\n\
             \x20 - kubelet.timeout: 5s must be shorter than kubelet.interval (5s)\n\
             \x20 - kubelet.url: \"https://127.0.0.1:10250/healthz\" uses https; only http:// is supported (the kubelet's healthz port is plain HTTP)",
        ),
        (
            "invalid-duration.yaml",
            "diagnostics file invalid-duration.yaml: disk.interval: \"soon\" is not a duration (expected number at 0); write it like 10s, 500ms or 2m at line 2 column 3",
        ),
        (
            "invalid-size.yaml",
            "diagnostics file invalid-size.yaml: memory.minAvailable: \"lots\" is not a size; write a number of bytes or e.g. 100Mi, 2Gi, 500M at line 2 column 3",
        ),
        (
            "invalid-kind.yaml",
            "diagnostics file invalid-kind.yaml is not valid:\n\
             \x20 - apiVersion: \"vigil.dev/v1\" is not supported; use vigil.dev/v1alpha1\n\
             \x20 - kind: \"HealthCheck\" is not NodeDiagnostics; this file configures node diagnostics",
        ),
        (
            "invalid-patterns.yaml",
            "diagnostics file invalid-patterns.yaml is not valid:\n\
             \x20 - kmsg.extraPatterns[0].name: \"OOMKilling\" is used by another pattern (built-in ones included); pick another name\n\
             \x20 - kmsg.extraPatterns[1].name: \"has space\" is not a name; use letters, digits, - and _ (e.g. OOMKilling)\n\
             \x20 - kmsg.extraPatterns[1].problem: \"lowercaseClass\" is not a problem class; use a NodeCondition type in CamelCase such as VigilKernelDeadlock\n\
             \x20 - kmsg.extraPatterns[3].name: \"Twice\" is used by another pattern (built-in ones included); pick another name",
        ),
        (
            "invalid-paths.yaml",
            "diagnostics file invalid-paths.yaml is not valid:\n\
             \x20 - hostPaths.proc: host/proc is not an absolute path; start it with /\n\
             \x20 - readonlyFilesystem.paths[1]: var/lib/kubelet is not an absolute path; start it with /\n\
             \x20 - runtime.sockets[0]: containerd.sock is not an absolute path; start it with /",
        ),
        (
            "invalid-load-average.yaml",
            "diagnostics file invalid-load-average.yaml: load.average: unknown variant `2m`, expected one of `1m`, `5m`, `15m` at line 1 column 17",
        ),
    ];
    let mut covered: Vec<&str> = cases.iter().map(|(f, _)| *f).collect();
    for (file, want) in cases {
        match parse(file) {
            Ok(_) => panic!("{file} was accepted"),
            Err(e) => assert_eq!(e.to_string(), *want, "{file}"),
        }
    }
    // Every invalid fixture has its case.
    let mut on_disk: Vec<String> = std::fs::read_dir(fixture(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("invalid-"))
        .collect();
    on_disk.sort();
    covered.sort();
    assert_eq!(on_disk, covered);
}

#[test]
fn a_complete_file_loads_with_every_setting() {
    let c = NodeDiagnostics::load(&fixture("valid-full.yaml")).unwrap();
    assert_eq!(c.kind.as_deref(), Some("NodeDiagnostics"));
    assert_eq!(c.load.average, LoadAverage::Five);
    assert_eq!(c.psi.cpu_some_percent, None);
    assert_eq!(c.psi.memory_full_percent, Some(20.0));
    assert_eq!(c.clock.max_federator_offset, Duration::from_millis(500));
    let patterns = c.kmsg.effective_patterns();
    assert_eq!(patterns.last().unwrap().name, "GpuXid");
    assert!(patterns.last().unwrap().condition);
    assert_eq!(patterns.len(), 9);
    // hostPaths.root in the file wins over --host-root.
    let s = Settings::load(Some(&fixture("valid-full.yaml")), Path::new("/elsewhere")).unwrap();
    assert_eq!(s.paths.proc, PathBuf::from("/host/proc"));
    assert_eq!(s.paths.kmsg, PathBuf::from("/host/dev/kmsg"));
}

#[test]
fn host_root_and_missing_files() {
    let s = Settings::load(None, Path::new("/host")).unwrap();
    assert_eq!(s.paths.sys, PathBuf::from("/host/sys"));
    assert!(s.config.kmsg.enabled);
    let e = Settings::load(Some(Path::new("/no/such/diagnostics.yaml")), Path::new("/"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("cannot read the diagnostics file /no/such/diagnostics.yaml: No such file"),
        "{e}"
    );
    assert!(
        e.ends_with("pass an existing file with --diagnostics (or VIGIL_DIAGNOSTICS)"),
        "{e}"
    );
    // An empty file (a fresh ConfigMap) is the defaults.
    let c = NodeDiagnostics::parse("", Path::new("empty.yaml")).unwrap();
    assert_eq!(c.disk.max_used_percent, 90.0);
    let c = NodeDiagnostics::parse("{}\n", Path::new("braces.yaml")).unwrap();
    assert_eq!(c.memory.min_available_percent, 5.0);
}
