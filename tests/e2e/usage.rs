//! Usage storage stays bounded whatever a verifier sends, and GetUsage pages through it.

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use keyward_proto::v1::{self, credit_service_client::CreditServiceClient};
use keyward_store::UsageBatch;
use tonic::Code;

use crate::{
    gateway::Rest,
    helpers::{ADMIN_KEY, Backend, admin, assert_invalid, both, spawn_with},
};

fn cost(units: &[(&str, i64)]) -> Vec<v1::CreditAmount> {
    units.iter().map(|(unit, amount)| v1::CreditAmount { unit: (*unit).to_owned(), amount: *amount }).collect()
}

fn verify(secret: &str, cost: Vec<v1::CreditAmount>) -> v1::VerifyApiKeyRequest {
    v1::VerifyApiKeyRequest { key: secret.to_owned(), cost, ..Default::default() }
}

both!(made_up_units_make_no_usage_rows);
async fn made_up_units_make_no_usage_rows(backend: Backend) {
    let app = spawn_with(backend, |config| config.usage_units = vec!["tokens".into()]).await;
    let mut client = app.client.clone();
    let (key, secret) = app.create_key("counted", &[]).await;
    assert!(!key.usage_limited);

    // The flood: 100 made-up units of 256 characters per call, refused each time.
    for call in 0..20 {
        let units: Vec<v1::CreditAmount> = (0..100)
            .map(|n| v1::CreditAmount { unit: format!("{call:04}-{n:03}-{}", "x".repeat(247)), amount: 1 })
            .collect();
        let refused = client.verify_api_key(admin(verify(&secret, units))).await.unwrap_err();
        assert_invalid(&refused, "cost");
    }
    let refused = client.verify_api_key(admin(verify(&secret, cost(&[("", 1), ("made-up", 1)])))).await.unwrap_err();
    assert_invalid(&refused, "cost");
    assert!(
        refused.message().contains("\"made-up\"") && refused.message().contains("\"tokens\""),
        "the refusal names the unit and what is allowed: {}",
        refused.message()
    );
    // The default unit and the configured ones are counted.
    for _ in 0..3 {
        let answer =
            client.verify_api_key(admin(verify(&secret, cost(&[("", 2), ("tokens", 5)])))).await.unwrap().into_inner();
        assert_eq!(answer.code(), v1::VerificationCode::Valid);
    }
    // A metered key is counted only in units it holds: another is USAGE_EXCEEDED, uncounted.
    let metered = v1::CreateApiKeyRequest {
        api_key: Some(v1::ApiKey {
            name: "metered".into(),
            owner: "counted".into(),
            usage_limited: true,
            credits: cost(&[("ada", 10)]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let metered_secret = client.create_api_key(admin(metered)).await.unwrap().into_inner().secret;
    let answer =
        client.verify_api_key(admin(verify(&metered_secret, cost(&[("ghost", 1)])))).await.unwrap().into_inner();
    assert_eq!(answer.code(), v1::VerificationCode::UsageExceeded);
    let answer = client.verify_api_key(admin(verify(&metered_secret, cost(&[("ada", 1)])))).await.unwrap().into_inner();
    assert_eq!(answer.code(), v1::VerificationCode::Valid);
    app.running().flush_usage().await;

    // Two rows for the unmetered key ("" and "tokens"), one for the metered key ("ada"),
    // unless the calls straddled an hour.
    let rows = app.count_rows("credit_spend_counters").await;
    assert!((3..=6).contains(&rows), "{rows} credit rows");
    let request = v1::GetUsageRequest {
        api_key_id: key.id.clone(),
        start_time: Some(crate::helpers::timestamp_in(-3600)),
        ..Default::default()
    };
    let usage = CreditServiceClient::new(app.channel.clone()).get_usage(admin(request)).await.unwrap().into_inner();
    let mut spent: Vec<(String, i64)> = Vec::new();
    for credit in usage.buckets.iter().flat_map(|bucket| &bucket.credits_spent) {
        match spent.iter_mut().find(|(unit, _)| *unit == credit.unit) {
            Some((_, amount)) => *amount += credit.amount,
            None => spent.push((credit.unit.clone(), credit.amount)),
        }
    }
    spent.sort();
    assert_eq!(spent, vec![(String::new(), 6), ("tokens".into(), 15)]);
    app.stop().await;
}

/// Seeds `hours` hours of usage of key `id`, the latest in the current hour: in hour `n`
/// back, `n + 1` valid verifications and, every third hour, 7 credits spent.
async fn seed(app: &crate::helpers::TestApp, id: uuid::Uuid, hours: i64) -> DateTime<Utc> {
    let now = Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap();
    let mut batch = UsageBatch::default();
    for back in 0..hours {
        let hour = now - TimeDelta::hours(back);
        batch.counts.insert((id, hour, "VALID"), back + 1);
        if back % 3 == 0 {
            batch.spent.insert((id, hour, String::new()), 7);
        }
    }
    app.running().store.flush_usage(&batch).await.unwrap();
    now
}

fn valid(buckets: &[v1::UsageBucket]) -> i64 {
    buckets.iter().filter_map(|bucket| bucket.verifications.get("VALID")).sum()
}

fn spent(buckets: &[v1::UsageBucket]) -> i64 {
    buckets.iter().flat_map(|bucket| &bucket.credits_spent).map(|credit| credit.amount).sum()
}

both!(get_usage_pages_through_every_bucket);
async fn get_usage_pages_through_every_bucket(backend: Backend) {
    let app = spawn_with(backend, |_| {}).await;
    let mut credits = CreditServiceClient::new(app.channel.clone());
    let (key, _) = app.create_key("paged", &[]).await;
    let hours = 75;
    seed(&app, key.id.parse().unwrap(), hours).await;
    let (total_valid, total_spent) = ((1..=hours).sum::<i64>(), 7 * ((hours + 2) / 3));
    let start_time = crate::helpers::timestamp_in(-100 * 3600);
    let request = |granularity: v1::UsageGranularity, page_size: i32, page_token: String| v1::GetUsageRequest {
        api_key_id: key.id.clone(),
        start_time: Some(start_time),
        granularity: granularity.into(),
        page_size,
        page_token,
        ..Default::default()
    };

    // Hourly, 7 a page: every hour once, in order, the last page short.
    for (granularity, page_size, buckets) in
        [(v1::UsageGranularity::Hour, 7, hours), (v1::UsageGranularity::Day, 1, 0), (v1::UsageGranularity::Day, 2, 0)]
    {
        let mut seen: Vec<v1::UsageBucket> = Vec::new();
        let mut pages = 0;
        let mut token = String::new();
        loop {
            let page = credits.get_usage(admin(request(granularity, page_size, token))).await.unwrap().into_inner();
            pages += 1;
            assert!(page.buckets.len() <= usize::try_from(page_size).unwrap());
            seen.extend(page.buckets);
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        let starts: Vec<i64> = seen.iter().map(|bucket| bucket.start_time.unwrap().seconds).collect();
        assert!(starts.windows(2).all(|pair| pair[0] < pair[1]), "{granularity:?}: in order, each once: {starts:?}");
        assert_eq!((valid(&seen), spent(&seen)), (total_valid, total_spent), "{granularity:?} {page_size}");
        if buckets > 0 {
            assert_eq!(seen.len(), usize::try_from(buckets).unwrap());
            assert_eq!(pages, usize::try_from(buckets).unwrap().div_ceil(7));
        } else {
            // 75 hours touch 4 or 5 days.
            assert!((4..=5).contains(&seen.len()), "{} days", seen.len());
        }
    }

    // Too large a page is coerced down to 100; a negative one is refused.
    let all = credits.get_usage(admin(request(v1::UsageGranularity::Hour, 5000, String::new()))).await.unwrap();
    let all = all.into_inner();
    assert_eq!(all.buckets.len(), usize::try_from(hours).unwrap());
    assert!(all.next_page_token.is_empty());
    let negative = credits.get_usage(admin(request(v1::UsageGranularity::Hour, -1, String::new()))).await;
    assert_invalid(&negative.unwrap_err(), "page_size");
    // A token is good only with the filters it was issued for.
    let first = credits.get_usage(admin(request(v1::UsageGranularity::Hour, 7, String::new()))).await.unwrap();
    let token = first.into_inner().next_page_token;
    let other = credits.get_usage(admin(request(v1::UsageGranularity::Day, 7, token.clone()))).await.unwrap_err();
    assert_invalid(&other, "page_token");
    let garbage = credits.get_usage(admin(request(v1::UsageGranularity::Hour, 7, "garbage!".into()))).await;
    assert_eq!(garbage.unwrap_err().code(), Code::InvalidArgument);

    // The REST transcoding pages the same way.
    let rest = Rest::new(app.running().http_addr);
    let start = (Utc::now() - TimeDelta::hours(100)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let bearer = format!("Bearer {ADMIN_KEY}");
    let mut token = String::new();
    let mut buckets = 0;
    loop {
        let path = format!("/v1/usage?apiKeyId={}&startTime={start}&pageSize=30&pageToken={token}", key.id);
        let answer = rest.send("GET", &path, &[("authorization", &bearer)], None).await;
        assert_eq!(answer.status, 200, "{:?}", answer.body);
        buckets += answer.body["buckets"].as_array().unwrap().len();
        match answer.body["nextPageToken"].as_str() {
            Some(next) if !next.is_empty() => token = next.to_owned(),
            _ => break,
        }
    }
    assert_eq!(buckets, usize::try_from(hours).unwrap());
    app.stop().await;
}

both!(flushes_add_up_saturate_and_never_move_a_last_use_back);
/// A flush adds to what is stored, stops at `i64::MAX` instead of overflowing, moves a
/// last use forward only, and writes every row of a batch larger than one statement's
/// chunk (SQLite binds rows in chunks; PostgreSQL binds column arrays).
async fn flushes_add_up_saturate_and_never_move_a_last_use_back(backend: Backend) {
    let app = spawn_with(backend, |_| {}).await;
    let store = &app.running().store;
    let (key, _) = app.create_key("flushed", &[]).await;
    let id: uuid::Uuid = key.id.parse().unwrap();
    let hour = Utc::now().duration_trunc(TimeDelta::hours(1)).unwrap();
    let later = Utc::now().duration_trunc(TimeDelta::seconds(1)).unwrap();
    let earlier = later - TimeDelta::minutes(5);
    let others: Vec<uuid::Uuid> = (0..1_200).map(|_| uuid::Uuid::new_v4()).collect();

    let mut first = UsageBatch::default();
    first.counts.insert((id, hour, "VALID"), i64::MAX - 5);
    first.counts.insert((id, hour, "REVOKED"), 2);
    first.spent.insert((id, hour, "tokens".into()), i64::MAX - 1);
    first.last_used.insert(id, later);
    for (n, other) in others.iter().enumerate() {
        first.counts.insert((*other, hour, "VALID"), i64::try_from(n).unwrap() + 1);
    }
    store.flush_usage(&first).await.unwrap();
    let mut second = UsageBatch::default();
    second.counts.insert((id, hour, "VALID"), 10);
    second.counts.insert((id, hour, "REVOKED"), 3);
    second.spent.insert((id, hour, "tokens".into()), 5);
    second.last_used.insert(id, earlier);
    store.flush_usage(&second).await.unwrap();

    assert_eq!(store.usage_count(id, "VALID").await.unwrap(), i64::MAX, "saturated, not wrapped");
    assert_eq!(store.usage_count(id, "REVOKED").await.unwrap(), 5, "added up");
    let stored =
        store.hourly_usage(&keyward_store::UsageScope::Key(id), hour, hour + TimeDelta::hours(1)).await.unwrap();
    assert_eq!(stored.spent, vec![(hour, "tokens".to_owned(), i64::MAX)]);
    for (n, other) in others.iter().enumerate() {
        assert_eq!(store.usage_count(*other, "VALID").await.unwrap(), i64::try_from(n).unwrap() + 1);
    }
    let read = app.client.clone().get_api_key(admin(v1::GetApiKeyRequest { id: key.id.clone() })).await.unwrap();
    let last_use = read.into_inner().api_key.unwrap().last_use_time.expect("a last use");
    assert_eq!(last_use.seconds, later.timestamp(), "the later use stays");
    app.stop().await;
}
