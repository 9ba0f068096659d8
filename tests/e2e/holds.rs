//! Credit holds: VerifyApiKey's `hold` reserves, CaptureCreditHold charges what it names
//! and releases the rest, ReleaseCreditHold and the expiry sweep give everything back, and
//! each hold is settled once.

use std::time::Duration;

use keyward_proto::v1::{
    self, api_key_service_client::ApiKeyServiceClient, credit_service_client::CreditServiceClient,
};
use tonic::{Code, Status, transport::Channel};

use crate::{
    credits::{amounts, assert_ledger_matches, balances, metered_key},
    helpers::{Backend, TestApp, admin, assert_invalid, assert_status, both, spawn, spawn_with},
};

/// Verifies `secret` with a hold of `held` (and `ttl` seconds, if given).
pub(crate) async fn hold(
    client: &ApiKeyServiceClient<Channel>,
    secret: &str,
    held: &[(&str, i64)],
    ttl: Option<i64>,
    request_id: &str,
) -> Result<v1::VerifyApiKeyResponse, Status> {
    let request = v1::VerifyApiKeyRequest {
        key: secret.to_owned(),
        hold: amounts(held),
        hold_ttl: ttl.map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
        request_id: request_id.to_owned(),
        ..Default::default()
    };
    client.clone().verify_api_key(admin(request)).await.map(tonic::Response::into_inner)
}

pub(crate) async fn capture(
    channel: &Channel,
    hold_id: &str,
    captured: &[(&str, i64)],
    request_id: &str,
) -> Result<v1::CreditHold, Status> {
    let request = v1::CaptureCreditHoldRequest {
        hold_id: hold_id.to_owned(),
        amounts: amounts(captured),
        request_id: request_id.to_owned(),
    };
    let answer = CreditServiceClient::new(channel.clone()).capture_credit_hold(admin(request)).await?;
    Ok(answer.into_inner().hold.expect("the hold"))
}

pub(crate) async fn release(channel: &Channel, hold_id: &str, request_id: &str) -> Result<v1::CreditHold, Status> {
    let request = v1::ReleaseCreditHoldRequest { hold_id: hold_id.to_owned(), request_id: request_id.to_owned() };
    let answer = CreditServiceClient::new(channel.clone()).release_credit_hold(admin(request)).await?;
    Ok(answer.into_inner().hold.expect("the hold"))
}

/// Every hold of a key (or only the live ones), page by page.
pub(crate) async fn holds_of(channel: &Channel, key_id: &str, live_only: bool) -> Vec<v1::CreditHold> {
    let mut client = CreditServiceClient::new(channel.clone());
    let (mut holds, mut page_token) = (Vec::new(), String::new());
    loop {
        let request = v1::ListCreditHoldsRequest {
            api_key_id: key_id.to_owned(),
            live_only,
            page_size: 100,
            page_token: page_token.clone(),
            ..Default::default()
        };
        let page = client.list_credit_holds(admin(request)).await.expect("list holds").into_inner();
        holds.extend(page.holds);
        if page.next_page_token.is_empty() {
            return holds;
        }
        page_token = page.next_page_token;
    }
}

/// Rows of `credit_balances` whose reservation is out of line: below 0, above the
/// balance, or not the sum of the live holds of its account (key or pool) and unit. Always 0.
pub(crate) async fn reservations_out_of_line(app: &TestApp) -> i64 {
    app.count_rows(OUT_OF_LINE).await
}

/// The balances whose reservation is not what their live holds reserve, or not within them.
pub(crate) const OUT_OF_LINE: &str = "credit_balances b WHERE b.held < 0 OR b.held > b.balance OR b.held <> \
    (SELECT COALESCE(SUM(a.amount), 0) FROM credit_hold_amounts a JOIN credit_holds h ON h.id = a.hold_id \
     WHERE COALESCE(h.pool_id, h.key_id) = b.key_id AND a.unit = b.unit AND h.state = 'live')";

fn state(hold: &v1::CreditHold) -> v1::CreditHoldState {
    v1::CreditHoldState::try_from(hold.state).unwrap_or_default()
}

async fn a_hold_reserves_and_its_capture_charges_what_it_names(backend: Backend) {
    let app = spawn(backend).await;
    let (key, secret) = metered_key(&app, &[("", 100), ("gpu", 10)]).await;
    let held = hold(&app.client, &secret, &[("", 30), ("gpu", 4)], None, "").await.unwrap();
    assert_eq!(held.code(), v1::VerificationCode::Valid);
    assert!(!held.hold_id.is_empty(), "a VALID hold answers its id");
    // Reserved, not charged: the balance stands, what is available shrinks.
    assert_eq!(balances(&app.channel, &key.id).await, vec![(String::new(), 100), ("gpu".into(), 10)]);
    let over = hold(&app.client, &secret, &[("", 71)], None, "").await.unwrap();
    assert_eq!(over.code(), v1::VerificationCode::UsageExceeded);
    assert!(over.hold_id.is_empty(), "a refused hold reserves nothing");
    let charge = v1::VerifyApiKeyRequest { key: secret.clone(), cost: amounts(&[("", 71)]), ..Default::default() };
    let refused = app.client.clone().verify_api_key(admin(charge)).await.unwrap().into_inner();
    assert_eq!(refused.code(), v1::VerificationCode::UsageExceeded, "a charge leaves what holds reserve");
    let take = v1::AdjustCreditsRequest {
        api_key_id: key.id.clone(),
        deltas: vec![v1::CreditDelta { unit: String::new(), delta: -71 }],
        ..Default::default()
    };
    let status = CreditServiceClient::new(app.channel.clone()).adjust_credits(admin(take)).await.unwrap_err();
    assert_status(&status, Code::FailedPrecondition, "INSUFFICIENT_CREDITS");
    assert_eq!(reservations_out_of_line(&app).await, 0);

    // More than reserved, or a unit not reserved: refused, nothing charged.
    let status = capture(&app.channel, &held.hold_id, &[("", 31)], "").await.unwrap_err();
    assert_status(&status, Code::FailedPrecondition, "CAPTURE_EXCEEDS_HOLD");
    let status = capture(&app.channel, &held.hold_id, &[("tokens", 1)], "").await.unwrap_err();
    assert_status(&status, Code::FailedPrecondition, "CAPTURE_EXCEEDS_HOLD");
    assert_eq!(balances(&app.channel, &key.id).await, vec![(String::new(), 100), ("gpu".into(), 10)]);

    let request_id = uuid::Uuid::new_v4().to_string();
    let captured = capture(&app.channel, &held.hold_id, &[("", 20)], &request_id).await.unwrap();
    assert_eq!(state(&captured), v1::CreditHoldState::Captured);
    assert_eq!(captured.captured, amounts(&[("", 20), ("gpu", 0)]));
    assert_eq!(captured.settle_request_id, request_id);
    assert_eq!(balances(&app.channel, &key.id).await, vec![(String::new(), 80), ("gpu".into(), 10)]);
    // A retry answers the same; another capture or a release names the first.
    let again = capture(&app.channel, &held.hold_id, &[("", 20)], &request_id).await.unwrap();
    assert_eq!(again, captured);
    let status = capture(&app.channel, &held.hold_id, &[("", 1)], &uuid::Uuid::new_v4().to_string()).await.unwrap_err();
    assert_status(&status, Code::FailedPrecondition, "HOLD_SETTLED");
    assert!(status.message().contains(&request_id), "names the earlier capture: {}", status.message());
    let status = release(&app.channel, &held.hold_id, "").await.unwrap_err();
    assert_status(&status, Code::FailedPrecondition, "HOLD_SETTLED");
    assert_eq!(balances(&app.channel, &key.id).await, vec![(String::new(), 80), ("gpu".into(), 10)]);

    // The rest came back: all 80 can be held now, and a release gives all of it back.
    let second = hold(&app.client, &secret, &[("", 80)], Some(60), "").await.unwrap();
    assert_eq!(second.code(), v1::VerificationCode::Valid);
    let released = release(&app.channel, &second.hold_id, "").await.unwrap();
    assert_eq!(state(&released), v1::CreditHoldState::Released);
    assert!(released.captured.is_empty());
    assert_eq!(hold(&app.client, &secret, &[("", 80)], None, "").await.unwrap().code(), v1::VerificationCode::Valid);

    // One ledger entry per reserved unit of the capture, naming the hold; none for holds.
    let entries = assert_ledger_matches(&app.channel, &key.id).await;
    let captures: Vec<_> = entries.iter().filter(|entry| entry.reason == "capture").collect();
    assert_eq!(captures.len(), 2, "{entries:?}");
    assert!(captures.iter().all(|entry| entry.hold_id == held.hold_id && entry.request_id == request_id));
    assert_eq!(captures.iter().map(|entry| entry.delta).sum::<i64>(), -20);
    assert_eq!(entries.len(), 4, "two creations and the capture's two: {entries:?}");

    let all = holds_of(&app.channel, &key.id, false).await;
    assert_eq!(all.len(), 3);
    assert!(all.windows(2).all(|pair| pair[0].id > pair[1].id), "newest first");
    let live = holds_of(&app.channel, &key.id, true).await;
    assert_eq!(live.len(), 1);
    assert_eq!(reservations_out_of_line(&app).await, 0);
    app.stop().await;
}
both!(a_hold_reserves_and_its_capture_charges_what_it_names);

async fn a_retried_hold_is_the_same_hold(backend: Backend) {
    let app = spawn(backend).await;
    let (key, secret) = metered_key(&app, &[("", 10)]).await;
    let request_id = uuid::Uuid::new_v4().to_string();
    let first = hold(&app.client, &secret, &[("", 6)], None, &request_id).await.unwrap();
    let retry = hold(&app.client, &secret, &[("", 6)], None, &request_id).await.unwrap();
    assert_eq!((retry.code(), &retry.hold_id), (v1::VerificationCode::Valid, &first.hold_id));
    let other = hold(&app.client, &secret, &[("", 5)], None, &request_id).await.unwrap_err();
    assert_invalid(&other, "request_id");
    assert_eq!(holds_of(&app.channel, &key.id, false).await.len(), 1);
    assert_eq!(reservations_out_of_line(&app).await, 0);
    app.stop().await;
}
both!(a_retried_hold_is_the_same_hold);

async fn bad_holds_and_captures_are_refused_with_the_field_named(backend: Backend) {
    let app = spawn(backend).await;
    let (_, secret) = metered_key(&app, &[("", 10)]).await;
    let both_ways = v1::VerifyApiKeyRequest {
        key: secret.clone(),
        cost: amounts(&[("", 1)]),
        hold: amounts(&[("", 1)]),
        ..Default::default()
    };
    assert_invalid(&app.client.clone().verify_api_key(admin(both_ways)).await.unwrap_err(), "hold");
    for ttl in [0, 86_401] {
        assert_invalid(&hold(&app.client, &secret, &[("", 1)], Some(ttl), "").await.unwrap_err(), "hold_ttl");
    }
    assert_invalid(&hold(&app.client, &secret, &[("", 0)], None, "").await.unwrap_err(), "hold[0]");
    let (_, unmetered) = app.create_key("free", &[]).await;
    assert_invalid(&hold(&app.client, &unmetered, &[("", 1)], None, "").await.unwrap_err(), "hold");
    assert_invalid(&capture(&app.channel, "not-a-uuid", &[], "").await.unwrap_err(), "hold_id");
    let unknown = capture(&app.channel, &uuid::Uuid::new_v4().to_string(), &[], "").await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let held = hold(&app.client, &secret, &[("", 1)], None, "").await.unwrap();
    assert_invalid(&capture(&app.channel, &held.hold_id, &[("", -1)], "").await.unwrap_err(), "amounts[0]");
    assert_eq!(app.count_rows("credit_transactions WHERE reason = 'capture'").await, 0);
    app.stop().await;
}
both!(bad_holds_and_captures_are_refused_with_the_field_named);

/// Holds that outlive their ttl come back once each, however many replicas sweep: one
/// `hold_expired` ledger entry per unit and one `credits.hold_expired` event per hold.
async fn expired_holds_are_released_once(backend: Backend) {
    let sweep = |config: &mut keyward_server::Config| config.events.hold_sweep_interval = Duration::from_millis(50);
    let app = spawn_with(backend, sweep).await;
    let (key, secret) = metered_key(&app, &[("", 100), ("gpu", 100)]).await;
    let url = app.config.store.database_url();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // On PostgreSQL two more replicas sweep the same holds.
    let env = [("KEYWARD_HOLD_SWEEP_INTERVAL", "50ms")];
    let replicas = if backend == Backend::Postgres {
        vec![
            crate::helpers::Replica::start(&url, dirs.0.path(), &env).await.expect("first replica"),
            crate::helpers::Replica::start(&url, dirs.1.path(), &env).await.expect("second replica"),
        ]
    } else {
        Vec::new()
    };
    let mut ids = Vec::new();
    for _ in 0..20 {
        let held = hold(&app.client, &secret, &[("", 5), ("gpu", 1)], Some(1), "").await.unwrap();
        assert_eq!(held.code(), v1::VerificationCode::Valid);
        ids.push(held.hold_id);
    }
    assert_eq!(
        hold(&app.client, &secret, &[("", 1)], None, "").await.unwrap().code(),
        v1::VerificationCode::UsageExceeded
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !holds_of(&app.channel, &key.id, true).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "expired holds are released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let all = holds_of(&app.channel, &key.id, false).await;
    assert!(all.iter().all(|hold| state(hold) == v1::CreditHoldState::Expired), "{all:?}");
    let status = capture(&app.channel, &ids[0], &[("", 1)], "").await.unwrap_err();
    assert_status(&status, Code::FailedPrecondition, "HOLD_SETTLED");
    assert_eq!(balances(&app.channel, &key.id).await, vec![(String::new(), 100), ("gpu".into(), 100)]);
    let entries = assert_ledger_matches(&app.channel, &key.id).await;
    let expired: Vec<_> = entries.iter().filter(|entry| entry.reason == "hold_expired").collect();
    assert_eq!(expired.len(), 40, "one entry per unit of each hold, once");
    assert!(expired.iter().all(|entry| entry.delta == 0 && ids.contains(&entry.hold_id)));
    assert_eq!(app.count_rows("webhook_events WHERE event_type = 'credits.hold_expired'").await, 20);
    assert_eq!(app.count_rows("credit_holds WHERE state = 'expired' AND settled_at IS NOT NULL").await, 20);
    assert_eq!(hold(&app.client, &secret, &[("", 100)], None, "").await.unwrap().code(), v1::VerificationCode::Valid);
    assert_eq!(reservations_out_of_line(&app).await, 0);
    drop(replicas);
    app.stop().await;
}
both!(expired_holds_are_released_once);
