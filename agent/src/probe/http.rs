//! HTTP(S) probe: one request per attempt on a fresh connection, with phase timings
//! (dns, connect, tls, processing, transfer), status/body/redirect checks and a body byte limit.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use regex::Regex;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncWrite};
use url::Url;

use super::{Attempt, IpPreference, Probe, Verdict, connect, tls_client};

const MAX_REDIRECTS: usize = 10;
const DEFAULT_MAX_BODY_BYTES: u64 = 64 * 1024;

pub struct HttpProbe {
    url: Url,
    method: hyper::Method,
    headers: Vec<(hyper::header::HeaderName, hyper::header::HeaderValue)>,
    body: Bytes,
    expect: Vec<(u16, u16)>,
    body_matches: Option<Regex>,
    body_contains: Option<String>,
    max_body_bytes: u64,
    follow_redirects: bool,
    ip_preference: IpPreference,
    tls: Option<Arc<ClientConfig>>,
    tls_options: Option<vigil_proto::TlsOptions>,
}

impl HttpProbe {
    pub fn new(spec: &vigil_proto::HttpProbe) -> Result<Self, String> {
        let url =
            Url::parse(&spec.url).map_err(|e| format!("url {:?} is not valid: {e}", spec.url))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(format!(
                "url scheme {:?} is not http or https",
                url.scheme()
            ));
        }
        let method = if spec.method.is_empty() {
            "GET"
        } else {
            &spec.method
        };
        let method = hyper::Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("{method:?} is not an HTTP method"))?;
        let headers = spec
            .headers
            .iter()
            .map(|(k, v)| {
                let name = hyper::header::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| format!("{k:?} is not a header name"))?;
                let value = hyper::header::HeaderValue::from_str(v)
                    .map_err(|_| format!("header {k} has an invalid value"))?;
                Ok((name, value))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let body_matches = if spec.body_matches.is_empty() {
            None
        } else {
            Some(
                Regex::new(&spec.body_matches)
                    .map_err(|e| format!("bodyMatches is not a valid regular expression: {e}"))?,
            )
        };
        let tls = tls_client::client_config(spec.tls.as_ref(), &[b"h2", b"http/1.1"])?;
        Ok(Self {
            url,
            method,
            headers,
            body: Bytes::from(spec.body.clone()),
            expect: spec
                .expect_status
                .iter()
                .map(|r| (r.from as u16, r.to as u16))
                .collect(),
            body_matches,
            body_contains: (!spec.body_contains.is_empty()).then(|| spec.body_contains.clone()),
            max_body_bytes: if spec.max_body_bytes == 0 {
                DEFAULT_MAX_BODY_BYTES
            } else {
                spec.max_body_bytes
            },
            follow_redirects: spec.follow_redirects,
            ip_preference: match spec.ip_preference.as_str() {
                "ip4" => IpPreference::V4,
                "ip6" => IpPreference::V6,
                _ => IpPreference::Any,
            },
            tls: Some(tls),
            tls_options: spec.tls.clone(),
        })
    }

    fn status_ok(&self, status: u16) -> bool {
        if self.expect.is_empty() {
            (200..300).contains(&status)
        } else {
            self.expect
                .iter()
                .any(|&(lo, hi)| (lo..=hi).contains(&status))
        }
    }

    fn expected(&self) -> String {
        if self.expect.is_empty() {
            return "2xx".into();
        }
        let parts: Vec<String> = self
            .expect
            .iter()
            .map(|&(lo, hi)| {
                if lo == hi {
                    lo.to_string()
                } else {
                    format!("{lo}-{hi}")
                }
            })
            .collect();
        parts.join(", ")
    }

    async fn run_inner(&self, attempt: &Attempt) -> Verdict {
        let mut url = self.url.clone();
        let mut hops = 0;
        loop {
            let answer = match self.exchange(&url, attempt).await {
                Ok(answer) => answer,
                Err(verdict) => return verdict,
            };
            let status = answer.status;
            if self.follow_redirects
                && (300..400).contains(&status)
                && status != 304
                && let Some(location) = answer.location
            {
                hops += 1;
                if hops > MAX_REDIRECTS {
                    return Verdict::Failure(format!(
                        "more than {MAX_REDIRECTS} redirects (redirect loop?), last to {location}"
                    ));
                }
                url = match url.join(&location) {
                    Ok(next) => next,
                    Err(e) => {
                        return Verdict::Failure(format!(
                            "status {status} redirects to an invalid location {location:?}: {e}"
                        ));
                    }
                };
                attempt.detail("redirects", hops.to_string());
                attempt.detail("final_url", url.as_str());
                continue;
            }
            if !self.status_ok(status) {
                return Verdict::Failure(format!("status {status}, expected {}", self.expected()));
            }
            let text = String::from_utf8_lossy(&answer.body);
            if let Some(re) = &self.body_matches
                && !re.is_match(&text)
            {
                return Verdict::Failure(format!("body did not match {:?}", re.as_str()));
            }
            if let Some(needle) = &self.body_contains
                && !text.contains(needle.as_str())
            {
                return Verdict::Failure(format!("body did not contain {needle:?}"));
            }
            return Verdict::Success;
        }
    }

    /// One request/response on a fresh connection to `url`.
    async fn exchange(&self, url: &Url, attempt: &Attempt) -> Result<Answer, Verdict> {
        let host = url
            .host_str()
            .ok_or_else(|| Verdict::Error(format!("{url} has no host")))?
            .to_owned();
        let port = url.port_or_known_default().unwrap_or(80);
        let https = url.scheme() == "https";

        let (tcp, addr) = connect(&host, port, self.ip_preference, attempt).await?;

        if https {
            attempt.phase("TLS handshake");
            let t = Instant::now();
            let config = self
                .tls
                .clone()
                .ok_or_else(|| Verdict::Error("no TLS configuration".into()))?;
            let name = tls_client::server_name(self.tls_options.as_ref(), &host)
                .map_err(Verdict::Error)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| Verdict::Failure(format!("TLS handshake with {addr} failed: {e}")))?;
            attempt.value("phase_tls_seconds", t.elapsed().as_secs_f64());
            let (_, session) = tls.get_ref();
            let h2 = session.alpn_protocol() == Some(b"h2");
            if let Some(v) = session.protocol_version() {
                attempt.detail("tls_version", format!("{v:?}"));
            }
            if let Some(expiry) = session
                .peer_certificates()
                .and_then(super::tls::earliest_expiry)
            {
                attempt.value("ssl_earliest_cert_expiry", expiry as f64);
            }
            self.request(url, &host, tls, h2, attempt).await
        } else {
            self.request(url, &host, tcp, false, attempt).await
        }
    }

    async fn request<S>(
        &self,
        url: &Url,
        host: &str,
        io: S,
        h2: bool,
        attempt: &Attempt,
    ) -> Result<Answer, Verdict>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let mut builder = Request::builder().method(self.method.clone());
        builder = if h2 {
            builder
                .uri(format!("{}://{authority}{path}", url.scheme()))
                .version(hyper::Version::HTTP_2)
        } else {
            builder.uri(path).header(hyper::header::HOST, authority)
        };
        let mut has_agent = false;
        for (k, v) in &self.headers {
            has_agent |= k == hyper::header::USER_AGENT;
            builder = builder.header(k, v);
        }
        if !has_agent {
            builder = builder.header(
                hyper::header::USER_AGENT,
                concat!("vigil-agent/", env!("CARGO_PKG_VERSION")),
            );
        }
        let request = builder
            .body(Full::new(self.body.clone()))
            .map_err(|e| Verdict::Error(format!("cannot build the request: {e}")))?;

        attempt.phase("sending the request");
        let t = Instant::now();
        let io = TokioIo::new(io);
        let handshake_err =
            |e: hyper::Error| Verdict::Failure(format!("HTTP handshake failed: {e}"));
        // The connection is driven in this task beside the exchange (no task per probe).
        if h2 {
            let (mut sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(handshake_err)?;
            attempt.phase("waiting for the response headers");
            let response = sender.send_request(request);
            drive(conn, self.read_answer(response, attempt, t)).await
        } else {
            let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(handshake_err)?;
            attempt.phase("waiting for the response headers");
            let response = sender.send_request(request);
            drive(conn, self.read_answer(response, attempt, t)).await
        }
    }

    /// Waits for the response headers, then reads at most `maxBodyBytes` of the body.
    async fn read_answer(
        &self,
        response: impl Future<Output = Result<hyper::Response<hyper::body::Incoming>, hyper::Error>>,
        attempt: &Attempt,
        t: Instant,
    ) -> Result<Answer, Verdict> {
        let response = response.await;
        let response = response
            .map_err(|e| Verdict::Failure(format!("request failed: {}", hyper_cause(&e))))?;
        attempt.value("phase_processing_seconds", t.elapsed().as_secs_f64());
        let status = response.status().as_u16();
        attempt.detail("status_code", status.to_string());
        attempt.detail("http_version", format!("{:?}", response.version()));
        let location = response
            .headers()
            .get(hyper::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);

        attempt.phase("reading the body");
        let t = Instant::now();
        let mut body = response.into_body();
        let mut buf = Vec::new();
        let limit = usize::try_from(self.max_body_bytes).unwrap_or(usize::MAX);
        let mut truncated = false;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                Verdict::Failure(format!("reading the body failed: {}", hyper_cause(&e)))
            })?;
            if let Some(data) = frame.data_ref() {
                let room = limit - buf.len();
                if data.len() > room {
                    buf.extend_from_slice(&data[..room]);
                    truncated = true;
                    break; // read no more than the limit
                }
                buf.extend_from_slice(data);
            }
        }
        attempt.value("phase_transfer_seconds", t.elapsed().as_secs_f64());
        attempt.value("content_length", buf.len() as f64);
        if truncated {
            attempt.detail(
                "body_truncated",
                format!("read only the first {limit} bytes (maxBodyBytes)"),
            );
        }
        Ok(Answer {
            status,
            location,
            body: buf,
        })
    }
}

/// Polls the connection and the exchange together; once the connection has ended (closed by
/// the server, or failed) the exchange finishes with what was received or with the error.
async fn drive<C, E, T>(conn: C, exchange: E) -> Result<T, Verdict>
where
    C: Future<Output = Result<(), hyper::Error>>,
    E: Future<Output = Result<T, Verdict>>,
{
    tokio::pin!(conn);
    tokio::pin!(exchange);
    tokio::select! {
        biased;
        answer = &mut exchange => answer,
        _ = &mut conn => exchange.await,
    }
}

struct Answer {
    status: u16,
    location: Option<String>,
    body: Vec<u8>,
}

impl Probe for HttpProbe {
    fn run<'a>(&'a self, attempt: &'a Attempt) -> BoxFuture<'a, Verdict> {
        self.run_inner(attempt).boxed()
    }
}

fn hyper_cause(e: &hyper::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    text
}
