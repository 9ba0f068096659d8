//! Rate limits: a bucket admits its burst and then refuses with a reset time, across
//! replicas on one database, without charging what it refuses.

use std::{
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use futures::future::join_all;
use keyward_proto::v1::{
    self, VerificationCode, api_key_service_client::ApiKeyServiceClient,
    rate_limit_service_client::RateLimitServiceClient,
};
use sea_orm::{ConnectionTrait, TransactionTrait};
use tonic::{Code, transport::Channel};

use crate::helpers::{Backend, Replica, TestApp, admin, assert_invalid, both, spawn, spawn_with, with_key};

fn limit(name: &str, limit: i64, period_seconds: i64, burst: Option<i64>) -> v1::RateLimit {
    v1::RateLimit {
        name: name.to_owned(),
        limit,
        period: Some(prost_types::Duration { seconds: period_seconds, nanos: 0 }),
        burst,
        auto_apply: true,
    }
}

async fn limited_key(app: &TestApp, limits: Vec<v1::RateLimit>, credits: i64) -> (v1::ApiKey, String) {
    let request = v1::CreateApiKeyRequest {
        api_key: Some(v1::ApiKey {
            name: "limited".into(),
            owner: "caller".into(),
            usage_limited: credits > 0,
            credits: if credits > 0 { vec![v1::CreditAmount { unit: String::new(), amount: credits }] } else { vec![] },
            rate_limits: limits,
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = app.client.clone().create_api_key(admin(request)).await.expect("create").into_inner();
    (created.api_key.expect("key"), created.secret)
}

async fn verify(client: &ApiKeyServiceClient<Channel>, secret: &str, cost: i64) -> v1::VerifyApiKeyResponse {
    let request = v1::VerifyApiKeyRequest {
        key: secret.to_owned(),
        cost: if cost > 0 { vec![v1::CreditAmount { unit: String::new(), amount: cost }] } else { vec![] },
        ..Default::default()
    };
    client.clone().verify_api_key(admin(request)).await.expect("verify").into_inner()
}

both!(a_replica_admits_the_burst_then_refuses_without_charging);
async fn a_replica_admits_the_burst_then_refuses_without_charging(backend: Backend) {
    let app = spawn(backend).await;
    let (key, secret) = limited_key(&app, vec![limit("api", 5, 60, None)], 100).await;
    assert_eq!(key.rate_limits, vec![limit("api", 5, 60, Some(5))], "burst defaults to the limit");
    for expected in (0..5).rev() {
        let answer = verify(&app.client, &secret, 1).await;
        assert_eq!(answer.code(), VerificationCode::Valid);
        let state = &answer.rate_limits[0];
        assert_eq!((state.name.as_str(), state.limit, state.remaining), ("api", 5, expected));
        assert!(state.reset_time.is_none());
    }
    let refused = verify(&app.client, &secret, 1).await;
    assert_eq!(refused.code(), VerificationCode::RateLimited);
    assert!(!refused.valid);
    assert!(refused.remaining_credits.is_empty(), "a rate-limited request is never charged");
    let reset = refused.rate_limits[0].reset_time.expect("a refusal says when to come back");
    let now = chrono::Utc::now().timestamp();
    // One token of 5 per minute comes back within 12 s.
    assert!((now..=now + 13).contains(&reset.seconds), "reset {reset:?} is not within a token's refill");
    let balances = keyward_proto::v1::credit_service_client::CreditServiceClient::new(app.channel.clone())
        .get_credit_balances(admin(v1::GetCreditBalancesRequest { api_key_id: key.id.clone() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(balances.balances[0].amount, 95, "only admitted requests are charged");
    app.running().flush_usage().await;
    let usage = keyward_proto::v1::credit_service_client::CreditServiceClient::new(app.channel.clone())
        .get_usage(admin(v1::GetUsageRequest {
            api_key_id: key.id.clone(),
            start_time: Some(prost_types::Timestamp { seconds: chrono::Utc::now().timestamp() - 7_200, nanos: 0 }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let counted = |code: &str| usage.buckets.iter().filter_map(|bucket| bucket.verifications.get(code)).sum::<i64>();
    assert_eq!((counted("VALID"), counted("RATE_LIMITED")), (5, 1), "usage buckets count refusals");
    let metrics =
        reqwest::get(format!("http://{}/metrics", app.running().http_addr)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("keyward_verifications_total{outcome=\"RATE_LIMITED\"} 1"), "{metrics}");
    assert!(metrics.contains("keyward_rate_limit_leases_total"), "{metrics}");
    app.stop().await;
}

both!(limits_apply_when_auto_or_named_with_their_cost);
async fn limits_apply_when_auto_or_named_with_their_cost(backend: Backend) {
    let app = spawn(backend).await;
    let named = v1::RateLimit { auto_apply: false, ..limit("expensive", 10, 60, None) };
    let (_, secret) = limited_key(&app, vec![named], 0).await;
    // Not named: not applied, and not answered.
    assert!(verify(&app.client, &secret, 0).await.rate_limits.is_empty());
    let uses = |cost: Option<i64>| v1::VerifyApiKeyRequest {
        key: secret.clone(),
        rate_limits: vec![
            v1::RateLimitUse { name: "expensive".into(), cost },
            // A name the key has no limit of applies nothing.
            v1::RateLimitUse { name: "unknown".into(), cost: None },
        ],
        ..Default::default()
    };
    let answer = app.client.clone().verify_api_key(admin(uses(Some(7)))).await.unwrap().into_inner();
    assert_eq!(answer.code(), VerificationCode::Valid);
    assert_eq!(answer.rate_limits.len(), 1);
    assert_eq!(answer.rate_limits[0].remaining, 3);
    let answer = app.client.clone().verify_api_key(admin(uses(Some(4)))).await.unwrap().into_inner();
    assert_eq!(answer.code(), VerificationCode::RateLimited, "4 does not fit in the 3 left");
    let answer = app.client.clone().verify_api_key(admin(uses(None))).await.unwrap().into_inner();
    assert_eq!(answer.code(), VerificationCode::Valid, "a cost left unset is 1");
    let zero = app.client.clone().verify_api_key(admin(uses(Some(0)))).await.unwrap_err();
    assert_invalid(&zero, "rate_limits[0].cost");
    app.stop().await;
}

both!(bad_limits_are_refused_and_nothing_is_written);
async fn bad_limits_are_refused_and_nothing_is_written(backend: Backend) {
    let app = spawn(backend).await;
    let before = app.count_rows("api_keys").await;
    let cases: Vec<(Vec<v1::RateLimit>, &str)> = vec![
        (vec![limit("a", 0, 60, Some(1))], "api_key.rate_limits[0].limit"),
        (vec![limit("a", -1, 60, Some(1))], "api_key.rate_limits[0].limit"),
        (vec![limit("a", 1, 0, None)], "api_key.rate_limits[0].period"),
        (vec![limit("a", 1, 30 * 86_400 + 1, None)], "api_key.rate_limits[0].period"),
        (vec![limit("a", 1, 60, Some(0))], "api_key.rate_limits[0].burst"),
        (vec![limit("a", 1_000_000_001, 60, Some(1))], "api_key.rate_limits[0].limit"),
        ((0..21).map(|i| limit(&format!("l{i}"), 1, 60, None)).collect(), "api_key.rate_limits"),
        (vec![limit("a", 1, 60, None), limit("a", 2, 60, None)], "api_key.rate_limits[1].name"),
        (vec![limit("with space", 1, 60, None)], "api_key.rate_limits[0].name"),
    ];
    for (limits, field) in cases {
        let request = v1::CreateApiKeyRequest {
            api_key: Some(v1::ApiKey { name: "bad".into(), rate_limits: limits.clone(), ..Default::default() }),
            ..Default::default()
        };
        let status = app.client.clone().create_api_key(admin(request)).await.unwrap_err();
        assert_invalid(&status, field);
        let (key, _) = limited_key(&app, vec![], 0).await;
        let update = v1::UpdateApiKeyRequest {
            api_key: Some(v1::ApiKey { id: key.id.clone(), rate_limits: limits, ..Default::default() }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["rate_limits".into()] }),
            ..Default::default()
        };
        let status = app.client.clone().update_api_key(admin(update)).await.unwrap_err();
        assert_invalid(&status, field);
        let stored = app.client.clone().get_api_key(admin(v1::GetApiKeyRequest { id: key.id })).await.unwrap();
        assert!(stored.into_inner().api_key.unwrap().rate_limits.is_empty());
    }
    assert_eq!(app.count_rows("api_keys").await, before + 9, "only the keys the updates were tried on");
    app.stop().await;
}

both!(setting_limits_takes_admin_and_readers_see_them);
async fn setting_limits_takes_admin_and_readers_see_them(backend: Backend) {
    let app = spawn(backend).await;
    let (_, writer) = app.create_key("team", &["keys:write"]).await;
    let (key, _) = app.create_key("team", &[]).await;
    let update = |limits: Vec<v1::RateLimit>| v1::UpdateApiKeyRequest {
        api_key: Some(v1::ApiKey { id: key.id.clone(), rate_limits: limits, ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["rate_limits".into()] }),
        ..Default::default()
    };
    let denied = app.client.clone().update_api_key(with_key(&writer, update(vec![limit("api", 1_000, 1, None)]))).await;
    assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);
    let create = v1::CreateApiKeyRequest {
        api_key: Some(v1::ApiKey {
            name: "n".into(),
            rate_limits: vec![limit("api", 1, 1, None)],
            ..Default::default()
        }),
        ..Default::default()
    };
    let denied = app.client.clone().create_api_key(with_key(&writer, create)).await;
    assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);
    app.client.clone().update_api_key(admin(update(vec![limit("api", 10, 1, None)]))).await.expect("admin sets limits");
    let read = app.client.clone().get_api_key(with_key(&writer, v1::GetApiKeyRequest { id: key.id.clone() })).await;
    assert_eq!(read.unwrap().into_inner().api_key.unwrap().rate_limits, vec![limit("api", 10, 1, Some(10))]);
    app.stop().await;
}

both!(after_one_period_the_full_burst_is_admitted_again_never_more);
async fn after_one_period_the_full_burst_is_admitted_again_never_more(backend: Backend) {
    let (clock, seconds) = crate::helpers::movable_clock(chrono::Duration::seconds(1));
    let app = spawn_with(backend, |config| config.clock = clock).await;
    let (_, secret) = limited_key(&app, vec![limit("api", 10, 3_600, None)], 0).await;
    let admitted = |answers: Vec<v1::VerifyApiKeyResponse>| {
        answers.iter().filter(|answer| answer.code() == VerificationCode::Valid).count()
    };
    let burst = join_all((0..30).map(|_| verify(&app.client, &secret, 0))).await;
    assert_eq!(admitted(burst), 10);
    seconds.store(3_600, Ordering::SeqCst);
    let refilled = join_all((0..30).map(|_| verify(&app.client, &secret, 0))).await;
    assert_eq!(admitted(refilled), 10, "one period refills the burst, and a full bucket holds no more");
    seconds.store(3_600 + 360, Ordering::SeqCst);
    let tenth = join_all((0..30).map(|_| verify(&app.client, &secret, 0))).await;
    assert_eq!(admitted(tenth), 1, "a tenth of a period refills one token of 10");
    app.stop().await;
}

/// 400 concurrent verifications spread over two processes on one database, under one
/// key's limit or under its owner's shared by two keys (each verified through its own
/// process): the admitted count is within the guarantee and wastes at most 10% of it.
async fn two_replicas_share_one_bucket(backend: Backend, shared_by_owner: bool) {
    let app = spawn(backend).await;
    let (first, second, _dirs) = replicas(&app, backend).await;
    let secrets = if shared_by_owner {
        let request = v1::SetOwnerRateLimitsRequest {
            owner: "caller".into(),
            rate_limits: vec![limit("api", 100, 60, Some(100))],
        };
        RateLimitServiceClient::new(app.channel.clone()).set_owner_rate_limits(admin(request)).await.unwrap();
        [limited_key(&app, vec![], 0).await.1, limited_key(&app, vec![], 0).await.1]
    } else {
        let (_, secret) = limited_key(&app, vec![limit("api", 100, 60, Some(100))], 0).await;
        [secret.clone(), secret]
    };
    let started = Instant::now();
    let answers = join_all((0..400).map(|n| {
        let (client, secret) = if n % 2 == 0 { (&first.client, &secrets[0]) } else { (&second.client, &secrets[1]) };
        verify(client, secret, 0)
    }))
    .await;
    let elapsed = started.elapsed().as_secs_f64();
    let admitted = answers.iter().filter(|answer| answer.code() == VerificationCode::Valid).count();
    let bound = 100.0 + 100.0 * elapsed / 60.0;
    assert!(
        (90..=bound.floor() as usize).contains(&admitted),
        "admitted {admitted} in {elapsed:.1}s, bound {bound:.1}"
    );
    for refused in answers.iter().filter(|answer| answer.code() != VerificationCode::Valid) {
        assert_eq!(refused.code(), VerificationCode::RateLimited);
        assert!(refused.rate_limits[0].reset_time.is_some(), "every refusal has a reset time");
    }
    drop((first, second));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_bucket_on_postgres() {
    two_replicas_share_one_bucket(Backend::Postgres, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_bucket_on_one_sqlite_file() {
    two_replicas_share_one_bucket(Backend::Sqlite, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_keys_through_two_processes_share_their_owners_limit_on_postgres() {
    two_replicas_share_one_bucket(Backend::Postgres, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_keys_through_two_processes_share_their_owners_limit_on_one_sqlite_file() {
    two_replicas_share_one_bucket(Backend::Sqlite, true).await;
}

both!(owner_limits_take_admin_to_set_and_are_read_by_the_owners_readers);
async fn owner_limits_take_admin_to_set_and_are_read_by_the_owners_readers(backend: Backend) {
    let app = spawn(backend).await;
    let mut limits = RateLimitServiceClient::new(app.channel.clone());
    let (_, writer) = app.create_key("team", &["keys:write"]).await;
    let (_, reader) = app.create_key("team", &["keys:read"]).await;
    let set = |owner: &str, rate_limits: Vec<v1::RateLimit>| v1::SetOwnerRateLimitsRequest {
        owner: owner.to_owned(),
        rate_limits,
    };
    let denied = limits.set_owner_rate_limits(with_key(&writer, set("team", vec![limit("api", 1, 1, None)]))).await;
    assert_eq!(denied.unwrap_err().code(), Code::PermissionDenied);
    let bad = limits.set_owner_rate_limits(admin(set("team", vec![limit("api", 0, 1, None)]))).await;
    assert_invalid(&bad.unwrap_err(), "rate_limits[0].limit");
    let nameless = limits.set_owner_rate_limits(admin(set("", vec![]))).await;
    assert_invalid(&nameless.unwrap_err(), "owner");
    let read = limits.get_owner_rate_limits(with_key(&reader, v1::GetOwnerRateLimitsRequest::default())).await;
    assert!(read.unwrap().into_inner().rate_limits.is_empty(), "nothing was written");
    limits.set_owner_rate_limits(admin(set("team", vec![limit("api", 100, 60, None)]))).await.expect("admin sets");
    let read = limits.get_owner_rate_limits(with_key(&reader, v1::GetOwnerRateLimitsRequest::default())).await;
    let read = read.unwrap().into_inner();
    assert_eq!((read.owner.as_str(), read.rate_limits), ("team", vec![limit("api", 100, 60, Some(100))]));
    let other = v1::GetOwnerRateLimitsRequest { owner: "someone-else".into() };
    assert_eq!(
        limits.get_owner_rate_limits(with_key(&reader, other)).await.unwrap_err().code(),
        Code::PermissionDenied
    );
    app.stop().await;
}

both!(a_keys_own_limit_takes_precedence_over_its_owners);
async fn a_keys_own_limit_takes_precedence_over_its_owners(backend: Backend) {
    let app = spawn(backend).await;
    let request = v1::SetOwnerRateLimitsRequest {
        owner: "caller".into(),
        rate_limits: vec![limit("api", 100, 60, None), limit("daily", 1_000, 86_400, None)],
    };
    RateLimitServiceClient::new(app.channel.clone()).set_owner_rate_limits(admin(request)).await.unwrap();
    let (_, secret) = limited_key(&app, vec![limit("api", 1, 60, None)], 0).await;
    let first = verify(&app.client, &secret, 0).await;
    assert_eq!(first.code(), VerificationCode::Valid);
    let applied: Vec<_> = first.rate_limits.iter().map(|state| (state.name.as_str(), state.limit)).collect();
    assert_eq!(applied, [("api", 1), ("daily", 1_000)]);
    assert_eq!(verify(&app.client, &secret, 0).await.code(), VerificationCode::RateLimited);
    app.stop().await;
}

/// Two `keyward` processes on the app's database. SQLite has no change notifications:
/// there a change reaches other processes when their cached copy expires, so their
/// cache lives half a second (`KEYWARD_CACHE_TTL`, as README says).
async fn replicas(app: &TestApp, backend: Backend) -> (Replica, Replica, [tempfile::TempDir; 2]) {
    let url = app.config.store.database_url();
    let env: &[(&str, &str)] = match backend {
        Backend::Sqlite => &[("KEYWARD_CACHE_TTL", "500ms")],
        Backend::Postgres => &[],
    };
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let first = Replica::start(&url, dirs[0].path(), env).await.expect("first replica starts");
    let second = Replica::start(&url, dirs[1].path(), env).await.expect("second replica starts");
    (first, second, dirs)
}

fn admitted(answers: &[v1::VerifyApiKeyResponse]) -> usize {
    answers.iter().filter(|answer| answer.code() == VerificationCode::Valid).count()
}

both!(an_admin_lowering_a_limit_is_obeyed_by_another_replica_within_a_second);
async fn an_admin_lowering_a_limit_is_obeyed_by_another_replica_within_a_second(backend: Backend) {
    let app = spawn(backend).await;
    let (first, second, _dirs) = replicas(&app, backend).await;
    let (key, secret) = limited_key(&app, vec![limit("api", 1_000, 60, None)], 0).await;
    // Both replicas hold the key, and a slice of its bucket.
    assert_eq!(verify(&first.client, &secret, 0).await.code(), VerificationCode::Valid);
    assert_eq!(verify(&second.client, &secret, 0).await.code(), VerificationCode::Valid);
    let update = v1::UpdateApiKeyRequest {
        api_key: Some(v1::ApiKey { id: key.id, rate_limits: vec![limit("api", 2, 60, None)], ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["rate_limits".into()] }),
        ..Default::default()
    };
    app.client.clone().update_api_key(admin(update)).await.expect("admin lowers the limit");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let answers =
        join_all((0..40).map(|n| verify(if n % 2 == 0 { &first.client } else { &second.client }, &secret, 0))).await;
    assert!(admitted(&answers) <= 2, "admitted {} under a limit of 2", admitted(&answers));
    assert_eq!(answers[0].rate_limits[0].limit, 2);
    drop((first, second));
    app.stop().await;
}

both!(a_killed_replica_strands_its_share_for_two_lease_windows_at_most);
async fn a_killed_replica_strands_its_share_for_two_lease_windows_at_most(backend: Backend) {
    let app = spawn(backend).await;
    let (first, second, _dirs) = replicas(&app, backend).await;
    let (_, secret) = limited_key(&app, vec![limit("api", 100, 60, None)], 0).await;
    let started = Instant::now();
    let before = join_all((0..50).map(|_| verify(&first.client, &secret, 0))).await;
    assert_eq!(admitted(&before), 50);
    // SIGKILL: no slice is given back.
    drop(first);
    let during = join_all((0..100).map(|_| verify(&second.client, &secret, 0))).await;
    // The bucket forgets the killed replica's lease within two lease windows
    // (KEYWARD_RATE_LIMIT_LEASE, 1 s).
    tokio::time::sleep(std::time::Duration::from_millis(2_200)).await;
    let after = join_all((0..100).map(|_| verify(&second.client, &secret, 0))).await;
    let total = 50 + admitted(&during) + admitted(&after);
    let bound = 100.0 + 100.0 * started.elapsed().as_secs_f64() / 60.0;
    assert!(total >= 100 && total as f64 <= bound, "admitted {total} in all, bound {bound:.1}");
    drop(second);
    app.stop().await;
}

both!(an_owners_new_limit_reaches_other_replicas_within_a_second);
async fn an_owners_new_limit_reaches_other_replicas_within_a_second(backend: Backend) {
    let app = spawn(backend).await;
    let (first, second, _dirs) = replicas(&app, backend).await;
    let (_, secret) = limited_key(&app, vec![], 0).await;
    // Both replicas know the owner has no limits.
    assert!(verify(&first.client, &secret, 0).await.rate_limits.is_empty());
    assert!(verify(&second.client, &secret, 0).await.rate_limits.is_empty());
    let request =
        v1::SetOwnerRateLimitsRequest { owner: "caller".into(), rate_limits: vec![limit("api", 2, 60, None)] };
    RateLimitServiceClient::new(app.channel.clone()).set_owner_rate_limits(admin(request)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let answers =
        join_all((0..40).map(|n| verify(if n % 2 == 0 { &first.client } else { &second.client }, &secret, 0))).await;
    assert_eq!(admitted(&answers), 2, "both replicas apply the owner's new limit of 2");
    drop((first, second));
    app.stop().await;
}

both!(a_lease_whose_request_is_cancelled_is_still_recorded);
/// A client's deadline cancels a verification while its lease statement waits on the
/// bucket's row; the statement then commits. The replica must record that lease. Left
/// with its old slice, it would spend tokens the statement gave back, give them back a
/// second time (the bucket then counts fewer tokens out on lease than there are, and its
/// refill cap loosens) and never spend what the statement granted: 99 admitted here.
async fn a_lease_whose_request_is_cancelled_is_still_recorded(backend: Backend) {
    let app = spawn(backend).await;
    // 100 per hour, burst 100: what refills during the test is a fraction of a token.
    let api = v1::RateLimit { auto_apply: false, ..limit("api", 100, 3_600, Some(100)) };
    let (_, secret) = limited_key(&app, vec![api], 0).await;
    let verify = |cost: i64, timeout: Option<Duration>| {
        let mut client = app.client.clone();
        let mut request = admin(v1::VerifyApiKeyRequest {
            key: secret.clone(),
            rate_limits: vec![v1::RateLimitUse { name: "api".into(), cost: Some(cost) }],
            ..Default::default()
        });
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        async move { client.verify_api_key(request).await }
    };
    // The first lease takes a twentieth of the burst (5): one spent, four left unused.
    let first = verify(1, None).await.expect("verify").into_inner();
    assert_eq!(first.code(), VerificationCode::Valid);

    // Another connection holds the bucket's row (PostgreSQL) or the write lock (SQLite).
    let blocker = sea_orm::Database::connect(app.config.store.database_url()).await.expect("connect");
    let held = blocker.begin().await.expect("begin");
    held.execute_unprepared("UPDATE rate_buckets SET level = level").await.expect("lock the bucket");
    // A cost of 5 needs a new lease, which gives the four back and waits on the lock
    // until the client's deadline cancels the call.
    let cancelled = verify(5, Some(Duration::from_millis(300))).await;
    let status = cancelled.expect_err("the call outlives its deadline");
    assert!(matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled), "{status:?}");
    held.commit().await.expect("release the bucket");

    let mut admitted = 1;
    for _ in 0..150 {
        let code = verify(1, None).await.expect("verify").into_inner().code();
        if code == VerificationCode::RateLimited {
            break;
        }
        assert_eq!(code, VerificationCode::Valid);
        admitted += 1;
    }
    assert!(admitted <= 100, "{admitted} admitted under a burst of 100");
    // Nothing is lost either: the cancelled call's slice serves the next calls.
    assert_eq!(admitted, 100, "the cancelled lease's slice must serve the next calls");
}
