//! TCP probe: connect, optionally TLS, optionally send a line and expect a matching line back
//! (like blackbox_exporter's query_response), reading at most 64 KiB.

use std::sync::Arc;
use std::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;
use regex::Regex;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{Attempt, IpPreference, Probe, Verdict, connect, io_cause, tls_client};

/// Bytes read while waiting for the expected line before giving up.
const MAX_READ_BYTES: usize = 64 * 1024;

pub struct TcpProbe {
    host: String,
    port: u16,
    send: Vec<u8>,
    expect: Option<Regex>,
    tls: Option<(Arc<ClientConfig>, Option<vigil_proto::TlsOptions>)>,
}

impl TcpProbe {
    pub fn new(spec: &vigil_proto::TcpProbe) -> Result<Self, String> {
        let (host, port) = spec
            .address
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| format!("address {:?} is not host:port", spec.address))?;
        let expect = if spec.expect.is_empty() {
            None
        } else {
            Some(
                Regex::new(&spec.expect)
                    .map_err(|e| format!("expect is not a valid regular expression: {e}"))?,
            )
        };
        let tls = if spec.tls {
            Some((
                tls_client::client_config(spec.tls_options.as_ref(), &[])?,
                spec.tls_options.clone(),
            ))
        } else {
            None
        };
        let mut send = spec.send.clone().into_bytes();
        if !send.is_empty() && !send.ends_with(b"\n") {
            send.push(b'\n');
        }
        Ok(Self {
            host,
            port,
            send,
            expect,
            tls,
        })
    }

    async fn run_inner(&self, attempt: &Attempt) -> Verdict {
        let (tcp, addr) = match connect(&self.host, self.port, IpPreference::Any, attempt).await {
            Ok(c) => c,
            Err(verdict) => return verdict,
        };
        match &self.tls {
            None => self.exchange(tcp, attempt).await,
            Some((config, opts)) => {
                attempt.phase("TLS handshake");
                let t = Instant::now();
                let name = match tls_client::server_name(opts.as_ref(), &self.host) {
                    Ok(n) => n,
                    Err(e) => return Verdict::Error(e),
                };
                match tokio_rustls::TlsConnector::from(Arc::clone(config))
                    .connect(name, tcp)
                    .await
                {
                    Ok(tls) => {
                        attempt.value("phase_tls_seconds", t.elapsed().as_secs_f64());
                        self.exchange(tls, attempt).await
                    }
                    Err(e) => Verdict::Failure(format!("TLS handshake with {addr} failed: {e}")),
                }
            }
        }
    }

    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut io: S,
        attempt: &Attempt,
    ) -> Verdict {
        if !self.send.is_empty() {
            attempt.phase("sending");
            if let Err(e) = io.write_all(&self.send).await {
                return Verdict::Failure(format!("sending failed: {}", io_cause(&e)));
            }
        }
        let Some(expect) = &self.expect else {
            return Verdict::Success;
        };
        attempt.phase("waiting for the expected line");
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 4096];
        let mut scanned = 0;
        loop {
            // Check every complete line received so far.
            while let Some(nl) = buf[scanned..].iter().position(|&b| b == b'\n') {
                let line = String::from_utf8_lossy(&buf[scanned..scanned + nl]);
                if expect.is_match(line.trim_end_matches('\r')) {
                    return Verdict::Success;
                }
                scanned += nl + 1;
            }
            if buf.len() >= MAX_READ_BYTES {
                return Verdict::Failure(format!(
                    "no line matched {:?} in the first {MAX_READ_BYTES} bytes",
                    expect.as_str()
                ));
            }
            match io.read(&mut chunk).await {
                Ok(0) => {
                    let rest = String::from_utf8_lossy(&buf[scanned..]);
                    if !rest.is_empty() && expect.is_match(&rest) {
                        return Verdict::Success;
                    }
                    return Verdict::Failure(format!(
                        "connection closed before a line matched {:?} (received {} bytes)",
                        expect.as_str(),
                        buf.len()
                    ));
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n.min(MAX_READ_BYTES - buf.len())]),
                Err(e) => return Verdict::Failure(format!("reading failed: {}", io_cause(&e))),
            }
        }
    }
}

impl Probe for TcpProbe {
    fn run<'a>(&'a self, attempt: &'a Attempt) -> BoxFuture<'a, Verdict> {
        self.run_inner(attempt).boxed()
    }
}
