//! Injected failures, the request log, bad requests answered with clear `Status` errors, and shutdown.

use std::time::Duration;

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use vigil_kube_fake::{FakeApiServer, Fault, Verb};

fn config_map(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

/// Sends a raw request and returns the `Status` error the server answered with.
async fn status_of(
    client: &kube::Client,
    request: http::Request<Vec<u8>>,
) -> Result<(u16, String, String)> {
    match client.request::<Value>(request).await {
        Err(kube::Error::Api(status)) => {
            Ok((status.code, status.reason.clone(), status.message.clone()))
        }
        other => bail!("expected a Status error, got {other:?}"),
    }
}

#[tokio::test]
async fn injected_errors_surface_with_their_reason() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "shop");
    maps.create(&PostParams::default(), &config_map("a"))
        .await?;

    for (code, reason) in [
        (500, "InternalError"),
        (409, "Conflict"),
        (403, "Forbidden"),
    ] {
        server.fail_next(Verb::Get, "configmaps", code);
        match maps.get("a").await {
            Err(kube::Error::Api(status)) => {
                assert_eq!((status.code, status.reason.as_str()), (code, reason))
            }
            other => bail!("expected {code}, got {other:?}"),
        }
        assert!(maps.get("a").await.is_ok(), "a fault fires once");
    }
    Ok(())
}

#[tokio::test]
async fn too_many_requests_is_retried_by_the_client_after_retry_after() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "shop");
    server.inject(Fault::new(Verb::Create, "configmaps", 429).retry_after(Duration::from_secs(1)));
    let started = tokio::time::Instant::now();
    maps.create(&PostParams::default(), &config_map("a"))
        .await?;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "retried after {:?}",
        started.elapsed()
    );
    let codes: Vec<u16> = server
        .requests()
        .iter()
        .filter(|r| r.verb == Some(Verb::Create))
        .map(|r| r.code)
        .collect();
    assert_eq!(codes, [429, 201]);
    Ok(())
}

#[tokio::test]
async fn request_log_records_verbs_resources_and_content_types() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let maps: Api<ConfigMap> = Api::namespaced(server.client(), "shop");
    maps.create(&PostParams::default(), &config_map("a"))
        .await?;
    let apply = kube::api::Patch::Apply(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v"}}),
    );
    maps.patch("a", &kube::api::PatchParams::apply("me"), &apply)
        .await?;
    let _ = maps.get("zz").await;
    let log = server.requests();
    let summary: Vec<(Option<Verb>, &str, u16)> = log
        .iter()
        .map(|r| (r.verb, r.resource.as_str(), r.code))
        .collect();
    assert_eq!(
        summary,
        [
            (Some(Verb::Create), "configmaps", 201),
            (Some(Verb::Patch), "configmaps", 200),
            (Some(Verb::Get), "configmaps", 404)
        ]
    );
    assert_eq!(
        log[1].content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(log[1].path, "/api/v1/namespaces/shop/configmaps/a");
    assert!(log[1].query.contains("fieldManager=me"));
    assert_eq!(server.count(Verb::Patch, "configmaps"), 1);
    server.clear_requests();
    assert!(server.requests().is_empty());
    Ok(())
}

#[tokio::test]
async fn bad_requests_get_clear_status_errors() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let client = server.client();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "shop");
    maps.create(&PostParams::default(), &config_map("a"))
        .await?;
    let path = "/api/v1/namespaces/shop/configmaps";
    let get = |uri: String| http::Request::get(uri).body(Vec::new()).unwrap();
    let patch = |content_type: &str, body: &str| {
        http::Request::patch(format!("{path}/a"))
            .header("content-type", content_type)
            .body(body.as_bytes().to_vec())
            .unwrap()
    };
    let cases: Vec<(http::Request<Vec<u8>>, u16, &str, &str)> = vec![
        (
            patch("text/plain", "{}"),
            415,
            "UnsupportedMediaType",
            "unknown format (text/plain)",
        ),
        (
            patch("application/merge-patch+json", "{nope"),
            400,
            "BadRequest",
            "not valid JSON",
        ),
        (
            patch("application/apply-patch+yaml", "{}"),
            400,
            "BadRequest",
            "fieldManager is required",
        ),
        (
            get(format!("{path}?watch=maybe")),
            400,
            "BadRequest",
            "watch=\"maybe\": expected true or false",
        ),
        (
            get(format!("{path}?watch=true&timeoutSeconds=soon")),
            400,
            "BadRequest",
            "timeoutSeconds=\"soon\"",
        ),
        (
            get(format!("{path}?watch=true&resourceVersion=abc")),
            400,
            "BadRequest",
            "resourceVersion=\"abc\"",
        ),
        (
            get(format!("{path}?watch=true&sendInitialEvents=true")),
            422,
            "Invalid",
            "resourceVersionMatch=NotOlderThan",
        ),
        (
            get(format!("{path}?limit=x")),
            400,
            "BadRequest",
            "limit=\"x\" is not a number",
        ),
        (
            get(format!("{path}?continue=garbage")),
            400,
            "BadRequest",
            "not a token this server issued",
        ),
        (
            get(format!("{path}?fieldSelector=metadata.name")),
            400,
            "BadRequest",
            "invalid fieldSelector requirement",
        ),
        (
            http::Request::delete(format!("{path}/a?propagationPolicy=Later"))
                .body(Vec::new())
                .unwrap(),
            400,
            "BadRequest",
            "expected Background, Foreground or Orphan",
        ),
        (
            http::Request::post(format!("{path}/a"))
                .body(b"{}".to_vec())
                .unwrap(),
            405,
            "MethodNotAllowed",
            "POST",
        ),
        (
            http::Request::post(path.to_string())
                .body(Vec::new())
                .unwrap(),
            400,
            "BadRequest",
            "needs a JSON body",
        ),
        (
            get("/apis/nope.example.com/v1/things".into()),
            404,
            "NotFound",
            "could not find the requested resource",
        ),
    ];
    for (request, code, reason, message) in cases {
        let label = format!("{} {}", request.method(), request.uri());
        let (got_code, got_reason, got_message) = status_of(&client, request).await?;
        assert_eq!(
            (got_code, got_reason.as_str()),
            (code, reason),
            "{label}: {got_message}"
        );
        assert!(got_message.contains(message), "{label}: {got_message}");
    }
    Ok(())
}

#[tokio::test]
async fn dropping_the_server_closes_it() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let client = server.client();
    let maps: Api<ConfigMap> = Api::namespaced(client, "shop");
    maps.create(&PostParams::default(), &config_map("a"))
        .await?;
    let address = server.address();
    drop(server);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(address).await.is_ok() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{address} still accepts connections"
        );
        tokio::task::yield_now().await;
    }
    assert!(maps.get("a").await.is_err());
    Ok(())
}

#[tokio::test]
async fn kubeconfig_points_clients_at_the_server_and_faults_can_be_cleared() -> Result<()> {
    let server = FakeApiServer::start().await?;
    let kubeconfig = kube::config::Kubeconfig::from_yaml(&server.kubeconfig())?;
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
    assert_eq!(config.default_namespace, "default");
    let client = kube::Client::try_from(config)?;
    let maps: Api<ConfigMap> = Api::default_namespaced(client);
    server.inject(Fault {
        verb: None,
        ..Fault::new(Verb::Get, "*", 500).times(usize::MAX)
    });
    assert!(
        maps.create(&PostParams::default(), &config_map("a"))
            .await
            .is_err()
    );
    server.clear_faults();
    maps.create(&PostParams::default(), &config_map("a"))
        .await?;
    assert!(server.get("v1", "configmaps", "default", "a").is_some());
    Ok(())
}
