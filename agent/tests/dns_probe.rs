//! DNS probe against tiny DNS servers on 127.0.0.1 (UDP and TCP on one port), hostile ones
//! included: every case ends with the right outcome and a reason that names the cause, within
//! the timeout. No outside resolver is ever asked.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use vigil_agent::probe::Probe as _;
use vigil_agent::probe::dns::DnsProbe;
use vigil_agent::scheduler::{Identity, run_check};
use vigil_proto::{CheckSpec, Outcome, ProbeResult, check_spec::Probe};

/// How a test server behaves.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Answers from the zone below, over UDP and TCP.
    Zone,
    /// Like `Zone`, but first sends a late answer (wrong id) and an answer to another question.
    StrayFirst,
    /// Replies to every UDP query with these bytes.
    Garbage(&'static [u8]),
    /// Receives and never replies.
    Silent,
    /// Every UDP answer is truncated, and nothing listens on TCP.
    TruncatedNoTcp,
}

fn name(n: &str) -> Name {
    Name::from_ascii(n).unwrap()
}

fn a(owner: &Name, ip: Ipv4Addr) -> Record {
    Record::from_rdata(owner.clone(), 60, RData::A(A::from(ip)))
}

/// The test zone: the answer to a decoded query, and whether UDP must truncate it.
fn answer(query: &Message, over_tcp: bool) -> Message {
    let mut m = Message::response(query.metadata.id, OpCode::Query);
    m.metadata.recursion_desired = query.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.add_queries(query.queries.iter().cloned());
    if query.edns.is_some() {
        m.set_edns(Edns::new());
    }
    let Some(q) = query.queries.first() else {
        m.metadata.response_code = ResponseCode::FormErr;
        return m;
    };
    let owner = q.name().clone();
    let lower = owner.to_string().to_ascii_lowercase();
    match (lower.as_str(), q.query_type()) {
        ("two.test.", RecordType::A) => {
            m.add_answer(a(&owner, Ipv4Addr::new(10, 0, 0, 1)));
            m.add_answer(a(&owner, Ipv4Addr::new(10, 0, 0, 2)));
        }
        ("alias.test.", RecordType::A) => {
            let target = name("two.test.");
            m.add_answer(Record::from_rdata(
                owner,
                60,
                RData::CNAME(CNAME(target.clone())),
            ));
            m.add_answer(a(&target, Ipv4Addr::new(10, 0, 0, 1)));
        }
        ("v6.test.", RecordType::AAAA) => {
            m.add_answer(Record::from_rdata(
                owner,
                60,
                RData::AAAA(AAAA::from("2001:db8::1".parse::<Ipv6Addr>().unwrap())),
            ));
        }
        ("mail.test.", RecordType::MX) => {
            for (pref, host) in [(10, "mx1.test."), (20, "mx2.test.")] {
                m.add_answer(Record::from_rdata(
                    owner.clone(),
                    60,
                    RData::MX(MX::new(pref, name(host))),
                ));
            }
        }
        ("txt.test.", RecordType::TXT) => {
            m.add_answer(Record::from_rdata(
                owner,
                60,
                RData::TXT(TXT::new(vec!["v=spf1 ".into(), "-all".into()])),
            ));
        }
        // Too big for UDP: truncated there; over TCP the records are appended by `tcp_body`.
        ("big.test.", RecordType::A) | ("huge.test.", RecordType::A) => {
            m.edns = None;
            m.metadata.truncation = !over_tcp;
        }
        _ => {
            m.metadata.response_code = ResponseCode::NXDomain;
            m.add_authority(Record::from_rdata(
                name("test."),
                60,
                RData::SOA(SOA::new(
                    name("ns.test."),
                    name("admin.test."),
                    1,
                    3600,
                    600,
                    86400,
                    60,
                )),
            ));
        }
    }
    m
}

/// The TCP answer: the zone's, except for big.test (3,000 A records, about 48 KB) and
/// huge.test (10,000 A records, 160 KB: more than any DNS message can hold). Their records are
/// appended by hand (hickory would stop at 64 KiB), each naming the question by a pointer.
fn tcp_body(query: &Message) -> Vec<u8> {
    let mut body = answer(query, true).to_vec().unwrap();
    let count: u16 = match query.queries.first().map(|q| q.name().to_string()) {
        Some(n) if n.eq_ignore_ascii_case("big.test.") => 3_000,
        Some(n) if n.eq_ignore_ascii_case("huge.test.") => 10_000,
        _ => return body,
    };
    body[6..8].copy_from_slice(&count.to_be_bytes());
    for i in 0..u32::from(count) {
        body.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        body.extend_from_slice(&Ipv4Addr::from(0x0a00_0000 + i).octets());
    }
    body
}

/// Starts a server on 127.0.0.1 (UDP, and TCP on the same port unless the mode has no TCP).
async fn dns_server(mode: Mode) -> SocketAddr {
    let (udp, tcp) = loop {
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = udp.local_addr().unwrap();
        if mode == Mode::TruncatedNoTcp {
            break (udp, None);
        }
        // The same port may be taken for TCP; then try another.
        if let Ok(tcp) = TcpListener::bind(addr).await {
            break (udp, Some(tcp));
        }
    };
    let addr = udp.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
            let query = Message::from_vec(&buf[..n]).unwrap();
            let reply = match mode {
                Mode::Silent => continue,
                Mode::Garbage(bytes) => {
                    udp.send_to(bytes, peer).await.unwrap();
                    continue;
                }
                Mode::TruncatedNoTcp => {
                    let mut m = answer(&query, false);
                    m.metadata.truncation = true;
                    m.answers.clear();
                    m
                }
                Mode::Zone => answer(&query, false),
                Mode::StrayFirst => {
                    let right = answer(&query, false);
                    let mut late = right.clone();
                    late.metadata.id = right.metadata.id.wrapping_add(1);
                    udp.send_to(&late.to_vec().unwrap(), peer).await.unwrap();
                    let mut other = right.clone();
                    other.queries[0].set_name(name("other.test."));
                    udp.send_to(&other.to_vec().unwrap(), peer).await.unwrap();
                    right
                }
            };
            udp.send_to(&reply.to_vec().unwrap(), peer).await.unwrap();
        }
    });
    if let Some(tcp) = tcp {
        tokio::spawn(async move {
            while let Ok((mut s, _)) = tcp.accept().await {
                tokio::spawn(async move {
                    let mut len = [0u8; 2];
                    s.read_exact(&mut len).await.unwrap();
                    let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    s.read_exact(&mut q).await.unwrap();
                    let body = tcp_body(&Message::from_vec(&q).unwrap());
                    // A body too big for the 2-byte prefix gets the largest prefix there is,
                    // then all of it: the client must stop at the prefix.
                    let prefix = u16::try_from(body.len()).unwrap_or(u16::MAX);
                    let _ = s.write_all(&prefix.to_be_bytes()).await;
                    let _ = s.write_all(&body).await;
                });
            }
        });
    }
    addr
}

fn identity() -> Identity {
    Identity {
        agent_id: "a".into(),
        node: "n".into(),
        cluster: "c".into(),
    }
}

fn dns_spec(server: SocketAddr, name: &str, record_type: &str) -> vigil_proto::DnsProbe {
    vigil_proto::DnsProbe {
        name: name.into(),
        server: server.to_string(),
        record_type: record_type.into(),
        ..Default::default()
    }
}

async fn run_with(p: vigil_proto::DnsProbe, timeout_ms: u64) -> ProbeResult {
    let spec = CheckSpec {
        id: "ns/dns".into(),
        target: p.name.clone(),
        interval_ms: 10_000,
        timeout_ms,
        probe: Some(Probe::Dns(p)),
        ..Default::default()
    };
    let built: Result<Arc<dyn vigil_agent::probe::Probe>, String> =
        vigil_agent::probe::build(&spec);
    run_check(&spec, &built, &identity()).await
}

async fn run(p: vigil_proto::DnsProbe) -> ProbeResult {
    run_with(p, 2000).await
}

fn outcome(r: &ProbeResult) -> (Outcome, &str) {
    (r.outcome(), r.reason.as_str())
}

#[tokio::test]
async fn a_records_succeed_with_details_and_counts() {
    let server = dns_server(Mode::Zone).await;
    let r = run(vigil_proto::DnsProbe {
        min_answers: 2,
        answers_match: r"^10\.0\.0\.[12]$".into(),
        ..dns_spec(server, "two.test", "A")
    })
    .await;
    assert_eq!(outcome(&r), (Outcome::Success, ""));
    assert_eq!(r.details["rcode"], "NOERROR");
    assert_eq!(r.details["answers"], "10.0.0.1, 10.0.0.2");
    assert_eq!(r.details["transport"], "udp");
    assert_eq!(r.details["server"], server.to_string());
    assert_eq!(r.values["dns_answer_rrs"], 2.0);
    assert_eq!(r.values["dns_authority_rrs"], 0.0);
    // The OPT pseudo-record counts, as on the wire.
    assert_eq!(r.values["dns_additional_rrs"], 1.0);
    assert!(r.values.contains_key("phase_query_seconds"));
}

#[tokio::test]
async fn answer_checks_name_the_cause() {
    let server = dns_server(Mode::Zone).await;
    let r = run(vigil_proto::DnsProbe {
        min_answers: 3,
        ..dns_spec(server, "two.test", "A")
    })
    .await;
    assert_eq!(
        outcome(&r),
        (Outcome::Failure, "2 answers, expected at least 3")
    );

    let r = run(vigil_proto::DnsProbe {
        answers_match: r"^10\.0\.0\.1$".into(),
        ..dns_spec(server, "two.test", "A")
    })
    .await;
    assert_eq!(
        outcome(&r),
        (
            Outcome::Failure,
            r#"answer "10.0.0.2" did not match "^10\\.0\\.0\\.1$""#
        )
    );

    // Only answers of the asked type count and are matched: the CNAME is not an A answer.
    let r = run(vigil_proto::DnsProbe {
        min_answers: 2,
        answers_match: r"^10\.".into(),
        ..dns_spec(server, "alias.test", "A")
    })
    .await;
    assert_eq!(
        outcome(&r),
        (Outcome::Failure, "1 answer, expected at least 2")
    );
    assert_eq!(r.values["dns_answer_rrs"], 2.0);
    assert_eq!(r.details["answers"], "10.0.0.1");
}

#[tokio::test]
async fn aaaa_mx_and_txt_answers_render_as_text() {
    let server = dns_server(Mode::Zone).await;
    let r = run(vigil_proto::DnsProbe {
        answers_match: r"^2001:db8::1$".into(),
        ..dns_spec(server, "v6.test", "AAAA")
    })
    .await;
    assert_eq!(outcome(&r), (Outcome::Success, ""));
    assert_eq!(r.details["answers"], "2001:db8::1");

    let r = run(vigil_proto::DnsProbe {
        answers_match: r"^\d+ mx\d\.test\.$".into(),
        min_answers: 2,
        ..dns_spec(server, "mail.test", "mx")
    })
    .await;
    assert_eq!(outcome(&r), (Outcome::Success, ""));
    assert_eq!(r.details["answers"], "10 mx1.test., 20 mx2.test.");

    let r = run(vigil_proto::DnsProbe {
        answers_match: "^v=spf1 -all$".into(),
        ..dns_spec(server, "txt.test.", "TXT")
    })
    .await;
    assert_eq!(outcome(&r), (Outcome::Success, ""));
    assert_eq!(r.details["answers"], "v=spf1 -all");
}

#[tokio::test]
async fn nxdomain_fails_unless_expected() {
    let server = dns_server(Mode::Zone).await;
    let r = run(dns_spec(server, "missing.test", "A")).await;
    assert_eq!(
        outcome(&r),
        (Outcome::Failure, "rcode NXDOMAIN, expected NOERROR")
    );
    assert_eq!(r.details["rcode"], "NXDOMAIN");
    assert_eq!(r.values["dns_authority_rrs"], 1.0);

    let r = run(vigil_proto::DnsProbe {
        expect_rcode: "nxdomain".into(),
        ..dns_spec(server, "missing.test", "A")
    })
    .await;
    assert_eq!(outcome(&r), (Outcome::Success, ""));

    let r = run(vigil_proto::DnsProbe {
        expect_rcode: "NXDOMAIN".into(),
        ..dns_spec(server, "two.test", "A")
    })
    .await;
    assert_eq!(
        outcome(&r),
        (Outcome::Failure, "rcode NOERROR, expected NXDOMAIN")
    );
}

#[tokio::test]
async fn truncated_answer_is_retried_over_tcp() {
    let server = dns_server(Mode::Zone).await;
    let r = run(vigil_proto::DnsProbe {
        min_answers: 3_000,
        answers_match: r"^10\.0\.\d+\.\d+$".into(),
        ..dns_spec(server, "big.test", "A")
    })
    .await;
    assert_eq!(outcome(&r), (Outcome::Success, ""));
    assert_eq!(r.details["transport"], "tcp");
    assert_eq!(r.values["dns_answer_rrs"], 3_000.0);
    assert_eq!(
        r.details["answers"],
        "10.0.0.0, 10.0.0.1, 10.0.0.2, 10.0.0.3, 10.0.0.4 (+2995 more)"
    );
}

#[tokio::test]
async fn answer_too_big_for_tcp_fails_cleanly() {
    // 10,000 records (160 KB) cannot fit one DNS message: the server sends the largest prefix
    // (65,535) and then everything; the probe reads only what the prefix allows and refuses a
    // header that promises more records than those bytes can hold.
    let server = dns_server(Mode::Zone).await;
    let started = Instant::now();
    let r = run(dns_spec(server, "huge.test", "A")).await;
    assert_eq!(
        outcome(&r),
        (
            Outcome::Failure,
            format!(
                "answer from {server} is not a DNS message: its header claims 10001 entries but only 65523 bytes follow"
            )
            .as_str()
        )
    );
    assert_eq!(r.details["transport"], "tcp");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn truncated_answer_without_tcp_names_the_connect_failure() {
    let server = dns_server(Mode::TruncatedNoTcp).await;
    let r = run(dns_spec(server, "two.test", "A")).await;
    assert_eq!(
        outcome(&r),
        (
            Outcome::Failure,
            format!(
                "the answer was truncated and TCP connect to {server} failed: connection refused"
            )
            .as_str()
        )
    );
}

#[tokio::test]
async fn garbage_replies_are_not_dns_messages() {
    let server = dns_server(Mode::Garbage(b"junk!")).await;
    let r = run(dns_spec(server, "two.test", "A")).await;
    assert_eq!(
        outcome(&r),
        (
            Outcome::Failure,
            format!(
                "answer from {server} is not a DNS message: 5 bytes, shorter than a DNS header (12 bytes)"
            )
            .as_str()
        )
    );

    let server = dns_server(Mode::Garbage(b"hello, this is not DNS\n")).await;
    let r = run(dns_spec(server, "two.test", "A")).await;
    assert_eq!(r.outcome(), Outcome::Failure);
    assert!(
        r.reason
            .starts_with(&format!("answer from {server} is not a DNS message: ")),
        "{}",
        r.reason
    );

    // A header that fits its bytes but records that do not decode: hickory's error.
    let mut broken = vec![0u8; 12];
    broken[7] = 1; // one answer...
    broken.extend_from_slice(&[0xff; 11]); // ...that is not a record
    let broken: &'static [u8] = broken.leak();
    let server = dns_server(Mode::Garbage(broken)).await;
    let r = run(dns_spec(server, "two.test", "A")).await;
    assert_eq!(r.outcome(), Outcome::Failure);
    assert!(
        r.reason
            .starts_with(&format!("answer from {server} is not a DNS message: ")),
        "{}",
        r.reason
    );
}

#[tokio::test]
async fn silent_server_times_out_in_the_waiting_phase() {
    let server = dns_server(Mode::Silent).await;
    let started = Instant::now();
    let r = run_with(dns_spec(server, "two.test", "A"), 300).await;
    assert_eq!(
        outcome(&r),
        (
            Outcome::Timeout,
            "timed out after 300ms in waiting for the answer"
        )
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn stray_answers_are_ignored() {
    let server = dns_server(Mode::StrayFirst).await;
    let r = run(vigil_proto::DnsProbe {
        min_answers: 2,
        ..dns_spec(server, "two.test", "A")
    })
    .await;
    assert_eq!(outcome(&r), (Outcome::Success, ""));
    assert_eq!(r.details["ignored_datagrams"], "2");
}

#[tokio::test]
async fn closed_port_is_refused() {
    let closed = {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.local_addr().unwrap()
    };
    let r = run(dns_spec(closed, "two.test", "A")).await;
    assert_eq!(
        outcome(&r),
        (
            Outcome::Failure,
            format!("query to {closed} failed: connection refused").as_str()
        )
    );
}

#[tokio::test]
async fn bad_configuration_is_an_error_before_any_query() {
    let server: SocketAddr = "127.0.0.1:53".parse().unwrap();
    let cases = [
        (
            dns_spec(server, "two.test", "PTR"),
            r#"record type "PTR" is not supported; use one of A, AAAA, CNAME, MX, TXT, SRV, NS"#,
        ),
        (
            vigil_proto::DnsProbe {
                expect_rcode: "OOPS".into(),
                ..dns_spec(server, "two.test", "A")
            },
            r#"expectRcode "OOPS" is not an rcode; use one of NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED, YXDOMAIN, YXRRSET, NXRRSET, NOTAUTH, NOTZONE, BADVERS, BADKEY, BADTIME, BADMODE, BADNAME, BADALG, BADTRUNC, BADCOOKIE"#,
        ),
        (
            vigil_proto::DnsProbe {
                server: "dns.example".into(),
                ..dns_spec(server, "two.test", "A")
            },
            r#"server "dns.example" is not host:port"#,
        ),
        (dns_spec(server, " ", "A"), "name must not be empty"),
    ];
    for (p, reason) in cases {
        let r = run(p).await;
        assert_eq!(outcome(&r), (Outcome::Error, reason));
    }

    let r = run(vigil_proto::DnsProbe {
        answers_match: "(".into(),
        ..dns_spec(server, "two.test", "A")
    })
    .await;
    assert_eq!(r.outcome(), Outcome::Error);
    assert!(
        r.reason
            .starts_with("answersMatch is not a valid regular expression: "),
        "{}",
        r.reason
    );
}

#[tokio::test]
async fn probe_runs_directly_too() {
    // The trait object is what the scheduler holds; a run without the scheduler works alike.
    let server = dns_server(Mode::Zone).await;
    let probe = DnsProbe::new(&dns_spec(server, "two.test", "A")).unwrap();
    let attempt = vigil_agent::probe::Attempt::default();
    assert_eq!(
        probe.run(&attempt).await,
        vigil_agent::probe::Verdict::Success
    );
    assert_eq!(attempt.notes().details["rcode"], "NOERROR");
}
