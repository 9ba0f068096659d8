//! Events across processes: a server killed right after its changes committed loses no
//! event, replicas sharing PostgreSQL send each event once, and the expiry sweep writes
//! each time event once however many replicas run it.

use std::time::Duration;

use keyward_proto::v1::{self, webhook_service_client::WebhookServiceClient};
use keyward_server::Config;

use crate::{
    events::ALL_TYPES,
    helpers::{Backend, Replica, admin, both, spawn_with, timestamp_in},
    receiver::{Receiver, types},
    webhooks::{create, endpoint},
};

/// The in-process server only provides the database: its own loops stay idle.
fn quiet(config: &mut Config) {
    config.events.webhook_poll_interval = Duration::from_secs(3600);
    config.events.expiry_sweep_interval = Duration::from_secs(3600);
}

const REPLICA_ENV: [(&str, &str); 5] = [
    ("KEYWARD_WEBHOOK_ALLOW_HTTP", "true"),
    ("KEYWARD_WEBHOOK_POLL_INTERVAL", "50ms"),
    ("KEYWARD_WEBHOOK_RETRY_SCHEDULE", "300ms,300ms,300ms,300ms,300ms,300ms,300ms,300ms"),
    ("KEYWARD_EXPIRY_SWEEP_INTERVAL", "100ms"),
    ("KEYWARD_EXPIRING_LEAD_TIME", "1h"),
];

async fn subscribe(replica: &Replica, receiver: &Receiver, kinds: &[&str]) {
    let created = WebhookServiceClient::new(replica.channel.clone())
        .create_webhook_endpoint(admin(create(endpoint(&receiver.url(), kinds))))
        .await
        .unwrap()
        .into_inner();
    receiver.trust(&created.secret);
}

async fn create_key(replica: &Replica, name: &str) -> String {
    let request = v1::CreateApiKeyRequest {
        api_key: Some(v1::ApiKey { name: name.to_owned(), ..Default::default() }),
        ..Default::default()
    };
    replica.client.clone().create_api_key(admin(request)).await.unwrap().into_inner().api_key.unwrap().id
}

both!(a_killed_server_loses_no_event);
async fn a_killed_server_loses_no_event(backend: Backend) {
    let app = spawn_with(backend, quiet).await;
    let url = app.config.store.database_url();
    let dir = tempfile::tempdir().unwrap();
    let mut receiver = Receiver::start().await;
    receiver.stop().await;
    let replica = Replica::start(&url, dir.path(), &REPLICA_ENV).await.expect("replica starts");
    subscribe(&replica, &receiver, &ALL_TYPES).await;
    let mut keys = Vec::new();
    for index in 0..5 {
        keys.push(create_key(&replica, &format!("key {index}")).await);
    }
    // A change that is refused rolls back with its event.
    let refused = replica
        .client
        .clone()
        .delete_api_key(admin(v1::DeleteApiKeyRequest { id: uuid::Uuid::now_v7().to_string(), ..Default::default() }))
        .await;
    assert!(refused.is_err());
    // SIGKILL right after the commits: no shutdown, no delivery made.
    drop(replica);
    receiver.restart().await;
    let restarted = Replica::start(&url, dir.path(), &REPLICA_ENV).await.expect("replica restarts");
    let deliveries = receiver.wait_for(5).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deliveries_after = receiver.deliveries();
    assert_eq!(deliveries_after.len(), deliveries.len(), "{deliveries_after:#?}");
    assert!(receiver.invalid().is_empty());
    assert!(types(&deliveries).iter().all(|kind| kind == "api_key.created"));
    let mut delivered: Vec<String> =
        deliveries.iter().map(|d| d["payload"]["data"]["apiKey"]["id"].as_str().unwrap().to_owned()).collect();
    delivered.sort();
    delivered.dedup();
    keys.sort();
    assert_eq!(delivered, keys, "every committed change's event, and nothing else");
    drop(restarted);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_send_each_event_once() {
    let app = spawn_with(Backend::Postgres, quiet).await;
    let url = app.config.store.database_url();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let receiver = Receiver::start().await;
    let first = Replica::start(&url, dirs.0.path(), &REPLICA_ENV).await.expect("first replica starts");
    let second = Replica::start(&url, dirs.1.path(), &REPLICA_ENV).await.expect("second replica starts");
    subscribe(&first, &receiver, &["api_key.created"]).await;
    let mut keys = Vec::new();
    for index in 0..30 {
        let replica = if index % 2 == 0 { &first } else { &second };
        keys.push(create_key(replica, &format!("key {index}")).await);
    }
    receiver.wait_for(keys.len()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let deliveries = receiver.deliveries();
    let mut ids: Vec<&str> = deliveries.iter().map(|d| d["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(deliveries.len(), keys.len(), "each event once: {deliveries:#?}");
    assert_eq!(ids.len(), keys.len());
    drop((first, second));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_events_are_written_once_by_two_sweeping_replicas() {
    let app = spawn_with(Backend::Postgres, quiet).await;
    let url = app.config.store.database_url();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let receiver = Receiver::start().await;
    let first = Replica::start(&url, dirs.0.path(), &REPLICA_ENV).await.expect("first replica starts");
    let second = Replica::start(&url, dirs.1.path(), &REPLICA_ENV).await.expect("second replica starts");
    subscribe(&first, &receiver, &["api_key.expiring", "api_key.expired"]).await;
    let mut expiring = Vec::new();
    for index in 0..3 {
        let request = v1::CreateApiKeyRequest {
            api_key: Some(v1::ApiKey {
                name: format!("short-lived {index}"),
                expire_time: Some(timestamp_in(3)),
                ..Default::default()
            }),
            ..Default::default()
        };
        let key = first.client.clone().create_api_key(admin(request)).await.unwrap().into_inner().api_key.unwrap();
        expiring.push(key.id);
    }
    receiver.wait_for(6).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let deliveries = receiver.deliveries();
    assert_eq!(deliveries.len(), 6, "{deliveries:#?}");
    for id in &expiring {
        let of_key: Vec<String> = deliveries
            .iter()
            .filter(|d| d["payload"]["data"]["apiKey"]["id"] == id.as_str())
            .map(|d| d["payload"]["type"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(of_key, ["api_key.expiring", "api_key.expired"], "{id}");
    }
    assert!(deliveries.iter().all(|d| d["payload"]["data"]["expireTime"].is_string()));
    // Each carries the key as it reads when the event is written: active before its
    // expiry, expired after.
    for delivery in &deliveries {
        let status = match delivery["payload"]["type"].as_str().unwrap() {
            "api_key.expiring" => "API_KEY_STATUS_ACTIVE",
            _ => "API_KEY_STATUS_EXPIRED",
        };
        assert_eq!(delivery["payload"]["data"]["apiKey"]["status"], status, "{delivery:#?}");
    }
    drop((first, second));
    app.stop().await;
}
