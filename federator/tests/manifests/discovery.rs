//! A stand-in API server for `kubectl apply --dry-run=client`: it answers API discovery for the
//! kinds it is given and 404 for every object, so kubectl maps and reads every document as it
//! would against a real cluster, without one. It listens on 127.0.0.1 only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One resource kind to announce.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Kind {
    pub api_version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
}

pub struct Server {
    pub addr: SocketAddr,
    /// Every path asked for, in order.
    pub requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn start(kinds: Vec<Kind>) -> Server {
    // group/version path -> resource list
    let mut lists: BTreeMap<String, Vec<Kind>> = BTreeMap::new();
    for kind in kinds {
        let path = match kind.api_version.split_once('/') {
            None => format!("/api/{}", kind.api_version),
            Some(_) => format!("/apis/{}", kind.api_version),
        };
        let list = lists.entry(path).or_default();
        if !list.contains(&kind) {
            list.push(kind);
        }
    }
    let lists = Arc::new(lists);
    let requests = Arc::new(Mutex::new(Vec::new()));
    let recorded = requests.clone();
    let app = axum::Router::new().fallback(move |uri: Uri| {
        let lists = lists.clone();
        let recorded = recorded.clone();
        async move {
            recorded.lock().unwrap().push(uri.path().to_owned());
            answer(&lists, uri.path())
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server {
        addr,
        requests,
        task,
    }
}

fn answer(lists: &BTreeMap<String, Vec<Kind>>, path: &str) -> Response {
    if path == "/api" {
        return Json(json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]}))
        .into_response();
    }
    if path == "/apis" {
        let groups: Vec<Value> = lists
            .values()
            .flatten()
            .filter_map(|k| k.api_version.split_once('/'))
            .map(|(group, version)| {
                let gv = json!({"groupVersion": format!("{group}/{version}"), "version": version});
                json!({"name": group, "versions": [gv], "preferredVersion": gv})
            })
            .collect();
        let mut groups = groups;
        groups.dedup();
        return Json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
            .into_response();
    }
    if let Some(kinds) = lists.get(path) {
        let resources: Vec<Value> = kinds
            .iter()
            .map(|k| {
                json!({"name": k.plural, "singularName": "", "namespaced": k.namespaced,
                    "kind": k.kind, "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]})
            })
            .collect();
        return Json(json!({"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": kinds[0].api_version, "resources": resources}))
        .into_response();
    }
    (
        StatusCode::NOT_FOUND,
        Json(
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": "NotFound", "code": 404, "message": format!("{path} not found")}),
        ),
    )
        .into_response()
}
