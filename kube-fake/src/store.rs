//! The object store: objects per resource, one global resourceVersion counter, the bounded change
//! history that watches resume from, and the broadcast that feeds open watches.

mod apply;
mod delete;
mod meta;
mod write;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::resource::{Registry, ResourceKind};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, FieldCause};

pub use delete::{DeleteOptions, Propagation};
pub use write::{Part, WriteOptions};

/// A validation hook: returns the problems of an object about to be written (empty when valid).
pub type Validator = Arc<dyn Fn(&Value) -> Vec<FieldCause> + Send + Sync>;

/// What happened to an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// Created.
    Added,
    /// Changed.
    Modified,
    /// Removed.
    Deleted,
}

/// One committed write, as kept in the history and sent to watches.
#[derive(Debug)]
pub struct Change {
    /// The resourceVersion this write produced.
    pub rv: u64,
    /// Group of the resource.
    pub group: String,
    /// Plural of the resource.
    pub plural: String,
    /// Added, modified or deleted.
    pub kind: ChangeKind,
    /// The object after the write (the last state for deletions).
    pub object: Value,
    /// The object before the write, for watches whose selector it no longer (or newly) matches.
    pub previous: Option<Value>,
}

/// What open watches are told.
#[derive(Clone, Debug)]
pub enum Notice {
    /// A committed write.
    Change(Arc<Change>),
    /// Every earlier resourceVersion became too old: watches end with a 410.
    Compacted,
}

/// Where a watch starts.
#[derive(Debug)]
pub enum WatchStart {
    /// From "now", with the current objects as synthetic ADDED events.
    Current(Vec<Value>),
    /// Replaying the retained history after a resourceVersion.
    Replay(Vec<Arc<Change>>),
}

type ResourceKey = (String, String);
type ObjectKey = (String, String);

/// All objects and the history. Callers hold it under one mutex.
pub struct Store {
    rv: u64,
    objects: HashMap<ResourceKey, BTreeMap<ObjectKey, Value>>,
    history: VecDeque<Arc<Change>>,
    history_limit: usize,
    /// A watch may resume from any resourceVersion >= this.
    history_start: u64,
    registry: Registry,
    notices: broadcast::Sender<Notice>,
    rng: u64,
    validators: HashMap<ResourceKey, Validator>,
}

impl Store {
    /// An empty store with the built-in kinds, keeping `history_limit` changes for watches to resume from.
    pub fn new(history_limit: usize, notices: broadcast::Sender<Notice>) -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed);
        let mut validators: HashMap<ResourceKey, Validator> = HashMap::new();
        let crd_validator: Validator = Arc::new(|crd: &Value| match ResourceKind::from_crd(crd) {
            Ok(_) => Vec::new(),
            Err(error) => vec![FieldCause::invalid("spec", error.to_string())],
        });
        validators.insert(crd_key(), crd_validator);
        Self {
            rv: 1,
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
            history_start: 1,
            registry: Registry::with_builtins(),
            notices,
            rng: seed,
            validators,
        }
    }

    /// The known kinds.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Adds (or replaces) a kind.
    pub fn register(&mut self, kind: ResourceKind) {
        self.registry.register(kind);
    }

    /// Installs a validation hook for a group and plural.
    pub fn set_validator(&mut self, group: &str, plural: &str, validator: Validator) {
        self.validators
            .insert((group.to_string(), plural.to_string()), validator);
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion a watch or continued list may resume from.
    pub fn history_start(&self) -> u64 {
        self.history_start
    }

    /// One object, with `apiVersion`/`kind` of the requested kind.
    pub fn get(&self, kind: &ResourceKind, namespace: &str, name: &str) -> Result<Value, ApiError> {
        self.find(kind, namespace, name)
            .map(|object| present(kind, object.clone()))
            .ok_or_else(|| ApiError::not_found(&kind.group, &kind.plural, name))
    }

    /// Objects of a kind, in one namespace or all (`None`), that match the selectors, sorted by namespace
    /// and name, with the current resourceVersion.
    pub fn list(
        &self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> (Vec<Value>, u64) {
        let items = self
            .objects
            .get(&resource_key(kind))
            .into_iter()
            .flat_map(|objects| objects.iter())
            .filter(|((ns, _), _)| namespace.is_none_or(|wanted| wanted == ns))
            .filter(|(_, object)| labels.matches(object) && fields.matches(object))
            .map(|(_, object)| present(kind, object.clone()))
            .collect();
        (items, self.rv)
    }

    /// Every object of a group and plural, all namespaces (for test inspection).
    pub fn all_of(&self, group: &str, plural: &str) -> Vec<Value> {
        let key = (group.to_string(), plural.to_string());
        self.objects
            .get(&key)
            .map(|objects| objects.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Starts a watch: the events before "live" and a receiver for what follows, atomically.
    pub fn watch(
        &self,
        kind: &ResourceKind,
        from: Option<u64>,
    ) -> Result<(WatchStart, broadcast::Receiver<Notice>, u64), ApiError> {
        let receiver = self.notices.subscribe();
        let start = match from {
            None | Some(0) => {
                let objects = self.objects.get(&resource_key(kind));
                WatchStart::Current(
                    objects
                        .into_iter()
                        .flat_map(|o| o.values().cloned())
                        .collect(),
                )
            }
            Some(rv) if rv < self.history_start => {
                return Err(ApiError::expired(format!(
                    "too old resource version: {rv} ({})",
                    self.history_start
                )));
            }
            Some(rv) => WatchStart::Replay(
                self.history
                    .iter()
                    .filter(|c| c.rv > rv && c.group == kind.group && c.plural == kind.plural)
                    .cloned()
                    .collect(),
            ),
        };
        Ok((start, receiver, self.rv))
    }

    /// Makes every resourceVersion before now too old: open watches end with a 410, new watches from an
    /// older resourceVersion get one.
    pub fn compact(&mut self) {
        self.history.clear();
        self.history_start = self.rv;
        let _ = self.notices.send(Notice::Compacted);
    }

    fn find(&self, kind: &ResourceKind, namespace: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(&resource_key(kind))?
            .get(&(namespace.to_string(), name.to_string()))
    }

    fn validate(&self, kind: &ResourceKind, object: &Value) -> Result<(), ApiError> {
        let Some(validator) = self.validators.get(&resource_key(kind)) else {
            return Ok(());
        };
        let causes = validator(object);
        if causes.is_empty() {
            return Ok(());
        }
        Err(ApiError::invalid(
            &kind.group,
            &kind.kind,
            meta::name(object),
            &causes,
        ))
    }

    /// Stores (or removes, for `Deleted`) an object under a new resourceVersion and tells the watches.
    fn commit(
        &mut self,
        kind: &ResourceKind,
        change: ChangeKind,
        mut object: Value,
        previous: Option<Value>,
    ) -> Value {
        self.rv += 1;
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let key = (
            meta::namespace(&object).to_string(),
            meta::name(&object).to_string(),
        );
        let objects = self.objects.entry(resource_key(kind)).or_default();
        match change {
            ChangeKind::Deleted => {
                objects.remove(&key);
            }
            _ => {
                objects.insert(key, object.clone());
            }
        }
        if change != ChangeKind::Deleted
            && resource_key(kind) == crd_key()
            && let Ok(kinds) = ResourceKind::from_crd(&object)
        {
            // A created CustomResourceDefinition is served at once (the real server takes a moment).
            kinds.into_iter().for_each(|k| self.registry.register(k));
        }
        let change = Arc::new(Change {
            rv: self.rv,
            group: kind.group.clone(),
            plural: kind.plural.clone(),
            kind: change,
            object: object.clone(),
            previous,
        });
        self.history.push_back(change.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.history_start = self.history_start.max(dropped.rv);
            }
        }
        let _ = self.notices.send(Notice::Change(change));
        present(kind, object)
    }

    /// A pseudo-random number (splitmix64), for uids and generated names.
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn crd_key() -> ResourceKey {
    (
        "apiextensions.k8s.io".to_string(),
        "customresourcedefinitions".to_string(),
    )
}

fn resource_key(kind: &ResourceKind) -> ResourceKey {
    (kind.group.clone(), kind.plural.clone())
}

/// The object as served for a kind: `apiVersion` and `kind` of the version asked for.
pub fn present(kind: &ResourceKind, mut object: Value) -> Value {
    if let Value::Object(map) = &mut object {
        map.insert("apiVersion".into(), json!(kind.api_version()));
        map.insert("kind".into(), json!(kind.kind));
    }
    object
}

/// The object as `PartialObjectMetadata` (what clients asking for metadata only get).
pub fn partial_metadata(object: &Value) -> Value {
    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": object["metadata"]})
}

#[cfg(test)]
#[path = "store/tests.rs"]
mod tests;
