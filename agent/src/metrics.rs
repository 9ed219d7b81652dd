//! The agent's metrics: blackbox_exporter's names where they overlap, `vigil_*` for its own.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub results_produced: IntCounterVec,
    pub results_sent: IntCounter,
    pub results_acked: IntCounter,
    pub results_dropped: IntCounter,
    pub buffered: IntGauge,
    pub reconnects: IntCounter,
    pub connected: IntGauge,
    pub checks_assigned: IntGauge,
    pub runs_skipped: IntCounter,
    pub start_lateness: Histogram,
    pub probe_success: GaugeVec,
    pub probe_duration: GaugeVec,
    pub probe_http_status_code: GaugeVec,
    /// Gauges named after blackbox_exporter's, filled from a result's `values` (see [`VALUE_GAUGES`]).
    pub value_gauges: Vec<(&'static str, GaugeVec)>,
    /// `probe_http_duration_seconds{phase}` for http checks.
    pub probe_http_phase: GaugeVec,
    /// `probe_dns_lookup_time_seconds`: resolving the target's name, for every probe kind.
    pub probe_dns_lookup: GaugeVec,
    pub clock_offset: Gauge,
}

/// Result values exported on `/metrics` under blackbox_exporter's names and meanings.
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
];

/// `values` keys of an http result and the blackbox `phase` label they map to.
pub const HTTP_PHASES: &[(&str, &str)] = &[
    ("phase_resolve_seconds", "resolve"),
    ("phase_connect_seconds", "connect"),
    ("phase_tls_seconds", "tls"),
    ("phase_processing_seconds", "processing"),
    ("phase_transfer_seconds", "transfer"),
];

const TARGET: &[&str] = &["check", "namespace", "target"];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("valid metric");
                registry
                    .register(Box::new(m.clone()))
                    .expect("unique metric");
                m
            }};
        }
        Self {
            results_produced: reg!(IntCounterVec::new(
                Opts::new("vigil_agent_results_total", "Results produced, by outcome."),
                &["outcome"]
            )),
            results_sent: reg!(IntCounter::new(
                "vigil_agent_results_sent_total",
                "Results sent to the federator (resends included)."
            )),
            results_acked: reg!(IntCounter::new(
                "vigil_agent_results_acked_total",
                "Results the federator acknowledged as durable."
            )),
            results_dropped: reg!(IntCounter::new(
                "vigil_agent_results_dropped_total",
                "Unacknowledged results dropped because the buffer was full."
            )),
            buffered: reg!(IntGauge::new(
                "vigil_agent_buffered_results",
                "Results waiting for the federator's Ack."
            )),
            reconnects: reg!(IntCounter::new(
                "vigil_agent_reconnects_total",
                "Connect streams opened after the first."
            )),
            connected: reg!(IntGauge::new(
                "vigil_agent_connected",
                "1 while the agent's stream to the federator is open."
            )),
            checks_assigned: reg!(IntGauge::new(
                "vigil_agent_checks_assigned",
                "Checks in the current assignment."
            )),
            runs_skipped: reg!(IntCounter::new(
                "vigil_agent_runs_skipped_total",
                "Runs skipped because the check's previous run was still going."
            )),
            start_lateness: reg!(Histogram::with_opts(
                HistogramOpts::new(
                    "vigil_probe_start_lateness_seconds",
                    "How late a run started against its schedule."
                )
                .buckets(vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0
                ])
            )),
            probe_success: reg!(GaugeVec::new(
                Opts::new("probe_success", "Whether the last run succeeded."),
                TARGET
            )),
            probe_duration: reg!(GaugeVec::new(
                Opts::new(
                    "probe_duration_seconds",
                    "How long the last run's final attempt took."
                ),
                TARGET
            )),
            probe_http_status_code: reg!(GaugeVec::new(
                Opts::new(
                    "probe_http_status_code",
                    "Response HTTP status code of the last run."
                ),
                TARGET
            )),
            value_gauges: VALUE_GAUGES
                .iter()
                .map(|(key, name, help)| {
                    (*key, reg!(GaugeVec::new(Opts::new(*name, *help), TARGET)))
                })
                .collect(),
            probe_http_phase: reg!(GaugeVec::new(
                Opts::new(
                    "probe_http_duration_seconds",
                    "Duration of each phase of the last http run."
                ),
                &["check", "namespace", "target", "phase"]
            )),
            probe_dns_lookup: reg!(GaugeVec::new(
                Opts::new(
                    "probe_dns_lookup_time_seconds",
                    "Time taken to resolve the target's name."
                ),
                TARGET
            )),
            clock_offset: reg!(Gauge::new(
                "vigil_agent_clock_offset_seconds",
                "Federator clock minus agent clock, from the last Ack (includes one-way latency)."
            )),
            registry,
        }
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding");
        String::from_utf8(buf).expect("metrics are UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
