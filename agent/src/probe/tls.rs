//! TLS probe: connect and complete a TLS handshake (chain and host name verified unless
//! insecureSkipVerify), then check the leaf certificate stays valid for at least minValidity.
//! Records the certificate's subject, issuer and expiry, and `ssl_earliest_cert_expiry` (the
//! earliest notAfter across the presented chain, as blackbox_exporter does).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use futures::future::BoxFuture;
use rustls::ClientConfig;
use rustls::pki_types::{CertificateDer, ServerName};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{Attempt, IpPreference, Probe, Verdict, connect, tls_client};

pub struct TlsProbe {
    host: String,
    port: u16,
    /// The name sent as SNI and verified, as text for reasons.
    name_text: String,
    name: ServerName<'static>,
    min_validity: Duration,
    config: Arc<ClientConfig>,
}

impl TlsProbe {
    pub fn new(spec: &vigil_proto::TlsProbe) -> Result<Self, String> {
        let (host, port) = spec
            .address
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| format!("address {:?} is not host:port", spec.address))?;
        let opts = spec.tls_options.as_ref();
        // serverName on the probe wins over tlsOptions.serverName, which wins over the host.
        let name_text = [
            spec.server_name.as_str(),
            opts.map(|o| o.server_name.as_str()).unwrap_or(""),
            host.as_str(),
        ]
        .into_iter()
        .find(|s| !s.is_empty())
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
        let name = tls_client::server_name(None, &name_text)?;
        Ok(Self {
            host,
            port,
            name_text,
            name,
            min_validity: Duration::from_millis(spec.min_validity_ms),
            config: tls_client::client_config(opts, &[])?,
        })
    }

    async fn run_inner(&self, attempt: &Attempt) -> Verdict {
        let (tcp, addr) = match connect(&self.host, self.port, IpPreference::Any, attempt).await {
            Ok(c) => c,
            Err(verdict) => return verdict,
        };

        attempt.phase("TLS handshake");
        let t = Instant::now();
        let tls = match tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
            .connect(self.name.clone(), tcp)
            .await
        {
            Ok(tls) => tls,
            Err(e) => return Verdict::Failure(format!("TLS handshake with {addr} failed: {e}")),
        };
        attempt.value("phase_tls_seconds", t.elapsed().as_secs_f64());
        let (_, session) = tls.get_ref();
        if let Some(v) = session.protocol_version() {
            attempt.detail("tls_version", format!("{v:?}"));
        }
        let certs = session.peer_certificates().unwrap_or_default();
        if let Some(earliest) = earliest_expiry(certs) {
            attempt.value("ssl_earliest_cert_expiry", earliest as f64);
        }
        let Some(leaf) = certs.first() else {
            return Verdict::Failure(format!("{addr} presented no certificate"));
        };
        let cert = match X509Certificate::from_der(leaf) {
            Ok((_, cert)) => cert,
            Err(e) => {
                return Verdict::Failure(format!(
                    "the certificate {addr} presented cannot be parsed: {e}"
                ));
            }
        };
        attempt.detail("subject", cert.subject().to_string());
        attempt.detail("issuer", cert.issuer().to_string());
        let not_after = cert.validity().not_after.timestamp();
        attempt.detail("cert_not_after", rfc3339(not_after));

        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        let left = not_after as f64 - now;
        if left <= 0.0 {
            return Verdict::Failure(format!(
                "certificate for {} expired {} ago (notAfter {})",
                self.name_text,
                human(Duration::from_secs_f64(-left)),
                rfc3339(not_after)
            ));
        }
        let left = Duration::from_secs_f64(left);
        if left < self.min_validity {
            return Verdict::Failure(format!(
                "certificate for {} expires in {}, less than minValidity {} (notAfter {})",
                self.name_text,
                human(left),
                human(self.min_validity),
                rfc3339(not_after)
            ));
        }
        Verdict::Success
    }
}

impl Probe for TlsProbe {
    fn run<'a>(&'a self, attempt: &'a Attempt) -> BoxFuture<'a, Verdict> {
        self.run_inner(attempt).boxed()
    }
}

/// The earliest notAfter (Unix seconds) across `certs`, skipping any that cannot be parsed;
/// `None` when none can.
pub fn earliest_expiry(certs: &[CertificateDer]) -> Option<i64> {
    certs
        .iter()
        .filter_map(|der| X509Certificate::from_der(der).ok())
        .map(|(_, cert)| cert.validity().not_after.timestamp())
        .min()
}

fn rfc3339(unix_seconds: i64) -> String {
    let t = if unix_seconds >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(unix_seconds.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(unix_seconds.unsigned_abs()))
    };
    match t {
        Some(t) => humantime::format_rfc3339_seconds(t).to_string(),
        None => format!("@{unix_seconds}"),
    }
}

/// A duration in its two largest units: `2d 3h`, `5h 10m`, `45s`, `0s`.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    let units = [
        (secs / 86_400, "d"),
        (secs / 3600 % 24, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
    ];
    let parts: Vec<String> = units
        .iter()
        .skip_while(|(n, _)| *n == 0)
        .take(2)
        .filter(|(n, _)| *n != 0)
        .map(|(n, u)| format!("{n}{u}"))
        .collect();
    if parts.is_empty() {
        if d.as_millis() > 0 {
            format!("{}ms", d.as_millis())
        } else {
            "0s".to_owned()
        }
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations_use_two_units() {
        assert_eq!(human(Duration::from_secs(3 * 86_400)), "3d");
        assert_eq!(
            human(Duration::from_secs(2 * 86_400 + 3 * 3600 + 59)),
            "2d 3h"
        );
        assert_eq!(human(Duration::from_secs(3600 + 30 * 60)), "1h 30m");
        assert_eq!(human(Duration::from_secs(45)), "45s");
        assert_eq!(human(Duration::from_millis(250)), "250ms");
        assert_eq!(human(Duration::ZERO), "0s");
    }

    #[test]
    fn rfc3339_of_unix_seconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
