//! The JSON form of a result, as written to the JSON-lines file (and Kafka): schema version 1.

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Deserialize, Serialize, Serializer};
use vigil_proto::ProbeResult;

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
    rfc3339_display(unix_nanos).to_string()
}

fn rfc3339_display(unix_nanos: i64) -> humantime::Rfc3339Timestamp {
    let t = UNIX_EPOCH + Duration::from_nanos(u64::try_from(unix_nanos).unwrap_or(0));
    humantime::format_rfc3339_nanos(t)
}

/// A result serialized as its [`ResultRecord`], byte for byte, straight from the protobuf: the
/// sinks' hot path writes records without building (and freeing) an owned copy of each.
pub struct RecordJson<'a>(pub &'a ProbeResult);

impl Serialize for RecordJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Field names, order and skip rules are `ResultRecord`'s (a test holds them equal).
        let r = self.0;
        let mut s = serializer.serialize_struct("ResultRecord", 16)?;
        s.serialize_field("schema", &SCHEMA_VERSION)?;
        s.serialize_field("agent", &r.agent_id)?;
        s.serialize_field("seq", &r.seq)?;
        s.serialize_field("check", &r.check_id)?;
        s.serialize_field("target", &r.target)?;
        s.serialize_field("cluster", &r.cluster)?;
        s.serialize_field("node", &r.node)?;
        s.serialize_field("scope", &r.scope)?;
        s.serialize_field("start", &Rfc3339(r.start_unix_nanos))?;
        s.serialize_field("start_unix_nanos", &r.start_unix_nanos)?;
        s.serialize_field("latency_seconds", &(r.latency_nanos as f64 / 1e9))?;
        s.serialize_field("outcome", r.outcome().name())?;
        if !r.reason.is_empty() {
            s.serialize_field("reason", &r.reason)?;
        }
        s.serialize_field("attempt", &r.attempt)?;
        if !r.details.is_empty() {
            s.serialize_field("details", &SortedMap(&r.details))?;
        }
        if !r.values.is_empty() {
            s.serialize_field("values", &SortedMap(&r.values))?;
        }
        s.end()
    }
}

struct Rfc3339(i64);

impl Serialize for Rfc3339 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&rfc3339_display(self.0))
    }
}

/// A protobuf map written in key order, as the `BTreeMap` of a [`ResultRecord`] is.
struct SortedMap<'a, V>(&'a std::collections::HashMap<String, V>);

impl<V: Serialize> Serialize for SortedMap<'_, V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        if self.0.len() == 1 {
            for (k, v) in self.0 {
                map.serialize_entry(k, v)?;
            }
        } else {
            let mut entries: Vec<(&String, &V)> = self.0.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (k, v) in entries {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
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
    fn record_json_writes_the_same_bytes_as_the_owned_record() {
        let full = ProbeResult {
            agent_id: "node-a-1".into(),
            seq: 42,
            check_id: "shop/web".into(),
            target: "http://10.0.0.1:8080/healthz?a=\"b\"".into(),
            cluster: "eu-1".into(),
            node: "node-a".into(),
            scope: "node".into(),
            start_unix_nanos: 1_700_000_000_123_456_789,
            latency_nanos: 1_500_000,
            outcome: vigil_proto::Outcome::Failure as i32,
            reason: "status 503\nline two \u{1F4A5}".into(),
            attempt: 2,
            details: [("z", "last"), ("status_code", "503"), ("a", "first")]
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .into(),
            values: [
                ("probe_duration_seconds", 0.25),
                ("b", -1.5e-9),
                ("c", 1e21),
            ]
            .map(|(k, v)| (k.to_owned(), v))
            .into(),
        };
        let sparse = ProbeResult {
            start_unix_nanos: -5,
            outcome: 99,
            details: [("only".to_owned(), "one".to_owned())].into(),
            ..Default::default()
        };
        for r in [full, sparse, ProbeResult::default()] {
            assert_eq!(
                String::from_utf8(serde_json::to_vec(&RecordJson(&r)).unwrap()).unwrap(),
                String::from_utf8(serde_json::to_vec(&ResultRecord::from_proto(&r)).unwrap())
                    .unwrap()
            );
        }
    }
}
