//! Credits: metered verification, adjustments, the ledger, refills and usage.

mod processes;

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use futures::future::join_all;
use keyward_proto::v1::{
    self, api_key_service_client::ApiKeyServiceClient, credit_service_client::CreditServiceClient,
};
use tonic::{Code, transport::Channel};

use crate::helpers::{Backend, Replica, TestApp, admin, assert_invalid, assert_status, both, spawn, spawn_with};

pub(crate) fn amounts(pairs: &[(&str, i64)]) -> Vec<v1::CreditAmount> {
    pairs.iter().map(|(unit, amount)| v1::CreditAmount { unit: (*unit).to_owned(), amount: *amount }).collect()
}

fn pairs(amounts: &[v1::CreditAmount]) -> Vec<(String, i64)> {
    amounts.iter().map(|amount| (amount.unit.clone(), amount.amount)).collect()
}

/// A usage-limited key holding `credits`; returns it and its secret.
pub(crate) async fn metered_key(app: &TestApp, credits: &[(&str, i64)]) -> (v1::ApiKey, String) {
    let request = v1::CreateApiKeyRequest {
        api_key: Some(v1::ApiKey {
            name: "metered".into(),
            owner: "payer".into(),
            usage_limited: true,
            credits: amounts(credits),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = app.client.clone().create_api_key(admin(request)).await.expect("create").into_inner();
    (created.api_key.expect("key"), created.secret)
}

async fn charge(
    client: &ApiKeyServiceClient<Channel>,
    secret: &str,
    cost: &[(&str, i64)],
    request_id: &str,
) -> v1::VerifyApiKeyResponse {
    let request = v1::VerifyApiKeyRequest {
        key: secret.to_owned(),
        cost: amounts(cost),
        request_id: request_id.to_owned(),
        ..Default::default()
    };
    client.clone().verify_api_key(admin(request)).await.expect("verify").into_inner()
}

pub(crate) async fn balances(channel: &Channel, id: &str) -> Vec<(String, i64)> {
    let request = v1::GetCreditBalancesRequest { api_key_id: id.to_owned() };
    pairs(
        &CreditServiceClient::new(channel.clone())
            .get_credit_balances(admin(request))
            .await
            .unwrap()
            .into_inner()
            .balances,
    )
}

/// Every ledger entry of a key, page by page.
pub(crate) async fn ledger(channel: &Channel, id: &str) -> Vec<v1::CreditTransaction> {
    let mut client = CreditServiceClient::new(channel.clone());
    let mut entries = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = v1::ListCreditTransactionsRequest {
            api_key_id: id.to_owned(),
            page_size: 100,
            page_token: page_token.clone(),
            ..Default::default()
        };
        let page = client.list_credit_transactions(admin(request)).await.unwrap().into_inner();
        entries.extend(page.transactions);
        if page.next_page_token.is_empty() {
            return entries;
        }
        page_token = page.next_page_token;
    }
}

/// Asserts the ledger's deltas sum to each balance, and each entry's balance_after
/// follows from the one before.
pub(crate) async fn assert_ledger_matches(channel: &Channel, id: &str) -> Vec<v1::CreditTransaction> {
    let entries = ledger(channel, id).await;
    let mut sums: BTreeMap<String, i64> = BTreeMap::new();
    for entry in &entries {
        let sum = sums.entry(entry.unit.clone()).or_default();
        *sum += entry.delta;
        assert_eq!(*sum, entry.balance_after, "balance_after follows the deltas in {entry:?}");
    }
    let held: BTreeMap<String, i64> = balances(channel, id).await.into_iter().collect();
    for (unit, sum) in &sums {
        assert_eq!(held.get(unit).copied().unwrap_or(0), *sum, "ledger and balance of unit {unit:?} agree");
    }
    entries
}

pub(crate) fn count_codes(answers: &[v1::VerifyApiKeyResponse]) -> BTreeMap<String, usize> {
    let mut codes = BTreeMap::new();
    for answer in answers {
        *codes.entry(answer.code().as_str_name().to_owned()).or_default() += 1;
    }
    codes
}

async fn concurrent_charges_never_overdraw(backend: Backend) {
    let app = spawn(backend).await;
    let (key, secret) = metered_key(&app, &[("", 100)]).await;
    assert_eq!(pairs(&key.credits), vec![(String::new(), 100)]);
    let answers = join_all((0..200).map(|_| charge(&app.client, &secret, &[("", 1)], ""))).await;
    let codes = count_codes(&answers);
    assert_eq!(codes.get("VERIFICATION_CODE_VALID"), Some(&100), "{codes:?}");
    assert_eq!(codes.get("VERIFICATION_CODE_USAGE_EXCEEDED"), Some(&100), "{codes:?}");
    assert!(answers.iter().all(|answer| answer.valid == (answer.code() == v1::VerificationCode::Valid)));
    let mut remaining: Vec<i64> = answers.iter().filter(|a| a.valid).map(|a| a.remaining_credits[0].amount).collect();
    remaining.sort_unstable();
    assert_eq!(remaining, (0..100).collect::<Vec<_>>(), "each charge saw its own balance");
    assert_eq!(balances(&app.channel, &key.id).await, vec![(String::new(), 0)]);
    let entries = assert_ledger_matches(&app.channel, &key.id).await;
    assert_eq!(entries.iter().filter(|entry| entry.reason == "verify").count(), 100);
    let metrics =
        reqwest::get(format!("http://{}/metrics", app.running().http_addr)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("keyward_credits_charged_total{unit=\"\"} 100"), "{metrics}");
    let batches = metrics.lines().find_map(|line| line.strip_prefix("keyward_charge_batch_size_count ")).unwrap();
    assert!(batches.parse::<u64>().unwrap() < 200, "concurrent charges share transactions: 200 took {batches}");
    app.stop().await;
}
both!(concurrent_charges_never_overdraw);

/// Charges of many keys sharing batches, with costs that differ: on PostgreSQL a batch
/// whose balances all stay above 0 is one statement that writes each charge's ledger
/// entry with the balance it left, so every answer, entry and balance must agree.
async fn charges_of_many_keys_share_batches_and_each_sees_its_balance(backend: Backend) {
    let app = spawn(backend).await;
    let mut keys = Vec::new();
    for _ in 0..5 {
        keys.push(metered_key(&app, &[("", 10_000), ("tokens", 10_000)]).await);
    }
    let answers = join_all((0..300).map(|n| {
        let (_, secret) = &keys[n % keys.len()];
        let unit = if n % 3 == 0 { "tokens" } else { "" };
        let cost = i64::try_from(n % 4 + 1).unwrap();
        let client = &app.client;
        async move { charge(client, secret, &[(unit, cost)], "").await }
    }))
    .await;
    assert!(answers.iter().all(|answer| answer.valid), "{:?}", count_codes(&answers));
    for (index, (key, _)) in keys.iter().enumerate() {
        let mut spent: BTreeMap<String, i64> = BTreeMap::new();
        let mut seen: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for (n, answer) in answers.iter().enumerate().filter(|(n, _)| n % keys.len() == index) {
            let unit = if n % 3 == 0 { "tokens" } else { "" };
            *spent.entry(unit.to_owned()).or_default() += i64::try_from(n % 4 + 1).unwrap();
            assert_eq!(answer.remaining_credits.len(), 1);
            seen.entry(unit.to_owned()).or_default().push(answer.remaining_credits[0].amount);
        }
        let held: BTreeMap<String, i64> = balances(&app.channel, &key.id).await.into_iter().collect();
        for (unit, spent) in &spent {
            assert_eq!(held[unit], 10_000 - spent, "balance of {unit:?}");
            let remaining = &seen[unit];
            let distinct: HashSet<i64> = remaining.iter().copied().collect();
            assert_eq!(distinct.len(), remaining.len(), "each charge saw its own balance: {remaining:?}");
            assert_eq!(remaining.iter().min(), Some(&held[unit]), "the last charge left the balance held");
        }
        let entries = assert_ledger_matches(&app.channel, &key.id).await;
        assert_eq!(entries.iter().filter(|entry| entry.reason == "verify").count(), 60);
    }
    let metrics =
        reqwest::get(format!("http://{}/metrics", app.running().http_addr)).await.unwrap().text().await.unwrap();
    let batches = metrics.lines().find_map(|line| line.strip_prefix("keyward_charge_batch_size_count ")).unwrap();
    assert!(batches.parse::<u64>().unwrap() < 300, "concurrent charges share batches: 300 took {batches}");
    app.stop().await;
}
both!(charges_of_many_keys_share_batches_and_each_sees_its_balance);

async fn retried_charges_apply_once(backend: Backend) {
    let app = spawn(backend).await;
    let (key, secret) = metered_key(&app, &[("", 10)]).await;
    let request_id = uuid::Uuid::new_v4().to_string();
    let racing = join_all((0..20).map(|_| charge(&app.client, &secret, &[("", 1)], &request_id))).await;
    for answer in &racing {
        assert_eq!(answer.code(), v1::VerificationCode::Valid);
        assert_eq!(pairs(&answer.remaining_credits), vec![(String::new(), 9)], "every retry gets the first answer");
    }
    let later = charge(&app.client, &secret, &[("", 1)], &request_id).await;
    assert_eq!(pairs(&later.remaining_credits), vec![(String::new(), 9)]);
    assert_eq!(balances(&app.channel, &key.id).await, vec![(String::new(), 9)]);

    // A refused charge stays refused for its request id, even once credits arrive.
    let (poor, poor_secret) = metered_key(&app, &[("", 0)]).await;
    let refused_id = uuid::Uuid::new_v4().to_string();
    let first = charge(&app.client, &poor_secret, &[("", 1)], &refused_id).await;
    assert_eq!(first.code(), v1::VerificationCode::UsageExceeded);
    let top_up = v1::AdjustCreditsRequest {
        api_key_id: poor.id.clone(),
        deltas: vec![v1::CreditDelta { unit: String::new(), delta: 5 }],
        ..Default::default()
    };
    CreditServiceClient::new(app.channel.clone()).adjust_credits(admin(top_up)).await.unwrap();
    assert_eq!(
        charge(&app.client, &poor_secret, &[("", 1)], &refused_id).await.code(),
        v1::VerificationCode::UsageExceeded
    );
    let fresh = charge(&app.client, &poor_secret, &[("", 1)], &uuid::Uuid::new_v4().to_string()).await;
    assert_eq!(pairs(&fresh.remaining_credits), vec![(String::new(), 4)]);
    assert_ledger_matches(&app.channel, &poor.id).await;
    assert_ledger_matches(&app.channel, &key.id).await;
    app.stop().await;
}
both!(retried_charges_apply_once);

async fn multi_unit_changes_are_all_or_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let mut credits = CreditServiceClient::new(app.channel.clone());
    let (key, secret) = metered_key(&app, &[("", 5), ("lovelace", 1)]).await;
    let short = charge(&app.client, &secret, &[("", 2), ("lovelace", 2)], "").await;
    assert_eq!(short.code(), v1::VerificationCode::UsageExceeded);
    assert!(short.remaining_credits.is_empty());
    assert_eq!(balances(&app.channel, &key.id).await, vec![(String::new(), 5), ("lovelace".into(), 1)]);
    let enough = charge(&app.client, &secret, &[("lovelace", 1), ("", 2)], "").await;
    assert_eq!(enough.code(), v1::VerificationCode::Valid);
    assert_eq!(pairs(&enough.remaining_credits), vec![(String::new(), 3), ("lovelace".into(), 0)]);

    let overdraw = v1::AdjustCreditsRequest {
        api_key_id: key.id.clone(),
        deltas: vec![
            v1::CreditDelta { unit: "asset1".into(), delta: 7 },
            v1::CreditDelta { unit: String::new(), delta: -4 },
        ],
        reason: "refund".into(),
        ..Default::default()
    };
    let refused = credits.adjust_credits(admin(overdraw)).await.unwrap_err();
    assert_status(&refused, Code::FailedPrecondition, "INSUFFICIENT_CREDITS");
    assert_eq!(balances(&app.channel, &key.id).await, vec![(String::new(), 3), ("lovelace".into(), 0)]);

    // 2^62 fits; 2^62 + 2^62 does not, and is refused rather than wrapped.
    let big = 1_i64 << 62;
    let (rich, rich_secret) = metered_key(&app, &[("", big)]).await;
    let adjust = |delta: i64| v1::AdjustCreditsRequest {
        api_key_id: rich.id.clone(),
        deltas: vec![v1::CreditDelta { unit: String::new(), delta }],
        ..Default::default()
    };
    assert_invalid(&credits.adjust_credits(admin(adjust(big))).await.unwrap_err(), "deltas");
    let topped = credits.adjust_credits(admin(adjust(big - 1))).await.unwrap().into_inner();
    assert_eq!(pairs(&topped.balances), vec![(String::new(), i64::MAX)]);
    // One verification costs at most 10^12 per unit, however rich the key.
    let most = 1_000_000_000_000;
    let spent = charge(&app.client, &rich_secret, &[("", most)], "").await;
    assert_eq!(pairs(&spent.remaining_credits), vec![(String::new(), i64::MAX - most)]);
    assert_ledger_matches(&app.channel, &rich.id).await;
    assert_ledger_matches(&app.channel, &key.id).await;
    app.stop().await;
}
both!(multi_unit_changes_are_all_or_nothing);

async fn bad_credit_input_is_refused_and_changes_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let mut credits = CreditServiceClient::new(app.channel.clone());
    let (key, secret) = metered_key(&app, &[("", 10)]).await;
    let verify =
        |cost: Vec<v1::CreditAmount>| v1::VerifyApiKeyRequest { key: secret.clone(), cost, ..Default::default() };
    let mut client = app.client.clone();
    assert_invalid(&client.verify_api_key(admin(verify(amounts(&[("", 0)])))).await.unwrap_err(), "cost[0]");
    assert_invalid(&client.verify_api_key(admin(verify(amounts(&[("", -3)])))).await.unwrap_err(), "cost[0]");
    assert_invalid(
        &client.verify_api_key(admin(verify(amounts(&[("a", 1), ("a", 1)])))).await.unwrap_err(),
        "cost[1].unit",
    );
    assert_invalid(
        &client.verify_api_key(admin(verify(amounts(&[("has space", 1)])))).await.unwrap_err(),
        "cost[0].unit",
    );
    let many: Vec<v1::CreditAmount> =
        (0..10_000).map(|unit| v1::CreditAmount { unit: format!("u{unit}"), amount: 1 }).collect();
    assert_invalid(&client.verify_api_key(admin(verify(many))).await.unwrap_err(), "cost");
    let bad_request_id = v1::VerifyApiKeyRequest { request_id: "again".into(), ..verify(amounts(&[("", 1)])) };
    assert_invalid(&client.verify_api_key(admin(bad_request_id)).await.unwrap_err(), "request_id");

    let empty = v1::AdjustCreditsRequest { api_key_id: key.id.clone(), ..Default::default() };
    assert_invalid(&credits.adjust_credits(admin(empty)).await.unwrap_err(), "deltas");
    let zero = v1::AdjustCreditsRequest {
        api_key_id: key.id.clone(),
        deltas: vec![v1::CreditDelta { unit: String::new(), delta: 0 }],
        ..Default::default()
    };
    assert_invalid(&credits.adjust_credits(admin(zero)).await.unwrap_err(), "deltas[0]");
    let unknown = v1::AdjustCreditsRequest {
        api_key_id: uuid::Uuid::now_v7().to_string(),
        deltas: vec![v1::CreditDelta { unit: String::new(), delta: 1 }],
        ..Default::default()
    };
    assert_status(&credits.adjust_credits(admin(unknown)).await.unwrap_err(), Code::NotFound, "API_KEY_NOT_FOUND");
    let negative_start = v1::CreateApiKeyRequest {
        api_key: Some(v1::ApiKey { name: "n".into(), credits: amounts(&[("", -1)]), ..Default::default() }),
        ..Default::default()
    };
    assert_invalid(&client.create_api_key(admin(negative_start)).await.unwrap_err(), "api_key.credits[0]");

    // Only admins adjust; a key reading its owner's keys may read balances and the ledger.
    let (_, reader) = app.create_key("payer", &["keys:read"]).await;
    let take = v1::AdjustCreditsRequest {
        api_key_id: key.id.clone(),
        deltas: vec![v1::CreditDelta { unit: String::new(), delta: -1 }],
        ..Default::default()
    };
    let denied = credits.adjust_credits(crate::helpers::with_key(&reader, take)).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let (_, writer) = app.create_key("payer", &["keys:write"]).await;
    let mint = v1::CreateApiKeyRequest {
        api_key: Some(v1::ApiKey { name: "minted".into(), credits: amounts(&[("", 1)]), ..Default::default() }),
        ..Default::default()
    };
    let denied = client.create_api_key(crate::helpers::with_key(&writer, mint)).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "only admins give credits");
    let unlimit = v1::UpdateApiKeyRequest {
        api_key: Some(v1::ApiKey { id: key.id.clone(), usage_limited: false, ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["usage_limited".into()] }),
        ..Default::default()
    };
    let denied = client.update_api_key(crate::helpers::with_key(&writer, unlimit)).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "only admins lift a usage limit");
    let read = v1::GetCreditBalancesRequest { api_key_id: key.id.clone() };
    let seen = credits.get_credit_balances(crate::helpers::with_key(&reader, read)).await.unwrap().into_inner();
    assert!(seen.usage_limited);
    assert_eq!(pairs(&seen.balances), vec![(String::new(), 10)], "no refused call touched the balance");
    assert_eq!(ledger(&app.channel, &key.id).await.len(), 1, "only the initial credit is in the ledger");
    app.stop().await;
}
both!(bad_credit_input_is_refused_and_changes_nothing);

async fn unlimited_keys_are_counted_not_charged(backend: Backend) {
    let app = spawn(backend).await;
    let request = v1::CreateApiKeyRequest {
        api_key: Some(v1::ApiKey {
            name: "unlimited".into(),
            owner: "counted".into(),
            credits: amounts(&[("", 5)]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = app.client.clone().create_api_key(admin(request)).await.unwrap().into_inner();
    let (key, secret) = (created.api_key.unwrap(), created.secret);
    assert!(!key.usage_limited);
    for _ in 0..3 {
        let answer = charge(&app.client, &secret, &[("", 3)], "").await;
        assert_eq!(answer.code(), v1::VerificationCode::Valid);
        assert!(answer.remaining_credits.is_empty(), "nothing was charged");
    }
    assert_eq!(balances(&app.channel, &key.id).await, vec![(String::new(), 5)]);
    let (limited, limited_secret) = metered_key(&app, &[("", 1)]).await;
    charge(&app.client, &limited_secret, &[("", 1)], "").await;
    charge(&app.client, &limited_secret, &[("", 1)], "").await;
    app.running().flush_usage().await;

    let mut credits = CreditServiceClient::new(app.channel.clone());
    let usage = |api_key_id: &str, owner: &str| v1::GetUsageRequest {
        api_key_id: api_key_id.to_owned(),
        owner: owner.to_owned(),
        start_time: Some(crate::helpers::timestamp_in(-3 * 3600)),
        granularity: v1::UsageGranularity::Day.into(),
        ..Default::default()
    };
    let by_key = credits.get_usage(admin(usage(&key.id, ""))).await.unwrap().into_inner();
    let verifications: i64 = by_key.buckets.iter().filter_map(|b| b.verifications.get("VALID")).sum();
    let spent: i64 = by_key.buckets.iter().flat_map(|b| &b.credits_spent).map(|c| c.amount).sum();
    assert_eq!((verifications, spent), (3, 9), "{by_key:?}");
    let by_owner = credits.get_usage(admin(usage("", "payer"))).await.unwrap().into_inner();
    let outcome = |name: &str| by_owner.buckets.iter().filter_map(|b| b.verifications.get(name)).sum::<i64>();
    assert_eq!((outcome("VALID"), outcome("USAGE_EXCEEDED")), (1, 1), "{by_owner:?}");
    assert_eq!(limited.owner, "payer");
    assert_invalid(&credits.get_usage(admin(usage(&key.id, "counted"))).await.unwrap_err(), "api_key_id");
    let no_start = v1::GetUsageRequest { api_key_id: key.id.clone(), ..Default::default() };
    assert_invalid(&credits.get_usage(admin(no_start)).await.unwrap_err(), "start_time");
    app.stop().await;
}
both!(unlimited_keys_are_counted_not_charged);

async fn refills_apply_once_per_period_across_replicas(backend: Backend) {
    // Both replicas read one clock the test moves forward by whole days.
    let (clock, days) = crate::helpers::movable_clock(chrono::Duration::days(1));
    let app = spawn_with(backend, |config| {
        config.clock = clock.clone();
        config.refill_interval = Duration::from_millis(50);
    })
    .await;
    let second = keyward_server::start(app.config.clone()).await.expect("second replica starts");
    let request = v1::CreateApiKeyRequest {
        api_key: Some(v1::ApiKey {
            name: "refilled".into(),
            usage_limited: true,
            credits: amounts(&[("", 10)]),
            credit_refills: vec![v1::CreditRefill {
                unit: String::new(),
                amount: 50,
                period: v1::RefillPeriod::Daily.into(),
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = app.client.clone().create_api_key(admin(request)).await.unwrap().into_inner();
    let (key, secret) = (created.api_key.unwrap(), created.secret);
    assert_eq!(key.credit_refills.len(), 1);
    charge(&app.client, &secret, &[("", 4)], "").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(balances(&app.channel, &key.id).await, vec![(String::new(), 6)], "no refill before the period ends");

    for day in 1..=2 {
        days.store(day, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while balances(&app.channel, &key.id).await != vec![(String::new(), 50)] {
            assert!(std::time::Instant::now() < deadline, "the refill of day {day} applied");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Give both replicas many more sweeps: none may apply the period again.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let refills = ledger(&app.channel, &key.id).await.into_iter().filter(|e| e.reason == "refill").count();
        assert_eq!(refills, usize::try_from(day).unwrap(), "one refill per period across both replicas");
        charge(&app.client, &secret, &[("", 1)], "").await;
    }
    assert_ledger_matches(&app.channel, &key.id).await;
    second.stop().await.unwrap();
    app.stop().await;
}
both!(refills_apply_once_per_period_across_replicas);
