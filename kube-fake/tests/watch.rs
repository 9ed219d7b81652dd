//! Watches through the real kube client and kube-runtime's watcher: initial list, live events, relist
//! after `compact()` (410), bookmarks, streaming lists, selector transitions and timeouts.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, Event};
use serde_json::json;
use vigil_kube_fake::{FakeApiServer, Options, Verb};

const DEADLINE: Duration = Duration::from_secs(10);

fn config_map(name: &str, app: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"app": app}}, "data": {"k": "v"}}),
    )
    .unwrap()
}

/// The next watcher event that is not an error (errors are what a 410 produces before the relist).
async fn next_event<S>(stream: &mut S, errors: &mut usize) -> Result<Event<ConfigMap>>
where
    S: Stream<Item = Result<Event<ConfigMap>, watcher::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(DEADLINE, stream.next())
            .await
            .context("no watcher event within the deadline")?
        {
            Some(Ok(event)) => return Ok(event),
            Some(Err(_)) => *errors += 1,
            None => bail!("the watcher stream ended"),
        }
    }
}

fn describe(event: &Event<ConfigMap>) -> String {
    match event {
        Event::Init => "Init".into(),
        Event::InitApply(o) => format!("InitApply {}", o.name_any()),
        Event::InitDone => "InitDone".into(),
        Event::Apply(o) => format!("Apply {}", o.name_any()),
        Event::Delete(o) => format!("Delete {}", o.name_any()),
    }
}

#[tokio::test]
async fn watcher_sees_init_events_then_changes_and_relists_after_compaction() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "shop");
    maps.create(&PostParams::default(), &config_map("a", "web"))
        .await?;

    let mut stream = watcher::watcher(maps.clone(), watcher::Config::default()).boxed();
    let mut errors = 0;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(describe(&next_event(&mut stream, &mut errors).await?));
    }
    assert_eq!(seen, ["Init", "InitApply a", "InitDone"]);

    maps.create(&PostParams::default(), &config_map("b", "web"))
        .await?;
    assert_eq!(
        describe(&next_event(&mut stream, &mut errors).await?),
        "Apply b"
    );
    maps.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "w"}})),
    )
    .await?;
    assert_eq!(
        describe(&next_event(&mut stream, &mut errors).await?),
        "Apply b"
    );
    maps.delete("a", &DeleteParams::default()).await?;
    assert_eq!(
        describe(&next_event(&mut stream, &mut errors).await?),
        "Delete a"
    );

    // Compaction ends the watch with a 410; a change made before the watcher reads the error shows up in
    // the relist (the watcher stream is lazy: nothing is read until it is polled).
    server.compact();
    maps.create(&PostParams::default(), &config_map("c", "web"))
        .await?;
    let mut relist = Vec::new();
    loop {
        let event = describe(&next_event(&mut stream, &mut errors).await?);
        let done = event == "InitDone";
        relist.push(event);
        if done {
            break;
        }
    }
    assert_eq!(relist, ["Init", "InitApply b", "InitApply c", "InitDone"]);
    assert_eq!(errors, 1, "exactly one 410 error surfaced");
    assert_eq!(
        server.count(Verb::List, "configmaps"),
        2,
        "the watcher listed twice"
    );

    maps.create(&PostParams::default(), &config_map("d", "web"))
        .await?;
    assert_eq!(
        describe(&next_event(&mut stream, &mut errors).await?),
        "Apply d"
    );
    Ok(())
}

#[tokio::test]
async fn watch_from_a_compacted_version_gets_a_410_error_event() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "shop");
    let created = maps
        .create(&PostParams::default(), &config_map("a", "web"))
        .await?;
    let old = created.resource_version().unwrap();
    maps.create(&PostParams::default(), &config_map("b", "web"))
        .await?;
    server.compact();
    let mut events = maps.watch(&WatchParams::default(), &old).await?.boxed();
    match tokio::time::timeout(DEADLINE, events.try_next()).await?? {
        Some(WatchEvent::Error(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
            assert!(
                status.message.starts_with("too old resource version"),
                "{}",
                status.message
            );
        }
        other => bail!("expected an ERROR event, got {other:?}"),
    }
    assert!(
        tokio::time::timeout(DEADLINE, events.try_next())
            .await??
            .is_none(),
        "the watch ends after the error"
    );
    Ok(())
}

#[tokio::test]
async fn bookmarks_flow_and_the_watcher_resumes_from_them() -> Result<()> {
    let options = Options {
        bookmark_interval: Duration::from_millis(100),
        ..Options::default()
    };
    let server = FakeApiServer::start_with(options).await?;
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "shop");
    let created = maps
        .create(&PostParams::default(), &config_map("a", "web"))
        .await?;
    // Changes elsewhere move the resourceVersion on; a bookmark reports it.
    let others: Api<ConfigMap> = Api::namespaced(server.client(), "other");
    others
        .create(&PostParams::default(), &config_map("x", "web"))
        .await?;
    let latest = server.resource_version().to_string();

    let params = WatchParams::default();
    let mut events = maps
        .watch(&params, &created.resource_version().unwrap())
        .await?
        .boxed();
    match tokio::time::timeout(DEADLINE, events.try_next()).await?? {
        Some(WatchEvent::Bookmark(bookmark)) => {
            assert_eq!(bookmark.metadata.resource_version, latest);
            assert_eq!(bookmark.types.kind, "ConfigMap");
        }
        other => bail!("expected a BOOKMARK, got {other:?}"),
    }

    // A watcher whose watch times out after 1 s reconnects from the bookmark's resourceVersion.
    let config = watcher::Config::default().timeout(1);
    let mut stream = watcher::watcher(maps.clone(), config).boxed();
    let mut errors = 0;
    for _ in 0..3 {
        next_event(&mut stream, &mut errors).await?;
    }
    let list_rv = server.resource_version();
    others
        .create(&PostParams::default(), &config_map("y", "web"))
        .await?;
    let wanted = format!("resourceVersion={}", list_rv + 1);
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let drive = async {
        loop {
            let _ = stream.next().await;
        }
    };
    let check = async {
        while tokio::time::Instant::now() < deadline {
            let resumed = server
                .requests()
                .iter()
                .any(|r| r.verb == Some(Verb::Watch) && r.query.contains(&wanted));
            if resumed {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    };
    let resumed = tokio::select! { _ = drive => false, resumed = check => resumed };
    assert!(
        resumed,
        "no watch resumed with {wanted}: {:?}",
        server.requests()
    );
    Ok(())
}

#[tokio::test]
async fn streaming_lists_end_initial_events_with_a_bookmark() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "shop");
    for name in ["a", "b"] {
        maps.create(&PostParams::default(), &config_map(name, "web"))
            .await?;
    }
    let mut stream =
        watcher::watcher(maps.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut errors = 0;
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(describe(&next_event(&mut stream, &mut errors).await?));
    }
    assert_eq!(seen, ["Init", "InitApply a", "InitApply b", "InitDone"]);
    assert_eq!(
        server.count(Verb::List, "configmaps"),
        0,
        "no LIST with streaming lists"
    );
    maps.create(&PostParams::default(), &config_map("c", "web"))
        .await?;
    assert_eq!(
        describe(&next_event(&mut stream, &mut errors).await?),
        "Apply c"
    );
    Ok(())
}

#[tokio::test]
async fn objects_leaving_a_label_selection_are_deleted_events() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "shop");
    maps.create(&PostParams::default(), &config_map("a", "db"))
        .await?;
    let config = watcher::Config::default().labels("app=web");
    let mut stream = watcher::watcher(maps.clone(), config).boxed();
    let mut errors = 0;
    for _ in 0..2 {
        next_event(&mut stream, &mut errors).await?;
    }
    let relabel = |app: &str| Patch::Merge(json!({"metadata": {"labels": {"app": app}}}));
    maps.patch("a", &PatchParams::default(), &relabel("web"))
        .await?;
    assert_eq!(
        describe(&next_event(&mut stream, &mut errors).await?),
        "Apply a"
    );
    maps.patch("a", &PatchParams::default(), &relabel("db"))
        .await?;
    assert_eq!(
        describe(&next_event(&mut stream, &mut errors).await?),
        "Delete a"
    );
    Ok(())
}

#[tokio::test]
async fn watches_end_at_their_timeout() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "shop");
    let params = WatchParams::default().timeout(1).disable_bookmarks();
    let started = tokio::time::Instant::now();
    let mut events = maps
        .watch(&params, &server.resource_version().to_string())
        .await?
        .boxed();
    assert!(
        tokio::time::timeout(DEADLINE, events.try_next())
            .await??
            .is_none()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "ended after {:?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::test]
async fn metadata_only_requests_get_partial_object_metadata() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "shop");
    maps.create(&PostParams::default(), &config_map("a", "web"))
        .await?;
    let meta = maps.get_metadata("a").await?;
    assert_eq!(
        meta.types.as_ref().map(|t| t.kind.as_str()),
        Some("PartialObjectMetadata")
    );
    assert_eq!(meta.metadata.labels.unwrap()["app"], "web");
    let list = maps.list_metadata(&Default::default()).await?;
    assert_eq!(list.items.len(), 1);

    let mut stream = watcher::watcher(
        Api::<PartialObjectMeta<ConfigMap>>::namespaced(server.client(), "shop"),
        watcher::Config::default(),
    )
    .boxed();
    let mut seen = Vec::new();
    while seen.len() < 4 {
        match tokio::time::timeout(DEADLINE, stream.next())
            .await?
            .context("stream ended")?
        {
            Ok(watcher::Event::InitApply(m) | watcher::Event::Apply(m)) => seen.push(m.name_any()),
            Ok(watcher::Event::InitDone) => {
                seen.push("InitDone".into());
                maps.create(&PostParams::default(), &config_map("b", "web"))
                    .await?;
            }
            Ok(_) => seen.push("other".into()),
            Err(error) => bail!("metadata watcher failed: {error}"),
        }
    }
    assert_eq!(seen, ["other", "a", "InitDone", "b"]);
    Ok(())
}
