//! Cross-field validation of a HealthCheck: every problem, each with its field path.

use std::fmt;

use super::{HealthCheck, HealthCheckSpec, HumanDuration, Placement, TlsClientSpec};

/// One problem with a HealthCheck, at a field path such as `spec.timeout`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Label names Vigil sets itself on results, metrics and alerts; a check's labels may not reuse them.
pub const RESERVED_LABELS: &[&str] = &[
    "alertname",
    "check",
    "namespace",
    "name",
    "target",
    "cluster",
    "node",
    "severity",
    "agent",
    "outcome",
    "scope",
];

const RCODES: &[&str] = &[
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN", "YXRRSET",
    "NXRRSET", "NOTAUTH", "NOTZONE",
];

#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            path: path.into(),
            message: message.into(),
        });
    }
}

impl HealthCheck {
    /// Every problem with this check; empty when it is valid.
    pub fn validate(&self) -> Vec<FieldError> {
        let mut p = Problems::default();
        match self.metadata.name.as_deref() {
            None | Some("") => p.add("metadata.name", "is required"),
            Some(name) => check_dns_name(&mut p, "metadata.name", name),
        }
        if let Some(ns) = self.metadata.namespace.as_deref() {
            check_dns_name(&mut p, "metadata.namespace", ns);
        }
        validate_spec(&mut p, &self.spec);
        p.0
    }
}

fn check_dns_name(p: &mut Problems, path: &str, value: &str) {
    let ok = !value.is_empty()
        && value.len() <= 253
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && value
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if !ok {
        p.add(
            path,
            format!(
                "{value:?} is not a valid Kubernetes name (lowercase letters, digits, '-' and '.', \
                 starting and ending with a letter or digit, at most 253 characters)"
            ),
        );
    }
}

fn validate_spec(p: &mut Problems, spec: &HealthCheckSpec) {
    let zero = HumanDuration::default();
    if spec.interval == zero {
        p.add("spec.interval", "must be greater than 0s");
    }
    let timeout = spec.effective_timeout();
    if spec.timeout == Some(zero) {
        p.add("spec.timeout", "must be greater than 0s");
    } else if spec.interval != zero && timeout >= spec.interval {
        p.add(
            "spec.timeout",
            format!(
                "must be less than spec.interval ({timeout} >= {})",
                spec.interval
            ),
        );
    }
    if let Some(failing) = spec.failing_interval {
        if failing == zero {
            p.add("spec.failingInterval", "must be greater than 0s");
        } else if failing <= timeout {
            p.add(
                "spec.failingInterval",
                format!("must be greater than the timeout ({failing} <= {timeout})"),
            );
        }
    }
    if spec.interval != zero && timeout < spec.interval {
        let run = timeout.0 * (spec.retries + 1);
        if run > spec.interval.0 {
            p.add(
                "spec.retries",
                format!(
                    "{} attempts of up to {timeout} each take {} in the worst case, longer than \
                     spec.interval ({}); lower retries or timeout, or raise the interval",
                    spec.retries + 1,
                    HumanDuration(run),
                    spec.interval
                ),
            );
        }
    }
    if spec.failure_threshold == 0 {
        p.add("spec.failureThreshold", "must be at least 1");
    }
    if spec.success_threshold == 0 {
        p.add("spec.successThreshold", "must be at least 1");
    }
    match (spec.placement, spec.node_selector.is_empty()) {
        (Placement::NodeSelector, true) => p.add(
            "spec.nodeSelector",
            "must name at least one label with placement: NodeSelector",
        ),
        (placement, false) if placement != Placement::NodeSelector => p.add(
            "spec.nodeSelector",
            format!(
                "is only used with placement: NodeSelector (placement is {})",
                placement.name()
            ),
        ),
        _ => {}
    }
    if spec.severity.trim().is_empty() {
        p.add("spec.severity", "must not be empty");
    }
    for key in spec.labels.keys() {
        let path = format!("spec.labels.{key}");
        if !is_label_name(key) {
            p.add(path, "is not a valid label name ([a-zA-Z_][a-zA-Z0-9_]*)");
        } else if RESERVED_LABELS.contains(&key.as_str()) {
            p.add(
                path,
                format!(
                    "is set by Vigil itself; reserved: {}",
                    RESERVED_LABELS.join(", ")
                ),
            );
        }
    }
    if let Some(url) = &spec.runbook_url
        && url::Url::parse(url).is_err()
    {
        p.add("spec.runbookUrl", format!("{url:?} is not a valid URL"));
    }
    validate_probe(p, spec);
}

fn is_label_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn validate_probe(p: &mut Problems, spec: &HealthCheckSpec) {
    let probe = &spec.probe;
    let kinds = probe.kinds();
    if kinds.len() != 1 {
        let found = if kinds.is_empty() {
            "none".to_owned()
        } else {
            kinds.join(" and ")
        };
        p.add(
            "spec.probe",
            format!(
                "exactly one probe kind must be set (found {found}); choose one of http, tcp, grpc, dns, icmp, tls"
            ),
        );
    }
    if let Some(http) = &probe.http {
        let base = "spec.probe.http";
        match url::Url::parse(&http.url) {
            Err(e) => p.add(
                format!("{base}.url"),
                format!("{:?} is not a valid URL: {e}", http.url),
            ),
            Ok(u) if u.scheme() != "http" && u.scheme() != "https" => p.add(
                format!("{base}.url"),
                format!(
                    "scheme {:?} is not supported; use http:// or https://",
                    u.scheme()
                ),
            ),
            Ok(u) if u.host_str().is_none_or(str::is_empty) => {
                p.add(format!("{base}.url"), format!("{:?} has no host", http.url))
            }
            Ok(_) => {}
        }
        if http.method.is_empty() || !http.method.bytes().all(|b| b.is_ascii_uppercase()) {
            p.add(
                format!("{base}.method"),
                format!(
                    "{:?} is not an HTTP method (GET, POST, HEAD, ...)",
                    http.method
                ),
            );
        }
        for name in http.headers.keys() {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            {
                p.add(
                    format!("{base}.headers"),
                    format!("{name:?} is not a valid header name"),
                );
            }
        }
        for (i, status) in http.expect_status.iter().enumerate() {
            if let Err(e) = status.range() {
                p.add(format!("{base}.expectStatus[{i}]"), e);
            }
        }
        check_regex(
            p,
            &format!("{base}.bodyMatches"),
            http.body_matches.as_deref(),
        );
        if http.max_body_bytes == 0 {
            p.add(format!("{base}.maxBodyBytes"), "must be at least 1");
        }
        check_tls(p, &format!("{base}.tls"), http.tls.as_ref());
    }
    if let Some(tcp) = &probe.tcp {
        check_address(p, "spec.probe.tcp.address", &tcp.address);
        check_regex(p, "spec.probe.tcp.expect", tcp.expect.as_deref());
        check_tls(p, "spec.probe.tcp.tls", tcp.tls.as_ref());
    }
    if let Some(grpc) = &probe.grpc {
        check_address(p, "spec.probe.grpc.address", &grpc.address);
        check_tls(p, "spec.probe.grpc.tls", grpc.tls.as_ref());
    }
    if let Some(dns) = &probe.dns {
        if dns.name.trim().is_empty() {
            p.add("spec.probe.dns.name", "must not be empty");
        }
        if let Some(server) = &dns.server {
            check_address(p, "spec.probe.dns.server", server);
        }
        if let Some(rcode) = &dns.expect_rcode
            && !RCODES.contains(&rcode.to_ascii_uppercase().as_str())
        {
            p.add(
                "spec.probe.dns.expectRcode",
                format!(
                    "{rcode:?} is not an rcode; use one of {}",
                    RCODES.join(", ")
                ),
            );
        }
        check_regex(
            p,
            "spec.probe.dns.answersMatch",
            dns.answers_match.as_deref(),
        );
    }
    if let Some(icmp) = &probe.icmp {
        if icmp.host.trim().is_empty() {
            p.add("spec.probe.icmp.host", "must not be empty");
        }
        if !(1..=100).contains(&icmp.count) {
            p.add(
                "spec.probe.icmp.count",
                format!("must be between 1 and 100 (got {})", icmp.count),
            );
        }
        if icmp.max_loss_percent > 100 {
            p.add(
                "spec.probe.icmp.maxLossPercent",
                format!("must be between 0 and 100 (got {})", icmp.max_loss_percent),
            );
        }
    }
    if let Some(tls) = &probe.tls {
        check_address(p, "spec.probe.tls.address", &tls.address);
        check_tls(p, "spec.probe.tls.tls", tls.tls.as_ref());
    }
}

fn check_regex(p: &mut Problems, path: &str, pattern: Option<&str>) {
    if let Some(pattern) = pattern
        && let Err(e) = regex::Regex::new(pattern)
    {
        let first = e
            .to_string()
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_owned();
        p.add(
            path,
            format!("{pattern:?} is not a valid regular expression: {first}"),
        );
    }
}

fn check_tls(p: &mut Problems, path: &str, tls: Option<&TlsClientSpec>) {
    let Some(tls) = tls else { return };
    if tls.client_cert_pem.is_some() != tls.client_key_pem.is_some() {
        p.add(path, "clientCertPem and clientKeyPem must be set together");
    }
    if tls.insecure_skip_verify && tls.ca_pem.is_some() {
        p.add(
            path,
            "caPem has no effect with insecureSkipVerify: true; set one of them",
        );
    }
}

/// Checks `host:port` (`[v6]:port` for IPv6 literals).
pub fn check_address(p: &mut impl AddressProblems, path: &str, address: &str) {
    if let Err(e) = parse_host_port(address) {
        p.problem(path, format!("{address:?} is not host:port: {e}"));
    }
}

/// Where [`check_address`] reports.
pub trait AddressProblems {
    fn problem(&mut self, path: &str, message: String);
}

impl AddressProblems for Problems {
    fn problem(&mut self, path: &str, message: String) {
        self.add(path, message);
    }
}

/// Splits `host:port`, refusing a missing host or a port outside 1-65535.
pub fn parse_host_port(address: &str) -> Result<(&str, u16), String> {
    let (host, port) = address.rsplit_once(':').ok_or("the port is missing")?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() {
        return Err("the host is missing".into());
    }
    if host.contains(':') && !address.starts_with('[') {
        return Err("write IPv6 addresses in brackets, like [::1]:80".into());
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("port {port:?} is not a number from 1 to 65535")),
        Ok(port) => Ok((host, port)),
    }
}
