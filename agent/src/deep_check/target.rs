//! Where a check's probe goes: host, port, and the TLS it speaks, from its CheckSpec.

use vigil_proto::{CheckSpec, TlsOptions, check_spec};

/// The host and port a check's probe connects to.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// A name or an IP literal (IPv6 without brackets).
    pub host: String,
    /// 0 where the probe has no port (ICMP).
    pub port: u16,
    /// The TLS options when the probe speaks TLS.
    pub tls: Option<TlsOptions>,
    /// Whether the probe connects through [`crate::probe::connect`], so that it can be run
    /// against each address on its own.
    pub pinnable: bool,
    /// For DNS probes: the name asked about (the host is then the DNS server, if any).
    pub dns_name: Option<String>,
}

/// The target of `spec`, or why it has none.
pub fn of(spec: &CheckSpec) -> Result<Target, String> {
    let target = |host: &str, port: u16, tls: Option<TlsOptions>| Target {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port,
        tls,
        pinnable: true,
        dns_name: None,
    };
    match &spec.probe {
        Some(check_spec::Probe::Http(p)) => {
            let url = url::Url::parse(&p.url)
                .map_err(|e| format!("url {:?} is not valid: {e}", p.url))?;
            let host = url
                .host_str()
                .ok_or_else(|| format!("url {:?} has no host", p.url))?;
            let tls = (url.scheme() == "https").then(|| p.tls.clone().unwrap_or_default());
            Ok(target(host, url.port_or_known_default().unwrap_or(80), tls))
        }
        Some(check_spec::Probe::Tcp(p)) => {
            let (host, port) = host_port(&p.address)?;
            let tls = p.tls.then(|| p.tls_options.clone().unwrap_or_default());
            Ok(target(host, port, tls))
        }
        Some(check_spec::Probe::Grpc(p)) => {
            let (host, port) = host_port(&p.address)?;
            let tls = p.tls.then(|| p.tls_options.clone().unwrap_or_default());
            Ok(target(host, port, tls))
        }
        Some(check_spec::Probe::Tls(p)) => {
            let (host, port) = host_port(&p.address)?;
            let mut tls = p.tls_options.clone().unwrap_or_default();
            if !p.server_name.is_empty() {
                tls.server_name = p.server_name.clone();
            }
            Ok(target(host, port, Some(tls)))
        }
        Some(check_spec::Probe::Icmp(p)) => Ok(Target {
            pinnable: false,
            ..target(&p.host, 0, None)
        }),
        Some(check_spec::Probe::Dns(p)) => {
            let (host, port) = if p.server.trim().is_empty() {
                (String::new(), 53)
            } else {
                match host_port(p.server.trim()) {
                    Ok((h, port)) => (h.to_owned(), port),
                    Err(_) => (p.server.trim().to_owned(), 53),
                }
            };
            Ok(Target {
                pinnable: false,
                dns_name: Some(p.name.trim().to_owned()),
                ..target(&host, port, None)
            })
        }
        None => Err("the check has no probe".to_owned()),
    }
}

fn host_port(address: &str) -> Result<(&str, u16), String> {
    address
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .filter(|(h, _)| !h.is_empty())
        .ok_or_else(|| format!("address {address:?} is not host:port"))
}
