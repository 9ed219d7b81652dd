//! Vigil's alert rules: `promtool check rules` and `promtool test rules` over
//! manifests/prometheus/, a firing and a quiet unit-test case for every alert, the house rules of
//! an alert (for, severity, annotations, a runbook section in docs/dashboards.md), and the
//! PrometheusRule kept equal to the plain rules file.

use std::collections::BTreeSet;
use std::process::Command;

use super::repo;

const PROMTOOL: &str = "/usr/bin/promtool";
const RULES: &str = "manifests/prometheus/vigil-rules.yaml";
const RULE_TESTS: &str = "manifests/prometheus/tests/vigil-rules.test.yaml";
const PROMETHEUS_RULE: &str = "manifests/prometheus/prometheusrule.yaml";

fn promtool(args: &[&str]) -> String {
    let program = vigil_e2e::require(PROMTOOL, "prometheus");
    let out = Command::new(program)
        .args(args)
        .current_dir(repo())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool {} failed:\n{text}",
        args.join(" ")
    );
    text
}

fn yaml(path: &str) -> serde_yaml::Value {
    let text = std::fs::read_to_string(repo().join(path)).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every alerting rule of the plain rules file.
pub fn alerts() -> Vec<serde_yaml::Value> {
    yaml(RULES)["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().clone())
        .collect()
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let out = promtool(&["check", "rules", RULES]);
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", alerts().len())),
        "{out}"
    );
    let out = promtool(&["test", "rules", RULE_TESTS]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn every_alert_is_unit_tested_firing_and_quiet() {
    let tests = yaml(RULE_TESTS);
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for case in tests["tests"].as_sequence().unwrap() {
        for t in case["alert_rule_test"].as_sequence().unwrap() {
            let name = t["alertname"].as_str().unwrap().to_owned();
            let expected = t["exp_alerts"].as_sequence().map_or(0, Vec::len);
            if expected == 0 {
                quiet.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }
    let mut missing = Vec::new();
    for rule in alerts() {
        let name = rule["alert"].as_str().unwrap().to_owned();
        if !firing.contains(&name) {
            missing.push(format!("{name}: no case where it fires"));
        }
        if !quiet.contains(&name) {
            missing.push(format!("{name}: no case where it stays quiet"));
        }
    }
    assert!(
        missing.is_empty(),
        "{RULE_TESTS} lacks:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_alert_has_for_severity_annotations_and_a_runbook_in_the_docs() {
    let docs = std::fs::read_to_string(repo().join("docs/dashboards.md")).unwrap();
    // GitHub's anchors: lower case, punctuation dropped, spaces as dashes.
    let anchors: BTreeSet<String> = docs
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| {
            h.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
                .map(|c| if c == ' ' { '-' } else { c })
                .collect()
        })
        .collect();
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for rule in alerts() {
        let name = rule["alert"].as_str().unwrap_or_default();
        if !name.starts_with("Vigil") || !names.insert(name.to_owned()) {
            problems.push(format!("{name}: not named Vigil* or not unique"));
        }
        if rule["for"].as_str().is_none() {
            problems.push(format!("{name}: no `for`"));
        }
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        if !["critical", "warning", "info"].contains(&severity) {
            problems.push(format!("{name}: severity {severity:?}"));
        }
        for key in ["summary", "description", "runbook_url"] {
            if rule["annotations"][key].as_str().is_none_or(str::is_empty) {
                problems.push(format!("{name}: no {key} annotation"));
            }
        }
        let runbook = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_default();
        let anchor = name.to_lowercase();
        if !runbook.ends_with(&format!("/docs/dashboards.md#{anchor}"))
            || !anchors.contains(&anchor)
        {
            problems.push(format!(
                "{name}: runbook_url {runbook:?} does not point at a `{name}` heading of docs/dashboards.md"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_prometheusrule_holds_the_same_groups_as_the_rules_file() {
    let rule = yaml(PROMETHEUS_RULE);
    assert_eq!(
        rule["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    assert_eq!(rule["kind"].as_str(), Some("PrometheusRule"));
    assert_eq!(rule["metadata"]["namespace"].as_str(), Some("vigil"));
    assert!(
        rule["spec"]["groups"] == yaml(RULES)["groups"],
        "{PROMETHEUS_RULE} spec.groups differ from the groups of {RULES}: copy the groups of \
         {RULES} under spec: (indented by two spaces)"
    );
}
