//! The federation view in a real headless Chromium: against a real `vigil-federator serve` fed
//! by real agents of two clusters (matrix, colours, filters, deep links, check and node
//! drill-down, screenshots), and against a generated 50 × 500 matrix (renders, load time printed).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use vigil_e2e::browser::Browser;
use vigil_e2e::{Proc, bin, free_addr, get_json, wait_for};

const WAIT: Duration = Duration::from_secs(30);

/// The page as the federator embeds it.
const INDEX_HTML: &str = include_str!("../../federator/src/api/index.html");

fn screenshot_dir() -> PathBuf {
    vigil_e2e::target_dir()
        .parent()
        .expect("target folder")
        .join("web-view-screenshots")
}

/// A generated matrix like a global federator's: `clusters` × `checks`, a few failing cells.
fn big_matrix(clusters: usize, checks: usize) -> (Value, Value) {
    let names: Vec<String> = (0..clusters)
        .map(|i| format!("prod-{:02}-eu-west", i + 1))
        .collect();
    let rows: Vec<Value> = (0..checks)
        .map(|k| {
            let cells: Vec<Value> = (0..clusters)
                .map(|c| {
                    let h = (k * 7919 + c * 104_729) % 97;
                    match h {
                        0 => json!({"state": "Failing", "failing": 3, "total": 100}),
                        1 => json!({"state": "Unknown", "failing": 0, "total": 100}),
                        2 => Value::Null,
                        _ => json!({"state": "Healthy", "failing": 0, "total": 100}),
                    }
                })
                .collect();
            let failing = cells.iter().filter(|c| c["state"] == "Failing").count();
            json!({
                "id": format!("ns-{:02}/check-{k:03}", k % 20),
                "namespace": format!("ns-{:02}", k % 20),
                "name": format!("check-{k:03}"),
                "probe": "http",
                "placement": "EveryNode",
                "labels": {"team": format!("team-{}", k % 5)},
                "state": if failing > 0 { "Failing" } else { "Healthy" },
                "summary": if failing > 0 {
                    format!("failing on {} of {} nodes in {failing} of {clusters} clusters", failing * 3, clusters * 100)
                } else {
                    format!("healthy on {} nodes in {clusters} clusters", clusters * 100)
                },
                "cells": cells,
            })
        })
        .collect();
    let now: i64 = 1_790_000_000_000_000_000;
    let cluster_list: Vec<Value> = names
        .iter()
        .map(|n| {
            json!({"name": n, "local": false, "connected": true, "silent": false, "state": "Failing",
                   "agents": 100, "nodes": 100, "checks": checks, "healthy": checks - 5, "failing": 5,
                   "unknown": 0, "last_seen_unix_nanos": now - 1_000_000_000})
        })
        .collect();
    (
        json!({"now_unix_nanos": now, "clusters": cluster_list}),
        json!({"now_unix_nanos": now, "clusters": names, "checks": rows}),
    )
}

/// Serves the page and fixed API answers on a free loopback port.
async fn serve_fixture(clusters: Value, matrix: Value) -> SocketAddr {
    let clusters = clusters.to_string();
    let matrix = matrix.to_string();
    let app = axum::Router::new()
        .route(
            "/",
            axum::routing::get(|| async { axum::response::Html(INDEX_HTML) }),
        )
        .route(
            "/api/v1/clusters",
            axum::routing::get(move || {
                let body = clusters.clone();
                async move { ([("content-type", "application/json")], body) }
            }),
        )
        .route(
            "/api/v1/matrix",
            axum::routing::get(move || {
                let body = matrix.clone();
                async move { ([("content-type", "application/json")], body) }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// 50 clusters × 500 checks: the page renders all 25,000 cells; the load time is printed
/// (the benchmark, not this test, holds the 1 s budget).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renders_a_50_by_500_matrix() {
    let (clusters, matrix) = big_matrix(50, 500);
    let addr = serve_fixture(clusters, matrix).await;
    let browser = Browser::start().await;
    let url = format!("http://{addr}/");
    let ready = vigil_e2e::browser::matrix_ready(25_000);
    let first = browser.page_load(&url, &ready).await;
    let second = browser.page_load(&url, &ready).await;
    let rendered = browser
        .eval("Number(document.querySelector('#matrix').dataset.renderedAt)")
        .await;
    println!(
        "50 x 500 matrix from a fixture: ready and painted {first:?} after navigation start \
         (again: {second:?}); DOM built at {rendered} ms"
    );
    // Every row and column is there for the table's readers; the rows in view are drawn.
    let shape = browser
        .eval(
            "({rowcount: document.querySelector('#matrix').getAttribute('aria-rowcount'),\
              windowed: document.querySelector('#matrix').dataset.windowed,\
              drawn: document.querySelectorAll('#matrix tbody tr[data-i]').length,\
              columns: document.querySelectorAll('#matrix thead th.cl').length,\
              failing: document.querySelectorAll('#matrix td.F').length})",
        )
        .await;
    assert_eq!(shape["rowcount"], "501", "{shape}");
    assert_eq!(shape["windowed"], "true", "{shape}");
    assert_eq!(shape["columns"], 50, "{shape}");
    let drawn = shape["drawn"].as_u64().unwrap();
    assert!((20..500).contains(&drawn), "{shape}");
    assert!(shape["failing"].as_u64().unwrap() > 0, "{shape}");
    // Scrolled to the end, the last check is drawn.
    browser
        .execute(
            "const w = document.querySelector('#matrix-wrap'); w.scrollTop = w.scrollHeight;",
            &[],
        )
        .await;
    browser
        .wait_for(
            "the last row after scrolling down",
            "[...document.querySelectorAll('#matrix tbody tr[data-i] th a')].some(a => a.textContent === 'ns-19/check-499')",
            WAIT,
        )
        .await;
    let path = screenshot_dir().join("matrix-50x500-end.png");
    browser.screenshot(&path).await;
    println!("screenshot: {}", path.display());
    browser
        .execute("document.querySelector('#matrix-wrap').scrollTop = 0;", &[])
        .await;
    browser
        .wait_for(
            "the first row after scrolling up",
            "[...document.querySelectorAll('#matrix tbody tr[data-i] th a')].some(a => a.textContent === 'ns-00/check-000')",
            WAIT,
        )
        .await;
    // A failing cell says so in text, not only in colour.
    let cell = browser
        .eval(
            "(() => { const td = document.querySelector('#matrix td.F'); \
              return [td.innerText, td.title, getComputedStyle(td).backgroundColor]; })()",
        )
        .await;
    assert_eq!(cell[0], "3/100", "{cell}");
    assert_eq!(cell[1], "Failing: 3 of 100 failing", "{cell}");
    let path = screenshot_dir().join("matrix-50x500.png");
    browser.screenshot(&path).await;
    println!("screenshot: {}", path.display());
}

/// A local HTTP server answering `ok` on /healthz until `stop` is sent.
async fn start_target() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    (addr, stop)
}

fn write_checks(dir: &Path, target: SocketAddr, closed: SocketAddr) {
    let doc = |ns: &str, name: &str, extra: &str, probe: &str| {
        format!(
            "apiVersion: vigil.dev/v1alpha1\nkind: HealthCheck\nmetadata: {{name: {name}, namespace: {ns}}}\n\
             spec:\n  interval: 500ms\n  timeout: 250ms\n  failureThreshold: 2\n{extra}  probe:\n    {probe}\n"
        )
    };
    std::fs::write(
        dir.join("shop.yaml"),
        [
            doc(
                "shop",
                "web",
                "  labels: {team: shop}\n",
                &format!("http: {{url: 'http://{target}/healthz', bodyMatches: '^ok$'}}"),
            ),
            doc(
                "shop",
                "db",
                "  severity: critical\n  labels: {team: shop}\n",
                &format!("tcp: {{address: '{closed}'}}"),
            ),
        ]
        .join("---\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("infra.yaml"),
        doc(
            "infra",
            "reach",
            "  placement: EveryNode\n  labels: {team: infra}\n",
            &format!("http: {{url: 'http://{target}/healthz'}}"),
        ),
    )
    .unwrap();
    // A refused document: the page lists it in a banner.
    std::fs::write(
        dir.join("bad.yaml"),
        "apiVersion: vigil.dev/v1alpha1\nkind: HealthCheck\nmetadata: {name: bad, namespace: shop}\n\
         spec:\n  interval: 5s\n  timeout: 5s\n  probe: {tcp: {address: '127.0.0.1:1'}}\n",
    )
    .unwrap();
}

fn row<'a>(matrix: &'a Value, id: &str) -> Option<&'a Value> {
    matrix["checks"].as_array()?.iter().find(|c| c["id"] == id)
}

/// The cells of a matrix row by cluster name.
fn cells(matrix: &Value, id: &str) -> Vec<(String, Value)> {
    let names = matrix["clusters"].as_array().cloned().unwrap_or_default();
    let Some(r) = row(matrix, id) else {
        return Vec::new();
    };
    names
        .iter()
        .zip(r["cells"].as_array().cloned().unwrap_or_default())
        .map(|(n, c)| (n.as_str().unwrap_or_default().to_owned(), c))
        .collect()
}

/// The check ids of the matrix rows the page shows.
const ROWS_JS: &str =
    "[...document.querySelectorAll('#matrix tbody tr[data-i] th a')].map(a => a.textContent)";

/// Waits until the page's matrix rows are exactly `want` (in order).
async fn wait_rows(browser: &Browser, what: &str, want: &[&str]) {
    let want = serde_json::to_string(want).unwrap();
    browser
        .wait_for(
            what,
            &format!("JSON.stringify({ROWS_JS}) === {want:?}"),
            WAIT,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_view_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let checks = dir.path().join("checks");
    std::fs::create_dir(&checks).unwrap();
    let (target, stop_target) = start_target().await;
    let closed = free_addr(); // nothing listens here: connection refused
    write_checks(&checks, target, closed);

    let http = free_addr();
    let grpc = free_addr();
    let mut federator = Proc::start(
        "federator",
        &bin("vigil-federator"),
        &[
            "serve".into(),
            "--checks".into(),
            checks.display().to_string(),
            "--cluster".into(),
            "east".into(),
            "--listen".into(),
            http.to_string(),
            "--grpc-listen".into(),
            grpc.to_string(),
            "--results".into(),
            dir.path().join("results.jsonl").display().to_string(),
        ],
        dir.path(),
    );
    // Agents name their cluster in Hello: one federator holds two clusters' state.
    let _agents: Vec<Proc> = [("east", "east-1"), ("east", "east-2"), ("west", "west-1")]
        .iter()
        .map(|(cluster, node)| {
            Proc::start(
                &format!("agent-{node}"),
                &bin("vigil-agent"),
                &[
                    "--federator".into(),
                    format!("http://{grpc}"),
                    "--cluster".into(),
                    (*cluster).into(),
                    "--node".into(),
                    (*node).into(),
                    "--listen".into(),
                    free_addr().to_string(),
                ],
                dir.path(),
            )
        })
        .collect();

    // The API first: both clusters, shop/db failing where it runs, the others healthy
    // everywhere they run, infra/reach on all three nodes. Until all three agents are
    // connected an AnyNode check may still move (rendezvous placement over the agents
    // connected so far), so the matrix has settled only once infra/reach has run on each.
    let client = reqwest::Client::new();
    let api = format!("http://{http}/api/v1/matrix");
    let (failing_in, ran_in) = wait_for("the matrix to settle", WAIT, || async {
        let m = get_json(&client, &api).await?;
        if m["clusters"] != json!(["east", "west"]) {
            return None;
        }
        let db = cells(&m, "shop/db");
        let failing: Vec<String> = db
            .iter()
            .filter(|(_, c)| c["state"] == "Failing")
            .map(|(n, _)| n.clone())
            .collect();
        let web_ok = cells(&m, "shop/web")
            .iter()
            .any(|(_, c)| c["state"] == "Healthy");
        let reach = cells(&m, "infra/reach");
        let nodes = |c: &Value| c["total"].as_u64().unwrap_or(0);
        let reach_ok = reach.len() == 2
            && reach.iter().all(|(_, c)| c["state"] == "Healthy")
            && reach.iter().map(|(_, c)| nodes(c)).collect::<Vec<_>>() == [2, 1];
        // Where shop/db has a cell: the federator's own cluster, and any cluster it has run in
        // (before the last agent connected it may have run in the other cluster too).
        let ran_in: Vec<String> = db
            .iter()
            .filter(|(_, c)| !c.is_null())
            .map(|(n, _)| n.clone())
            .collect();
        (failing.len() == 1 && web_ok && reach_ok).then(|| (failing[0].clone(), ran_in))
    })
    .await;
    println!("shop/db runs (and fails) in cluster {failing_in}; it has cells in {ran_in:?}");

    let browser = Browser::start().await;
    let base = format!("http://{http}/");
    let shots = screenshot_dir();

    // 1. The matrix: both clusters as columns, every check as a row, state colours and text.
    browser.navigate(&base).await;
    browser
        .wait_for(
            "the matrix with both clusters and a red shop/db cell",
            "document.querySelectorAll('#matrix thead th.cl').length === 2 && \
             [...document.querySelectorAll('#matrix tbody tr')].some(tr => \
                tr.querySelector('th').innerText.includes('shop/db') && tr.querySelector('td.F'))",
            WAIT,
        )
        .await;
    let columns = browser
        .eval(
            "[...document.querySelectorAll('#matrix thead th.cl')].map(th => th.innerText.trim())",
        )
        .await;
    assert_eq!(columns, json!(["east", "west"]));
    let rows = browser.eval(ROWS_JS).await;
    for id in ["infra/reach", "shop/db", "shop/web"] {
        assert!(
            rows.as_array().unwrap().iter().any(|r| r == id),
            "{id} missing from {rows}"
        );
    }
    // The failing cell: red, with the count a person reads and the state in its title.
    let db = browser
        .eval(
            "(() => { const tr = [...document.querySelectorAll('#matrix tbody tr')]\
                 .find(tr => tr.querySelector('th').innerText.includes('shop/db'));\
               const td = tr.querySelector('td.F');\
               return {head: tr.querySelector('th').innerText, text: td.innerText, title: td.title,\
                       bg: getComputedStyle(td).backgroundColor, column: td.cellIndex}; })()",
        )
        .await;
    assert_eq!(db["text"], "1/1", "{db}");
    assert_eq!(db["title"], "Failing: 1 of 1 failing", "{db}");
    assert_eq!(db["bg"], "rgb(217, 54, 54)", "{db}");
    assert!(db["head"].as_str().unwrap().contains("Failing"), "{db}");
    let column = usize::try_from(db["column"].as_u64().unwrap()).unwrap();
    assert_eq!(
        columns[column - 1],
        failing_in.as_str(),
        "the red cell is in the column of the cluster shop/db fails in"
    );
    let reach = browser
        .eval(
            "(() => { const tr = [...document.querySelectorAll('#matrix tbody tr')]\
                 .find(tr => tr.querySelector('th').innerText.includes('infra/reach'));\
               return [...tr.querySelectorAll('td')].map(td => [td.innerText, td.title, getComputedStyle(td).backgroundColor]); })()",
        )
        .await;
    for cell in reach.as_array().unwrap() {
        assert_eq!(cell[0], "", "{reach}");
        assert!(cell[1].as_str().unwrap().starts_with("Healthy"), "{reach}");
        assert_eq!(cell[2], "rgb(207, 238, 216)", "{reach}");
    }
    // The cluster bar: both clusters with their agents; the refused document in a banner.
    let bar = browser.text("#clusters").await;
    assert!(bar.contains("east") && bar.contains("2 agents"), "{bar}");
    assert!(bar.contains("west") && bar.contains("1 agent"), "{bar}");
    browser
        .wait_for(
            "the refused document's banner",
            "!document.querySelector('#config-errors').hidden",
            WAIT,
        )
        .await;
    let banner = browser.text("#config-errors").await;
    assert!(
        banner.contains("bad.yaml doc 1: spec.timeout: must be less than spec.interval"),
        "{banner}"
    );
    assert!(browser.text("#updated").await.starts_with("updated "));
    let matrix_png = shots.join("matrix.png");
    browser.screenshot(&matrix_png).await;
    println!("screenshot of the matrix: {}", matrix_png.display());

    // 2. Filters narrow the rows and are kept in the address.
    browser.click("#filters select[name=state]").await;
    browser
        .click("#filters select[name=state] option[value=Failing]")
        .await;
    browser
        .wait_for(
            "state=Failing in the address",
            "location.search.includes('state=Failing')",
            WAIT,
        )
        .await;
    browser
        .wait_for(
            "only failing rows",
            &format!(
                "(r => r.includes('shop/db') && !r.includes('shop/web') && !r.includes('infra/reach'))({ROWS_JS})"
            ),
            WAIT,
        )
        .await;
    browser.click("#filters button[type=reset]").await;
    browser
        .type_into("#filters input[name=label]", "team=shop")
        .await;
    wait_rows(&browser, "the team=shop rows", &["shop/db", "shop/web"]).await;
    assert!(
        browser.url().await.ends_with("?label=team%3Dshop"),
        "{}",
        browser.url().await
    );
    // A filtered view is a deep link, and the form shows its filters.
    browser
        .navigate(&format!(
            "{base}?cluster={failing_in}&state=Failing&namespace=shop&label=team%3Dshop"
        ))
        .await;
    wait_rows(&browser, "the deep-linked filtered matrix", &["shop/db"]).await;
    let form = browser
        .eval(
            "['cluster', 'namespace', 'state', 'label'].map(k => document.querySelector('#filters').elements[k].value)",
        )
        .await;
    assert_eq!(form, json!([failing_in, "shop", "Failing", "team=shop"]));
    browser.navigate(&format!("{base}?namespace=infra")).await;
    wait_rows(&browser, "the infra rows", &["infra/reach"]).await;

    // 3. A click on the red cell opens the check in that cluster; back returns to the matrix.
    browser.navigate(&base).await;
    // (Node diagnostics read this machine: a nearly full disk makes node/disk red too.)
    let red = "#matrix tr[data-id='shop/db'] td.F";
    browser
        .wait_for(
            "shop/db's red cell",
            &format!("document.querySelector({red:?})"),
            WAIT,
        )
        .await;
    browser.click(red).await;
    browser
        .wait_for(
            "the check view of shop/db",
            "document.querySelector('#check-view').dataset.check === 'shop/db'",
            WAIT,
        )
        .await;
    assert!(
        browser
            .url()
            .await
            .ends_with(&format!("?check=shop/db&cluster={failing_in}")),
        "{}",
        browser.url().await
    );
    browser.back().await;
    browser
        .wait_for(
            "the matrix again",
            "document.body.dataset.view === 'matrix' && !location.search",
            WAIT,
        )
        .await;

    // 4. The alert's generatorURL: /?check=NS/NAME opens the check with its reason.
    let refused = format!("connect to {closed} failed: connection refused");
    browser.navigate(&format!("{base}?check=shop/db")).await;
    browser
        .wait_for(
            "the reason in the check view",
            &format!("document.querySelector('#check-view').innerText.includes({refused:?})"),
            WAIT,
        )
        .await;
    let view = browser.text("#check-view").await;
    assert!(
        view.contains("shop/db") && view.contains("Failing"),
        "{view}"
    );
    assert!(view.contains(&format!("Target\n{closed}")), "{view}");
    let detail = browser
        .eval(
            "({perCluster: [...document.querySelectorAll('#per-cluster tbody th')].map(th => th.innerText),\
              targets: [...document.querySelectorAll('#targets tbody tr')].map(tr => tr.innerText),\
              spark: document.querySelectorAll('#check-view svg.spark polyline').length,\
              reasons: document.querySelector('#reasons') && document.querySelector('#reasons').innerText})",
        )
        .await;
    // The federator's own cluster (east) lists all its checks; a cluster only its agents name
    // lists a check once it has run there (an AnyNode check runs in one of them at a time).
    assert!(ran_in.contains(&"east".to_owned()) && ran_in.contains(&failing_in));
    assert_eq!(detail["perCluster"], json!(ran_in), "{detail}");
    // The target in the failing cluster is Failing with the reason; a node that ran it before
    // the last agent connected is listed too, no longer Failing.
    let targets: Vec<&str> = detail["targets"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let failing: Vec<&&str> = targets
        .iter()
        .filter(|t| t.contains("\tFailing\t"))
        .collect();
    assert_eq!(failing.len(), 1, "{detail}");
    assert!(
        failing[0].starts_with(&format!("{failing_in}\t"))
            && failing[0].contains("FAILURE")
            && failing[0].contains(&refused),
        "{detail}"
    );
    assert_eq!(detail["spark"], 1, "a latency sparkline: {detail}");
    assert!(
        detail["reasons"].as_str().unwrap().contains(&refused),
        "{detail}"
    );
    let check_png = shots.join("check.png");
    browser.screenshot(&check_png).await;
    println!("screenshot of the check view: {}", check_png.display());

    // 5. From an EveryNode check to one of its nodes: diagnostics and node-scoped checks.
    browser.navigate(&format!("{base}?check=infra/reach")).await;
    browser
        .wait_for(
            "infra/reach's nodes",
            "document.querySelectorAll('#targets tbody tr').length === 3",
            WAIT,
        )
        .await;
    browser.click("#targets a[href='?node=east/east-2']").await;
    browser
        .wait_for(
            "the node view of east/east-2",
            "document.querySelector('#node-view').dataset.node === 'east/east-2' && \
             document.querySelector('#diagnostics')",
            WAIT,
        )
        .await;
    assert!(browser.url().await.ends_with("?node=east/east-2"));
    let node = browser
        .eval(
            "({diagnostics: [...document.querySelectorAll('#diagnostics tbody th')].map(th => th.innerText),\
              checks: [...document.querySelectorAll('#node-checks tbody th')].map(th => th.innerText),\
              text: document.querySelector('#node-view').innerText})",
        )
        .await;
    let diagnostics = node["diagnostics"].as_array().unwrap();
    assert!(
        diagnostics.iter().any(|d| d == "memory") && diagnostics.iter().any(|d| d == "disk"),
        "{node}"
    );
    assert!(
        node["text"].as_str().unwrap().contains("memory available"),
        "{node}"
    );
    assert_eq!(node["checks"], json!(["infra/reach"]), "{node}");
    let node_png = shots.join("node.png");
    browser.screenshot(&node_png).await;
    println!("screenshot of the node view: {}", node_png.display());
    browser.navigate(&format!("{base}?node=west/west-1")).await;
    browser
        .wait_for(
            "the deep-linked node view",
            "document.querySelector('#node-view').dataset.node === 'west/west-1' && \
             document.querySelector('#diagnostics')",
            WAIT,
        )
        .await;

    // Live: the node view follows a change without a reload.
    stop_target.send(()).unwrap();
    browser
        .wait_for(
            "infra/reach failing on west-1, shown live",
            "(t => t.includes('Failing') && t.includes('connection refused'))\
             (document.querySelector('#node-checks tbody tr').innerText)",
            WAIT,
        )
        .await;
    let errors: Vec<String> = browser
        .console()
        .await
        .into_iter()
        .filter(|l| l.starts_with("SEVERE"))
        .collect();
    assert!(
        errors.is_empty(),
        "errors in the browser console: {errors:?}"
    );

    // An unknown check says so.
    browser.navigate(&format!("{base}?check=shop/nope")).await;
    browser
        .wait_for(
            "the unknown check's message",
            "document.querySelector('#check-view #missing')",
            WAIT,
        )
        .await;
    assert!(
        browser
            .text("#missing")
            .await
            .starts_with("No check shop/nope: no check \"shop/nope\" in any cluster")
    );

    // 6. The federator goes away: a visible banner says so; the last picture stays.
    federator.kill();
    browser
        .wait_for(
            "the unreachable banner",
            "!document.querySelector('#unreachable').hidden",
            WAIT,
        )
        .await;
    let banner = browser.text("#unreachable").await;
    assert!(
        banner.starts_with(&format!("Cannot reach the federator at {http}")),
        "{banner}"
    );
    assert!(browser.text("#updated").await.contains("(stale)"));
    assert!(
        browser
            .text("#check-view")
            .await
            .contains("No check shop/nope")
    );
}
