//! Prints figures for the fake API server driven by the real kube client: sequential and concurrent
//! writes per second, list time, and create-to-watch-event latency. A benchmark, not a test:
//! `cargo run -p vigil-kube-fake --example throughput [-- COUNT]`.

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use vigil_kube_fake::FakeApiServer;

fn config_map(name: &str) -> anyhow::Result<ConfigMap> {
    Ok(serde_json::from_value(
        json!({"metadata": {"name": name}, "data": {"k": "v"}}),
    )?)
}

fn per_second(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize = std::env::args()
        .nth(1)
        .map(|c| c.parse())
        .transpose()?
        .unwrap_or(2000);
    let server = FakeApiServer::start().await?;
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "bench");

    let started = Instant::now();
    for index in 0..count {
        maps.create(&PostParams::default(), &config_map(&format!("cm-{index}"))?)
            .await?;
    }
    let elapsed = started.elapsed();
    println!(
        "sequential creates: {count} in {elapsed:.2?} = {:.0}/s",
        per_second(count, elapsed)
    );

    let started = Instant::now();
    let list = maps.list(&ListParams::default()).await?;
    println!(
        "list of {} objects: {:.2?}",
        list.items.len(),
        started.elapsed()
    );

    let tasks = 8;
    let started = Instant::now();
    let mut handles = Vec::new();
    for task in 0..tasks {
        let maps = maps.clone();
        handles.push(tokio::spawn(async move {
            for index in (task..count).step_by(tasks) {
                let patch = Patch::Merge(json!({"data": {"k": format!("v{index}")}}));
                maps.patch(&format!("cm-{index}"), &PatchParams::default(), &patch)
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for handle in handles {
        handle.await??;
    }
    let elapsed = started.elapsed();
    println!(
        "concurrent merge patches ({tasks} tasks): {count} in {elapsed:.2?} = {:.0}/s",
        per_second(count, elapsed)
    );

    let latency_maps: Api<ConfigMap> = Api::namespaced(server.client(), "latency");
    let mut events = watcher::watcher(latency_maps.clone(), watcher::Config::default()).boxed();
    while !matches!(events.next().await, Some(Ok(watcher::Event::InitDone))) {}
    let rounds = 500.min(count);
    let mut latencies = Vec::with_capacity(rounds);
    for index in 0..rounds {
        let started = Instant::now();
        latency_maps
            .create(&PostParams::default(), &config_map(&format!("l-{index}"))?)
            .await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), events.next()).await? {
                Some(Ok(watcher::Event::Apply(_))) => break,
                Some(_) => continue,
                None => anyhow::bail!("the watch ended"),
            }
        }
        latencies.push(started.elapsed());
    }
    latencies.sort();
    let quantile =
        |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    println!(
        "create -> watch event ({rounds} rounds): p50 {:.2?}, p99 {:.2?}, max {:.2?}",
        quantile(0.5),
        quantile(0.99),
        latencies[latencies.len() - 1]
    );
    Ok(())
}
