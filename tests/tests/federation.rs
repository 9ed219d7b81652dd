//! Multi-cluster federation end to end, all real processes: two cluster federators, each with
//! its own agents, forward to one global federator. The global sees both clusters in its API;
//! one cluster's link is cut long enough to be reported silent (VigilClusterSilent in a real
//! Alertmanager), then restored; every result either cluster took reaches the global once.
//! A second test links a cluster over mutual TLS, where the certificate names the cluster.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use vigil_e2e::proxy::CuttingProxy;
use vigil_e2e::{
    Proc, bin, free_addr, get_json, http_target, read_results, refusing_addr, serve_args,
    start_alertmanager, wait_for,
};

const WAIT: Duration = Duration::from_secs(30);

/// The checks every cluster runs: a healthy HTTP check, a failing TCP check, and an
/// EveryNode check.
fn write_checks(dir: &Path, target: SocketAddr) -> PathBuf {
    let checks = dir.join("checks");
    std::fs::create_dir_all(&checks).unwrap();
    let doc = |name: &str, extra: &str, probe: &str| {
        format!(
            "apiVersion: vigil.dev/v1alpha1\nkind: HealthCheck\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  interval: 300ms\n  timeout: 200ms\n  failureThreshold: 1\n{extra}  probe: {probe}\n"
        )
    };
    let docs = [
        doc(
            "web",
            "",
            &format!("{{http: {{url: 'http://{target}/healthz'}}}}"),
        ),
        doc(
            "down",
            "",
            &format!("{{tcp: {{address: '{}'}}}}", refusing_addr()),
        ),
        doc(
            "reach",
            "  placement: EveryNode\n",
            &format!("{{tcp: {{address: '{target}'}}}}"),
        ),
    ];
    std::fs::write(checks.join("shop.yaml"), docs.join("---\n")).unwrap();
    checks
}

struct Fed {
    proc: Proc,
    http: SocketAddr,
    grpc: SocketAddr,
    results: PathBuf,
}

fn start_federator(dir: &Path, name: &str, checks: &Path, extra: &[String]) -> Fed {
    let (http, grpc) = (free_addr(), free_addr());
    let results = dir.join(format!("{name}.jsonl"));
    let mut args = serve_args(checks, http, grpc);
    args.extend(["--results".to_owned(), results.display().to_string()]);
    args.extend_from_slice(extra);
    let proc = Proc::start(name, &bin("vigil-federator"), &args, dir);
    Fed {
        proc,
        http,
        grpc,
        results,
    }
}

fn start_agent(dir: &Path, node: &str, federator: SocketAddr) -> Proc {
    Proc::start(
        &format!("agent-{node}"),
        &bin("vigil-agent"),
        &[
            "--federator".into(),
            format!("http://{federator}"),
            "--node".into(),
            node.into(),
            "--no-diagnostics".into(),
            "--listen".into(),
            free_addr().to_string(),
        ],
        dir,
    )
}

fn cluster<'a>(clusters: &'a Value, name: &str) -> Option<&'a Value> {
    clusters["clusters"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == name)
}

fn row<'a>(matrix: &'a Value, id: &str) -> Option<&'a Value> {
    matrix["checks"].as_array()?.iter().find(|c| c["id"] == id)
}

async fn cluster_silent_alert(client: &reqwest::Client, am: SocketAddr, name: &str) -> bool {
    get_json(client, &format!("http://{am}/api/v2/alerts"))
        .await
        .and_then(|a| a.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .any(|a| a["labels"]["alertname"] == "VigilClusterSilent" && a["labels"]["cluster"] == name)
}

/// (agent, seq) of every result in a JSON-lines file, with how often each appears.
fn ids(path: &Path, cluster: Option<&str>) -> BTreeMap<(String, u64), usize> {
    let mut out = BTreeMap::new();
    for r in read_results(path) {
        if cluster.is_some_and(|c| r["cluster"] != c) {
            continue;
        }
        let id = (
            r["agent"].as_str().unwrap_or_default().to_owned(),
            r["seq"].as_u64().unwrap_or_default(),
        );
        *out.entry(id).or_default() += 1;
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_forward_to_a_global_federator_and_a_cut_link_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (target, _target_task) = http_target().await;
    let checks = write_checks(dir.path(), target);
    let empty = dir.path().join("global-checks");
    std::fs::create_dir(&empty).unwrap();
    let (am, _am_proc) = start_alertmanager(dir.path());

    let global = start_federator(
        dir.path(),
        "global",
        &empty,
        &[
            "--cluster".into(),
            "global".into(),
            "--cluster-silent-after".into(),
            "2s".into(),
            "--alertmanager".into(),
            format!("http://{am}"),
        ],
    );
    // East reaches the global through a proxy the test can cut; west directly.
    let proxy = CuttingProxy::start(global.grpc).await;
    let upstream = |addr: SocketAddr, cluster: &str| -> Vec<String> {
        vec![
            "--cluster".into(),
            cluster.into(),
            "--upstream".into(),
            format!("http://{addr}"),
            "--upstream-heartbeat".into(),
            "300ms".into(),
        ]
    };
    let east = start_federator(dir.path(), "east", &checks, &upstream(proxy.addr, "east"));
    let west = start_federator(dir.path(), "west", &checks, &upstream(global.grpc, "west"));
    let mut agents = vec![
        start_agent(dir.path(), "e1", east.grpc),
        start_agent(dir.path(), "e2", east.grpc),
        start_agent(dir.path(), "w1", west.grpc),
    ];

    // 1. The global sees both clusters, their agents and their checks' states.
    let client = reqwest::Client::new();
    let api = format!("http://{}/api/v1", global.http);
    let clusters = wait_for("both clusters with their agents", WAIT, || async {
        let c = get_json(&client, &format!("{api}/clusters")).await?;
        let ok = cluster(&c, "east")?["agents"] == 2
            && cluster(&c, "west")?["agents"] == 1
            && cluster(&c, "east")?["failing"] == 1
            && cluster(&c, "west")?["failing"] == 1;
        ok.then_some(c)
    })
    .await;
    assert_eq!(
        clusters["clusters"].as_array().unwrap().len(),
        2,
        "the global has no agents or checks of its own, so only the two clusters show: {clusters}"
    );
    for name in ["east", "west"] {
        let c = cluster(&clusters, name).unwrap();
        assert_eq!(
            (&c["connected"], &c["silent"], &c["state"], &c["checks"]),
            (
                &Value::Bool(true),
                &Value::Bool(false),
                &Value::from("Failing"),
                &Value::from(3)
            ),
            "{c}"
        );
    }
    let matrix = wait_for(
        "the EveryNode check healthy on all 3 nodes",
        WAIT,
        || async {
            let m = get_json(&client, &format!("{api}/matrix")).await?;
            (row(&m, "shop/reach")?["summary"] == "healthy on 3 nodes in 2 clusters").then_some(m)
        },
    )
    .await;
    assert_eq!(matrix["clusters"], serde_json::json!(["east", "west"]));
    let down = row(&matrix, "shop/down").unwrap();
    assert_eq!(down["state"], "Failing");
    assert_eq!(
        down["summary"], "failing in 2 of 2 clusters (2 of 2 targets)",
        "{down}"
    );
    let detail = get_json(&client, &format!("{api}/checks/shop/down"))
        .await
        .unwrap();
    let reasons: BTreeSet<&str> = detail["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["reason"].as_str())
        .collect();
    assert!(
        reasons.iter().all(|r| r.contains("connection refused")),
        "{reasons:?}"
    );
    let per_cluster: Vec<&str> = detail["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["cluster"].as_str().unwrap())
        .collect();
    assert_eq!(per_cluster, ["east", "west"]);
    let filtered = get_json(&client, &format!("{api}/matrix?cluster=west&state=Failing"))
        .await
        .unwrap();
    assert_eq!(filtered["clusters"], serde_json::json!(["west"]));
    let ids_shown: Vec<&str> = filtered["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids_shown, ["shop/down"]);
    for (path, status, says) in [
        (
            "matrix?state=Broken",
            400,
            "use Healthy, Failing or Unknown",
        ),
        ("matrix?label=team", 400, "must be KEY=VALUE"),
        (
            "checks/shop/nope",
            404,
            "no check \"shop/nope\" in any cluster",
        ),
        ("nodes/mars/e1", 404, "no cluster \"mars\""),
    ] {
        let resp = client.get(format!("{api}/{path}")).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), status, "{path}");
        let text = resp.text().await.unwrap();
        assert!(text.contains(says), "{path}: {text}");
    }

    // The global's web view, in Chromium, shows both clusters and the failing check in each.
    let browser = vigil_e2e::browser::Browser::start().await;
    let page = format!("http://{}/", global.http);
    browser.navigate(&page).await;
    browser
        .wait_for(
            "both clusters' columns and the failing check drawn",
            "document.querySelectorAll('#matrix thead th').length >= 3 && \
             [...document.querySelectorAll('#matrix tbody tr')].some(tr => tr.innerText.includes('shop/down'))",
            WAIT,
        )
        .await;
    let bar = browser.text("#clusters").await;
    assert!(bar.contains("east") && bar.contains("2 agents"), "{bar}");
    assert!(bar.contains("west") && bar.contains("1 agent"), "{bar}");
    let down = browser
        .eval(
            "(() => { const tr = [...document.querySelectorAll('#matrix tbody tr')]\
                 .find(tr => tr.querySelector('th').innerText.includes('shop/down'));\
               return [tr.querySelector('th').innerText, ...[...tr.querySelectorAll('td')].map(td => td.title)]; })()",
        )
        .await;
    let down: Vec<&str> = down
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        down[0].contains("failing in 2 of 2 clusters"),
        "the row says where it fails: {down:?}"
    );
    assert!(
        down[1..].len() == 2 && down[1..].iter().all(|t| t.starts_with("Failing")),
        "a red cell per cluster: {down:?}"
    );
    let shots = vigil_e2e::target_dir()
        .parent()
        .expect("target folder")
        .join("web-view-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    browser
        .screenshot(&shots.join("federation-global.png"))
        .await;

    // 2. East's link goes away (new connections fail too): east is silent, west is not.
    proxy.set_upstream(refusing_addr());
    proxy.cut();
    wait_for("east reported silent", WAIT, || async {
        let c = get_json(&client, &format!("{api}/clusters")).await?;
        let east = cluster(&c, "east")?;
        let west = cluster(&c, "west")?;
        (east["silent"] == true
            && east["state"] == "Unknown"
            && east["connected"] == false
            && west["silent"] == false)
            .then_some(())
    })
    .await;
    wait_for(
        "VigilClusterSilent for east in Alertmanager",
        WAIT,
        || async {
            cluster_silent_alert(&client, am, "east")
                .await
                .then_some(())
        },
    )
    .await;
    assert!(!cluster_silent_alert(&client, am, "west").await);
    let m = get_json(&client, &format!("{api}/matrix")).await.unwrap();
    assert_eq!(
        row(&m, "shop/down").unwrap()["cells"][0]["state"],
        "Unknown",
        "a silent cluster's cells are Unknown"
    );
    browser
        .wait_for(
            "the page to show east silent",
            "document.querySelector('#clusters').innerText.includes('silent')",
            WAIT,
        )
        .await;
    browser
        .screenshot(&shots.join("federation-global-east-silent.png"))
        .await;
    // East keeps taking results meanwhile; they wait in its upstream buffer.
    let taken_while_cut = ids(&east.results, None).len();
    wait_for("east to take more results while cut off", WAIT, || async {
        (ids(&east.results, None).len() > taken_while_cut + 20).then_some(())
    })
    .await;

    // 3. The link comes back: east recovers and the alert resolves.
    proxy.set_upstream(global.grpc);
    wait_for("east back", WAIT, || async {
        let c = get_json(&client, &format!("{api}/clusters")).await?;
        let east = cluster(&c, "east")?;
        (east["silent"] == false && east["connected"] == true && east["state"] == "Failing")
            .then_some(())
    })
    .await;
    wait_for("VigilClusterSilent resolved", WAIT, || async {
        (!cluster_silent_alert(&client, am, "east").await).then_some(())
    })
    .await;

    // 4. Agents stop (draining into their federators); every result each cluster took is at
    //    the global exactly once, under its own cluster.
    for a in &agents {
        a.signal(Signal::SIGTERM);
    }
    for a in &mut agents {
        a.wait_exit(WAIT).await;
    }
    for (fed, name) in [(&east, "east"), (&west, "west")] {
        let want = ids(&fed.results, None);
        assert!(want.len() > 50, "{name} took {} results", want.len());
        let deadline = std::time::Instant::now() + WAIT;
        let got = loop {
            let got = ids(&global.results, Some(name));
            let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
            if missing.is_empty() {
                break got;
            }
            if std::time::Instant::now() > deadline {
                let m = reqwest::get(format!("http://{}/metrics", fed.http))
                    .await
                    .unwrap()
                    .text()
                    .await
                    .unwrap();
                let upstream: Vec<&str> = m
                    .lines()
                    .filter(|l| l.starts_with("vigil_upstream"))
                    .collect();
                panic!(
                    "{name}: {} of {} results never reached the global, e.g. {:?}; {name}'s upstream metrics: {upstream:#?}",
                    missing.len(),
                    want.len(),
                    &missing[..missing.len().min(5)]
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(k)).collect();
        assert!(
            extra.is_empty(),
            "{name}: results the cluster never took: {extra:?}"
        );
        let twice: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "{name}: written twice at the global: {twice:?}"
        );
    }
    let metrics = reqwest::get(format!("http://{}/metrics", east.http))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        vigil_e2e::metric_value(
            &metrics,
            "vigil_upstream_results_total",
            "result=\"dropped\""
        ),
        None,
        "nothing was dropped from east's upstream buffer"
    );
    drop((global.proc, east.proc, west.proc));
}

/// A CA, a server certificate for 127.0.0.1, and client certificates naming clusters.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Self {
        let dir = dir.join("pki");
        std::fs::create_dir(&dir).unwrap();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "vigil federation CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca, ca_key);
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        let leaf = |name: &str, sans: Vec<String>, cn: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut p = rcgen::CertificateParams::new(sans).unwrap();
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
            let cert = p.signed_by(&key, &issuer).unwrap();
            std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
            std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
        };
        leaf("server", vec!["127.0.0.1".into()], "global");
        leaf("east", Vec::new(), "east");
        Self { dir }
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_links_over_mutual_tls_under_its_certificates_name() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let (target, _target_task) = http_target().await;
    let checks = write_checks(dir.path(), target);
    let empty = dir.path().join("global-checks");
    std::fs::create_dir(&empty).unwrap();
    let global = start_federator(
        dir.path(),
        "global",
        &empty,
        &[
            "--tls-cert".into(),
            pki.path("server.pem"),
            "--tls-key".into(),
            pki.path("server.key"),
            "--tls-client-ca".into(),
            pki.path("ca.pem"),
        ],
    );
    let tls_upstream = |cluster: &str| -> Vec<String> {
        vec![
            "--cluster".into(),
            cluster.into(),
            "--upstream".into(),
            format!("https://{}", global.grpc),
            "--upstream-ca".into(),
            pki.path("ca.pem"),
            "--upstream-cert".into(),
            pki.path("east.pem"),
            "--upstream-key".into(),
            pki.path("east.key"),
        ]
    };
    // A federator holding east's certificate but calling itself west is refused.
    let impostor = start_federator(dir.path(), "impostor", &checks, &tls_upstream("west"));
    let east = start_federator(dir.path(), "east", &checks, &tls_upstream("east"));
    let _agent = start_agent(dir.path(), "e1", east.grpc);

    let client = reqwest::Client::new();
    let api = format!("http://{}/api/v1/clusters", global.http);
    wait_for("east linked over mutual TLS", WAIT, || async {
        let c = get_json(&client, &api).await?;
        (cluster(&c, "east")?["connected"] == true && cluster(&c, "east")?["agents"] == 1)
            .then_some(())
    })
    .await;
    wait_for("the impostor refused with the reason", WAIT, || async {
        impostor
            .proc
            .log_text()
            .contains(r#"client certificate is for cluster "east" but its Hello says "west""#)
            .then_some(())
    })
    .await;
    let c = get_json(&client, &api).await.unwrap();
    assert!(cluster(&c, "west").is_none(), "{c}");
    drop((global.proc, east.proc, impostor.proc));
}
