//! Nodes: their readiness and labels feed placement (agents run checks only on nodes that exist
//! and are Ready), and the agents' node diagnostics come back to them the way
//! node-problem-detector reports: a NodeCondition per problem class (`VigilMemoryPressure`,
//! `VigilKernelDeadlock`, ...) on the Node's status, and a Kubernetes Event per kernel-log match.
//! Writes are the leader's only, and only on change.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event as KubeEvent, EventSource, Node, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, NodeInfo};
use crate::state::{Health, State, is_agent_owned};

/// Watches Nodes until `cancel`, keeping the hub's node inventory current.
pub async fn watch_nodes(client: kube::Client, hub: Arc<Hub>, cancel: CancellationToken) {
    let api: Api<Node> = Api::all(client);
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut nodes: HashMap<String, NodeInfo> = HashMap::new();
    let mut relist: Option<HashMap<String, NodeInfo>> = None;
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            () = cancel.cancelled() => return,
        };
        match event {
            None => return,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "watching Nodes failed; retrying with backoff")
            }
            Some(Ok(Event::Init)) => relist = Some(HashMap::new()),
            Some(Ok(Event::InitApply(n))) => {
                if let Some(r) = relist.as_mut() {
                    let (name, info) = node_info(&n);
                    r.insert(name, info);
                }
            }
            Some(Ok(Event::InitDone)) => {
                nodes = relist.take().unwrap_or_default();
                hub.set_nodes(nodes.clone());
            }
            Some(Ok(Event::Apply(n))) => {
                let (name, info) = node_info(&n);
                nodes.insert(name, info);
                hub.set_nodes(nodes.clone());
            }
            Some(Ok(Event::Delete(n))) => {
                nodes.remove(n.metadata.name.as_deref().unwrap_or_default());
                hub.set_nodes(nodes.clone());
            }
        }
    }
}

fn node_info(n: &Node) -> (String, NodeInfo) {
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    (
        n.metadata.name.clone().unwrap_or_default(),
        NodeInfo {
            ready,
            labels: n.metadata.labels.clone().unwrap_or_default(),
        },
    )
}

/// One NodeCondition as the agents' results say it should be.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Wanted {
    status: &'static str,
    reason: String,
    message: String,
}

/// Per node, per problem class: what the node/* states say now. A class is known from the
/// `problem` detail of any of its results; it is True while any target of that class fails.
fn wanted_conditions(state: &State) -> BTreeMap<String, BTreeMap<String, Wanted>> {
    let mut out: BTreeMap<String, BTreeMap<String, Wanted>> = BTreeMap::new();
    for t in state.all_targets() {
        if !is_agent_owned(&t.key.check) || t.key.node.is_empty() {
            continue;
        }
        let Some(class) = t.last.details.get("problem").cloned() else {
            continue;
        };
        // Kernel-log matches are events, not states, unless the agent marks the match as a
        // lasting condition (hung task, lockup, read-only remount).
        let detail = |k: &str| t.last.details.get(k).is_some_and(|v| v == "true");
        if detail("event") && !detail("condition") {
            continue;
        }
        let failing = t.state == Health::Failing;
        let entry = out.entry(t.key.node.clone()).or_default();
        let w = entry.entry(class.clone()).or_insert(Wanted {
            status: "False",
            reason: format!("No{class}"),
            message: "no problem found by vigil-agent".to_owned(),
        });
        if failing {
            *w = Wanted {
                status: "True",
                reason: class,
                message: t.last.reason.clone(),
            };
        }
    }
    out
}

/// Writes NodeConditions and Events from the agents' node diagnostics while `leader`.
pub async fn report_problems(
    client: kube::Client,
    state: Arc<State>,
    mut leader: watch::Receiver<bool>,
    events_namespace: String,
    tick: Duration,
    cancel: CancellationToken,
) {
    let nodes: Api<Node> = Api::all(client.clone());
    let events: Api<KubeEvent> = Api::namespaced(client, &events_namespace);
    let mut written: HashMap<(String, String), Wanted> = HashMap::new();
    let mut seen_events: HashSet<(String, u64)> = HashSet::new();
    let mut first_pass = true;
    loop {
        tokio::select! {
            () = tokio::time::sleep(tick) => {}
            _ = leader.changed() => written.clear(),
            () = cancel.cancelled() => return,
        }
        if !*leader.borrow() {
            continue;
        }
        // Taken before the condition writes: a kernel-log match that arrives while they are
        // in flight waits for the next pass instead of being taken for old news by the first.
        let recent = state.recent("node/kmsg", 200).unwrap_or_default();
        for (node, classes) in wanted_conditions(&state) {
            let changed: Vec<(String, Wanted)> = classes
                .into_iter()
                .filter(|(class, w)| written.get(&(node.clone(), class.clone())) != Some(w))
                .collect();
            if changed.is_empty() {
                continue;
            }
            let now = Time(Timestamp::now());
            let conditions: Vec<serde_json::Value> = changed
                .iter()
                .map(|(class, w)| {
                    serde_json::json!({
                        "type": class,
                        "status": w.status,
                        "reason": w.reason,
                        "message": w.message,
                        "lastHeartbeatTime": now,
                        "lastTransitionTime": now,
                    })
                })
                .collect();
            // Strategic merge: `conditions` merge by `type`, leaving the kubelet's own alone.
            let patch = serde_json::json!({"status": {"conditions": conditions}});
            match nodes
                .patch_status(&node, &PatchParams::default(), &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => {
                    for (class, w) in changed {
                        tracing::info!(%node, condition = %class, status = w.status, "node condition set");
                        written.insert((node.clone(), class), w);
                    }
                }
                Err(e) => {
                    tracing::warn!(%node, error = %e, "setting node conditions failed; retrying")
                }
            }
        }
        // Kernel-log matches: one Warning Event each, like node-problem-detector.
        for r in recent.iter().rev() {
            if r.details.get("event").is_none_or(|v| v != "true") {
                continue;
            }
            if !seen_events.insert((r.agent.clone(), r.seq)) || first_pass {
                continue;
            }
            let class = r
                .details
                .get("problem")
                .cloned()
                .unwrap_or_else(|| "KernelProblem".into());
            let event = kernel_event(&r.node, &class, &r.reason, &events_namespace);
            if let Err(e) = events.create(&PostParams::default(), &event).await {
                tracing::warn!(node = %r.node, error = %e, "creating a node Event failed");
            }
        }
        // Events from before this term were reported by someone else (or are old news).
        first_pass = false;
        if seen_events.len() > 10_000 {
            seen_events.clear();
            first_pass = true;
        }
    }
}

fn kernel_event(node: &str, reason: &str, message: &str, namespace: &str) -> KubeEvent {
    let now = Time(Timestamp::now());
    KubeEvent {
        metadata: ObjectMeta {
            generate_name: Some(format!("{node}.")),
            namespace: Some(namespace.to_owned()),
            ..Default::default()
        },
        involved_object: ObjectReference {
            kind: Some("Node".into()),
            name: Some(node.to_owned()),
            uid: Some(node.to_owned()),
            ..Default::default()
        },
        reason: Some(reason.to_owned()),
        message: Some(message.chars().take(1024).collect()),
        type_: Some("Warning".into()),
        source: Some(EventSource {
            component: Some("vigil-agent".into()),
            host: Some(node.to_owned()),
        }),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        reporting_component: Some("vigil.dev/vigil-agent".into()),
        reporting_instance: Some(node.to_owned()),
        ..Default::default()
    }
}
