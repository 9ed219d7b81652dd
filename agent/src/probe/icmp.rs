//! ICMP echo probe ("ping"): sends `count` echo requests to the resolved host (IPv4 or IPv6)
//! and fails when more than `maxLossPercent` of them go unanswered.
//!
//! Sockets: an unprivileged ICMP datagram socket ("ping socket", allowed when the kernel's
//! `net.ipv4.ping_group_range` includes our group) is preferred; otherwise a raw socket
//! (needs `CAP_NET_RAW`). Each attempt opens its own socket. With a datagram socket the kernel
//! picks the echo identifier, fills in the checksum and delivers only our replies; with a raw
//! socket we build the request ourselves and see every ICMP packet the host receives, so a
//! reply only counts when its identifier, sequence number, the random token in its payload and
//! its source address all match. Anything else (other programs' pings, our own requests seen
//! on loopback, truncated or garbled packets) is ignored.
//!
//! Timing: the first echo goes out at once; each further echo goes out as soon as the previous
//! one is answered, or [`ECHO_SPACING`] after it was sent, whichever comes first (like
//! `ping -A` with a 100 ms ceiling). A healthy target is done in `count` round trips, a silent
//! one receives at most ten echoes a second. The probe finishes as soon as every echo is
//! accounted for: answered, or lost for a known reason (sending failed, or an ICMP error such as
//! "destination unreachable" came back for it, seen on raw sockets). The probe never gives up on
//! its own: an echo dropped silently stays outstanding until the scheduler's per-attempt
//! timeout ends the attempt (phase "waiting for echo replies"); `icmp_sent` and `icmp_received`
//! are recorded as they change, so such a result still shows how far it got.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::{Attempt, IpPreference, Probe, Verdict, io_cause, resolve};

/// Echo requests per run when the spec leaves `count` at 0 (the HealthCheck default).
const DEFAULT_COUNT: u32 = 3;
/// Longest wait before the next echo goes out while the previous one is unanswered.
pub const ECHO_SPACING: Duration = Duration::from_millis(100);
/// Bytes after the 8-byte ICMP header: an 8-byte per-run token, then a fixed pattern.
const PAYLOAD_LEN: usize = 32;
const TOKEN_LEN: usize = 8;
const RECV_BUF: usize = 4096;

const ICMP4_ECHO_REPLY: u8 = 0;
const ICMP4_DEST_UNREACHABLE: u8 = 3;
const ICMP4_ECHO_REQUEST: u8 = 8;
const ICMP4_TIME_EXCEEDED: u8 = 11;
const ICMP4_PARAMETER_PROBLEM: u8 = 12;
const ICMP6_DEST_UNREACHABLE: u8 = 1;
const ICMP6_PACKET_TOO_BIG: u8 = 2;
const ICMP6_TIME_EXCEEDED: u8 = 3;
const ICMP6_PARAMETER_PROBLEM: u8 = 4;
const ICMP6_ECHO_REQUEST: u8 = 128;
const ICMP6_ECHO_REPLY: u8 = 129;

pub struct IcmpProbe {
    host: String,
    count: u16,
    max_loss_percent: u32,
    /// After this long, echoes still unanswered count as lost (set from the check's timeout so
    /// that silent loss is judged against maxLossPercent instead of ending as TIMEOUT).
    reply_deadline: Option<Duration>,
}

impl IcmpProbe {
    pub fn new(spec: &vigil_proto::IcmpProbe) -> Result<Self, String> {
        if spec.host.trim().is_empty() {
            return Err("icmp host is empty".into());
        }
        let count = if spec.count == 0 {
            DEFAULT_COUNT
        } else {
            spec.count
        };
        let count = u16::try_from(count)
            .map_err(|_| format!("icmp count {count} is more than {}", u16::MAX))?;
        if spec.max_loss_percent > 100 {
            return Err(format!(
                "maxLossPercent {} is more than 100",
                spec.max_loss_percent
            ));
        }
        Ok(Self {
            host: spec.host.trim().to_owned(),
            count,
            max_loss_percent: spec.max_loss_percent,
            reply_deadline: None,
        })
    }

    /// Counts echoes unanswered after `deadline` as lost and finishes then.
    pub fn with_reply_deadline(mut self, deadline: Duration) -> Self {
        self.reply_deadline = Some(deadline);
        self
    }

    async fn run_inner(&self, attempt: &Attempt) -> Verdict {
        attempt.phase("DNS lookup");
        let resolved = match resolve(&self.host, 0, IpPreference::Any).await {
            Ok(a) => a,
            Err(e) => return Verdict::Failure(e),
        };
        // An IPv4-mapped IPv6 address is pinged over IPv4; otherwise keep the address as
        // resolved (an IPv6 link-local address needs its scope id).
        let target = resolved.ip().to_canonical();
        let dest = if target == resolved.ip() {
            resolved
        } else {
            SocketAddr::new(target, 0)
        };
        attempt.detail("resolved_ip", target.to_string());

        attempt.phase("opening an ICMP socket");
        let (socket, flavor) = match open_socket(target.is_ipv6()) {
            Ok(s) => s,
            Err(e) => return Verdict::Error(e),
        };
        attempt.detail(
            "socket",
            if flavor == Flavor::V4Raw || flavor == Flavor::V6Raw {
                "raw"
            } else {
                "datagram"
            },
        );
        let matcher = Matcher {
            flavor,
            target,
            ident: rand::random(),
            token: rand::random(),
        };

        attempt.phase("waiting for echo replies");
        let mut run = EchoRun::new(usize::from(self.count));
        let mut buf = vec![0u8; RECV_BUF];
        let mut next_send = Instant::now();
        let give_up = self.reply_deadline.map(|d| Instant::now() + d);
        loop {
            if run.done() {
                break;
            }
            let may_send = run.sent < run.echoes.len();
            tokio::select! {
                () = sleep_until_opt(give_up), if give_up.is_some() => {
                    let waited = self.reply_deadline.unwrap_or_default();
                    run.last_cause = Some(format!("no reply within {}ms", waited.as_millis()));
                    break;
                }
                () = tokio::time::sleep_until(next_send), if may_send => {
                    let seq = u16::try_from(run.sent).unwrap_or(u16::MAX);
                    let packet = matcher.echo_request(seq);
                    let sent_at = Instant::now();
                    match socket.send_to(&packet, dest).await {
                        Ok(_) => run.echoes[run.sent] = Echo::Pending(sent_at),
                        Err(e) => {
                            run.echoes[run.sent] = Echo::Lost;
                            run.last_cause = Some(format!("sending to {target} failed: {}", io_cause(&e)));
                        }
                    }
                    run.sent += 1;
                    next_send = sent_at + ECHO_SPACING;
                    attempt.value("icmp_sent", run.sent as f64);
                }
                got = socket.recv_from(&mut buf) => {
                    let (n, from) = match got {
                        Ok(x) => x,
                        Err(e) => return Verdict::Error(format!("receiving ICMP failed: {}", io_cause(&e))),
                    };
                    let now = Instant::now();
                    match matcher.parse(&buf[..n], from.ip().to_canonical()) {
                        Some(Reply::Echo { seq }) => {
                            if let Some(Echo::Pending(at)) = run.echoes.get(usize::from(seq)).copied() {
                                run.echoes[usize::from(seq)] = Echo::Answered(now - at);
                                attempt.value("icmp_received", run.received() as f64);
                                run.record_rtts(attempt);
                                if usize::from(seq) + 1 == run.sent {
                                    // The latest echo is answered: send the next one now.
                                    next_send = now;
                                }
                            }
                        }
                        Some(Reply::Error { seq, cause }) => {
                            if let Some(Echo::Pending(_)) = run.echoes.get(usize::from(seq)) {
                                run.echoes[usize::from(seq)] = Echo::Lost;
                                run.last_cause = Some(cause);
                                if usize::from(seq) + 1 == run.sent {
                                    next_send = now;
                                }
                            }
                        }
                        None => {}
                    }
                }
            }
        }
        self.verdict(&run, attempt)
    }

    fn verdict(&self, run: &EchoRun, attempt: &Attempt) -> Verdict {
        let count = run.echoes.len();
        let received = run.received();
        let lost = count - received;
        attempt.value("icmp_sent", run.sent as f64);
        attempt.value("icmp_received", received as f64);
        attempt.value("icmp_loss_ratio", lost as f64 / count as f64);
        run.record_rtts(attempt);
        // Integer comparison: lost/count > max/100.
        if lost as u64 * 100 > u64::from(self.max_loss_percent) * count as u64 {
            let percent = (lost as f64 * 100.0 / count as f64).round();
            let mut reason = format!(
                "lost {lost} of {count} echo replies ({percent}%), more than maxLossPercent {}",
                self.max_loss_percent
            );
            if let Some(cause) = &run.last_cause {
                reason.push_str("; last cause: ");
                reason.push_str(cause);
            }
            Verdict::Failure(reason)
        } else {
            Verdict::Success
        }
    }
}

impl Probe for IcmpProbe {
    fn run<'a>(&'a self, attempt: &'a Attempt) -> BoxFuture<'a, Verdict> {
        self.run_inner(attempt).boxed()
    }
}

#[derive(Clone, Copy, Debug)]
enum Echo {
    NotSent,
    Pending(Instant),
    Answered(Duration),
    Lost,
}

struct EchoRun {
    echoes: Vec<Echo>,
    sent: usize,
    last_cause: Option<String>,
}

impl EchoRun {
    fn new(count: usize) -> Self {
        Self {
            echoes: vec![Echo::NotSent; count],
            sent: 0,
            last_cause: None,
        }
    }

    fn done(&self) -> bool {
        self.sent == self.echoes.len() && !self.echoes.iter().any(|e| matches!(e, Echo::Pending(_)))
    }

    fn received(&self) -> usize {
        self.rtts().count()
    }

    fn rtts(&self) -> impl Iterator<Item = Duration> + '_ {
        self.echoes.iter().filter_map(|e| match e {
            Echo::Answered(d) => Some(*d),
            _ => None,
        })
    }

    fn record_rtts(&self, attempt: &Attempt) {
        let (Some(min), Some(max)) = (self.rtts().min(), self.rtts().max()) else {
            return;
        };
        let n = self.received();
        let sum: Duration = self.rtts().sum();
        attempt.value("icmp_rtt_min_seconds", min.as_secs_f64());
        attempt.value("icmp_rtt_max_seconds", max.as_secs_f64());
        attempt.value("icmp_rtt_avg_seconds", sum.as_secs_f64() / n as f64);
    }
}

/// Which socket we have, which decides what a received packet starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavor {
    /// Raw IPv4: packets start with the IPv4 header.
    V4Raw,
    /// IPv4 ping socket: packets start with the ICMP header; the kernel owns the identifier.
    V4Datagram,
    /// Raw ICMPv6: packets start with the ICMPv6 header (the kernel fills in the checksum).
    V6Raw,
    /// ICMPv6 ping socket: like `V6Raw`, and the kernel owns the identifier.
    V6Datagram,
}

impl Flavor {
    fn is_v6(self) -> bool {
        matches!(self, Flavor::V6Raw | Flavor::V6Datagram)
    }

    fn is_datagram(self) -> bool {
        matches!(self, Flavor::V4Datagram | Flavor::V6Datagram)
    }
}

/// Opens a datagram ICMP socket, else a raw one, registered with tokio.
fn open_socket(v6: bool) -> Result<(UdpSocket, Flavor), String> {
    let (domain, protocol, dgram, raw) = if v6 {
        (
            Domain::IPV6,
            Protocol::ICMPV6,
            Flavor::V6Datagram,
            Flavor::V6Raw,
        )
    } else {
        (
            Domain::IPV4,
            Protocol::ICMPV4,
            Flavor::V4Datagram,
            Flavor::V4Raw,
        )
    };
    let dgram_err = match Socket::new(domain, Type::DGRAM, Some(protocol)) {
        Ok(s) => return register(s).map(|s| (s, dgram)),
        Err(e) => e,
    };
    let raw_err = match Socket::new(domain, Type::RAW, Some(protocol)) {
        Ok(s) => return register(s).map(|s| (s, raw)),
        Err(e) => e,
    };
    // EACCES (ping_group_range) and EPERM (no CAP_NET_RAW) both map to PermissionDenied.
    let denied = |e: &std::io::Error| e.kind() == std::io::ErrorKind::PermissionDenied;
    let dgram_why = if denied(&dgram_err) {
        "unprivileged ICMP is disabled (net.ipv4.ping_group_range does not include our group)"
            .to_owned()
    } else {
        format!("datagram ICMP socket: {}", io_cause(&dgram_err))
    };
    let raw_why = if denied(&raw_err) {
        "raw sockets need CAP_NET_RAW".to_owned()
    } else {
        format!("raw ICMP socket: {}", io_cause(&raw_err))
    };
    Err(format!(
        "cannot open an ICMP{} socket: {dgram_why} and {raw_why}",
        if v6 { "v6" } else { "" }
    ))
}

fn register(socket: Socket) -> Result<UdpSocket, String> {
    socket
        .set_nonblocking(true)
        .and_then(|()| UdpSocket::from_std(std::net::UdpSocket::from(socket)))
        .map_err(|e| format!("cannot use the ICMP socket: {}", io_cause(&e)))
}

/// What a received packet meant for this run.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Reply {
    Echo {
        seq: u16,
    },
    /// An ICMP error about one of our echo requests.
    Error {
        seq: u16,
        cause: String,
    },
}

/// One run's identity on the wire: builds its requests and recognises their replies.
struct Matcher {
    flavor: Flavor,
    target: IpAddr,
    /// Our identifier (raw sockets only; a ping socket's kernel replaces it).
    ident: u16,
    token: [u8; TOKEN_LEN],
}

impl Matcher {
    fn echo_request(&self, seq: u16) -> Vec<u8> {
        let kind = if self.flavor.is_v6() {
            ICMP6_ECHO_REQUEST
        } else {
            ICMP4_ECHO_REQUEST
        };
        let mut p = Vec::with_capacity(8 + PAYLOAD_LEN);
        p.extend_from_slice(&[kind, 0, 0, 0]);
        p.extend_from_slice(&self.ident.to_be_bytes());
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&self.token);
        p.extend((0..PAYLOAD_LEN - TOKEN_LEN).map(|i| b'0' + (i % 10) as u8));
        if !self.flavor.is_v6() {
            // ICMPv6 checksums cover a pseudo-header; the kernel computes them for us.
            let sum = checksum(&p);
            p[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        p
    }

    /// Recognises a reply (or ICMP error) to one of this run's requests; `None` for anything
    /// else, malformed packets included.
    fn parse(&self, packet: &[u8], from: IpAddr) -> Option<Reply> {
        let icmp = if self.flavor == Flavor::V4Raw {
            skip_ipv4_header(packet, 1)?.1
        } else {
            packet
        };
        if icmp.len() < 8 || (!self.flavor.is_v6() && checksum(icmp) != 0) {
            return None;
        }
        let (kind, code) = (icmp[0], icmp[1]);
        let ident = u16::from_be_bytes([icmp[4], icmp[5]]);
        let seq = u16::from_be_bytes([icmp[6], icmp[7]]);
        let reply_kind = if self.flavor.is_v6() {
            ICMP6_ECHO_REPLY
        } else {
            ICMP4_ECHO_REPLY
        };
        if kind == reply_kind {
            let ours = code == 0
                && from == self.target
                && (self.flavor.is_datagram() || ident == self.ident)
                && icmp.get(8..8 + TOKEN_LEN) == Some(&self.token[..]);
            return ours.then_some(Reply::Echo { seq });
        }
        // Ping sockets do not deliver ICMP errors (without IP_RECVERR); raw ones do.
        if self.flavor.is_datagram() {
            return None;
        }
        let cause = if self.flavor.is_v6() {
            icmp6_error(kind, code)?
        } else {
            icmp4_error(kind, code)?
        };
        let quoted = &icmp[8..];
        let (inner_dst, inner) = if self.flavor.is_v6() {
            // The quoted IPv6 header, then (without extension headers) our ICMPv6 header.
            if quoted.len() < 40 || quoted[0] >> 4 != 6 || quoted[6] != 58 {
                return None;
            }
            let dst: [u8; 16] = quoted[24..40].try_into().ok()?;
            (IpAddr::from(dst), &quoted[40..])
        } else {
            let (dst, rest) = skip_ipv4_header(quoted, 1)?;
            (dst, rest)
        };
        let request_kind = if self.flavor.is_v6() {
            ICMP6_ECHO_REQUEST
        } else {
            ICMP4_ECHO_REQUEST
        };
        // Routers need only quote the first 8 bytes of our request: match on its header.
        if inner.len() < 8
            || inner[0] != request_kind
            || inner_dst != self.target
            || u16::from_be_bytes([inner[4], inner[5]]) != self.ident
        {
            return None;
        }
        let seq = u16::from_be_bytes([inner[6], inner[7]]);
        Some(Reply::Error {
            seq,
            cause: format!("{cause} from {from}"),
        })
    }
}

/// Splits an IPv4 packet into its destination and payload, checking the version, header length
/// and protocol.
fn skip_ipv4_header(packet: &[u8], protocol: u8) -> Option<(IpAddr, &[u8])> {
    let first = *packet.first()?;
    let header_len = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || header_len < 20 || packet.len() < header_len || packet[9] != protocol {
        return None;
    }
    let dst: [u8; 4] = packet[16..20].try_into().ok()?;
    Some((IpAddr::from(dst), &packet[header_len..]))
}

fn icmp4_error(kind: u8, code: u8) -> Option<&'static str> {
    Some(match (kind, code) {
        (ICMP4_DEST_UNREACHABLE, 0) => "destination network unreachable",
        (ICMP4_DEST_UNREACHABLE, 1) => "destination host unreachable",
        (ICMP4_DEST_UNREACHABLE, 2) => "destination protocol unreachable",
        (ICMP4_DEST_UNREACHABLE, 3) => "destination port unreachable",
        (ICMP4_DEST_UNREACHABLE, 4) => "fragmentation needed",
        (ICMP4_DEST_UNREACHABLE, 9 | 10 | 13) => "communication administratively prohibited",
        (ICMP4_DEST_UNREACHABLE, _) => "destination unreachable",
        (ICMP4_TIME_EXCEEDED, _) => "time to live exceeded",
        (ICMP4_PARAMETER_PROBLEM, _) => "parameter problem",
        _ => return None,
    })
}

fn icmp6_error(kind: u8, code: u8) -> Option<&'static str> {
    Some(match (kind, code) {
        (ICMP6_DEST_UNREACHABLE, 0) => "no route to destination",
        (ICMP6_DEST_UNREACHABLE, 1) => "communication administratively prohibited",
        (ICMP6_DEST_UNREACHABLE, 3) => "destination address unreachable",
        (ICMP6_DEST_UNREACHABLE, 4) => "destination port unreachable",
        (ICMP6_DEST_UNREACHABLE, _) => "destination unreachable",
        (ICMP6_PACKET_TOO_BIG, _) => "packet too big",
        (ICMP6_TIME_EXCEEDED, _) => "hop limit exceeded",
        (ICMP6_PARAMETER_PROBLEM, _) => "parameter problem",
        _ => return None,
    })
}

/// The Internet checksum (RFC 1071): ones' complement of the ones' complement sum of 16-bit
/// big-endian words, an odd last byte padded with zero. Over a packet that carries its
/// checksum, the result is 0.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
