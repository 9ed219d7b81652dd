//! The JSON form of a result, as written to the JSON-lines file (and Kafka): schema version 1.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vigil_proto::ProbeResult;

mod json;
pub use json::write_json;

/// The `schema` field of every record; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// One result, self-describing: `(agent, seq)` identifies it everywhere.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResultRecord {
    pub schema: u32,
    pub agent: String,
    pub seq: u64,
    /// `namespace/name`.
    pub check: String,
    pub target: String,
    pub cluster: String,
    pub node: String,
    /// `node` or `cluster`: whether this result counts towards a per-node state.
    pub scope: String,
    /// RFC 3339, UTC.
    pub start: String,
    pub start_unix_nanos: i64,
    pub latency_seconds: f64,
    pub outcome: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, f64>,
}

impl ResultRecord {
    pub fn from_proto(r: &ProbeResult) -> Self {
        Self {
            schema: SCHEMA_VERSION,
            agent: r.agent_id.clone(),
            seq: r.seq,
            check: r.check_id.clone(),
            target: r.target.clone(),
            cluster: r.cluster.clone(),
            node: r.node.clone(),
            scope: r.scope.clone(),
            start: rfc3339(r.start_unix_nanos),
            start_unix_nanos: r.start_unix_nanos,
            latency_seconds: r.latency_nanos as f64 / 1e9,
            outcome: r.outcome().name().to_owned(),
            reason: r.reason.clone(),
            attempt: r.attempt,
            details: r
                .details
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            values: r.values.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        }
    }
}

/// RFC 3339 with nanoseconds; times before 1970 are clamped to the epoch.
pub fn rfc3339(unix_nanos: i64) -> String {
    String::from_utf8(json::rfc3339_bytes(unix_nanos).to_vec()).expect("ASCII")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_carries_identity_and_readable_time() {
        let r = ProbeResult {
            agent_id: "node-a-1".into(),
            seq: 42,
            check_id: "shop/web".into(),
            start_unix_nanos: 1_700_000_000_123_456_789,
            latency_nanos: 1_500_000,
            outcome: vigil_proto::Outcome::Failure as i32,
            reason: "status 503".into(),
            ..Default::default()
        };
        let json = serde_json::to_value(ResultRecord::from_proto(&r)).unwrap();
        assert_eq!(json["schema"], 1);
        assert_eq!(json["agent"], "node-a-1");
        assert_eq!(json["seq"], 42);
        assert_eq!(json["outcome"], "FAILURE");
        assert_eq!(json["start"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(json["latency_seconds"], 0.0015);
    }
}
