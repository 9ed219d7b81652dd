//! Kafka sink tests against librdkafka's in-process mock cluster (the real-broker tests are in
//! vigil-e2e, against tansu).

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use vigil_proto::ProbeResult;
use vigil_proto::pool::Results;

use super::*;
use crate::record::ResultRecord;

fn results(agent: &str, seqs: std::ops::RangeInclusive<u64>) -> Arc<Results> {
    Arc::new(
        seqs.map(|seq| ProbeResult {
            check_id: "ns/check".into(),
            target: format!("t{}", seq % 3),
            cluster: "c1".into(),
            node: "n1".into(),
            agent_id: agent.into(),
            seq,
            ..Default::default()
        })
        .collect(),
    )
}

/// Every record of `topic` (all partitions, from offset 0): (agent header, seq header, value).
fn read_back(
    brokers: &str,
    topic: &str,
    partitions: i32,
    want: usize,
) -> Vec<(String, u64, Vec<u8>)> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "vigil-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Offset(0))
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while out.len() < want && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let headers = m.headers().unwrap();
            let header = |name: &str| {
                headers
                    .iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value)
                    .map(|v| String::from_utf8(v.to_vec()).unwrap())
                    .unwrap()
            };
            out.push((
                header("agent"),
                header("seq").parse().unwrap(),
                m.payload().unwrap().to_vec(),
            ));
        }
    }
    out
}

fn sink(brokers: String, topic: &str) -> (KafkaSink, Arc<Metrics>, Arc<Readiness>) {
    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::default());
    let mut options = KafkaOptions::new(brokers);
    options.topic = topic.to_owned();
    options.connect_timeout = Duration::from_secs(2);
    let sink = KafkaSink::new(options, Arc::clone(&metrics), Arc::clone(&readiness)).unwrap();
    (sink, metrics, readiness)
}

#[tokio::test]
async fn a_write_returns_only_after_every_record_is_delivered() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("healthcheck-results", 3, 1).unwrap();
    let (mut sink, metrics, _) = sink(cluster.bootstrap_servers(), "healthcheck-results");
    sink.healthcheck().await.unwrap();
    sink.write(vec![results("a", 1..=500), results("b", 1..=500)])
        .await
        .unwrap();
    assert_eq!(metrics.kafka_in_flight.get(), 0);
    assert_eq!(metrics.kafka_delivery_seconds.get_sample_count(), 1000);

    let got = read_back(&cluster.bootstrap_servers(), "healthcheck-results", 3, 1000);
    assert_eq!(got.len(), 1000);
    let mut ids: Vec<(String, u64)> = got.iter().map(|(a, s, _)| (a.clone(), *s)).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1000, "every (agent, seq) exactly once");
    let record: ResultRecord = serde_json::from_slice(&got[0].2).unwrap();
    assert_eq!(record.schema, 1);
    assert_eq!(record.check, "ns/check");
}

#[tokio::test]
async fn an_outage_holds_the_write_and_reports_not_ready_until_the_broker_is_back() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("healthcheck-results", 1, 1).unwrap();
    let (mut sink, _, readiness) = sink(cluster.bootstrap_servers(), "healthcheck-results");
    sink.write(vec![results("a", 1..=10)]).await.unwrap();

    cluster.broker_down(1).unwrap();
    let batch = vec![results("a", 11..=20)];
    let mut write = sink.write(batch);
    // Not delivered while the broker is down, and /readyz says why.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !readiness.problems().contains_key(PART) {
        assert!(
            (&mut write).now_or_never().is_none(),
            "delivered with the broker down"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "the outage never showed in readiness"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        readiness.problems()[PART].contains("results are held and retried"),
        "{:?}",
        readiness.problems()
    );
    cluster.broker_up(1).unwrap();
    tokio::time::timeout(Duration::from_secs(30), write)
        .await
        .expect("delivered after the broker came back")
        .unwrap();
    drop(sink);
    let got = read_back(&cluster.bootstrap_servers(), "healthcheck-results", 1, 20);
    let seqs: Vec<u64> = got.iter().map(|(_, s, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=20).collect::<Vec<_>>(),
        "in order, nothing lost, no duplicates"
    );
}

#[tokio::test]
async fn ensure_topic_creates_a_missing_topic() {
    let cluster = MockCluster::new(1).unwrap();
    let mut options = KafkaOptions::new(cluster.bootstrap_servers());
    options.topic = "fresh-topic".into();
    options.partitions = 2;
    let readiness = Arc::new(Readiness::default());
    tokio::time::timeout(
        Duration::from_secs(30),
        ensure_topic(
            options.clone(),
            Arc::clone(&readiness),
            CancellationToken::new(),
        ),
    )
    .await
    .expect("topic ensured");
    assert!(
        readiness.problems().is_empty(),
        "{:?}",
        readiness.problems()
    );
    let (sink, _, _) = sink(cluster.bootstrap_servers(), "fresh-topic");
    sink.healthcheck().await.unwrap();
}

#[tokio::test]
async fn unreachable_brokers_are_reported_with_the_address_and_the_fix() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut options = KafkaOptions::new(format!("127.0.0.1:{port}"));
    options.connect_timeout = Duration::from_millis(500);
    let readiness = Arc::new(Readiness::default());
    let cancel = CancellationToken::new();
    let task = tokio::spawn(ensure_topic(
        options,
        Arc::clone(&readiness),
        cancel.clone(),
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let problem = loop {
        if let Some(p) = readiness.problems().get("kafka topic") {
            break p.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no readiness problem reported"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        problem.starts_with(&format!("cannot reach the Kafka brokers 127.0.0.1:{port}")),
        "{problem}"
    );
    assert!(problem.contains("check --kafka-brokers"), "{problem}");
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test]
async fn a_record_the_producer_refuses_fails_the_write_without_leaving_any_in_flight() {
    let cluster = MockCluster::new(1).unwrap();
    cluster.create_topic("healthcheck-results", 1, 1).unwrap();
    let metrics = Arc::new(Metrics::new());
    let mut options = KafkaOptions::new(cluster.bootstrap_servers());
    options
        .librdkafka
        .insert("message.max.bytes".into(), "2000".into());
    let mut sink = KafkaSink::new(
        options,
        Arc::clone(&metrics),
        Arc::new(Readiness::default()),
    )
    .unwrap();
    // The third record is too large to queue: the two before it are delivered, the rest are
    // never queued, and the write fails as a whole once the two are reported.
    let mut batch = (*results("a", 1..=5)).clone();
    batch[2].reason = "x".repeat(4000);
    let outcome = tokio::time::timeout(Duration::from_secs(20), sink.write(vec![Arc::new(batch)]))
        .await
        .expect("the write completes");
    let err = outcome.unwrap_err().to_string();
    assert!(err.contains("cannot queue a record"), "{err}");
    assert_eq!(metrics.kafka_in_flight.get(), 0);
    assert_eq!(metrics.kafka_delivery_seconds.get_sample_count(), 2);
}
