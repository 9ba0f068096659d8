//! `*` subscribes a webhook endpoint to every event type: taken over gRPC and REST, shown
//! back as `*`, stored as the wildcard (so a type added later reaches the endpoint too),
//! alone in its list, and matched by the dispatcher for every event.

use keyward_proto::v1::{self, webhook_service_client::WebhookServiceClient};
use prost_types::FieldMask;
use sea_orm::ConnectionTrait;
use serde_json::json;

use crate::{
    events::fast,
    gateway::Rest,
    helpers::{ADMIN_KEY, Backend, admin, assert_invalid, both, spawn_with},
    receiver::{Receiver, types},
    webhooks::{create, endpoint},
};

both!(a_wildcard_endpoint_is_shown_and_stored_as_the_wildcard);
async fn a_wildcard_endpoint_is_shown_and_stored_as_the_wildcard(backend: Backend) {
    let app = spawn_with(backend, fast).await;
    let mut hooks = WebhookServiceClient::new(app.channel.clone());
    let created = hooks
        .create_webhook_endpoint(admin(create(endpoint("https://hooks.example.com/all", &["*"]))))
        .await
        .unwrap()
        .into_inner()
        .webhook_endpoint
        .unwrap();
    assert_eq!(created.event_types, ["*"]);
    let got = hooks
        .get_webhook_endpoint(admin(v1::GetWebhookEndpointRequest { id: created.id.clone() }))
        .await
        .unwrap()
        .into_inner()
        .webhook_endpoint
        .unwrap();
    assert_eq!(got.event_types, ["*"]);
    let listed = hooks.list_webhook_endpoints(admin(v1::ListWebhookEndpointsRequest::default())).await.unwrap();
    assert_eq!(listed.into_inner().webhook_endpoints[0].event_types, ["*"]);

    // The row keeps the wildcard, not today's list of types.
    let db = app.running().store.connection();
    let row = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT event_types FROM webhook_endpoints".to_owned(),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.try_get::<String>("", "event_types").unwrap(), r#"["*"]"#);

    // `*` stands alone, on create and on update.
    let mixed = hooks
        .create_webhook_endpoint(admin(create(endpoint("https://hooks.example.com/x", &["*", "api_key.created"]))))
        .await
        .unwrap_err();
    assert_invalid(&mixed, "webhook_endpoint.event_types");
    let update = |types: &[&str]| v1::UpdateWebhookEndpointRequest {
        webhook_endpoint: Some(v1::WebhookEndpoint {
            id: created.id.clone(),
            event_types: types.iter().map(|kind| (*kind).to_owned()).collect(),
            ..Default::default()
        }),
        update_mask: Some(FieldMask { paths: vec!["event_types".into()] }),
    };
    let mixed = hooks.update_webhook_endpoint(admin(update(&["credits.low", "*"]))).await.unwrap_err();
    assert_invalid(&mixed, "webhook_endpoint.event_types");
    let narrowed = hooks.update_webhook_endpoint(admin(update(&["credits.low"]))).await.unwrap().into_inner();
    assert_eq!(narrowed.webhook_endpoint.unwrap().event_types, ["credits.low"]);
    let widened = hooks.update_webhook_endpoint(admin(update(&["*"]))).await.unwrap().into_inner();
    assert_eq!(widened.webhook_endpoint.unwrap().event_types, ["*"]);

    // The same over REST.
    let rest = Rest::new(app.running().http_addr);
    let bearer = format!("Bearer {ADMIN_KEY}");
    let body = json!({"webhookEndpoint": {"url": "https://hooks.example.com/rest", "eventTypes": ["*"]}});
    let made = rest.send("POST", "/v1/webhookEndpoints", &[("authorization", &bearer)], Some(&body.to_string())).await;
    assert_eq!(made.status, 200, "{:?}", made.body);
    assert_eq!(made.body["webhookEndpoint"]["eventTypes"], json!(["*"]));
    let id = made.body["webhookEndpoint"]["id"].as_str().unwrap();
    let read = rest.send("GET", &format!("/v1/webhookEndpoints/{id}"), &[("authorization", &bearer)], None).await;
    assert_eq!(read.body["webhookEndpoint"]["eventTypes"], json!(["*"]), "{:?}", read.body);
    let body = json!({"webhookEndpoint": {"url": "https://hooks.example.com/rest", "eventTypes": ["*", "*"]}});
    let refused =
        rest.send("POST", "/v1/webhookEndpoints", &[("authorization", &bearer)], Some(&body.to_string())).await;
    assert_eq!(refused.status, 400, "{:?}", refused.body);
    app.stop().await;
}

both!(a_wildcard_endpoint_receives_every_event);
async fn a_wildcard_endpoint_receives_every_event(backend: Backend) {
    let app = spawn_with(backend, fast).await;
    let receiver = Receiver::start().await;
    let created = WebhookServiceClient::new(app.channel.clone())
        .create_webhook_endpoint(admin(create(endpoint(&receiver.url(), &["*"]))))
        .await
        .unwrap()
        .into_inner();
    receiver.trust(&created.secret);
    let mut client = app.client.clone();
    let request = v1::CreateApiKeyRequest {
        api_key: Some(v1::ApiKey {
            name: "metered".into(),
            owner: "team-a".into(),
            usage_limited: true,
            credits: vec![v1::CreditAmount { unit: String::new(), amount: 1 }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = client.create_api_key(admin(request)).await.unwrap().into_inner();
    let key = created.api_key.unwrap();
    // Spending the last credit is a balance event, of another family than the key's own.
    let verify = v1::VerifyApiKeyRequest {
        key: created.secret,
        cost: vec![v1::CreditAmount { unit: String::new(), amount: 1 }],
        ..Default::default()
    };
    assert!(client.verify_api_key(admin(verify)).await.unwrap().into_inner().valid);
    client.delete_api_key(admin(v1::DeleteApiKeyRequest { id: key.id, ..Default::default() })).await.unwrap();
    let mut kinds = types(&receiver.wait_for(3).await);
    kinds.sort();
    assert_eq!(kinds, ["api_key.created", "api_key.revoked", "credits.exhausted"]);
    assert!(receiver.invalid().is_empty());
    app.stop().await;
}
