//! The agent's metrics: blackbox_exporter's names where they overlap, `vigil_*` for its own.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
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
    /// Per-check blackbox-named gauges, kept compactly.
    pub probe: crate::probe_gauges::ProbeGauges,
    pub clock_offset: Gauge,
}

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
            probe: Default::default(),
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
        let mut text = String::from_utf8(buf).expect("metrics are UTF-8");
        self.probe.render(&mut text);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
