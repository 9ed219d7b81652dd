//! The JSON form of a result, as written to the JSON-lines file (and Kafka): schema version 1.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vigil_proto::ProbeResult;

mod json;
pub use json::{decimal, write_json};

/// The `schema` field of every record; bumped on incompatible changes.
pub const SCHEMA_VERSION: u32 = 1;

/// One result, self-describing: `(agent, seq)` identifies it everywhere.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
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
        let mut record = Self::default();
        record.fill_from(r);
        record
    }

    /// Becomes the record of `r`, reusing the strings and maps it already holds: the state
    /// keeps one record per target and per history slot and rewrites them on every result, so
    /// a steady stream of results allocates nothing here.
    pub fn fill_from(&mut self, r: &ProbeResult) {
        self.fill_from_at(r, &Start::of(r));
    }

    /// [`fill_from`](Self::fill_from) with the result's start already formatted (the state
    /// writes each result into two records and formats its time once).
    pub fn fill_from_at(&mut self, r: &ProbeResult, start: &Start) {
        self.schema = SCHEMA_VERSION;
        self.agent.clone_from(&r.agent_id);
        self.seq = r.seq;
        self.check.clone_from(&r.check_id);
        self.target.clone_from(&r.target);
        self.cluster.clone_from(&r.cluster);
        self.node.clone_from(&r.node);
        self.scope.clone_from(&r.scope);
        self.start.clear();
        self.start.push_str(start.as_str());
        self.start_unix_nanos = r.start_unix_nanos;
        self.latency_seconds = r.latency_nanos as f64 / 1e9;
        self.outcome.clear();
        self.outcome.push_str(r.outcome().name());
        self.reason.clone_from(&r.reason);
        self.attempt = r.attempt;
        refill(&mut self.details, &r.details);
        refill(&mut self.values, &r.values);
    }
}

/// A result's start time as RFC 3339 text, formatted once.
pub struct Start([u8; 30]);

impl Start {
    pub fn of(r: &ProbeResult) -> Self {
        Self(json::rfc3339_bytes(r.start_unix_nanos))
    }

    fn as_str(&self) -> &str {
        // ASCII digits and punctuation only.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Makes `to` hold what `from` holds, updating values in place when the keys are the same
/// (a probe reports the same details every run): one pass comparing keys and copying values,
/// and a whole copy only when the keys differ.
fn refill<V: Clone>(to: &mut BTreeMap<String, V>, from: &BTreeMap<String, V>) {
    if to.len() == from.len() {
        let mut same = true;
        for ((key, slot), (k, v)) in to.iter_mut().zip(from) {
            if key != k {
                same = false;
                break;
            }
            slot.clone_from(v);
        }
        if same {
            return;
        }
    }
    to.clone_from(from);
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

    #[test]
    fn a_refilled_record_equals_a_fresh_one() {
        let first = ProbeResult {
            agent_id: "node-a-1".into(),
            seq: 1,
            check_id: "shop/web".into(),
            target: "https://shop/health".into(),
            outcome: vigil_proto::Outcome::Failure as i32,
            reason: "status 503".into(),
            details: [("status_code".into(), "503".into())].into(),
            values: [("connect_seconds".into(), 0.1)].into(),
            ..Default::default()
        };
        let same_keys = ProbeResult {
            seq: 2,
            outcome: vigil_proto::Outcome::Success as i32,
            reason: String::new(),
            details: [("status_code".into(), "200".into())].into(),
            values: [("connect_seconds".into(), 0.2)].into(),
            ..first.clone()
        };
        let other_keys = ProbeResult {
            seq: 3,
            node: "node-b".into(),
            details: [("tls_version".into(), "TLS 1.3".into())].into(),
            values: Default::default(),
            ..first.clone()
        };
        // As many keys, the first the same, the second not.
        let two_keys = ProbeResult {
            seq: 4,
            details: [("a".into(), "1".into()), ("b".into(), "2".into())].into(),
            ..first.clone()
        };
        let second_key_differs = ProbeResult {
            seq: 5,
            details: [("a".into(), "9".into()), ("c".into(), "3".into())].into(),
            ..first.clone()
        };
        let mut record = ResultRecord::default();
        for r in [
            &first,
            &same_keys,
            &other_keys,
            &first,
            &two_keys,
            &second_key_differs,
            &two_keys,
        ] {
            record.fill_from(r);
            assert_eq!(record, ResultRecord::from_proto(r), "after seq {}", r.seq);
        }
    }
}
