//! Query parameters and bodies of resource requests: selectors, flags, watch, write and delete options.

use std::time::Duration;

use serde_json::{Value, json};

use super::Params;
use crate::Shared;
use crate::route::Target;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{DeleteOptions, Propagation, WriteOptions};
use crate::watch::WatchRequest;

pub(super) fn watch_request(
    shared: &Shared,
    target: &Target,
    params: &Params,
) -> Result<WatchRequest, ApiError> {
    let (labels, mut fields) = selectors(params)?;
    if let Some(name) = &target.name {
        let combined = format!(
            "metadata.name={name},{}",
            params.get("fieldSelector").map_or("", String::as_str)
        );
        fields =
            FieldSelector::parse(&combined).map_err(|e| ApiError::bad_request(e.to_string()))?;
    }
    let mut from = match params.get("resourceVersion").filter(|rv| !rv.is_empty()) {
        Some(text) => Some(text.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "resourceVersion={text:?}: expected a resourceVersion from this server"
            ))
        })?),
        None => None,
    };
    let timeout = match params.get("timeoutSeconds").filter(|t| !t.is_empty()) {
        Some(text) => Duration::from_secs(text.parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("timeoutSeconds={text:?} is not a number"))
        })?),
        None => Duration::ZERO,
    };
    // 0 or absent: the server's default, as on the real server.
    let timeout = if timeout.is_zero() {
        shared.options.default_watch_timeout
    } else {
        timeout
    };
    let bookmarks = flag(params, "allowWatchBookmarks")?;
    let send_initial_events = match params.get("sendInitialEvents") {
        Some(_) => Some(flag(params, "sendInitialEvents")?),
        None => None,
    };
    if send_initial_events == Some(true) {
        // The initial events are the current state, whatever resourceVersion came with them.
        from = None;
        if params.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan") {
            return Err(ApiError::unprocessable(
                "sendInitialEvents=true requires resourceVersionMatch=NotOlderThan",
            ));
        }
        if !bookmarks {
            return Err(ApiError::unprocessable(
                "sendInitialEvents=true requires allowWatchBookmarks=true",
            ));
        }
    }
    Ok(WatchRequest {
        kind: target.kind.clone(),
        namespace: target.namespace.clone(),
        labels,
        fields,
        from,
        bookmarks,
        send_initial_events,
        timeout,
        metadata_only: false,
    })
}

pub(super) fn selectors(params: &Params) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let text = |name: &str| params.get(name).map_or("", String::as_str);
    let labels = LabelSelector::parse(text("labelSelector"))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let fields = FieldSelector::parse(text("fieldSelector"))
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok((labels, fields))
}

pub(super) fn flag(params: &Params, name: &str) -> Result<bool, ApiError> {
    match params.get(name).map(String::as_str) {
        None | Some("" | "false" | "0") => Ok(false),
        Some("true" | "1") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name}={other:?}: expected true or false"
        ))),
    }
}

pub(super) fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the request needs a JSON body"));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid JSON: {e}")))
}

fn dry_run(value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "dryRun={other:?}: the only supported value is All"
        ))),
    }
}

pub(super) fn write_options(params: &Params) -> Result<WriteOptions, ApiError> {
    Ok(WriteOptions {
        dry_run: dry_run(params.get("dryRun").map(String::as_str))?,
        field_manager: params
            .get("fieldManager")
            .filter(|m| !m.is_empty())
            .cloned(),
    })
}

fn propagation(text: &str) -> Result<Propagation, ApiError> {
    match text {
        "Background" => Ok(Propagation::Background),
        "Foreground" => Ok(Propagation::Foreground),
        "Orphan" => Ok(Propagation::Orphan),
        other => Err(ApiError::bad_request(format!(
            "propagationPolicy={other:?}: expected Background, Foreground or Orphan"
        ))),
    }
}

pub(super) fn delete_options(params: &Params, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let body: Value = if body.is_empty() {
        json!({})
    } else {
        json_body(body)?
    };
    let mut options = DeleteOptions {
        dry_run: dry_run(params.get("dryRun").map(String::as_str))?
            || body["dryRun"]
                .as_array()
                .is_some_and(|d| d.iter().any(|v| v == "All")),
        uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        resource_version: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
        ..DeleteOptions::default()
    };
    if body["orphanDependents"] == json!(true) {
        options.propagation = Propagation::Orphan;
    }
    if let Some(policy) = body["propagationPolicy"].as_str() {
        options.propagation = propagation(policy)?;
    }
    if let Some(policy) = params.get("propagationPolicy").filter(|p| !p.is_empty()) {
        options.propagation = propagation(policy)?;
    }
    Ok(options)
}
