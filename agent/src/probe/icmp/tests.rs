//! Unit tests of the icmp probe's parsing and checks.
use super::*;

fn matcher(flavor: Flavor, target: &str) -> Matcher {
    Matcher {
        flavor,
        target: target.parse().unwrap(),
        ident: 0x1234,
        token: *b"vigil-tk",
    }
}

/// An echo reply to `req` as the target would send it (type changed, checksum redone).
fn reply_to(m: &Matcher, req: &[u8]) -> Vec<u8> {
    let mut p = req.to_vec();
    p[0] = if m.flavor.is_v6() {
        ICMP6_ECHO_REPLY
    } else {
        ICMP4_ECHO_REPLY
    };
    if !m.flavor.is_v6() {
        p[2..4].copy_from_slice(&[0, 0]);
        let sum = checksum(&p);
        p[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    p
}

fn ipv4_header(src: [u8; 4], dst: [u8; 4], payload_len: usize) -> Vec<u8> {
    let total = u16::try_from(20 + payload_len).unwrap();
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x40, 0, 64, 1, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let sum = checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h
}

#[test]
fn checksum_matches_rfc1071_examples() {
    // RFC 1071 section 3: the sum of these words is 0xddf2, so the checksum is !0xddf2.
    assert_eq!(
        checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
        !0xddf2
    );
    assert_eq!(checksum(&[]), 0xffff);
    // An odd byte counts as the high half of a word.
    assert_eq!(checksum(&[0xab]), !0xab00);
    // A real echo request: type 8, id 1, seq 1, no payload.
    assert_eq!(checksum(&[8, 0, 0, 0, 0, 1, 0, 1]), 0xf7fd);
    // Carries fold back in.
    assert_eq!(checksum(&[0xff, 0xff, 0xff, 0xff]), 0);
}

#[test]
fn echo_requests_carry_id_seq_token_and_a_valid_checksum() {
    let m = matcher(Flavor::V4Raw, "127.0.0.1");
    let p = m.echo_request(7);
    assert_eq!(p.len(), 8 + PAYLOAD_LEN);
    assert_eq!(&p[..2], &[ICMP4_ECHO_REQUEST, 0]);
    assert_eq!(&p[4..8], &[0x12, 0x34, 0, 7]);
    assert_eq!(&p[8..16], b"vigil-tk");
    assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");

    let m6 = matcher(Flavor::V6Raw, "::1");
    let p6 = m6.echo_request(7);
    assert_eq!(p6[0], ICMP6_ECHO_REQUEST);
    assert_eq!(&p6[2..4], &[0, 0], "the kernel fills in ICMPv6 checksums");
}

#[test]
fn replies_are_matched_on_every_flavor() {
    let from4: IpAddr = "127.0.0.1".parse().unwrap();
    let from6: IpAddr = "::1".parse().unwrap();
    for flavor in [Flavor::V4Datagram, Flavor::V6Raw, Flavor::V6Datagram] {
        let m = matcher(flavor, if flavor.is_v6() { "::1" } else { "127.0.0.1" });
        let from = if flavor.is_v6() { from6 } else { from4 };
        let reply = reply_to(&m, &m.echo_request(2));
        assert_eq!(
            m.parse(&reply, from),
            Some(Reply::Echo { seq: 2 }),
            "{flavor:?}"
        );
    }
    let m = matcher(Flavor::V4Raw, "127.0.0.1");
    let icmp = reply_to(&m, &m.echo_request(5));
    let mut packet = ipv4_header([127, 0, 0, 1], [127, 0, 0, 1], icmp.len());
    packet.extend_from_slice(&icmp);
    assert_eq!(m.parse(&packet, from4), Some(Reply::Echo { seq: 5 }));
    // IP options: a 24-byte header is skipped too.
    let mut opts = ipv4_header([127, 0, 0, 1], [127, 0, 0, 1], icmp.len() + 4);
    opts[0] = 0x46;
    opts.extend_from_slice(&[1, 1, 1, 1]);
    opts.extend_from_slice(&icmp);
    assert_eq!(m.parse(&opts, from4), Some(Reply::Echo { seq: 5 }));
}

#[test]
fn a_ping_socket_reply_matches_whatever_identifier_the_kernel_chose() {
    let m = matcher(Flavor::V4Datagram, "127.0.0.1");
    let mut req = m.echo_request(1);
    req[4..6].copy_from_slice(&[0xbe, 0xef]);
    let reply = reply_to(&m, &req);
    let from = "127.0.0.1".parse().unwrap();
    assert_eq!(m.parse(&reply, from), Some(Reply::Echo { seq: 1 }));
    // A raw socket insists on its own identifier.
    let raw = matcher(Flavor::V6Raw, "::1");
    let mut req = raw.echo_request(1);
    req[4..6].copy_from_slice(&[0xbe, 0xef]);
    assert_eq!(
        raw.parse(&reply_to(&raw, &req), "::1".parse().unwrap()),
        None
    );
}

#[test]
fn unrelated_traffic_is_ignored() {
    let from: IpAddr = "127.0.0.1".parse().unwrap();
    let m = matcher(Flavor::V4Datagram, "127.0.0.1");
    let req = m.echo_request(1);
    // Our own request (seen by raw sockets on loopback).
    assert_eq!(m.parse(&req, from), None);
    // Another run's token.
    let other = Matcher {
        token: *b"other-tk",
        ..matcher(Flavor::V4Datagram, "127.0.0.1")
    };
    assert_eq!(
        m.parse(&reply_to(&other, &other.echo_request(1)), from),
        None
    );
    // From another host.
    let reply = reply_to(&m, &req);
    assert_eq!(m.parse(&reply, "127.0.0.2".parse().unwrap()), None);
    // A bad checksum.
    let mut bad = reply.clone();
    bad[9] ^= 0xff;
    assert_eq!(m.parse(&bad, from), None);
    // A non-zero code.
    let mut coded = req.clone();
    coded[1] = 1;
    assert_eq!(m.parse(&reply_to(&m, &coded), from), None);
    // Raw IPv4: another protocol, or not IPv4 at all.
    let raw = matcher(Flavor::V4Raw, "127.0.0.1");
    let icmp = reply_to(&raw, &raw.echo_request(1));
    let mut udp = ipv4_header([127, 0, 0, 1], [127, 0, 0, 1], icmp.len());
    udp[9] = 17;
    udp.extend_from_slice(&icmp);
    assert_eq!(raw.parse(&udp, from), None);
    let mut v6ish = ipv4_header([127, 0, 0, 1], [127, 0, 0, 1], icmp.len());
    v6ish[0] = 0x65;
    v6ish.extend_from_slice(&icmp);
    assert_eq!(raw.parse(&v6ish, from), None);
}

#[test]
fn truncated_and_garbage_packets_are_ignored_without_panicking() {
    let from4: IpAddr = "127.0.0.1".parse().unwrap();
    let from6: IpAddr = "::1".parse().unwrap();
    let raw4 = matcher(Flavor::V4Raw, "127.0.0.1");
    let icmp = reply_to(&raw4, &raw4.echo_request(3));
    let mut full = ipv4_header([127, 0, 0, 1], [127, 0, 0, 1], icmp.len());
    full.extend_from_slice(&icmp);
    for flavor in [
        Flavor::V4Raw,
        Flavor::V4Datagram,
        Flavor::V6Raw,
        Flavor::V6Datagram,
    ] {
        let m = matcher(flavor, if flavor.is_v6() { "::1" } else { "127.0.0.1" });
        let from = if flavor.is_v6() { from6 } else { from4 };
        let good = if flavor == Flavor::V4Raw {
            full.clone()
        } else {
            reply_to(&m, &m.echo_request(3))
        };
        assert!(m.parse(&good, from).is_some(), "{flavor:?}");
        // Every truncation (the token is cut off before the full packet) is ignored.
        let needed = good.len() - (PAYLOAD_LEN - TOKEN_LEN);
        for len in 0..needed {
            assert_eq!(m.parse(&good[..len], from), None, "{flavor:?} cut to {len}");
        }
        // Deterministic garbage of every length, and a header claiming more than there is.
        let mut x: u32 = 0x1234_5678;
        for len in 0..200 {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = m.parse(&junk, from);
        }
        let _ = m.parse(&[0x4f, 0, 0, 0, 0, 0, 0, 0, 0, 1], from);
        let _ = m.parse(&[3, 1, 0, 0, 0, 0, 0, 0, 0x45], from);
        let _ = m.parse(&[1, 0, 0, 0, 0, 0, 0, 0, 0x60], from);
    }
}

#[test]
fn icmp_errors_about_our_requests_name_the_cause() {
    let router: IpAddr = "192.0.2.1".parse().unwrap();
    // IPv4: destination host unreachable quoting our request's header and first 8 bytes.
    let m = matcher(Flavor::V4Raw, "198.51.100.7");
    let req = m.echo_request(4);
    let mut err = vec![ICMP4_DEST_UNREACHABLE, 1, 0, 0, 0, 0, 0, 0];
    err.extend_from_slice(&ipv4_header([10, 0, 0, 1], [198, 51, 100, 7], req.len()));
    err.extend_from_slice(&req[..8]);
    let sum = checksum(&err);
    err[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut packet = ipv4_header([192, 0, 2, 1], [10, 0, 0, 1], err.len());
    packet.extend_from_slice(&err);
    assert_eq!(
        m.parse(&packet, router),
        Some(Reply::Error {
            seq: 4,
            cause: "destination host unreachable from 192.0.2.1".into()
        })
    );
    // The same error about someone else's ping is not ours.
    let other = Matcher {
        ident: 0x9999,
        ..matcher(Flavor::V4Raw, "198.51.100.7")
    };
    assert_eq!(other.parse(&packet, router), None);
    // Quoted header cut short.
    let short = &packet[..packet.len() - 4];
    assert_eq!(m.parse(short, router), None);

    // IPv6: time exceeded quoting the IPv6 header and our request.
    let m6 = matcher(Flavor::V6Raw, "2001:db8::7");
    let req6 = m6.echo_request(9);
    let mut err6 = vec![ICMP6_TIME_EXCEEDED, 0, 0, 0, 0, 0, 0, 0];
    let mut hdr = vec![0x60, 0, 0, 0, 0, req6.len() as u8, 58, 64];
    hdr.extend_from_slice(
        &"2001:db8::1"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    hdr.extend_from_slice(
        &"2001:db8::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    err6.extend_from_slice(&hdr);
    err6.extend_from_slice(&req6);
    let r6: IpAddr = "2001:db8::fe".parse().unwrap();
    assert_eq!(
        m6.parse(&err6, r6),
        Some(Reply::Error {
            seq: 9,
            cause: "hop limit exceeded from 2001:db8::fe".into()
        })
    );
    // Ping sockets never report errors this way; the bytes are ignored.
    let dg = matcher(Flavor::V6Datagram, "2001:db8::7");
    assert_eq!(dg.parse(&err6, r6), None);
}

#[test]
fn loss_verdicts_compare_exactly_and_name_the_loss() {
    let probe = |max| {
        IcmpProbe::new(&vigil_proto::IcmpProbe {
            host: "127.0.0.1".into(),
            count: 3,
            max_loss_percent: max,
        })
        .unwrap()
    };
    let run = |answered: usize| {
        let mut r = EchoRun::new(3);
        r.sent = 3;
        for (i, e) in r.echoes.iter_mut().enumerate() {
            *e = if i < answered {
                Echo::Answered(Duration::from_millis(i as u64 + 1))
            } else {
                Echo::Lost
            };
        }
        r
    };
    let a = Attempt::default();
    assert_eq!(
        probe(0).verdict(&run(0), &a),
        Verdict::Failure("lost 3 of 3 echo replies (100%), more than maxLossPercent 0".into())
    );
    assert_eq!(a.notes().values["icmp_loss_ratio"], 1.0);
    assert!(!a.notes().values.contains_key("icmp_rtt_avg_seconds"));
    // 1 of 3 is 33.3%: within 34, over 33.
    assert_eq!(probe(34).verdict(&run(2), &a), Verdict::Success);
    assert_eq!(
        probe(33).verdict(&run(2), &a),
        Verdict::Failure("lost 1 of 3 echo replies (33%), more than maxLossPercent 33".into())
    );
    let a = Attempt::default();
    assert_eq!(probe(0).verdict(&run(3), &a), Verdict::Success);
    let v = a.notes().values;
    assert_eq!(v["icmp_rtt_min_seconds"], 0.001);
    assert_eq!(v["icmp_rtt_max_seconds"], 0.003);
    assert!((v["icmp_rtt_avg_seconds"] - 0.002).abs() < 1e-12);
    assert_eq!(v["icmp_loss_ratio"], 0.0);
}

#[test]
fn specs_are_checked() {
    let spec = |host: &str, count, max| vigil_proto::IcmpProbe {
        host: host.into(),
        count,
        max_loss_percent: max,
    };
    assert_eq!(IcmpProbe::new(&spec("h", 0, 0)).unwrap().count, 3);
    assert!(IcmpProbe::new(&spec("", 3, 0)).is_err());
    assert!(IcmpProbe::new(&spec("h", 3, 101)).is_err());
    assert!(IcmpProbe::new(&spec("h", 70_000, 0)).is_err());
}
