//! rustls client configuration from a check's TLS options (built once per check).

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use vigil_proto::TlsOptions;

/// Builds a client config; `alpn` lists protocols to offer (e.g. `h2`, `http/1.1`).
pub fn client_config(
    opts: Option<&TlsOptions>,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, String> {
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
