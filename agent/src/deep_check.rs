//! `vigil-agent deep-check`: claims one failing check from the federator (`ClaimDeepCheck`),
//! examines it in isolation with extended diagnostics, reports the findings
//! (`ReportDeepCheck`) and exits. Run by the pods of a KEDA ScaledJob while checks fail.
//!
//! What it looks at, each as one finding: the check run once as configured (with retries and
//! timeout); the DNS answers for the target's host with their TTLs and the resolver asked
//! ([`dns`]); the check run against every resolved address separately with a longer timeout,
//! with its phase timings ([`crate::probe::Attempt::pinned_to`]); the TLS chain each address
//! presents ([`tls`]); and the hops towards each address by TTL probing ([`trace`]), which
//! needs a raw ICMP socket and says so when it cannot have one. Nothing here fails the command:
//! a diagnostic that cannot be carried out is a finding too. Only talking to the federator can
//! fail.

mod dns;
mod target;
mod tls;
mod trace;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tonic::transport::Endpoint;
use vigil_proto::{
    CheckSpec, ClaimDeepCheckRequest, DeepCheckFinding, DeepCheckReport, Outcome,
    federator_client::FederatorClient,
};

use crate::probe::{self, Attempt, Verdict};
use crate::scheduler::{self, Identity, now_unix_nanos};

pub use target::Target;

/// Addresses examined one by one at most (a name with more gets the first ones).
pub const MAX_ADDRESSES: usize = 8;
/// Addresses traced at most.
const MAX_TRACED: usize = 2;

/// What `deep-check` is told on the command line.
#[derive(Clone, Debug)]
pub struct Options {
    /// The federator's gRPC URL.
    pub federator: String,
    /// Who claims (the pod name).
    pub claimer: String,
    /// The node this pod runs on.
    pub node: String,
    /// Which failing checks to take (the KEDA trigger's scalerMetadata keys).
    pub selector: HashMap<String, String>,
    /// The DNS server to ask for the detail; `None` = the first nameserver of /etc/resolv.conf.
    pub resolver: Option<SocketAddr>,
    /// TTL probing goes up to this many hops; 0 = no TTL probing.
    pub max_hops: u8,
    /// How long to wait for each hop's answer.
    pub hop_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum DeepCheckError {
    #[error(
        "federator URL {url:?} is not valid: {source}; write it like http://vigil-federator.vigil.svc:7443"
    )]
    Url {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("cannot connect to the federator at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the federator at {url} refused the claim: {status}")]
    Claim { url: String, status: tonic::Status },
    #[error("the federator at {url} refused the findings: {status}")]
    Report { url: String, status: tonic::Status },
}

/// How a deep check ended.
#[derive(Clone, Debug, PartialEq)]
pub enum Done {
    /// Nothing selected was failing and unclaimed.
    NothingToDo,
    /// Findings reported for `check` / `target`.
    Reported {
        check: String,
        target: String,
        summary: String,
        /// Whether the claim was still ours when the report arrived.
        claim_held: bool,
    },
}

/// Claims one failing check, examines it and reports; errors only when the federator cannot
/// be talked to or refuses.
pub async fn run(opts: &Options) -> Result<Done, DeepCheckError> {
    let url = opts.federator.clone();
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|source| DeepCheckError::Url {
            url: url.clone(),
            source,
        })?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30));
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| DeepCheckError::Connect {
            url: url.clone(),
            source,
        })?;
    let mut client = FederatorClient::new(channel)
        .max_decoding_message_size(vigil_proto::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(vigil_proto::MAX_MESSAGE_BYTES);
    let claim = client
        .claim_deep_check(ClaimDeepCheckRequest {
            claimer: opts.claimer.clone(),
            selector: opts.selector.clone(),
        })
        .await
        .map_err(|status| DeepCheckError::Claim {
            url: url.clone(),
            status,
        })?
        .into_inner();
    let Some(spec) = claim.check.filter(|_| !claim.claim_id.is_empty()) else {
        tracing::info!("no failing check to examine");
        return Ok(Done::NothingToDo);
    };
    tracing::info!(check = %spec.id, target = %spec.target, node = %claim.node, last_reason = %claim.last_reason, "examining a failing check");
    let started = Instant::now();
    let start_unix_nanos = now_unix_nanos();
    let (outcome, summary, findings) = examine(&spec, opts).await;
    let report = DeepCheckReport {
        claim_id: claim.claim_id,
        claimer: opts.claimer.clone(),
        check_id: spec.id.clone(),
        target: spec.target.clone(),
        node: claim.node,
        cluster: claim.cluster,
        ran_on_node: opts.node.clone(),
        start_unix_nanos,
        duration_nanos: u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
        outcome: outcome as i32,
        summary: summary.clone(),
        findings,
    };
    let ack = client
        .report_deep_check(report)
        .await
        .map_err(|status| DeepCheckError::Report { url, status })?
        .into_inner();
    tracing::info!(check = %spec.id, target = %spec.target, %summary, claim_held = ack.claim_held, "findings reported");
    Ok(Done::Reported {
        check: spec.id,
        target: spec.target,
        summary,
        claim_held: ack.claim_held,
    })
}

/// Runs every diagnostic on `spec`: the isolated run's outcome, a one-line summary, and the
/// findings in order.
pub async fn examine(spec: &CheckSpec, opts: &Options) -> (Outcome, String, Vec<DeepCheckFinding>) {
    let mut findings = Vec::new();
    let built = probe::build(spec);
    let identity = Identity {
        agent_id: opts.claimer.clone(),
        node: opts.node.clone(),
        cluster: String::new(),
    };
    let run = scheduler::run_check(spec, &built, &identity).await;
    let outcome = run.outcome();
    let mut summary = vec![match outcome {
        Outcome::Success => "the check passes from here".to_owned(),
        other => format!("the check run from here: {} ({})", other.name(), run.reason),
    }];
    findings.push(DeepCheckFinding {
        section: "run".into(),
        outcome: run.outcome,
        summary: if run.reason.is_empty() {
            format!(
                "{} after {:.3}s",
                outcome.name(),
                run.latency_nanos as f64 / 1e9
            )
        } else {
            format!("{}: {}", outcome.name(), run.reason)
        },
        details: run.details,
        values: run.values,
    });

    let target = match target::of(spec) {
        Ok(t) => t,
        Err(e) => {
            findings.push(note("target", Outcome::Error, e.clone()));
            summary.push(e);
            return (outcome, summary.join("; "), findings);
        }
    };
    let dns = dns::examine(&target, opts.resolver).await;
    let addresses = dns.addresses.clone();
    if let Some(problem) = &dns.problem {
        summary.push(problem.clone());
    }
    findings.extend(dns.findings);

    if let (Ok(probe), true) = (&built, target.pinnable) {
        let timeout = extended_timeout(spec);
        let mut failed = Vec::new();
        for ip in addresses.iter().take(MAX_ADDRESSES) {
            let f = per_address(probe.as_ref(), *ip, target.port, timeout).await;
            if f.outcome != Outcome::Success as i32 {
                failed.push(format!("{}: {}", show(*ip, target.port), f.summary));
            }
            findings.push(f);
        }
        let n = addresses.len().min(MAX_ADDRESSES);
        if n > 0 {
            summary.push(if failed.is_empty() {
                format!("all {n} addresses answer")
            } else {
                format!(
                    "{} of {n} addresses fail ({})",
                    failed.len(),
                    failed.join(", ")
                )
            });
        }
    }
    if let Some(tls) = &target.tls {
        for ip in addresses.iter().take(MAX_ADDRESSES) {
            let f = tls::chain(*ip, &target, tls).await;
            if f.outcome != Outcome::Success as i32 {
                summary.push(format!("TLS {}: {}", show(*ip, target.port), f.summary));
            }
            findings.push(f);
        }
    }
    if opts.max_hops > 0 {
        for ip in addresses.iter().take(MAX_TRACED) {
            findings.push(trace::trace(*ip, opts.max_hops, opts.hop_timeout).await);
        }
    }
    (outcome, summary.join("; "), findings)
}

/// The check's timeout, tripled (at least 2 s, at most 30 s): a slow answer is worth seeing.
fn extended_timeout(spec: &CheckSpec) -> Duration {
    (Duration::from_millis(spec.timeout_ms) * 3)
        .clamp(Duration::from_secs(2), Duration::from_secs(30))
}

/// One attempt of the check's own probe against `ip` only.
async fn per_address(
    probe: &dyn probe::Probe,
    ip: IpAddr,
    port: u16,
    timeout: Duration,
) -> DeepCheckFinding {
    let attempt = Attempt::pinned_to(ip);
    let t = Instant::now();
    let verdict = tokio::time::timeout(timeout, probe.run(&attempt)).await;
    let elapsed = t.elapsed();
    let notes = attempt.into_notes();
    let (outcome, summary) = match verdict {
        Ok(Verdict::Success) => (
            Outcome::Success,
            format!("answers in {:.3}s", elapsed.as_secs_f64()),
        ),
        Ok(Verdict::Failure(r)) => (Outcome::Failure, r),
        Ok(Verdict::Error(r)) => (Outcome::Error, r),
        Err(_) => (
            Outcome::Timeout,
            format!(
                "no answer within {}s (in {})",
                timeout.as_secs_f64(),
                if notes.phase.is_empty() {
                    "?"
                } else {
                    notes.phase
                }
            ),
        ),
    };
    let mut values = notes.values;
    values.insert("elapsed_seconds".into(), elapsed.as_secs_f64());
    let mut details = notes.details;
    details.insert("timeout".into(), format!("{}s", timeout.as_secs_f64()));
    DeepCheckFinding {
        section: format!("address {}", show(ip, port)),
        outcome: outcome as i32,
        summary,
        details,
        values,
    }
}

/// `ip:port`, `[v6]:port`, or the bare address without a port.
fn show(ip: IpAddr, port: u16) -> String {
    if port == 0 {
        ip.to_string()
    } else {
        SocketAddr::new(ip, port).to_string()
    }
}

/// A finding with only a summary.
fn note(section: &str, outcome: Outcome, summary: impl Into<String>) -> DeepCheckFinding {
    DeepCheckFinding {
        section: section.to_owned(),
        outcome: outcome as i32,
        summary: summary.into(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests;
