//! Watches HealthChecks on the API server (kube-runtime's watcher: list, then watch, relisting on
//! 410 Gone) and keeps the catalog of every object with its validation verdict; valid checks go
//! to the hub, which places them on agents and pushes new Assignments at once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::discovery::ApiResource;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::loader::LoadError;
use crate::resource::HealthCheck;

/// One HealthCheck as the API server has it, and what validation said.
#[derive(Clone, Debug)]
pub struct Entry {
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    /// The parsed, valid check, or every problem (each naming its field).
    pub verdict: Result<HealthCheck, Vec<String>>,
    /// What a valid check probes, for display (`status.target`), worked out once per change.
    pub target: String,
}

impl Entry {
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Every HealthCheck by `namespace/name`; `changed` ticks on every update.
#[derive(Clone)]
pub struct Catalog {
    entries: Arc<Mutex<BTreeMap<String, Entry>>>,
    changed: watch::Sender<u64>,
}

impl Default for Catalog {
    fn default() -> Self {
        Self {
            entries: Arc::default(),
            changed: watch::channel(0).0,
        }
    }
}

impl Catalog {
    pub fn entries(&self) -> Vec<Entry> {
        self.entries.lock().unwrap().values().cloned().collect()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn replace(&self, entries: BTreeMap<String, Entry>) {
        *self.entries.lock().unwrap() = entries;
        self.changed.send_modify(|g| *g += 1);
    }

    fn upsert(&self, entry: Entry) {
        self.entries.lock().unwrap().insert(entry.id(), entry);
        self.changed.send_modify(|g| *g += 1);
    }

    fn remove(&self, id: &str) {
        self.entries.lock().unwrap().remove(id);
        self.changed.send_modify(|g| *g += 1);
    }
}

/// Parses and validates one object: a schema-valid object can still fail deeper validation
/// (an unparsable duration, a bad regex, contradicting options); that makes it `Valid=False`.
pub fn entry(object: &DynamicObject) -> Entry {
    let namespace = object
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let name = object.metadata.name.clone().unwrap_or_default();
    let verdict = serde_json::to_value(object)
        .map_err(|e| vec![e.to_string()])
        .and_then(|value| {
            serde_path_to_error::deserialize::<_, HealthCheck>(value).map_err(|e| {
                let path = e.path().to_string();
                vec![format!("{path}: {}", e.into_inner())]
            })
        })
        .and_then(|check| {
            let problems = check.validate();
            if problems.is_empty() {
                Ok(check)
            } else {
                Err(problems.iter().map(ToString::to_string).collect())
            }
        });
    let target = verdict
        .as_ref()
        .map(|check| crate::spec::check_spec(check).target)
        .unwrap_or_default();
    Entry {
        namespace,
        name,
        generation: object.metadata.generation,
        verdict,
        target,
    }
}

/// Hands the valid checks to the hub and the refused ones to its error list.
fn publish(catalog: &Catalog, hub: &Hub) {
    let mut checks = Vec::new();
    let mut errors = Vec::new();
    for e in catalog.entries() {
        let source = format!("HealthCheck {}", e.id());
        match e.verdict {
            Ok(check) => checks.push((check, source)),
            Err(problems) => errors.extend(problems.into_iter().map(|message| LoadError {
                file: source.clone().into(),
                doc: None,
                message,
            })),
        }
    }
    hub.set_check_defs(checks, errors);
}

/// Watches HealthChecks in `namespace` (all when `None`) until `cancel`.
pub async fn run(
    client: kube::Client,
    namespace: Option<String>,
    catalog: Catalog,
    hub: Arc<Hub>,
    cancel: CancellationToken,
) {
    let resource = ApiResource::erase::<HealthCheck>(&());
    let api: Api<DynamicObject> = match &namespace {
        Some(ns) => Api::namespaced_with(client, ns, &resource),
        None => Api::all_with(client, &resource),
    };
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let mut relisting: Option<BTreeMap<String, Entry>> = None;
    loop {
        let event = tokio::select! {
            e = events.next() => e,
            () = cancel.cancelled() => return,
        };
        match event {
            None => return,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "watching HealthChecks failed; retrying with backoff");
            }
            Some(Ok(Event::Init)) => relisting = Some(BTreeMap::new()),
            Some(Ok(Event::InitApply(o))) => {
                let e = entry(&o);
                if let Some(list) = relisting.as_mut() {
                    list.insert(e.id(), e);
                }
            }
            Some(Ok(Event::InitDone)) => {
                let list = relisting.take().unwrap_or_default();
                tracing::info!(checks = list.len(), "HealthChecks listed");
                catalog.replace(list);
                publish(&catalog, &hub);
            }
            Some(Ok(Event::Apply(o))) => {
                let e = entry(&o);
                if let Err(problems) = &e.verdict {
                    tracing::warn!(check = %e.id(), ?problems, "HealthCheck refused");
                }
                catalog.upsert(e);
                publish(&catalog, &hub);
            }
            Some(Ok(Event::Delete(o))) => {
                let e = entry(&o);
                tracing::info!(check = %e.id(), "HealthCheck deleted");
                catalog.remove(&e.id());
                publish(&catalog, &hub);
            }
        }
    }
}
