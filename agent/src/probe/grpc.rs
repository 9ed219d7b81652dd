//! gRPC probe: `grpc.health.v1.Health/Check` on a fresh HTTP/2 connection per attempt,
//! plaintext (prior knowledge) or TLS with ALPN `h2`. SERVING is a success; any other serving
//! status or a gRPC error status is a failure that names it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::FutureExt;
use futures::future::BoxFuture;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::{Attempt, IpPreference, Probe, Verdict, connect, tls_client};

pub struct GrpcProbe {
    host: String,
    port: u16,
    service: String,
    origin: http::Uri,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

impl GrpcProbe {
    pub fn new(spec: &vigil_proto::GrpcProbe) -> Result<Self, String> {
        let (host, port) = spec
            .address
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| format!("address {:?} is not host:port", spec.address))?;
        let tls = if spec.tls {
            Some((
                tls_client::client_config(spec.tls_options.as_ref(), &[b"h2"])?,
                tls_client::server_name(spec.tls_options.as_ref(), &host)?,
            ))
        } else {
            None
        };
        let scheme = if spec.tls { "https" } else { "http" };
        let origin = format!("{scheme}://{host}:{port}")
            .parse::<http::Uri>()
            .map_err(|e| format!("address {:?} is not host:port: {e}", spec.address))?;
        Ok(Self {
            host,
            port,
            service: spec.service.clone(),
            origin,
            tls,
        })
    }

    fn what(&self) -> String {
        if self.service.is_empty() {
            "the server".to_owned()
        } else {
            format!("service {:?}", self.service)
        }
    }

    async fn run_inner(&self, attempt: &Attempt) -> Verdict {
        let (tcp, addr) = match connect(&self.host, self.port, IpPreference::Any, attempt).await {
            Ok(c) => c,
            Err(verdict) => return verdict,
        };
        match &self.tls {
            None => self.check(tcp, attempt).await,
            Some((config, name)) => {
                attempt.phase("TLS handshake");
                let t = Instant::now();
                match tokio_rustls::TlsConnector::from(Arc::clone(config))
                    .connect(name.clone(), tcp)
                    .await
                {
                    Ok(tls) => {
                        attempt.value("phase_tls_seconds", t.elapsed().as_secs_f64());
                        let (_, session) = tls.get_ref();
                        if let Some(v) = session.protocol_version() {
                            attempt.detail("tls_version", format!("{v:?}"));
                        }
                        if session.alpn_protocol() != Some(b"h2") {
                            return Verdict::Failure(format!(
                                "TLS server at {addr} did not agree to HTTP/2 (ALPN h2); \
                                 it does not serve gRPC"
                            ));
                        }
                        self.check(tls, attempt).await
                    }
                    Err(e) => Verdict::Failure(format!("TLS handshake with {addr} failed: {e}")),
                }
            }
        }
    }

    /// One Health/Check call over an HTTP/2 connection on `io`.
    async fn check<S>(&self, io: S, attempt: &Attempt) -> Verdict
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        attempt.phase("HTTP/2 handshake");
        let (sender, conn) =
            match hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
            {
                Ok(pair) => pair,
                Err(e) => {
                    return Verdict::Failure(format!(
                        "HTTP/2 handshake failed: {}",
                        error_chain(&e)
                    ));
                }
            };
        // The connection task ends with the attempt, also when the scheduler drops it on timeout.
        let _conn = AbortOnDrop(tokio::spawn(conn));
        attempt.phase("waiting for the health answer");
        let mut client = HealthClient::with_origin(H2(sender), self.origin.clone());
        let response = client
            .check(HealthCheckRequest {
                service: self.service.clone(),
            })
            .await;
        let status = match response {
            Ok(r) => r.into_inner().status,
            Err(s) => return Verdict::Failure(format!("health check failed: {}", status_text(&s))),
        };
        let name = ServingStatus::try_from(status)
            .map(|s| s.as_str_name().to_owned())
            .unwrap_or_else(|_| format!("status {status}"));
        attempt.detail("grpc_status", name.clone());
        if status == ServingStatus::Serving as i32 {
            Verdict::Success
        } else {
            Verdict::Failure(format!("{} is {name}", self.what()))
        }
    }
}

impl Probe for GrpcProbe {
    fn run<'a>(&'a self, attempt: &'a Attempt) -> BoxFuture<'a, Verdict> {
        self.run_inner(attempt).boxed()
    }
}

/// A gRPC status as `Code: message`, with the transport cause when there is one.
fn status_text(s: &tonic::Status) -> String {
    let mut text = format!("{:?}", s.code());
    if !s.message().is_empty() {
        text = format!("{text}: {}", s.message());
    }
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        let part = e.to_string();
        if !text.ends_with(&part) {
            text = format!("{text}: {part}");
        }
        source = e.source();
    }
    text
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// hyper's HTTP/2 sender as the tower service tonic's client expects.
struct H2(SendRequest<tonic::body::Body>);

impl tonic::codegen::Service<http::Request<tonic::body::Body>> for H2 {
    type Response = http::Response<hyper::body::Incoming>;
    type Error = hyper::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}
