//! The Grafana dashboards and Vigil's alert rules against the real thing: every PromQL expression
//! of every dashboard panel asked of Debian's Prometheus while it scrapes a real federator and
//! agent and evaluates the rules; promtool over the rules (in `rules`).

#[path = "dashboards/grafana.rs"]
mod grafana;
#[path = "dashboards/rules.rs"]
mod rules;
#[path = "dashboards/stack.rs"]
mod stack;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rules::alerts;
use serde_json::Value;
use stack::{AGENT_NODE, CLUSTER, NAMESPACE, Stack};
use vigil_e2e::{get_json, wait_for};

/// Panel targets allowed to return no series in this test, and why. Everything else must.
const MAY_BE_EMPTY: &[(&str, &str, &str, &str)] = &[
    (
        "vigil-pipeline",
        "Results received, acknowledged and deduplicated",
        "C",
        "deduplicated: no result arrives twice, nothing is resent in this test",
    ),
    (
        "vigil-pipeline",
        "Results rejected by reason",
        "A",
        "no batch is refused in this test",
    ),
    (
        "vigil-pipeline",
        "Sink errors",
        "A",
        "no sink write fails in this test",
    ),
    (
        "vigil-pipeline",
        "Kafka errors",
        "A",
        "the broker stays up in this test",
    ),
    (
        "vigil-node-diagnostics",
        "Diagnostic errors",
        "A",
        "every diagnostic can read its files on this machine",
    ),
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn dashboards_follow_the_house_rules() {
    let dashboards = grafana::load(&repo().join("dashboards"));
    let uids: BTreeSet<&str> = dashboards
        .iter()
        .map(|(_, d)| d["uid"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        uids,
        BTreeSet::from([
            "vigil-check-detail",
            "vigil-fleet-overview",
            "vigil-node-diagnostics",
            "vigil-pipeline",
        ])
    );
    let problems: Vec<String> = dashboards
        .iter()
        .flat_map(|(file, d)| grafana::problems(file, d))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The value of each template variable in this test: the real cluster, namespace, node and
/// federator, every check.
fn variable_values(dashboard: &Value, federator: &str) -> BTreeMap<String, String> {
    let mut values: BTreeMap<String, String> = grafana::BUILTINS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    for v in grafana::variables(dashboard) {
        let value = match v.name.as_str() {
            "datasource" => "prometheus",
            "cluster" => CLUSTER,
            "namespace" => NAMESPACE,
            "node" => AGENT_NODE,
            "instance" => federator,
            "check" => ".*",
            other => panic!("no test value for template variable {other}: add one"),
        };
        values.insert(v.name, value.to_owned());
    }
    values
}

enum Answer {
    Series(usize),
    Error(String),
}

async fn query(client: &reqwest::Client, prometheus: &str, expr: &str) -> Answer {
    let resp = client
        .get(format!("http://{prometheus}/api/v1/query"))
        .query(&[("query", expr)])
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    let body: Value = match resp {
        Ok(r) => match r.json().await {
            Ok(b) => b,
            Err(e) => return Answer::Error(format!("unreadable answer: {e}")),
        },
        Err(e) => return Answer::Error(format!("no answer: {e}")),
    };
    if body["status"] != "success" {
        return Answer::Error(format!("{}: {}", body["errorType"], body["error"]));
    }
    match body["data"]["resultType"].as_str() {
        Some("vector" | "matrix") => {
            Answer::Series(body["data"]["result"].as_array().map_or(0, Vec::len))
        }
        Some("scalar") => Answer::Series(1),
        other => Answer::Error(format!("unexpected result type {other:?}")),
    }
}

/// Every panel query and every variable query against the live Prometheus: the errors (at
/// once, they do not go away by waiting) and the queries still without series.
async fn sweep(
    client: &reqwest::Client,
    prometheus: &str,
    federator: &str,
) -> (Vec<String>, Vec<String>) {
    let (mut errors, mut empty) = (Vec::new(), Vec::new());
    for (file, d) in grafana::load(&repo().join("dashboards")) {
        let values = variable_values(&d, federator);
        for q in grafana::queries(&file, &d) {
            let expr = grafana::substitute(&q.expr, &values).unwrap();
            let allowed = MAY_BE_EMPTY
                .iter()
                .any(|(uid, panel, r, _)| *uid == q.uid && *panel == q.panel && *r == q.ref_id);
            match query(client, prometheus, &expr).await {
                Answer::Error(e) => errors.push(format!("{q}\n    sent: {expr}\n    error: {e}")),
                Answer::Series(0) if !allowed => empty.push(format!("{q}\n    sent: {expr}")),
                Answer::Series(n) if allowed && n > 0 => {
                    eprintln!("note: {q} is listed in MAY_BE_EMPTY but has series")
                }
                Answer::Series(_) => {}
            }
        }
        for v in grafana::variables(&d) {
            let Some((selector, label)) = v.query.as_deref().and_then(grafana::parse_label_values)
            else {
                continue;
            };
            let selector = grafana::substitute(&selector, &values).unwrap();
            let url = format!("http://{prometheus}/api/v1/label/{label}/values");
            let answer: Option<Value> = async {
                client
                    .get(&url)
                    .query(&[("match[]", selector.as_str())])
                    .send()
                    .await
                    .ok()?
                    .json()
                    .await
                    .ok()
            }
            .await;
            let found = answer
                .as_ref()
                .and_then(|a| a["data"].as_array())
                .map_or(0, Vec::len);
            if answer.as_ref().is_some_and(|a| a["status"] != "success") {
                errors.push(format!(
                    "{file} variable {}: {selector}: {answer:?}",
                    v.name
                ));
            } else if found == 0 {
                empty.push(format!(
                    "{file} variable {}: label_values({selector}, {label})",
                    v.name
                ));
            }
        }
    }
    (errors, empty)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_answers_from_a_real_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let stack = Stack::start(dir.path()).await;
    let client = reqwest::Client::new();
    let prometheus = stack.prometheus.to_string();
    let federator = stack.federator_http.to_string();

    // Both targets scraped and up.
    let up_url = format!("http://{prometheus}/api/v1/query?query=up");
    wait_for(
        "Prometheus to scrape the federator and the agent",
        Duration::from_secs(60),
        || async {
            let v = get_json(&client, &up_url).await?;
            let up: BTreeMap<String, String> = v["data"]["result"]
                .as_array()?
                .iter()
                .map(|s| {
                    (
                        s["metric"]["job"].as_str().unwrap_or_default().to_owned(),
                        s["value"][1].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            (up.get("vigil-federator").map(String::as_str) == Some("1")
                && up.get("vigil-agent").map(String::as_str) == Some("1"))
            .then_some(())
        },
    )
    .await;

    // Data keeps arriving (1 s scrapes): retry until every query has series, or time out
    // listing the ones still empty. Query errors fail at once.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut rounds = 0;
    loop {
        rounds += 1;
        let (errors, empty) = sweep(&client, &prometheus, &federator).await;
        assert!(
            errors.is_empty(),
            "dashboard queries Prometheus refuses:\n{}",
            errors.join("\n")
        );
        if empty.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after {rounds} rounds these dashboard queries still return no series (fix the \
             query, make the test produce the data, or list the panel in MAY_BE_EMPTY with the \
             reason):\n{}",
            empty.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // The alert rules load into the real Prometheus and evaluate without error on real data;
    // the only one active is VigilConfigErrors (pending for its 5m), for the refused document.
    let rules_url = format!("http://{prometheus}/api/v1/rules");
    let rules = wait_for(
        "every alert rule to be evaluated",
        Duration::from_secs(30),
        || async {
            let v = get_json(&client, &rules_url).await?;
            let rules: Vec<Value> = v["data"]["groups"]
                .as_array()?
                .iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            let evaluated = rules.len() == alerts().len()
                && rules.iter().all(|r| r["health"] != "unknown")
                && rules.iter().any(|r| r["state"] != "inactive");
            evaluated.then_some(rules)
        },
    )
    .await;
    let bad: Vec<String> = rules
        .iter()
        .filter(|r| r["health"] != "ok")
        .map(|r| format!("{}: {} {}", r["name"], r["health"], r["lastError"]))
        .collect();
    assert!(
        bad.is_empty(),
        "alert rules failing in Prometheus:\n{}",
        bad.join("\n")
    );
    let active: Vec<(&str, &str, usize)> = rules
        .iter()
        .filter(|r| r["state"] != "inactive")
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default(),
                r["state"].as_str().unwrap_or_default(),
                r["alerts"].as_array().map_or(0, Vec::len),
            )
        })
        .collect();
    assert_eq!(active, [("VigilConfigErrors", "pending", 1)]);
}
