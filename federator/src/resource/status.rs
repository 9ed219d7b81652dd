//! `HealthCheck.status`: what the federator's controller writes back, and `kubectl get hc` shows.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Written by the federator's controller (the leader only); users never set it. Every field is
/// optional so a partial server-side apply stays valid. `kubectl get hc` shows `probe`, `target`,
/// `state`, `failingTargets` and `lastResult.time`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckStatus {
    /// The `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The spec's probe kind (absent while the spec sets none or several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeKind>,
    /// What the probe points at, for display: the URL, `host:port`, DNS name or host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The check as a whole: Failing if any target (or node) is Failing, Healthy if all are
    /// Healthy, Invalid while `Valid=False`, else Unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<CheckState>,
    /// How many (target, node) pairs are Failing now; 0 when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_targets: Option<u32>,
    /// The newest result of any target or node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_result: Option<LastResult>,
    /// `Valid` (the spec passed validation; the message names the field when not), `Ready`
    /// (placed on at least one agent or Job), `Healthy` (no target Failing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// A probe kind, as `status.probe` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProbeKind {
    /// `probe.http`
    Http,
    /// `probe.tcp`
    Tcp,
    /// `probe.grpc`
    Grpc,
    /// `probe.dns`
    Dns,
    /// `probe.icmp`
    Icmp,
    /// `probe.tls`
    Tls,
}

/// A check's overall state in `status.state`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CheckState {
    /// Every target (and node) is Healthy.
    Healthy,
    /// At least one target (or node) is Failing.
    Failing,
    /// No verdict yet: no results, or too few to reach a threshold.
    Unknown,
    /// The spec failed validation (`Valid=False`); the check does not run.
    Invalid,
}

/// How a probe run ended, as in the `vigil.v1` wire contract and the Kafka records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ResultOutcome {
    /// The target answered as expected.
    Success,
    /// The target answered, not as expected.
    Failure,
    /// No answer within `timeout`.
    Timeout,
    /// The probe could not run (bad address, no permission, Job never reported, ...).
    Error,
}

/// The newest result of a check, in `status.lastResult`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastResult {
    /// When the run started (RFC 3339).
    pub time: Time,
    pub outcome: ResultOutcome,
    /// Human-readable, e.g. `status 503 not in 200-299` or `timed out after 2s in TLS handshake`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// The target this result is for.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// The node whose agent ran it (absent for Isolated runs reported without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// How long the run took, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
}
