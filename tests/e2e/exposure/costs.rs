//! Costs an outsider names: absurd amounts, usage rows the database refuses, overflowed
//! counters, and charge request ids replayed with a different charge.

use super::*;

/// A cost as (unit, amount) pairs.
type Cost<'a> = &'a [(&'a str, i64)];

/// Most one verification may cost per unit (the documented bound).
const MAX_COST: i64 = 1_000_000_000_000;

fn amounts(pairs: &[(&str, i64)]) -> Vec<v1::CreditAmount> {
    pairs.iter().map(|(unit, amount)| v1::CreditAmount { unit: (*unit).to_owned(), amount: *amount }).collect()
}

/// A key of `owner`, usage-limited with `credits` when given; returns it and its secret.
async fn key_of(app: &TestApp, owner: &str, credits: Option<&[(&str, i64)]>) -> (v1::ApiKey, String) {
    let request = v1::CreateApiKeyRequest {
        api_key: Some(v1::ApiKey {
            name: format!("key of {owner}"),
            owner: owner.to_owned(),
            usage_limited: credits.is_some(),
            credits: amounts(credits.unwrap_or_default()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = app.client.clone().create_api_key(admin(request)).await.expect("create").into_inner();
    (created.api_key.expect("key"), created.secret)
}

/// VerifyApiKey as `caller` with a cost and a request id.
async fn verify_as(
    app: &TestApp,
    caller: &str,
    secret: &str,
    cost: &[(&str, i64)],
    request_id: &str,
) -> Result<v1::VerifyApiKeyResponse, tonic::Status> {
    let request = v1::VerifyApiKeyRequest {
        key: secret.to_owned(),
        cost: amounts(cost),
        request_id: request_id.to_owned(),
        ..Default::default()
    };
    app.client.clone().verify_api_key(with_key(caller, request)).await.map(tonic::Response::into_inner)
}

async fn balances(app: &TestApp, id: &str) -> Vec<(String, i64)> {
    let request = v1::GetCreditBalancesRequest { api_key_id: id.to_owned() };
    let answer = CreditServiceClient::new(app.channel.clone()).get_credit_balances(admin(request)).await.unwrap();
    answer.into_inner().balances.into_iter().map(|credit| (credit.unit, credit.amount)).collect()
}

/// GetUsage of a key or an owner since three hours ago, in hour or day buckets.
async fn usage(app: &TestApp, api_key_id: &str, owner: &str, day: bool) -> Result<v1::GetUsageResponse, tonic::Status> {
    let granularity = if day { v1::UsageGranularity::Day } else { v1::UsageGranularity::Hour };
    let request = v1::GetUsageRequest {
        api_key_id: api_key_id.to_owned(),
        owner: owner.to_owned(),
        start_time: Some(crate::helpers::timestamp_in(-3 * 3600)),
        granularity: granularity.into(),
        ..Default::default()
    };
    CreditServiceClient::new(app.channel.clone()).get_usage(admin(request)).await.map(tonic::Response::into_inner)
}

/// The largest per-bucket count of `outcome` and the largest per-bucket spend of the default unit.
fn peaks(usage: &v1::GetUsageResponse, outcome: &str) -> (i64, i64) {
    let count = usage.buckets.iter().filter_map(|bucket| bucket.verifications.get(outcome)).copied().max();
    let spent = usage
        .buckets
        .iter()
        .flat_map(|bucket| &bucket.credits_spent)
        .filter(|credit| credit.unit.is_empty())
        .map(|credit| credit.amount)
        .max();
    (count.unwrap_or(0), spent.unwrap_or(0))
}

/// The total count of `outcome` over every bucket.
fn total(usage: &v1::GetUsageResponse, outcome: &str) -> i64 {
    usage.buckets.iter().filter_map(|bucket| bucket.verifications.get(outcome)).sum()
}

fn this_hour() -> chrono::DateTime<chrono::Utc> {
    use chrono::DurationRound;
    chrono::Utc::now().duration_trunc(chrono::TimeDelta::hours(1)).unwrap()
}

async fn absurd_costs_are_refused_and_usage_counters_saturate(backend: Backend) {
    let app = spawn(backend).await;
    let (unmetered, unmetered_secret) = key_of(&app, "saturated", None).await;
    let (sibling, _) = key_of(&app, "saturated", None).await;
    let (metered, metered_secret) = key_of(&app, "payer", Some(&[("", 100)])).await;
    let (bystander, bystander_secret) = key_of(&app, "bystander", None).await;

    // The attack: an absurd cost, then any other. Refused before anything is counted.
    for secret in [&unmetered_secret, &metered_secret] {
        for cost in [i64::MAX, MAX_COST + 1] {
            let refused = verify_as(&app, ADMIN_KEY, secret, &[("", cost)], "").await.unwrap_err();
            assert_invalid(&refused, "cost");
        }
    }
    assert_eq!(balances(&app, &metered.id).await, vec![(String::new(), 100)], "nothing was charged");

    // Counters close to the top, in this hour and the next (a test may cross the hour).
    let store = &app.running().store;
    let mut seed = UsageBatch::default();
    for hour in [this_hour(), this_hour() + chrono::TimeDelta::hours(1)] {
        for id in [&unmetered.id, &sibling.id] {
            seed.counts.insert((id.parse().unwrap(), hour, "VALID"), i64::MAX - 1);
            seed.spent.insert((id.parse().unwrap(), hour, String::new()), i64::MAX - MAX_COST);
        }
    }
    store.flush_usage(&seed).await.expect("seeding the counters");

    for _ in 0..3 {
        let answer = verify_as(&app, ADMIN_KEY, &unmetered_secret, &[("", MAX_COST)], "").await.unwrap();
        assert!(answer.valid, "the bound itself is a valid cost");
        assert!(app.verify(&bystander_secret, &[], "").await.valid);
    }
    app.running().flush_usage().await;

    let by_key = usage(&app, &unmetered.id, "", false).await.expect("GetUsage of the saturated key");
    assert_eq!(peaks(&by_key, "VALID"), (i64::MAX, i64::MAX), "both counters stop at the top: {by_key:?}");
    for day in [false, true] {
        let by_owner = usage(&app, "", "saturated", day).await.expect("GetUsage of the saturated owner");
        assert_eq!(peaks(&by_owner, "VALID"), (i64::MAX, i64::MAX), "sums over keys saturate too: {by_owner:?}");
    }
    let other = usage(&app, &bystander.id, "", false).await.expect("GetUsage of another key");
    assert_eq!(total(&other, "VALID"), 3, "another key's counts landed: {other:?}");

    // Later flushes still work for everyone.
    assert!(app.verify(&bystander_secret, &[], "").await.valid);
    verify_as(&app, ADMIN_KEY, &unmetered_secret, &[("", 1)], "").await.unwrap();
    app.running().flush_usage().await;
    let other = usage(&app, &bystander.id, "", false).await.unwrap();
    assert_eq!(total(&other, "VALID"), 4, "{other:?}");
    let by_key = usage(&app, &unmetered.id, "", false).await.unwrap();
    assert_eq!(peaks(&by_key, "VALID"), (i64::MAX, i64::MAX));
    app.stop().await;
}
both!(absurd_costs_are_refused_and_usage_counters_saturate);

async fn a_usage_row_the_database_refuses_is_dropped_alone(backend: Backend) {
    let app = spawn(backend).await;
    let (refused, refused_secret) = key_of(&app, "refused", None).await;
    let (bystander, bystander_secret) = key_of(&app, "bystander", None).await;
    // Make the database refuse spend counters above 1000, as it would any bad row.
    let db = app.running().store.connection();
    let cap = match backend {
        Backend::Sqlite => {
            "CREATE TRIGGER test_cap BEFORE INSERT ON credit_spend_counters WHEN NEW.amount > 1000 \
             BEGIN SELECT RAISE(ABORT, 'over the test cap'); END"
        }
        Backend::Postgres => "ALTER TABLE credit_spend_counters ADD CONSTRAINT test_cap CHECK (amount <= 1000)",
    };
    db.execute_unprepared(cap).await.unwrap();

    assert!(verify_as(&app, ADMIN_KEY, &refused_secret, &[("", 5000)], "").await.unwrap().valid);
    for _ in 0..2 {
        assert!(app.verify(&bystander_secret, &[], "").await.valid);
    }
    app.running().flush_usage().await;
    let other = usage(&app, &bystander.id, "", false).await.unwrap();
    assert_eq!(total(&other, "VALID"), 2, "the rest of the batch landed: {other:?}");
    let by_key = usage(&app, &refused.id, "", false).await.unwrap();
    assert_eq!(peaks(&by_key, "VALID"), (1, 0), "only the refused row is missing: {by_key:?}");

    // The refused row was dropped, not kept to fail every later flush.
    assert!(app.verify(&bystander_secret, &[], "").await.valid);
    app.running().flush_usage().await;
    assert_eq!(total(&usage(&app, &bystander.id, "", false).await.unwrap(), "VALID"), 3);
    app.stop().await;
}
both!(a_usage_row_the_database_refuses_is_dropped_alone);

/// SQLite databases whose counters overflowed into REAL before counters saturated are
/// repaired by a migration, so GetUsage reads them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_that_overflowed_into_real_are_repaired() {
    use keyward_migrations::MigratorTrait;
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/old.db?mode=rwc", dir.path().display());
    let old = sea_orm::Database::connect(&url).await.unwrap();
    keyward_migrations::Migrator::up(&old, Some(4)).await.unwrap();
    let key = uuid::Uuid::now_v7();
    for sql in [
        "INSERT INTO usage_counters (key_id, bucket_start, outcome, count) VALUES (?, ?, 'VALID', 9223372036854775807 + 1)",
        "INSERT INTO credit_spend_counters (key_id, bucket_start, unit, amount) VALUES (?, ?, '', 9223372036854775807 + 5)",
    ] {
        let values: [sea_orm::Value; 2] = [key.into(), this_hour().into()];
        old.execute_raw(sea_orm::Statement::from_sql_and_values(sea_orm::DbBackend::Sqlite, sql, values))
            .await
            .unwrap();
    }
    let kind =
        "SELECT typeof(count) AS kind FROM usage_counters UNION ALL SELECT typeof(amount) FROM credit_spend_counters";
    let kinds = |db: &sea_orm::DatabaseConnection| {
        let db = db.clone();
        async move {
            let rows =
                db.query_all_raw(sea_orm::Statement::from_string(sea_orm::DbBackend::Sqlite, kind)).await.unwrap();
            rows.iter().map(|row| row.try_get::<String>("", "kind").unwrap()).collect::<Vec<_>>()
        }
    };
    assert_eq!(kinds(&old).await, ["real", "real"], "the state the overflow left");
    old.close().await.unwrap();

    let app = crate::helpers::spawn_with(Backend::Sqlite, |config| config.store.database_url = Some(url.clone())).await;
    let db = app.running().store.connection().clone();
    assert_eq!(kinds(&db).await, ["integer", "integer"]);
    assert_eq!(app.running().store.usage_count(key, "VALID").await.unwrap(), i64::MAX);
    app.stop().await;
}

/// Every ledger entry of a key: (unit, delta, request id).
async fn ledger(app: &TestApp, id: &str) -> Vec<(String, i64, String)> {
    let request = v1::ListCreditTransactionsRequest { api_key_id: id.to_owned(), page_size: 100, ..Default::default() };
    let answer = CreditServiceClient::new(app.channel.clone()).list_credit_transactions(admin(request)).await.unwrap();
    answer.into_inner().transactions.into_iter().map(|entry| (entry.unit, entry.delta, entry.request_id)).collect()
}

fn remaining(answer: &v1::VerifyApiKeyResponse) -> Vec<(String, i64)> {
    answer.remaining_credits.iter().map(|credit| (credit.unit.clone(), credit.amount)).collect()
}

async fn a_replayed_request_id_must_be_the_same_charge(backend: Backend) {
    let app = spawn(backend).await;
    let (key, secret) = key_of(&app, "payer", Some(&[("", 100), ("ada", 100)])).await;
    let (other, other_secret) = key_of(&app, "payer", Some(&[("", 10_000)])).await;
    let (_, verifier) = app.create_key("billing", &["verify"]).await;
    let request_id = uuid::Uuid::new_v4().to_string();
    let first = verify_as(&app, ADMIN_KEY, &secret, &[("", 1)], &request_id).await.unwrap();
    assert!(first.valid);
    assert_eq!(remaining(&first), vec![(String::new(), 99)]);

    let replays: [(&str, &str, Cost<'_>); 6] = [
        (ADMIN_KEY, &secret, &[("", 1000)]),
        (ADMIN_KEY, &secret, &[("", 2)]),
        (ADMIN_KEY, &secret, &[("", 1), ("ada", 1)]),
        (ADMIN_KEY, &secret, &[("ada", 1)]),
        (ADMIN_KEY, &other_secret, &[("", 1)]),
        (&verifier, &secret, &[("", 1)]),
    ];
    for (caller, presented, cost) in replays {
        let refused = verify_as(&app, caller, presented, cost, &request_id).await.unwrap_err();
        assert_invalid(&refused, "request_id");
    }
    let again = verify_as(&app, ADMIN_KEY, &secret, &[("", 1)], &request_id).await.unwrap();
    assert_eq!((again.valid, remaining(&again)), (true, remaining(&first)), "an exact replay gets the first answer");
    assert_eq!(balances(&app, &key.id).await, vec![(String::new(), 99), ("ada".into(), 100)]);
    assert_eq!(balances(&app, &other.id).await, vec![(String::new(), 10_000)]);
    let charged: Vec<_> = ledger(&app, &key.id).await.into_iter().filter(|entry| entry.2 == request_id).collect();
    assert_eq!(charged, vec![(String::new(), -1, request_id.clone())], "charged once, for the first request");
    assert_eq!(ledger(&app, &other.id).await.len(), 1, "only the initial credit");

    // A charge recorded before fingerprints existed is judged by its ledger entries.
    let db = app.running().store.connection();
    let legacy = sea_orm::Statement::from_sql_and_values(
        db.get_database_backend(),
        match backend {
            Backend::Sqlite => "UPDATE charge_records SET fingerprint = NULL WHERE request_id = ?",
            Backend::Postgres => "UPDATE charge_records SET fingerprint = NULL WHERE request_id = $1",
        },
        [request_id.clone().into()],
    );
    assert_eq!(db.execute_raw(legacy).await.unwrap().rows_affected(), 1);
    for (caller, cost) in [(ADMIN_KEY, &[("", 1000)][..]), (ADMIN_KEY, &[("", 1), ("ada", 1)]), (&verifier, &[("", 1)])]
    {
        let refused = verify_as(&app, caller, &secret, cost, &request_id).await.unwrap_err();
        assert_invalid(&refused, "request_id");
    }
    let again = verify_as(&app, ADMIN_KEY, &secret, &[("", 1)], &request_id).await.unwrap();
    assert_eq!(remaining(&again), remaining(&first));
    assert_eq!(balances(&app, &key.id).await, vec![(String::new(), 99), ("ada".into(), 100)]);

    // A refused first charge: its exact replay is refused alike, any other is not its replay.
    let (_, poor_secret) = key_of(&app, "poor", Some(&[("", 0)])).await;
    let refused_id = uuid::Uuid::new_v4().to_string();
    for _ in 0..2 {
        let answer = verify_as(&app, ADMIN_KEY, &poor_secret, &[("", 1)], &refused_id).await.unwrap();
        assert_eq!(answer.code(), v1::VerificationCode::UsageExceeded);
    }
    let cheaper = verify_as(&app, ADMIN_KEY, &poor_secret, &[("", 2)], &refused_id).await.unwrap_err();
    assert_invalid(&cheaper, "request_id");

    // Racing: one request id, two costs, or two keys, in flight together. One charge
    // is applied; calls that match it get its answer, the others are refused.
    let raced = uuid::Uuid::new_v4().to_string();
    let calls = (0..20).map(|index| {
        let cost = if index % 2 == 0 { 1 } else { 1000 };
        let (app, secret, raced) = (&app, other_secret.clone(), raced.clone());
        async move { (cost, verify_as(app, ADMIN_KEY, &secret, &[("", cost)], &raced).await) }
    });
    let answers = futures::future::join_all(calls).await;
    let entries: Vec<_> = ledger(&app, &other.id).await.into_iter().filter(|entry| entry.2 == raced).collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let winner = -entries[0].1;
    for (cost, answer) in &answers {
        match answer {
            Ok(answer) => {
                assert_eq!(*cost, winner, "only the charge applied is answered");
                assert_eq!(remaining(answer), vec![(String::new(), 10_000 - winner)]);
            }
            Err(status) => {
                assert_ne!(*cost, winner, "{status:?}");
                assert_invalid(status, "request_id");
            }
        }
    }
    assert_eq!(balances(&app, &other.id).await, vec![(String::new(), 10_000 - winner)]);

    let across = uuid::Uuid::new_v4().to_string();
    let calls = (0..20).map(|index| {
        let secret = if index % 2 == 0 { secret.clone() } else { other_secret.clone() };
        let (app, across) = (&app, across.clone());
        async move { verify_as(app, ADMIN_KEY, &secret, &[("", 1)], &across).await }
    });
    let answers = futures::future::join_all(calls).await;
    let mut charged = ledger(&app, &key.id).await;
    charged.extend(ledger(&app, &other.id).await);
    assert_eq!(charged.iter().filter(|entry| entry.2 == across).count(), 1, "one key was charged, once");
    assert_eq!(answers.iter().filter(|answer| answer.is_ok()).count(), 10, "the calls of that key got its answer");
    app.stop().await;
}
both!(a_replayed_request_id_must_be_the_same_charge);
