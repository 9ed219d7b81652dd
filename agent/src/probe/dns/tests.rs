//! Unit tests of the dns probe's parsing and checks.
use super::*;

#[test]
fn first_usable_nameserver_wins() {
    let conf = "# comment\nsearch svc.cluster.local\nnameserver fe80::1%eth0\nnameserver 10.96.0.10\nnameserver 8.8.8.8\n";
    assert_eq!(
        first_nameserver(conf),
        Some("10.96.0.10:53".parse().unwrap())
    );
    assert_eq!(first_nameserver("search x\n"), None);
    assert_eq!(
        first_nameserver("nameserver ::1"),
        Some("[::1]:53".parse().unwrap())
    );
}

#[test]
fn server_forms() {
    assert!(matches!(parse_server("10.0.0.1:5353"), Ok(Server::Addr(a)) if a.port() == 5353));
    assert!(matches!(parse_server("[::1]:53"), Ok(Server::Addr(a)) if a.is_ipv6()));
    assert!(matches!(parse_server("10.0.0.1"), Ok(Server::Addr(a)) if a.port() == 53));
    assert!(
        matches!(parse_server("kube-dns.kube-system:53"), Ok(Server::Host(h, 53)) if h == "kube-dns.kube-system")
    );
    assert!(parse_server("nope").is_err());
    assert!(parse_server(":53").is_err());
}

#[test]
fn summary_is_bounded() {
    let many: Vec<String> = (0..100).map(|i| format!("10.0.0.{i}")).collect();
    assert_eq!(
        summary(&many),
        "10.0.0.0, 10.0.0.1, 10.0.0.2, 10.0.0.3, 10.0.0.4 (+95 more)"
    );
    let long = vec!["x".repeat(1000)];
    assert_eq!(summary(&long).chars().count(), DETAIL_CHARS + 1);
}

#[test]
fn rcodes_have_names() {
    assert_eq!(rcode_name(3), "NXDOMAIN");
    assert_eq!(rcode_name(16), "BADVERS");
    assert_eq!(rcode_name(4000), "RCODE4000");
}
