//! Leader election on a `coordination.k8s.io/v1` Lease: one federator replica leads (writes
//! status, node conditions, Jobs and alerts, and takes agents); the others stand by and take
//! over when the leader stops renewing.
//!
//! The algorithm is client-go's: read the Lease; take it when it is free or expired, renew it
//! while holding it; every write is a replace conditioned on the resourceVersion read, so two
//! candidates can never both win (the loser gets 409 Conflict). A leader that stops releases
//! the Lease so a standby takes over at once instead of after the lease duration.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// A Lease not renewed for this long is free.
    pub lease_duration: Duration,
    /// How often the holder renews and a standby looks.
    pub retry_period: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: "vigil-federator".to_owned(),
            identity: identity.to_owned(),
            lease_duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("reading Lease {namespace}/{name}: {source}")]
    Read {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing Lease {namespace}/{name}: {source}")]
    Write {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// Runs the election until `cancel`; the receiver says whether this replica leads now.
pub fn spawn(
    client: kube::Client,
    config: LeaseConfig,
    cancel: CancellationToken,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &config.namespace);
        let mut failures = 0u32;
        loop {
            match try_acquire_or_renew(&api, &config).await {
                Ok(leading) => {
                    failures = 0;
                    if *tx.borrow() != leading {
                        tracing::info!(identity = %config.identity, lease = %config.name, leading, "leadership changed");
                    }
                    tx.send_replace(leading);
                }
                Err(e) => {
                    failures += 1;
                    tracing::warn!(error = %e, failures, "leader election step failed; retrying");
                    // A leader that cannot renew within the lease duration must assume it lost.
                    if config.retry_period * failures >= config.lease_duration {
                        tx.send_replace(false);
                    }
                }
            }
            tokio::select! {
                () = tokio::time::sleep(config.retry_period) => {}
                () = cancel.cancelled() => break,
            }
        }
        if *tx.borrow() {
            tx.send_replace(false);
            if let Err(e) = release(&api, &config).await {
                tracing::warn!(error = %e, "could not release the Lease; a standby takes over once it expires");
            } else {
                tracing::info!(lease = %config.name, "released the Lease");
            }
        }
    });
    (rx, task)
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// One election step: `Ok(true)` when this replica holds the Lease afterwards.
async fn try_acquire_or_renew(api: &Api<Lease>, c: &LeaseConfig) -> Result<bool, LeaseError> {
    let read_err = |source| LeaseError::Read {
        namespace: c.namespace.clone(),
        name: c.name.clone(),
        source,
    };
    let write_err = |source| LeaseError::Write {
        namespace: c.namespace.clone(),
        name: c.name.clone(),
        source,
    };
    let duration_secs = i32::try_from(c.lease_duration.as_secs()).unwrap_or(i32::MAX);
    let Some(mut lease) = api.get_opt(&c.name).await.map_err(read_err)? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(c.name.clone()),
                namespace: Some(c.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(c.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(write_err(e)),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let held_by_me = holder == c.identity;
    if !held_by_me && !holder.is_empty() && !expired(spec) {
        return Ok(false);
    }
    if !held_by_me {
        spec.holder_identity = Some(c.identity.clone());
        spec.acquire_time = Some(now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.renew_time = Some(now());
    spec.lease_duration_seconds = Some(duration_secs);
    // The replace carries the resourceVersion we read: a concurrent writer makes it 409.
    match api.replace(&c.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(write_err(e)),
    }
}

fn expired(spec: &LeaseSpec) -> bool {
    let Some(MicroTime(renewed)) = &spec.renew_time else {
        return true;
    };
    let duration = spec.lease_duration_seconds.unwrap_or(15).max(1);
    let age = Timestamp::now().duration_since(*renewed);
    age.as_secs() >= i64::from(duration)
}

/// Gives the Lease up (holder cleared) so a standby need not wait for it to expire.
async fn release(api: &Api<Lease>, c: &LeaseConfig) -> Result<(), LeaseError> {
    let write_err = |source| LeaseError::Write {
        namespace: c.namespace.clone(),
        name: c.name.clone(),
        source,
    };
    let Some(mut lease) = api
        .get_opt(&c.name)
        .await
        .map_err(|source| LeaseError::Read {
            namespace: c.namespace.clone(),
            name: c.name.clone(),
            source,
        })?
    else {
        return Ok(());
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(&c.identity) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.renew_time = Some(now());
    api.replace(&c.name, &PostParams::default(), &lease)
        .await
        .map(|_| ())
        .map_err(write_err)
}
