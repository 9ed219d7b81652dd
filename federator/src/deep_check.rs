//! Failure-driven deep checks: hands each failing check target to at most one deep-check pod
//! at a time (`ClaimDeepCheck`, a claim with a lease), and keeps the last findings reported per
//! target (`ReportDeepCheck`) for `/api/v1/checks` and the alert's description.
//!
//! A claim is released by the claimer's report, or when its lease runs out (a pod that died, or
//! never reported): the target can then be claimed again. Findings are kept after recovery,
//! with the time they were taken, so the check's detail shows what the last deep check saw.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use tonic::Status;
use vigil_proto::{
    ClaimDeepCheckRequest, ClaimDeepCheckResponse, DeepCheckReport, ReportDeepCheckResponse,
};

use crate::hub::{CheckDef, Hub, now_unix_nanos};
use crate::keda::{MetadataError, Selection};
use crate::record::rfc3339;
use crate::state::{Health, State, StateKey, is_agent_owned};

/// How long a claim holds without a report (`--deep-check-lease`).
pub const DEFAULT_LEASE: Duration = Duration::from_secs(120);
/// Findings kept at most (one per check target); the oldest go first.
pub const MAX_KEPT: usize = 10_000;
/// Sections one report may carry.
pub const MAX_SECTIONS: usize = 256;
/// Longer texts in a report are cut to this many characters.
const MAX_TEXT: usize = 2_048;

#[derive(Debug, thiserror::Error)]
pub enum DeepCheckError {
    #[error(transparent)]
    Selector(#[from] MetadataError),
    #[error(
        "ClaimDeepCheckRequest.claimer must be 1-253 printable characters (got {0:?}); \
         vigil-agent deep-check sends the pod name"
    )]
    Claimer(String),
    #[error("DeepCheckReport.{0} is required; send the values ClaimDeepCheck returned")]
    Missing(&'static str),
    #[error("DeepCheckReport carries {0} findings; at most {MAX_SECTIONS} are taken")]
    TooManyFindings(usize),
    #[error(
        "DeepCheckReport is for check {0:?}, which this federator does not define; \
         report only checks ClaimDeepCheck handed out"
    )]
    UnknownCheck(String),
}

impl From<DeepCheckError> for Status {
    fn from(e: DeepCheckError) -> Self {
        Status::invalid_argument(e.to_string())
    }
}

/// One held claim.
#[derive(Clone, Debug)]
struct Claim {
    id: String,
    claimer: String,
    expires: Instant,
}

/// What one deep check found, as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Findings {
    pub claimer: String,
    /// The node the deep-check pod ran on.
    pub ran_on_node: String,
    /// RFC 3339, UTC.
    pub start: String,
    pub start_unix_nanos: i64,
    pub duration_seconds: f64,
    /// The isolated run's outcome (`SUCCESS`, `FAILURE`, ...).
    pub outcome: String,
    pub summary: String,
    pub findings: Vec<Finding>,
}

/// One section of a deep check (`dns`, `address 10.0.0.7:443`, `tls chain`, `traceroute`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    pub section: String,
    pub outcome: String,
    pub summary: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, f64>,
}

/// Findings of one check target, for `/api/v1/checks`.
#[derive(Clone, Debug, Serialize)]
pub struct TargetFindings {
    #[serde(flatten)]
    pub key: StateKey,
    #[serde(flatten)]
    pub findings: Findings,
}

/// A claim handed out.
#[derive(Clone, Debug, PartialEq)]
pub struct Claimed {
    pub id: String,
    pub key: StateKey,
    pub expires_unix_nanos: i64,
}

#[derive(Debug, Default)]
struct Inner {
    claims: HashMap<StateKey, Claim>,
    findings: HashMap<StateKey, Findings>,
    next_id: u64,
}

/// The claims and findings, behind one lock held only for map updates.
#[derive(Debug)]
pub struct DeepChecks {
    lease: Duration,
    inner: Mutex<Inner>,
}

impl Default for DeepChecks {
    fn default() -> Self {
        Self::new(DEFAULT_LEASE)
    }
}

impl DeepChecks {
    /// A store whose claims hold for `lease` without a report.
    pub fn new(lease: Duration) -> Self {
        Self {
            lease,
            inner: Mutex::default(),
        }
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// Claims the first of `candidates` nobody holds (claims past their lease are released
    /// first) for `claimer`; `None` when every candidate is held.
    pub fn claim(
        &self,
        claimer: &str,
        candidates: impl IntoIterator<Item = StateKey>,
    ) -> Option<Claimed> {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap();
        inner.claims.retain(|key, c| {
            let live = c.expires > now;
            if !live {
                tracing::info!(check = %key.check, target = %key.target, node = %key.node, claimer = %c.claimer, "deep-check claim expired without a report; releasing it");
            }
            live
        });
        let key = candidates
            .into_iter()
            .find(|k| !inner.claims.contains_key(k))?;
        inner.next_id += 1;
        let id = format!("{:x}-{}", now_unix_nanos(), inner.next_id);
        inner.claims.insert(
            key.clone(),
            Claim {
                id: id.clone(),
                claimer: claimer.to_owned(),
                expires: now + self.lease,
            },
        );
        let lease = i64::try_from(self.lease.as_nanos()).unwrap_or(i64::MAX);
        Some(Claimed {
            id,
            key,
            expires_unix_nanos: now_unix_nanos().saturating_add(lease),
        })
    }

    /// Keeps `findings` as the latest of `key` and releases the claim `claim_id` if `claimer`
    /// still holds it; returns whether it did.
    pub fn report(&self, key: StateKey, claim_id: &str, claimer: &str, findings: Findings) -> bool {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap();
        let held = inner
            .claims
            .get(&key)
            .is_some_and(|c| c.id == claim_id && c.claimer == claimer);
        if held {
            let claim = inner.claims.remove(&key);
            if claim.is_some_and(|c| c.expires <= now) {
                // Past its lease but nobody took it over: the findings are as good.
                tracing::debug!(check = %key.check, "deep-check report after the lease ran out");
            }
        }
        if inner.findings.len() >= MAX_KEPT && !inner.findings.contains_key(&key) {
            let oldest = inner
                .findings
                .iter()
                .min_by_key(|(_, f)| f.start_unix_nanos)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                inner.findings.remove(&oldest);
            }
        }
        inner.findings.insert(key, findings);
        held
    }

    /// The findings of every target of `check`, in key order.
    pub fn of_check(&self, check: &str) -> Vec<TargetFindings> {
        let inner = self.inner.lock().unwrap();
        let mut out: Vec<TargetFindings> = inner
            .findings
            .iter()
            .filter(|(k, _)| k.check == check)
            .map(|(k, f)| TargetFindings {
                key: k.clone(),
                findings: f.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// The latest findings of `key` taken at or after `since_unix_nanos`, as one line for an
    /// alert's description.
    pub fn describe_since(&self, key: &StateKey, since_unix_nanos: i64) -> Option<String> {
        let inner = self.inner.lock().unwrap();
        let f = inner.findings.get(key)?;
        (f.start_unix_nanos >= since_unix_nanos).then(|| {
            format!(
                "Deep check by {} on node {} at {}: {}",
                f.claimer,
                if f.ran_on_node.is_empty() {
                    "?"
                } else {
                    &f.ran_on_node
                },
                f.start,
                f.summary
            )
        })
    }

    /// Whether `key` has findings taken at or after `since_unix_nanos`.
    pub fn checked_since(&self, key: &StateKey, since_unix_nanos: i64) -> bool {
        let inner = self.inner.lock().unwrap();
        inner
            .findings
            .get(key)
            .is_some_and(|f| f.start_unix_nanos >= since_unix_nanos)
    }

    /// Claims held now (including any past their lease not yet released).
    pub fn claims_held(&self) -> usize {
        self.inner.lock().unwrap().claims.len()
    }
}

/// `ClaimDeepCheck`: the failing targets selected by `request.selector` that run from a
/// HealthCheck (node diagnostics are not deep-checked) and were not deep-checked yet in their
/// current run of failures, the longest-failing first; the first nobody holds is claimed.
pub fn serve_claim(
    store: &DeepChecks,
    hub: &Hub,
    state: &State,
    request: &ClaimDeepCheckRequest,
) -> Result<ClaimDeepCheckResponse, DeepCheckError> {
    let claimer = request.claimer.as_str();
    if claimer.is_empty() || claimer.len() > 253 || claimer.chars().any(char::is_control) {
        return Err(DeepCheckError::Claimer(claimer.to_owned()));
    }
    let selection = Selection::parse(&request.selector)?;
    let defs: HashMap<String, CheckDef> = hub
        .checks()
        .into_iter()
        .map(|d| (d.spec.id.clone(), d))
        .collect();
    let mut failing: Vec<_> = state
        .all_targets()
        .into_iter()
        .filter(|t| t.state == Health::Failing && !is_agent_owned(&t.key.check))
        .filter(|t| {
            defs.get(&t.key.check)
                .is_some_and(|d| selection.matches(&t.key, &d.check.spec.labels))
        })
        .filter(|t| {
            let since = t.failing_since_unix_nanos.unwrap_or(t.since_unix_nanos);
            !store.checked_since(&t.key, since)
        })
        .collect();
    failing.sort_by(|a, b| {
        let since = |t: &crate::state::TargetState| {
            t.failing_since_unix_nanos.unwrap_or(t.since_unix_nanos)
        };
        since(a).cmp(&since(b)).then_with(|| a.key.cmp(&b.key))
    });
    let Some(claimed) = store.claim(claimer, failing.iter().map(|t| t.key.clone())) else {
        return Ok(ClaimDeepCheckResponse::default());
    };
    let target = failing
        .iter()
        .find(|t| t.key == claimed.key)
        .expect("the claimed key is one of the candidates");
    let def = &defs[&claimed.key.check];
    let mut check = def.spec.clone();
    check.target = claimed.key.target.clone();
    tracing::info!(check = %claimed.key.check, target = %claimed.key.target, node = %claimed.key.node, %claimer, claim = %claimed.id, "deep check claimed");
    Ok(ClaimDeepCheckResponse {
        claim_id: claimed.id,
        check: Some(check),
        node: claimed.key.node.clone(),
        cluster: claimed.key.cluster.clone(),
        lease_expires_unix_nanos: claimed.expires_unix_nanos,
        last_reason: target.last.reason.clone(),
        failing_since_unix_nanos: target
            .failing_since_unix_nanos
            .unwrap_or(target.since_unix_nanos),
    })
}

/// `ReportDeepCheck`: keeps the findings (texts cut to a bounded length) and releases the claim.
pub fn serve_report(
    store: &DeepChecks,
    hub: &Hub,
    report: DeepCheckReport,
) -> Result<ReportDeepCheckResponse, DeepCheckError> {
    for (field, value) in [
        ("check_id", &report.check_id),
        ("target", &report.target),
        ("cluster", &report.cluster),
    ] {
        if value.is_empty() {
            return Err(DeepCheckError::Missing(field));
        }
    }
    if report.findings.len() > MAX_SECTIONS {
        return Err(DeepCheckError::TooManyFindings(report.findings.len()));
    }
    if !hub.checks().iter().any(|d| d.spec.id == report.check_id) {
        return Err(DeepCheckError::UnknownCheck(report.check_id));
    }
    let key = StateKey {
        cluster: report.cluster.clone(),
        check: report.check_id.clone(),
        target: report.target.clone(),
        node: report.node.clone(),
    };
    let findings = Findings {
        claimer: cut(&report.claimer),
        ran_on_node: cut(&report.ran_on_node),
        start: rfc3339(report.start_unix_nanos),
        start_unix_nanos: report.start_unix_nanos,
        duration_seconds: report.duration_nanos as f64 / 1e9,
        outcome: report.outcome().name().to_owned(),
        summary: cut(&report.summary),
        findings: report
            .findings
            .iter()
            .map(|f| Finding {
                section: cut(&f.section),
                outcome: f.outcome().name().to_owned(),
                summary: cut(&f.summary),
                details: f.details.iter().map(|(k, v)| (cut(k), cut(v))).collect(),
                values: f.values.iter().map(|(k, v)| (cut(k), *v)).collect(),
            })
            .collect(),
    };
    let claim_held = store.report(key, &report.claim_id, &report.claimer, findings);
    tracing::info!(check = %report.check_id, target = %report.target, node = %report.node, claimer = %report.claimer, claim_held, summary = %report.summary, "deep-check findings received");
    Ok(ReportDeepCheckResponse { claim_held })
}

/// `text`, cut to [`MAX_TEXT`] characters with a marker.
fn cut(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT) {
        Some((at, _)) => format!("{}… (cut)", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests;
