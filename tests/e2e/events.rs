//! Lifecycle events: born in the transaction of their change, delivered at least once,
//! signed (each delivery verified by the Standard Webhooks reference library), retried by
//! the schedule while the receiver is away.

use std::time::Duration;

use keyward_proto::v1::{self, webhook_service_client::WebhookServiceClient};
use keyward_server::Config;
use sea_orm::ConnectionTrait;
use tonic::Code;

use crate::{
    helpers::{Backend, TestApp, admin, both, spawn_with},
    receiver::{Hanging, Receiver, types},
    webhooks::{create, endpoint},
};

pub(crate) const ALL_TYPES: [&str; 9] = [
    "api_key.created",
    "api_key.updated",
    "api_key.revoked",
    "api_key.undeleted",
    "api_key.rotated",
    "api_key.expiring",
    "api_key.expired",
    "credits.low",
    "credits.exhausted",
];

/// Fast deliveries for tests: plain http on loopback, short polls and retries.
pub(crate) fn fast(config: &mut Config) {
    config.events.webhook_allow_http = true;
    config.events.webhook_poll_interval = Duration::from_millis(50);
    config.events.webhook_timeout = Duration::from_secs(5);
    config.events.webhook_retry_schedule = [300, 600, 900, 1200, 1500].into_iter().map(Duration::from_millis).collect();
    config.events.webhook_failure_threshold = 2;
}

/// An endpoint of every type pointing at `receiver`, which is told its secret.
pub(crate) async fn subscribe(app: &TestApp, receiver: &Receiver) -> String {
    let created = WebhookServiceClient::new(app.channel.clone())
        .create_webhook_endpoint(admin(create(endpoint(&receiver.url(), &ALL_TYPES))))
        .await
        .unwrap()
        .into_inner();
    receiver.trust(&created.secret);
    created.webhook_endpoint.unwrap().id
}

both!(every_key_event_arrives_once_signed);
async fn every_key_event_arrives_once_signed(backend: Backend) {
    let app = spawn_with(backend, fast).await;
    let receiver = Receiver::start().await;
    subscribe(&app, &receiver).await;
    let mut client = app.client.clone();
    let created = client
        .create_api_key(admin(v1::CreateApiKeyRequest {
            api_key: Some(v1::ApiKey { name: "evented".into(), owner: "team-a".into(), ..Default::default() }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let key = created.api_key.unwrap();
    let update = v1::UpdateApiKeyRequest {
        api_key: Some(v1::ApiKey { id: key.id.clone(), name: "renamed".into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["name".into()] }),
        ..Default::default()
    };
    client.update_api_key(admin(update)).await.unwrap();
    let rotated = client
        .rotate_api_key(admin(v1::RotateApiKeyRequest { id: key.id.clone(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    client.delete_api_key(admin(v1::DeleteApiKeyRequest { id: key.id.clone(), ..Default::default() })).await.unwrap();
    // Refused changes roll back and make no event.
    let refused =
        client.delete_api_key(admin(v1::DeleteApiKeyRequest { id: key.id.clone(), ..Default::default() })).await;
    assert_eq!(refused.unwrap_err().code(), Code::FailedPrecondition);
    let refused =
        client.rotate_api_key(admin(v1::RotateApiKeyRequest { id: key.id.clone(), ..Default::default() })).await;
    assert_eq!(refused.unwrap_err().code(), Code::FailedPrecondition);
    client
        .undelete_api_key(admin(v1::UndeleteApiKeyRequest { id: key.id.clone(), ..Default::default() }))
        .await
        .unwrap();

    // Deliveries may arrive in any order; the key's sequence numbers follow its changes.
    let mut deliveries = receiver.wait_for(5).await;
    deliveries.sort_by_key(|delivery| delivery["payload"]["sequence"].as_i64().unwrap());
    // Nothing more comes: the refused changes left no event behind.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deliveries_after = receiver.deliveries();
    assert_eq!(deliveries_after.len(), 5, "{deliveries_after:#?}");
    assert!(receiver.invalid().is_empty(), "{:?}", receiver.invalid());
    assert_eq!(
        types(&deliveries),
        ["api_key.created", "api_key.updated", "api_key.rotated", "api_key.revoked", "api_key.undeleted"]
    );
    let mut ids: Vec<&str> = deliveries.iter().map(|d| d["id"].as_str().unwrap()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 5, "one webhook-id per event");
    for delivery in &deliveries {
        assert_eq!(delivery["payload"]["id"], delivery["id"], "the body names the event as webhook-id does");
    }
    let sequence: Vec<i64> = deliveries.iter().map(|d| d["payload"]["sequence"].as_i64().unwrap()).collect();
    assert_eq!(sequence, [1, 2, 3, 4, 5]);
    for delivery in &deliveries {
        let data = &delivery["payload"]["data"];
        assert_eq!(data["apiKey"]["id"], key.id.as_str());
        assert_eq!(data["actor"].as_str().unwrap().split(':').next(), Some("key"));
        let body = delivery["payload"].to_string();
        assert!(!body.contains(&created.secret) && !body.contains(&rotated.secret), "a secret in {body}");
    }
    assert_eq!(deliveries[0]["payload"]["data"]["apiKey"]["mask"], key.mask.as_str());
    assert_eq!(deliveries[1]["payload"]["data"]["apiKey"]["name"], "renamed");
    assert_eq!(deliveries[1]["payload"]["data"]["previousApiKey"]["name"], "evented");
    assert_eq!(deliveries[2]["payload"]["data"]["apiKey"]["mask"], rotated.api_key.unwrap().mask.as_str());
    assert_eq!(deliveries[3]["payload"]["data"]["apiKey"]["status"], "API_KEY_STATUS_REVOKED");
    app.stop().await;
}

both!(a_receiver_that_was_away_gets_every_event_later);
async fn a_receiver_that_was_away_gets_every_event_later(backend: Backend) {
    let app = spawn_with(backend, fast).await;
    let mut receiver = Receiver::start().await;
    let endpoint_id = subscribe(&app, &receiver).await;
    receiver.stop().await;
    let mut keys = Vec::new();
    for name in ["first", "second", "third"] {
        keys.push(app.create_key(name, &[]).await.0.id);
    }
    let mut hooks = WebhookServiceClient::new(app.channel.clone());
    let listing =
        v1::ListWebhookDeliveriesRequest { endpoint_id: endpoint_id.clone(), page_size: 100, ..Default::default() };
    // Wait until every event failed twice (a guard against a hang, not a measure of time).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let failed = loop {
        let attempts = hooks.list_webhook_deliveries(admin(listing.clone())).await.unwrap().into_inner();
        if attempts.webhook_deliveries.iter().filter(|a| a.attempt == 2).count() >= 3 {
            break attempts.webhook_deliveries;
        }
        assert!(tokio::time::Instant::now() < deadline, "attempts: {attempts:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let endpoint = hooks
        .get_webhook_endpoint(admin(v1::GetWebhookEndpointRequest { id: endpoint_id.clone() }))
        .await
        .unwrap()
        .into_inner()
        .webhook_endpoint
        .unwrap();
    assert!(endpoint.failing, "two failures in a row mark it failing: {endpoint:?}");
    receiver.restart().await;
    let deliveries = receiver.wait_for(3).await;
    assert!(receiver.invalid().is_empty());
    let delivered: Vec<&str> =
        deliveries.iter().map(|d| d["payload"]["data"]["apiKey"]["id"].as_str().unwrap()).collect();
    assert_eq!(delivered.iter().collect::<std::collections::BTreeSet<_>>().len(), 3);
    for key in &keys {
        assert!(delivered.contains(&key.as_str()), "{key} was lost");
    }

    // The failed attempts, each with the next one due by the schedule: 300 ms after the
    // first failure, 600 ms after the second.
    for attempt in failed.iter().filter(|a| a.status_code == 0) {
        assert!(!attempt.error.is_empty());
        let (at, next) = (attempt.attempt_time.unwrap(), attempt.next_attempt_time.unwrap());
        let wait = (next.seconds - at.seconds) * 1000 + i64::from(next.nanos - at.nanos) / 1_000_000;
        assert_eq!(wait, [300, 600, 900, 1200, 1500][usize::try_from(attempt.attempt - 1).unwrap()], "{attempt:?}");
    }
    // Every event's attempts numbered 1, 2, … in order, and the last one delivered.
    // The receiver answers before the dispatcher records the answer: wait until every
    // delivered event's success is recorded (a guard against a hang, not a measure of time).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let history = loop {
        let history =
            hooks.list_webhook_deliveries(admin(listing.clone())).await.unwrap().into_inner().webhook_deliveries;
        let recorded = deliveries
            .iter()
            .all(|d| history.iter().any(|a| a.event_id == d["id"].as_str().unwrap() && a.status_code == 204));
        if recorded {
            break history;
        }
        assert!(tokio::time::Instant::now() < deadline, "successes recorded: {history:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    for event_id in deliveries.iter().map(|d| d["id"].as_str().unwrap()) {
        let mut attempts: Vec<&v1::WebhookDelivery> = history.iter().filter(|a| a.event_id == event_id).collect();
        attempts.reverse();
        let numbers: Vec<i64> = attempts.iter().map(|a| a.attempt).collect();
        assert_eq!(numbers, (1..=i64::try_from(numbers.len()).unwrap()).collect::<Vec<_>>());
        assert!(numbers.len() >= 3, "two failures, then the delivery: {attempts:?}");
        let last = attempts.last().unwrap();
        assert_eq!(last.status_code, 204);
        assert!(last.next_attempt_time.is_none());
    }
    let endpoint = hooks
        .get_webhook_endpoint(admin(v1::GetWebhookEndpointRequest { id: endpoint_id }))
        .await
        .unwrap()
        .into_inner()
        .webhook_endpoint
        .unwrap();
    assert!(!endpoint.failing && endpoint.consecutive_failures == 0);
    app.stop().await;
}

both!(an_event_is_delivered_again_on_request);
async fn an_event_is_delivered_again_on_request(backend: Backend) {
    let app = spawn_with(backend, fast).await;
    let receiver = Receiver::start().await;
    let endpoint_id = subscribe(&app, &receiver).await;
    app.create_key("once", &[]).await;
    let first = receiver.wait_for(1).await;
    let event_id = first[0]["id"].as_str().unwrap().to_owned();
    WebhookServiceClient::new(app.channel.clone())
        .redeliver_event(admin(v1::RedeliverEventRequest { endpoint_id, event_id: event_id.clone() }))
        .await
        .unwrap();
    let again = receiver.wait_for(2).await;
    assert_eq!(again[1]["id"], event_id.as_str(), "the same webhook-id");
    assert_eq!(again[1]["payload"], again[0]["payload"]);
    app.stop().await;
}

both!(each_keys_events_are_numbered_in_commit_order);
async fn each_keys_events_are_numbered_in_commit_order(backend: Backend) {
    const RENAMES: usize = 5;
    let app = spawn_with(backend, fast).await;
    let receiver = Receiver::start().await;
    subscribe(&app, &receiver).await;
    let mut keys = Vec::new();
    for owner in ["seq-a", "seq-b", "seq-c"] {
        keys.push(app.create_key(owner, &[]).await.0.id);
    }
    // Two writers per key race their renames: the commits decide the order, and the
    // deliveries of all keys are in flight together.
    let mut writers = tokio::task::JoinSet::new();
    for key in &keys {
        for writer in 0..2 {
            let (mut client, key) = (app.client.clone(), key.clone());
            writers.spawn(async move {
                for round in 0..RENAMES {
                    let update = v1::UpdateApiKeyRequest {
                        api_key: Some(v1::ApiKey {
                            id: key.clone(),
                            name: format!("writer {writer} round {round}"),
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask { paths: vec!["name".into()] }),
                        ..Default::default()
                    };
                    client.update_api_key(admin(update)).await.unwrap();
                }
            });
        }
    }
    while let Some(written) = writers.join_next().await {
        written.unwrap();
    }
    let per_key = 1 + 2 * RENAMES;
    let deliveries = receiver.wait_for(keys.len() * per_key).await;
    assert!(receiver.invalid().is_empty(), "{:?}", receiver.invalid());
    let mut by_key: std::collections::BTreeMap<&str, std::collections::BTreeMap<i64, &serde_json::Value>> =
        std::collections::BTreeMap::new();
    for delivery in &deliveries {
        let payload = &delivery["payload"];
        let key = payload["data"]["apiKey"]["id"].as_str().unwrap();
        let sequence = payload["sequence"].as_i64().unwrap_or_else(|| panic!("no sequence in {payload}"));
        // A repost (at least once) carries the same number and the same body.
        if let Some(earlier) = by_key.entry(key).or_default().insert(sequence, payload) {
            assert_eq!(earlier, payload, "two events of {key} numbered {sequence}");
        }
    }
    assert_eq!(by_key.len(), keys.len());
    for (key, events) in &by_key {
        let numbers: Vec<i64> = events.keys().copied().collect();
        let expected: Vec<i64> = (1..=i64::try_from(per_key).unwrap()).collect();
        assert_eq!(numbers, expected, "{key}'s events are numbered 1, 2, … with no gap");
        let ordered: Vec<&&serde_json::Value> = events.values().collect();
        assert_eq!(ordered[0]["type"], "api_key.created");
        // In sequence order each rename starts from the name the one before left: the
        // numbers follow the commits.
        for pair in ordered.windows(2) {
            assert_eq!(pair[1]["type"], "api_key.updated");
            assert_eq!(pair[1]["data"]["previousApiKey"]["name"], pair[0]["data"]["apiKey"]["name"], "{key}");
        }
    }
    app.stop().await;
}

both!(a_hanging_receiver_does_not_hold_up_another);
async fn a_hanging_receiver_does_not_hold_up_another(backend: Backend) {
    // Long enough that waiting on the hanging receiver could not go unnoticed.
    const TIMEOUT: Duration = Duration::from_secs(120);
    let mut app = spawn_with(backend, |config| {
        fast(config);
        config.events.webhook_timeout = TIMEOUT;
        config.events.webhook_concurrency = 8;
        config.events.webhook_endpoint_concurrency = 3;
    })
    .await;
    let hanging = Hanging::start().await;
    WebhookServiceClient::new(app.channel.clone())
        .create_webhook_endpoint(admin(create(endpoint(&hanging.url(), &["api_key.created"]))))
        .await
        .unwrap();
    let receiver = Receiver::start().await;
    subscribe(&app, &receiver).await;
    let started = tokio::time::Instant::now();
    // More events than there are slots in all: the hanging endpoint's backlog alone
    // could fill them.
    for index in 0..12 {
        app.create_key(&format!("early-{index}"), &[]).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while hanging.accepted() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "the hanging receiver was never posted to");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Events written while posts to the hanging receiver are stuck go out too.
    for index in 0..12 {
        app.create_key(&format!("late-{index}"), &[]).await;
    }
    let arrived = tokio::time::timeout(TIMEOUT / 4, receiver.wait_for(24)).await;
    assert!(
        arrived.is_ok(),
        "the healthy receiver had {} of 24 events after {:?}: it waited on the hanging one",
        receiver.deliveries().len(),
        started.elapsed()
    );
    assert!(
        (1..=3).contains(&hanging.accepted()),
        "{} posts to the hanging receiver at once; its cap is 3",
        hanging.accepted()
    );

    // A clean stop hands back the claims of the posts it cut off, for another replica
    // or the next start to post at once instead of after the lease.
    let running = app.running.take().unwrap();
    let store = running.store.clone();
    running.stop().await.unwrap();
    let held = store
        .connection()
        .query_one_raw(sea_orm::Statement::from_string(
            store.connection().get_database_backend(),
            "SELECT COUNT(*) AS held FROM webhook_deliveries WHERE claimed_until IS NOT NULL".to_owned(),
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "held")
        .unwrap();
    assert_eq!(held, 0, "claims left behind at shutdown");
    app.stop().await;
}
