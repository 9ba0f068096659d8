//! Webhook endpoints: managed by admin only, validated field by field, their signing
//! secrets shown once and stored sealed.

use keyward_proto::v1::{
    self, api_key_service_client::ApiKeyServiceClient, webhook_service_client::WebhookServiceClient,
};
use prost_types::FieldMask;
use sea_orm::ConnectionTrait;
use tonic::Code;

use crate::{
    helpers::{Backend, Replica, admin, assert_invalid, both, spawn, spawn_with, with_key},
    receiver::{Hanging, Receiver},
};

pub(crate) fn endpoint(url: &str, types: &[&str]) -> v1::WebhookEndpoint {
    v1::WebhookEndpoint {
        url: url.to_owned(),
        description: "test receiver".to_owned(),
        event_types: types.iter().map(|t| (*t).to_owned()).collect(),
        enabled: true,
        ..Default::default()
    }
}

pub(crate) fn create(endpoint: v1::WebhookEndpoint) -> v1::CreateWebhookEndpointRequest {
    v1::CreateWebhookEndpointRequest { webhook_endpoint: Some(endpoint) }
}

both!(endpoints_are_managed_by_admin_only);
async fn endpoints_are_managed_by_admin_only(backend: Backend) {
    let app = spawn(backend).await;
    let mut hooks = WebhookServiceClient::new(app.channel.clone());
    let created = hooks
        .create_webhook_endpoint(admin(create(endpoint("https://hooks.example.com/keyward", &["api_key.revoked"]))))
        .await
        .unwrap()
        .into_inner();
    assert!(created.secret.starts_with("whsec_"), "{}", created.secret);
    let stored = created.webhook_endpoint.unwrap();
    assert_eq!(stored.event_types, ["api_key.revoked"]);
    assert!(stored.enabled && !stored.failing);

    // The secret is stored sealed, never in clear.
    let row = app
        .running()
        .store
        .connection()
        .query_one_raw(sea_orm::Statement::from_string(
            app.running().store.connection().get_database_backend(),
            "SELECT sealed_secret FROM webhook_endpoints".to_owned(),
        ))
        .await
        .unwrap()
        .unwrap();
    let sealed: String = row.try_get("", "sealed_secret").unwrap();
    let bare = created.secret.trim_start_matches("whsec_");
    assert!(!sealed.contains(bare) && !sealed.contains(&created.secret));

    let got = hooks
        .get_webhook_endpoint(admin(v1::GetWebhookEndpointRequest { id: stored.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.webhook_endpoint.as_ref(), Some(&stored));
    let update = v1::UpdateWebhookEndpointRequest {
        webhook_endpoint: Some(v1::WebhookEndpoint {
            id: stored.id.clone(),
            event_types: vec!["api_key.created".into(), "credits.low".into()],
            enabled: false,
            ..Default::default()
        }),
        update_mask: Some(FieldMask { paths: vec!["event_types".into(), "enabled".into()] }),
    };
    let updated = hooks.update_webhook_endpoint(admin(update)).await.unwrap().into_inner().webhook_endpoint.unwrap();
    assert_eq!(updated.event_types, ["api_key.created", "credits.low"]);
    assert!(!updated.enabled);
    assert_eq!(updated.url, stored.url);
    let rotated = hooks
        .rotate_webhook_endpoint_secret(admin(v1::RotateWebhookEndpointSecretRequest { id: stored.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert!(rotated.secret.starts_with("whsec_") && rotated.secret != created.secret);
    let listed = hooks.list_webhook_endpoints(admin(v1::ListWebhookEndpointsRequest::default())).await.unwrap();
    assert_eq!(listed.into_inner().webhook_endpoints.len(), 1);
    hooks.delete_webhook_endpoint(admin(v1::DeleteWebhookEndpointRequest { id: stored.id.clone() })).await.unwrap();
    let gone = hooks.get_webhook_endpoint(admin(v1::GetWebhookEndpointRequest { id: stored.id })).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    // Bad input, each field named.
    let bad = |url: &str, types: &[&str], description: String| {
        create(v1::WebhookEndpoint { description, ..endpoint(url, types) })
    };
    let cases = [
        (bad("http://hooks.example.com/x", &["api_key.created"], String::new()), "webhook_endpoint.url"),
        (bad("https://user:pw@hooks.example.com/x", &["api_key.created"], String::new()), "webhook_endpoint.url"),
        (bad("https://127.0.0.1/x", &["api_key.created"], String::new()), "webhook_endpoint.url"),
        (bad("https://hooks.example.io*/x", &["api_key.created"], String::new()), "webhook_endpoint.url"),
        (bad("https://hooks_example.com/x", &["api_key.created"], String::new()), "webhook_endpoint.url"),
        (bad("https://hooks.example.com/x", &["api_key.exploded"], String::new()), "webhook_endpoint.event_types"),
        (bad("https://hooks.example.com/x", &[], String::new()), "webhook_endpoint.event_types"),
        (bad("https://hooks.example.com/x", &["api_key.created"], "d".repeat(10_240)), "webhook_endpoint.description"),
    ];
    for (request, field) in cases {
        let status = hooks.create_webhook_endpoint(admin(request)).await.unwrap_err();
        assert_invalid(&status, field);
    }

    // Not admin: PERMISSION_DENIED, whatever the request.
    let (_, writer) = app.create_key("owner-a", &["keys:write"]).await;
    let denied = hooks
        .create_webhook_endpoint(with_key(
            &writer,
            create(endpoint("https://hooks.example.com/x", &["api_key.created"])),
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let denied = hooks.list_webhook_endpoints(with_key(&writer, Default::default())).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoints_only_where_allowed() {
    let app = spawn_with(Backend::Sqlite, |config| config.events.webhook_allow_http = true).await;
    let mut hooks = WebhookServiceClient::new(app.channel.clone());
    hooks
        .create_webhook_endpoint(admin(create(endpoint("http://127.0.0.1:9/hooks", &["api_key.created"]))))
        .await
        .unwrap();
    app.stop().await;
}

both!(a_stored_endpoint_is_checked_again_at_delivery);
async fn a_stored_endpoint_is_checked_again_at_delivery(backend: Backend) {
    let mut app = spawn_with(backend, crate::events::fast).await;
    let receiver = Receiver::start().await;
    let endpoint_id = crate::events::subscribe(&app, &receiver).await;
    app.running.take().unwrap().stop().await.unwrap();
    // The same database, with http and internal addresses no longer allowed.
    let mut config = app.config.clone();
    config.events.webhook_allow_http = false;
    let running = keyward_server::start(config).await.expect("server starts");
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", running.grpc_addr)).unwrap().connect_lazy();
    let request = v1::CreateApiKeyRequest {
        api_key: Some(v1::ApiKey { name: "after".into(), owner: "team-a".into(), ..Default::default() }),
        ..Default::default()
    };
    ApiKeyServiceClient::new(channel.clone()).create_api_key(admin(request)).await.unwrap();
    let mut hooks = WebhookServiceClient::new(channel);
    let listing = v1::ListWebhookDeliveriesRequest { endpoint_id, page_size: 10, ..Default::default() };
    // A guard against a hang, not a measure of time.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    let attempt = loop {
        let attempts = hooks.list_webhook_deliveries(admin(listing.clone())).await.unwrap().into_inner();
        if let Some(attempt) = attempts.webhook_deliveries.into_iter().next() {
            break attempt;
        }
        assert!(tokio::time::Instant::now() < deadline, "no attempt recorded");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(attempt.status_code, 0);
    assert!(attempt.error.starts_with("not posted:") && attempt.error.contains("https://"), "{}", attempt.error);
    assert!(receiver.deliveries().is_empty() && receiver.invalid().is_empty(), "the receiver was posted to");
    running.stop().await.unwrap();
    app.stop().await;
}

/// Proxies named in the environment are not asked to carry webhook posts: a proxy would
/// connect to whatever name it is given, past the address checks, from where it stands.
/// The replica runs with every proxy variable pointing at a listener that only counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_posts_ignore_proxies_from_the_environment() {
    let proxy = Hanging::start().await;
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port);
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}/keyward.db", dir.path().display());
    let mut env = vec![("KEYWARD_WEBHOOK_ALLOW_HTTP", "true"), ("KEYWARD_WEBHOOK_POLL_INTERVAL", "50ms")];
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"] {
        env.push((name, proxy_url.as_str()));
    }
    let replica = Replica::start(&database, dir.path(), &env).await.expect("the replica starts");
    let receiver = Receiver::start().await;
    let created = WebhookServiceClient::new(replica.channel.clone())
        .create_webhook_endpoint(admin(create(endpoint(&receiver.url(), &["api_key.created"]))))
        .await
        .unwrap()
        .into_inner();
    receiver.trust(&created.secret);
    let request = v1::CreateApiKeyRequest {
        api_key: Some(v1::ApiKey { name: "proxied?".into(), owner: "team-a".into(), ..Default::default() }),
        ..Default::default()
    };
    replica.client.clone().create_api_key(admin(request)).await.unwrap();
    // A guard against a hang, not a measure of time.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while receiver.deliveries().is_empty() && proxy.accepted() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "nothing was posted, directly or through the proxy");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(proxy.accepted(), 0, "the proxy was asked to carry a webhook post");
    assert_eq!(receiver.deliveries()[0]["payload"]["type"], "api_key.created");
}
