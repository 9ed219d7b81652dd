//! Writes: create, replace, patch (apply included), direct puts, and the shared update path.

use serde_json::{Map, Value, json};

use super::{ChangeKind, Propagation, Store, present};
use super::{apply, meta};
use crate::patch::{self, PatchKind};
use crate::resource::ResourceKind;
use crate::status::{ApiError, FieldCause};

/// The part of an object a write addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The object itself: `.status` is kept as stored for kinds with a status subresource.
    Main,
    /// The `/status` subresource: only `.status` changes.
    Status,
}

/// Options shared by writes.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    /// `dryRun=All`: validate and answer, store nothing.
    pub dry_run: bool,
    /// `fieldManager`: whose field set an apply patch records.
    pub field_manager: Option<String>,
}

impl Store {
    /// POST: creates an object in `namespace` (ignored for cluster-scoped kinds).
    pub fn create(
        &mut self,
        kind: &ResourceKind,
        namespace: &str,
        body: Value,
        options: &WriteOptions,
    ) -> Result<Value, ApiError> {
        if !meta::resource_version(&body).is_empty() {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created: clear metadata.resourceVersion",
            ));
        }
        self.create_object(kind, namespace, body, options, kind.drop_status_on_create)
    }

    fn create_object(
        &mut self,
        kind: &ResourceKind,
        namespace: &str,
        mut body: Value,
        options: &WriteOptions,
        drop_status: bool,
    ) -> Result<Value, ApiError> {
        check_identity(kind, namespace, None, &mut body)?;
        let mut name = meta::name(&body).to_string();
        if name.is_empty() {
            let prefix = meta::text(&body, "generateName").to_string();
            if prefix.is_empty() {
                let cause = FieldCause::new(
                    "metadata.name",
                    "FieldValueRequired",
                    "name or generateName is required",
                );
                return Err(ApiError::invalid(&kind.group, &kind.kind, "", &[cause]));
            }
            name = self.generate_name(kind, namespace, &prefix);
            body["metadata"]["name"] = json!(name);
        }
        if let Some(problem) = meta::name_problem(&name) {
            let cause = FieldCause::invalid("metadata.name", problem);
            return Err(ApiError::invalid(&kind.group, &kind.kind, &name, &[cause]));
        }
        let namespace = meta::namespace(&body).to_string();
        if self.find(kind, &namespace, &name).is_some() {
            return Err(ApiError::already_exists(&kind.group, &kind.plural, &name));
        }
        if drop_status && let Value::Object(map) = &mut body {
            map.remove("status");
        }
        let uid = self.generate_uid();
        let metadata = &mut body["metadata"];
        metadata["uid"] = json!(uid);
        metadata["creationTimestamp"] = json!(meta::now());
        metadata["generation"] = json!(1);
        if let Value::Object(map) = metadata {
            for field in [
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ] {
                map.remove(field);
            }
        }
        self.validate(kind, &body)?;
        if options.dry_run {
            return Ok(present(kind, body));
        }
        Ok(self.commit(kind, ChangeKind::Added, body, None))
    }

    /// PUT: replaces an object (or its status); a set, stale `metadata.resourceVersion` is a 409 Conflict.
    pub fn replace(
        &mut self,
        kind: &ResourceKind,
        namespace: &str,
        name: &str,
        part: Part,
        mut body: Value,
        options: &WriteOptions,
    ) -> Result<Value, ApiError> {
        check_identity(kind, namespace, Some(name), &mut body)?;
        let namespace = meta::namespace(&body).to_string();
        let existing = self
            .find(kind, &namespace, name)
            .cloned()
            .ok_or_else(|| ApiError::not_found(&kind.group, &kind.plural, name))?;
        check_resource_version(kind, &existing, meta::resource_version(&body))?;
        let updated = merge_part(kind, part, &existing, body);
        self.finish_update(kind, existing, updated, options)
    }

    /// PATCH: applies a patch to an object (or its status). An apply patch creates a missing object.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        kind: &ResourceKind,
        namespace: &str,
        name: &str,
        part: Part,
        patch_kind: PatchKind,
        patch: &Value,
        options: &WriteOptions,
    ) -> Result<(Value, bool), ApiError> {
        let namespace = if kind.namespaced { namespace } else { "" };
        if patch_kind == PatchKind::Apply {
            let mut probe = patch.clone();
            check_identity(kind, namespace, Some(name), &mut probe)?;
            if !patch.get("apiVersion").is_some_and(Value::is_string)
                || !patch.get("kind").is_some_and(Value::is_string)
            {
                return Err(ApiError::bad_request(
                    "apply patches must set apiVersion and kind",
                ));
            }
        }
        let Some(existing) = self.find(kind, namespace, name).cloned() else {
            if patch_kind == PatchKind::Apply && part == Part::Main {
                let mut body = patch.clone();
                body["metadata"]["name"] = json!(name);
                apply::track(kind, part, &mut body, patch, manager(options));
                let drop_status = kind.drop_status_on_create;
                return self
                    .create_object(kind, namespace, body, options, drop_status)
                    .map(|created| (created, true));
            }
            return Err(ApiError::not_found(&kind.group, &kind.plural, name));
        };
        let mut patched = existing.clone();
        patch::apply(patch_kind, &mut patched, patch).map_err(|error| {
            if error.is_bad_request() {
                ApiError::bad_request(error.to_string())
            } else {
                ApiError::unprocessable(error.to_string())
            }
        })?;
        if !patched.is_object() {
            return Err(ApiError::unprocessable(
                "the patch would turn the object into something that is not a JSON object",
            ));
        }
        if patch_kind == PatchKind::Apply {
            apply::track(kind, part, &mut patched, patch, manager(options));
        }
        check_resource_version(kind, &existing, meta::resource_version(&patched))?;
        let updated = merge_part(kind, part, &existing, patched);
        self.finish_update(kind, existing, updated, options)
            .map(|object| (object, false))
    }

    /// Test set-up: creates or replaces an object as given (status included), bypassing validation hooks,
    /// resourceVersion checks and status rules; system metadata is filled in as for any write.
    pub fn put(&mut self, kind: &ResourceKind, mut object: Value) -> Result<Value, ApiError> {
        let namespace = meta::namespace(&object).to_string();
        check_identity(kind, &namespace, None, &mut object)?;
        let name = meta::name(&object).to_string();
        if let Some(problem) = meta::name_problem(&name) {
            return Err(ApiError::invalid(
                &kind.group,
                &kind.kind,
                &name,
                &[FieldCause::invalid("metadata.name", problem)],
            ));
        }
        let namespace = meta::namespace(&object).to_string();
        match self.find(kind, &namespace, &name).cloned() {
            Some(existing) => {
                object["metadata"]["resourceVersion"] = json!(meta::resource_version(&existing));
                let mut updated = object;
                meta::copy_system_metadata(&existing, &mut updated);
                self.finish_update(kind, existing, updated, &WriteOptions::default())
            }
            None => self.create_object(kind, &namespace, object, &WriteOptions::default(), false),
        }
    }

    /// Commits an update unless it changes nothing; finishes a deletion whose last finalizer went away.
    pub(super) fn finish_update(
        &mut self,
        kind: &ResourceKind,
        existing: Value,
        mut updated: Value,
        options: &WriteOptions,
    ) -> Result<Value, ApiError> {
        meta::copy_system_metadata(&existing, &mut updated);
        if updated.pointer("/metadata/managedFields").is_none()
            && let Some(managed) = existing.pointer("/metadata/managedFields")
        {
            // A write without managedFields keeps the stored ones, as on the real server.
            updated["metadata"]["managedFields"] = managed.clone();
        }
        let generation = existing
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let bump = i64::from(meta::spec_changed(kind, &existing, &updated));
        updated["metadata"]["generation"] = json!(generation + bump);
        updated["metadata"]["resourceVersion"] = json!(meta::resource_version(&existing));
        self.validate(kind, &updated)?;
        if meta::same_content(&existing, &updated) {
            return Ok(present(kind, existing));
        }
        if options.dry_run {
            return Ok(present(kind, updated));
        }
        if meta::is_deleting(&updated) && !meta::has_finalizers(&updated) {
            let object = self.commit(kind, ChangeKind::Deleted, updated, Some(existing));
            self.cascade(kind, &object, Propagation::Background);
            return Ok(object);
        }
        Ok(self.commit(kind, ChangeKind::Modified, updated, Some(existing)))
    }
}

/// Checks `apiVersion`, `kind`, namespace and name of a request body against the request, filling in
/// what is missing.
fn check_identity(
    kind: &ResourceKind,
    namespace: &str,
    name: Option<&str>,
    body: &mut Value,
) -> Result<(), ApiError> {
    let Value::Object(map) = body else {
        return Err(ApiError::bad_request(
            "the body of the request is not a JSON object",
        ));
    };
    let api_version = kind.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        Some(given) if given != api_version => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({given}) does not match the expected API version ({api_version})"
            )));
        }
        _ => {
            map.insert("apiVersion".into(), json!(api_version));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        Some(given) if given != kind.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({given}) does not match the expected kind ({})",
                kind.kind
            )));
        }
        _ => {
            map.insert("kind".into(), json!(kind.kind));
        }
    }
    let metadata = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(metadata) = metadata else {
        return Err(ApiError::bad_request("metadata must be an object"));
    };
    if kind.namespaced {
        match metadata.get("namespace").and_then(Value::as_str) {
            Some(given) if !given.is_empty() && given != namespace => {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the provided object ({given}) does not match the namespace sent on the request ({namespace})"
                )));
            }
            _ => {
                if namespace.is_empty() {
                    return Err(ApiError::bad_request(format!(
                        "{} is namespaced: the request needs a namespace",
                        kind.plural
                    )));
                }
                metadata.insert("namespace".into(), json!(namespace));
            }
        }
    } else {
        metadata.remove("namespace");
    }
    if let Some(name) = name {
        match metadata.get("name").and_then(Value::as_str) {
            Some(given) if !given.is_empty() && given != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({given}) does not match the name on the URL ({name})"
                )));
            }
            _ => {
                metadata.insert("name".into(), json!(name));
            }
        }
    }
    Ok(())
}

fn check_resource_version(
    kind: &ResourceKind,
    existing: &Value,
    given: &str,
) -> Result<(), ApiError> {
    if given.is_empty() || given == meta::resource_version(existing) {
        return Ok(());
    }
    let why = "the object has been modified; please apply your changes to the latest version and try again";
    Err(ApiError::conflict(
        &kind.group,
        &kind.plural,
        meta::name(existing),
        why,
    ))
}

/// What a write to `part` makes of the stored object.
fn merge_part(kind: &ResourceKind, part: Part, existing: &Value, mut written: Value) -> Value {
    let set_status = |target: &mut Value, status: Option<Value>| {
        if let Value::Object(map) = target {
            match status {
                Some(status) => map.insert("status".into(), status),
                None => map.remove("status"),
            };
        }
    };
    match part {
        Part::Status => {
            let mut updated = existing.clone();
            set_status(&mut updated, written.get("status").cloned());
            if let Some(managed) = written.pointer("/metadata/managedFields") {
                updated["metadata"]["managedFields"] = managed.clone();
            }
            updated
        }
        Part::Main if kind.status_subresource => {
            set_status(&mut written, existing.get("status").cloned());
            written
        }
        Part::Main => written,
    }
}

fn manager(options: &WriteOptions) -> &str {
    options.field_manager.as_deref().unwrap_or("unknown")
}
