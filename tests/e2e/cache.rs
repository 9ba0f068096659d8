//! The verification hot path: cached answers change the moment a key does, the TTL
//! bounds staleness across replicas, notifications evict on other processes, and
//! floods of unknown keys are answered from memory.

use std::time::Duration;

use keyward_proto::v1::{self, ApiKeyStatus, VerificationCode, api_key_service_client::ApiKeyServiceClient};
use sea_orm::{ConnectionTrait, Database, Statement};
use tonic::transport::Channel;

use crate::helpers::{Backend, Replica, admin, both, create_request, key_with, spawn, spawn_with, timestamp_in};

fn status_update(id: &str, status: ApiKeyStatus) -> v1::UpdateApiKeyRequest {
    v1::UpdateApiKeyRequest {
        api_key: Some(v1::ApiKey { id: id.to_owned(), status: status.into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["status".into()] }),
        request_id: String::new(),
        ..Default::default()
    }
}

async fn changes_apply_at_once_to_cached_keys(backend: Backend) {
    let app = spawn(backend).await;
    let mut client = app.client.clone();
    let (key, secret) = app.create_key("cached", &[]).await;
    let reads = app.running().store.lookup_reads();
    for _ in 0..5 {
        assert!(app.verify(&secret, &[], "").await.valid);
    }
    assert!(app.running().store.lookup_reads() - reads <= 1, "repeat verifications are answered from the cache");

    client.update_api_key(admin(status_update(&key.id, ApiKeyStatus::Inactive))).await.unwrap();
    assert_eq!(app.verify(&secret, &[], "").await.code(), VerificationCode::Inactive, "inactive at once");
    client.update_api_key(admin(status_update(&key.id, ApiKeyStatus::Active))).await.unwrap();
    assert!(app.verify(&secret, &[], "").await.valid);
    client
        .delete_api_key(admin(v1::DeleteApiKeyRequest { id: key.id.clone(), request_id: String::new() }))
        .await
        .unwrap();
    assert_eq!(app.verify(&secret, &[], "").await.code(), VerificationCode::Revoked, "revoked at once");

    let mut expiring = key_with("expiring");
    expiring.expire_time = Some(timestamp_in(2));
    let expiring = client.create_api_key(admin(create_request(expiring))).await.unwrap().into_inner().secret;
    assert!(app.verify(&expiring, &[], "").await.valid);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        app.verify(&expiring, &[], "").await.code(),
        VerificationCode::Expired,
        "expiry is exact from the cache"
    );

    let (rotating, old) = app.create_key("cached", &[]).await;
    assert!(app.verify(&old, &[], "").await.valid);
    let rotate = v1::RotateApiKeyRequest {
        id: rotating.id.clone(),
        grace_period: Some(prost_types::Duration { seconds: 2, nanos: 0 }),
        ..Default::default()
    };
    let new = client.rotate_api_key(admin(rotate)).await.unwrap().into_inner().secret;
    assert!(app.verify(&old, &[], "").await.valid, "grace period");
    assert!(app.verify(&new, &[], "").await.valid);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(app.verify(&old, &[], "").await.code(), VerificationCode::Expired, "and not a moment after");
    assert!(app.verify(&new, &[], "").await.valid);
    app.stop().await;
}
both!(changes_apply_at_once_to_cached_keys);

/// Two replicas on one SQLite file have no notifications: the TTL alone bounds how long
/// the other replica may still answer from its cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ttl_bounds_staleness_without_notifications() {
    let ttl = Duration::from_millis(500);
    let first = spawn_with(Backend::Sqlite, |config| config.cache_ttl = ttl).await;
    let mut config = first.config.clone();
    config.grpc_addr = "127.0.0.1:0".parse().unwrap();
    let second = keyward_server::start(config).await.unwrap();
    let channel = Channel::from_shared(format!("http://{}", second.grpc_addr)).unwrap().connect().await.unwrap();
    let mut other = ApiKeyServiceClient::new(channel);
    let (key, secret) = first.create_key("stale", &[]).await;
    let verify = || admin(v1::VerifyApiKeyRequest { key: secret.clone(), ..Default::default() });
    assert!(other.verify_api_key(verify()).await.unwrap().into_inner().valid, "cached on the other replica");

    let request = v1::DeleteApiKeyRequest { id: key.id.clone(), request_id: String::new() };
    first.client.clone().delete_api_key(admin(request)).await.unwrap();
    let revoked_at = std::time::Instant::now();
    assert_eq!(first.verify(&secret, &[], "").await.code(), VerificationCode::Revoked);
    loop {
        let answer = other.verify_api_key(verify()).await.unwrap().into_inner();
        if answer.code() == VerificationCode::Revoked {
            break;
        }
        assert!(revoked_at.elapsed() < ttl + Duration::from_millis(200), "VALID more than the TTL after the change");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    second.stop().await.unwrap();
    first.stop().await;
}

async fn floods_of_unknown_keys_spare_the_database(backend: Backend) {
    // A negative TTL longer than the test, so a slow machine counts the same reads.
    let app = spawn_with(backend, |config| config.negative_cache_ttl = Duration::from_secs(600)).await;
    // Well-formed (valid checksum) keys that were never stored: rotated-away secrets
    // make real ones, and random imported-looking strings the rest.
    let mut unknown = Vec::new();
    for n in 0..100 {
        let (key, secret) = app.create_key("flood", &[]).await;
        let request = v1::RotateApiKeyRequest { id: key.id, ..Default::default() };
        app.client.clone().rotate_api_key(admin(request)).await.unwrap();
        unknown.push(secret);
        unknown.push(format!("imported-looking-unknown-{n}-{}", uuid::Uuid::new_v4()));
    }
    let reads = app.running().store.lookup_reads();
    for round in 0..50 {
        let batch = unknown.iter().map(|secret| {
            let mut client = app.client.clone();
            let request = admin(v1::VerifyApiKeyRequest { key: secret.clone(), ..Default::default() });
            async move { client.verify_api_key(request).await.unwrap().into_inner().code() }
        });
        for code in futures::future::join_all(batch).await {
            assert_eq!(code, VerificationCode::NotFound, "round {round}");
        }
    }
    let database_reads = app.running().store.lookup_reads() - reads;
    // 10,000 verifications of 200 distinct unknown keys: each is read once within the
    // negative TTL (plus the caller's key, cached once; concurrent first lookups may
    // each read).
    assert!(database_reads < 1_000, "{database_reads} database reads for 10,000 verifications");
    app.stop().await;
}
both!(floods_of_unknown_keys_spare_the_database);

async fn usage_is_counted_in_batches(backend: Backend) {
    let app = spawn(backend).await;
    let (key, secret) = app.create_key("counted", &["app:read"]).await;
    for _ in 0..3 {
        assert!(app.verify(&secret, &["app:read"], "").await.valid);
    }
    assert!(!app.verify(&secret, &["app:write"], "").await.valid);
    let before = app.client.clone().get_api_key(admin(v1::GetApiKeyRequest { id: key.id.clone() })).await.unwrap();
    assert!(before.into_inner().api_key.unwrap().last_use_time.is_none(), "not written per call");
    app.running().flush_usage().await;
    let id = uuid::Uuid::parse_str(&key.id).unwrap();
    assert_eq!(app.running().store.usage_count(id, "VALID").await.unwrap(), 3);
    assert_eq!(app.running().store.usage_count(id, "INSUFFICIENT_SCOPE").await.unwrap(), 1);
    let after = app.client.clone().get_api_key(admin(v1::GetApiKeyRequest { id: key.id.clone() })).await.unwrap();
    assert!(after.into_inner().api_key.unwrap().last_use_time.is_some());
    assert!(app.verify(&secret, &["app:read"], "").await.valid);
    app.running().flush_usage().await;
    assert_eq!(app.running().store.usage_count(id, "VALID").await.unwrap(), 4, "later flushes add up");
    app.stop().await;
}
both!(usage_is_counted_in_batches);

async fn listener_pids(admin_db: &sea_orm::DatabaseConnection, database: &str) -> Vec<i32> {
    let sql = format!(
        "SELECT pid FROM pg_stat_activity WHERE datname = '{database}' AND application_name = 'keyward change listener' ORDER BY pid"
    );
    let rows = admin_db.query_all_raw(Statement::from_string(admin_db.get_database_backend(), sql)).await.unwrap();
    rows.iter().map(|row| row.try_get::<i32>("", "pid").unwrap()).collect()
}

async fn revoke_and_await(writer: &Replica, reader: &Replica) {
    let key =
        writer.client.clone().create_api_key(admin(create_request(key_with("propagated")))).await.unwrap().into_inner();
    for _ in 0..3 {
        assert_eq!(reader.code(&key.secret).await, VerificationCode::Valid, "cached on the reader");
    }
    let id = key.api_key.unwrap().id;
    writer
        .client
        .clone()
        .delete_api_key(admin(v1::DeleteApiKeyRequest { id, request_id: String::new() }))
        .await
        .unwrap();
    let revoked_at = std::time::Instant::now();
    while reader.code(&key.secret).await != VerificationCode::Revoked {
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "the other replica still accepts a revoked key after 1 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_reach_another_process_and_survive_a_lost_listener() {
    // The database comes from the usual harness; the replicas are real processes on it.
    let app = spawn(Backend::Postgres).await;
    let url = app.config.store.database_url();
    let database = url.rsplit_once('/').unwrap().1.to_owned();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = Replica::start(&url, dirs.0.path(), &[]).await.expect("first replica starts");
    let second = Replica::start(&url, dirs.1.path(), &[]).await.expect("second replica starts");
    let admin_db = Database::connect(format!("{}/postgres", url.rsplit_once('/').unwrap().0)).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while listener_pids(&admin_db, &database).await.len() < 3 {
        let pids = listener_pids(&admin_db, &database).await;
        assert!(std::time::Instant::now() < deadline, "every server listens for changes: {pids:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    revoke_and_await(&first, &second).await;
    revoke_and_await(&second, &first).await;

    let killed = listener_pids(&admin_db, &database).await;
    for pid in &killed {
        admin_db.execute_unprepared(&format!("SELECT pg_terminate_backend({pid})")).await.unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let pids = listener_pids(&admin_db, &database).await;
        if pids.len() >= 3 && pids.iter().all(|pid| !killed.contains(pid)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the listeners reconnect: {pids:?} after killing {killed:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    revoke_and_await(&first, &second).await;
    revoke_and_await(&second, &first).await;
    drop((first, second));
    app.stop().await;
}

/// The value of one series line of `/metrics`, 0 when absent.
pub(crate) async fn metric(app: &crate::helpers::TestApp, series: &str) -> u64 {
    let url = format!("http://{}/metrics", app.running().http_addr);
    let text = reqwest::get(url).await.unwrap().text().await.unwrap();
    text.lines().find_map(|line| line.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0)
}

async fn keys_in_use_are_read_again_in_the_background(backend: Backend) {
    let ttl = Duration::from_secs(2);
    let app = spawn_with(backend, |config| {
        config.cache_ttl = ttl;
        config.usage_flush_interval = Duration::from_secs(600);
    })
    .await;
    let mut secrets = Vec::new();
    for _ in 0..20 {
        secrets.push(app.create_key("steady", &[]).await.1);
    }
    let verify_all = || async {
        let answers = futures::future::join_all(secrets.iter().map(|secret| app.verify(secret, &[], ""))).await;
        assert!(answers.iter().all(|answer| answer.valid));
    };
    verify_all().await;
    let misses = metric(&app, "keyward_cache_lookups_total{result=\"miss\"}").await;
    let reads = app.running().store.lookup_reads();

    // Steady use over more than three lifetimes of an entry.
    let until = tokio::time::Instant::now() + ttl * 7 / 2;
    while tokio::time::Instant::now() < until {
        verify_all().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let missed = metric(&app, "keyward_cache_lookups_total{result=\"miss\"}").await - misses;
    assert_eq!(missed, 0, "a key in use never misses the cache: its entry is refreshed before it expires");
    let refreshes = metric(&app, "keyward_cache_refreshes_total").await;
    assert!(refreshes >= 3 * 20, "each key in use was read again in each lifetime: {refreshes}");
    let reads = app.running().store.lookup_reads() - reads;
    // Keys that come due together are read together: one statement for many keys.
    assert!(reads < refreshes / 2, "{reads} reads for {refreshes} refreshes");
    app.stop().await;
}
both!(keys_in_use_are_read_again_in_the_background);

/// Cache misses read on connections of their own, handed back without sqlx's ping. When
/// PostgreSQL ends those sessions (a restart, a failover, an administrator), the next
/// misses must still be answered: a dead connection is replaced, not reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misses_outlive_the_database_ending_their_sessions() {
    let app = spawn(Backend::Postgres).await;
    let mut secrets = Vec::new();
    for _ in 0..8 {
        secrets.push(app.create_key("miss", &[]).await.1);
    }
    let (first, rest) = secrets.split_at(2);
    // Two misses at once, so more than one lookup connection is open and idle.
    let opened = first.iter().map(|secret| app.verify(secret, &[], ""));
    assert!(futures::future::join_all(opened).await.iter().all(|answer| answer.valid));
    let url = app.config.store.database_url();
    let (base, name) = url.rsplit_once('/').unwrap();
    let admin_db = Database::connect(format!("{base}/postgres")).await.unwrap();
    let ended = admin_db
        .query_all_raw(Statement::from_string(
            admin_db.get_database_backend(),
            format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"),
        ))
        .await
        .unwrap();
    assert!(ended.len() >= 2, "the server's sessions were ended: {}", ended.len());
    for secret in rest {
        let request = admin(v1::VerifyApiKeyRequest { key: secret.clone(), ..Default::default() });
        let answer = app.client.clone().verify_api_key(request).await;
        assert_eq!(
            answer.map(|answer| answer.into_inner().code()).map_err(|status| status.to_string()),
            Ok(VerificationCode::Valid)
        );
    }
    app.stop().await;
}

/// With one database connection there are none to spare for lookups: misses (the key,
/// its owner's shared limits) read through the pool, and still answer.
async fn misses_read_through_the_pool_when_it_has_one_connection(backend: Backend) {
    let app = spawn_with(backend, |config| config.store.database_max_connections = 1).await;
    let (_, secret) = app.create_key("single", &[]).await;
    let reads = app.running().store.lookup_reads();
    assert!(app.verify(&secret, &[], "").await.valid);
    assert!(app.running().store.lookup_reads() > reads, "the key was read from the database");
    assert_eq!(app.verify("imported-looking-unknown-key", &[], "").await.code(), VerificationCode::NotFound);
    app.stop().await;
}
both!(misses_read_through_the_pool_when_it_has_one_connection);
