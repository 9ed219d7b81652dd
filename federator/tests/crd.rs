//! The checked-in CRD matches the Rust types, and its schema does what it claims: CEL rules that
//! compile and refuse what `validate()` refuses, defaults that pass their own schema, durations
//! that humantime and CEL read alike, printer columns that point at real fields.

#[path = "crd/cel_eval.rs"]
mod cel_eval;
#[path = "crd/schema.rs"]
mod schema;

use std::path::{Path, PathBuf};

use cel_eval::Violation;
use serde::Deserialize;
use serde_json::{Value, json};
use vigil_federator::resource::{
    CheckState, GO_DURATION_PATTERN, HealthCheck, HealthCheckStatus, HumanDuration, LastResult,
    ProbeKind, ProbeSpec, ResultOutcome,
};

const CRD_FILE: &str = "manifests/crd/healthchecks.vigil.dev.yaml";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `openAPIV3Schema` of the CRD generated from the types.
fn crd_schema() -> Value {
    let crd: Value = serde_yaml::from_str(&vigil_federator::resource::crd_yaml()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn checked_in_crd_matches_the_types() {
    let generated = vigil_federator::resource::crd_yaml();
    let path = repo().join(CRD_FILE);
    if std::env::var_os("VIGIL_UPDATE_CRD").is_some_and(|v| v == "1") {
        std::fs::write(&path, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    if on_disk != generated {
        let first = on_disk
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| on_disk.lines().count().min(generated.lines().count()));
        panic!(
            "{CRD_FILE} is out of date with federator/src/resource.rs (first difference at line \
             {}).\nRegenerate it with\n  cargo run -p vigil-federator -- crd > {CRD_FILE}\nor\n  \
             VIGIL_UPDATE_CRD=1 cargo test -p vigil-federator --test crd",
            first + 1
        );
    }
}

#[test]
fn crd_names_scope_and_subresources() {
    let crd: Value = serde_yaml::from_str(&vigil_federator::resource::crd_yaml()).unwrap();
    assert_eq!(crd["metadata"]["name"], "healthchecks.vigil.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["hc"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["subresources"]["status"], json!({}));
    let text = serde_json::to_string(version).unwrap();
    assert!(!text.contains("$ref"), "structural schema: no references");
    assert!(
        !text.contains("Auto-generated"),
        "the root schema has a description"
    );
}

#[test]
fn printer_columns_make_kubectl_get_useful_and_point_at_real_fields() {
    let crd: Value = serde_yaml::from_str(&vigil_federator::resource::crd_yaml()).unwrap();
    let columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .expect("printer columns");
    let default_view: Vec<&str> = columns
        .iter()
        .filter(|c| c.get("priority").is_none_or(|p| p == 0))
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        default_view,
        ["Probe", "Target", "State", "Failing", "Last", "Age"]
    );
    let root = crd_schema();
    for column in columns {
        let path = column["jsonPath"].as_str().unwrap();
        if path == ".metadata.creationTimestamp" {
            continue;
        }
        let field = schema::at_path(&root, path)
            .unwrap_or_else(|| panic!("column {} points at {path}, not in the schema", column));
        let want = match column["type"].as_str().unwrap() {
            "date" => "string",
            other => other,
        };
        assert_eq!(field["type"], want, "column {column}");
    }
}

#[test]
fn defaults_pass_their_own_schema() {
    // The API server refuses a CRD whose defaults do not validate; humantime would write the
    // 72h default as "3days".
    let problems = schema::check_defaults(&crd_schema());
    assert!(problems.is_empty(), "{problems:#?}");
    // And the check itself bites:
    let bad = json!({"type": "object", "properties": {"d": {
        "type": "string", "pattern": GO_DURATION_PATTERN, "default": "3days"}}});
    assert_eq!(schema::check_defaults(&bad).len(), 1);
}

#[test]
fn crd_durations_read_the_same_in_humantime_and_cel() {
    let pattern = regex::Regex::new(GO_DURATION_PATTERN).unwrap();
    for text in [
        "10s",
        "500ms",
        "1m30s",
        "1h30m",
        "72h",
        "250us",
        "100ns",
        "0s",
        "2h45m10s500ms",
    ] {
        assert!(pattern.is_match(text), "{text} should match");
        let rust: HumanDuration = text.parse().unwrap();
        let nanos = cel_eval::duration_nanos(text).unwrap();
        assert_eq!(
            i128::try_from(rust.0.as_nanos()).unwrap(),
            i128::from(nanos),
            "{text}: humantime and CEL disagree"
        );
    }
    // humantime-only (or Go-only) forms stay out of CRDs, with a clear pattern error instead of a
    // CEL runtime error.
    for text in [
        "1 min", "2min", "1d", "1.5h", "2 h", "10", "-5s", "1h 30m", "",
    ] {
        assert!(!pattern.is_match(text), "{text:?} should not match");
    }
}

#[test]
fn every_cel_rule_compiles() {
    let rules = schema::rules(&crd_schema());
    assert!(rules.len() >= 8, "{rules:#?}");
    for (path, rule) in rules {
        cel_eval::compile(&rule).unwrap_or_else(|e| panic!("{path}: {rule:?}: {e}"));
    }
}

/// Spec fragments: what the CEL rules must say (field path, words of the message), and the
/// field `HealthCheck::validate()` must name too (Rust stays the source of truth).
/// (case name, spec YAML, expected (field path, words of the message)).
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const CASES: &[Case] = &[
    ("minimal", "probe: {http: {url: 'http://a:80/'}}", &[]),
    (
        "timeout equal to interval",
        "interval: 5s\ntimeout: 5s\nprobe: {tcp: {address: 'a:1'}}",
        &[("spec.timeout", "less than interval")],
    ),
    (
        "timeout above the default interval",
        "timeout: 1m\nprobe: {tcp: {address: 'a:1'}}",
        &[("spec.timeout", "less than interval")],
    ),
    (
        "zero interval",
        "interval: 0s\nprobe: {tcp: {address: 'a:1'}}",
        &[("spec.interval", "greater than 0s")],
    ),
    (
        "zero timeout",
        "timeout: 0ms\nprobe: {tcp: {address: 'a:1'}}",
        &[("spec.timeout", "greater than 0s")],
    ),
    (
        "failing interval not above timeout",
        "interval: 10s\ntimeout: 2s\nfailingInterval: 2s\nprobe: {tcp: {address: 'a:1'}}",
        &[("spec.failingInterval", "greater than timeout")],
    ),
    (
        "no probe kind",
        "probe: {}",
        &[("spec.probe", "exactly one probe kind")],
    ),
    (
        "two probe kinds",
        "probe: {tcp: {address: 'a:1'}, icmp: {host: a}}",
        &[("spec.probe", "exactly one probe kind")],
    ),
    (
        "NodeSelector without labels",
        "placement: NodeSelector\nprobe: {icmp: {host: a}}",
        &[("spec.nodeSelector", "must name at least one label")],
    ),
    (
        "labels without NodeSelector",
        "nodeSelector: {zone: a}\nprobe: {icmp: {host: a}}",
        &[(
            "spec.nodeSelector",
            "only used with placement: NodeSelector",
        )],
    ),
    (
        "NodeSelector with labels",
        "placement: NodeSelector\nnodeSelector: {zone: a}\nprobe: {icmp: {host: a}}",
        &[],
    ),
    (
        "client certificate without key",
        "probe: {grpc: {address: 'a:1', tls: {clientCertPem: x}}}",
        &[("spec.probe.grpc.tls", "set together")],
    ),
    (
        "CA with insecureSkipVerify",
        "probe: {http: {url: 'https://a/', tls: {insecureSkipVerify: true, caPem: x}}}",
        &[("spec.probe.http.tls", "no effect")],
    ),
];

#[test]
fn cel_rules_refuse_what_validate_refuses() {
    let root = crd_schema();
    let spec_schema = &root["properties"]["spec"];
    for (name, yaml, expected) in CASES {
        let mut spec: Value = serde_yaml::from_str(yaml).unwrap();
        schema::apply_defaults(spec_schema, &mut spec);
        let got: Vec<Violation> = cel_eval::evaluate(spec_schema, &spec, "spec")
            .unwrap_or_else(|e| panic!("{name}: a rule failed to run: {e}"));
        assert_eq!(
            got.len(),
            expected.len(),
            "{name}: CEL said {got:#?}, expected {expected:?}"
        );
        let check: HealthCheck = serde_json::from_value(json!({
            "apiVersion": "vigil.dev/v1alpha1", "kind": "HealthCheck",
            "metadata": {"name": "c", "namespace": "n"}, "spec": spec,
        }))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        let rust = check.validate();
        for (path, words) in *expected {
            assert!(
                got.iter()
                    .any(|v| v.path == *path && v.message.contains(words)),
                "{name}: expected {path}: ...{words}... in {got:#?}"
            );
            assert!(
                rust.iter().any(|e| e.path == *path),
                "{name}: CEL refuses {path} but validate() does not: {rust:?}"
            );
        }
        if expected.is_empty() {
            assert!(rust.is_empty(), "{name}: {rust:?}");
        }
    }
}

#[test]
fn example_healthcheck_loads_validates_and_is_not_pruned() {
    let dir = repo().join("examples/kubernetes");
    let loaded = vigil_federator::loader::load_dir(&dir).unwrap();
    assert!(loaded.errors.is_empty(), "{:#?}", loaded.errors);
    assert!(
        !loaded.checks.is_empty(),
        "no HealthCheck in {}",
        dir.display()
    );
    // What the controller will show as status.probe and status.target.
    let check = &loaded.checks[0].check;
    assert_eq!(check.spec.probe.kind(), Some(ProbeKind::Http));
    assert_eq!(
        check.spec.probe.target(),
        "http://vigil-federator.vigil.svc:8080/healthz"
    );
    let mut two = check.spec.probe.clone();
    two.icmp = serde_json::from_value(json!({"host": "a"})).unwrap();
    assert_eq!(two.kind(), None, "two kinds");
    assert_eq!(ProbeSpec::default().kind(), None, "no kind");
    let root = crd_schema();
    for file in std::fs::read_dir(&dir).unwrap() {
        let path = file.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let mut value = Value::deserialize(doc).unwrap();
            let where_ = format!("{} document {}", path.display(), i + 1);
            // The API server silently drops fields its schema lacks: none may be lost.
            let pruned = schema::unknown_fields(&root, &value, "");
            assert!(pruned.is_empty(), "{where_}: {pruned:?}");
            let spec_schema = &root["properties"]["spec"];
            schema::apply_defaults(spec_schema, &mut value["spec"]);
            let got = cel_eval::evaluate(spec_schema, &value["spec"], "spec").unwrap();
            assert!(got.is_empty(), "{where_}: {got:#?}");
            let problems = schema::check_value(&root, &value, "");
            assert!(problems.is_empty(), "{where_}: {problems:#?}");
        }
    }
}

#[test]
fn status_fields_survive_the_schema() {
    let status = HealthCheckStatus {
        observed_generation: Some(3),
        probe: Some(ProbeKind::Http),
        target: Some("http://a:80/".into()),
        state: Some(CheckState::Failing),
        failing_targets: Some(2),
        last_result: Some(LastResult {
            time: serde_json::from_value(json!("2026-01-02T03:04:05Z")).unwrap(),
            outcome: ResultOutcome::Timeout,
            reason: "timed out after 2s in TLS handshake".into(),
            target: "http://a:80/".into(),
            node: Some("node-1".into()),
            latency_ms: Some(2001),
        }),
        conditions: Vec::new(),
    };
    let value = json!({"status": serde_json::to_value(&status).unwrap()});
    assert_eq!(value["status"]["lastResult"]["outcome"], "TIMEOUT");
    assert_eq!(value["status"]["lastResult"]["latencyMs"], 2001);
    assert_eq!(value["status"]["probe"], "http");
    let root = crd_schema();
    assert_eq!(
        schema::unknown_fields(&root, &value, ""),
        Vec::<String>::new()
    );
    let status_schema = &root["properties"]["status"];
    assert_eq!(
        schema::check_value(status_schema, &value["status"], ".status"),
        Vec::<String>::new()
    );
    // And the checks bite on a field the schema lacks and on a value outside an enum.
    let bad = json!({"status": {"stat": "Failing", "state": "Broken"}});
    assert_eq!(
        schema::unknown_fields(&root, &bad, ""),
        vec![".status.stat".to_owned()]
    );
    assert_eq!(
        schema::check_value(status_schema, &bad["status"], ".status"),
        vec![r#".status.state: "Broken" is not one of [String("Healthy"), String("Failing"), String("Unknown"), String("Invalid")]"#.to_owned()]
    );
}
