//! The `HealthCheck` resource (`vigil.dev/v1alpha1`): the serde types the CRD is generated from.

mod duration;
mod status;
mod validate;

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use duration::{GO_DURATION_PATTERN, HumanDuration};
pub use status::{CheckState, HealthCheckStatus, LastResult, ProbeKind, ResultOutcome};
pub use validate::FieldError;

pub const API_VERSION: &str = "vigil.dev/v1alpha1";
pub const KIND: &str = "HealthCheck";

/// What to check, how often, and when it counts as failing.
// The CEL rules below (`x-kubernetes-validations`) let the API server refuse the obvious
// mistakes at `kubectl apply`; `HealthCheck::validate` stays the source of truth and reports
// what CEL cannot check (URLs, regular expressions, label names, the default timeout, retries)
// as `Valid=False` in the status. federator/tests/crd.rs runs the rules on examples.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "vigil.dev",
    version = "v1alpha1",
    kind = "HealthCheck",
    namespaced,
    shortname = "hc",
    category = "vigil",
    status = "HealthCheckStatus",
    doc = "A Vigil health check: a probe run on a schedule by Vigil's agents, its state in status.",
    printcolumn = r#"{"name":"Probe","type":"string","jsonPath":".status.probe","description":"The probe kind"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".status.target","description":"What is probed"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state","description":"Healthy, Failing, Unknown or Invalid"}"#,
    printcolumn = r#"{"name":"Failing","type":"integer","jsonPath":".status.failingTargets","description":"Targets (or nodes) currently Failing"}"#,
    printcolumn = r#"{"name":"Last","type":"date","jsonPath":".status.lastResult.time","description":"When the last result arrived"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Placement","type":"string","jsonPath":".spec.placement","priority":1}"#,
    printcolumn = r#"{"name":"Outcome","type":"string","jsonPath":".status.lastResult.outcome","priority":1,"description":"Outcome of the last result"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.lastResult.reason","priority":1,"description":"Reason of the last result"}"#
)]
#[x_kube(validation = Rule::new("duration(self.interval) > duration('0s')")
    .message("interval must be greater than 0s").field_path(".interval"))]
#[x_kube(validation = Rule::new("!has(self.timeout) || duration(self.timeout) > duration('0s')")
    .message("timeout must be greater than 0s").field_path(".timeout"))]
#[x_kube(validation = Rule::new("!has(self.timeout) || duration(self.timeout) < duration(self.interval)")
    .message("timeout must be less than interval").field_path(".timeout"))]
#[x_kube(validation = Rule::new("!has(self.failingInterval) || duration(self.failingInterval) > (has(self.timeout) ? duration(self.timeout) : duration('0s'))")
    .message("failingInterval must be greater than timeout (and than 0s)").field_path(".failingInterval"))]
#[x_kube(validation = Rule::new("self.placement != 'NodeSelector' || (has(self.nodeSelector) && size(self.nodeSelector) > 0)")
    .message("nodeSelector must name at least one label with placement: NodeSelector")
    .field_path(".nodeSelector").reason(Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new("self.placement == 'NodeSelector' || !has(self.nodeSelector) || size(self.nodeSelector) == 0")
    .message("nodeSelector is only used with placement: NodeSelector")
    .field_path(".nodeSelector").reason(Reason::FieldValueForbidden))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckSpec {
    /// How often each target is probed. Default 30s.
    #[serde(default = "defaults::interval")]
    pub interval: HumanDuration,
    /// Per-attempt timeout; must be below `interval`. Default: 5s or half the interval, whichever
    /// is smaller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Extra attempts inside one run before the run counts as failed. Default 0.
    #[serde(default)]
    pub retries: u32,
    /// Consecutive failed runs before the check is Failing (and its alert fires). Default 3.
    #[serde(default = "defaults::failure_threshold")]
    #[schemars(range(min = 1))]
    pub failure_threshold: u32,
    /// Consecutive good runs before a Failing check is Healthy again. Default 1.
    #[serde(default = "defaults::success_threshold")]
    #[schemars(range(min = 1))]
    pub success_threshold: u32,
    /// Probe this often while the last run failed. Default: `interval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_interval: Option<HumanDuration>,
    /// Where the check runs. Default AnyNode.
    #[serde(default)]
    pub placement: Placement,
    /// Node labels an agent's node must carry, with `placement: NodeSelector`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// The `severity` label of the alert. Default `warning`.
    #[serde(default = "defaults::severity")]
    #[schemars(length(min = 1, max = 63))]
    pub severity: String,
    /// Copied to every result, metric and alert of this check.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Linked from the alert's annotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(url)]
    pub runbook_url: Option<String>,
    /// Exactly one probe kind.
    pub probe: ProbeSpec,
}

/// Where a check runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Placement {
    /// On exactly one connected agent, chosen by rendezvous hashing.
    #[default]
    AnyNode,
    /// On every connected agent (node-to-target reachability).
    EveryNode,
    /// On every agent whose node carries all of `nodeSelector`.
    NodeSelector,
    /// As a Kubernetes Job per run (a subprocess in local mode).
    Isolated,
}

impl Placement {
    pub fn name(self) -> &'static str {
        match self {
            Placement::AnyNode => "AnyNode",
            Placement::EveryNode => "EveryNode",
            Placement::NodeSelector => "NodeSelector",
            Placement::Isolated => "Isolated",
        }
    }

    /// Whether each node's runs form their own state (and alert), or the cluster's runs form one.
    pub fn node_scoped(self) -> bool {
        matches!(self, Placement::EveryNode | Placement::NodeSelector)
    }
}

/// One of the probe kinds; validation insists on exactly one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new(
    "[has(self.http), has(self.tcp), has(self.grpc), has(self.dns), has(self.icmp), has(self.tls)].exists_one(x, x)"
).message("exactly one probe kind must be set: one of http, tcp, grpc, dns, icmp, tls"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProbeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpProbeSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpProbeSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc: Option<GrpcProbeSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsProbeSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icmp: Option<IcmpProbeSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsProbeSpec>,
}

impl ProbeSpec {
    /// The kinds that are set, in declaration order.
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut kinds = Vec::new();
        if self.http.is_some() {
            kinds.push("http");
        }
        if self.tcp.is_some() {
            kinds.push("tcp");
        }
        if self.grpc.is_some() {
            kinds.push("grpc");
        }
        if self.dns.is_some() {
            kinds.push("dns");
        }
        if self.icmp.is_some() {
            kinds.push("icmp");
        }
        if self.tls.is_some() {
            kinds.push("tls");
        }
        kinds
    }

    /// What the probe points at: the state key's `target`.
    pub fn target(&self) -> String {
        if let Some(p) = &self.http {
            p.url.clone()
        } else if let Some(p) = &self.tcp {
            p.address.clone()
        } else if let Some(p) = &self.grpc {
            match &p.service {
                Some(s) if !s.is_empty() => format!("{}/{s}", p.address),
                _ => p.address.clone(),
            }
        } else if let Some(p) = &self.dns {
            p.name.clone()
        } else if let Some(p) = &self.icmp {
            p.host.clone()
        } else if let Some(p) = &self.tls {
            p.address.clone()
        } else {
            String::new()
        }
    }
}

/// HTTP(S) request and what the answer must look like.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpProbeSpec {
    /// `http://` or `https://` URL.
    #[schemars(regex(pattern = r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]+"))]
    pub url: String,
    /// Default GET.
    #[serde(default = "defaults::method")]
    #[schemars(regex(pattern = r"^[A-Z]+$"))]
    pub method: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// Accepted status codes: numbers (200) or ranges ("200-299", "2xx"). Default: any 2xx.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expect_status: Vec<StatusSpec>,
    /// Regular expression the body must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_matches: Option<String>,
    /// Text the body must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// Read no more than this many bytes of the body. Default 65536.
    #[serde(default = "defaults::max_body_bytes")]
    #[schemars(range(min = 1))]
    pub max_body_bytes: u64,
    /// Follow 3xx redirects (at most 10). Default true.
    #[serde(default = "defaults::yes")]
    pub follow_redirects: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsClientSpec>,
    /// Resolve to IPv4 (`ip4`) or IPv6 (`ip6`) only. Default: either.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_preference: Option<IpPreference>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum IpPreference {
    /// IPv4 addresses only.
    Ip4,
    /// IPv6 addresses only.
    Ip6,
}

/// An accepted HTTP status: a code (`200`) or a range (`"200-299"`, `"2xx"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StatusSpec {
    Code(u16),
    Range(String),
}

impl JsonSchema for StatusSpec {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "StatusSpec".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "x-kubernetes-int-or-string": true,
            "description": "A status code (200) or a range (\"200-299\", \"2xx\")."
        })
    }
}

impl StatusSpec {
    /// The inclusive range this entry accepts, or why it is not one.
    pub fn range(&self) -> Result<(u16, u16), String> {
        let check = |code: u16| {
            if (100..=599).contains(&code) {
                Ok(code)
            } else {
                Err(format!("{code} is not an HTTP status (100-599)"))
            }
        };
        match self {
            StatusSpec::Code(code) => check(*code).map(|c| (c, c)),
            StatusSpec::Range(text) => {
                let t = text.trim();
                if let Some(class) = t.strip_suffix("xx").or_else(|| t.strip_suffix("XX")) {
                    let d: u16 = class.parse().map_err(|_| bad_status(text))?;
                    return check(d * 100).map(|lo| (lo, lo + 99));
                }
                if let Some((lo, hi)) = t.split_once('-') {
                    let lo = check(lo.trim().parse().map_err(|_| bad_status(text))?)?;
                    let hi = check(hi.trim().parse().map_err(|_| bad_status(text))?)?;
                    if lo > hi {
                        return Err(format!("range {text:?} runs backwards"));
                    }
                    return Ok((lo, hi));
                }
                check(t.parse().map_err(|_| bad_status(text))?).map(|c| (c, c))
            }
        }
    }
}

fn bad_status(text: &str) -> String {
    format!("{text:?} is not a status code or range; write 200, \"200-299\" or \"2xx\"")
}

/// TLS client settings shared by the probes that speak TLS.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.clientCertPem) == has(self.clientKeyPem)")
    .message("clientCertPem and clientKeyPem must be set together"))]
#[x_kube(validation = Rule::new("!(has(self.insecureSkipVerify) && self.insecureSkipVerify && has(self.caPem))")
    .message("caPem has no effect with insecureSkipVerify: true; set one of them"))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsClientSpec {
    /// Accept any certificate. Default false.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// PEM bundle of CAs to trust instead of the built-in roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// Name sent as SNI and verified. Default: the target's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Client certificate (PEM), with `clientKeyPem`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_pem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_pem: Option<String>,
}

/// TCP connect, optionally with TLS and a send/expect exchange.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpProbeSpec {
    /// `host:port`.
    #[schemars(regex(pattern = r"^.+:[0-9]+$"))]
    pub address: String,
    /// Sent after connecting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send: Option<String>,
    /// Regular expression a received line must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
    /// Start TLS right after connecting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsClientSpec>,
}

/// `grpc.health.v1.Health/Check`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GrpcProbeSpec {
    /// `host:port`.
    #[schemars(regex(pattern = r"^.+:[0-9]+$"))]
    pub address: String,
    /// Service name to ask about; empty = the server as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsClientSpec>,
}

/// A DNS query and what the answer must hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DnsProbeSpec {
    pub name: String,
    /// `host:port` of the server; default: the node's resolver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// Default A.
    #[serde(default = "defaults::record_type", rename = "type")]
    pub record_type: RecordType,
    /// Default NOERROR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_rcode: Option<String>,
    /// At least this many answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect_answers: Option<u32>,
    /// Regular expression every answer must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers_match: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[allow(clippy::upper_case_acronyms)]
pub enum RecordType {
    A,
    AAAA,
    CNAME,
    MX,
    TXT,
    SRV,
    NS,
}

/// ICMP echo.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IcmpProbeSpec {
    pub host: String,
    /// Echo requests per run. Default 3.
    #[serde(default = "defaults::icmp_count")]
    #[schemars(range(min = 1, max = 100))]
    pub count: u32,
    /// Highest tolerated loss in percent. Default 0.
    #[serde(default)]
    #[schemars(range(max = 100))]
    pub max_loss_percent: u32,
}

/// TLS handshake and certificate validity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsProbeSpec {
    /// `host:port`.
    #[schemars(regex(pattern = r"^.+:[0-9]+$"))]
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// The certificate must stay valid at least this long. Default 72h.
    #[serde(default = "defaults::min_validity")]
    // The serialized default would be humantime's "3days", which the Go-compatible duration
    // pattern (and CEL's duration()) refuses: state it the Go way.
    #[schemars(extend("default" = "72h"))]
    pub min_validity: HumanDuration,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsClientSpec>,
}

impl ProbeSpec {
    /// The probe kind when exactly one is set.
    pub fn kind(&self) -> Option<ProbeKind> {
        let set = [
            (self.http.is_some(), ProbeKind::Http),
            (self.tcp.is_some(), ProbeKind::Tcp),
            (self.grpc.is_some(), ProbeKind::Grpc),
            (self.dns.is_some(), ProbeKind::Dns),
            (self.icmp.is_some(), ProbeKind::Icmp),
            (self.tls.is_some(), ProbeKind::Tls),
        ];
        let mut on = set.iter().filter(|(set, _)| *set).map(|(_, kind)| *kind);
        match (on.next(), on.next()) {
            (Some(kind), None) => Some(kind),
            _ => None,
        }
    }
}

mod defaults {
    use super::{HumanDuration, RecordType};

    pub fn interval() -> HumanDuration {
        HumanDuration::from_secs(30)
    }
    pub fn failure_threshold() -> u32 {
        3
    }
    pub fn success_threshold() -> u32 {
        1
    }
    pub fn severity() -> String {
        "warning".to_owned()
    }
    pub fn method() -> String {
        "GET".to_owned()
    }
    pub fn max_body_bytes() -> u64 {
        64 * 1024
    }
    pub fn yes() -> bool {
        true
    }
    pub fn record_type() -> RecordType {
        RecordType::A
    }
    pub fn icmp_count() -> u32 {
        3
    }
    pub fn min_validity() -> HumanDuration {
        HumanDuration::from_secs(72 * 3600)
    }
}

impl HealthCheckSpec {
    /// The effective per-attempt timeout (see the field's default).
    pub fn effective_timeout(&self) -> HumanDuration {
        self.timeout.unwrap_or_else(|| {
            HumanDuration((self.interval.0 / 2).min(std::time::Duration::from_secs(5)))
        })
    }
}

impl HealthCheck {
    /// `namespace/name`, the check's id everywhere.
    pub fn id(&self) -> String {
        format!(
            "{}/{}",
            self.metadata.namespace.as_deref().unwrap_or("default"),
            self.metadata.name.as_deref().unwrap_or_default()
        )
    }
}

/// The CRD generated from these types, as YAML.
pub fn crd_yaml() -> String {
    use kube::CustomResourceExt;
    serde_yaml::to_string(&HealthCheck::crd()).expect("the CRD serializes")
}
