//! A pool's refill schedules and low-balance thresholds (UpdateOwnerCreditPool): read back
//! with GetOwnerCreditBalances, refilling the pool once per period however many replicas
//! sweep, and firing `credits.low` for the pool once per downward crossing by its keys.

use std::{sync::atomic::Ordering, time::Duration};

use keyward_proto::v1::{self, credit_service_client::CreditServiceClient};
use tonic::{Status, transport::Channel};

use super::{PAYER, adjust_pool, ledger_out_of_line, pool_balances, pool_ledger, pooled_key, spend};
use crate::{
    credits::amounts,
    helpers::{Backend, admin, assert_invalid, both, spawn, spawn_with},
};

/// A refill schedule of `unit` up to `amount`.
pub(crate) fn refill(unit: &str, amount: i64, period: v1::RefillPeriod) -> v1::CreditRefill {
    v1::CreditRefill { unit: unit.to_owned(), amount, period: period.into() }
}

/// The UpdateOwnerCreditPool request of `owner`'s pool in the default environment.
pub(crate) fn settings(
    owner: &str,
    refills: Vec<v1::CreditRefill>,
    thresholds: &[(&str, i64)],
) -> v1::UpdateOwnerCreditPoolRequest {
    v1::UpdateOwnerCreditPoolRequest {
        owner: owner.to_owned(),
        credit_refills: refills,
        credit_low_thresholds: amounts(thresholds),
        ..Default::default()
    }
}

/// UpdateOwnerCreditPool as admin.
pub(crate) async fn update_pool(
    channel: &Channel,
    request: v1::UpdateOwnerCreditPoolRequest,
) -> Result<v1::UpdateOwnerCreditPoolResponse, Status> {
    Ok(CreditServiceClient::new(channel.clone()).update_owner_credit_pool(admin(request)).await?.into_inner())
}

/// Everything GetOwnerCreditBalances answers of `owner`'s pool in the default environment.
pub(crate) async fn pool_state(channel: &Channel, owner: &str) -> v1::GetOwnerCreditBalancesResponse {
    let request = v1::GetOwnerCreditBalancesRequest { owner: owner.to_owned(), environment: String::new() };
    CreditServiceClient::new(channel.clone()).get_owner_credit_balances(admin(request)).await.unwrap().into_inner()
}

async fn a_pools_refills_and_thresholds_are_replaced_and_read_back(backend: Backend) {
    let app = spawn(backend).await;
    adjust_pool(&app.channel, PAYER, &[("", 10)], "").await.unwrap();
    let refills = vec![refill("gpu", 5, v1::RefillPeriod::Monthly), refill("", 50, v1::RefillPeriod::Daily)];
    let mut request = settings(PAYER, refills, &[("gpu", 2), ("", 5)]);
    request.request_id = uuid::Uuid::new_v4().to_string();
    let updated = update_pool(&app.channel, request.clone()).await.unwrap();
    let by_unit = vec![refill("", 50, v1::RefillPeriod::Daily), refill("gpu", 5, v1::RefillPeriod::Monthly)];
    assert_eq!(updated.credit_refills, by_unit, "ordered by unit");
    assert_eq!(updated.credit_low_thresholds, amounts(&[("", 5), ("gpu", 2)]));
    assert_eq!((updated.owner.as_str(), updated.balances.clone()), (PAYER, amounts(&[("", 10)])));
    let read = pool_state(&app.channel, PAYER).await;
    assert_eq!((read.credit_refills, read.credit_low_thresholds), (by_unit.clone(), updated.credit_low_thresholds));

    // A retry changes nothing twice, whatever it carries; a new request replaces both lists.
    let retry = v1::UpdateOwnerCreditPoolRequest { credit_refills: Vec::new(), ..request };
    assert_eq!(update_pool(&app.channel, retry).await.unwrap().credit_refills, by_unit);
    let cleared = update_pool(&app.channel, settings(PAYER, Vec::new(), &[("", 1)])).await.unwrap();
    assert!(cleared.credit_refills.is_empty());
    assert_eq!(cleared.credit_low_thresholds, amounts(&[("", 1)]));
    let untouched = pool_state(&app.channel, "pool-other").await;
    assert!(untouched.credit_refills.is_empty() && untouched.credit_low_thresholds.is_empty(), "pools are per owner");

    // Each change that went through wrote one audit row naming the pool, the retry none.
    let audited = "audit_events WHERE action = 'UpdateOwnerCreditPool' AND outcome = 'OK'";
    assert_eq!(app.count_rows(audited).await, 2);
    app.stop().await;
}
both!(a_pools_refills_and_thresholds_are_replaced_and_read_back);

async fn bad_pool_settings_are_invalid_and_change_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let good = settings(PAYER, vec![refill("", 50, v1::RefillPeriod::Daily)], &[("", 5)]);
    update_pool(&app.channel, good).await.unwrap();
    let before = pool_state(&app.channel, PAYER).await;
    let daily = || refill("", 10, v1::RefillPeriod::Daily);
    let cases = [
        (settings(PAYER, vec![daily(), daily()], &[]), "credit_refills[1].unit"),
        (settings(PAYER, Vec::new(), &[("gpu", 1), ("gpu", 2)]), "credit_low_thresholds[1].unit"),
        (settings(PAYER, Vec::new(), &[("", 0)]), "credit_low_thresholds[0]"),
        (settings(PAYER, vec![refill("", 0, v1::RefillPeriod::Daily)], &[]), "credit_refills[0]"),
        (settings(PAYER, vec![refill("", 1, v1::RefillPeriod::Unspecified)], &[]), "credit_refills[0].period"),
        (
            settings(PAYER, (0..101).map(|n| refill(&format!("u{n}"), 1, v1::RefillPeriod::Daily)).collect(), &[]),
            "credit_refills",
        ),
        (
            v1::UpdateOwnerCreditPoolRequest {
                credit_low_thresholds: (0..101)
                    .map(|n| v1::CreditAmount { unit: format!("u{n}"), amount: 1 })
                    .collect(),
                ..settings(PAYER, Vec::new(), &[])
            },
            "credit_low_thresholds",
        ),
        (
            v1::UpdateOwnerCreditPoolRequest { environment: "nowhere".into(), ..settings(PAYER, Vec::new(), &[]) },
            "environment",
        ),
        (settings("", Vec::new(), &[]), "owner"),
        (
            v1::UpdateOwnerCreditPoolRequest { request_id: "not-a-uuid".into(), ..settings(PAYER, Vec::new(), &[]) },
            "request_id",
        ),
    ];
    for (request, field) in cases {
        assert_invalid(&update_pool(&app.channel, request).await.unwrap_err(), field);
    }
    assert_eq!(pool_state(&app.channel, PAYER).await, before, "a refused update changes nothing");
    assert_eq!(app.count_rows("audit_events WHERE action = 'UpdateOwnerCreditPool' AND outcome = 'OK'").await, 1);
    app.stop().await;
}
both!(bad_pool_settings_are_invalid_and_change_nothing);

async fn a_pools_refill_applies_once_per_period_across_replicas(backend: Backend) {
    // Both replicas read one clock the test moves forward by whole days.
    let (clock, days) = crate::helpers::movable_clock(chrono::Duration::days(1));
    let app = spawn_with(backend, |config| {
        config.clock = clock.clone();
        config.refill_interval = Duration::from_millis(50);
    })
    .await;
    let second = keyward_server::start(app.config.clone()).await.expect("second replica starts");
    adjust_pool(&app.channel, PAYER, &[("", 10)], "").await.unwrap();
    update_pool(&app.channel, settings(PAYER, vec![refill("", 50, v1::RefillPeriod::Daily)], &[])).await.unwrap();
    let (_, secret) = pooled_key(&app, PAYER, "pooled-refilled").await;
    assert_eq!(spend(&app, &secret, &[("", 4)]).await.code(), v1::VerificationCode::Valid);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(pool_balances(&app.channel, PAYER).await, vec![(String::new(), 6)], "no refill before the period ends");

    for day in 1..=2 {
        days.store(day, Ordering::SeqCst);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while pool_balances(&app.channel, PAYER).await != vec![(String::new(), 50)] {
            assert!(std::time::Instant::now() < deadline, "the pool's refill of day {day} applied");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Give both replicas many more sweeps: none may apply the period again.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let refills: Vec<_> =
            pool_ledger(&app.channel, PAYER).await.into_iter().filter(|e| e.reason == "refill").collect();
        assert_eq!(refills.len(), usize::try_from(day).unwrap(), "one refill per period across both replicas");
        let last = refills.last().unwrap();
        assert_eq!((last.actor.as_str(), last.spent_by_api_key_id.as_str()), ("keyward", ""), "no key spent it");
        assert_eq!(spend(&app, &secret, &[("", 1)]).await.code(), v1::VerificationCode::Valid);
    }
    assert_eq!(ledger_out_of_line(&app).await, 0);
    second.stop().await.unwrap();
    app.stop().await;
}
both!(a_pools_refill_applies_once_per_period_across_replicas);

async fn a_pooled_keys_spending_fires_credits_low_for_the_pool_once_per_crossing(backend: Backend) {
    let app = spawn(backend).await;
    adjust_pool(&app.channel, PAYER, &[("", 10)], "").await.unwrap();
    // Set while the balance is over it: armed at once.
    update_pool(&app.channel, settings(PAYER, Vec::new(), &[("", 5)])).await.unwrap();
    let (_, first) = pooled_key(&app, PAYER, "pooled-low-a").await;
    let (_, second) = pooled_key(&app, PAYER, "pooled-low-b").await;
    let low = format!(
        "webhook_events WHERE event_type = 'credits.low' AND payload LIKE '%\"ownerPool\"%' \
         AND payload LIKE '%\"owner\":\"{PAYER}\"%' AND payload LIKE '%\"threshold\":\"5\"%'"
    );
    assert_eq!(spend(&app, &first, &[("", 3)]).await.code(), v1::VerificationCode::Valid);
    assert_eq!(app.count_rows(&low).await, 0, "7 is not below 5");
    assert_eq!(spend(&app, &second, &[("", 3)]).await.code(), v1::VerificationCode::Valid);
    assert_eq!(app.count_rows(&low).await, 1, "10 -> 4 crossed it");
    assert_eq!(spend(&app, &first, &[("", 1)]).await.code(), v1::VerificationCode::Valid);
    assert_eq!(app.count_rows(&low).await, 1, "still below: no second event");
    // Lifted back over it, the alert re-arms and the next crossing fires again.
    adjust_pool(&app.channel, PAYER, &[("", 10)], "").await.unwrap();
    assert_eq!(spend(&app, &second, &[("", 10)]).await.code(), v1::VerificationCode::Valid);
    assert_eq!(app.count_rows(&low).await, 2);
    assert_eq!(app.count_rows("webhook_events WHERE event_type = 'credits.low'").await, 2, "none of a key");
    app.stop().await;
}
both!(a_pooled_keys_spending_fires_credits_low_for_the_pool_once_per_crossing);
