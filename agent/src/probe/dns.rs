//! DNS probe: one query per attempt over UDP (recursion desired, EDNS0 with a 1232-byte
//! payload), repeated over TCP when the answer comes back truncated; then the rcode, the number
//! of answers of the asked type and their text form are checked (like blackbox_exporter's dns
//! prober).
//!
//! Only an answer whose id and question match the query is accepted; other well-formed DNS
//! datagrams (late answers to an earlier query, spoofing attempts) are ignored and counted.
//! A datagram from the server that is not a DNS message at all fails the attempt. Memory is
//! bounded: one 64 KiB UDP buffer, and a TCP answer is at most 65,535 bytes (its 2-byte length
//! prefix); a message whose header claims more records than its bytes can hold is refused
//! before anything is decoded.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use regex::Regex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

use super::{Attempt, IpPreference, Probe, Verdict, io_cause, resolve};

/// Where the node's resolver is configured when `server` is empty.
const RESOLV_CONF: &str = "/etc/resolv.conf";
/// UDP payload size advertised with EDNS0 (the DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;
/// The largest DNS message over either transport (a UDP datagram, or the 2-byte TCP prefix).
const MAX_MESSAGE_BYTES: usize = 65_535;
/// At most this many answers are listed in the `answers` detail...
const DETAIL_ANSWERS: usize = 5;
/// ...and the listing is cut at this many characters.
const DETAIL_CHARS: usize = 256;
/// The record types a check may ask for.
const RECORD_TYPES: &[(&str, RecordType)] = &[
    ("A", RecordType::A),
    ("AAAA", RecordType::AAAA),
    ("CNAME", RecordType::CNAME),
    ("MX", RecordType::MX),
    ("TXT", RecordType::TXT),
    ("SRV", RecordType::SRV),
    ("NS", RecordType::NS),
];
/// Rcode names by value (RFC 1035, 2136, 6891, 8945, 2930, 4635, 7873).
const RCODE_NAMES: &[(u16, &str)] = &[
    (0, "NOERROR"),
    (1, "FORMERR"),
    (2, "SERVFAIL"),
    (3, "NXDOMAIN"),
    (4, "NOTIMP"),
    (5, "REFUSED"),
    (6, "YXDOMAIN"),
    (7, "YXRRSET"),
    (8, "NXRRSET"),
    (9, "NOTAUTH"),
    (10, "NOTZONE"),
    (16, "BADVERS"),
    (17, "BADKEY"),
    (18, "BADTIME"),
    (19, "BADMODE"),
    (20, "BADNAME"),
    (21, "BADALG"),
    (22, "BADTRUNC"),
    (23, "BADCOOKIE"),
];

/// Looks `given` up by name (any case) in `table`, or says `{what} {given:?} {problem}; use one
/// of ...` with every name.
fn by_name<T: Copy>(
    what: &str,
    given: &str,
    problem: &str,
    table: impl Iterator<Item = (&'static str, T)> + Clone,
) -> Result<T, String> {
    let wanted = given.to_ascii_uppercase();
    table
        .clone()
        .find(|(n, _)| *n == wanted)
        .map(|(_, v)| v)
        .ok_or_else(|| {
            let names: Vec<&str> = table.map(|(n, _)| n).collect();
            format!(
                "{what} {given:?} {problem}; use one of {}",
                names.join(", ")
            )
        })
}

enum Server {
    Addr(SocketAddr),
    Host(String, u16),
}

pub struct DnsProbe {
    server: Server,
    name: Name,
    record_type: RecordType,
    /// The encoded query; each attempt patches in a fresh random id.
    query: Vec<u8>,
    expect_rcode: &'static str,
    min_answers: u32,
    answers_match: Option<Regex>,
}

impl DnsProbe {
    pub fn new(spec: &vigil_proto::DnsProbe) -> Result<Self, String> {
        let server = if spec.server.trim().is_empty() {
            Server::Addr(node_resolver()?)
        } else {
            parse_server(spec.server.trim())?
        };
        if spec.name.trim().is_empty() {
            return Err("name must not be empty".into());
        }
        let mut name = Name::from_utf8(spec.name.trim())
            .map_err(|e| format!("name {:?} is not a domain name: {e}", spec.name))?;
        name.set_fqdn(true);
        let record_type = if spec.record_type.is_empty() {
            RecordType::A
        } else {
            by_name(
                "record type",
                &spec.record_type,
                "is not supported",
                RECORD_TYPES.iter().copied(),
            )?
        };
        let expect_rcode = if spec.expect_rcode.is_empty() {
            "NOERROR"
        } else {
            by_name(
                "expectRcode",
                &spec.expect_rcode,
                "is not an rcode",
                RCODE_NAMES.iter().map(|&(_, n)| (n, n)),
            )?
        };
        let answers_match = if spec.answers_match.is_empty() {
            None
        } else {
            Some(
                Regex::new(&spec.answers_match)
                    .map_err(|e| format!("answersMatch is not a valid regular expression: {e}"))?,
            )
        };
        let mut message = Message::new(0, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(name.clone(), record_type));
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        message.set_edns(edns);
        let query = message
            .to_vec()
            .map_err(|e| format!("cannot encode a query for {:?}: {e}", spec.name))?;
        Ok(Self {
            server,
            name,
            record_type,
            query,
            expect_rcode,
            min_answers: spec.min_answers,
            answers_match,
        })
    }

    async fn run_inner(&self, attempt: &Attempt) -> Verdict {
        let addr = match &self.server {
            Server::Addr(a) => *a,
            Server::Host(host, port) => {
                attempt.phase("DNS lookup");
                match resolve(host, *port, IpPreference::Any).await {
                    Ok(a) => a,
                    Err(e) => return Verdict::Failure(e),
                }
            }
        };
        attempt.detail("server", addr.to_string());
        let id = rand::random::<u16>();
        let mut query = self.query.clone();
        query[..2].copy_from_slice(&id.to_be_bytes());
        let started = Instant::now();
        let answer = match self.over_udp(addr, &query, id, attempt).await {
            Ok(m) if m.metadata.truncation => {
                attempt.detail("transport", "tcp");
                match self.over_tcp(addr, &query, id, attempt).await {
                    Ok(m) => m,
                    Err(v) => return v,
                }
            }
            Ok(m) => {
                attempt.detail("transport", "udp");
                m
            }
            Err(v) => return v,
        };
        attempt.value("phase_query_seconds", started.elapsed().as_secs_f64());
        self.judge(&answer, attempt)
    }

    async fn over_udp(
        &self,
        addr: SocketAddr,
        query: &[u8],
        id: u16,
        attempt: &Attempt,
    ) -> Result<Message, Verdict> {
        attempt.phase("sending the query");
        let local: SocketAddr = if addr.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local)
            .await
            .map_err(|e| Verdict::Error(format!("cannot open a UDP socket: {}", io_cause(&e))))?;
        // A connected socket only receives datagrams from the server, and reports an ICMP
        // port unreachable as "connection refused".
        let failed = |e: std::io::Error| {
            Verdict::Failure(format!("query to {addr} failed: {}", io_cause(&e)))
        };
        socket.connect(addr).await.map_err(failed)?;
        socket.send(query).await.map_err(failed)?;
        attempt.phase("waiting for the answer");
        let mut buf = vec![0u8; MAX_MESSAGE_BYTES];
        let mut ignored = 0u32;
        loop {
            let n = socket.recv(&mut buf).await.map_err(failed)?;
            let message = decode(&buf[..n]).map_err(|e| {
                Verdict::Failure(format!("answer from {addr} is not a DNS message: {e}"))
            })?;
            if self.answers_query(&message, id) {
                return Ok(message);
            }
            ignored += 1;
            attempt.detail("ignored_datagrams", ignored.to_string());
        }
    }

    async fn over_tcp(
        &self,
        addr: SocketAddr,
        query: &[u8],
        id: u16,
        attempt: &Attempt,
    ) -> Result<Message, Verdict> {
        attempt.phase("connecting over TCP");
        let mut stream = TcpStream::connect(addr).await.map_err(|e| {
            Verdict::Failure(format!(
                "the answer was truncated and TCP connect to {addr} failed: {}",
                io_cause(&e)
            ))
        })?;
        attempt.phase("sending the query over TCP");
        let mut framed = Vec::with_capacity(query.len() + 2);
        framed.extend_from_slice(&u16::try_from(query.len()).unwrap_or(u16::MAX).to_be_bytes());
        framed.extend_from_slice(query);
        stream.write_all(&framed).await.map_err(|e| {
            Verdict::Failure(format!(
                "sending the query over TCP to {addr} failed: {}",
                io_cause(&e)
            ))
        })?;
        attempt.phase("waiting for the answer over TCP");
        let read_failed = |e: std::io::Error| {
            Verdict::Failure(format!(
                "reading the answer over TCP from {addr} failed: {}",
                io_cause(&e)
            ))
        };
        let mut prefix = [0u8; 2];
        stream.read_exact(&mut prefix).await.map_err(read_failed)?;
        // The prefix is two bytes, so the buffer never exceeds MAX_MESSAGE_BYTES.
        let len = usize::from(u16::from_be_bytes(prefix));
        debug_assert!(len <= MAX_MESSAGE_BYTES);
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await.map_err(read_failed)?;
        let message = decode(&body).map_err(|e| {
            Verdict::Failure(format!("answer from {addr} is not a DNS message: {e}"))
        })?;
        if !self.answers_query(&message, id) {
            return Err(Verdict::Failure(format!(
                "answer from {addr} over TCP does not answer the query (id {}, expected {id})",
                message.metadata.id
            )));
        }
        Ok(message)
    }

    /// Whether `m` is the response to this attempt's query: same id, a response to a standard
    /// query, and the same question (an error response may leave the question out).
    fn answers_query(&self, m: &Message, id: u16) -> bool {
        m.metadata.id == id
            && m.metadata.message_type == MessageType::Response
            && m.metadata.op_code == OpCode::Query
            && match m.queries.as_slice() {
                [q] => {
                    q.name() == &self.name
                        && q.query_type() == self.record_type
                        && q.query_class() == DNSClass::IN
                }
                [] => m.metadata.response_code != ResponseCode::NoError,
                _ => false,
            }
    }

    fn judge(&self, m: &Message, attempt: &Attempt) -> Verdict {
        let rcode = rcode_name(u16::from(m.metadata.response_code));
        attempt.detail("rcode", rcode.clone());
        // Section counts as on the wire (and as dig shows them): the OPT pseudo-record and a
        // TSIG signature are additional records.
        attempt.value("dns_answer_rrs", m.answers.len() as f64);
        attempt.value("dns_authority_rrs", m.authorities.len() as f64);
        attempt.value(
            "dns_additional_rrs",
            (m.additionals.len()
                + usize::from(m.edns.is_some())
                + usize::from(m.signature.is_some())) as f64,
        );
        let answers: Vec<String> = m
            .answers
            .iter()
            .filter(|r| r.record_type() == self.record_type)
            .map(|r| render(&r.data))
            .collect();
        if !answers.is_empty() {
            attempt.detail("answers", summary(&answers));
        }
        if rcode != self.expect_rcode {
            return Verdict::Failure(format!("rcode {rcode}, expected {}", self.expect_rcode));
        }
        if (answers.len() as u64) < u64::from(self.min_answers) {
            return Verdict::Failure(format!(
                "{} answer{}, expected at least {}",
                answers.len(),
                if answers.len() == 1 { "" } else { "s" },
                self.min_answers
            ));
        }
        if let Some(re) = &self.answers_match
            && let Some(bad) = answers.iter().find(|a| !re.is_match(a))
        {
            return Verdict::Failure(format!("answer {bad:?} did not match {:?}", re.as_str()));
        }
        Verdict::Success
    }
}

impl Probe for DnsProbe {
    fn run<'a>(&'a self, attempt: &'a Attempt) -> BoxFuture<'a, Verdict> {
        self.run_inner(attempt).boxed()
    }
}

/// `host:port`, `[v6]:port`, or a bare IP address (port 53).
fn parse_server(server: &str) -> Result<Server, String> {
    if let Ok(ip) = server
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        return Ok(Server::Addr(SocketAddr::new(ip, 53)));
    }
    let (host, port) = server
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .filter(|(h, p)| !h.is_empty() && *p != 0)
        .ok_or_else(|| format!("server {server:?} is not host:port"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    Ok(match bare.parse::<IpAddr>() {
        Ok(ip) => Server::Addr(SocketAddr::new(ip, port)),
        Err(_) => Server::Host(bare.to_owned(), port),
    })
}

/// The node's resolver: the first usable `nameserver` in /etc/resolv.conf, port 53.
fn node_resolver() -> Result<SocketAddr, String> {
    let text = std::fs::read_to_string(RESOLV_CONF).map_err(|e| {
        format!(
            "server is empty and the node's resolver cannot be read from {RESOLV_CONF}: {}",
            io_cause(&e)
        )
    })?;
    first_nameserver(&text).ok_or_else(|| {
        format!("server is empty and {RESOLV_CONF} names no usable nameserver; set server")
    })
}

fn first_nameserver(resolv_conf: &str) -> Option<SocketAddr> {
    resolv_conf.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            return None;
        }
        // A link-local address with a zone (fe80::1%eth0) does not parse and is skipped.
        let ip = words.next()?.parse::<IpAddr>().ok()?;
        Some(SocketAddr::new(ip, 53))
    })
}

/// Decodes a message after checking that its header does not promise more than its bytes can
/// hold (a question takes at least 5 bytes, a record at least 11), so decoding never allocates
/// for records that are not there.
fn decode(bytes: &[u8]) -> Result<Message, String> {
    if bytes.len() < 12 {
        return Err(format!(
            "{} bytes, shorter than a DNS header (12 bytes)",
            bytes.len()
        ));
    }
    let count = |i: usize| usize::from(u16::from_be_bytes([bytes[i], bytes[i + 1]]));
    let (questions, records) = (count(4), count(6) + count(8) + count(10));
    let room = bytes.len() - 12;
    if questions * 5 + records * 11 > room {
        return Err(format!(
            "its header claims {} entries but only {room} bytes follow",
            questions + records
        ));
    }
    Message::from_vec(bytes).map_err(|e| e.to_string())
}

/// The text form of an answer: `10.0.0.1`, `10 mail.example.`, TXT strings joined.
fn render(data: &RData) -> String {
    match data {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(a) => a.0.to_string(),
        RData::CNAME(n) => n.0.to_string(),
        RData::NS(n) => n.0.to_string(),
        RData::MX(mx) => format!("{} {}", mx.preference, mx.exchange),
        RData::SRV(srv) => format!(
            "{} {} {} {}",
            srv.priority, srv.weight, srv.port, srv.target
        ),
        RData::TXT(txt) => txt
            .txt_data
            .iter()
            .map(|s| String::from_utf8_lossy(s))
            .collect(),
        other => {
            let mut text = String::new();
            if write!(text, "{other}").is_err() {
                text = format!("<{} record>", other.record_type());
            }
            text
        }
    }
}

/// The first few answers, comma-separated, cut to a bounded length.
fn summary(answers: &[String]) -> String {
    let mut text = answers
        .iter()
        .take(DETAIL_ANSWERS)
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    if let Some((cut, _)) = text.char_indices().nth(DETAIL_CHARS) {
        text.truncate(cut);
        text.push('…');
    }
    if answers.len() > DETAIL_ANSWERS {
        let _ = write!(text, " (+{} more)", answers.len() - DETAIL_ANSWERS);
    }
    text
}

fn rcode_name(code: u16) -> String {
    RCODE_NAMES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or_else(|| format!("RCODE{code}"), |(_, n)| (*n).to_owned())
}

#[cfg(test)]
mod tests;
