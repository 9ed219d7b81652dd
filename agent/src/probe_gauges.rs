//! Per-check gauges under blackbox_exporter's names (`probe_success`, `probe_duration_seconds`,
//! `probe_http_duration_seconds{phase}`, ...), labelled `check`, `namespace`, `target`.
//!
//! Kept compactly and rendered straight to the Prometheus text format: the prometheus crate
//! stores a full descriptor and every label string per series, which for 10,000 checks × 13
//! series came to ~170 MiB of the agent's RSS. Here a check costs one small struct whose labels
//! are rendered once, and the series of a check that is no longer assigned disappear with it.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Mutex;

use vigil_proto::{CheckSpec, Outcome, ProbeResult, check_spec};

/// Result `values` exported as gauges: (values key, metric name, help).
pub const VALUE_GAUGES: &[(&str, &str, &str)] = &[
    (
        "ssl_earliest_cert_expiry",
        "probe_ssl_earliest_cert_expiry",
        "Earliest notAfter of the peer's certificate chain (Unix seconds).",
    ),
    (
        "content_length",
        "probe_http_content_length",
        "Body bytes read in the last run.",
    ),
    (
        "dns_answer_rrs",
        "probe_dns_answer_rrs",
        "Records in the answer section.",
    ),
    (
        "dns_authority_rrs",
        "probe_dns_authority_rrs",
        "Records in the authority section.",
    ),
    (
        "dns_additional_rrs",
        "probe_dns_additional_rrs",
        "Records in the additional section.",
    ),
    (
        "icmp_rtt_avg_seconds",
        "probe_icmp_duration_seconds",
        "Average echo round trip of the last run.",
    ),
    (
        "icmp_loss_ratio",
        "probe_icmp_loss_ratio",
        "Share of echo requests without a reply in the last run.",
    ),
    (
        "phase_resolve_seconds",
        "probe_dns_lookup_time_seconds",
        "Time taken to resolve the target's name.",
    ),
];

/// `values` keys of an http result and the blackbox `phase` label they map to.
pub const HTTP_PHASES: [(&str, &str); 5] = [
    ("phase_resolve_seconds", "resolve"),
    ("phase_connect_seconds", "connect"),
    ("phase_tls_seconds", "tls"),
    ("phase_processing_seconds", "processing"),
    ("phase_transfer_seconds", "transfer"),
];

const N_VALUES: usize = VALUE_GAUGES.len();
const N_PHASES: usize = HTTP_PHASES.len();

impl Series {
    fn new(spec: &CheckSpec) -> Self {
        let (ns, name) = spec.id.split_once('/').unwrap_or(("", &spec.id));
        Series {
            labels: format!(
                "check=\"{}\",namespace=\"{}\",target=\"{}\"",
                escape(name),
                escape(ns),
                escape(&spec.target)
            )
            .into(),
            success: 0.0,
            duration: 0.0,
            status_code: None,
            values: [None; N_VALUES],
            phases: None,
        }
    }
}

#[derive(Clone)]
struct Series {
    /// `check="…",namespace="…",target="…"`, escaped.
    labels: std::sync::Arc<str>,
    success: f64,
    duration: f64,
    status_code: Option<f64>,
    values: [Option<f64>; N_VALUES],
    /// Only for http checks.
    phases: Option<[f64; N_PHASES]>,
}

#[derive(Default)]
pub struct ProbeGauges {
    /// check id -> target -> series; two levels so that a lookup allocates nothing.
    checks: Mutex<HashMap<String, HashMap<String, Series>>>,
}

impl ProbeGauges {
    /// Sets every gauge of the result's check from the result.
    pub fn record(&self, spec: &CheckSpec, r: &ProbeResult) {
        let mut checks = self
            .checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !checks.contains_key(&spec.id) {
            checks.insert(spec.id.clone(), HashMap::new());
        }
        let targets = checks.get_mut(&spec.id).expect("inserted above");
        if !targets.contains_key(&spec.target) {
            targets.insert(spec.target.clone(), Series::new(spec));
        }
        let series = targets.get_mut(&spec.target).expect("inserted above");
        series.success = if r.outcome() == Outcome::Success {
            1.0
        } else {
            0.0
        };
        series.duration = r.latency_nanos as f64 / 1e9;
        series.status_code = r.details.get("status_code").and_then(|c| c.parse().ok());
        for (slot, (key, _, _)) in series.values.iter_mut().zip(VALUE_GAUGES) {
            *slot = r.values.get(*key).copied();
        }
        series.phases = matches!(spec.probe, Some(check_spec::Probe::Http(_)))
            .then(|| HTTP_PHASES.map(|(key, _)| r.values.get(key).copied().unwrap_or(0.0)));
    }

    /// Drops the series of checks `keep` rejects (called with each (id, target) on assignment).
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        let mut checks = self
            .checks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        checks.retain(|id, targets| {
            targets.retain(|target, _| keep(id, target));
            !targets.is_empty()
        });
    }

    /// Appends every gauge in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        // Copy the values out (labels are shared, not copied) and render without the lock, so
        // that probes finishing meanwhile never wait for a scrape.
        let mut all: Vec<Series> = {
            let checks = self
                .checks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            checks.values().flat_map(HashMap::values).cloned().collect()
        };
        if all.is_empty() {
            return;
        }
        all.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        out.reserve(all.len() * 1_200);
        let mut family = |name: &str, help: &str, value: &dyn Fn(&Series) -> Option<f64>| {
            let mut header = false;
            for s in &all {
                if let Some(v) = value(s) {
                    if !header {
                        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
                        header = true;
                    }
                    let _ = writeln!(out, "{name}{{{}}} {v}", s.labels);
                }
            }
        };
        family("probe_success", "Whether the last run succeeded.", &|s| {
            Some(s.success)
        });
        family(
            "probe_duration_seconds",
            "How long the last run's final attempt took.",
            &|s| Some(s.duration),
        );
        family(
            "probe_http_status_code",
            "Response HTTP status code of the last run.",
            &|s| s.status_code,
        );
        for (i, (_, name, help)) in VALUE_GAUGES.iter().enumerate() {
            family(name, help, &|s| s.values[i]);
        }
        let mut header = false;
        for s in &all {
            let Some(phases) = &s.phases else { continue };
            if !header {
                out.push_str(
                    "# HELP probe_http_duration_seconds Duration of each phase of the last http run.\n\
                     # TYPE probe_http_duration_seconds gauge\n",
                );
                header = true;
            }
            for ((_, phase), v) in HTTP_PHASES.iter().zip(phases) {
                let _ = writeln!(
                    out,
                    "probe_http_duration_seconds{{{},phase=\"{phase}\"}} {v}",
                    s.labels
                );
            }
        }
    }
}

/// Label value escaping of the text format: backslash, double quote and newline.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: &str, target: &str) -> CheckSpec {
        CheckSpec {
            id: id.into(),
            target: target.into(),
            probe: Some(check_spec::Probe::Http(Default::default())),
            ..Default::default()
        }
    }

    #[test]
    fn renders_blackbox_names_and_drops_unassigned_checks() {
        let g = ProbeGauges::default();
        let mut r = ProbeResult {
            outcome: Outcome::Success as i32,
            latency_nanos: 1_500_000,
            ..Default::default()
        };
        r.values.insert("ssl_earliest_cert_expiry".into(), 1.9e9);
        r.values.insert("phase_connect_seconds".into(), 0.002);
        r.details.insert("status_code".into(), "200".into());
        g.record(&spec("ns/c", "http://x/\"q\""), &r);
        g.record(&spec("ns/gone", "t"), &ProbeResult::default());
        let mut text = String::new();
        g.render(&mut text);
        for line in [
            "# TYPE probe_success gauge",
            r#"probe_success{check="c",namespace="ns",target="http://x/\"q\""} 1"#,
            r#"probe_duration_seconds{check="c",namespace="ns",target="http://x/\"q\""} 0.0015"#,
            r#"probe_http_status_code{check="c",namespace="ns",target="http://x/\"q\""} 200"#,
            r#"probe_ssl_earliest_cert_expiry{check="c",namespace="ns",target="http://x/\"q\""} 1900000000"#,
            r#"probe_http_duration_seconds{check="c",namespace="ns",target="http://x/\"q\"",phase="connect"} 0.002"#,
            r#"probe_http_duration_seconds{check="c",namespace="ns",target="http://x/\"q\"",phase="tls"} 0"#,
            r#"probe_success{check="gone",namespace="ns",target="t"} 0"#,
        ] {
            assert!(text.contains(line), "{line}\nnot in\n{text}");
        }
        assert!(
            !text.contains("probe_dns_answer_rrs"),
            "families without values are left out"
        );
        g.retain(|id, _| id == "ns/c");
        let mut text = String::new();
        g.render(&mut text);
        assert!(!text.contains("gone"));
    }
}
