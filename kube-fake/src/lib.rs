//! An in-process Kubernetes API server for tests: the real REST and watch protocol over plain HTTP on
//! 127.0.0.1, for the real `kube` client and kube-runtime controllers.
//!
//! ```no_run
//! # async fn demo() -> Result<(), vigil_kube_fake::Error> {
//! use vigil_kube_fake::{FakeApiServer, Verb};
//! let server = FakeApiServer::start().await?;
//! let client: kube::Client = server.client(); // or server.kubeconfig() for a child process
//! // Set-up bypassing the API rules (status included), then the code under test runs with `client`.
//! server.put("v1", "nodes", serde_json::json!({"metadata": {"name": "n1"},
//!     "status": {"conditions": [{"type": "Ready", "status": "True"}]}}))?;
//! server.compact(); // open watches get a 410 ERROR event and relist
//! server.fail_next(Verb::Patch, "healthchecks/status", 500);
//! let checks = server.objects("vigil.dev/v1alpha1", "healthchecks");
//! assert!(server.count(Verb::Patch, "healthchecks/status") <= 3);
//! # let _ = (client, checks); Ok(()) }
//! ```
//!
//! What it implements, and where it is simpler than a real kube-apiserver:
//! - Objects are stored as JSON, any kind, with one global resourceVersion counter. Built-in kinds are
//!   listed in [`builtin_kinds`] (nodes, pods, events in `v1` and `events.k8s.io/v1`, configmaps, jobs,
//!   leases, healthchecks, CRDs, ...); more come from [`FakeApiServer::register`],
//!   [`FakeApiServer::register_crd`] or by creating a CustomResourceDefinition through the API. No
//!   schema is enforced unless a hook is installed with [`FakeApiServer::set_validator`] (422 `Invalid`
//!   with field causes). Namespaces need not exist. No conversion between versions of a kind.
//! - Writes set `resourceVersion`, `uid` and `creationTimestamp` (on create) and `generation` (bumped when
//!   anything but metadata, and status for kinds with a status subresource, changes). A write that
//!   changes nothing is not committed (no new resourceVersion, no watch event), as on the real server.
//! - GET; LIST with label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!`), field selectors (`=`,
//!   `==`, `!=` on any dotted path: `metadata.name`, `spec.nodeName`, `involvedObject.name`, ...),
//!   `limit`/`continue`; `resourceVersion`/`resourceVersionMatch` are accepted, and lists always answer
//!   from the latest state.
//! - WATCH (`watch=true|1` or `/watch/` paths): newline-delimited JSON events, chunked; resumes from the
//!   bounded history ([`Options::history_limit`]); a resourceVersion older than the history, or older
//!   than a [`FakeApiServer::compact`], gets an ERROR event with a 410 `Expired` `Status` (open watches
//!   get one at `compact()`), so watchers relist; objects entering or leaving a selector's selection
//!   become ADDED/DELETED; BOOKMARKs every [`Options::bookmark_interval`] when allowed, carrying a
//!   resourceVersion every earlier change has been sent for; `sendInitialEvents` (streaming lists) ends
//!   the initial ADDED events with an `k8s.io/initial-events-end` bookmark; `timeoutSeconds` ends the
//!   stream. Metadata-only requests (`as=PartialObjectMetadata`) get `PartialObjectMetadata`.
//! - POST (201; `generateName`; 409 `AlreadyExists`; 422 for a missing or non-RFC 1123 name; 400 when
//!   `metadata.resourceVersion` is set), PUT (409
//!   `Conflict` when a set `metadata.resourceVersion` is stale; 404 when missing), PATCH (415 for other
//!   content types): JSON merge patch, strategic merge patch (lists merged by key by field name:
//!   `conditions`/`addresses` by `type`, containers/env/volumes by `name`, `ownerReferences` by `uid`,
//!   `finalizers` as a set; `$patch` and `$deleteFromPrimitiveList` directives), JSON patch (all six
//!   operations; a missing member tests equal to null) and server-side apply (below). DELETE answers 200
//!   with the object; finalizers set `deletionTimestamp` and the object goes when the last one is
//!   removed; `preconditions` give 409; dependents (ownerReferences by uid) are deleted at once
//!   (Background and Foreground alike) or lose the reference (Orphan); deleting a Namespace deletes its
//!   objects. DELETE on a collection, `dryRun=All` everywhere.
//! - The `/status` subresource: status writes change only `.status`; main writes keep the stored
//!   `.status` for kinds with the subresource; create drops `.status` for CRDs and Jobs (nodes and pods
//!   keep it, so that tests can create them ready).
//! - Server-side apply: creates a missing object (201), else merges the applied configuration like a
//!   strategic merge. Each manager's applied field set is kept in `managedFields` (`FieldsV1`, one
//!   entry per manager and subresource), and fields a manager stops applying are removed unless another
//!   apply manager applies them, as on the real server. Not done: apply conflicts (`force` is accepted
//!   and no 409 is ever reported), ownership by non-apply writers, atomic lists by schema (list merge
//!   keys come from field names, never from a CRD's `x-kubernetes-list-type`).
//! - Errors are `Status` objects with the real codes, reasons, messages and details (`NotFound`,
//!   `AlreadyExists`, `Conflict`, `Invalid`, `Expired`, `BadRequest`, `MethodNotAllowed`,
//!   `UnsupportedMediaType`, ...); [`FakeApiServer::fail_next`] / [`FakeApiServer::inject`] answer any
//!   code instead (429 and 5xx with `Retry-After` when asked). Note that kube's default client retries
//!   429, 503 and 504 by itself (honouring `Retry-After`): inject 500 to see an error surface at once.
//! - Discovery (`/api`, `/apis`, `/apis/{group}`, `/apis/{group}/{version}`, `/api/v1`, plain and
//!   aggregated v2) and `/version`, enough for `kube::Discovery` and kubectl (`--validate=false`: no
//!   OpenAPI documents are served; no server-side Table printing).
//! - No authentication, authorisation, admission, defaulting, protobuf, or HTTP/2 (kube speaks HTTP/1.1
//!   to plain `http://` servers). Garbage collection and namespace deletion are synchronous.

mod discovery;
mod fault;
mod handler;
mod patch;
mod resource;
mod route;
mod selector;
mod server;
mod status;
mod store;
mod watch;

pub use fault::{Fault, RequestRecord, Verb};
pub use resource::{ResourceError, ResourceKind, builtin_kinds};
pub use server::{Error, FakeApiServer, Options};
pub use status::{ApiError, FieldCause};

pub(crate) use server::Shared;
