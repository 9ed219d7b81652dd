//! The spill's segment file format: a magic header, then records of one encoded `ProbeResult`
//! each, framed by length, seq and a CRC-32, and the parser that keeps every whole record before
//! the first damaged byte.
//!
//! ```text
//! file   = "VGSPILL1" record*
//! record = len:u32le seq:u64le crc:u32le payload[len]     crc = CRC-32(seq bytes ++ payload)
//! ```

use bytes::Bytes;

/// First bytes of every segment file (format version 1).
pub const MAGIC: &[u8; 8] = b"VGSPILL1";
/// Bytes of a record's frame before its payload.
pub const FRAME_BYTES: usize = 4 + 8 + 4;
/// Largest payload a record may claim; anything longer is damage, not a result.
pub const MAX_PAYLOAD_BYTES: usize = vigil_proto::MAX_MESSAGE_BYTES;

/// Appends one framed record to `out`.
pub fn frame(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("payloads are far below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&checksum(seq, payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The whole records of `data` (a file's bytes from offset `base`, which is 0 or just after a
/// record) in order, and why parsing stopped early, if it did.
pub struct Parsed {
    pub records: Vec<(u64, Bytes)>,
    /// Offset (in file terms) just after the last whole record.
    pub end: u64,
    /// Set when bytes after `end` could not be read as records: what was wrong.
    pub cut: Option<String>,
}

/// Parses records from `data`, which starts at file offset `base`; `after_seq` is the seq of the
/// record before `base` (0 at the start of the file): seqs must keep increasing.
pub fn parse(data: Bytes, base: u64, mut after_seq: u64) -> Parsed {
    let mut records = Vec::new();
    let mut at = 0usize;
    if base == 0 {
        if data.len() < MAGIC.len() || &data[..MAGIC.len()] != MAGIC {
            let cut = if data.len() < MAGIC.len() {
                format!("the file is {} bytes, shorter than its header", data.len())
            } else {
                "the file does not start with the spill header VGSPILL1".to_owned()
            };
            return Parsed {
                records,
                end: 0,
                cut: Some(cut),
            };
        }
        at = MAGIC.len();
    }
    let cut = loop {
        let rest = &data[at..];
        if rest.is_empty() {
            break None;
        }
        if rest.len() < FRAME_BYTES {
            break Some(format!(
                "a record frame was cut short ({} of {FRAME_BYTES} bytes)",
                rest.len()
            ));
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let seq = u64::from_le_bytes(rest[4..12].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(rest[12..16].try_into().expect("4 bytes"));
        if len > MAX_PAYLOAD_BYTES {
            break Some(format!(
                "a record claims {len} bytes, more than the {MAX_PAYLOAD_BYTES} a result may have"
            ));
        }
        if rest.len() < FRAME_BYTES + len {
            break Some(format!(
                "the last record was cut short ({} of {len} payload bytes)",
                rest.len() - FRAME_BYTES
            ));
        }
        if seq <= after_seq {
            break Some(format!(
                "record seq {seq} does not follow seq {after_seq} (seqs must increase)"
            ));
        }
        let start = at + FRAME_BYTES;
        let payload = &data[start..start + len];
        if checksum(seq, payload) != crc {
            break Some(format!("record seq {seq} fails its checksum"));
        }
        records.push((seq, data.slice(start..start + len)));
        after_seq = seq;
        at = start + len;
    };
    Parsed {
        records,
        end: base + at as u64,
        cut,
    }
}

/// CRC-32 (IEEE) over the seq's little-endian bytes followed by the payload.
fn checksum(seq: u64, payload: &[u8]) -> u32 {
    !crc32_update(crc32_update(!0, &seq.to_le_bytes()), payload)
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

fn crc32_update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = CRC_TABLE[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(records: &[(u64, &[u8])]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        for (seq, p) in records {
            frame(*seq, p, &mut out);
        }
        out
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        // The CRC-32/ISO-HDLC check value for "123456789".
        assert_eq!(!crc32_update(!0, b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn whole_file_parses_back() {
        let data = file(&[(3, b"abc"), (4, b""), (9, b"xyz")]);
        let p = parse(Bytes::from(data.clone()), 0, 0);
        assert!(p.cut.is_none());
        assert_eq!(p.end, data.len() as u64);
        let got: Vec<(u64, &[u8])> = p.records.iter().map(|(s, b)| (*s, &b[..])).collect();
        assert_eq!(got, [(3, &b"abc"[..]), (4, b""), (9, b"xyz")]);
    }

    #[test]
    fn every_truncation_keeps_the_whole_records_before_it() {
        let data = file(&[(1, b"first"), (2, b"second")]);
        let first_end = MAGIC.len() + FRAME_BYTES + 5;
        for cut in 0..data.len() {
            let p = parse(Bytes::copy_from_slice(&data[..cut]), 0, 0);
            let want = usize::from(cut >= first_end);
            assert_eq!(p.records.len(), want, "cut at {cut}");
            if cut != MAGIC.len() && cut != first_end {
                assert!(p.cut.is_some(), "cut at {cut} is reported");
            }
        }
    }

    #[test]
    fn garbage_is_reported_not_trusted() {
        let mut data = file(&[(1, b"good")]);
        let good_end = data.len() as u64;
        data.extend_from_slice(&[0xFF; 40]);
        let p = parse(Bytes::from(data), 0, 0);
        assert_eq!(p.records.len(), 1);
        assert_eq!(p.end, good_end);
        assert!(p.cut.unwrap().contains("claims"), "huge length is refused");

        // A flipped payload byte fails the checksum.
        let mut data = file(&[(1, b"good"), (2, b"also good")]);
        let last = data.len() - 1;
        data[last] ^= 1;
        let p = parse(Bytes::from(data), 0, 0);
        assert_eq!(p.records.len(), 1);
        assert!(p.cut.unwrap().contains("checksum"));

        // Not a spill file at all.
        let p = parse(Bytes::from_static(b"hello, world, this is text"), 0, 0);
        assert!(p.records.is_empty());
        assert!(p.cut.unwrap().contains("header"));
    }

    #[test]
    fn seqs_must_increase() {
        let data = file(&[(5, b"a"), (5, b"b")]);
        let p = parse(Bytes::from(data), 0, 0);
        assert_eq!(p.records.len(), 1);
        assert!(p.cut.unwrap().contains("does not follow"));
    }

    #[test]
    fn parsing_resumes_mid_file() {
        let data = file(&[(1, b"a"), (2, b"b")]);
        let base = (MAGIC.len() + FRAME_BYTES + 1) as u64;
        let p = parse(Bytes::copy_from_slice(&data[base as usize..]), base, 1);
        assert!(p.cut.is_none());
        assert_eq!(p.records.len(), 1);
        assert_eq!(p.records[0].0, 2);
        assert_eq!(p.end, data.len() as u64);
    }
}
