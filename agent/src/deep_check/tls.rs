//! The TLS chain one address presents: every certificate's subject, issuer and validity, read
//! with verification off so that an untrusted or expired chain is shown too (the check's own
//! run, per address, says whether it verifies).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vigil_proto::{DeepCheckFinding, Outcome, TlsOptions};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::Target;
use crate::probe::{io_cause, tls_client};

/// How long connecting and the handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to `ip` and lists the chain it presents for the target's server name.
pub async fn chain(ip: IpAddr, target: &Target, opts: &TlsOptions) -> DeepCheckFinding {
    let addr = SocketAddr::new(ip, target.port);
    let mut finding = DeepCheckFinding {
        section: format!("tls chain {addr}"),
        ..Default::default()
    };
    match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        handshake(addr, target, opts, &mut finding),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            finding.outcome = Outcome::Failure as i32;
            finding.summary = e;
        }
        Err(_) => {
            finding.outcome = Outcome::Timeout as i32;
            finding.summary = format!("no TLS handshake with {addr} within {HANDSHAKE_TIMEOUT:?}");
        }
    }
    finding
}

async fn handshake(
    addr: SocketAddr,
    target: &Target,
    opts: &TlsOptions,
    finding: &mut DeepCheckFinding,
) -> Result<(), String> {
    let insecure = TlsOptions {
        insecure_skip_verify: true,
        ..opts.clone()
    };
    let config = tls_client::client_config(Some(&insecure), &[])?;
    let name = tls_client::server_name(Some(opts), &target.host)?;
    let name_text = if opts.server_name.is_empty() {
        &target.host
    } else {
        &opts.server_name
    };
    finding
        .details
        .insert("server_name".into(), name_text.clone());
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect to {addr} failed: {}", io_cause(&e)))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::clone(&config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS handshake with {addr} failed: {e}"))?;
    let (_, session) = tls.get_ref();
    if let Some(v) = session.protocol_version() {
        finding
            .details
            .insert("tls_version".into(), format!("{v:?}"));
    }
    if let Some(suite) = session.negotiated_cipher_suite() {
        finding
            .details
            .insert("cipher_suite".into(), format!("{:?}", suite.suite()));
    }
    let certs = session.peer_certificates().unwrap_or_default();
    finding
        .values
        .insert("certificates".into(), certs.len() as f64);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let mut problems = Vec::new();
    let mut leaf = String::new();
    for (i, der) in certs.iter().enumerate() {
        let Ok((_, cert)) = X509Certificate::from_der(der) else {
            finding
                .details
                .insert(format!("cert_{i}_error"), "cannot be parsed".into());
            problems.push(format!("certificate {i} cannot be parsed"));
            continue;
        };
        let subject = cert.subject().to_string();
        let not_before = cert.validity().not_before.timestamp();
        let not_after = cert.validity().not_after.timestamp();
        let d = &mut finding.details;
        d.insert(format!("cert_{i}_subject"), subject.clone());
        d.insert(format!("cert_{i}_issuer"), cert.issuer().to_string());
        d.insert(format!("cert_{i}_not_before"), rfc3339(not_before));
        d.insert(format!("cert_{i}_not_after"), rfc3339(not_after));
        finding
            .values
            .insert(format!("cert_{i}_expiry_unix_seconds"), not_after as f64);
        if not_after <= now {
            problems.push(format!(
                "certificate {i} ({subject}) expired at {}",
                rfc3339(not_after)
            ));
        } else if not_before > now {
            problems.push(format!(
                "certificate {i} ({subject}) is not valid before {}",
                rfc3339(not_before)
            ));
        }
        if i == 0 {
            leaf = format!(
                "leaf {subject} issued by {}, valid until {}",
                cert.issuer(),
                rfc3339(not_after)
            );
        }
    }
    let count = format!(
        "{} certificate{}",
        certs.len(),
        if certs.len() == 1 { "" } else { "s" }
    );
    if problems.is_empty() {
        finding.outcome = Outcome::Success as i32;
        finding.summary = format!("{count}; {leaf}");
    } else {
        finding.outcome = Outcome::Failure as i32;
        finding.summary = format!("{count}; {}", problems.join("; "));
    }
    Ok(())
}

fn rfc3339(unix_seconds: i64) -> String {
    match u64::try_from(unix_seconds)
        .ok()
        .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)))
    {
        Some(t) => humantime::format_rfc3339_seconds(t).to_string(),
        None => format!("@{unix_seconds}"),
    }
}
