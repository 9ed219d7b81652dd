//! blackbox_exporter compatibility: its modules file, parsed strictly, and the `CheckSpec` a
//! module and a `/probe` target become.
//!
//! Only the fields Vigil's probes can honour are accepted; anything else is refused with the
//! module and field named, so a file never silently means less than it says.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use vigil_proto::{CheckSpec, StatusRange, TlsOptions, check_spec};

/// Vigil reads at most this much of an HTTP body (blackbox reads it all by default).
pub const MAX_BODY_BYTES: u64 = 4 * 1024 * 1024;

/// The modules of a blackbox_exporter config file, by name.
#[derive(Clone, Debug, Default)]
pub struct Modules(pub BTreeMap<String, Module>);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the modules file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("modules file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("modules file {path}:\n  {}", .problems.join("\n  "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileText {
    modules: BTreeMap<String, Module>,
}

/// One module. Defaults are blackbox_exporter's.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Module {
    pub prober: Prober,
    /// How long one probe may take; `None` = the scrape timeout less 0.5 s (else 119.5 s).
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
    pub http: Option<HttpModule>,
    pub tcp: Option<TcpModule>,
    pub icmp: Option<IcmpModule>,
    pub dns: Option<DnsModule>,
    pub grpc: Option<GrpcModule>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Prober {
    Http,
    Tcp,
    Icmp,
    Dns,
    Grpc,
}

impl Prober {
    pub fn name(self) -> &'static str {
        match self {
            Prober::Http => "http",
            Prober::Tcp => "tcp",
            Prober::Icmp => "icmp",
            Prober::Dns => "dns",
            Prober::Grpc => "grpc",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IpProtocol {
    Ip4,
    Ip6,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpModule {
    /// Accepted status codes; empty = any 2xx.
    #[serde(default)]
    pub valid_status_codes: Vec<u16>,
    /// Default `GET`.
    #[serde(default)]
    pub method: String,
    #[serde(default)]
    pub headers: HashMap<String, String>,
    #[serde(default)]
    pub body: String,
    /// Vigil checks one regular expression.
    #[serde(default)]
    pub fail_if_body_not_matches_regexp: Vec<String>,
    /// Refused when not empty: Vigil's HTTP probe has no negative body match.
    #[serde(default)]
    pub fail_if_body_matches_regexp: Vec<String>,
    /// Default true.
    pub follow_redirects: Option<bool>,
    /// Deprecated blackbox spelling of `follow_redirects: false`.
    pub no_follow_redirects: Option<bool>,
    pub preferred_ip_protocol: Option<IpProtocol>,
    pub tls_config: Option<TlsConfig>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpModule {
    /// At most one `send` followed by at most one `expect`.
    #[serde(default)]
    pub query_response: Vec<QueryResponse>,
    #[serde(default)]
    pub tls: bool,
    pub tls_config: Option<TlsConfig>,
    pub preferred_ip_protocol: Option<IpProtocol>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryResponse {
    pub expect: Option<String>,
    pub send: Option<String>,
    /// Refused when true.
    #[serde(default)]
    pub starttls: bool,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IcmpModule {
    pub preferred_ip_protocol: Option<IpProtocol>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsModule {
    /// Required.
    #[serde(default)]
    pub query_name: String,
    /// Required by Vigil: blackbox's default, ANY, is not supported.
    #[serde(default)]
    pub query_type: String,
    /// Default `[NOERROR]`; Vigil checks one rcode.
    #[serde(default)]
    pub valid_rcodes: Vec<String>,
    pub validate_answer_rrs: Option<ValidateRrs>,
    pub preferred_ip_protocol: Option<IpProtocol>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateRrs {
    /// Vigil checks one regular expression, against each answer's data (not the whole RR).
    #[serde(default)]
    pub fail_if_not_matches_regexp: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrpcModule {
    #[serde(default)]
    pub service: String,
    #[serde(default)]
    pub tls: bool,
    pub tls_config: Option<TlsConfig>,
    pub preferred_ip_protocol: Option<IpProtocol>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// Read when the file is loaded.
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub server_name: Option<String>,
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    text.parse::<humantime::Duration>()
        .map(|d| Some(d.into()))
        .map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a duration ({e}); write it like 5s or 500ms"
            ))
        })
}

const DEFAULTS: &str = r#"
modules:
  http_2xx:
    prober: http
  http_post_2xx:
    prober: http
    http:
      method: POST
  tcp_connect:
    prober: tcp
  grpc:
    prober: grpc
    grpc:
      tls: true
  grpc_plain:
    prober: grpc
    grpc:
      tls: false
  icmp:
    prober: icmp
"#;

impl Modules {
    /// blackbox_exporter's example modules (those that need no per-site settings).
    pub fn defaults() -> Self {
        Self::parse(DEFAULTS, Path::new("<built-in>")).expect("built-in modules are valid")
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates a file's text; `path` names the file in messages. Relative
    /// `ca_file`, `cert_file` and `key_file` paths are read from the working directory.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let de = serde_yaml::Deserializer::from_str(text);
        let file: FileText = serde_path_to_error::deserialize(de).map_err(|e| {
            let at = e.path().to_string();
            let inner = e.into_inner().to_string();
            // serde_yaml starts its own message with the path too; keep one.
            let inner = match inner.split_once(": ") {
                Some((p, rest)) if p.starts_with("modules") && !p.contains(' ') => rest.to_owned(),
                _ => inner,
            };
            let mut parts = at.splitn(3, '.');
            let message = match (parts.next(), parts.next(), parts.next()) {
                (Some("modules"), Some(module), Some(field)) => {
                    format!("module {module:?}, field {field}: {inner}")
                }
                (Some("modules"), Some(module), None) => format!("module {module:?}: {inner}"),
                _ => inner,
            };
            ConfigError::Parse {
                path: path.to_owned(),
                message,
            }
        })?;
        let problems: Vec<String> = file
            .modules
            .iter()
            .flat_map(|(name, m)| {
                m.validate()
                    .into_iter()
                    .map(move |p| format!("module {name:?}, {p}"))
            })
            .collect();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            });
        }
        Ok(Self(file.modules))
    }

    pub fn get(&self, name: &str) -> Option<&Module> {
        self.0.get(name)
    }
}

impl Module {
    /// Every problem, as `field <path>: <what>` (the caller names the module).
    fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut bad = |field: &str, what: String| problems.push(format!("field {field}: {what}"));
        let sections = [
            ("http", self.http.is_some(), Prober::Http),
            ("tcp", self.tcp.is_some(), Prober::Tcp),
            ("icmp", self.icmp.is_some(), Prober::Icmp),
            ("dns", self.dns.is_some(), Prober::Dns),
            ("grpc", self.grpc.is_some(), Prober::Grpc),
        ];
        for (name, set, prober) in sections {
            if set && prober != self.prober {
                bad(
                    name,
                    format!(
                        "set, but prober is {}; remove it or change prober",
                        self.prober.name()
                    ),
                );
            }
        }
        if let Some(h) = &self.http {
            if h.fail_if_body_not_matches_regexp.len() > 1 {
                bad(
                    "http.fail_if_body_not_matches_regexp",
                    "Vigil checks one regular expression; combine them into one".into(),
                );
            }
            for re in &h.fail_if_body_not_matches_regexp {
                if let Err(e) = regex::Regex::new(re) {
                    bad(
                        "http.fail_if_body_not_matches_regexp",
                        regex_problem(re, &e),
                    );
                }
            }
            if !h.fail_if_body_matches_regexp.is_empty() {
                bad(
                    "http.fail_if_body_matches_regexp",
                    "not supported by Vigil; use fail_if_body_not_matches_regexp".into(),
                );
            }
            if let (Some(f), Some(n)) = (h.follow_redirects, h.no_follow_redirects)
                && f == n
            {
                bad(
                    "http.no_follow_redirects",
                    format!(
                        "{n} contradicts http.follow_redirects: {f}; keep only follow_redirects"
                    ),
                );
            }
            if let Some(method) = (!h.method.is_empty()).then_some(&h.method)
                && http::Method::from_bytes(method.as_bytes()).is_err()
            {
                bad("http.method", format!("{method:?} is not an HTTP method"));
            }
        }
        if let Some(t) = &self.tcp
            && let Err(e) = tcp_exchange(&t.query_response)
        {
            bad("tcp.query_response", e);
        }
        if self.prober == Prober::Dns {
            let d = self.dns.clone().unwrap_or_default();
            if d.query_name.trim().is_empty() {
                bad("dns.query_name", "must be set for a dns module".into());
            }
            if d.query_type.is_empty() {
                bad(
                    "dns.query_type",
                    "must be set: blackbox's default ANY is not supported; use A, AAAA, CNAME, MX, TXT, SRV or NS".into(),
                );
            }
            if d.valid_rcodes.len() > 1 {
                bad(
                    "dns.valid_rcodes",
                    "Vigil checks one rcode; list only one".into(),
                );
            }
            let answer_res = d
                .validate_answer_rrs
                .map(|v| v.fail_if_not_matches_regexp)
                .unwrap_or_default();
            if answer_res.len() > 1 {
                bad(
                    "dns.validate_answer_rrs.fail_if_not_matches_regexp",
                    "Vigil checks one regular expression; combine them into one".into(),
                );
            }
            for re in &answer_res {
                if let Err(e) = regex::Regex::new(re) {
                    bad(
                        "dns.validate_answer_rrs.fail_if_not_matches_regexp",
                        regex_problem(re, &e),
                    );
                }
            }
            // The probe itself checks the query name, type and rcode.
            if let Err(e) = crate::probe::dns::DnsProbe::new(&dns_spec(
                &self.dns.clone().unwrap_or_default(),
                "127.0.0.1",
            )) && !d.query_name.trim().is_empty()
                && !d.query_type.is_empty()
            {
                bad("dns", e);
            }
        }
        for (field, tls) in [
            (
                "http.tls_config",
                self.http.as_ref().and_then(|h| h.tls_config.as_ref()),
            ),
            (
                "tcp.tls_config",
                self.tcp.as_ref().and_then(|t| t.tls_config.as_ref()),
            ),
            (
                "grpc.tls_config",
                self.grpc.as_ref().and_then(|g| g.tls_config.as_ref()),
            ),
        ] {
            if let Some(tls) = tls
                && let Err(e) = tls.options()
            {
                bad(field, e);
            }
        }
        problems
    }

    /// The check this module runs against `target` (a `/probe?target=`). A target the prober
    /// cannot use makes the probe fail, as in blackbox, so this does not check it.
    pub fn check_spec(&self, module: &str, target: &str, timeout: Duration) -> CheckSpec {
        let probe = match self.prober {
            Prober::Http => {
                let h = self.http.clone().unwrap_or_default();
                let url = if target.starts_with("http://") || target.starts_with("https://") {
                    target.to_owned()
                } else {
                    format!("http://{target}")
                };
                check_spec::Probe::Http(vigil_proto::HttpProbe {
                    url,
                    method: h.method.clone(),
                    headers: h.headers.clone(),
                    body: h.body.clone().into_bytes(),
                    expect_status: h
                        .valid_status_codes
                        .iter()
                        .map(|&c| StatusRange {
                            from: c.into(),
                            to: c.into(),
                        })
                        .collect(),
                    body_matches: h
                        .fail_if_body_not_matches_regexp
                        .first()
                        .cloned()
                        .unwrap_or_default(),
                    max_body_bytes: MAX_BODY_BYTES,
                    follow_redirects: h
                        .follow_redirects
                        .unwrap_or(!h.no_follow_redirects.unwrap_or(false)),
                    tls: h.tls_config.as_ref().and_then(|t| t.options().ok()),
                    body_contains: String::new(),
                    ip_preference: match h.preferred_ip_protocol {
                        Some(IpProtocol::Ip4) => "ip4".into(),
                        Some(IpProtocol::Ip6) => "ip6".into(),
                        None => String::new(),
                    },
                })
            }
            Prober::Tcp => {
                let t = self.tcp.clone().unwrap_or_default();
                let (send, expect) = tcp_exchange(&t.query_response).unwrap_or_default();
                check_spec::Probe::Tcp(vigil_proto::TcpProbe {
                    address: target.to_owned(),
                    send,
                    expect,
                    tls: t.tls,
                    tls_options: t.tls_config.as_ref().and_then(|c| c.options().ok()),
                })
            }
            Prober::Icmp => check_spec::Probe::Icmp(vigil_proto::IcmpProbe {
                host: target.to_owned(),
                // blackbox sends one echo request.
                count: 1,
                max_loss_percent: 0,
            }),
            Prober::Dns => {
                check_spec::Probe::Dns(dns_spec(&self.dns.clone().unwrap_or_default(), target))
            }
            Prober::Grpc => {
                let g = self.grpc.clone().unwrap_or_default();
                let address = target
                    .strip_prefix("http://")
                    .or_else(|| target.strip_prefix("https://"))
                    .unwrap_or(target)
                    .trim_end_matches('/');
                check_spec::Probe::Grpc(vigil_proto::GrpcProbe {
                    address: address.to_owned(),
                    service: g.service.clone(),
                    tls: g.tls,
                    tls_options: g.tls_config.as_ref().and_then(|c| c.options().ok()),
                })
            }
        };
        let timeout_ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        CheckSpec {
            id: format!("blackbox/{module}"),
            target: target.to_owned(),
            interval_ms: timeout_ms.saturating_add(1),
            timeout_ms,
            probe: Some(probe),
            ..CheckSpec::default()
        }
    }

    /// The module's `preferred_ip_protocol` for probers whose probe resolves on its own with
    /// no preference (tcp, icmp, dns, grpc); the caller resolves the target first.
    pub fn pinned_protocol(&self) -> Option<IpProtocol> {
        match self.prober {
            Prober::Http => None,
            Prober::Tcp => self.tcp.as_ref()?.preferred_ip_protocol,
            Prober::Icmp => self.icmp.as_ref()?.preferred_ip_protocol,
            Prober::Dns => self.dns.as_ref()?.preferred_ip_protocol,
            Prober::Grpc => self.grpc.as_ref()?.preferred_ip_protocol,
        }
    }
}

/// Resolves the host of `spec`'s address with `protocol` and writes the IP back, keeping the
/// host name as the TLS server name. An IP literal is left alone.
pub async fn pin_address(spec: &mut CheckSpec, protocol: IpProtocol) -> Result<(), String> {
    let pref = match protocol {
        IpProtocol::Ip4 => crate::probe::IpPreference::V4,
        IpProtocol::Ip6 => crate::probe::IpPreference::V6,
    };
    let (address, tls): (&mut String, Option<&mut Option<TlsOptions>>) = match &mut spec.probe {
        Some(check_spec::Probe::Tcp(t)) => (&mut t.address, Some(&mut t.tls_options)),
        Some(check_spec::Probe::Grpc(g)) => (&mut g.address, Some(&mut g.tls_options)),
        Some(check_spec::Probe::Dns(d)) => (&mut d.server, None),
        Some(check_spec::Probe::Icmp(i)) => {
            if i.host.parse::<std::net::IpAddr>().is_err() {
                i.host = crate::probe::resolve(&i.host, 0, pref)
                    .await?
                    .ip()
                    .to_string();
            }
            return Ok(());
        }
        _ => return Ok(()),
    };
    let (host, port) = match address.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() && !h.ends_with(':') => {
            (h.to_owned(), p.to_owned())
        }
        // A dns target may be a bare host (port 53).
        _ => (address.clone(), "53".to_owned()),
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let ip = crate::probe::resolve(bare, 0, pref).await?.ip();
    *address = std::net::SocketAddr::new(ip, port.parse().unwrap_or(53)).to_string();
    if let Some(tls) = tls {
        let opts = tls.get_or_insert_with(TlsOptions::default);
        if opts.server_name.is_empty() {
            opts.server_name = bare.to_owned();
        }
    }
    Ok(())
}

fn dns_spec(d: &DnsModule, target: &str) -> vigil_proto::DnsProbe {
    vigil_proto::DnsProbe {
        name: d.query_name.clone(),
        server: target.to_owned(),
        record_type: d.query_type.clone(),
        expect_rcode: d.valid_rcodes.first().cloned().unwrap_or_default(),
        min_answers: 0,
        answers_match: d
            .validate_answer_rrs
            .as_ref()
            .and_then(|v| v.fail_if_not_matches_regexp.first().cloned())
            .unwrap_or_default(),
    }
}

/// A regex error on one line (regex's own message spans several).
fn regex_problem(re: &str, e: &regex::Error) -> String {
    let text = e.to_string();
    let cause = text
        .lines()
        .last()
        .unwrap_or(&text)
        .trim_start_matches("error: ");
    format!("{re:?} is not a valid regular expression: {cause}")
}

/// `query_response` as Vigil's one `send` then one `expect`.
fn tcp_exchange(steps: &[QueryResponse]) -> Result<(String, String), String> {
    if steps.iter().any(|s| s.starttls) {
        return Err("starttls is not supported by Vigil; use tls: true".into());
    }
    let shape = "Vigil runs at most one send followed by at most one expect, each in its own step";
    match steps {
        [] => Ok(Default::default()),
        [
            QueryResponse {
                expect: Some(e),
                send: None,
                ..
            },
        ] => Ok((String::new(), e.clone())),
        [
            QueryResponse {
                expect: None,
                send: Some(s),
                ..
            },
        ] => Ok((s.clone(), String::new())),
        [
            QueryResponse {
                expect: None,
                send: Some(s),
                ..
            },
            QueryResponse {
                expect: Some(e),
                send: None,
                ..
            },
        ] => Ok((s.clone(), e.clone())),
        _ => Err(shape.into()),
    }
}

impl TlsConfig {
    /// The wire TLS options, reading the CA and client files.
    fn options(&self) -> Result<TlsOptions, String> {
        let read = |field: &str, path: &Option<PathBuf>| -> Result<String, String> {
            match path {
                None => Ok(String::new()),
                Some(p) => std::fs::read_to_string(p).map_err(|e| {
                    format!(
                        "{field} {}: cannot read it: {}",
                        p.display(),
                        crate::probe::io_cause(&e)
                    )
                }),
            }
        };
        let options = TlsOptions {
            insecure_skip_verify: self.insecure_skip_verify,
            ca_pem: read("ca_file", &self.ca_file)?,
            server_name: self.server_name.clone().unwrap_or_default(),
            client_cert_pem: read("cert_file", &self.cert_file)?,
            client_key_pem: read("key_file", &self.key_file)?,
        };
        if options.client_cert_pem.is_empty() != options.client_key_pem.is_empty() {
            return Err("cert_file and key_file go together; set both or neither".into());
        }
        crate::probe::tls_client::client_config(Some(&options), &[])?;
        Ok(options)
    }
}

#[cfg(test)]
mod tests;
