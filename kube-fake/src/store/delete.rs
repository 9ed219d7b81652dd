//! Deletes: preconditions, finalizers (deletionTimestamp first), owner-reference cascade and namespaces.

use serde_json::{Value, json};

use super::meta;
use super::{ChangeKind, Store, present};
use crate::resource::ResourceKind;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;

/// `propagationPolicy` of a delete.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Propagation {
    /// Dependents are deleted after the owner (the default here).
    #[default]
    Background,
    /// Dependents are deleted before the owner.
    Foreground,
    /// Dependents keep living; their owner reference is removed.
    Orphan,
}

/// Options of a delete.
#[derive(Clone, Debug, Default)]
pub struct DeleteOptions {
    /// What happens to dependents.
    pub propagation: Propagation,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

impl Store {
    /// DELETE of one object: marks it deleting while finalizers remain, else removes it and its dependents.
    pub fn delete(
        &mut self,
        kind: &ResourceKind,
        namespace: &str,
        name: &str,
        options: &DeleteOptions,
    ) -> Result<Value, ApiError> {
        let namespace = if kind.namespaced { namespace } else { "" };
        let existing = self
            .find(kind, namespace, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&kind.group, &kind.plural, name))?;
        if let Some(uid) = &options.uid
            && uid != meta::uid(&existing)
        {
            let why = format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                meta::uid(&existing)
            );
            return Err(ApiError::conflict(&kind.group, &kind.plural, name, &why));
        }
        if let Some(rv) = &options.resource_version
            && rv != meta::resource_version(&existing)
        {
            let why = format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                meta::resource_version(&existing)
            );
            return Err(ApiError::conflict(&kind.group, &kind.plural, name, &why));
        }
        if options.dry_run {
            return Ok(present(kind, existing));
        }
        Ok(self.remove(kind, existing, options.propagation))
    }

    /// DELETE of a collection: deletes every object that matches, returning them.
    pub fn delete_collection(
        &mut self,
        kind: &ResourceKind,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
        options: &DeleteOptions,
    ) -> Vec<Value> {
        let (matching, _) = self.list(kind, namespace, labels, fields);
        if options.dry_run {
            return matching;
        }
        matching
            .into_iter()
            .map(|object| self.remove(kind, object, options.propagation))
            .collect()
    }

    /// Removes an object now (or marks it deleting while it has finalizers) and handles its dependents.
    pub(super) fn remove(
        &mut self,
        kind: &ResourceKind,
        existing: Value,
        propagation: Propagation,
    ) -> Value {
        if meta::has_finalizers(&existing) {
            if meta::is_deleting(&existing) {
                return present(kind, existing);
            }
            let mut marked = existing.clone();
            marked["metadata"]["deletionTimestamp"] = json!(meta::now());
            marked["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            return self.commit(kind, ChangeKind::Modified, marked, Some(existing));
        }
        if propagation == Propagation::Foreground {
            self.cascade(kind, &existing, propagation);
        }
        let object = self.commit(kind, ChangeKind::Deleted, existing.clone(), Some(existing));
        if propagation != Propagation::Foreground {
            self.cascade(kind, &object, propagation);
        }
        object
    }

    /// Garbage collection of an owner's dependents (synchronous here), and of a deleted namespace's objects.
    pub(super) fn cascade(
        &mut self,
        owner: &ResourceKind,
        owner_object: &Value,
        propagation: Propagation,
    ) {
        let owner_uid = meta::uid(owner_object).to_string();
        let owner_namespace = meta::namespace(owner_object);
        let deleted_namespace = (owner.group.is_empty() && owner.plural == "namespaces")
            .then(|| meta::name(owner_object));
        let mut dependents = Vec::new();
        for ((group, plural), objects) in &self.objects {
            for ((namespace, _), object) in objects {
                let owned = meta::is_owned_by(object, &owner_uid)
                    && (!owner.namespaced || namespace.is_empty() || namespace == owner_namespace);
                let in_deleted_namespace =
                    deleted_namespace.is_some_and(|n| !n.is_empty() && n == namespace);
                if owned || in_deleted_namespace {
                    dependents.push((group.clone(), plural.clone(), object.clone()));
                }
            }
        }
        for (group, plural, object) in dependents {
            let Some(kind) = self
                .registry
                .all()
                .iter()
                .find(|k| k.group == group && k.plural == plural)
                .cloned()
            else {
                continue;
            };
            if propagation == Propagation::Orphan && meta::is_owned_by(&object, &owner_uid) {
                let mut orphaned = object.clone();
                if let Some(Value::Array(owners)) =
                    orphaned.pointer_mut("/metadata/ownerReferences")
                {
                    owners.retain(|o| {
                        o.get("uid").and_then(Value::as_str) != Some(owner_uid.as_str())
                    });
                }
                self.commit(&kind, ChangeKind::Modified, orphaned, Some(object));
            } else if self
                .find(&kind, meta::namespace(&object), meta::name(&object))
                .is_some()
            {
                self.remove(&kind, object, Propagation::Background);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::PatchKind;
    use crate::store::{Part, WriteOptions};
    use std::sync::Arc;
    use tokio::sync::broadcast;

    const OPTIONS: WriteOptions = WriteOptions {
        dry_run: false,
        field_manager: None,
    };

    fn store() -> Store {
        Store::new(100, broadcast::channel(64).0)
    }

    fn kind(store: &Store, api_version: &str, plural: &str) -> Arc<ResourceKind> {
        store
            .registry()
            .find_api_version(api_version, plural)
            .unwrap()
    }

    fn hc(name: &str) -> Value {
        json!({"metadata": {"name": name}, "spec": {"interval": "10s"}})
    }

    #[test]
    fn finalizers_delay_deletion() {
        let mut store = store();
        let kind = kind(&store, "vigil.dev/v1alpha1", "healthchecks");
        let mut body = hc("web");
        body["metadata"]["finalizers"] = json!(["vigil.dev/cleanup"]);
        store.create(&kind, "shop", body, &OPTIONS).unwrap();
        let marked = store
            .delete(&kind, "shop", "web", &DeleteOptions::default())
            .unwrap();
        assert!(meta::is_deleting(&marked));
        assert!(store.get(&kind, "shop", "web").is_ok());
        let patch = json!({"metadata": {"finalizers": null}});
        store
            .patch(
                &kind,
                "shop",
                "web",
                Part::Main,
                PatchKind::Merge,
                &patch,
                &OPTIONS,
            )
            .unwrap();
        assert_eq!(store.get(&kind, "shop", "web").unwrap_err().code, 404);
    }

    #[test]
    fn delete_cascades_to_owned_objects_or_orphans_them() {
        let mut store = store();
        let hcs = kind(&store, "vigil.dev/v1alpha1", "healthchecks");
        let jobs = kind(&store, "batch/v1", "jobs");
        for (check, policy) in [("a", Propagation::Background), ("b", Propagation::Orphan)] {
            let owner = store.create(&hcs, "shop", hc(check), &OPTIONS).unwrap();
            let job = json!({"metadata": {"name": format!("{check}-run"), "ownerReferences": [
                {"apiVersion": "vigil.dev/v1alpha1", "kind": "HealthCheck", "name": check, "uid": owner["metadata"]["uid"]}
            ]}});
            store.create(&jobs, "shop", job, &OPTIONS).unwrap();
            let options = DeleteOptions {
                propagation: policy,
                ..DeleteOptions::default()
            };
            store.delete(&hcs, "shop", check, &options).unwrap();
        }
        assert_eq!(store.get(&jobs, "shop", "a-run").unwrap_err().code, 404);
        let orphan = store.get(&jobs, "shop", "b-run").unwrap();
        assert_eq!(orphan["metadata"]["ownerReferences"], json!([]));
    }

    #[test]
    fn delete_preconditions_conflict() {
        let mut store = store();
        let kind = kind(&store, "coordination.k8s.io/v1", "leases");
        store
            .create(
                &kind,
                "kube-system",
                json!({"metadata": {"name": "leader"}}),
                &OPTIONS,
            )
            .unwrap();
        let options = DeleteOptions {
            uid: Some("other".into()),
            ..DeleteOptions::default()
        };
        let error = store
            .delete(&kind, "kube-system", "leader", &options)
            .unwrap_err();
        assert_eq!(error.code, 409);
        assert!(
            error
                .message
                .contains("Precondition failed: UID in precondition: other")
        );
    }

    #[test]
    fn deleting_a_namespace_removes_its_objects() {
        let mut store = store();
        let namespaces = kind(&store, "v1", "namespaces");
        let maps = kind(&store, "v1", "configmaps");
        store
            .create(
                &namespaces,
                "",
                json!({"metadata": {"name": "shop"}}),
                &OPTIONS,
            )
            .unwrap();
        store
            .create(&maps, "shop", json!({"metadata": {"name": "c"}}), &OPTIONS)
            .unwrap();
        store
            .create(&maps, "other", json!({"metadata": {"name": "c"}}), &OPTIONS)
            .unwrap();
        store
            .delete(&namespaces, "", "shop", &DeleteOptions::default())
            .unwrap();
        assert!(store.get(&maps, "shop", "c").is_err());
        assert!(store.get(&maps, "other", "c").is_ok());
    }
}
