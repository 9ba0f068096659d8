//! EXPIRED: an active key past its expire_time reads so wherever it is shown (answers,
//! lists and their filter, verification answers, webhook payloads), computed when read and
//! never stored; no request may set it, and a later expiry makes the key ACTIVE again.

use std::{collections::BTreeSet, time::Duration};

use keyward_proto::v1::{self, ApiKeyStatus, VerificationCode, webhook_service_client::WebhookServiceClient};
use serde_json::{Value, json};

use crate::{
    events::fast,
    gateway::Rest,
    helpers::{
        ADMIN_KEY, Backend, TestApp, admin, assert_invalid, both, create_request, spawn, spawn_with, timestamp_in,
    },
    receiver::Receiver,
    webhooks::{create, endpoint},
};

const OWNER: &str = "expiry-tenant";

async fn create_key(app: &TestApp, name: &str, status: ApiKeyStatus, expires_in: Option<i64>) -> (v1::ApiKey, String) {
    let key = v1::ApiKey {
        name: name.to_owned(),
        owner: OWNER.to_owned(),
        status: status.into(),
        expire_time: expires_in.map(timestamp_in),
        ..Default::default()
    };
    let created = app.client.clone().create_api_key(admin(create_request(key))).await.unwrap().into_inner();
    (created.api_key.unwrap(), created.secret)
}

async fn get(app: &TestApp, id: &str) -> v1::ApiKey {
    let request = admin(v1::GetApiKeyRequest { id: id.to_owned() });
    app.client.clone().get_api_key(request).await.unwrap().into_inner().api_key.unwrap()
}

/// Names of the tenant's keys listed with `status` (UNSPECIFIED: all), with the status each
/// was listed with; in pages of 2, so that the filter is seen to hold across page tokens.
async fn listed(app: &TestApp, status: ApiKeyStatus) -> Vec<(String, ApiKeyStatus)> {
    let mut keys = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = v1::ListApiKeysRequest {
            owner: OWNER.to_owned(),
            status: status.into(),
            page_size: 2,
            page_token,
            ..Default::default()
        };
        let page = app.client.clone().list_api_keys(admin(request)).await.unwrap().into_inner();
        keys.extend(page.api_keys.iter().map(|key| (key.name.clone(), key.status())));
        if page.next_page_token.is_empty() {
            return keys;
        }
        page_token = page.next_page_token;
    }
}

fn named<const N: usize>(keys: [(&str, ApiKeyStatus); N]) -> Vec<(String, ApiKeyStatus)> {
    keys.into_iter().map(|(name, status)| (name.to_owned(), status)).collect()
}

fn update(key: v1::ApiKey, paths: &[&str]) -> v1::UpdateApiKeyRequest {
    v1::UpdateApiKeyRequest {
        api_key: Some(key),
        update_mask: Some(prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() }),
        ..Default::default()
    }
}

/// Waits until `at` (a key's expire_time) has passed.
async fn pass(at: &prost_types::Timestamp) {
    let until = chrono::DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).unwrap()).unwrap();
    let left = (until - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(200)).await;
}

both!(an_active_key_past_its_expiry_reads_expired_until_the_expiry_moves);
async fn an_active_key_past_its_expiry_reads_expired_until_the_expiry_moves(backend: Backend) {
    let app = spawn_with(backend, |config| {
        fast(config);
        config.events.expiry_sweep_interval = Duration::from_millis(100);
    })
    .await;
    let receiver = Receiver::start().await;
    let hook = WebhookServiceClient::new(app.channel.clone())
        .create_webhook_endpoint(admin(create(endpoint(&receiver.url(), &["api_key.expired"]))))
        .await
        .unwrap()
        .into_inner();
    receiver.trust(&hook.secret);
    let mut client = app.client.clone();
    use ApiKeyStatus::{Active, Expired, Inactive};

    let (short, secret) = create_key(&app, "short", Active, Some(2)).await;
    assert_eq!(short.status(), Active, "the creation answers it as it reads then");
    create_key(&app, "lasting", Active, None).await;
    create_key(&app, "later", Active, Some(3600)).await;
    create_key(&app, "disabled", Inactive, Some(2)).await;
    assert_eq!(get(&app, &short.id).await.status(), Active);
    let verified = app.verify(&secret, &[], "").await;
    assert!(verified.valid);
    assert_eq!(verified.api_key.unwrap().status(), Active);
    assert_eq!(listed(&app, Expired).await, named([]));

    pass(short.expire_time.as_ref().unwrap()).await;
    assert_eq!(get(&app, &short.id).await.status(), Expired);
    assert_eq!(
        listed(&app, ApiKeyStatus::Unspecified).await,
        named([("short", Expired), ("lasting", Active), ("later", Active), ("disabled", Inactive)]),
        "only an active key reads expired"
    );
    // The filters partition the active keys by their expiry.
    assert_eq!(listed(&app, Active).await, named([("lasting", Active), ("later", Active)]));
    assert_eq!(listed(&app, Expired).await, named([("short", Expired)]));
    assert_eq!(listed(&app, Inactive).await, named([("disabled", Inactive)]));
    // The key the verification cache holds is answered as it reads now.
    let refused = app.verify(&secret, &[], "").await;
    assert_eq!(refused.code(), VerificationCode::Expired);
    assert_eq!(refused.api_key.unwrap().status(), Expired);

    // EXPIRED is output only: no request sets it, and the refusal changes nothing.
    let before = get(&app, &short.id).await;
    let asked =
        v1::ApiKey { id: short.id.clone(), name: "renamed".into(), status: Expired.into(), ..Default::default() };
    let refused = client.update_api_key(admin(update(asked, &["name", "status"]))).await.unwrap_err();
    assert_invalid(&refused, "api_key.status");
    assert!(refused.message().contains("expire_time"), "the message says what to do: {}", refused.message());
    assert_eq!(get(&app, &short.id).await, before);
    let new =
        v1::ApiKey { name: "born expired".into(), owner: OWNER.into(), status: Expired.into(), ..Default::default() };
    let refused = client.create_api_key(admin(create_request(new))).await.unwrap_err();
    assert_invalid(&refused, "api_key.status");
    assert_eq!(listed(&app, ApiKeyStatus::Unspecified).await.len(), 4, "nothing was created");

    // `api_key.expired` carries the key as it reads at its expiry.
    let deliveries = receiver.wait_for(2).await;
    let statuses: BTreeSet<(String, String)> = deliveries
        .iter()
        .map(|delivery| {
            let key = &delivery["payload"]["data"]["apiKey"];
            assert_eq!(delivery["payload"]["type"], "api_key.expired");
            (key["name"].as_str().unwrap().to_owned(), key["status"].as_str().unwrap().to_owned())
        })
        .collect();
    let expected = [("disabled", "API_KEY_STATUS_INACTIVE"), ("short", "API_KEY_STATUS_EXPIRED")];
    assert_eq!(statuses, expected.iter().map(|(n, s)| ((*n).to_owned(), (*s).to_owned())).collect());

    // A later expiry (or none) makes it ACTIVE again, and it verifies.
    let later = v1::ApiKey { id: short.id.clone(), expire_time: Some(timestamp_in(3600)), ..Default::default() };
    let revived = client.update_api_key(admin(update(later, &["expire_time"]))).await.unwrap().into_inner();
    assert_eq!(revived.api_key.unwrap().status(), Active);
    assert_eq!(get(&app, &short.id).await.status(), Active);
    assert!(app.verify(&secret, &[], "").await.valid);
    assert_eq!(listed(&app, Expired).await, named([]));
    app.stop().await;
}

both!(masumi_shows_an_expired_key_active_and_can_disable_it);
/// Masumi has no expired: an expired key stays `Active` there, and Masumi's `Revoked`
/// still disables it.
async fn masumi_shows_an_expired_key_active_and_can_disable_it(backend: Backend) {
    let app = spawn(backend).await;
    let (key, secret) = create_key(&app, "masumi", ApiKeyStatus::Active, Some(1)).await;
    pass(key.expire_time.as_ref().unwrap()).await;
    assert_eq!(get(&app, &key.id).await.status(), ApiKeyStatus::Expired);
    let rest = Rest::new(app.running().http_addr);
    let own_status = || async {
        let answer = rest.send("GET", "/api/v1/api-key-status", &[("token", secret.as_str())], None).await;
        (answer.status, answer.body["error"]["message"].clone())
    };
    assert_eq!(own_status().await, (401, json!("Unauthorized, API key has expired")), "its holder is told why");
    let headers = [("token", ADMIN_KEY), ("accept", "*/*")];
    let listed = rest.send("GET", "/api/v1/api-key?limit=100", &headers, None).await;
    assert_eq!(listed.status, 200, "{:?}", listed.body);
    let shown: Vec<&Value> =
        listed.body["data"]["ApiKeys"].as_array().unwrap().iter().filter(|k| k["id"] == json!(key.id)).collect();
    assert_eq!(shown.len(), 1, "{:?}", listed.body);
    assert_eq!(shown[0]["status"], "Active");
    let body = json!({"id": key.id, "status": "Revoked"}).to_string();
    let patched = rest.send("PATCH", "/api/v1/api-key", &headers, Some(&body)).await;
    assert_eq!((patched.status, &patched.body["data"]["status"]), (200, &json!("Revoked")), "{:?}", patched.body);
    assert_eq!(get(&app, &key.id).await.status(), ApiKeyStatus::Inactive);
    assert_eq!(own_status().await, (401, json!("Unauthorized, API key is revoked")));
    app.stop().await;
}

/// Every `enum` list under `value` that names ACTIVE.
fn status_enums(value: &Value, found: &mut Vec<Vec<String>>) {
    match value {
        Value::Object(object) => {
            if let Some(Value::Array(names)) = object.get("enum") {
                let names: Vec<String> = names.iter().filter_map(|n| n.as_str().map(str::to_owned)).collect();
                if names.iter().any(|name| name == "API_KEY_STATUS_ACTIVE") {
                    found.push(names);
                }
            }
            object.values().for_each(|value| status_enums(value, found));
        }
        Value::Array(values) => values.iter().for_each(|value| status_enums(value, found)),
        Value::Null | Value::Bool(_) | Value::Number(_) | Value::String(_) => {}
    }
}

/// The statuses of the operation `operation_id` takes, one list per place it takes one.
fn taken_statuses(document: &Value, operation_id: &str) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    for item in document["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values().filter(|op| op["operationId"] == operation_id) {
            status_enums(operation, &mut found);
        }
    }
    found
}

/// The document shows EXPIRED as a key's status and takes it in the list filter, but
/// never in a create or an update, so that schema-driven clients and fuzzers see it refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_shows_expired_as_output_only() {
    let app = spawn(Backend::Sqlite).await;
    let document = Rest::new(app.running().http_addr).send("GET", "/openapi.json", &[], None).await.body;
    let shown = &document["components"]["schemas"]["keyward.v1.ApiKeyStatus"];
    assert!(shown["enum"].as_array().unwrap().contains(&json!("API_KEY_STATUS_EXPIRED")), "{shown}");
    assert!(shown["description"].as_str().unwrap().contains("OUTPUT ONLY"), "{shown}");
    let filters = taken_statuses(&document, "ApiKeyService_ListApiKeys");
    assert!(!filters.is_empty() && filters.iter().all(|names| names.contains(&"API_KEY_STATUS_EXPIRED".to_owned())));
    for operation in ["ApiKeyService_CreateApiKey", "ApiKeyService_UpdateApiKey"] {
        let taken = taken_statuses(&document, operation);
        assert!(!taken.is_empty(), "{operation} takes a status");
        assert!(
            taken.iter().all(|names| !names.contains(&"API_KEY_STATUS_EXPIRED".to_owned())),
            "{operation}: {taken:?}"
        );
    }
    app.stop().await;
}
