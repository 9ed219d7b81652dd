//! Claim semantics and the gRPC-facing checks of deep checks.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use vigil_proto::{DeepCheckFinding, Outcome, ProbeResult};

use super::*;
use crate::loader::{Loaded, parse_file};
use crate::metrics::Metrics;

const CHECKS: &str = "\
apiVersion: vigil.dev/v1alpha1
kind: HealthCheck
metadata: {name: web, namespace: shop}
spec:
  failureThreshold: 1
  labels: {team: shop}
  probe: {tcp: {address: '127.0.0.1:1'}}
---
apiVersion: vigil.dev/v1alpha1
kind: HealthCheck
metadata: {name: db, namespace: data}
spec:
  failureThreshold: 1
  probe: {tcp: {address: '127.0.0.1:2'}}
---
apiVersion: vigil.dev/v1alpha1
kind: HealthCheck
metadata: {name: ok, namespace: shop}
spec:
  probe: {tcp: {address: '127.0.0.1:3'}}
";

fn key(i: usize) -> StateKey {
    StateKey {
        cluster: "c".into(),
        check: "ns/c".into(),
        target: format!("t{i}"),
        node: String::new(),
    }
}

fn findings(summary: &str, start: i64) -> Findings {
    Findings {
        claimer: "pod-1".into(),
        ran_on_node: "n1".into(),
        start: rfc3339(start),
        start_unix_nanos: start,
        duration_seconds: 0.5,
        outcome: "FAILURE".into(),
        summary: summary.into(),
        findings: Vec::new(),
    }
}

#[test]
fn concurrent_claimers_never_share_a_target() {
    let store = Arc::new(DeepChecks::new(Duration::from_secs(60)));
    let candidates: Vec<StateKey> = (0..50).map(key).collect();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let store = Arc::clone(&store);
            let candidates = candidates.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                while let Some(c) = store.claim(&format!("pod-{t}"), candidates.clone()) {
                    mine.push(c.key);
                }
                mine
            })
        })
        .collect();
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.join().unwrap());
    }
    let unique: HashSet<_> = all.iter().cloned().collect();
    assert_eq!(all.len(), 50, "every target claimed once");
    assert_eq!(unique.len(), 50, "no target claimed twice");
    assert_eq!(store.claims_held(), 50);
    assert!(store.claim("late", candidates).is_none());
}

#[test]
fn a_claim_is_released_by_its_report_or_after_the_lease() {
    let store = DeepChecks::new(Duration::from_millis(200));
    let a = store.claim("pod-a", [key(1)]).unwrap();
    assert!(store.claim("pod-b", [key(1)]).is_none(), "held by pod-a");

    // pod-a dies: after the lease another claimer gets it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let b = loop {
        if let Some(b) = store.claim("pod-b", [key(1)]) {
            break b;
        }
        assert!(Instant::now() < deadline, "the lease never ran out");
        std::thread::yield_now();
    };
    assert_ne!(a.id, b.id);
    assert!(
        a.expires_unix_nanos < b.expires_unix_nanos,
        "the new claim has its own lease"
    );
    // pod-a's late report is kept but does not release pod-b's claim.
    assert!(!store.report(key(1), &a.id, "pod-a", findings("late", 1)));
    assert!(store.claim("pod-c", [key(1)]).is_none());
    // pod-b's report releases it.
    assert!(store.report(key(1), &b.id, "pod-b", findings("found", 2)));
    assert!(store.claim("pod-c", [key(1)]).is_some());
    assert_eq!(store.of_check("ns/c")[0].findings.summary, "found");
}

#[test]
fn descriptions_only_use_findings_of_the_current_failure() {
    let store = DeepChecks::default();
    store.report(key(1), "x", "pod-1", findings("refused on 10.0.0.7", 5_000));
    let text = store.describe_since(&key(1), 4_000).unwrap();
    assert!(
        text.starts_with("Deep check by pod-1 on node n1 at "),
        "{text}"
    );
    assert!(text.ends_with(": refused on 10.0.0.7"), "{text}");
    assert_eq!(store.describe_since(&key(1), 6_000), None, "older findings");
    assert_eq!(store.describe_since(&key(2), 0), None);
}

fn fixture() -> (Arc<Hub>, Arc<State>) {
    let state = Arc::new(State::default());
    let hub = Arc::new(Hub::new(Arc::clone(&state), Arc::new(Metrics::new())));
    let mut loaded = Loaded::default();
    parse_file(Path::new("c.yaml"), CHECKS, &mut loaded);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    hub.set_checks(loaded.checks, Vec::new());
    for (i, (check, target, outcome)) in [
        ("shop/web", "127.0.0.1:1", Outcome::Failure),
        ("data/db", "127.0.0.1:2", Outcome::Failure),
        ("shop/ok", "127.0.0.1:3", Outcome::Success),
        ("node/memory", "memory", Outcome::Failure),
    ]
    .into_iter()
    .enumerate()
    {
        let mut r = ProbeResult {
            check_id: check.into(),
            target: target.into(),
            cluster: "c".into(),
            node: "n1".into(),
            start_unix_nanos: 1_000 + i64::try_from(i).unwrap(),
            outcome: outcome as i32,
            reason: "connection refused".into(),
            ..Default::default()
        };
        state.apply(&mut r);
    }
    (hub, state)
}

fn request(claimer: &str, selector: &[(&str, &str)]) -> ClaimDeepCheckRequest {
    ClaimDeepCheckRequest {
        claimer: claimer.into(),
        selector: selector
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

#[test]
fn claims_hand_out_failing_checks_longest_failing_first_and_honour_the_selector() {
    let (hub, state) = fixture();
    let store = DeepChecks::default();
    let first = serve_claim(&store, &hub, &state, &request("p1", &[])).unwrap();
    let check = first.check.as_ref().unwrap();
    assert_eq!(check.id, "shop/web");
    assert_eq!(check.target, "127.0.0.1:1");
    assert_eq!(first.cluster, "c");
    assert_eq!(first.last_reason, "connection refused");
    assert_eq!(first.failing_since_unix_nanos, 1_000);
    assert!(!first.claim_id.is_empty());

    let none = serve_claim(&store, &hub, &state, &request("p2", &[("team", "x")]));
    assert!(
        none.unwrap_err()
            .to_string()
            .contains("scalerMetadata.team is not a key Vigil reads"),
    );
    let shop = serve_claim(
        &store,
        &hub,
        &state,
        &request("p2", &[("namespace", "shop")]),
    );
    assert_eq!(
        shop.unwrap(),
        ClaimDeepCheckResponse::default(),
        "web is held"
    );
    let second = serve_claim(&store, &hub, &state, &request("p2", &[])).unwrap();
    assert_eq!(second.check.unwrap().id, "data/db");
    // Healthy checks and node diagnostics are never handed out.
    let third = serve_claim(&store, &hub, &state, &request("p3", &[])).unwrap();
    assert_eq!(third, ClaimDeepCheckResponse::default());
}

#[test]
fn reports_are_kept_and_bad_ones_refused_with_what_to_fix() {
    let (hub, state) = fixture();
    let store = DeepChecks::default();
    let claim = serve_claim(&store, &hub, &state, &request("p1", &[])).unwrap();
    let report = DeepCheckReport {
        claim_id: claim.claim_id.clone(),
        claimer: "p1".into(),
        check_id: "shop/web".into(),
        target: "127.0.0.1:1".into(),
        node: claim.node.clone(),
        cluster: claim.cluster.clone(),
        ran_on_node: "n2".into(),
        start_unix_nanos: 2_000,
        duration_nanos: 1_500_000_000,
        outcome: Outcome::Failure as i32,
        summary: "connection refused on every address".into(),
        findings: vec![DeepCheckFinding {
            section: "address 127.0.0.1:1".into(),
            outcome: Outcome::Failure as i32,
            summary: "x".repeat(5_000),
            ..Default::default()
        }],
    };
    let ack = serve_report(&store, &hub, report.clone()).unwrap();
    assert!(ack.claim_held);
    // Examined once per run of failures: web is not handed out again, db is.
    let next = serve_claim(&store, &hub, &state, &request("p2", &[])).unwrap();
    assert_eq!(next.check.unwrap().id, "data/db");
    let kept = store.of_check("shop/web");
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].findings.duration_seconds, 1.5);
    assert_eq!(kept[0].findings.findings[0].outcome, "FAILURE");
    assert!(kept[0].findings.findings[0].summary.ends_with("… (cut)"));
    assert_eq!(store.claims_held(), 1, "db's claim");

    let mut bad = report.clone();
    bad.check_id.clear();
    assert_eq!(
        serve_report(&store, &hub, bad).unwrap_err().to_string(),
        "DeepCheckReport.check_id is required; send the values ClaimDeepCheck returned"
    );
    let mut bad = report.clone();
    bad.check_id = "shop/gone".into();
    assert!(
        serve_report(&store, &hub, bad)
            .unwrap_err()
            .to_string()
            .contains("check \"shop/gone\", which this federator does not define")
    );
    let mut bad = report.clone();
    bad.findings = vec![DeepCheckFinding::default(); MAX_SECTIONS + 1];
    assert!(matches!(
        serve_report(&store, &hub, bad),
        Err(DeepCheckError::TooManyFindings(257))
    ));
    let err = serve_claim(&store, &hub, &state, &request("", &[])).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("ClaimDeepCheckRequest.claimer must be")
    );
}
