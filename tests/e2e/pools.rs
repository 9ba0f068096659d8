//! Owners' credit pools: AdjustOwnerCredits and GetOwnerCreditBalances, keys whose
//! credit_source is CREDIT_SOURCE_OWNER charging and holding from their owner's pool in
//! their environment, and the pool's ledger entries naming the key that spent. Its refills,
//! thresholds and ledger listing are in `pools/`.

mod ledger;
mod settings;

use keyward_proto::v1::{self, credit_service_client::CreditServiceClient};
use tonic::{Code, Status, transport::Channel};

pub(crate) use ledger::pool_ledger;
pub(crate) use settings::{pool_state, refill, settings};

use crate::{
    credits::{amounts, balances},
    helpers::{Backend, TestApp, admin, assert_invalid, assert_status, both, spawn},
    holds::{capture, hold, reservations_out_of_line},
};

/// The owner whose pool these tests fill.
pub(crate) const PAYER: &str = "pool-payer";

fn pairs(amounts: &[v1::CreditAmount]) -> Vec<(String, i64)> {
    amounts.iter().map(|amount| (amount.unit.clone(), amount.amount)).collect()
}

/// AdjustOwnerCredits of `owner`'s pool in the default environment, as admin.
pub(crate) async fn adjust_pool(
    channel: &Channel,
    owner: &str,
    deltas: &[(&str, i64)],
    request_id: &str,
) -> Result<Vec<(String, i64)>, Status> {
    let request = v1::AdjustOwnerCreditsRequest {
        owner: owner.to_owned(),
        deltas: deltas
            .iter()
            .map(|(unit, delta)| v1::CreditDelta { unit: (*unit).to_owned(), delta: *delta })
            .collect(),
        request_id: request_id.to_owned(),
        ..Default::default()
    };
    let answer = CreditServiceClient::new(channel.clone()).adjust_owner_credits(admin(request)).await?;
    Ok(pairs(&answer.into_inner().balances))
}

/// GetOwnerCreditBalances of `owner`'s pool in the default environment, as admin.
pub(crate) async fn pool_balances(channel: &Channel, owner: &str) -> Vec<(String, i64)> {
    let request = v1::GetOwnerCreditBalancesRequest { owner: owner.to_owned(), environment: String::new() };
    let answer = CreditServiceClient::new(channel.clone()).get_owner_credit_balances(admin(request)).await.unwrap();
    pairs(&answer.into_inner().balances)
}

/// A usage-limited key of `owner` drawing on its owner's pool; returns it and its secret.
pub(crate) async fn pooled_key(app: &TestApp, owner: &str, name: &str) -> (v1::ApiKey, String) {
    let request = v1::CreateApiKeyRequest {
        api_key: Some(v1::ApiKey {
            name: name.to_owned(),
            owner: owner.to_owned(),
            usage_limited: true,
            credit_source: v1::CreditSource::Owner.into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = app.client.clone().create_api_key(admin(request)).await.expect("create").into_inner();
    (created.api_key.expect("key"), created.secret)
}

/// Verifies `secret` with a cost of `cost`, as admin.
pub(crate) async fn spend(app: &TestApp, secret: &str, cost: &[(&str, i64)]) -> v1::VerifyApiKeyResponse {
    let request = v1::VerifyApiKeyRequest { key: secret.to_owned(), cost: amounts(cost), ..Default::default() };
    app.client.clone().verify_api_key(admin(request)).await.expect("verify").into_inner()
}

/// Balances (of keys and of pools) that their ledger entries do not sum to, and ledger
/// entries whose running balance does not follow their deltas. Always 0.
pub(crate) async fn ledger_out_of_line(app: &TestApp) -> i64 {
    app.count_rows(
        "credit_balances b WHERE b.balance <> \
         (SELECT COALESCE(SUM(t.delta), 0) FROM credit_transactions t WHERE t.key_id = b.key_id AND t.unit = b.unit)",
    )
    .await
        + app
            .count_rows(
                "credit_transactions t WHERE t.balance_after <> (SELECT SUM(u.delta) FROM credit_transactions u \
                 WHERE u.key_id = t.key_id AND u.unit = t.unit AND u.id <= t.id)",
            )
            .await
}

/// Ledger entries of pools whose spender is the key named `name`.
pub(crate) async fn pool_entries_spent_by(app: &TestApp, name: &str) -> i64 {
    app.count_rows(&format!(
        "credit_transactions t JOIN owner_credit_pools p ON p.id = t.key_id JOIN api_keys k ON k.id = t.spent_by \
         WHERE k.name = '{name}'"
    ))
    .await
}

async fn a_pool_is_adjusted_and_read_once_per_request_id(backend: Backend) {
    let app = spawn(backend).await;
    assert!(pool_balances(&app.channel, PAYER).await.is_empty(), "a pool never credited holds nothing");
    let request_id = uuid::Uuid::new_v4().to_string();
    let first = adjust_pool(&app.channel, PAYER, &[("", 100), ("gpu", 5)], &request_id).await.unwrap();
    assert_eq!(first, vec![(String::new(), 100), ("gpu".into(), 5)]);
    let again = adjust_pool(&app.channel, PAYER, &[("", 100), ("gpu", 5)], &request_id).await.unwrap();
    assert_eq!(again, first, "a retry applies nothing twice");
    assert_eq!(pool_balances(&app.channel, PAYER).await, first);
    // Another request for the same id is refused, not applied.
    let reused = adjust_pool(&app.channel, "someone-else", &[("", 1)], &request_id).await.unwrap_err();
    assert_invalid(&reused, "request_id");
    assert!(
        reused.message().contains("AdjustOwnerCredits of owner credit pool "),
        "names what the request id was used for: {}",
        reused.message()
    );

    let below = adjust_pool(&app.channel, PAYER, &[("", -101), ("gpu", 1)], "").await.unwrap_err();
    assert_status(&below, Code::FailedPrecondition, "INSUFFICIENT_CREDITS");
    assert_eq!(pool_balances(&app.channel, PAYER).await, first, "all units change together or none does");
    assert_eq!(
        adjust_pool(&app.channel, PAYER, &[("gpu", -5)], "").await.unwrap(),
        vec![(String::new(), 100), ("gpu".into(), 0)]
    );
    assert!(pool_balances(&app.channel, "someone-else").await.is_empty(), "pools are per owner");

    let no_owner = adjust_pool(&app.channel, "", &[("", 1)], "").await.unwrap_err();
    assert_invalid(&no_owner, "owner");
    assert_invalid(&adjust_pool(&app.channel, PAYER, &[], "").await.unwrap_err(), "deltas");
    assert_invalid(&adjust_pool(&app.channel, PAYER, &[("", 0)], "").await.unwrap_err(), "deltas[0]");
    let request = v1::GetOwnerCreditBalancesRequest { owner: PAYER.into(), environment: "nowhere".into() };
    let unknown = CreditServiceClient::new(app.channel.clone()).get_owner_credit_balances(admin(request)).await;
    assert_invalid(&unknown.unwrap_err(), "environment");
    assert_eq!(ledger_out_of_line(&app).await, 0);
    app.stop().await;
}
both!(a_pool_is_adjusted_and_read_once_per_request_id);

async fn a_pooled_key_charges_its_owners_pool(backend: Backend) {
    let app = spawn(backend).await;
    adjust_pool(&app.channel, PAYER, &[("", 10)], "").await.unwrap();
    let (key, secret) = pooled_key(&app, PAYER, "pooled-a").await;
    assert_eq!(key.credit_source(), v1::CreditSource::Owner);

    let charged = spend(&app, &secret, &[("", 3)]).await;
    assert_eq!(charged.code(), v1::VerificationCode::Valid);
    assert_eq!(pairs(&charged.remaining_credits), vec![(String::new(), 7)], "what the pool has left");
    assert_eq!(pool_balances(&app.channel, PAYER).await, vec![(String::new(), 7)]);
    assert!(balances(&app.channel, &key.id).await.is_empty(), "the key's own balances are not touched");
    let over = spend(&app, &secret, &[("", 8)]).await;
    assert_eq!(over.code(), v1::VerificationCode::UsageExceeded);
    assert_eq!(pool_balances(&app.channel, PAYER).await, vec![(String::new(), 7)], "a refusal charges nothing");

    // A key of the same owner spending its own credits leaves the pool alone, until it is
    // moved onto the pool.
    let request = v1::CreateApiKeyRequest {
        api_key: Some(v1::ApiKey {
            name: "own-credits".into(),
            owner: PAYER.into(),
            usage_limited: true,
            credits: amounts(&[("", 5)]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let created = app.client.clone().create_api_key(admin(request)).await.unwrap().into_inner();
    let own = created.api_key.unwrap();
    assert_eq!(spend(&app, &created.secret, &[("", 2)]).await.code(), v1::VerificationCode::Valid);
    assert_eq!(balances(&app.channel, &own.id).await, vec![(String::new(), 3)]);
    assert_eq!(pool_balances(&app.channel, PAYER).await, vec![(String::new(), 7)]);
    let moved = v1::UpdateApiKeyRequest {
        api_key: Some(v1::ApiKey {
            id: own.id.clone(),
            credit_source: v1::CreditSource::Owner.into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["credit_source".into()] }),
        ..Default::default()
    };
    let updated = app.client.clone().update_api_key(admin(moved)).await.unwrap().into_inner();
    assert_eq!(updated.api_key.unwrap().credit_source(), v1::CreditSource::Owner);
    assert_eq!(spend(&app, &created.secret, &[("", 7)]).await.code(), v1::VerificationCode::Valid);
    assert_eq!(pool_balances(&app.channel, PAYER).await, vec![(String::new(), 0)]);
    assert_eq!(balances(&app.channel, &own.id).await, vec![(String::new(), 3)]);
    assert_eq!(spend(&app, &secret, &[("", 1)]).await.code(), v1::VerificationCode::UsageExceeded, "the pool is empty");

    // A pool is per environment: another owner's pool, or none, is not this one.
    let (_, stranger) = pooled_key(&app, "pool-stranger", "pooled-stranger").await;
    assert_eq!(spend(&app, &stranger, &[("", 1)]).await.code(), v1::VerificationCode::UsageExceeded);

    // The pool reaching 0 wrote one credits.exhausted, naming the pool; the refusals after it none.
    let exhausted = "webhook_events WHERE event_type = 'credits.exhausted' AND payload LIKE '%\"ownerPool\"%'";
    assert_eq!(app.count_rows(exhausted).await, 1);
    assert_eq!(pool_entries_spent_by(&app, "pooled-a").await, 1, "the pool's entry names the key that spent");
    assert_eq!(pool_entries_spent_by(&app, "own-credits").await, 1);
    assert_eq!(ledger_out_of_line(&app).await, 0);
    app.stop().await;
}
both!(a_pooled_key_charges_its_owners_pool);

async fn a_pooled_hold_reserves_from_the_pool_and_its_capture_charges_it(backend: Backend) {
    let app = spawn(backend).await;
    adjust_pool(&app.channel, PAYER, &[("", 50)], "").await.unwrap();
    let (_, first) = pooled_key(&app, PAYER, "pooled-holder").await;
    let (_, second) = pooled_key(&app, PAYER, "pooled-sibling").await;

    let held = hold(&app.client, &first, &[("", 30)], None, "").await.unwrap();
    assert_eq!(held.code(), v1::VerificationCode::Valid);
    // Reserved, not charged: the pool's balance stands, what its siblings may use shrinks.
    assert_eq!(pool_balances(&app.channel, PAYER).await, vec![(String::new(), 50)]);
    let over = hold(&app.client, &second, &[("", 21)], None, "").await.unwrap();
    assert_eq!(over.code(), v1::VerificationCode::UsageExceeded);
    assert_eq!(spend(&app, &second, &[("", 21)]).await.code(), v1::VerificationCode::UsageExceeded);
    assert_eq!(spend(&app, &second, &[("", 20)]).await.code(), v1::VerificationCode::Valid);
    // Nor may an adjustment take away what the hold reserves.
    let below = adjust_pool(&app.channel, PAYER, &[("", -1)], "").await.unwrap_err();
    assert_status(&below, Code::FailedPrecondition, "INSUFFICIENT_CREDITS");
    assert_eq!(reservations_out_of_line(&app).await, 0);

    let captured = capture(&app.channel, &held.hold_id, &[("", 10)], "").await.unwrap();
    assert_eq!(pairs(&captured.captured), vec![(String::new(), 10)]);
    assert_eq!(pool_balances(&app.channel, PAYER).await, vec![(String::new(), 20)], "50 - 20 charged - 10 captured");
    assert_eq!(spend(&app, &second, &[("", 20)]).await.code(), v1::VerificationCode::Valid, "the rest was released");
    assert_eq!(pool_entries_spent_by(&app, "pooled-holder").await, 1, "the capture names the key that held");
    assert_eq!(reservations_out_of_line(&app).await, 0);
    assert_eq!(ledger_out_of_line(&app).await, 0);
    app.stop().await;
}
both!(a_pooled_hold_reserves_from_the_pool_and_its_capture_charges_it);
