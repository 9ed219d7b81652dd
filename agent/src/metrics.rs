//! The agent's metrics: blackbox_exporter's names where they overlap, `vigil_*` for its own.

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};
use vigil_proto::Outcome;

pub struct Metrics {
    pub registry: Registry,
    pub results_produced: IntCounterVec,
    pub results_sent: IntCounter,
    pub results_acked: IntCounter,
    pub results_dropped: IntCounter,
    /// `results_produced` per outcome, looked up once (indexed by `Outcome as usize`).
    produced_by_outcome: [IntCounter; 5],
    pub buffered: IntGauge,
    pub results_spilled: IntCounter,
    pub spilled: IntGauge,
    pub spill_bytes: IntGauge,
    pub spill_errors: IntCounter,
    pub reconnects: IntCounter,
    pub connected: IntGauge,
    pub checks_assigned: IntGauge,
    pub runs_skipped: IntCounter,
    pub start_lateness: Histogram,
    /// Per-check blackbox-named gauges, kept compactly.
    pub probe: crate::probe_gauges::ProbeGauges,
    pub clock_offset: Gauge,
    /// 1 while a node problem class (`VigilMemoryPressure`, ...) is active on this node.
    pub node_problem: IntGaugeVec,
    /// Kernel-log matches, by problem class and pattern name.
    pub node_problem_events: IntCounterVec,
    /// Node diagnostic passes that could not tell (ERROR findings), by diagnostic.
    pub node_diagnostic_errors: IntCounterVec,
    /// The last federator clock offset, for the clock diagnostic (recorded on each Ack).
    pub federator_clock: std::sync::Arc<crate::node::FederatorClock>,
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
        let results_produced = reg!(IntCounterVec::new(
            Opts::new("vigil_agent_results_total", "Results produced, by outcome."),
            &["outcome"]
        ));
        Self {
            produced_by_outcome: [
                Outcome::Unspecified,
                Outcome::Success,
                Outcome::Failure,
                Outcome::Timeout,
                Outcome::Error,
            ]
            .map(|o| results_produced.with_label_values(&[o.name()])),
            results_produced,
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
                "Unacknowledged results dropped because the buffer (and the spill, if any) was full."
            )),
            buffered: reg!(IntGauge::new(
                "vigil_agent_buffered_results",
                "Results waiting for the federator's Ack in memory."
            )),
            results_spilled: reg!(IntCounter::new(
                "vigil_agent_results_spilled_total",
                "Results written to the on-disk spill because the memory buffer was full (or at shutdown)."
            )),
            spilled: reg!(IntGauge::new(
                "vigil_agent_spilled_results",
                "Results waiting for the federator's Ack in the on-disk spill."
            )),
            spill_bytes: reg!(IntGauge::new(
                "vigil_agent_spill_bytes",
                "Bytes of the on-disk spill's segment files."
            )),
            spill_errors: reg!(IntCounter::new(
                "vigil_agent_spill_errors_total",
                "Failed spill writes (the result is dropped and counted) and seq reservations."
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
            node_problem: reg!(IntGaugeVec::new(
                Opts::new(
                    "vigil_node_problem",
                    "1 while a node problem class is active on this node (node diagnostics)."
                ),
                &["type"]
            )),
            node_problem_events: reg!(IntCounterVec::new(
                Opts::new(
                    "vigil_node_problem_events_total",
                    "Kernel-log problem events, by problem class and pattern name."
                ),
                &["type", "reason"]
            )),
            node_diagnostic_errors: reg!(IntCounterVec::new(
                Opts::new(
                    "vigil_node_diagnostic_errors_total",
                    "Node diagnostic findings with outcome ERROR (unreadable file, garbage, timeout)."
                ),
                &["diagnostic"]
            )),
            federator_clock: Default::default(),
            registry,
        }
    }

    /// The `vigil_agent_results_total` counter of `outcome` (no label lookup per result).
    pub fn produced(&self, outcome: Outcome) -> &IntCounter {
        &self.produced_by_outcome[(outcome as usize).min(4)]
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
