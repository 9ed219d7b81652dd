//! A result's JSON record written straight from the protobuf, byte for byte what serde_json
//! writes for its [`ResultRecord`](super::ResultRecord): every sink encodes every result, and
//! building an owned record (a dozen allocations) to serialize it through serde cost more than
//! handing the record to Kafka.

use std::collections::BTreeMap;

use vigil_proto::ProbeResult;

use super::SCHEMA_VERSION;

/// Appends the JSON record of `r` (schema 1, `ResultRecord`'s fields, order and skip rules).
pub fn write_json(r: &ProbeResult, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"schema\":");
    unsigned(u64::from(SCHEMA_VERSION), out);
    out.extend_from_slice(b",\"agent\":");
    string(&r.agent_id, out);
    out.extend_from_slice(b",\"seq\":");
    unsigned(r.seq, out);
    out.extend_from_slice(b",\"check\":");
    string(&r.check_id, out);
    out.extend_from_slice(b",\"target\":");
    string(&r.target, out);
    out.extend_from_slice(b",\"cluster\":");
    string(&r.cluster, out);
    out.extend_from_slice(b",\"node\":");
    string(&r.node, out);
    out.extend_from_slice(b",\"scope\":");
    string(&r.scope, out);
    out.extend_from_slice(b",\"start\":\"");
    out.extend_from_slice(&rfc3339_bytes(r.start_unix_nanos));
    out.extend_from_slice(b"\",\"start_unix_nanos\":");
    if r.start_unix_nanos < 0 {
        out.push(b'-');
    }
    unsigned(r.start_unix_nanos.unsigned_abs(), out);
    out.extend_from_slice(b",\"latency_seconds\":");
    float(r.latency_nanos as f64 / 1e9, out);
    out.extend_from_slice(b",\"outcome\":");
    string(r.outcome().name(), out);
    if !r.reason.is_empty() {
        out.extend_from_slice(b",\"reason\":");
        string(&r.reason, out);
    }
    out.extend_from_slice(b",\"attempt\":");
    unsigned(u64::from(r.attempt), out);
    if !r.details.is_empty() {
        out.extend_from_slice(b",\"details\":");
        object(&r.details, out, |v, out| string(v, out));
    }
    if !r.values.is_empty() {
        out.extend_from_slice(b",\"values\":");
        object(&r.values, out, |v, out| float(*v, out));
    }
    out.push(b'}');
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (what `humantime::format_rfc3339_nanos` writes); times
/// before 1970 are clamped to the epoch.
pub fn rfc3339_bytes(unix_nanos: i64) -> [u8; 30] {
    let nanos = u64::try_from(unix_nanos).unwrap_or(0);
    let mut b = *b"0000-00-00T00:00:00.000000000Z";
    b[..19].copy_from_slice(&date_time(nanos / 1_000_000_000));
    // The nine digits of the fraction as 1 + 4 + 4, two at a time from a table: no chain of
    // nine divisions, each waiting for the last.
    let subsec = (nanos % 1_000_000_000) as u32;
    b[20] = b'0' + (subsec / 100_000_000) as u8;
    b[21..25].copy_from_slice(&four_digits(subsec / 10_000 % 10_000));
    b[25..29].copy_from_slice(&four_digits(subsec % 10_000));
    b
}

/// `YYYY-MM-DDTHH:MM:SS` of a Unix second. The last one formatted is kept per thread: a
/// batch's results mostly start in the same second, and every result's time is formatted for
/// the state and again for the sinks.
fn date_time(secs: u64) -> [u8; 19] {
    thread_local! {
        static LAST: std::cell::Cell<(u64, [u8; 19])> =
            const { std::cell::Cell::new((u64::MAX, [0; 19])) };
    }
    LAST.with(|last| {
        let (at, text) = last.get();
        if at == secs {
            return text;
        }
        let (year, month, day) = civil_from_days(secs / 86_400);
        let of_day = secs % 86_400;
        let mut b = *b"0000-00-00T00:00:00";
        digits(year, &mut b[0..4]);
        digits(month, &mut b[5..7]);
        digits(day, &mut b[8..10]);
        digits(of_day / 3600, &mut b[11..13]);
        digits(of_day / 60 % 60, &mut b[14..16]);
        digits(of_day % 60, &mut b[17..19]);
        last.set((secs, b));
        b
    })
}

/// "00" to "99".
const PAIRS: [u8; 200] = {
    let mut t = [0u8; 200];
    let mut i = 0;
    while i < 100 {
        t[2 * i] = b'0' + (i / 10) as u8;
        t[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    t
};

/// `n` (below 10,000) as four digits.
fn four_digits(n: u32) -> [u8; 4] {
    let hi = (n / 100) as usize * 2;
    let lo = (n % 100) as usize * 2;
    [PAIRS[hi], PAIRS[hi + 1], PAIRS[lo], PAIRS[lo + 1]]
}

/// (year, month, day) of a day counted from 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// `n` in decimal, zero-padded to fill `dst` exactly (higher digits are dropped).
fn digits(mut n: u64, dst: &mut [u8]) {
    for d in dst.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

fn unsigned(n: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(decimal(n, &mut [0u8; 20]));
}

/// The decimal digits of `n`, written at the end of `buf`.
pub fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// serde_json's own number formatting (and `null` for NaN and infinities).
fn float(v: f64, out: &mut Vec<u8>) {
    serde_json::to_writer(out, &v).expect("a Vec grows");
}

/// A map as a JSON object, in key order (the proto's maps are `BTreeMap`s, as the record's are).
fn object<V>(
    map: &BTreeMap<String, V>,
    out: &mut Vec<u8>,
    mut value: impl FnMut(&V, &mut Vec<u8>),
) {
    out.push(b'{');
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(k, out);
        out.push(b':');
        value(v, out);
    }
    out.push(b'}');
}

/// What follows a backslash for each byte that serde_json escapes (0: written as it is).
const ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Whether any byte of `bytes` needs escaping, eight bytes at a time (most strings need none).
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // Nonzero if some byte of `x` is zero (no false negatives; a false positive only means
    // taking the byte-by-byte path).
    let zero_byte = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let x = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        if control
            | zero_byte(x ^ (ONES * u64::from(b'"')))
            | zero_byte(x ^ (ONES * u64::from(b'\\')))
            != 0
        {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| ESCAPE[usize::from(b)] != 0)
}

/// A JSON string, escaped as serde_json escapes it.
fn string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    if !needs_escape(bytes) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape = ESCAPE[usize::from(b)];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[start..i]);
        out.push(b'\\');
        out.push(escape);
        if escape == b'u' {
            out.extend_from_slice(b"00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use vigil_proto::Outcome;

    use super::*;
    use crate::record::ResultRecord;

    fn same_as_serde(r: &ProbeResult) {
        let mut ours = Vec::new();
        write_json(r, &mut ours);
        let serde = serde_json::to_vec(&ResultRecord::from_proto(r)).unwrap();
        assert_eq!(
            String::from_utf8(ours).unwrap(),
            String::from_utf8(serde).unwrap()
        );
    }

    #[test]
    fn writes_what_serde_writes_for_the_owned_record() {
        let tricky = "q\"b\\s/\u{0}\u{1f}\u{7f}\u{8}\t\n\u{c}\r é 💥 </script>";
        same_as_serde(&ProbeResult {
            agent_id: "node-a-1".into(),
            seq: u64::MAX,
            check_id: "shop/web".into(),
            target: format!("http://10.0.0.1:8080/healthz?a={tricky}"),
            cluster: "eu-1".into(),
            node: "node-a".into(),
            scope: "node".into(),
            start_unix_nanos: 1_700_000_000_123_456_789,
            latency_nanos: 1_500_000,
            outcome: Outcome::Failure as i32,
            reason: tricky.into(),
            attempt: u32::MAX,
            details: [
                ("z", "last"),
                ("status_code", "503"),
                (tricky, tricky),
                ("a", ""),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .into(),
            values: [
                ("probe_duration_seconds", 0.25),
                ("b", -1.5e-9),
                ("c", 1e21),
                ("nan", f64::NAN),
                ("inf", f64::NEG_INFINITY),
                ("zero", -0.0),
            ]
            .map(|(k, v)| (k.to_owned(), v))
            .into(),
        });
        same_as_serde(&ProbeResult {
            start_unix_nanos: -5,
            outcome: 99,
            latency_nanos: u64::MAX,
            details: [("only".to_owned(), "one".to_owned())].into(),
            values: [("one".to_owned(), 1.0)].into(),
            ..Default::default()
        });
        same_as_serde(&ProbeResult::default());
    }

    #[test]
    fn every_byte_that_needs_escaping_is_found_anywhere_in_a_string() {
        for b in 0u8..128 {
            for len in 1..20 {
                for at in 0..len {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    let mut ours = Vec::new();
                    string(std::str::from_utf8(&s).unwrap(), &mut ours);
                    let serde = serde_json::to_vec(std::str::from_utf8(&s).unwrap()).unwrap();
                    assert_eq!(ours, serde, "byte {b:#x} at {at} of {len}");
                }
            }
        }
        let mut ours = Vec::new();
        string("é💥\u{80}\u{7ff}\u{ffff}", &mut ours);
        assert_eq!(
            ours,
            serde_json::to_vec("é💥\u{80}\u{7ff}\u{ffff}").unwrap()
        );
    }

    #[test]
    fn rfc3339_matches_humantime() {
        let mut samples: Vec<i64> = vec![
            0,
            1,
            999_999_999,
            1_000_000_000,
            951_782_400_000_000_000,   // 2000-02-29
            951_868_799_999_999_999,   // 2000-02-29T23:59:59.999999999
            4_107_542_400_000_000_000, // 2100-03-01
            1_700_000_000_123_456_789,
            i64::MAX,
        ];
        // A spread over the whole range, through every kind of year and month end.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            samples.push(i64::try_from(x >> 1).unwrap());
            let near = i64::try_from((x >> 1) % 4_200_000_000_000_000_000).unwrap();
            // Then times in the same second or the next (the kept second's path).
            samples.extend([near, near + 1, near + 999_999, near + 1_000_000_000]);
        }
        for n in samples {
            let t = UNIX_EPOCH + Duration::from_nanos(u64::try_from(n).unwrap());
            assert_eq!(
                std::str::from_utf8(&rfc3339_bytes(n)).unwrap(),
                humantime::format_rfc3339_nanos(t).to_string(),
                "{n}"
            );
        }
        assert_eq!(&rfc3339_bytes(-1), b"1970-01-01T00:00:00.000000000Z");
    }
}
