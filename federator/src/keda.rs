//! KEDA's external scaler (`externalscaler.ExternalScaler`): how many check targets selected by a
//! ScaledObject's `scalerMetadata` are Failing, polled (`external`) or pushed (`external-push`).

mod metadata;
mod selector;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument;
use vigil_proto::externalscaler::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef, external_scaler_server::ExternalScaler,
};

pub use metadata::{DEFAULT_METRIC_NAME, MetadataError, Selection};
pub use selector::{LabelSelector, SelectorError};

use crate::hub::Hub;
use crate::state::{Health, State};

/// How often an open `StreamIsActive` re-counts without a state change, so a reload that only
/// changes a check's labels is seen too.
const RESYNC_EVERY: Duration = Duration::from_secs(5);

/// The `ExternalScaler` service over the federator's live state.
#[derive(Clone)]
pub struct KedaScaler {
    hub: Arc<Hub>,
    state: Arc<State>,
    /// Ends open `StreamIsActive` streams on shutdown so KEDA reconnects elsewhere.
    stop: CancellationToken,
}

impl KedaScaler {
    pub fn new(hub: Arc<Hub>, state: Arc<State>, stop: CancellationToken) -> Self {
        Self { hub, state, stop }
    }

    /// Failing targets matching `sel`.
    pub fn failing(&self, sel: &Selection) -> u64 {
        let labels: HashMap<String, BTreeMap<String, String>> = if sel.labels.is_empty() {
            HashMap::new()
        } else {
            self.hub
                .checks()
                .into_iter()
                .map(|d| (d.spec.id, d.check.spec.labels))
                .collect()
        };
        let none = BTreeMap::new();
        let n = self
            .state
            .all_targets()
            .iter()
            .filter(|t| t.state == Health::Failing)
            .filter(|t| sel.matches(&t.key, labels.get(&t.key.check).unwrap_or(&none)))
            .count();
        u64::try_from(n).unwrap_or(u64::MAX)
    }
}

fn selection(r: &ScaledObjectRef) -> Result<Selection, Status> {
    Selection::parse(&r.scaler_metadata).map_err(|e| {
        tracing::debug!(scaled_object = %format_args!("{}/{}", r.namespace, r.name), error = %e, "refused scalerMetadata");
        Status::from(e)
    })
}

type IsActiveStream = ReceiverStream<Result<IsActiveResponse, Status>>;

#[tonic::async_trait]
impl ExternalScaler for KedaScaler {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let sel = selection(request.get_ref())?;
        Ok(Response::new(IsActiveResponse {
            result: self.failing(&sel) > 0,
        }))
    }

    type StreamIsActiveStream = IsActiveStream;

    /// Sends the current activity, then every change of it, until KEDA hangs up or we stop.
    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveStream>, Status> {
        let r = request.into_inner();
        let sel = selection(&r)?;
        let mut changes = self.state.subscribe();
        let mut active = self.failing(&sel) > 0;
        let (tx, rx) = mpsc::channel(4);
        let _ = tx.try_send(Ok(IsActiveResponse { result: active }));
        let me = self.clone();
        let span = tracing::info_span!("keda_stream", scaled_object = %format_args!("{}/{}", r.namespace, r.name));
        tokio::spawn(
            async move {
                let mut resync = tokio::time::interval(RESYNC_EVERY);
                resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                resync.tick().await;
                loop {
                    tokio::select! {
                        () = tx.closed() => return,
                        () = me.stop.cancelled() => return,
                        changed = changes.changed() => if changed.is_err() { return },
                        _ = resync.tick() => {}
                    }
                    let now = me.failing(&sel) > 0;
                    if now != active {
                        active = now;
                        tracing::debug!(active, "pushing activity change");
                        if tx.send(Ok(IsActiveResponse { result: now })).await.is_err() {
                            return;
                        }
                    }
                }
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let sel = selection(request.get_ref())?;
        Ok(Response::new(GetMetricSpecResponse {
            metric_specs: vec![MetricSpec {
                metric_name: sel.metric_name,
                // KEDA reads the float when it is above 0; the integer is for older KEDAs.
                target_size: sel.target_size.ceil() as i64,
                target_size_float: sel.target_size,
            }],
        }))
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let r = request.into_inner();
        let sel = selection(&r.scaled_object_ref.unwrap_or_default())?;
        if !r.metric_name.is_empty() && r.metric_name != sel.metric_name {
            return Err(Status::not_found(format!(
                "metric {:?} is not served for this ScaledObject; GetMetricSpec names it {:?} \
                 (scalerMetadata.metricName)",
                r.metric_name, sel.metric_name
            )));
        }
        let n = self.failing(&sel);
        Ok(Response::new(GetMetricsResponse {
            metric_values: vec![MetricValue {
                metric_name: sel.metric_name,
                metric_value: i64::try_from(n).unwrap_or(i64::MAX),
                metric_value_float: n as f64,
            }],
        }))
    }
}
