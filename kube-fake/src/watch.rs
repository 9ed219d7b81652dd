//! Watch streams: newline-delimited JSON events over a chunked response, resumed from the history,
//! with periodic bookmarks, a 410 ERROR event when the resourceVersion is too old, and a timeout.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderValue, header};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::Shared;
use crate::resource::ResourceKind;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{Change, ChangeKind, Notice, WatchStart, partial_metadata, present};

/// A watch request, parsed.
#[derive(Clone, Debug)]
pub struct WatchRequest {
    /// The kind watched.
    pub kind: Arc<ResourceKind>,
    /// Only this namespace (`None`: all).
    pub namespace: Option<String>,
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `resourceVersion` (`None` or 0: start now with the current objects).
    pub from: Option<u64>,
    /// `allowWatchBookmarks=true`.
    pub bookmarks: bool,
    /// `sendInitialEvents`: `Some(true)` ends the initial objects with an initial-events-end bookmark,
    /// `Some(false)` sends no initial objects.
    pub send_initial_events: Option<bool>,
    /// `timeoutSeconds` (or the server default).
    pub timeout: Duration,
    /// Objects as `PartialObjectMetadata` (the client asked for metadata only).
    pub metadata_only: bool,
}

/// Starts a watch and answers with its stream.
pub fn start(shared: Arc<Shared>, request: WatchRequest) -> Response {
    let (sender, receiver) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    let started = shared.store().watch(&request.kind, request.from);
    match started {
        Ok((start, notices, current)) => {
            let task = run(shared.clone(), request, start, notices, current, sender);
            tokio::spawn(task);
        }
        Err(expired) => {
            let _ = sender.try_send(Ok(error_line(&expired)));
        }
    }
    let mut response = Response::new(Body::from_stream(ReceiverStream::new(receiver)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

type Sender = mpsc::Sender<Result<Bytes, Infallible>>;

async fn run(
    shared: Arc<Shared>,
    request: WatchRequest,
    start: WatchStart,
    mut notices: broadcast::Receiver<Notice>,
    current: u64,
    sender: Sender,
) {
    let floor = request.from.filter(|rv| *rv > 0).unwrap_or(current);
    let mut seen = floor;
    let mut initial = Vec::new();
    match start {
        WatchStart::Current(objects) => {
            if request.send_initial_events != Some(false) {
                initial.extend(
                    objects
                        .into_iter()
                        .filter(|o| selected(&request, o))
                        .map(|o| event_line("ADDED", &shape(&request, o))),
                );
            }
            if request.send_initial_events == Some(true) {
                initial.push(bookmark_line(&request.kind, current.max(floor), true));
            }
        }
        WatchStart::Replay(changes) => {
            initial.extend(changes.iter().filter_map(|c| change_line(&request, c)));
            seen = changes.last().map_or(seen, |c| c.rv.max(seen));
        }
    }
    for line in initial {
        if sender.send(Ok(line)).await.is_err() {
            return;
        }
    }
    let deadline = tokio::time::sleep(request.timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(shared.options.bookmark_interval);
    ticker.reset();
    loop {
        let (lines, end) = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = &mut deadline => return,
            _ = sender.closed() => return,
            notice = notices.recv() => match step(&request, notice, &mut seen) {
                Step::Line(line) => (line.into_iter().collect::<Vec<_>>(), false),
                Step::End(line) => (vec![line], true),
            },
            _ = ticker.tick(), if request.bookmarks => drain_for_bookmark(&shared, &request, &mut notices, &mut seen),
        };
        for line in lines {
            if sender.send(Ok(line)).await.is_err() {
                return;
            }
        }
        if end {
            return;
        }
    }
}

/// Takes every pending change under the store lock, so that all changes up to the bookmark's
/// resourceVersion are sent before it; returns the lines and whether the watch ends.
fn drain_for_bookmark(
    shared: &Shared,
    request: &WatchRequest,
    notices: &mut broadcast::Receiver<Notice>,
    seen: &mut u64,
) -> (Vec<Bytes>, bool) {
    let store = shared.store();
    let mut lines = Vec::new();
    loop {
        let notice = match notices.try_recv() {
            Ok(notice) => Ok(notice),
            Err(broadcast::error::TryRecvError::Empty | broadcast::error::TryRecvError::Closed) => {
                break;
            }
            Err(broadcast::error::TryRecvError::Lagged(n)) => {
                Err(broadcast::error::RecvError::Lagged(n))
            }
        };
        match step(request, notice, seen) {
            Step::Line(line) => lines.extend(line),
            Step::End(line) => {
                lines.push(line);
                return (lines, true);
            }
        }
    }
    *seen = (*seen).max(store.resource_version());
    lines.push(bookmark_line(&request.kind, *seen, false));
    (lines, false)
}

enum Step {
    /// Maybe a line to send; the watch goes on.
    Line(Option<Bytes>),
    /// A last line; the watch ends.
    End(Bytes),
}

fn step(
    request: &WatchRequest,
    notice: Result<Notice, broadcast::error::RecvError>,
    seen: &mut u64,
) -> Step {
    match notice {
        Ok(Notice::Change(change)) => {
            if change.rv <= *seen {
                return Step::Line(None);
            }
            *seen = change.rv;
            Step::Line(change_line(request, &change))
        }
        Ok(Notice::Compacted) => Step::End(error_line(&ApiError::expired(format!(
            "too old resource version: {seen} (compacted)"
        )))),
        Err(broadcast::error::RecvError::Lagged(_)) => Step::End(error_line(&ApiError::expired(
            format!("too old resource version: {seen} (the watch fell behind)"),
        ))),
        Err(broadcast::error::RecvError::Closed) => Step::Line(None),
    }
}

fn selected(request: &WatchRequest, object: &Value) -> bool {
    let namespace = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default();
    request
        .namespace
        .as_deref()
        .is_none_or(|wanted| wanted == namespace)
        && request.labels.matches(object)
        && request.fields.matches(object)
}

/// The event a change means for this watch: objects entering or leaving the selection become ADDED or
/// DELETED, as on the real server.
fn change_line(request: &WatchRequest, change: &Change) -> Option<Bytes> {
    if change.group != request.kind.group || change.plural != request.kind.plural {
        return None;
    }
    let now = selected(request, &change.object);
    let before = change
        .previous
        .as_ref()
        .is_some_and(|p| selected(request, p));
    let kind = match change.kind {
        ChangeKind::Added if now => "ADDED",
        ChangeKind::Deleted if now || before => "DELETED",
        ChangeKind::Modified => match (before, now) {
            (true, true) => "MODIFIED",
            (false, true) => "ADDED",
            (true, false) => "DELETED",
            (false, false) => return None,
        },
        _ => return None,
    };
    Some(event_line(kind, &shape(request, change.object.clone())))
}

/// The object as this watch sends it.
fn shape(request: &WatchRequest, object: Value) -> Value {
    if request.metadata_only {
        partial_metadata(&object)
    } else {
        present(&request.kind, object)
    }
}

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn bookmark_line(kind: &ResourceKind, rv: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    event_line(
        "BOOKMARK",
        &json!({"kind": kind.kind, "apiVersion": kind.api_version(), "metadata": metadata}),
    )
}

fn error_line(error: &ApiError) -> Bytes {
    event_line("ERROR", &error.to_status())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::Registry;

    fn request(labels: &str) -> WatchRequest {
        WatchRequest {
            kind: Registry::with_builtins()
                .find("", "v1", "configmaps")
                .unwrap(),
            namespace: Some("shop".into()),
            labels: LabelSelector::parse(labels).unwrap(),
            fields: FieldSelector::default(),
            from: None,
            bookmarks: true,
            send_initial_events: None,
            timeout: Duration::from_secs(1),
            metadata_only: false,
        }
    }

    fn change(rv: u64, kind: ChangeKind, app: &str, previous_app: Option<&str>) -> Arc<Change> {
        let object = |app: &str| json!({"metadata": {"name": "a", "namespace": "shop", "labels": {"app": app}}});
        Arc::new(Change {
            rv,
            group: String::new(),
            plural: "configmaps".into(),
            kind,
            object: object(app),
            previous: previous_app.map(object),
        })
    }

    fn event_type(line: Option<Bytes>) -> Option<String> {
        let line = line?;
        let event: Value = serde_json::from_slice(&line).unwrap();
        Some(event["type"].as_str().unwrap().to_string())
    }

    #[test]
    fn selection_changes_become_added_and_deleted() {
        let request = request("app=web");
        let cases = [
            (ChangeKind::Added, "web", None, Some("ADDED")),
            (ChangeKind::Added, "db", None, None),
            (ChangeKind::Modified, "web", Some("web"), Some("MODIFIED")),
            (ChangeKind::Modified, "web", Some("db"), Some("ADDED")),
            (ChangeKind::Modified, "db", Some("web"), Some("DELETED")),
            (ChangeKind::Modified, "db", Some("db"), None),
            (ChangeKind::Deleted, "web", Some("web"), Some("DELETED")),
        ];
        for (kind, app, previous, expected) in cases {
            let line = change_line(&request, &change(5, kind, app, previous));
            assert_eq!(
                event_type(line).as_deref(),
                expected,
                "{kind:?} {previous:?} -> {app}"
            );
        }
        let mut elsewhere = change(5, ChangeKind::Added, "web", None);
        Arc::get_mut(&mut elsewhere).unwrap().object["metadata"]["namespace"] = json!("ops");
        assert_eq!(
            change_line(&request, &elsewhere),
            None,
            "other namespaces are filtered out"
        );
    }

    #[test]
    fn steps_skip_seen_changes_and_end_on_compaction_or_lag() {
        let request = request("");
        let mut seen = 5;
        let old = Ok(Notice::Change(change(5, ChangeKind::Added, "web", None)));
        assert!(matches!(step(&request, old, &mut seen), Step::Line(None)));
        let new = Ok(Notice::Change(change(6, ChangeKind::Added, "web", None)));
        assert!(matches!(
            step(&request, new, &mut seen),
            Step::Line(Some(_))
        ));
        assert_eq!(seen, 6);
        for notice in [
            Ok(Notice::Compacted),
            Err(broadcast::error::RecvError::Lagged(3)),
        ] {
            let Step::End(line) = step(&request, notice, &mut seen) else {
                panic!("expected the end")
            };
            let event: Value = serde_json::from_slice(&line).unwrap();
            assert_eq!(event["type"], "ERROR");
            assert_eq!(event["object"]["code"], 410);
            assert_eq!(event["object"]["reason"], "Expired");
        }
    }

    #[test]
    fn bookmarks_carry_only_the_resource_version() {
        let line = bookmark_line(&request("").kind, 42, true);
        let event: Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(
            event,
            json!({"type": "BOOKMARK", "object": {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {
                "resourceVersion": "42", "annotations": {"k8s.io/initial-events-end": "true"}}}})
        );
    }
}
