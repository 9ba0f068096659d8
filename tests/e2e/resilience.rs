//! A bad day for the operator: the disk of the embedded database fills up, or PostgreSQL
//! goes away. No write answered OK may be missing afterwards, what can be answered
//! without the database still is, and the service recovers by itself.

use std::{
    path::Path,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use std::time::{Duration, Instant};

use keyward_proto::v1;
use sea_orm::{ConnectionTrait, Database, Statement};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::helpers::{
    Backend, Replica, admin, create_request, empty_postgres_database, key_with, postgres_url, set_database_reachable,
    spawn_with,
};

/// A small tmpfs of its own, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .ok()?;
        status.success().then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

async fn count(url: &str, sql: &str) -> i64 {
    let db = Database::connect(url).await.unwrap();
    let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql)).await.unwrap().unwrap();
    let n = row.try_get::<i64>("", "n").unwrap();
    db.close().await.ok();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_loses_no_acknowledged_write() {
    let Some(disk) = SmallDisk::mount("12m") else {
        println!("skipped: cannot mount a tmpfs here (needs root); the full-disk path is untested on this machine");
        return;
    };
    let data_dir = disk.path().to_owned();
    let app = spawn_with(Backend::Sqlite, |config| {
        config.store.data_dir = data_dir.clone();
        config.environments = vec!["production:kw_live:1000000".parse().unwrap()];
    })
    .await;
    let mut metered = key_with("metered");
    metered.usage_limited = true;
    metered.credits = vec![v1::CreditAmount { unit: String::new(), amount: 1_000_000 }];
    let metered = app.client.clone().create_api_key(admin(create_request(metered))).await.unwrap().into_inner().secret;

    // Take most of the space, so the database runs out soon.
    let filler = disk.path().join("filler");
    let free = fs_free(disk.path());
    std::fs::write(&filler, vec![0u8; usize::try_from(free.saturating_sub(1_500_000)).unwrap()]).unwrap();

    let created = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(AtomicUsize::new(0));
    let charged = Arc::new(Mutex::new(0_i64));
    let mut tasks = Vec::new();
    for task in 0..3 {
        let (mut client, created, refused) = (app.client.clone(), Arc::clone(&created), Arc::clone(&refused));
        tasks.push(tokio::spawn(async move {
            let mut failures = 0;
            for n in 0..4000 {
                let mut key = key_with(&format!("fill {task} {n} {}", "x".repeat(150)));
                key.metadata = (0..8).map(|m| (format!("m{m}"), "y".repeat(200))).collect();
                match client.create_api_key(admin(create_request(key))).await {
                    Ok(answer) => created.lock().unwrap().push(answer.into_inner().api_key.unwrap().id),
                    Err(status) => {
                        assert!(
                            matches!(status.code(), tonic::Code::Unavailable | tonic::Code::Internal),
                            "a storage failure is UNAVAILABLE or INTERNAL: {status:?}"
                        );
                        failures += 1;
                        refused.fetch_add(1, Ordering::Relaxed);
                        if failures > 30 {
                            break;
                        }
                    }
                }
            }
        }));
    }
    {
        let (mut client, charged) = (app.client.clone(), Arc::clone(&charged));
        tasks.push(tokio::spawn(async move {
            for _ in 0..3000 {
                let request = v1::VerifyApiKeyRequest {
                    key: metered.clone(),
                    cost: vec![v1::CreditAmount { unit: String::new(), amount: 1 }],
                    ..Default::default()
                };
                if let Ok(answer) = client.verify_api_key(admin(request)).await
                    && answer.into_inner().valid
                {
                    *charged.lock().unwrap() += 1;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let created = created.lock().unwrap().clone();
    assert!(refused.load(Ordering::Relaxed) > 0, "the disk never filled: the test proves nothing");

    // Space returns: the same server writes again, without a restart.
    std::fs::remove_file(&filler).unwrap();
    let mut after = Vec::new();
    for n in 0..20 {
        let answer = app.client.clone().create_api_key(admin(create_request(key_with(&format!("after {n}"))))).await;
        after.push(answer.expect("creates succeed once space returns").into_inner().api_key.unwrap().id);
    }

    // Every key answered OK is in the database, read by a connection of its own.
    let url = format!("sqlite://{}/keyward.db?mode=ro", disk.path().display());
    let stored = count(&url, "SELECT COUNT(*) AS n FROM api_keys").await;
    // The bootstrap admin and the metered key, besides those the tasks made.
    assert_eq!(stored, i64::try_from(created.len() + after.len() + 2).unwrap(), "acknowledged creates are stored");
    for id in created.iter().chain(&after) {
        app.client.clone().get_api_key(admin(v1::GetApiKeyRequest { id: id.clone() })).await.expect("stored key");
    }
    // Every VALID charge is in the ledger, and the ledger sums to the balance.
    let charged = *charged.lock().unwrap();
    let spent =
        count(&url, "SELECT COALESCE(-SUM(delta), 0) AS n FROM credit_transactions WHERE reason = 'verify'").await;
    assert!(spent >= charged, "{charged} charges answered VALID, {spent} in the ledger");
    let balance = count(&url, "SELECT COALESCE(SUM(balance), 0) AS n FROM credit_balances").await;
    let deltas = count(&url, "SELECT COALESCE(SUM(delta), 0) AS n FROM credit_transactions").await;
    assert_eq!(balance, deltas, "the ledger sums to the balances");
    app.stop().await;
}

fn fs_free(path: &Path) -> u64 {
    let output = Command::new("df").args(["--output=avail", "-B1"]).arg(path).output().unwrap();
    String::from_utf8(output.stdout).unwrap().lines().nth(1).unwrap().trim().parse().unwrap()
}

async fn health(app: &crate::helpers::TestApp) -> ServingStatus {
    let mut health = HealthClient::new(app.channel.clone());
    let request = HealthCheckRequest { service: String::new() };
    health.check(request).await.unwrap().into_inner().status()
}

async fn wait_for_health(app: &crate::helpers::TestApp, want: ServingStatus) -> Duration {
    let started = Instant::now();
    while health(app).await != want {
        assert!(started.elapsed() < Duration::from_secs(10), "health never became {want:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    started.elapsed()
}

/// While PostgreSQL is gone, cached verifications answer as before; what needs the
/// database fails fast with UNAVAILABLE; health follows the database both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_keeps_cached_verifications_answering() {
    let app = crate::helpers::spawn(Backend::Postgres).await;
    let (_, live) = app.create_key("svc", &["app:read"]).await;
    let (revoked, revoked_secret) = app.create_key("svc", &[]).await;
    let (_, uncached) = app.create_key("svc", &[]).await;
    let mut metered = key_with("metered");
    metered.usage_limited = true;
    metered.credits = vec![v1::CreditAmount { unit: String::new(), amount: 100 }];
    let metered = app.client.clone().create_api_key(admin(create_request(metered))).await.unwrap().into_inner().secret;
    let message = v1::DeleteApiKeyRequest { id: revoked.id, ..Default::default() };
    app.client.clone().delete_api_key(admin(message)).await.unwrap();
    assert!(app.verify(&live, &["app:read"], "").await.valid);
    assert_eq!(app.verify(&revoked_secret, &[], "").await.code(), v1::VerificationCode::Revoked);
    assert!(app.verify(&metered, &[], "").await.valid);

    app.set_postgres_reachable(false).await;
    let flipped = wait_for_health(&app, ServingStatus::NotServing).await;
    println!("health NOT_SERVING {flipped:?} after the database went away");
    for _ in 0..20 {
        assert!(app.verify(&live, &["app:read"], "").await.valid, "cached and valid");
        assert_eq!(app.verify(&revoked_secret, &[], "").await.code(), v1::VerificationCode::Revoked);
    }
    let started = Instant::now();
    let request = v1::VerifyApiKeyRequest { key: uncached.clone(), ..Default::default() };
    let refused = app.client.clone().verify_api_key(admin(request)).await.unwrap_err();
    let miss = started.elapsed();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let started = Instant::now();
    let charge = v1::VerifyApiKeyRequest {
        key: metered.clone(),
        cost: vec![v1::CreditAmount { unit: String::new(), amount: 1 }],
        ..Default::default()
    };
    let refused = app.client.clone().verify_api_key(admin(charge.clone())).await.unwrap_err();
    let charge_time = started.elapsed();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let create = app.client.clone().create_api_key(admin(create_request(key_with("during")))).await.unwrap_err();
    assert_eq!(create.code(), tonic::Code::Unavailable, "{create:?}");
    println!("during the outage: a miss failed in {miss:?}, a charge in {charge_time:?}");
    // Fast means without waiting out the pool's acquire timeout (2 s by default).
    assert!(miss < Duration::from_secs(1) && charge_time < Duration::from_secs(1), "{miss:?} {charge_time:?}");

    app.set_postgres_reachable(true).await;
    let back = wait_for_health(&app, ServingStatus::Serving).await;
    println!("health SERVING {back:?} after the database returned");
    let request = v1::VerifyApiKeyRequest { key: uncached, ..Default::default() };
    assert!(app.client.clone().verify_api_key(admin(request)).await.unwrap().into_inner().valid);
    let charged = app.client.clone().verify_api_key(admin(charge)).await.unwrap().into_inner();
    assert!(charged.valid);
    assert_eq!(charged.remaining_credits[0].amount, 99, "exactly one charge landed");
    app.stop().await;
}

/// Calls that hang past KEYWARD_SHUTDOWN_TIMEOUT are cut off, and the last usage flush
/// still runs after them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_writes_usage_even_when_calls_hang() {
    let mut app = spawn_with(Backend::Postgres, |config| config.shutdown_timeout = Duration::from_secs(1)).await;
    let (locked, _) = app.create_key("svc", &[]).await;
    let (counted, counted_secret) = app.create_key("svc", &[]).await;
    for _ in 0..3 {
        assert!(app.verify(&counted_secret, &[], "").await.valid);
    }
    // Another session holds the row of `locked`, so an update of it waits for the lock.
    let db = Database::connect(app.config.store.database_url()).await.unwrap();
    let holder = sea_orm::TransactionTrait::begin(&db).await.unwrap();
    let lock = format!("SELECT 1 FROM api_keys WHERE id = '{}' FOR UPDATE", locked.id);
    holder.execute_unprepared(&lock).await.unwrap();
    let mut client = app.client.clone();
    let hanging = tokio::spawn(async move {
        let rename = v1::UpdateApiKeyRequest {
            api_key: Some(v1::ApiKey { id: locked.id, name: "renamed".into(), ..Default::default() }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["name".into()] }),
            ..Default::default()
        };
        client.update_api_key(admin(rename)).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let store = app.running().store.clone();
    let stopped = app.running.take().unwrap().stop().await;
    assert!(stopped.is_err(), "the hanging call is reported");
    let id = uuid::Uuid::parse_str(&counted.id).unwrap();
    assert_eq!(store.usage_count(id, "VALID").await.unwrap(), 3, "the last flush ran");
    holder.rollback().await.unwrap();
    // The cut-off call's outcome does not matter here, only that stopping did not wait for it.
    let _ = tokio::time::timeout(Duration::from_secs(5), hanging).await;
    db.close().await.ok();
    app.stop().await;
}

/// Another writer holding SQLite's write lock past the busy timeout: the create fails with
/// UNAVAILABLE (retryable), writes nothing, and the next one succeeds once the lock is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_write_lock_held_past_the_busy_timeout_is_unavailable_and_loses_nothing() {
    let app = spawn_with(Backend::Sqlite, |_| {}).await;
    let mut options = sea_orm::ConnectOptions::new(app.config.store.database_url());
    options.max_connections(1).min_connections(1);
    let holder = Database::connect(options).await.unwrap();
    holder.execute_unprepared("BEGIN IMMEDIATE").await.unwrap();
    let mut client = app.client.clone();
    let blocked = client.create_api_key(admin(create_request(key_with("blocked")))).await.unwrap_err();
    crate::helpers::assert_status(&blocked, tonic::Code::Unavailable, "DATABASE_UNAVAILABLE");
    holder.execute_unprepared("ROLLBACK").await.unwrap();
    client.create_api_key(admin(create_request(key_with("after")))).await.expect("the lock is free again");
    let listed = client.list_api_keys(admin(v1::ListApiKeysRequest::default())).await.unwrap().into_inner().api_keys;
    assert!(listed.iter().all(|key| key.name != "blocked"), "the refused create wrote nothing");
    assert!(listed.iter().any(|key| key.name == "after"));
    app.stop().await;
}

/// Replicas started at once on a new PostgreSQL database all come up and serve: the
/// migrations run once, one replica after the other, instead of racing to create the
/// same tables (which failed one of them with a duplicate `pg_type` entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_on_a_new_database_all_serve() {
    let url = postgres_url(&empty_postgres_database().await);
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (first, second, third) = tokio::join!(
        Replica::start(&url, dirs[0].path(), &[]),
        Replica::start(&url, dirs[1].path(), &[]),
        Replica::start(&url, dirs[2].path(), &[]),
    );
    for replica in [first, second, third] {
        let replica = replica.expect("every replica starts");
        let created =
            replica.client.clone().create_api_key(admin(create_request(key_with("after a shared start")))).await;
        assert!(created.is_ok(), "{created:?}\n{}", replica.log());
    }
}

/// An outage fails every call that needs the database the same way: the log says so once
/// a second with how many lines it left out, rather than a line per call, and every
/// failed call is in one of the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_logged_once_a_second_with_the_count_of_calls_it_failed() {
    let name = empty_postgres_database().await;
    let dir = tempfile::tempdir().unwrap();
    let replica = Replica::start(&postgres_url(&name), dir.path(), &[]).await.expect("the replica starts");
    // Caches the caller's key, so that the calls below fail on the key they verify.
    assert_eq!(replica.code("imported-looking-unknown-key").await, v1::VerificationCode::NotFound);
    let mut metered = key_with("metered");
    metered.usage_limited = true;
    metered.credits = vec![v1::CreditAmount { unit: String::new(), amount: 1_000_000 }];
    let metered =
        replica.client.clone().create_api_key(admin(create_request(metered))).await.unwrap().into_inner().secret;
    let charge = || {
        admin(v1::VerifyApiKeyRequest {
            key: metered.clone(),
            cost: vec![v1::CreditAmount { unit: String::new(), amount: 1 }],
            ..Default::default()
        })
    };
    // Cached now, so that its charges below reach the charger and fail there.
    assert!(replica.client.clone().verify_api_key(charge()).await.unwrap().into_inner().valid);
    set_database_reachable(&name, false).await;
    let mut health = HealthClient::new(replica.channel.clone());
    let started = Instant::now();
    while health.check(HealthCheckRequest::default()).await.unwrap().into_inner().status() != ServingStatus::NotServing
    {
        assert!(started.elapsed() < Duration::from_secs(10), "health never became NOT_SERVING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut failed = 0;
    // Unknown keys: each is a cache miss, which needs the database.
    for n in 0..200 {
        let request =
            admin(v1::VerifyApiKeyRequest { key: format!("imported-looking-unknown-key-{n}"), ..Default::default() });
        let refused = replica.client.clone().verify_api_key(request).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
        failed += 1;
    }
    // Charges and creates fail too, each kind with lines of its own.
    let mut charges_failed = 0;
    let mut creates_failed = 0;
    for n in 0..100 {
        let charged = replica.client.clone().verify_api_key(charge()).await;
        assert_eq!(charged.unwrap_err().code(), tonic::Code::Unavailable);
        charges_failed += 1;
        let created = replica.client.clone().create_api_key(admin(create_request(key_with(&format!("k{n}"))))).await;
        assert_eq!(created.unwrap_err().code(), tonic::Code::Unavailable);
        creates_failed += 1;
    }
    failed += charges_failed + creates_failed;
    // A call in a later second writes a line, with the count of those held back before it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let request =
        admin(v1::VerifyApiKeyRequest { key: "imported-looking-unknown-key-last".to_owned(), ..Default::default() });
    assert_eq!(replica.client.clone().verify_api_key(request).await.unwrap_err().code(), tonic::Code::Unavailable);
    failed += 1;
    // And a create in a later second still, for the audit failures held back.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let created = replica.client.clone().create_api_key(admin(create_request(key_with("last")))).await;
    assert_eq!(created.unwrap_err().code(), tonic::Code::Unavailable);
    creates_failed += 1;
    failed += 1;
    let of_kind = |log: &str, kind: &str| {
        let lines: Vec<&str> = log.lines().filter(|line| line.contains(kind)).collect();
        let suppressed: usize = lines
            .iter()
            .filter_map(|line| line.split("suppressed=").nth(1))
            .map(|rest| rest.split_whitespace().next().unwrap().parse::<usize>().unwrap())
            .sum();
        (lines.len(), suppressed)
    };
    let accounted = |log: &str| of_kind(log, "database unavailable");
    let log = replica
        .log_when(|log| {
            let (lines, suppressed) = accounted(log);
            let (audit_lines, audit_suppressed) = of_kind(log, "could not record an audit event");
            lines + suppressed >= failed && audit_lines + audit_suppressed >= creates_failed
        })
        .await;
    let (lines, suppressed) = accounted(&log);
    set_database_reachable(&name, true).await;
    assert_eq!(lines + suppressed, failed, "every failed call is a line or counted in one\n{log}");
    let seconds = usize::try_from(started.elapsed().as_secs()).unwrap();
    assert!(lines <= seconds + 2, "{lines} lines in about {seconds} s\n{log}");
    // Each failed create also failed to record its audit event; charges failed in
    // batches, each batch a line or counted in one.
    let (audit_lines, audit_suppressed) = of_kind(&log, "could not record an audit event");
    assert_eq!(audit_lines + audit_suppressed, creates_failed, "audit failures accounted for\n{log}");
    assert!((1..=seconds + 2).contains(&audit_lines), "{audit_lines} audit lines in about {seconds} s\n{log}");
    let (charge_lines, charge_suppressed) = of_kind(&log, "charge batch failed");
    assert!(charge_lines + charge_suppressed >= 1, "charge failures logged\n{log}");
    assert!(charge_lines <= seconds + 2, "{charge_lines} charge lines in about {seconds} s\n{log}");
}
