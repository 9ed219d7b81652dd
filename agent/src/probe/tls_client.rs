//! rustls client configuration from a check's TLS options (built once per check).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use vigil_proto::TlsOptions;

/// Configs already built, by (encoded options, ALPN). A config with the built-in roots costs
/// tens of KiB, and thousands of checks usually share a handful of option sets.
/// (prost-encoded TlsOptions, ALPN protocols).
type ConfigKey = (Vec<u8>, Vec<Vec<u8>>);
static CONFIGS: Mutex<Option<HashMap<ConfigKey, Weak<ClientConfig>>>> = Mutex::new(None);

/// A client config for these options; `alpn` lists protocols to offer (e.g. `h2`,
/// `http/1.1`). Identical requests share one config while any probe still holds it.
pub fn client_config(
    opts: Option<&TlsOptions>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, String> {
    let key = (
        opts.map(prost::Message::encode_to_vec).unwrap_or_default(),
        alpn.iter().map(|p| p.to_vec()).collect::<Vec<_>>(),
    );
    let mut cache = CONFIGS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cache = cache.get_or_insert_with(HashMap::new);
    if let Some(config) = cache.get(&key).and_then(Weak::upgrade) {
        return Ok(config);
    }
    let config = build_config(opts, alpn)?;
    cache.retain(|_, weak| weak.strong_count() > 0);
    cache.insert(key, Arc::downgrade(&config));
    Ok(config)
}

fn build_config(opts: Option<&TlsOptions>, alpn: &[&[u8]]) -> Result<Arc<ClientConfig>, String> {
    let default = TlsOptions::default();
    let opts = opts.unwrap_or(&default);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let builder = if opts.insecure_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        if opts.ca_pem.is_empty() {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        } else {
            for cert in CertificateDer::pem_slice_iter(opts.ca_pem.as_bytes()) {
                let cert =
                    cert.map_err(|e| format!("caPem is not a PEM certificate bundle: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("caPem holds a certificate rustls refuses: {e}"))?;
            }
            if roots.is_empty() {
                return Err("caPem holds no certificate".into());
            }
        }
        builder.with_root_certificates(roots)
    };
    let mut config = if opts.client_cert_pem.is_empty() {
        builder.with_no_client_auth()
    } else {
        let chain = CertificateDer::pem_slice_iter(opts.client_cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("clientCertPem is not PEM: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(opts.client_key_pem.as_bytes())
            .map_err(|e| format!("clientKeyPem is not a PEM private key: {e}"))?;
        builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("client certificate refused: {e}"))?
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The name to send as SNI and verify: `serverName` if set, else the target's host.
pub fn server_name(opts: Option<&TlsOptions>, host: &str) -> Result<ServerName<'static>, String> {
    let name = opts
        .map(|o| o.server_name.as_str())
        .filter(|s| !s.is_empty())
        .unwrap_or(host);
    let name = name.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(name.to_owned())
        .map_err(|e| format!("{name:?} is not a valid TLS server name: {e}"))
}

/// `insecureSkipVerify: true`: signatures are still checked, the certificate's trust is not.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_options_share_one_config() {
        let a = client_config(None, &[b"h2"]).unwrap();
        let b = client_config(None, &[b"h2"]).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let c = client_config(None, &[]).unwrap();
        assert!(!Arc::ptr_eq(&a, &c), "different ALPN, different config");
        let insecure = TlsOptions {
            insecure_skip_verify: true,
            ..Default::default()
        };
        let d = client_config(Some(&insecure), &[b"h2"]).unwrap();
        assert!(!Arc::ptr_eq(&a, &d));
    }
}
