//! Table test: every `testdata/invalid/*.yaml` paired with the exact messages it must produce.

use std::path::{Path, PathBuf};

use super::*;

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

fn load_one(rel: &str) -> Loaded {
    let path = testdata(rel);
    let text = std::fs::read_to_string(&path).unwrap();
    let mut loaded = Loaded::default();
    parse_file(Path::new(rel), &text, &mut loaded);
    loaded
}

const CASES: &[(&str, &[&str])] = &[
    (
        "malformed-yaml",
        &[
            "invalid/malformed-yaml.yaml doc 1: not valid YAML: did not find expected ',' or '}' at line 6 column 1, while parsing a flow mapping at line 5 column 17",
        ],
    ),
    (
        "unknown-probe-kind",
        &[
            "invalid/unknown-probe-kind.yaml doc 1: spec.probe.smtp: unknown field `smtp`, expected one of `http`, `tcp`, `grpc`, `dns`, `icmp`, `tls`",
        ],
    ),
    (
        "zero-interval",
        &["invalid/zero-interval.yaml doc 1: spec.interval: must be greater than 0s"],
    ),
    (
        "negative-interval",
        &[
            "invalid/negative-interval.yaml doc 1: spec.interval: invalid duration \"-5s\": a duration cannot be negative; write it like 10s, 500ms or 2m",
        ],
    ),
    (
        "timeout-not-below-interval",
        &[
            "invalid/timeout-not-below-interval.yaml doc 1: spec.timeout: must be less than spec.interval (5s >= 5s)",
        ],
    ),
    (
        "bad-url",
        &[
            "invalid/bad-url.yaml doc 1: spec.probe.http.url: \"http//missing-colon/healthz\" is not a valid URL: relative URL without a base",
        ],
    ),
    (
        "bad-address",
        &[
            "invalid/bad-address.yaml doc 1: spec.probe.tcp.address: \"db.internal\" is not host:port: the port is missing",
        ],
    ),
    (
        "bad-port",
        &[
            "invalid/bad-port.yaml doc 1: spec.probe.tcp.address: \"db.internal:99999\" is not host:port: port \"99999\" is not a number from 1 to 65535",
        ],
    ),
    (
        "two-probe-kinds",
        &[
            "invalid/two-probe-kinds.yaml doc 1: spec.probe: exactly one probe kind must be set (found http and tcp); choose one of http, tcp, grpc, dns, icmp, tls",
        ],
    ),
    (
        "no-probe-kind",
        &[
            "invalid/no-probe-kind.yaml doc 1: spec.probe: exactly one probe kind must be set (found none); choose one of http, tcp, grpc, dns, icmp, tls",
        ],
    ),
    (
        "unknown-field",
        &[
            "invalid/unknown-field.yaml doc 1: spec.intervall: unknown field `intervall`, expected one of `interval`, `timeout`, `retries`, `failureThreshold`, `successThreshold`, `failingInterval`, `placement`, `nodeSelector`, `severity`, `labels`, `runbookUrl`, `probe`",
        ],
    ),
    (
        "bad-regex",
        &[
            "invalid/bad-regex.yaml doc 1: spec.probe.http.bodyMatches: \"ok(\" is not a valid regular expression: error: unclosed group",
        ],
    ),
    (
        "bad-status",
        &[
            "invalid/bad-status.yaml doc 1: spec.probe.http.expectStatus[1]: \"abc\" is not a status code or range; write 200, \"200-299\" or \"2xx\"",
            "invalid/bad-status.yaml doc 1: spec.probe.http.expectStatus[2]: 700 is not an HTTP status (100-599)",
        ],
    ),
    (
        "wrong-kind",
        &[
            "invalid/wrong-kind.yaml doc 1: apiVersion/kind: expected vigil.dev/v1alpha1/HealthCheck, found v1/ConfigMap; only HealthCheck resources belong in the checks folder",
        ],
    ),
    (
        "reserved-label",
        &[
            "invalid/reserved-label.yaml doc 1: spec.labels.bad-name: is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)",
            "invalid/reserved-label.yaml doc 1: spec.labels.cluster: is set by Vigil itself; reserved: alertname, check, namespace, name, target, cluster, node, severity, agent, outcome, scope",
        ],
    ),
    (
        "retries-exceed-interval",
        &[
            "invalid/retries-exceed-interval.yaml doc 1: spec.retries: 3 attempts of up to 4s each take 12s in the worst case, longer than spec.interval (10s); lower retries or timeout, or raise the interval",
        ],
    ),
    (
        "failing-interval-below-timeout",
        &[
            "invalid/failing-interval-below-timeout.yaml doc 1: spec.failingInterval: must be greater than the timeout (1s <= 2s)",
        ],
    ),
    (
        "unitless-duration",
        &[
            "invalid/unitless-duration.yaml doc 1: spec.interval: a bare number (10) has no unit; write it like 10s or 10ms",
        ],
    ),
    (
        "negative-retries",
        &[
            "invalid/negative-retries.yaml doc 1: spec.retries: invalid value: integer `-1`, expected u32",
        ],
    ),
    (
        "node-selector-missing",
        &[
            "invalid/node-selector-missing.yaml doc 1: spec.nodeSelector: must name at least one label with placement: NodeSelector",
        ],
    ),
    (
        "bad-name",
        &[
            "invalid/bad-name.yaml doc 1: metadata.name: \"Checkout_API\" is not a valid Kubernetes name (lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters)",
        ],
    ),
    (
        "second-doc-bad",
        &[
            "invalid/second-doc-bad.yaml doc 2: spec.timeout: must be less than spec.interval (5s >= 5s)",
        ],
    ),
];

#[test]
fn every_invalid_fixture_gives_its_exact_messages() {
    let mut failures = Vec::new();
    for (name, expected) in CASES {
        let loaded = load_one(&format!("invalid/{name}.yaml"));
        let got: Vec<String> = loaded.errors.iter().map(ToString::to_string).collect();
        if got != *expected {
            failures.push(format!(
                "{name}:\n  expected {expected:#?}\n  got      {got:#?}"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_fixture_file_has_a_case() {
    let mut files: Vec<String> = std::fs::read_dir(testdata("invalid"))
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    files.sort();
    let mut cases: Vec<String> = CASES.iter().map(|(n, _)| (*n).to_owned()).collect();
    cases.sort();
    assert_eq!(files, cases);
}

#[test]
fn valid_checks_in_a_bad_file_keep_loading() {
    let loaded = load_one("invalid/second-doc-bad.yaml");
    assert_eq!(loaded.checks.len(), 1);
    assert_eq!(loaded.checks[0].check.id(), "t/c");
}

#[test]
fn multi_document_file_loads_with_defaults() {
    let loaded = load_one("valid/two-docs.yaml");
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let ids: Vec<String> = loaded.checks.iter().map(|c| c.check.id()).collect();
    assert_eq!(ids, ["shop/web", "default/db"]);
    let db = &loaded.checks[1].check.spec;
    assert_eq!(db.interval.to_string(), "30s");
    assert_eq!(db.effective_timeout().to_string(), "5s");
    assert_eq!(db.failure_threshold, 3);
}

#[test]
fn whole_folder_reports_bad_files_and_keeps_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(testdata("valid/two-docs.yaml"), dir.path().join("a.yaml")).unwrap();
    std::fs::copy(testdata("invalid/bad-url.yaml"), dir.path().join("b.yml")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
    // The same check again in another file is refused, naming the first definition.
    std::fs::copy(testdata("valid/two-docs.yaml"), dir.path().join("c.yaml")).unwrap();
    let loaded = load_dir(dir.path()).unwrap();
    assert_eq!(loaded.checks.len(), 2);
    assert_eq!(loaded.errors.len(), 3, "{:#?}", loaded.errors);
    assert!(
        loaded.errors[0]
            .to_string()
            .contains("b.yml doc 1: spec.probe.http.url")
    );
    assert!(
        loaded.errors[1].to_string().ends_with(&format!(
            "c.yaml doc 1: metadata.name: HealthCheck shop/web is already defined in {} doc 1; names must be unique per namespace",
            dir.path().join("a.yaml").display()
        )),
        "{}",
        loaded.errors[1]
    );
}

#[test]
fn missing_folder_is_a_clear_error() {
    let err = load_dir(Path::new("/nonexistent/vigil-checks"))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("cannot read the checks folder /nonexistent/vigil-checks:"),
        "{err}"
    );
    assert!(
        err.ends_with("pass an existing folder with --checks"),
        "{err}"
    );
}
