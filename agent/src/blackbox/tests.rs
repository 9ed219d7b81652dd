//! Modules-file parsing: blackbox's example modules load, and each invalid file is paired with
//! the exact message it must produce.

use super::*;

fn parse(text: &str) -> Result<Modules, String> {
    Modules::parse(text, Path::new("m.yml")).map_err(|e| e.to_string())
}

#[test]
fn built_in_modules_mirror_blackbox_names() {
    let m = Modules::defaults();
    let names: Vec<&str> = m.0.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "grpc",
            "grpc_plain",
            "http_2xx",
            "http_post_2xx",
            "icmp",
            "tcp_connect"
        ]
    );
}

#[test]
fn full_module_parses_and_converts() {
    let m = parse(
        r#"
modules:
  web:
    prober: http
    timeout: 3s
    http:
      valid_status_codes: [200, 204]
      method: POST
      headers: {X-A: b}
      body: hello
      fail_if_body_not_matches_regexp: ["ok"]
      follow_redirects: false
      preferred_ip_protocol: ip4
      tls_config:
        insecure_skip_verify: true
        server_name: example.test
  banner:
    prober: tcp
    tcp:
      query_response:
        - send: "PING"
        - expect: "^PONG"
  ping:
    prober: icmp
    icmp: {preferred_ip_protocol: ip6}
  dns:
    prober: dns
    dns:
      query_name: example.test
      query_type: A
      valid_rcodes: [NOERROR]
      validate_answer_rrs:
        fail_if_not_matches_regexp: ["^10\\."]
  health:
    prober: grpc
    grpc: {service: svc, tls: false}
"#,
    )
    .unwrap();
    let web = m.get("web").unwrap();
    assert_eq!(web.timeout, Some(Duration::from_secs(3)));
    let spec = web.check_spec("web", "127.0.0.1:8080/x", Duration::from_secs(3));
    assert_eq!(spec.timeout_ms, 3000);
    let Some(check_spec::Probe::Http(h)) = spec.probe else {
        panic!("http")
    };
    assert_eq!(h.url, "http://127.0.0.1:8080/x");
    assert_eq!(h.method, "POST");
    assert_eq!(h.expect_status.len(), 2);
    assert_eq!(h.body_matches, "ok");
    assert!(!h.follow_redirects);
    assert_eq!(h.ip_preference, "ip4");
    let tls = h.tls.unwrap();
    assert!(tls.insecure_skip_verify);
    assert_eq!(tls.server_name, "example.test");

    let spec = m
        .get("banner")
        .unwrap()
        .check_spec("banner", "h:1", Duration::from_secs(1));
    let Some(check_spec::Probe::Tcp(t)) = spec.probe else {
        panic!("tcp")
    };
    assert_eq!((t.send.as_str(), t.expect.as_str()), ("PING", "^PONG"));

    let spec = m
        .get("dns")
        .unwrap()
        .check_spec("dns", "127.0.0.1:53", Duration::from_secs(1));
    let Some(check_spec::Probe::Dns(d)) = spec.probe else {
        panic!("dns")
    };
    assert_eq!(d.server, "127.0.0.1:53");
    assert_eq!(d.answers_match, "^10\\.");
    assert_eq!(
        m.get("ping").unwrap().pinned_protocol(),
        Some(IpProtocol::Ip6)
    );
}

#[test]
fn deprecated_no_follow_redirects_is_honoured() {
    let m = parse("modules:\n  h:\n    prober: http\n    http:\n      no_follow_redirects: true\n")
        .unwrap();
    let spec = m
        .get("h")
        .unwrap()
        .check_spec("h", "x", Duration::from_secs(1));
    let Some(check_spec::Probe::Http(h)) = spec.probe else {
        panic!("http")
    };
    assert!(!h.follow_redirects);
}

/// Invalid files and the exact message each must produce.
#[test]
fn invalid_files_are_refused_with_their_messages() {
    let cases: &[(&str, &str)] = &[
        (
            "modules:\n  h:\n    prober: http\n    http:\n      bogus: 1\n",
            "modules file m.yml: module \"h\", field http.bogus: unknown field `bogus`, expected one of \
             `valid_status_codes`, `method`, `headers`, `body`, `fail_if_body_not_matches_regexp`, \
             `fail_if_body_matches_regexp`, `follow_redirects`, `no_follow_redirects`, \
             `preferred_ip_protocol`, `tls_config` at line 5 column 7",
        ),
        (
            "modules:\n  h:\n    prober: smtp\n",
            "modules file m.yml: module \"h\", field prober: unknown variant `smtp`, expected one of \
             `http`, `tcp`, `icmp`, `dns`, `grpc` at line 3 column 13",
        ),
        (
            "modules:\n  h:\n    prober: http\n    timeout: soon\n",
            "modules file m.yml: module \"h\", field timeout: \"soon\" is not a duration (expected \
             number at 0); write it like 5s or 500ms at line 3 column 5",
        ),
        (
            "modules:\n  h:\n    prober: http\n    retries: 3\n",
            "modules file m.yml: module \"h\", field retries: unknown field `retries`, expected one of `prober`, \
             `timeout`, `http`, `tcp`, `icmp`, `dns`, `grpc` at line 4 column 5",
        ),
        (
            "mods: {}\n",
            "modules file m.yml: unknown field `mods`, expected `modules`",
        ),
        (
            "modules:\n  h:\n    prober: icmp\n    icmp:\n      preferred_ip_protocol: ip5\n",
            "modules file m.yml: module \"h\", field icmp.preferred_ip_protocol: unknown variant \
             `ip5`, expected `ip4` or `ip6` at line 5 column 30",
        ),
        (
            "modules:\n  d:\n    prober: dns\n",
            "modules file m.yml:\n  module \"d\", field dns.query_name: must be set for a dns module\n  \
             module \"d\", field dns.query_type: must be set: blackbox's default ANY is not \
             supported; use A, AAAA, CNAME, MX, TXT, SRV or NS",
        ),
        (
            "modules:\n  d:\n    prober: dns\n    dns:\n      query_name: a.test\n      query_type: PTR\n      valid_rcodes: [NOERROR, NXDOMAIN]\n",
            "modules file m.yml:\n  module \"d\", field dns.valid_rcodes: Vigil checks one rcode; \
             list only one\n  module \"d\", field dns: record type \"PTR\" is not supported; use \
             one of A, AAAA, CNAME, MX, TXT, SRV, NS",
        ),
        (
            "modules:\n  h:\n    prober: http\n    tcp: {}\n    http:\n      fail_if_body_matches_regexp: [x]\n      fail_if_body_not_matches_regexp: [a, \"(\"]\n",
            "modules file m.yml:\n  module \"h\", field tcp: set, but prober is http; remove it or \
             change prober\n  module \"h\", field http.fail_if_body_not_matches_regexp: Vigil checks \
             one regular expression; combine them into one\n  module \"h\", field \
             http.fail_if_body_not_matches_regexp: \"(\" is not a valid regular expression: \
             unclosed group\n  module \"h\", field \
             http.fail_if_body_matches_regexp: not supported by Vigil; use \
             fail_if_body_not_matches_regexp",
        ),
        (
            "modules:\n  t:\n    prober: tcp\n    tcp:\n      query_response:\n        - expect: a\n          send: b\n",
            "modules file m.yml:\n  module \"t\", field tcp.query_response: Vigil runs at most one \
             send followed by at most one expect, each in its own step",
        ),
        (
            "modules:\n  t:\n    prober: tcp\n    tcp:\n      tls: true\n      tls_config: {ca_file: /nonexistent/ca.pem}\n",
            "modules file m.yml:\n  module \"t\", field tcp.tls_config: ca_file /nonexistent/ca.pem: \
             cannot read it: no such file or directory",
        ),
        (
            "modules:\n  h:\n    prober: http\n    http:\n      follow_redirects: true\n      no_follow_redirects: true\n",
            "modules file m.yml:\n  module \"h\", field http.no_follow_redirects: true contradicts \
             http.follow_redirects: true; keep only follow_redirects",
        ),
    ];
    for (text, want) in cases {
        assert_eq!(parse(text).unwrap_err(), *want, "for:\n{text}");
    }
}

#[test]
fn unreadable_file_names_the_path() {
    let e = Modules::load(Path::new("/nonexistent/blackbox.yml")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "cannot read the modules file /nonexistent/blackbox.yml: No such file or directory (os error 2)"
    );
}
