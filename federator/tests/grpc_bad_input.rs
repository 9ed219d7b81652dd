//! A peer that sends malformed, oversized or out-of-contract messages gets a gRPC status,
//! the federator keeps serving, and well-behaved agents are unaffected.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;
use vigil_proto::{
    AgentMessage, MAX_BATCH_RESULTS, ProbeResult, ResultBatch, agent_message,
    federator_client::FederatorClient, federator_message::Msg,
};

mod common;
use common::Fed;

const CHECKS: &str = "apiVersion: vigil.dev/v1alpha1\nkind: HealthCheck\nmetadata: {name: c, namespace: t}\nspec:\n  probe: {tcp: {address: '127.0.0.1:1'}}\n";

async fn federator() -> Fed {
    Fed::start(CHECKS, |_| {}).await
}

async fn client(addr: SocketAddr) -> FederatorClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    FederatorClient::new(channel)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX)
}

use common::hello;

fn batch(seqs: impl IntoIterator<Item = u64>) -> AgentMessage {
    AgentMessage {
        msg: Some(agent_message::Msg::Results(ResultBatch {
            results: seqs
                .into_iter()
                .map(|seq| ProbeResult {
                    seq,
                    check_id: "t/c".into(),
                    target: "127.0.0.1:1".into(),
                    outcome: 2,
                    ..Default::default()
                })
                .collect(),
            agent_id: String::new(),
            batch_seq: 0,
        })),
    }
}

/// Sends `msgs` on one Connect stream and returns the status the stream ended with.
async fn stream_status(addr: SocketAddr, msgs: Vec<AgentMessage>) -> tonic::Status {
    let mut c = client(addr).await;
    let (tx, rx) = mpsc::channel(msgs.len() + 1);
    for m in msgs {
        tx.send(m).await.unwrap();
    }
    let mut inbound = match c.connect(ReceiverStream::new(rx)).await {
        Ok(r) => r.into_inner(),
        Err(status) => return status,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, inbound.message())
            .await
            .expect("the stream ends with a status in time")
        {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("stream ended without an error status"),
            Err(status) => return status,
        }
    }
}

async fn still_serving(fed: &Fed) {
    let body = reqwest_like_get(fed.http, "/healthz").await;
    assert_eq!(body, "ok\n");
}

async fn reqwest_like_get(addr: SocketAddr, path: &str) -> String {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header("host", "x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}

#[tokio::test]
async fn first_message_must_be_hello() {
    let fed = federator().await;
    let status = stream_status(fed.grpc, vec![batch([1])]).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "the first message on Connect must be Hello"
    );
    still_serving(&fed).await;
}

#[tokio::test]
async fn hello_without_node_is_refused() {
    let fed = federator().await;
    let mut h = hello("a");
    if let Some(agent_message::Msg::Hello(h)) = &mut h.msg {
        h.node.clear();
    }
    let status = stream_status(fed.grpc, vec![h]).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "Hello.node must be 1-253 printable characters (got \"\")"
    );
}

#[tokio::test]
async fn seq_going_backwards_is_refused() {
    let fed = federator().await;
    let status = stream_status(fed.grpc, vec![hello("a"), batch([5]), batch([3])]).await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "result seq must increase on a stream: got 3 after 5"
    );
    still_serving(&fed).await;
}

#[tokio::test]
async fn result_for_a_check_never_assigned_is_refused_but_node_diagnostics_are_taken() {
    let fed = federator().await;
    let mut stray = batch([2]);
    if let Some(agent_message::Msg::Results(b)) = &mut stray.msg {
        b.results[0].check_id = "t/nobody-defined-this".into();
    }
    let mut node = batch([1]);
    if let Some(agent_message::Msg::Results(b)) = &mut node.msg {
        b.results[0].check_id = "node/memory".into();
    }
    let status = stream_status(fed.grpc, vec![hello("a"), node, stray]).await;
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(
        status.message(),
        "a result is for check \"t/nobody-defined-this\", which this federator never assigned: \
         results are taken only for defined (or just removed) checks and node/ diagnostics"
    );
    still_serving(&fed).await;
}

#[tokio::test]
async fn batch_over_the_result_limit_is_refused() {
    let fed = federator().await;
    let n = MAX_BATCH_RESULTS as u64 + 1;
    let status = stream_status(fed.grpc, vec![hello("a"), batch(1..=n)]).await;
    assert_eq!(status.code(), Code::OutOfRange);
    assert_eq!(
        status.message(),
        format!("a ResultBatch holds at most {MAX_BATCH_RESULTS} results; this one held {n}")
    );
}

#[tokio::test]
async fn oversized_message_is_refused() {
    let fed = federator().await;
    let mut big = batch([1]);
    if let Some(agent_message::Msg::Results(b)) = &mut big.msg {
        b.results[0].reason = "x".repeat(5 * 1024 * 1024);
    }
    let status = stream_status(fed.grpc, vec![hello("a"), big]).await;
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("message length too large"),
        "{status:?}"
    );
    still_serving(&fed).await;
}

#[tokio::test]
async fn garbage_protobuf_gets_a_grpc_status() {
    let fed = federator().await;
    let tcp = tokio::net::TcpStream::connect(fed.grpc).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    // One gRPC frame: uncompressed, 6 bytes of something that is not a ResultBatch.
    let mut frame = vec![0u8, 0, 0, 0, 6];
    frame.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]);
    let req = hyper::Request::post(format!("http://{}/vigil.v1.Federator/Report", fed.grpc))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from(frame)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let header_status = resp.headers().get("grpc-status").cloned();
    let collected = resp.into_body().collect().await.unwrap();
    let status = header_status
        .or_else(|| {
            collected
                .trailers()
                .and_then(|t| t.get("grpc-status").cloned())
        })
        .expect("a grpc-status");
    assert_eq!(
        status.to_str().unwrap(),
        (Code::Internal as i32).to_string()
    );
    still_serving(&fed).await;
}

#[tokio::test]
async fn report_needs_an_agent_id() {
    let fed = federator().await;
    let mut c = client(fed.grpc).await;
    let status = c
        .report(ResultBatch {
            results: vec![],
            agent_id: String::new(),
            batch_seq: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(
        status.message(),
        "ResultBatch.agent_id is required on Report"
    );
}

#[tokio::test]
async fn good_agent_is_acked_after_the_sink_and_duplicates_are_dropped() {
    let fed = federator().await;
    // A misbehaving peer first; it must not disturb the good one.
    let _ = stream_status(fed.grpc, vec![hello("bad"), batch([2]), batch([1])]).await;

    let mut c = client(fed.grpc).await;
    let (tx, rx) = mpsc::channel(8);
    tx.send(hello("good")).await.unwrap();
    let mut inbound = c
        .connect(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(batch(1..=1)).await.unwrap();
    tx.send(batch(2..=3)).await.unwrap();
    loop {
        match inbound.message().await.unwrap().unwrap().msg {
            Some(Msg::Ack(a)) if a.seq == 3 => break,
            Some(Msg::Ack(a)) => assert_eq!(a.seq, 1),
            Some(Msg::Assignment(a)) => {
                assert_eq!(a.checks.len(), 1, "the tcp check is placed on the agent")
            }
            None => {}
        }
    }
    let text = std::fs::read_to_string(&fed.results).unwrap();
    let good: Vec<u64> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["agent"] == "good")
        .map(|v| v["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(good, [1, 2, 3], "acked means written");
    drop(tx);

    // A reconnect that resends what was already acknowledged (the Ack of 3 was lost, the
    // agent knows of 1) writes nothing twice.
    let (tx, rx) = mpsc::channel(8);
    tx.send(hello_acked("good", 1)).await.unwrap();
    let mut inbound = c
        .connect(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    tx.send(batch(2..=4)).await.unwrap();
    let ack = loop {
        if let Some(Msg::Ack(a)) = inbound.message().await.unwrap().unwrap().msg {
            break a.seq;
        }
    };
    assert_eq!(ack, 4);
    let text = std::fs::read_to_string(&fed.results).unwrap();
    let count = text
        .lines()
        .filter(|l| l.contains("\"agent\":\"good\""))
        .count();
    assert_eq!(count, 4);
}

fn hello_acked(agent_id: &str, last_acked_seq: u64) -> AgentMessage {
    let mut msg = hello(agent_id);
    if let Some(agent_message::Msg::Hello(h)) = &mut msg.msg {
        h.last_acked_seq = last_acked_seq;
    }
    msg
}

/// The seqs of `agent`'s results in the federator's results file, in file order.
fn written_seqs(fed: &Fed, agent: &str) -> Vec<u64> {
    std::fs::read_to_string(&fed.results)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["agent"] == agent)
        .map(|v| v["seq"].as_u64().unwrap())
        .collect()
}

/// Sends `batch` as agent `agent_id` on a new stream whose Hello says `last_acked_seq`, and
/// waits for the Ack of `want_ack`.
async fn send_and_wait(fed: &Fed, hello: AgentMessage, batch: AgentMessage, want_ack: u64) {
    let mut c = client(fed.grpc).await;
    let (tx, rx) = mpsc::channel(8);
    tx.send(hello).await.unwrap();
    tx.send(batch).await.unwrap();
    let mut inbound = c
        .connect(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let msg = tokio::time::timeout_at(deadline, inbound.message())
            .await
            .expect("the Ack comes in time")
            .unwrap()
            .unwrap();
        if let Some(Msg::Ack(a)) = msg.msg
            && a.seq == want_ack
        {
            return;
        }
    }
}

#[tokio::test]
async fn an_agent_that_restarts_its_seq_at_1_is_a_new_incarnation() {
    let fed = federator().await;
    send_and_wait(&fed, hello_acked("fixed-id", 0), batch(1..=3), 3).await;
    assert_eq!(written_seqs(&fed, "fixed-id"), [1, 2, 3]);

    // The same --agent-id restarted without a spill directory: Hello knows of no Ack, and seq
    // starts again at 1. These are new results, not duplicates of the old 1 and 2.
    send_and_wait(&fed, hello_acked("fixed-id", 0), batch(1..=2), 2).await;
    assert_eq!(written_seqs(&fed, "fixed-id"), [1, 2, 3, 1, 2]);

    // The new incarnation is deduplicated as usual from here on.
    send_and_wait(&fed, hello_acked("fixed-id", 1), batch(2..=4), 4).await;
    assert_eq!(written_seqs(&fed, "fixed-id"), [1, 2, 3, 1, 2, 3, 4]);
}
