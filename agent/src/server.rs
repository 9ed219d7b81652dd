//! The agent's own HTTP endpoint: `/metrics`, `/healthz`, and `/probe`, which answers like
//! blackbox_exporter's (`?target=...&module=...[&debug=true]`).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use vigil_proto::{Outcome, ProbeResult};

use crate::blackbox::{self, Module, Modules, Prober};
use crate::metrics::Metrics;
use crate::scheduler::{self, Identity};

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Taken off the scrape timeout so the answer arrives before Prometheus gives up (blackbox's
/// `--timeout-offset` default).
const TIMEOUT_OFFSET_SECONDS: f64 = 0.5;
/// The scrape timeout assumed when Prometheus sends none (blackbox's).
const DEFAULT_SCRAPE_TIMEOUT_SECONDS: f64 = 120.0;

/// What `/probe` needs: the modules and who runs the probes.
pub struct ProbeContext {
    pub modules: Modules,
    pub identity: Identity,
}

pub fn router(metrics: Arc<Metrics>, probes: Arc<ProbeContext>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move || {
                let metrics = Arc::clone(&metrics);
                async move {
                    // Rendering thousands of series takes milliseconds: keep it off the runtime
                    // thread that runs the scheduler, or every scrape makes probes start late.
                    let text = tokio::task::spawn_blocking(move || metrics.render())
                        .await
                        .unwrap_or_default();
                    ([(header::CONTENT_TYPE, TEXT_FORMAT)], text).into_response()
                }
            }),
        )
        .route("/probe", get(probe).with_state(probes))
}

fn plain_error(status: StatusCode, text: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        text + "\n",
    )
        .into_response()
}

async fn probe(
    State(ctx): State<Arc<ProbeContext>>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let name = params
        .get("module")
        .filter(|m| !m.is_empty())
        .map_or("http_2xx", String::as_str);
    let Some(module) = ctx.modules.get(name) else {
        return plain_error(StatusCode::BAD_REQUEST, format!("Unknown module {name:?}"));
    };
    let timeout = match probe_timeout(&headers, module) {
        Ok(t) => t,
        Err(e) => {
            return plain_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Failed to parse timeout from Prometheus header: {e}"),
            );
        }
    };
    let Some(target) = params.get("target").filter(|t| !t.is_empty()) else {
        return plain_error(
            StatusCode::BAD_REQUEST,
            "Target parameter is missing".into(),
        );
    };
    let started = Instant::now();
    let mut spec = module.check_spec(name, target, timeout);
    let pinned = match module.pinned_protocol() {
        None => Ok(()),
        Some(p) => tokio::time::timeout(timeout, blackbox::pin_address(&mut spec, p))
            .await
            .unwrap_or_else(|_| Err(format!("resolving {target} timed out"))),
    };
    let built = pinned.and_then(|()| crate::probe::build(&spec));
    let result = scheduler::run_check(&spec, &built, &ctx.identity).await;
    let text = render(module.prober, &result, started.elapsed());
    if result.outcome() == Outcome::Success {
        tracing::debug!(module = name, %target, "probe succeeded");
    } else {
        tracing::debug!(module = name, %target, reason = %result.reason, "probe failed");
    }
    if params.get("debug").is_some_and(|d| d == "true") {
        let logs = format!(
            "module={name} target={target} timeout_seconds={} outcome={} attempt={}\nreason: {}\ndetails: {:?}\n",
            timeout.as_secs_f64(),
            result.outcome().as_str_name(),
            result.attempt,
            result.reason,
            result.details.iter().collect::<BTreeMap<_, _>>(),
        );
        let body = format!(
            "Logs for the probe:\n{logs}\n\n\nMetrics that would have been returned:\n{text}\n\n\nModule configuration:\n{module:#?}\n"
        );
        return ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response();
    }
    ([(header::CONTENT_TYPE, TEXT_FORMAT)], text).into_response()
}

/// blackbox's rule: the module's timeout, unless the scrape timeout (header, else 120 s) less
/// 0.5 s is shorter.
fn probe_timeout(headers: &HeaderMap, module: &Module) -> Result<Duration, String> {
    let mut scrape = match headers.get("X-Prometheus-Scrape-Timeout-Seconds") {
        None => 0.0,
        Some(v) => {
            let text = v.to_str().map_err(|e| e.to_string())?;
            text.trim()
                .parse::<f64>()
                .map_err(|e| format!("strconv.ParseFloat: parsing {text:?}: {e}"))?
        }
    };
    if scrape == 0.0 {
        scrape = DEFAULT_SCRAPE_TIMEOUT_SECONDS;
    }
    let max = scrape - TIMEOUT_OFFSET_SECONDS;
    let module_secs = module.timeout.map_or(0.0, |t| t.as_secs_f64());
    let secs = if (module_secs > 0.0 && module_secs < max) || max < 0.0 {
        module_secs
    } else {
        max
    };
    Ok(Duration::try_from_secs_f64(secs)
        .unwrap_or_default()
        .max(Duration::from_millis(1)))
}

/// Gauges in the Prometheus text format, sorted by name as blackbox's registry writes them.
#[derive(Default)]
struct Exposition(BTreeMap<&'static str, Family>);

/// A gauge's help text and its samples (labels as written between the braces, value).
type Family = (&'static str, Vec<(String, f64)>);

impl Exposition {
    fn gauge(&mut self, name: &'static str, help: &'static str, value: f64) {
        self.labeled(name, help, "", value);
    }

    /// `labels` as written between the braces, e.g. `phase="rtt"`.
    fn labeled(&mut self, name: &'static str, help: &'static str, labels: &str, value: f64) {
        let entry = self.0.entry(name).or_insert((help, Vec::new()));
        entry.1.push((labels.to_owned(), value));
    }

    fn text(mut self) -> String {
        let mut out = String::new();
        for (name, (help, samples)) in &mut self.0 {
            samples.sort_by(|a, b| a.0.cmp(&b.0));
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (labels, value) in samples.iter() {
                if labels.is_empty() {
                    let _ = writeln!(out, "{name} {value}");
                } else {
                    let _ = writeln!(out, "{name}{{{labels}}} {value}");
                }
            }
        }
        out
    }
}

/// blackbox's metrics for one probe, filled from what the probe recorded.
fn render(prober: Prober, r: &ProbeResult, took: Duration) -> String {
    let mut m = Exposition::default();
    let value = |k: &str| r.values.get(k).copied();
    let detail = |k: &str| r.details.get(k).map(String::as_str);
    let success = r.outcome() == Outcome::Success;
    m.gauge(
        "probe_success",
        "Displays whether or not the probe was a success",
        f64::from(u8::from(success)),
    );
    m.gauge(
        "probe_duration_seconds",
        "Returns how long the probe took to complete in seconds",
        took.as_secs_f64(),
    );
    let resolve = value("phase_resolve_seconds").unwrap_or(0.0);
    m.gauge(
        "probe_dns_lookup_time_seconds",
        "Returns the time taken for probe dns lookup in seconds",
        resolve,
    );
    let ip = detail("resolved_ip")
        .and_then(|s| s.parse::<std::net::IpAddr>().ok())
        .or_else(|| {
            detail("server")
                .and_then(|s| s.parse::<std::net::SocketAddr>().ok())
                .map(|a| a.ip())
        });
    if let Some(ip) = ip {
        m.gauge(
            "probe_ip_protocol",
            "Specifies whether probe ip protocol is IP4 or IP6",
            if ip.is_ipv4() { 4.0 } else { 6.0 },
        );
        m.gauge(
            "probe_ip_addr_hash",
            "Specifies the hash of IP address. It's useful to detect if the IP address changes.",
            f64::from(ip_hash(ip)),
        );
    }
    // blackbox's gRPC prober always writes it, 0 without TLS; the others only after a handshake.
    // (Vigil's gRPC probe records no expiry, so over TLS it is left out rather than 0.)
    let plain_grpc = prober == Prober::Grpc && !r.details.contains_key("tls_version");
    let expiry = value("ssl_earliest_cert_expiry").or(plain_grpc.then_some(0.0));
    if let Some(expiry) = expiry {
        m.gauge(
            "probe_ssl_earliest_cert_expiry",
            "Returns last SSL chain expiry in unixtime",
            expiry,
        );
    }
    if let Some(v) = detail("tls_version") {
        let version = v.replace("TLSv1_", "TLS 1.");
        m.labeled(
            "probe_tls_version_info",
            "Returns the TLS version used or NaN when unknown",
            &format!("version={version:?}"),
            1.0,
        );
    }
    let regex_failure =
        !success && (r.reason.contains("did not match") || r.reason.contains("line matched"));
    match prober {
        Prober::Http => http_metrics(&mut m, r, regex_failure),
        Prober::Tcp => m.gauge(
            "probe_failed_due_to_regex",
            "Indicates if probe failed due to regex",
            f64::from(u8::from(regex_failure)),
        ),
        Prober::Icmp => {
            let help = "Duration of icmp request by phase";
            m.labeled(
                "probe_icmp_duration_seconds",
                help,
                "phase=\"resolve\"",
                resolve,
            );
            m.labeled(
                "probe_icmp_duration_seconds",
                help,
                "phase=\"rtt\"",
                value("icmp_rtt_max_seconds").unwrap_or(0.0),
            );
        }
        Prober::Dns => dns_metrics(&mut m, r, resolve),
        Prober::Grpc => grpc_metrics(&mut m, r),
    }
    m.text()
}

fn http_metrics(m: &mut Exposition, r: &ProbeResult, regex_failure: bool) {
    let value = |k: &str| r.values.get(k).copied().unwrap_or(0.0);
    let detail = |k: &str| r.details.get(k).map(String::as_str);
    m.gauge(
        "probe_failed_due_to_regex",
        "Indicates if probe failed due to regex",
        f64::from(u8::from(regex_failure)),
    );
    let help = "Duration of http request by phase, summed over all redirects";
    for phase in ["resolve", "connect", "tls", "processing", "transfer"] {
        let v = value(&format!("phase_{phase}_seconds"));
        m.labeled(
            "probe_http_duration_seconds",
            help,
            &format!("phase=\"{phase}\""),
            v,
        );
    }
    let length = value("content_length");
    m.gauge(
        "probe_http_content_length",
        "Length of http content response",
        length,
    );
    m.gauge(
        "probe_http_uncompressed_body_length",
        "Length of uncompressed response body",
        length,
    );
    m.gauge(
        "probe_http_redirects",
        "The number of redirects",
        detail("redirects")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
    );
    let answered = detail("status_code").is_some();
    let final_url = detail("final_url").unwrap_or(&r.target);
    m.gauge(
        "probe_http_ssl",
        "Indicates if SSL was used for the final redirect",
        f64::from(u8::from(answered && final_url.starts_with("https://"))),
    );
    m.gauge(
        "probe_http_status_code",
        "Response HTTP status code",
        detail("status_code")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0),
    );
    let version = match detail("http_version") {
        Some("HTTP/0.9") => 0.9,
        Some("HTTP/1.0") => 1.0,
        Some("HTTP/1.1") => 1.1,
        Some("HTTP/2.0") => 2.0,
        Some("HTTP/3.0") => 3.0,
        _ => 0.0,
    };
    m.gauge(
        "probe_http_version",
        "Returns the version of HTTP of the probe response",
        version,
    );
}

fn dns_metrics(m: &mut Exposition, r: &ProbeResult, resolve: f64) {
    let value = |k: &str| r.values.get(k).copied().unwrap_or(0.0);
    m.gauge(
        "probe_dns_answer_rrs",
        "Returns number of entries in the answer resource record list",
        value("dns_answer_rrs"),
    );
    m.gauge(
        "probe_dns_authority_rrs",
        "Returns number of entries in the authority resource record list",
        value("dns_authority_rrs"),
    );
    m.gauge(
        "probe_dns_additional_rrs",
        "Returns number of entries in the additional resource record list",
        value("dns_additional_rrs"),
    );
    let help = "Duration of DNS request by phase";
    m.labeled(
        "probe_dns_duration_seconds",
        help,
        "phase=\"resolve\"",
        resolve,
    );
    m.labeled(
        "probe_dns_duration_seconds",
        help,
        "phase=\"request\"",
        value("phase_query_seconds"),
    );
    m.gauge(
        "probe_dns_query_succeeded",
        "Displays whether or not the query was executed successfully",
        f64::from(u8::from(r.details.contains_key("rcode"))),
    );
}

/// gRPC status codes by tonic's `Code` debug name.
const GRPC_CODES: &[&str] = &[
    "Ok",
    "Cancelled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

fn grpc_metrics(m: &mut Exposition, r: &ProbeResult) {
    let value = |k: &str| r.values.get(k).copied().unwrap_or(0.0);
    let serving = r.details.get("grpc_status").map(String::as_str);
    // A health answer means the call succeeded; a gRPC error is named in the reason; a
    // connection that never carried the call is UNAVAILABLE, as grpc-go reports it.
    let code = if serving.is_some() {
        0
    } else if r.outcome() == Outcome::Timeout {
        4
    } else {
        r.reason
            .strip_prefix("health check failed: ")
            .and_then(|rest| {
                let word = rest.split(':').next().unwrap_or(rest);
                GRPC_CODES.iter().position(|c| *c == word)
            })
            .unwrap_or(14)
    };
    m.gauge(
        "probe_grpc_status_code",
        "Response gRPC status code",
        code as f64,
    );
    let help = "Response HealthCheck response";
    for status in ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"] {
        m.labeled(
            "probe_grpc_healthcheck_response",
            help,
            &format!("serving_status=\"{status}\""),
            f64::from(u8::from(serving == Some(status))),
        );
    }
    m.gauge(
        "probe_grpc_ssl",
        "Indicates if SSL was used for the connection",
        f64::from(u8::from(r.details.contains_key("tls_version"))),
    );
    let help = "Duration of gRPC request by phase";
    for phase in ["resolve", "connect", "tls"] {
        let v = value(&format!("phase_{phase}_seconds"));
        m.labeled(
            "probe_grpc_duration_seconds",
            help,
            &format!("phase=\"{phase}\""),
            v,
        );
    }
}

/// blackbox's `probe_ip_addr_hash`: FNV-1a (32 bit) of the address bytes.
fn ip_hash(ip: std::net::IpAddr) -> u32 {
    let bytes = match ip {
        std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
        std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    bytes.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_hash_matches_blackbox() {
        // blackbox_exporter 0.23 reports 3.668918509e+09 for 127.0.0.1.
        assert_eq!(ip_hash("127.0.0.1".parse().unwrap()), 3_668_918_509);
    }

    #[test]
    fn timeout_follows_blackbox() {
        let module = |t: Option<u64>| Module {
            timeout: t.map(Duration::from_secs),
            ..Modules::defaults().get("tcp_connect").unwrap().clone()
        };
        let mut headers = HeaderMap::new();
        assert_eq!(
            probe_timeout(&headers, &module(None)).unwrap(),
            Duration::from_millis(119_500)
        );
        assert_eq!(
            probe_timeout(&headers, &module(Some(5))).unwrap(),
            Duration::from_secs(5)
        );
        headers.insert("X-Prometheus-Scrape-Timeout-Seconds", "3".parse().unwrap());
        assert_eq!(
            probe_timeout(&headers, &module(Some(5))).unwrap(),
            Duration::from_millis(2500)
        );
        headers.insert("X-Prometheus-Scrape-Timeout-Seconds", "x".parse().unwrap());
        assert!(probe_timeout(&headers, &module(Some(5))).is_err());
    }
}
