//! KEDA's external scaler interface, called with a client generated from KEDA's own
//! `externalscaler.proto`, against an in-process federator fed by a fake agent.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Streaming};
use vigil_proto::externalscaler::{
    GetMetricsRequest, IsActiveResponse, MetricSpec, ScaledObjectRef,
    external_scaler_client::ExternalScalerClient,
};
use vigil_proto::{AgentMessage, FederatorMessage, Outcome, ProbeResult, federator_message::Msg};

/// How long a push may take after the result that flips the activity.
const PUSH_DEADLINE: Duration = Duration::from_secs(1);
const DEADLINE: Duration = Duration::from_secs(10);

const CHECKS: &str = "\
apiVersion: vigil.dev/v1alpha1
kind: HealthCheck
metadata: {name: web, namespace: shop}
spec:
  failureThreshold: 1
  labels: {team: shop, tier: frontend}
  probe: {tcp: {address: '127.0.0.1:1'}}
---
apiVersion: vigil.dev/v1alpha1
kind: HealthCheck
metadata: {name: db, namespace: shop}
spec:
  failureThreshold: 1
  labels: {team: shop, tier: db}
  probe: {tcp: {address: '127.0.0.1:2'}}
---
apiVersion: vigil.dev/v1alpha1
kind: HealthCheck
metadata: {name: dns, namespace: ops}
spec:
  failureThreshold: 1
  labels: {team: ops}
  probe: {tcp: {address: '127.0.0.1:3'}}
";

mod common;
use common::Fed;

async fn federator() -> Fed {
    Fed::start(CHECKS, |_| {}).await
}

async fn channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A fake agent on one Connect stream; each `report` returns once the federator acknowledged
/// it, which is after the result was folded into the state.
struct Agent {
    tx: mpsc::Sender<AgentMessage>,
    inbound: Streaming<FederatorMessage>,
    seq: u64,
}

impl Agent {
    async fn connect(addr: SocketAddr) -> Self {
        let (tx, inbound) = common::open_stream(addr, "fake").await;
        Self {
            tx,
            inbound,
            seq: 0,
        }
    }

    /// Sends one result for `check` without waiting.
    async fn send(&mut self, check: &str, outcome: Outcome) -> u64 {
        self.seq += 1;
        let result = ProbeResult {
            seq: self.seq,
            check_id: check.into(),
            target: "127.0.0.1:1".into(),
            start_unix_nanos: i64::try_from(self.seq).unwrap() * 1_000_000_000,
            outcome: outcome as i32,
            reason: outcome.name().into(),
            ..Default::default()
        };
        self.tx.send(common::batch_of(vec![result])).await.unwrap();
        self.seq
    }

    async fn acked(&mut self, seq: u64) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.inbound.message())
                .await
                .unwrap_or_else(|_| panic!("no Ack of seq {seq} within {DEADLINE:?}"))
                .unwrap()
                .expect("the federator keeps the stream open");
            if let Some(Msg::Ack(a)) = msg.msg
                && a.seq >= seq
            {
                return;
            }
        }
    }

    async fn report(&mut self, check: &str, outcome: Outcome) {
        let seq = self.send(check, outcome).await;
        self.acked(seq).await;
    }
}

fn scaled(pairs: &[(&str, &str)]) -> ScaledObjectRef {
    let mut scaler_metadata: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    // KEDA passes the trigger's own keys along; they must be accepted.
    scaler_metadata.insert(
        "scalerAddress".into(),
        "vigil-federator.vigil.svc:7443".into(),
    );
    ScaledObjectRef {
        name: "consumer".into(),
        namespace: "shop".into(),
        scaler_metadata,
    }
}

type Keda = ExternalScalerClient<Channel>;

/// The value GetMetrics reports for a selection, checking both encodings agree.
async fn failing(keda: &mut Keda, pairs: &[(&str, &str)]) -> i64 {
    let resp = keda
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(scaled(pairs)),
            metric_name: "vigil-failing-checks".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.metric_values.len(), 1);
    let v = &resp.metric_values[0];
    assert_eq!(v.metric_name, "vigil-failing-checks");
    assert_eq!(v.metric_value as f64, v.metric_value_float);
    let active = keda
        .is_active(scaled(pairs))
        .await
        .unwrap()
        .into_inner()
        .result;
    assert_eq!(active, v.metric_value > 0, "IsActive follows the count");
    v.metric_value
}

/// The next push on a StreamIsActive, within `within`.
async fn next_push(stream: &mut Streaming<IsActiveResponse>, within: Duration) -> bool {
    tokio::time::timeout(within, stream.message())
        .await
        .unwrap_or_else(|_| panic!("no StreamIsActive push within {within:?}"))
        .unwrap()
        .expect("the stream stays open")
        .result
}

#[tokio::test]
async fn metrics_and_activity_follow_failing_checks() {
    let fed = federator().await;
    let mut keda = ExternalScalerClient::new(channel(fed.grpc).await);
    let mut agent = Agent::connect(fed.grpc).await;
    let shop_not_db = [
        ("namespace", "shop"),
        ("labelSelector", "team=shop,tier!=db"),
    ];
    let mut stream = keda
        .stream_is_active(scaled(&shop_not_db))
        .await
        .unwrap()
        .into_inner();
    assert!(
        !next_push(&mut stream, DEADLINE).await,
        "the current value comes first"
    );
    assert_eq!(failing(&mut keda, &[]).await, 0);

    let sent = Instant::now();
    let seq = agent.send("shop/web", Outcome::Failure).await;
    assert!(next_push(&mut stream, PUSH_DEADLINE).await);
    println!(
        "StreamIsActive push latency, false -> true: {:?}",
        sent.elapsed()
    );
    agent.acked(seq).await;
    assert_eq!(failing(&mut keda, &[]).await, 1);
    assert_eq!(failing(&mut keda, &shop_not_db).await, 1);
    assert_eq!(failing(&mut keda, &[("namespace", "ops")]).await, 0);

    agent.report("shop/db", Outcome::Failure).await;
    agent.report("ops/dns", Outcome::Timeout).await;
    assert_eq!(failing(&mut keda, &[]).await, 3);
    assert_eq!(failing(&mut keda, &shop_not_db).await, 1);
    assert_eq!(
        failing(&mut keda, &[("labelSelector", "team=shop")]).await,
        2
    );
    assert_eq!(failing(&mut keda, &[("check", "shop/db")]).await, 1);
    assert_eq!(
        failing(&mut keda, &[("check", "dns"), ("cluster", "test")]).await,
        1
    );
    assert_eq!(failing(&mut keda, &[("cluster", "elsewhere")]).await, 0);

    let sent = Instant::now();
    let seq = agent.send("shop/web", Outcome::Success).await;
    // `false` being the next push also shows shop/db failing pushed no repeated `true`.
    assert!(!next_push(&mut stream, PUSH_DEADLINE).await);
    println!(
        "StreamIsActive push latency, true -> false: {:?}",
        sent.elapsed()
    );
    agent.acked(seq).await;
    assert_eq!(failing(&mut keda, &[]).await, 2);
    assert_eq!(failing(&mut keda, &shop_not_db).await, 0);

    agent.report("shop/db", Outcome::Success).await;
    agent.report("ops/dns", Outcome::Success).await;
    assert_eq!(failing(&mut keda, &[]).await, 0);

    // And once more, to see a second flip on the same stream.
    let sent = Instant::now();
    agent.send("shop/web", Outcome::Error).await;
    assert!(next_push(&mut stream, PUSH_DEADLINE).await);
    println!(
        "StreamIsActive push latency, false -> true again: {:?}",
        sent.elapsed()
    );
}

#[tokio::test]
async fn metric_spec_takes_target_size_and_name_from_metadata() {
    let fed = federator().await;
    let mut keda = ExternalScalerClient::new(channel(fed.grpc).await);
    let spec = |pairs: &'static [(&'static str, &'static str)]| {
        let mut keda = keda.clone();
        async move {
            let mut specs = keda
                .get_metric_spec(scaled(pairs))
                .await
                .unwrap()
                .into_inner()
                .metric_specs;
            assert_eq!(specs.len(), 1);
            specs.remove(0)
        }
    };
    assert_eq!(
        spec(&[]).await,
        MetricSpec {
            metric_name: "vigil-failing-checks".into(),
            target_size: 1,
            target_size_float: 1.0,
        }
    );
    assert_eq!(
        spec(&[("targetSize", "3")]).await,
        MetricSpec {
            metric_name: "vigil-failing-checks".into(),
            target_size: 3,
            target_size_float: 3.0,
        }
    );
    assert_eq!(
        spec(&[("targetSize", "2.5"), ("metricName", "shop-failures")]).await,
        MetricSpec {
            metric_name: "shop-failures".into(),
            target_size: 3,
            target_size_float: 2.5,
        }
    );

    let status = keda
        .get_metrics(GetMetricsRequest {
            scaled_object_ref: Some(scaled(&[("metricName", "shop-failures")])),
            metric_name: "vigil-failing-checks".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

#[tokio::test]
async fn bad_metadata_is_invalid_argument_naming_the_key() {
    let fed = federator().await;
    let mut keda = ExternalScalerClient::new(channel(fed.grpc).await);
    let cases: [(&[(&str, &str)], &str); 4] = [
        (
            &[("team", "shop")],
            "scalerMetadata.team is not a key Vigil reads",
        ),
        (
            &[("labelSelector", "team=shop,tier in (db,cache)")],
            "scalerMetadata.labelSelector \"team=shop,tier in (db,cache)\" is not an \
             equality-based label selector: term \"tier in (db\" is set-based",
        ),
        (
            &[("labelSelector", "team=shop=x")],
            "scalerMetadata.labelSelector \"team=shop=x\" is not an equality-based label \
             selector: \"shop=x\" is not a label value",
        ),
        (
            &[("targetSize", "-1")],
            "scalerMetadata.targetSize \"-1\" must be a number above 0",
        ),
    ];
    for (pairs, want) in cases {
        let r = scaled(pairs);
        let statuses = [
            keda.is_active(r.clone()).await.unwrap_err(),
            keda.get_metric_spec(r.clone()).await.unwrap_err(),
            keda.get_metrics(GetMetricsRequest {
                scaled_object_ref: Some(r.clone()),
                metric_name: String::new(),
            })
            .await
            .unwrap_err(),
            keda.stream_is_active(r.clone()).await.unwrap_err(),
        ];
        for status in statuses {
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert!(
                status.message().starts_with(want),
                "{:?} should start with {want:?}",
                status.message()
            );
        }
    }
}
