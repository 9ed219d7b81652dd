//! One result as one Kafka record: key `cluster/namespace/name/target` (a check's results stay
//! in one partition, in order), value JSON or protobuf, headers naming schema, cluster, node,
//! agent and seq so consumers can route and deduplicate without decoding the value.

use prost::Message;
use rdkafka::message::{Header, OwnedHeaders};
use vigil_proto::ProbeResult;

use super::config::Encoding;
use crate::record::{SCHEMA_VERSION, decimal, write_json};

/// The record key of a result.
pub fn key(r: &ProbeResult) -> String {
    let mut k = String::new();
    key_into(r, &mut k);
    k
}

/// The record key of a result, written over `k` (the sink reuses one buffer for every record).
pub fn key_into(r: &ProbeResult, k: &mut String) {
    k.clear();
    k.push_str(&r.cluster);
    k.push('/');
    k.push_str(&r.check_id);
    k.push('/');
    k.push_str(&r.target);
}

/// The record value of a result, appended to `buf`.
pub fn value(r: &ProbeResult, encoding: Encoding, buf: &mut Vec<u8>) {
    match encoding {
        Encoding::Json => write_json(r, buf),
        Encoding::Protobuf => r.encode(buf).expect("a Vec grows"),
    }
}

/// The `schema` header's value.
const SCHEMA_HEADER: &str = match SCHEMA_VERSION {
    1 => "1",
    _ => panic!("update SCHEMA_HEADER with SCHEMA_VERSION"),
};

/// The record headers of a result.
pub fn headers(r: &ProbeResult, encoding: Encoding) -> OwnedHeaders {
    let mut digits = [0u8; 20];
    let seq = decimal(r.seq, &mut digits);
    OwnedHeaders::new_with_capacity(6)
        .insert(Header {
            key: "schema",
            value: Some(SCHEMA_HEADER),
        })
        .insert(Header {
            key: "content-type",
            value: Some(encoding.content_type().as_bytes()),
        })
        .insert(Header {
            key: "cluster",
            value: Some(r.cluster.as_bytes()),
        })
        .insert(Header {
            key: "node",
            value: Some(r.node.as_bytes()),
        })
        .insert(Header {
            key: "agent",
            value: Some(r.agent_id.as_bytes()),
        })
        .insert(Header {
            key: "seq",
            value: Some(seq),
        })
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;

    use super::*;
    use crate::record::ResultRecord;

    fn sample() -> ProbeResult {
        ProbeResult {
            check_id: "shop/checkout".into(),
            target: "https://shop.example/health".into(),
            cluster: "eu-1".into(),
            node: "node-a".into(),
            agent_id: "node-a-1234".into(),
            seq: 42,
            ..Default::default()
        }
    }

    #[test]
    fn key_keeps_a_check_target_in_one_partition() {
        assert_eq!(
            key(&sample()),
            "eu-1/shop/checkout/https://shop.example/health"
        );
    }

    #[test]
    fn values_decode_in_both_encodings() {
        let r = sample();
        let mut json = Vec::new();
        value(&r, Encoding::Json, &mut json);
        let record: ResultRecord = serde_json::from_slice(&json).unwrap();
        assert_eq!(
            (record.agent.as_str(), record.seq, record.schema),
            ("node-a-1234", 42, 1)
        );
        let mut pb = Vec::new();
        value(&r, Encoding::Protobuf, &mut pb);
        assert_eq!(ProbeResult::decode(pb.as_slice()).unwrap(), r);
    }

    #[test]
    fn headers_carry_identity() {
        let h = headers(&sample(), Encoding::Json);
        let got: Vec<(String, String)> = h
            .iter()
            .map(|h| {
                (
                    h.key.to_owned(),
                    String::from_utf8(h.value.unwrap().to_vec()).unwrap(),
                )
            })
            .collect();
        let want = [
            ("schema", "1"),
            ("content-type", "application/json"),
            ("cluster", "eu-1"),
            ("node", "node-a"),
            ("agent", "node-a-1234"),
            ("seq", "42"),
        ];
        assert_eq!(
            got,
            want.map(|(k, v)| (k.to_owned(), v.to_owned())).to_vec()
        );
    }

    #[test]
    fn seq_digits() {
        let mut buf = [0u8; 20];
        for n in [0, 7, 10, 99, 1_000_001, u64::MAX] {
            assert_eq!(decimal(n, &mut buf), n.to_string().as_bytes());
        }
    }
}
