//! DNS detail for a deep check: the addresses the node's resolver gives for the target's host
//! (every one is examined), and the A and AAAA answers of the DNS server itself with their
//! TTLs, the server asked and the time it took.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::net::UdpSocket;
use vigil_proto::{DeepCheckFinding, Outcome};

use super::Target;
use crate::probe::io_cause;

/// Where the node's resolver is configured.
const RESOLV_CONF: &str = "/etc/resolv.conf";
/// How long one lookup or query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(3);

/// What the DNS detail found.
pub struct DnsDetail {
    /// The addresses to examine, in the resolver's order, without repeats.
    pub addresses: Vec<IpAddr>,
    /// A line for the summary when the name does not resolve.
    pub problem: Option<String>,
    pub findings: Vec<DeepCheckFinding>,
}

/// Resolves the target's host both ways; for a DNS probe, asks its server about its name.
pub async fn examine(target: &Target, resolver: Option<SocketAddr>) -> DnsDetail {
    let mut detail = DnsDetail {
        addresses: Vec::new(),
        problem: None,
        findings: Vec::new(),
    };
    if let Some(name) = &target.dns_name {
        // A DNS check: its server is what is probed, its name what is asked.
        let server = if target.host.is_empty() {
            resolver.ok_or(()).or_else(|()| node_resolver())
        } else {
            match target.host.parse::<IpAddr>() {
                Ok(ip) => Ok(SocketAddr::new(ip, target.port)),
                Err(_) => system_lookup(&target.host, target.port)
                    .await
                    .and_then(|a| {
                        a.first()
                            .map(|ip| SocketAddr::new(*ip, target.port))
                            .ok_or_else(|| format!("{} has no address", target.host))
                    }),
            }
        };
        match server {
            Ok(server) => {
                detail.addresses.push(server.ip());
                detail.findings.push(ask(server, name).await);
            }
            Err(e) => detail.findings.push(super::note("dns", Outcome::Error, e)),
        }
        return detail;
    }
    if let Ok(ip) = target.host.parse::<IpAddr>() {
        detail.addresses.push(ip);
        detail.findings.push(super::note(
            "dns",
            Outcome::Success,
            format!("{ip} is an IP address; nothing to resolve"),
        ));
        return detail;
    }
    let t = Instant::now();
    let mut system = DeepCheckFinding {
        section: "dns system resolver".into(),
        ..Default::default()
    };
    system.details.insert(
        "source".into(),
        format!("the node's resolver (/etc/hosts, then the servers in {RESOLV_CONF})"),
    );
    match system_lookup(&target.host, target.port).await {
        Ok(addresses) => {
            let list: Vec<String> = addresses.iter().map(ToString::to_string).collect();
            system.outcome = Outcome::Success as i32;
            system.summary = format!("{} resolves to {}", target.host, list.join(", "));
            system.details.insert("addresses".into(), list.join(", "));
            detail.addresses = addresses;
        }
        Err(e) => {
            system.outcome = Outcome::Failure as i32;
            system.summary = e.clone();
            detail.problem = Some(e);
        }
    }
    system
        .values
        .insert("lookup_seconds".into(), t.elapsed().as_secs_f64());
    detail.findings.push(system);
    match resolver.ok_or(()).or_else(|()| node_resolver()) {
        Ok(server) => detail.findings.push(ask(server, &target.host).await),
        Err(e) => detail
            .findings
            .push(super::note("dns answers", Outcome::Error, e)),
    }
    detail
}

/// Every address of `host` from the system resolver, in its order, without repeats.
async fn system_lookup(host: &str, port: u16) -> Result<Vec<IpAddr>, String> {
    let found = tokio::time::timeout(QUERY_TIMEOUT, tokio::net::lookup_host((host, port)))
        .await
        .map_err(|_| format!("DNS lookup of {host} took longer than {QUERY_TIMEOUT:?}"))?
        .map_err(|e| format!("DNS lookup of {host} failed: {}", io_cause(&e)))?;
    let mut addresses: Vec<IpAddr> = Vec::new();
    for a in found {
        if !addresses.contains(&a.ip()) {
            addresses.push(a.ip());
        }
    }
    if addresses.is_empty() {
        return Err(format!("DNS lookup of {host} found no address"));
    }
    Ok(addresses)
}

/// Asks `server` for the A and AAAA records of `name`: one finding with every answer and TTL.
async fn ask(server: SocketAddr, name: &str) -> DeepCheckFinding {
    let mut finding = DeepCheckFinding {
        section: format!("dns answers from {server}"),
        ..Default::default()
    };
    finding.details.insert("server".into(), server.to_string());
    let parsed = Name::from_utf8(name).map(|mut n| {
        n.set_fqdn(true);
        n
    });
    let name = match parsed {
        Ok(n) => n,
        Err(e) => {
            finding.outcome = Outcome::Error as i32;
            finding.summary = format!("{name:?} is not a domain name: {e}");
            return finding;
        }
    };
    let mut lines = Vec::new();
    let mut failures = Vec::new();
    let mut min_ttl: Option<u32> = None;
    for (label, rtype) in [("a", RecordType::A), ("aaaa", RecordType::AAAA)] {
        match query(server, &name, rtype).await {
            Ok((m, took)) => {
                let rcode = format!("{:?}", m.metadata.response_code).to_uppercase();
                finding
                    .details
                    .insert(format!("{label}_rcode"), rcode.clone());
                finding
                    .values
                    .insert(format!("{label}_query_seconds"), took.as_secs_f64());
                if m.metadata.truncation {
                    finding
                        .details
                        .insert(format!("{label}_truncated"), "true".into());
                }
                for r in &m.answers {
                    min_ttl = Some(min_ttl.map_or(r.ttl, |t| t.min(r.ttl)));
                    lines.push(format!(
                        "{} {}s {} {}",
                        r.name,
                        r.ttl,
                        r.record_type(),
                        r.data
                    ));
                }
                if rcode != "NOERROR" {
                    failures.push(format!("{} {rtype}: {rcode}", name));
                }
            }
            Err(e) => failures.push(format!("{rtype}: {e}")),
        }
    }
    if let Some(ttl) = min_ttl {
        finding
            .values
            .insert("min_ttl_seconds".into(), f64::from(ttl));
    }
    finding.details.insert("answers".into(), lines.join("; "));
    finding.outcome = if failures.is_empty() {
        Outcome::Success
    } else {
        Outcome::Failure
    } as i32;
    finding.summary = match (lines.len(), failures.is_empty()) {
        (n, true) => format!("{n} answer{} for {name}", if n == 1 { "" } else { "s" }),
        (_, false) => failures.join("; "),
    };
    finding
}

/// One query over UDP, waiting for the answer with its id.
async fn query(
    server: SocketAddr,
    name: &Name,
    rtype: RecordType,
) -> Result<(Message, Duration), String> {
    let id: u16 = rand::random();
    let mut message = Message::new(id, MessageType::Query, OpCode::Query);
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name.clone(), rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    message.set_edns(edns);
    let bytes = message
        .to_vec()
        .map_err(|e| format!("cannot encode the query: {e}"))?;
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let failed = |e: std::io::Error| format!("query to {server} failed: {}", io_cause(&e));
    let socket = UdpSocket::bind(local).await.map_err(failed)?;
    socket.connect(server).await.map_err(failed)?;
    let t = Instant::now();
    socket.send(&bytes).await.map_err(failed)?;
    let mut buf = vec![0u8; 65_535];
    let answer = async {
        loop {
            let n = socket.recv(&mut buf).await.map_err(failed)?;
            if let Ok(m) = Message::from_vec(&buf[..n])
                && m.metadata.id == id
            {
                return Ok::<_, String>(m);
            }
        }
    };
    let m = tokio::time::timeout(QUERY_TIMEOUT, answer)
        .await
        .map_err(|_| format!("no answer from {server} within {QUERY_TIMEOUT:?}"))??;
    Ok((m, t.elapsed()))
}

/// The first usable `nameserver` of /etc/resolv.conf, port 53.
fn node_resolver() -> Result<SocketAddr, String> {
    let text = std::fs::read_to_string(RESOLV_CONF)
        .map_err(|e| format!("cannot read {RESOLV_CONF}: {}", io_cause(&e)))?;
    text.lines()
        .find_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next()?.parse::<IpAddr>().ok())
                .flatten()
        })
        .map(|ip| SocketAddr::new(ip, 53))
        .ok_or_else(|| format!("{RESOLV_CONF} names no usable nameserver"))
}
