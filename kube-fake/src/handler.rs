//! The HTTP handler: routes a request, fires injected faults, runs the verb and logs the request.

mod params;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};

use crate::Shared;
use crate::discovery;
use crate::fault::{RequestRecord, Verb};
use crate::patch::{self, PatchKind};
use crate::resource::ResourceKind;
use crate::route::{self, Route, Target};
use crate::status::{ApiError, json_response};
use crate::store::{Part, partial_metadata};
use crate::watch;
use params::{delete_options, flag, json_body, selectors, watch_request, write_options};

/// Largest request body accepted.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

type Params = HashMap<String, String>;

/// Answers one request.
pub async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let header_text = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header_text(header::CONTENT_TYPE);
    let accept = header_text(header::ACCEPT).unwrap_or_default();
    let host = header_text(header::HOST).unwrap_or_default();
    let path = parts.uri.path().to_string();
    let route = route::parse(&path, shared.store().registry());
    let mut verb = None;
    let mut resource = String::new();
    let response = match route {
        Err(error) => error.into_response(),
        Ok(Route::Resource(target)) => {
            resource = target.resource();
            match (
                Query::<Params>::try_from_uri(&parts.uri),
                axum::body::to_bytes(body, MAX_BODY_BYTES).await,
            ) {
                (Err(error), _) => {
                    ApiError::bad_request(format!("the query string cannot be parsed: {error}"))
                        .into_response()
                }
                (_, Err(error)) => {
                    ApiError::bad_request(format!("the request body cannot be read: {error}"))
                        .into_response()
                }
                (Ok(Query(params)), Ok(body)) => match verb_of(&parts.method, &target, &params) {
                    Err(error) => error.into_response(),
                    Ok(found) => {
                        verb = Some(found);
                        let fault = shared.recorder().take_fault(found, &resource);
                        match fault {
                            Some(error) => error.into_response(),
                            None => serve(
                                &shared,
                                found,
                                &target,
                                &params,
                                content_type.as_deref(),
                                &body,
                                accept.contains("as=PartialObjectMetadata"),
                            )
                            .unwrap_or_else(IntoResponse::into_response),
                        }
                    }
                },
            }
        }
        Ok(route) if parts.method == Method::GET => {
            let aggregated = discovery::wants_aggregated(&accept);
            let document =
                discovery::document(&route, shared.store().registry(), &host, aggregated);
            let mut response = json_response(StatusCode::OK, &document.unwrap_or(Value::Null));
            if aggregated && matches!(route, Route::CoreVersions | Route::Groups) {
                let value = HeaderValue::from_static(discovery::AGGREGATED_CONTENT_TYPE);
                response.headers_mut().insert(header::CONTENT_TYPE, value);
            }
            response
        }
        Ok(_) => ApiError::method_not_allowed(parts.method.as_str()).into_response(),
    };
    shared.recorder().record(RequestRecord {
        method: parts.method.to_string(),
        path,
        query: parts.uri.query().unwrap_or_default().to_string(),
        verb,
        resource,
        content_type,
        code: response.status().as_u16(),
    });
    response
}

fn verb_of(method: &Method, target: &Target, params: &Params) -> Result<Verb, ApiError> {
    let watching = target.watch_prefix || flag(params, "watch")?;
    let named = target.name.is_some();
    let verb = match *method {
        Method::GET if watching => Verb::Watch,
        Method::GET if named => Verb::Get,
        Method::GET => Verb::List,
        Method::POST if !named => Verb::Create,
        Method::PUT if named => Verb::Update,
        Method::PATCH if named => Verb::Patch,
        Method::DELETE if named => Verb::Delete,
        Method::DELETE => Verb::DeleteCollection,
        _ => return Err(ApiError::method_not_allowed(method.as_str())),
    };
    if target.part == Part::Status && !matches!(verb, Verb::Get | Verb::Update | Verb::Patch) {
        return Err(ApiError::method_not_allowed(method.as_str()));
    }
    Ok(verb)
}

fn serve(
    shared: &Arc<Shared>,
    verb: Verb,
    target: &Target,
    params: &Params,
    content_type: Option<&str>,
    body: &[u8],
    metadata_only: bool,
) -> Result<Response, ApiError> {
    let kind = &target.kind;
    let namespace = target.namespace.as_deref().unwrap_or_default();
    let name = target.name.as_deref().unwrap_or_default();
    let ok = |code: StatusCode, object: Value| {
        let object = if metadata_only {
            partial_metadata(&object)
        } else {
            object
        };
        Ok(json_response(code, &object))
    };
    match verb {
        Verb::Get => ok(StatusCode::OK, shared.store().get(kind, namespace, name)?),
        Verb::List => list(shared, target, params, metadata_only),
        Verb::Watch => {
            let mut request = watch_request(shared, target, params)?;
            request.metadata_only = metadata_only;
            Ok(watch::start(shared.clone(), request))
        }
        Verb::Create => {
            let object = shared.store().create(
                kind,
                namespace,
                json_body(body)?,
                &write_options(params)?,
            )?;
            ok(StatusCode::CREATED, object)
        }
        Verb::Update => {
            let options = write_options(params)?;
            ok(
                StatusCode::OK,
                shared.store().replace(
                    kind,
                    namespace,
                    name,
                    target.part,
                    json_body(body)?,
                    &options,
                )?,
            )
        }
        Verb::Patch => {
            let content_type = content_type.unwrap_or_default();
            let patch_kind = PatchKind::from_content_type(content_type)
                .ok_or_else(|| ApiError::unsupported_media_type(content_type))?;
            if patch_kind == PatchKind::Apply
                && params.get("fieldManager").is_none_or(String::is_empty)
            {
                return Err(ApiError::bad_request(
                    "fieldManager is required for apply patches: add ?fieldManager=NAME",
                ));
            }
            if let Some(force) = params.get("force")
                && !matches!(force.as_str(), "true" | "false")
            {
                return Err(ApiError::bad_request(format!(
                    "force={force:?}: expected true or false"
                )));
            }
            let patch = patch::decode(patch_kind, body)
                .map_err(|e| ApiError::bad_request(e.to_string()))?;
            let options = write_options(params)?;
            let (object, created) = shared.store().patch(
                kind,
                namespace,
                name,
                target.part,
                patch_kind,
                &patch,
                &options,
            )?;
            ok(
                if created {
                    StatusCode::CREATED
                } else {
                    StatusCode::OK
                },
                object,
            )
        }
        Verb::Delete => ok(
            StatusCode::OK,
            shared
                .store()
                .delete(kind, namespace, name, &delete_options(params, body)?)?,
        ),
        Verb::DeleteCollection => {
            let (labels, fields) = selectors(params)?;
            let options = delete_options(params, body)?;
            let mut store = shared.store();
            let items = store.delete_collection(
                kind,
                target.namespace.as_deref(),
                &labels,
                &fields,
                &options,
            );
            let rv = store.resource_version();
            let document = list_document(kind, items, rv, None, metadata_only);
            Ok(json_response(StatusCode::OK, &document))
        }
    }
}

fn list(
    shared: &Shared,
    target: &Target,
    params: &Params,
    metadata_only: bool,
) -> Result<Response, ApiError> {
    let (labels, fields) = selectors(params)?;
    if let Some(matching) = params.get("resourceVersionMatch")
        && !matches!(matching.as_str(), "" | "Exact" | "NotOlderThan")
    {
        return Err(ApiError::bad_request(format!(
            "resourceVersionMatch={matching:?}: expected Exact or NotOlderThan"
        )));
    }
    let limit = match params.get("limit").filter(|l| !l.is_empty()) {
        Some(text) => Some(
            text.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("limit={text:?} is not a number")))?,
        ),
        None => None,
    };
    let store = shared.store();
    let (mut items, mut rv) =
        store.list(&target.kind, target.namespace.as_deref(), &labels, &fields);
    if let Some(token) = params.get("continue").filter(|t| !t.is_empty()) {
        let (token_rv, after) = parse_continue(token)?;
        if token_rv < store.history_start() {
            return Err(ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. \
                 You can start a new list without the continue parameter.",
            ));
        }
        rv = token_rv;
        items.retain(|item| object_key(item) > after);
    }
    drop(store);
    let mut next = None;
    if let Some(limit) = limit.filter(|l| *l > 0 && items.len() > *l) {
        let remaining = items.len() - limit;
        items.truncate(limit);
        let (namespace, name) = items.last().map(object_key).unwrap_or_default();
        next = Some((format!("{rv}/{namespace}/{name}"), remaining));
    }
    Ok(json_response(
        StatusCode::OK,
        &list_document(&target.kind, items, rv, next, metadata_only),
    ))
}

fn list_document(
    kind: &ResourceKind,
    items: Vec<Value>,
    rv: u64,
    next: Option<(String, usize)>,
    metadata_only: bool,
) -> Value {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let Some((token, remaining)) = next {
        metadata["continue"] = json!(token);
        metadata["remainingItemCount"] = json!(remaining);
    }
    if metadata_only {
        let items: Vec<Value> = items.iter().map(partial_metadata).collect();
        return json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadataList",
            "metadata": metadata, "items": items});
    }
    json!({"apiVersion": kind.api_version(), "kind": kind.list_kind(), "metadata": metadata, "items": items})
}

fn object_key(object: &Value) -> (String, String) {
    let text = |field: &str| {
        object["metadata"][field]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    (text("namespace"), text("name"))
}

fn parse_continue(token: &str) -> Result<(u64, (String, String)), ApiError> {
    let mut parts = token.splitn(3, '/');
    let bad = || {
        ApiError::bad_request(format!(
            "continue={token:?} is not a token this server issued"
        ))
    };
    let rv = parts
        .next()
        .and_then(|rv| rv.parse::<u64>().ok())
        .ok_or_else(bad)?;
    let namespace = parts.next().ok_or_else(bad)?.to_string();
    let name = parts.next().ok_or_else(bad)?.to_string();
    Ok((rv, (namespace, name)))
}
