//! The Connect stream's client codec: writes `AgentMessage`s whose results were encoded once,
//! when they entered the outbox, and decodes `FederatorMessage`s with prost.
//!
//! `ResultBatch { repeated ProbeResult results = 1; }` inside `AgentMessage { results = 2 }` is,
//! on the wire, the tag and length of field 2 followed by one (tag 1, length, bytes) per result,
//! so a batch is written straight from the outbox's bytes without decoding or cloning a result.
//! The server side is tonic's ordinary prost codec.

use bytes::BufMut;
use prost::Message;
use prost::encoding::{encode_varint, encoded_len_varint};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use vigil_proto::{AgentMessage, FederatorMessage};

use crate::outbox::Encoded;

/// `AgentMessage.results` (field 2, length-delimited).
const AGENT_MESSAGE_RESULTS_TAG: u8 = (2 << 3) | 2;
/// `ResultBatch.results` (field 1, length-delimited).
const RESULT_BATCH_RESULTS_TAG: u8 = (1 << 3) | 2;

/// One message on the agent's side of Connect.
pub enum Outgoing {
    /// Encoded with prost as it is (Hello).
    Message(AgentMessage),
    /// An `AgentMessage` carrying a `ResultBatch` of these encoded `ProbeResult`s.
    Results(Vec<Encoded>),
}

/// Bytes of the `AgentMessage` that [`Outgoing::Results`] of `results` becomes.
pub fn batch_len(results: &[Encoded]) -> usize {
    let inner = batch_body_len(results);
    1 + encoded_len_varint(inner as u64) + inner
}

fn batch_body_len(results: &[Encoded]) -> usize {
    results
        .iter()
        .map(|r| 1 + encoded_len_varint(r.bytes.len() as u64) + r.bytes.len())
        .sum()
}

/// Writes an `AgentMessage { results: ResultBatch { results } }` from encoded results.
pub fn encode_batch(results: &[Encoded], dst: &mut impl BufMut) {
    dst.put_u8(AGENT_MESSAGE_RESULTS_TAG);
    encode_varint(batch_body_len(results) as u64, dst);
    for r in results {
        dst.put_u8(RESULT_BATCH_RESULTS_TAG);
        encode_varint(r.bytes.len() as u64, dst);
        dst.put_slice(&r.bytes);
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct AgentCodec;

impl Codec for AgentCodec {
    type Encode = Outgoing;
    type Decode = FederatorMessage;
    type Encoder = AgentEncoder;
    type Decoder = FederatorDecoder;

    fn encoder(&mut self) -> AgentEncoder {
        AgentEncoder
    }

    fn decoder(&mut self) -> FederatorDecoder {
        FederatorDecoder
    }
}

#[derive(Debug)]
pub struct AgentEncoder;

impl Encoder for AgentEncoder {
    type Item = Outgoing;
    type Error = Status;

    fn encode(&mut self, item: Outgoing, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        match item {
            Outgoing::Message(m) => m
                .encode(dst)
                .map_err(|e| Status::internal(format!("encoding an AgentMessage: {e}"))),
            Outgoing::Results(results) => {
                encode_batch(&results, dst);
                Ok(())
            }
        }
    }
}

#[derive(Debug)]
pub struct FederatorDecoder;

impl Decoder for FederatorDecoder {
    type Item = FederatorMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<FederatorMessage>, Status> {
        FederatorMessage::decode(src).map(Some).map_err(|e| {
            Status::internal(format!(
                "the federator sent a message that is not a FederatorMessage: {e}"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use vigil_proto::{Outcome, ProbeResult, ResultBatch, agent_message};

    use super::*;

    fn result(seq: u64, reason: &str) -> ProbeResult {
        ProbeResult {
            check_id: "shop/checkout".into(),
            target: "http://checkout:8080/healthz".into(),
            seq,
            start_unix_nanos: 1_700_000_000_000_000_000,
            latency_nanos: 1_234_567,
            outcome: Outcome::Failure as i32,
            reason: reason.into(),
            attempt: 2,
            details: BTreeMap::from([("status_code".into(), "503".into())]),
            values: BTreeMap::from([("phase_connect_seconds".into(), 0.0012)]),
            ..Default::default()
        }
    }

    fn encoded(r: &ProbeResult) -> Encoded {
        Encoded {
            seq: r.seq,
            bytes: Bytes::from(r.encode_to_vec()),
        }
    }

    #[test]
    fn a_batch_on_the_wire_decodes_as_the_same_result_batch() {
        // Sizes around the one-byte varint limit (127) exercise multi-byte lengths.
        let results: Vec<ProbeResult> = (1..=40)
            .map(|n| result(n, &"x".repeat(n as usize * 7)))
            .collect();
        let enc: Vec<Encoded> = results.iter().map(encoded).collect();
        let mut wire = Vec::new();
        encode_batch(&enc, &mut wire);
        assert_eq!(wire.len(), batch_len(&enc));

        let want = AgentMessage {
            msg: Some(agent_message::Msg::Results(ResultBatch {
                results: results.clone(),
                agent_id: String::new(),
                batch_seq: 0,
            })),
        };
        assert_eq!(AgentMessage::decode(&wire[..]).unwrap(), want);
        // And byte for byte what prost itself writes.
        assert_eq!(wire, want.encode_to_vec());
    }

    #[test]
    fn an_empty_batch_is_an_empty_result_batch() {
        let mut wire = Vec::new();
        encode_batch(&[], &mut wire);
        let got = AgentMessage::decode(&wire[..]).unwrap();
        assert_eq!(
            got.msg,
            Some(agent_message::Msg::Results(ResultBatch::default()))
        );
    }
}
