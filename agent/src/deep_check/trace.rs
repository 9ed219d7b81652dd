//! Traceroute-style TTL probing: ICMP echo requests with a growing TTL (IPv4), each hop named
//! by the router whose "time exceeded" comes back, until the target answers.
//!
//! Seeing another router's "time exceeded" takes a raw ICMP socket (CAP_NET_RAW); the
//! unprivileged ping socket only delivers echo replies. Without one the finding says so and
//! nothing else happens: TTL probing is an extra, never a reason to fail.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use vigil_proto::{DeepCheckFinding, Outcome};

use crate::probe::io_cause;

const ECHO_REPLY: u8 = 0;
const DEST_UNREACHABLE: u8 = 3;
const ECHO_REQUEST: u8 = 8;
const TIME_EXCEEDED: u8 = 11;
/// Consecutive silent hops after which probing stops.
const SILENT_HOPS: u32 = 4;

/// Probes the hops towards `ip`, at most `max_hops`, waiting `per_hop` for each answer.
pub async fn trace(ip: IpAddr, max_hops: u8, per_hop: Duration) -> DeepCheckFinding {
    let mut finding = DeepCheckFinding {
        section: format!("traceroute {ip}"),
        ..Default::default()
    };
    let IpAddr::V4(dest) = ip else {
        finding.summary = "not done: TTL probing is implemented for IPv4 targets only".into();
        return finding;
    };
    let socket = match open() {
        Ok(s) => s,
        Err(e) => {
            finding.summary = format!(
                "not done: TTL probing needs a raw ICMP socket and {e}; give the pod the \
                 NET_RAW capability to see the hops"
            );
            return finding;
        }
    };
    let id: u16 = rand::random();
    let mut silent = 0;
    let mut hops = Vec::new();
    let mut reached = None;
    for ttl in 1..=max_hops {
        let hop = match probe_hop(&socket, dest, id, ttl, per_hop).await {
            Ok(h) => h,
            Err(e) => {
                finding.outcome = Outcome::Error as i32;
                finding.summary = format!("stopped at hop {ttl}: {e}");
                return finding;
            }
        };
        let text = match &hop {
            Some((from, rtt, _)) => format!("{from} {:.3}ms", rtt.as_secs_f64() * 1e3),
            None => "*".to_owned(),
        };
        finding
            .details
            .insert(format!("hop_{ttl:02}"), text.clone());
        hops.push(text);
        match hop {
            Some((from, rtt, Hop::Reached)) => {
                finding.values.insert("hops".into(), f64::from(ttl));
                finding
                    .values
                    .insert("rtt_seconds".into(), rtt.as_secs_f64());
                reached = Some(format!(
                    "reached {from} in {ttl} hop{}",
                    if ttl == 1 { "" } else { "s" }
                ));
                break;
            }
            Some((from, _, Hop::Unreachable)) => {
                reached = Some(format!(
                    "{from} answered destination unreachable at hop {ttl}"
                ));
                break;
            }
            Some((_, _, Hop::Router)) => silent = 0,
            None => {
                silent += 1;
                if silent >= SILENT_HOPS {
                    reached = Some(format!("stopped after {SILENT_HOPS} silent hops"));
                    break;
                }
            }
        }
    }
    let reached = reached.unwrap_or_else(|| format!("not reached within {max_hops} hops"));
    finding.outcome = if reached.starts_with("reached") {
        Outcome::Success
    } else {
        Outcome::Failure
    } as i32;
    finding.summary = format!("{reached}: {}", hops.join(" > "));
    finding
}

/// What answered one hop.
enum Hop {
    Router,
    Reached,
    Unreachable,
}

fn open() -> Result<UdpSocket, String> {
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            "this process lacks CAP_NET_RAW".to_owned()
        } else {
            format!("it cannot be opened: {}", io_cause(&e))
        }
    })?;
    socket
        .set_nonblocking(true)
        .and_then(|()| UdpSocket::from_std(std::net::UdpSocket::from(socket)))
        .map_err(|e| format!("it cannot be used: {}", io_cause(&e)))
}

/// Sends one echo request with `ttl` and waits for what comes back about it.
async fn probe_hop(
    socket: &UdpSocket,
    dest: Ipv4Addr,
    id: u16,
    ttl: u8,
    per_hop: Duration,
) -> Result<Option<(Ipv4Addr, Duration, Hop)>, String> {
    socket
        .set_ttl(u32::from(ttl))
        .map_err(|e| format!("cannot set the TTL: {}", io_cause(&e)))?;
    let seq = u16::from(ttl);
    let packet = echo_request(id, seq);
    let t = Instant::now();
    socket
        .send_to(&packet, SocketAddr::new(IpAddr::V4(dest), 0))
        .await
        .map_err(|e| format!("cannot send to {dest}: {}", io_cause(&e)))?;
    let deadline = tokio::time::Instant::now() + per_hop;
    let mut buf = [0u8; 1500];
    loop {
        let got = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await;
        let Ok(got) = got else {
            return Ok(None);
        };
        let (n, _) = got.map_err(|e| format!("receive failed: {}", io_cause(&e)))?;
        if let Some((from, hop)) = classify(&buf[..n], dest, id, seq) {
            return Ok(Some((from, t.elapsed(), hop)));
        }
    }
}

/// What a received IPv4 packet says about our echo `(id, seq)` to `dest`, if anything.
fn classify(packet: &[u8], dest: Ipv4Addr, id: u16, seq: u16) -> Option<(Ipv4Addr, Hop)> {
    let (from, icmp) = ipv4_payload(packet)?;
    let kind = *icmp.first()?;
    let ours = |echo: &[u8]| {
        echo.len() >= 8
            && echo[0] == ECHO_REQUEST
            && u16::from_be_bytes([echo[4], echo[5]]) == id
            && u16::from_be_bytes([echo[6], echo[7]]) == seq
    };
    match kind {
        ECHO_REPLY if from == dest && icmp.len() >= 8 => {
            let matches = u16::from_be_bytes([icmp[4], icmp[5]]) == id
                && u16::from_be_bytes([icmp[6], icmp[7]]) == seq;
            matches.then_some((from, Hop::Reached))
        }
        TIME_EXCEEDED | DEST_UNREACHABLE => {
            let original = icmp.get(8..)?;
            let (_, inner) = ipv4_payload(original)?;
            let inner_dest = Ipv4Addr::new(original[16], original[17], original[18], original[19]);
            if inner_dest != dest || !ours(inner) {
                return None;
            }
            let hop = if kind == TIME_EXCEEDED {
                Hop::Router
            } else if from == dest {
                Hop::Reached
            } else {
                Hop::Unreachable
            };
            Some((from, hop))
        }
        _ => None,
    }
}

/// The source address and payload of an IPv4 packet (header length from IHL).
fn ipv4_payload(packet: &[u8]) -> Option<(Ipv4Addr, &[u8])> {
    if packet.len() < 20 || packet[0] >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let from = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    Some((from, packet.get(ihl..)?))
}

/// An ICMP echo request with a 16-byte payload and its checksum.
fn echo_request(id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![ECHO_REQUEST, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(b"vigil-deep-check");
    let sum = checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, 64, 1, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn echo_requests_carry_a_valid_checksum() {
        let p = echo_request(0x1234, 7);
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
        assert_eq!(&p[4..8], &[0x12, 0x34, 0, 7]);
    }

    #[test]
    fn replies_are_matched_to_our_echo() {
        let dest = Ipv4Addr::new(10, 0, 0, 9);
        let mut reply = echo_request(5, 3);
        reply[0] = ECHO_REPLY;
        let got = classify(&ipv4([10, 0, 0, 9], [10, 0, 0, 1], &reply), dest, 5, 3);
        assert!(matches!(got, Some((ip, Hop::Reached)) if ip == dest));
        assert!(classify(&ipv4([10, 0, 0, 9], [10, 0, 0, 1], &reply), dest, 5, 4).is_none());

        // A router's time exceeded quotes our request's IP header and first 8 bytes.
        let quoted = ipv4([10, 0, 0, 1], [10, 0, 0, 9], &echo_request(5, 3)[..8]);
        let mut exceeded = vec![TIME_EXCEEDED, 0, 0, 0, 0, 0, 0, 0];
        exceeded.extend_from_slice(&quoted);
        let got = classify(
            &ipv4([192, 168, 1, 1], [10, 0, 0, 1], &exceeded),
            dest,
            5,
            3,
        );
        assert!(matches!(got, Some((ip, Hop::Router)) if ip == Ipv4Addr::new(192, 168, 1, 1)));
        // Someone else's probe, or garbage, is not ours.
        assert!(
            classify(
                &ipv4([192, 168, 1, 1], [10, 0, 0, 1], &exceeded),
                dest,
                6,
                3
            )
            .is_none()
        );
        assert!(classify(&[0x45, 0, 1], dest, 5, 3).is_none());
        assert!(
            classify(
                &ipv4([1, 1, 1, 1], [2, 2, 2, 2], &[TIME_EXCEEDED]),
                dest,
                5,
                3
            )
            .is_none()
        );
    }
}
