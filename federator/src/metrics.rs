//! The federator's Prometheus metrics, in one registry served at `/metrics`.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    pub registry: Registry,
    pub agents_connected: IntGauge,
    pub results_received: IntCounterVec,
    pub results_deduplicated: IntCounterVec,
    pub results_acked: IntCounterVec,
    pub results_rejected: IntCounterVec,
    pub sink_written: IntCounterVec,
    pub sink_errors: IntCounterVec,
    pub sink_write_seconds: HistogramVec,
    pub check_up: IntGaugeVec,
    pub config_errors: IntGauge,
    pub assignments_sent: IntCounterVec,
    pub alerts_firing: IntGauge,
    pub alert_notifications: IntCounterVec,
    pub alert_queue_depth: IntGaugeVec,
    pub alerts_dropped: IntCounterVec,
    pub sink_queue_depth: IntGaugeVec,
    pub leader: IntGauge,
    pub kafka_errors: IntCounterVec,
    pub kafka_in_flight: IntGauge,
    pub kafka_delivery_seconds: Histogram,
    pub result_delivery_lag_seconds: Histogram,
    /// Global federator: 1 while a forwarding cluster's link is up and not silent.
    pub cluster_up: IntGaugeVec,
    pub cluster_last_seen: GaugeVec,
    /// Cluster federator (`--upstream`): the link, what waits for the upstream's Ack, and what
    /// happened to forwarded results.
    pub upstream_connected: IntGaugeVec,
    pub upstream_buffered: IntGaugeVec,
    pub upstream_results: IntCounterVec,
    pub upstream_ack_seconds: Histogram,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("unique metric");
            c
        };
        let agents_connected = IntGauge::new(
            "vigil_agents_connected",
            "Agents with an open Connect stream.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(agents_connected.clone()))
            .expect("unique metric");
        let config_errors = IntGauge::new(
            "vigil_config_errors",
            "HealthCheck documents refused at the last load.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(config_errors.clone()))
            .expect("unique metric");
        let sink_write_seconds = HistogramVec::new(
            HistogramOpts::new(
                "vigil_sink_write_duration_seconds",
                "Time one group commit to a sink took.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["sink"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(sink_write_seconds.clone()))
            .expect("unique metric");
        let check_up = IntGaugeVec::new(
            Opts::new(
                "vigil_check_up",
                "1 while a check target is Healthy, 0 while Failing, -1 while Unknown.",
            ),
            &["check", "namespace", "target", "cluster", "node"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(check_up.clone()))
            .expect("unique metric");
        let alerts_firing = IntGauge::new(
            "vigil_alerts_firing",
            "Alerts firing now (one per failing check, target and scope).",
        )
        .expect("valid metric");
        registry
            .register(Box::new(alerts_firing.clone()))
            .expect("unique metric");
        let alert_queue_depth = IntGaugeVec::new(
            Opts::new(
                "vigil_alert_queue_depth",
                "Alerts waiting to be sent, per Alertmanager.",
            ),
            &["alertmanager"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(alert_queue_depth.clone()))
            .expect("unique metric");
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let histogram = |name: &str, help: &str| {
            let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]))
            .expect("valid metric");
            registry
                .register(Box::new(h.clone()))
                .expect("unique metric");
            h
        };
        let sink_queue_depth = IntGaugeVec::new(
            Opts::new(
                "vigil_sink_queue_batches",
                "Result batches waiting for a sink's next group commit.",
            ),
            &["sink"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(sink_queue_depth.clone()))
            .expect("unique metric");
        let cluster_up = IntGaugeVec::new(
            Opts::new(
                "vigil_cluster_up",
                "Global federator: 1 while a forwarding cluster's link is up and the cluster is not silent, else 0.",
            ),
            &["cluster"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(cluster_up.clone()))
            .expect("unique metric");
        let cluster_last_seen = GaugeVec::new(
            Opts::new(
                "vigil_cluster_last_seen_seconds",
                "Global federator: when anything last arrived from a forwarding cluster (Unix seconds).",
            ),
            &["cluster"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(cluster_last_seen.clone()))
            .expect("unique metric");
        let upstream_gauge = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["upstream"]).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let upstream_connected = upstream_gauge(
            "vigil_upstream_connected",
            "Cluster federator: 1 while the link to the upstream (global) federator is open.",
        );
        let upstream_buffered = upstream_gauge(
            "vigil_upstream_buffered_results",
            "Cluster federator: results kept for the upstream federator until it acknowledges them.",
        );
        Self {
            cluster_up,
            cluster_last_seen,
            upstream_connected,
            upstream_buffered,
            upstream_results: counter(
                "vigil_upstream_results_total",
                "Cluster federator: results forwarded upstream, by what happened (buffered, acked, dropped when the buffer was full).",
                &["result"],
            ),
            upstream_ack_seconds: histogram(
                "vigil_upstream_ack_seconds",
                "Cluster federator: from a result entering the upstream buffer to the upstream's Ack.",
            ),
            leader: gauge(
                "vigil_federator_leader",
                "1 while this replica holds the Lease (or runs without leader election), else 0.",
            ),
            sink_queue_depth,
            kafka_errors: counter(
                "vigil_kafka_errors_total",
                "Kafka producer errors (client-level and per record), by librdkafka error kind.",
                &["kind"],
            ),
            kafka_in_flight: gauge(
                "vigil_kafka_in_flight_records",
                "Records handed to the Kafka producer and not yet confirmed by the broker.",
            ),
            kafka_delivery_seconds: histogram(
                "vigil_kafka_delivery_seconds",
                "From a group commit's start to the broker's confirmation of each record.",
            ),
            result_delivery_lag_seconds: histogram(
                "vigil_result_delivery_lag_seconds",
                "From a result's end on the agent (agent clock) to Kafka's confirmation of the write that carried it (when it can be acknowledged).",
            ),
            agents_connected,
            results_received: counter(
                "vigil_results_received_total",
                "Results received from agents.",
                &["agent"],
            ),
            results_deduplicated: counter(
                "vigil_results_deduplicated_total",
                "Results dropped because their (agent, seq) was already taken.",
                &["agent"],
            ),
            results_acked: counter(
                "vigil_results_acked_total",
                "Results acknowledged to agents after every sink took them.",
                &["agent"],
            ),
            results_rejected: counter(
                "vigil_results_rejected_total",
                "Batches refused with a gRPC error, by reason.",
                &["reason"],
            ),
            sink_written: counter(
                "vigil_sink_results_written_total",
                "Results durably written, per sink.",
                &["sink"],
            ),
            sink_errors: counter(
                "vigil_sink_errors_total",
                "Failed sink writes (retried), per sink.",
                &["sink"],
            ),
            sink_write_seconds,
            check_up,
            config_errors,
            assignments_sent: counter(
                "vigil_assignments_sent_total",
                "Assignments pushed to agents.",
                &["agent"],
            ),
            alerts_firing,
            alert_notifications: counter(
                "vigil_alert_notifications_total",
                "Alerts posted to an Alertmanager, by result: sent, failed (retried) or refused (dropped).",
                &["alertmanager", "result"],
            ),
            alert_queue_depth,
            alerts_dropped: counter(
                "vigil_alerts_dropped_total",
                "Alerts dropped because an Alertmanager's queue was full (sent again at the next resend).",
                &["alertmanager"],
            ),
            registry,
        }
    }

    /// Drops a target's `vigil_check_up` series (its check was deleted, or it went stale).
    pub fn forget_target(&self, key: &crate::state::StateKey) {
        let (ns, name) = key.check.split_once('/').unwrap_or(("", &key.check));
        let _ =
            self.check_up
                .remove_label_values(&[name, ns, &key.target, &key.cluster, &key.node]);
    }

    /// Drops the series labelled with agent `id` (an agent gone for good: its ledger was
    /// forgotten).
    pub fn forget_agent(&self, id: &str) {
        for family in [
            &self.results_received,
            &self.results_deduplicated,
            &self.results_acked,
            &self.assignments_sent,
        ] {
            let _ = family.remove_label_values(&[id]);
        }
    }

    /// The registry in Prometheus text format.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forgotten_agent_loses_its_series_and_others_keep_theirs() {
        let m = Metrics::new();
        for agent in ["gone", "here"] {
            m.results_received.with_label_values(&[agent]).inc();
            m.results_acked.with_label_values(&[agent]).inc();
            m.assignments_sent.with_label_values(&[agent]).inc();
        }
        m.results_deduplicated.with_label_values(&["gone"]).inc();
        m.forget_agent("gone");
        m.forget_agent("never-seen");
        let text = m.render();
        assert!(!text.contains("agent=\"gone\""), "{text}");
        for family in [
            "vigil_results_received_total",
            "vigil_results_acked_total",
            "vigil_assignments_sent_total",
        ] {
            assert!(
                text.contains(&format!("{family}{{agent=\"here\"}} 1")),
                "{family}: {text}"
            );
        }
    }
}
