//! Recycled results: a federator decodes every result an agent sends and drops it once every
//! sink has it, about a dozen allocations each way per result (strings, map entries), freed on
//! another thread than the one that allocated them. A batch handed back here when its last
//! holder is done is decoded into again: its results' strings keep their capacity, so a
//! result of the usual shape costs no allocation for its strings.
//!
//! [`Results`] is the owner that gives its batch back on drop; [`decode_agent_message`] and
//! [`decode_result_batch`] take batches from the pool (the federator's gRPC codec calls them).

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

use prost::DecodeError;
use prost::Message;
use prost::encoding::{
    DecodeContext, WireType, decode_key, decode_varint, double, skip_field, string,
};

use crate::v1::{AgentMessage, ProbeResult, ResultBatch, agent_message};

/// Results the pool keeps at most (their batches' capacity included); beyond it batches are
/// freed. About 5 MiB at the usual result size.
const POOL_RESULTS: usize = 16_384;

struct Pool {
    batches: Vec<Vec<ProbeResult>>,
    /// Results held by `batches`, counted by capacity (what they keep allocated).
    results: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    batches: Vec::new(),
    results: 0,
});

/// A batch from the pool (or a new one): its results are old ones, to be overwritten.
fn take() -> Vec<ProbeResult> {
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    match pool.batches.pop() {
        Some(batch) => {
            pool.results -= batch.capacity();
            batch
        }
        None => Vec::new(),
    }
}

/// Keeps `batch` for reuse if the pool has room; frees it otherwise.
fn give(batch: Vec<ProbeResult>) {
    if batch.capacity() == 0 || batch.capacity() > POOL_RESULTS / 4 {
        return;
    }
    let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if pool.results + batch.capacity() <= POOL_RESULTS {
        pool.results += batch.capacity();
        pool.batches.push(batch);
        return;
    }
    drop(pool);
    drop(batch);
}

/// A batch of results that goes back to the pool when dropped.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Results(Vec<ProbeResult>);

impl From<Vec<ProbeResult>> for Results {
    fn from(results: Vec<ProbeResult>) -> Self {
        Self(results)
    }
}

impl FromIterator<ProbeResult> for Results {
    fn from_iter<I: IntoIterator<Item = ProbeResult>>(results: I) -> Self {
        Self(results.into_iter().collect())
    }
}

impl<'a> IntoIterator for &'a Results {
    type Item = &'a ProbeResult;
    type IntoIter = std::slice::Iter<'a, ProbeResult>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a mut Results {
    type Item = &'a mut ProbeResult;
    type IntoIter = std::slice::IterMut<'a, ProbeResult>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter_mut()
    }
}

impl Deref for Results {
    type Target = Vec<ProbeResult>;
    fn deref(&self) -> &Vec<ProbeResult> {
        &self.0
    }
}

impl DerefMut for Results {
    fn deref_mut(&mut self) -> &mut Vec<ProbeResult> {
        &mut self.0
    }
}

impl Drop for Results {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

/// Decodes an `AgentMessage` exactly as `AgentMessage::decode` does, with its results (if it
/// carries a batch) decoded into a pooled batch.
pub fn decode_agent_message(bytes: &[u8]) -> Result<AgentMessage, DecodeError> {
    // The common message holds only `results` fields; anything else takes prost's own path.
    let pooled = decode_pooled(|batch, used| {
        let mut buf = bytes;
        while !buf.is_empty() {
            match field(&mut buf, 2) {
                Some(inner) if merge_batch(batch, inner, used) => {}
                _ => return false,
            }
        }
        true
    });
    match pooled {
        Some(batch) => Ok(AgentMessage {
            msg: (!bytes.is_empty()).then_some(agent_message::Msg::Results(batch)),
        }),
        None => AgentMessage::decode(bytes),
    }
}

/// Decodes a `ResultBatch` exactly as `ResultBatch::decode` does, into a pooled batch.
pub fn decode_result_batch(bytes: &[u8]) -> Result<ResultBatch, DecodeError> {
    decode_pooled(|batch, used| merge_batch(batch, bytes, used))
        .map_or_else(|| ResultBatch::decode(bytes), Ok)
}

/// A batch from the pool filled by `merge` (which counts the results it wrote in `used`), or
/// `None`, with the batch given back, when `merge` finds something it leaves to prost.
fn decode_pooled(merge: impl FnOnce(&mut ResultBatch, &mut usize) -> bool) -> Option<ResultBatch> {
    let mut batch = ResultBatch {
        results: take(),
        ..ResultBatch::default()
    };
    let mut used = 0;
    if !merge(&mut batch, &mut used) {
        give(batch.results);
        return None;
    }
    batch.results.truncate(used);
    Some(batch)
}

/// The payload of the length-delimited field `tag` at the front of `buf`, or `None` when the
/// next field is anything else or malformed (the caller then leaves it to prost).
fn field<'a>(buf: &mut &'a [u8], tag: u32) -> Option<&'a [u8]> {
    let (got, wire_type) = decode_key(buf).ok()?;
    if got != tag {
        return None;
    }
    payload(wire_type, buf)
}

/// The payload of a length-delimited field whose key was just read, taken off `buf`; `None`
/// for another wire type or a length past the end.
fn payload<'a>(wire_type: WireType, buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    if wire_type != WireType::LengthDelimited {
        return None;
    }
    let len = usize::try_from(decode_varint(buf).ok()?).ok()?;
    if len > buf.len() {
        return None;
    }
    let (payload, rest) = buf.split_at(len);
    *buf = rest;
    Some(payload)
}

/// Merges a `ResultBatch`'s fields into `batch`, its results over `batch.results[*used..]`
/// (reusing them) and then appended. `false` when something is malformed: the caller decodes
/// the whole message again with prost, for prost's error.
fn merge_batch(batch: &mut ResultBatch, mut buf: &[u8], used: &mut usize) -> bool {
    while !buf.is_empty() {
        let mut peek = buf;
        if let Some(result) = field(&mut peek, 1) {
            buf = peek;
            let merged = match batch.results.get_mut(*used) {
                Some(old) => merge_result(old, result).is_some(),
                None => ProbeResult::decode(result)
                    .map(|r| batch.results.push(r))
                    .is_ok(),
            };
            if !merged {
                return false;
            }
            *used += 1;
            continue;
        }
        let Ok((tag, wire_type)) = decode_key(&mut buf) else {
            return false;
        };
        if tag == 1
            || batch
                .merge_field(tag, wire_type, &mut buf, DecodeContext::default())
                .is_err()
        {
            return false;
        }
    }
    true
}

/// Decodes a result over an old one, as prost would decode it afresh. A probe reports the same
/// details and values every run, so map entries that carry the old keys in the old order take
/// the new values in place (no map node freed or allocated, an equal string not copied); from
/// the first entry that does not, the map is rebuilt, the old entries' strings taking the new
/// ones. `None` when something is malformed.
fn merge_result(r: &mut ProbeResult, mut buf: &[u8]) -> Option<()> {
    let details = std::mem::take(&mut r.details);
    let values = std::mem::take(&mut r.values);
    r.clear();
    let mut details = InPlace::new(details);
    let mut values = InPlace::new(values);
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf).ok()?;
        match tag {
            12 => details.merge(payload(wire_type, &mut buf)?)?,
            13 => values.merge(payload(wire_type, &mut buf)?)?,
            _ => r
                .merge_field(tag, wire_type, &mut buf, DecodeContext::default())
                .ok()?,
        }
    }
    r.details = details.finish();
    r.values = values.finish();
    Some(())
}

/// Entries a map takes in place at most: finding the next old entry walks the map from its
/// start, so a long map (no probe reports one) is rebuilt rather than walked quadratically.
const IN_PLACE_ENTRIES: usize = 32;

/// A map being decoded over its old self. While the entries come with the old keys in order,
/// the first `matched` old entries take their values in place; from the first entry that does
/// not, `spare` holds the old entries past those, whose strings the next entries take.
struct InPlace<V> {
    map: BTreeMap<String, V>,
    matched: usize,
    spare: Option<BTreeMap<String, V>>,
}

impl<V: Default + ProstMapValue> InPlace<V> {
    fn new(map: BTreeMap<String, V>) -> Self {
        Self {
            map,
            matched: 0,
            spare: None,
        }
    }

    /// Merges one entry: in place while the keys are the old ones in order, else as prost.
    fn merge(&mut self, entry: &[u8]) -> Option<()> {
        if self.spare.is_none() {
            if self.matched < IN_PLACE_ENTRIES
                && let Some((key, value)) = plain_entry(entry)
                && let Some((old_key, old_value)) = self.map.iter_mut().nth(self.matched)
                && old_key.as_bytes() == key
                && old_value.update(value).is_some()
            {
                self.matched += 1;
                return Some(());
            }
            // Keep the entries matched so far; the others become spares.
            let mut spare = std::mem::take(&mut self.map);
            for _ in 0..self.matched {
                let (k, v) = spare.pop_first()?;
                self.map.insert(k, v);
            }
            self.spare = Some(spare);
        }
        let spare = self.spare.as_mut()?;
        let (mut key, mut value) = spare.pop_first().unwrap_or_default();
        key.clear();
        value.update(None)?; // an entry without a value field leaves the default
        merge_entry(entry, &mut key, &mut value)?;
        self.map.insert(key, value);
        Some(())
    }

    /// The map decoded: old entries the message did not carry are dropped.
    fn finish(mut self) -> BTreeMap<String, V> {
        if self.spare.is_none() {
            while self.map.len() > self.matched {
                self.map.pop_last();
            }
        }
        self.map
    }
}

/// How prost decodes a map value of this type.
trait ProstMapValue: Sized {
    /// Takes an entry's value field (`None` when the entry has none), as prost would decode
    /// it, over the old value; `None`, with the old value as it was, when it cannot.
    fn update(&mut self, field: Option<ValueField<'_>>) -> Option<()>;
    fn merge(
        wire_type: WireType,
        value: &mut Self,
        buf: &mut &[u8],
        ctx: DecodeContext,
    ) -> Result<(), DecodeError>;
}

impl ProstMapValue for String {
    fn update(&mut self, field: Option<ValueField<'_>>) -> Option<()> {
        match field {
            None => self.clear(),
            // An equal value (the usual case) is not copied.
            Some((WireType::LengthDelimited, bytes)) if self.as_bytes() != bytes => {
                let text = std::str::from_utf8(bytes).ok()?;
                self.clear();
                self.push_str(text);
            }
            Some((WireType::LengthDelimited, _)) => {}
            Some(_) => return None,
        }
        Some(())
    }
    fn merge(
        w: WireType,
        v: &mut Self,
        b: &mut &[u8],
        c: DecodeContext,
    ) -> Result<(), DecodeError> {
        string::merge(w, v, b, c)
    }
}

impl ProstMapValue for f64 {
    fn update(&mut self, field: Option<ValueField<'_>>) -> Option<()> {
        *self = match field {
            None => 0.0,
            Some((WireType::SixtyFourBit, bytes)) => f64::from_le_bytes(bytes.try_into().ok()?),
            Some(_) => return None,
        };
        Some(())
    }
    fn merge(
        w: WireType,
        v: &mut Self,
        b: &mut &[u8],
        c: DecodeContext,
    ) -> Result<(), DecodeError> {
        double::merge(w, v, b, c)
    }
}

/// A map entry's value field: its wire type and payload.
type ValueField<'a> = (WireType, &'a [u8]);

/// A map entry's key and value field, when it holds exactly a key (tag 1, length-delimited)
/// and then a value (tag 2), either of which may be left out as prost leaves defaults out.
/// The value comes as its wire type and payload (length-delimited) or 8 bytes (64-bit).
fn plain_entry(mut entry: &[u8]) -> Option<(&[u8], Option<ValueField<'_>>)> {
    let mut key: &[u8] = &[];
    let mut value = None;
    let mut last_tag = 0;
    while !entry.is_empty() {
        let (tag, wire_type) = decode_key(&mut entry).ok()?;
        if tag <= last_tag {
            return None;
        }
        last_tag = tag;
        match (tag, wire_type) {
            (1, _) => key = payload(wire_type, &mut entry)?,
            (2, WireType::LengthDelimited) => {
                value = Some((wire_type, payload(wire_type, &mut entry)?))
            }
            (2, WireType::SixtyFourBit) if entry.len() >= 8 => {
                let (bytes, rest) = entry.split_at(8);
                entry = rest;
                value = Some((wire_type, bytes));
            }
            _ => return None,
        }
    }
    Some((key, value))
}

/// One map entry (`key = 1`, `value = 2`) into `key` and `value`, as prost's map merge reads it.
fn merge_entry<V: ProstMapValue>(mut entry: &[u8], key: &mut String, value: &mut V) -> Option<()> {
    while !entry.is_empty() {
        let (tag, wire_type) = decode_key(&mut entry).ok()?;
        let ctx = DecodeContext::default();
        match tag {
            1 => string::merge(wire_type, key, &mut entry, ctx),
            2 => V::merge(wire_type, value, &mut entry, ctx),
            _ => skip_field(wire_type, tag, &mut entry, ctx),
        }
        .ok()?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::v1::Hello;

    fn result(seq: u64, detail: &str) -> ProbeResult {
        ProbeResult {
            check_id: "shop/checkout".into(),
            target: format!("http://10.0.0.{seq}/health"),
            agent_id: "node-a-1".into(),
            seq,
            details: BTreeMap::from([("status_code".into(), detail.into())]),
            values: BTreeMap::from([("probe_duration_seconds".into(), 0.25)]),
            ..ProbeResult::default()
        }
    }

    fn batch_message(results: Vec<ProbeResult>) -> AgentMessage {
        AgentMessage {
            msg: Some(agent_message::Msg::Results(ResultBatch {
                results,
                agent_id: "one-shot".into(),
                batch_seq: 9,
            })),
        }
    }

    /// Reused results carry nothing over: a long batch, then a short one of other values,
    /// decode as prost decodes them.
    #[test]
    fn pooled_decoding_equals_prost_decoding() {
        let long = batch_message((1..=50).map(|s| result(s, "200")).collect());
        let short = batch_message(vec![
            ProbeResult {
                seq: 77,
                ..ProbeResult::default()
            },
            ProbeResult {
                seq: 78,
                details: BTreeMap::from([
                    ("a".into(), String::new()),
                    ("resolved_ip".into(), "10.1.1.1".into()),
                    ("status_code".into(), "404".into()),
                ]),
                values: BTreeMap::from([("x".into(), -1.5), ("y".into(), 0.0)]),
                ..ProbeResult::default()
            },
        ]);
        for message in [&long, &short, &long] {
            let bytes = message.encode_to_vec();
            let decoded = decode_agent_message(&bytes).unwrap();
            assert_eq!(&decoded, message);
            assert_eq!(decoded, AgentMessage::decode(bytes.as_slice()).unwrap());
            if let Some(agent_message::Msg::Results(batch)) = decoded.msg {
                drop(Results::from(batch.results));
            }
        }
        let empty = batch_message(Vec::new());
        let bytes = empty.encode_to_vec();
        assert_eq!(decode_agent_message(&bytes).unwrap(), empty);
        let batch = ResultBatch {
            results: vec![result(3, "503")],
            ..ResultBatch::default()
        };
        let bytes = batch.encode_to_vec();
        assert_eq!(decode_result_batch(&bytes).unwrap(), batch);
    }

    /// Every result decoded over every other (maps with the same keys, other values, fewer,
    /// more, none, out of order, repeated, empty values) equals prost's decoding of it alone.
    #[test]
    fn results_decoded_over_any_other_equal_prosts() {
        let with = |details: &[(&str, &str)], values: &[(&str, f64)]| ProbeResult {
            details: details
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            values: values.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            ..result(1, "unused")
        };
        let plain = [
            with(&[("status_code", "200")], &[("d", 0.5)]),
            with(&[("status_code", "503")], &[("d", 0.25)]),
            with(
                &[("a", "1"), ("status_code", "200")],
                &[("d", 0.5), ("e", 1.0)],
            ),
            with(&[("a", "2"), ("b", "200")], &[("e", 1.0)]),
            with(&[("a", ""), ("status_code", "")], &[("d", 0.0)]),
            with(&[], &[]),
        ];
        let mut inputs: Vec<Vec<u8>> = plain.iter().map(Message::encode_to_vec).collect();
        // Longer than the in-place limit: rebuilt past it, still as prost decodes it.
        let long: Vec<(String, String)> = (0..IN_PLACE_ENTRIES + 8)
            .map(|i| (format!("k{i:03}"), i.to_string()))
            .collect();
        let long: Vec<(&str, &str)> = long.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        inputs.push(with(&long, &[]).encode_to_vec());
        inputs.push(with(&long[..IN_PLACE_ENTRIES + 2], &[]).encode_to_vec());
        // Concatenated messages merge: entries out of key order, and a key given twice.
        inputs.push([plain[3].encode_to_vec(), plain[0].encode_to_vec()].concat());
        inputs.push([plain[0].encode_to_vec(), plain[1].encode_to_vec()].concat());
        for before in &inputs {
            for bytes in &inputs {
                let mut slot = ProbeResult::default();
                merge_result(&mut slot, before).unwrap();
                merge_result(&mut slot, bytes).unwrap();
                assert_eq!(slot, ProbeResult::decode(bytes.as_slice()).unwrap());
            }
        }
        // A value that is not UTF-8 over a key kept in place: prost's error path.
        let mut bad = plain[0].encode_to_vec();
        let at = bad.windows(3).position(|w| w == b"200").unwrap();
        bad[at] = 0xff;
        let mut slot = ProbeResult::default();
        merge_result(&mut slot, &inputs[0]).unwrap();
        assert!(merge_result(&mut slot, &bad).is_none());
        assert!(ProbeResult::decode(bad.as_slice()).is_err());
    }

    #[test]
    fn reused_results_keep_their_strings_and_carry_nothing_over() {
        let fresh = ResultBatch {
            results: vec![ProbeResult {
                seq: 9,
                details: BTreeMap::from([("b".into(), "x".into())]),
                ..ProbeResult::default()
            }],
            ..ResultBatch::default()
        };
        let mut batch = ResultBatch {
            results: (1..=3).map(|s| result(s, "200")).collect(),
            ..ResultBatch::default()
        };
        let mut used = 0;
        assert!(merge_batch(&mut batch, &fresh.encode_to_vec(), &mut used));
        batch.results.truncate(used);
        assert_eq!(batch, fresh);
        let reused = &batch.results[0];
        assert!(reused.check_id.is_empty() && reused.check_id.capacity() >= "shop/checkout".len());
        let (key, _) = reused.details.first_key_value().unwrap();
        assert!(
            key.capacity() >= "status_code".len(),
            "the old entry's key took the new one"
        );
    }

    #[test]
    fn other_messages_and_bad_bytes_take_prosts_path() {
        let hello = AgentMessage {
            msg: Some(agent_message::Msg::Hello(Hello {
                agent_id: "a".into(),
                ..Hello::default()
            })),
        };
        let bytes = hello.encode_to_vec();
        assert_eq!(decode_agent_message(&bytes).unwrap(), hello);
        assert_eq!(decode_agent_message(&[]).unwrap(), AgentMessage::default());

        // A hello and then a batch: the last field of a oneof wins, as in prost.
        let mut both = bytes.clone();
        both.extend(batch_message(vec![result(1, "200")]).encode_to_vec());
        assert_eq!(
            decode_agent_message(&both).unwrap(),
            AgentMessage::decode(both.as_slice()).unwrap()
        );

        // Truncated and garbled input fail with prost's own error.
        let full = batch_message(vec![result(1, "200"), result(2, "200")]).encode_to_vec();
        for bad in [&full[..full.len() - 3], &[0x12, 0x05, 0x0a, 0xff, 0xff][..]] {
            assert_eq!(
                decode_agent_message(bad).unwrap_err().to_string(),
                AgentMessage::decode(bad).unwrap_err().to_string()
            );
        }
    }
}
