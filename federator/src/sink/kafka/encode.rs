//! One result as one Kafka record: key `cluster/namespace/name/target` (a check's results stay
//! in one partition, in order), value JSON or protobuf, headers naming schema, cluster, node,
//! agent and seq so consumers can route and deduplicate without decoding the value.

use prost::Message;
use rdkafka::message::{Header, OwnedHeaders};
use vigil_proto::ProbeResult;

use super::config::Encoding;
use crate::record::{ResultRecord, SCHEMA_VERSION};

/// The record key of a result.
pub fn key(r: &ProbeResult) -> String {
    let mut k = String::with_capacity(r.cluster.len() + r.check_id.len() + r.target.len() + 2);
    k.push_str(&r.cluster);
    k.push('/');
    k.push_str(&r.check_id);
    k.push('/');
    k.push_str(&r.target);
    k
}

/// The record value of a result, appended to `buf`.
pub fn value(r: &ProbeResult, encoding: Encoding, buf: &mut Vec<u8>) {
    match encoding {
        Encoding::Json => serde_json::to_writer(&mut *buf, &ResultRecord::from_proto(r))
            .expect("records serialize"),
        Encoding::Protobuf => r.encode(buf).expect("a Vec grows"),
    }
}

/// The record headers of a result.
pub fn headers(r: &ProbeResult, encoding: Encoding) -> OwnedHeaders {
    let schema = SCHEMA_VERSION.to_string();
    let seq = r.seq.to_string();
    OwnedHeaders::new_with_capacity(6)
        .insert(Header {
            key: "schema",
            value: Some(schema.as_bytes()),
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
            value: Some(seq.as_bytes()),
        })
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;

    use super::*;

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
}
