//! `FakeApiServer`: binds 127.0.0.1, serves HTTP/1.1 connections, and gives tests direct store access,
//! fault injection and the request log.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::fault::{Fault, Recorder, RequestRecord, Verb};
use crate::handler;
use crate::resource::{ResourceError, ResourceKind};
use crate::status::{ApiError, FieldCause};
use crate::store::{DeleteOptions, Store};

/// Errors of the test-facing API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding 127.0.0.1:0 failed.
    #[error("cannot bind the fake API server to 127.0.0.1: {0}")]
    Bind(#[source] std::io::Error),
    /// Building the kube client for the server failed.
    #[error("cannot build a kube client for {url}: {source}")]
    BuildClient { url: String, source: kube::Error },
    /// The apiVersion/plural pair names no registered kind.
    #[error(
        "no resource {plural:?} in {api_version:?} is registered; register it with FakeApiServer::register"
    )]
    UnknownResource { api_version: String, plural: String },
    /// A CRD could not be turned into JSON.
    #[error("cannot serialise the CustomResourceDefinition: {0}")]
    SerializeCrd(#[source] serde_json::Error),
    /// A CRD lacks what the server needs.
    #[error(transparent)]
    ReadCrd(#[from] ResourceError),
    /// A typed object did not convert to or from JSON.
    #[error("cannot convert the {kind} object to or from JSON: {source}")]
    ConvertObject {
        kind: String,
        source: serde_json::Error,
    },
    /// The store refused a direct write, as it would over HTTP.
    #[error("the fake API server refused the write: {0}")]
    Rejected(#[source] ApiError),
}

/// Tunables; [`Options::default`] suits tests.
#[derive(Clone, Debug)]
pub struct Options {
    /// How often watches that allow bookmarks get one. Default 1 s (a real server: about a minute).
    pub bookmark_interval: Duration,
    /// How many changes are kept for watches to resume from. Default 10,000.
    pub history_limit: usize,
    /// Watch length when the client sends no `timeoutSeconds`. Default 30 min.
    pub default_watch_timeout: Duration,
    /// How many changes a watch may fall behind before it ends with a 410. Default 16,384.
    pub watch_buffer: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            bookmark_interval: Duration::from_secs(1),
            history_limit: 10_000,
            default_watch_timeout: Duration::from_secs(1800),
            watch_buffer: 16_384,
        }
    }
}

/// State shared by the connections.
pub struct Shared {
    store: Mutex<Store>,
    recorder: Mutex<Recorder>,
    /// The options the server started with.
    pub options: Options,
    /// Cancelled when the server stops: ends the accept loop and every watch.
    pub shutdown: CancellationToken,
}

impl Shared {
    /// The store, locked. A poisoned lock is taken over: the store stays consistent between statements.
    pub fn store(&self) -> MutexGuard<'_, Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The fault list and request log, locked.
    pub fn recorder(&self) -> MutexGuard<'_, Recorder> {
        self.recorder.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An API server on 127.0.0.1 for one test. Dropping it stops it and closes every connection.
pub struct FakeApiServer {
    shared: Arc<Shared>,
    address: SocketAddr,
    client: kube::Client,
}

impl FakeApiServer {
    /// Starts a server with default [`Options`].
    pub async fn start() -> Result<Self, Error> {
        Self::start_with(Options::default()).await
    }

    /// Starts a server on 127.0.0.1 with a free port.
    pub async fn start_with(options: Options) -> Result<Self, Error> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(Error::Bind)?;
        let address = listener.local_addr().map_err(Error::Bind)?;
        let (notices, _) = broadcast::channel(options.watch_buffer.max(16));
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(options.history_limit, notices)),
            recorder: Mutex::new(Recorder::default()),
            options,
            shutdown: CancellationToken::new(),
        });
        let url = format!("http://{address}");
        let uri: http::Uri =
            url.parse()
                .map_err(|e: http::uri::InvalidUri| Error::BuildClient {
                    url: url.clone(),
                    source: kube::Error::HttpError(http::Error::from(e)),
                })?;
        let client = kube::Client::try_from(kube::Config::new(uri)).map_err(|source| {
            Error::BuildClient {
                url: url.clone(),
                source,
            }
        })?;
        tokio::spawn(serve(listener, shared.clone()));
        tracing::debug!(%url, "fake API server started");
        Ok(Self {
            shared,
            address,
            client,
        })
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// The bound address.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// A kubeconfig (YAML) pointing at this server, for child processes (`KUBECONFIG=...`) and kubectl:
    /// context `fake`, namespace `default`, no credentials.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
            self.url()
        )
    }

    /// A kube client for this server (default namespace `default`).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// Serves one more kind (or replaces one with the same group, version and plural).
    pub fn register(&self, kind: ResourceKind) {
        self.shared.store().register(kind);
    }

    /// Serves the kinds of a CustomResourceDefinition (a k8s-openapi `CustomResourceDefinition`, e.g.
    /// from `HealthCheck::crd()`, or its JSON), one per served version.
    pub fn register_crd<T: Serialize>(&self, crd: &T) -> Result<(), Error> {
        let crd = serde_json::to_value(crd).map_err(Error::SerializeCrd)?;
        let mut store = self.shared.store();
        for kind in ResourceKind::from_crd(&crd)? {
            store.register(kind);
        }
        Ok(())
    }

    /// Installs a validation hook for a resource: every create, replace and patch (status included) of it
    /// is refused with 422 `Invalid` and the returned causes when the list is not empty. The hook runs
    /// under the store lock: it must not call the server.
    pub fn set_validator<F>(
        &self,
        api_version: &str,
        plural: &str,
        validator: F,
    ) -> Result<(), Error>
    where
        F: Fn(&Value) -> Vec<FieldCause> + Send + Sync + 'static,
    {
        let kind = self.kind(api_version, plural)?;
        self.shared
            .store()
            .set_validator(&kind.group, &kind.plural, Arc::new(validator));
        Ok(())
    }

    /// Every stored object of a resource, all namespaces, sorted by namespace and name (empty when the
    /// resource is unknown).
    pub fn objects(&self, api_version: &str, plural: &str) -> Vec<Value> {
        match self.kind(api_version, plural) {
            Ok(kind) => self.shared.store().all_of(&kind.group, &kind.plural),
            Err(_) => Vec::new(),
        }
    }

    /// One stored object (`namespace` is ignored for cluster-scoped resources).
    pub fn get(
        &self,
        api_version: &str,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        let kind = self.kind(api_version, plural).ok()?;
        let namespace = if kind.namespaced { namespace } else { "" };
        self.shared.store().get(&kind, namespace, name).ok()
    }

    /// Test set-up: creates or replaces an object as given, `.status` included, without validation hooks
    /// or resourceVersion checks (the namespace comes from `metadata.namespace`). Watches see the change.
    pub fn put(&self, api_version: &str, plural: &str, object: Value) -> Result<Value, Error> {
        let kind = self.kind(api_version, plural)?;
        self.shared
            .store()
            .put(&kind, object)
            .map_err(Error::Rejected)
    }

    /// [`FakeApiServer::put`] for a typed object (`Node`, `Lease`, a CustomResource type, ...): returns it
    /// as stored, with the system metadata filled in.
    pub fn put_resource<K>(&self, object: &K) -> Result<K, Error>
    where
        K: kube::Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let convert = |source| Error::ConvertObject {
            kind: K::kind(&()).to_string(),
            source,
        };
        let value = serde_json::to_value(object).map_err(convert)?;
        let stored = self.put(&K::api_version(&()), &K::plural(&()), value)?;
        serde_json::from_value(stored).map_err(convert)
    }

    /// [`FakeApiServer::get`] for a typed object (`None` when missing or not a `K`).
    pub fn get_resource<K>(&self, namespace: &str, name: &str) -> Option<K>
    where
        K: kube::Resource<DynamicType = ()> + DeserializeOwned,
    {
        let value = self.get(&K::api_version(&()), &K::plural(&()), namespace, name)?;
        serde_json::from_value(value).ok()
    }

    /// Deletes an object as a DELETE request would (finalizers and cascade included).
    pub fn delete(
        &self,
        api_version: &str,
        plural: &str,
        namespace: &str,
        name: &str,
    ) -> Result<Value, Error> {
        let kind = self.kind(api_version, plural)?;
        self.shared
            .store()
            .delete(&kind, namespace, name, &DeleteOptions::default())
            .map_err(Error::Rejected)
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().resource_version()
    }

    /// Makes every older resourceVersion too old: open watches get an ERROR 410 event and end, and new
    /// watches from an older resourceVersion get one at once.
    pub fn compact(&self) {
        self.shared.store().compact();
    }

    /// Fails the next `verb` request on `resource` (`plural`, `plural/status` or `"*"`) with `code`, as a
    /// `Status` with the reason the real server uses for that code.
    pub fn fail_next(&self, verb: Verb, resource: &str, code: u16) {
        self.inject(Fault::new(verb, resource, code));
    }

    /// Adds a fault (several uses, `Retry-After`, any verb).
    pub fn inject(&self, fault: Fault) {
        self.shared.recorder().inject(fault);
    }

    /// Drops every fault not fired yet.
    pub fn clear_faults(&self) {
        self.shared.recorder().clear_faults();
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.recorder().requests().to_vec()
    }

    /// How many `verb` requests on `resource` (`plural` or `plural/status`) were answered.
    pub fn count(&self, verb: Verb, resource: &str) -> usize {
        self.shared
            .recorder()
            .requests()
            .iter()
            .filter(|r| r.verb == Some(verb) && r.resource == resource)
            .count()
    }

    /// Empties the request log.
    pub fn clear_requests(&self) {
        self.shared.recorder().clear();
    }

    fn kind(&self, api_version: &str, plural: &str) -> Result<Arc<ResourceKind>, Error> {
        self.shared
            .store()
            .registry()
            .find_api_version(api_version, plural)
            .ok_or_else(|| Error::UnknownResource {
                api_version: api_version.to_string(),
                plural: plural.to_string(),
            })
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let router = Router::new()
        .fallback(handler::handle)
        .with_state(shared.clone());
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        while connections.try_join_next().is_some() {}
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                tracing::warn!(%error, "fake API server: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let service = TowerToHyperService::new(router.clone());
        connections.spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, "fake API server: connection ended with an error");
            }
        });
    }
    // Dropping the set aborts every connection, watches included.
    connections.abort_all();
}
