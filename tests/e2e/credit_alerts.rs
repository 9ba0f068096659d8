//! Balance alerts: `credits.low` once per downward crossing of a key's threshold, re-armed
//! when the balance rises back, and `credits.exhausted` once when a balance reaches 0 —
//! written in the transaction of the change (so a refused change writes none), however
//! many charges race, and verified on arrival by the Standard Webhooks reference library.

use std::{sync::atomic::Ordering, time::Duration};

use futures::future::join_all;
use keyward_proto::v1::{
    self, api_key_service_client::ApiKeyServiceClient, credit_service_client::CreditServiceClient,
};
use serde_json::Value;
use tonic::{Code, transport::Channel};

use crate::{
    events::{ALL_TYPES, fast, subscribe},
    helpers::{Backend, Replica, TestApp, admin, assert_invalid, both, spawn, spawn_with, with_key},
    receiver::{Receiver, types},
    webhooks::{create, endpoint},
};

fn amounts(pairs: &[(&str, i64)]) -> Vec<v1::CreditAmount> {
    pairs.iter().map(|(unit, amount)| v1::CreditAmount { unit: (*unit).to_owned(), amount: *amount }).collect()
}

fn metered(credits: &[(&str, i64)], thresholds: &[(&str, i64)]) -> v1::CreateApiKeyRequest {
    v1::CreateApiKeyRequest {
        api_key: Some(v1::ApiKey {
            name: "alerted".into(),
            owner: "payer".into(),
            usage_limited: true,
            credits: amounts(credits),
            credit_low_thresholds: amounts(thresholds),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `count` concurrent verifications of `secret` costing 1 each; returns how many were charged.
async fn charge_all(client: &ApiKeyServiceClient<Channel>, secret: &str, count: usize) -> usize {
    let answers = join_all((0..count).map(|_| {
        let request =
            v1::VerifyApiKeyRequest { key: secret.to_owned(), cost: amounts(&[("", 1)]), ..Default::default() };
        let mut client = client.clone();
        async move { client.verify_api_key(admin(request)).await.expect("verify").into_inner() }
    }))
    .await;
    answers.iter().filter(|answer| answer.code() == v1::VerificationCode::Valid).count()
}

async fn adjust(app: &TestApp, id: &str, deltas: &[(&str, i64)]) -> Result<(), tonic::Status> {
    let deltas =
        deltas.iter().map(|(unit, delta)| v1::CreditDelta { unit: (*unit).to_owned(), delta: *delta }).collect();
    let request = v1::AdjustCreditsRequest { api_key_id: id.to_owned(), deltas, ..Default::default() };
    CreditServiceClient::new(app.channel.clone()).adjust_credits(admin(request)).await.map(drop)
}

/// The verified deliveries of balance events, in the order of their events.
async fn alerts(receiver: &Receiver, total: usize) -> Vec<Value> {
    let mut deliveries = receiver.wait_for(total).await;
    assert!(receiver.invalid().is_empty(), "{:?}", receiver.invalid());
    deliveries.sort_by_key(|delivery| delivery["id"].as_str().unwrap().to_owned());
    deliveries.retain(|delivery| delivery["payload"]["type"].as_str().unwrap().starts_with("credits."));
    deliveries
}

async fn balance_events(app: &TestApp) -> i64 {
    app.count_rows("webhook_events WHERE event_type LIKE 'credits.%'").await
}

both!(credits_low_fires_once_per_crossing_and_exhausted_once);
async fn credits_low_fires_once_per_crossing_and_exhausted_once(backend: Backend) {
    let app = spawn_with(backend, fast).await;
    let receiver = Receiver::start().await;
    subscribe(&app, &receiver).await;
    let created =
        app.client.clone().create_api_key(admin(metered(&[("", 250), ("gold", 10)], &[("", 100), ("gold", 5)]))).await;
    let created = created.unwrap().into_inner();
    let key = created.api_key.unwrap();
    let shown = app.client.clone().get_api_key(admin(v1::GetApiKeyRequest { id: key.id.clone() })).await.unwrap();
    assert_eq!(shown.into_inner().api_key.unwrap().credit_low_thresholds, amounts(&[("", 100), ("gold", 5)]));

    // 200 racing charges take 250 to 50: one crossing of 100, one event.
    assert_eq!(charge_all(&app.client, &created.secret, 200).await, 200);
    let deliveries = alerts(&receiver, 2).await;
    assert_eq!(types(&deliveries), ["credits.low"]);
    let data = &deliveries[0]["payload"]["data"];
    assert_eq!(data["apiKey"]["id"], key.id.as_str());
    assert_eq!(data["apiKey"]["mask"], key.mask.as_str());
    assert_eq!(data["unit"], "");
    assert_eq!(data["threshold"], "100");
    let balance: i64 = data["balance"].as_str().unwrap().parse().unwrap();
    assert!((50..100).contains(&balance), "balance {balance} at the crossing");
    assert!(!deliveries[0]["payload"].to_string().contains(&created.secret));

    // Lifted to 150 the alert re-arms (an adjustment writes no event of its own); the
    // next crossing fires it again, and 200 charges against 150 exhaust it once.
    adjust(&app, &key.id, &[("", 100)]).await.unwrap();
    assert_eq!(balance_events(&app).await, 1);
    assert_eq!(charge_all(&app.client, &created.secret, 200).await, 150);
    let deliveries = alerts(&receiver, 4).await;
    assert_eq!(types(&deliveries), ["credits.low", "credits.low", "credits.exhausted"]);
    let exhausted = &deliveries[2]["payload"]["data"];
    assert_eq!((exhausted["unit"].as_str(), exhausted["balance"].as_str()), (Some(""), Some("0")));
    assert_eq!(exhausted.get("threshold"), None);

    // Refused changes roll back and write nothing: taking gold below its threshold in the
    // same adjustment as an overdraft, and charges of an exhausted balance.
    let refused = adjust(&app, &key.id, &[("gold", -8), ("", -1)]).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(charge_all(&app.client, &created.secret, 20).await, 0);
    assert_eq!(balance_events(&app).await, 3);
    // The same gold change alone commits, and crosses.
    adjust(&app, &key.id, &[("gold", -8)]).await.unwrap();
    let deliveries = alerts(&receiver, 5).await;
    assert_eq!(types(&deliveries).last().map(String::as_str), Some("credits.low"));
    assert_eq!(deliveries.last().unwrap()["payload"]["data"]["unit"], "gold");
    assert_eq!(deliveries.last().unwrap()["payload"]["data"]["balance"], "2");
    assert_eq!(balance_events(&app).await, 4);
    app.stop().await;
}

both!(bad_thresholds_and_callers_without_the_right_are_refused);
async fn bad_thresholds_and_callers_without_the_right_are_refused(backend: Backend) {
    let app = spawn(backend).await;
    let mut client = app.client.clone();
    let field = "api_key.credit_low_thresholds";
    for (thresholds, violation) in [
        (vec![("", 0)], format!("{field}[0]")),
        (vec![("", -5)], format!("{field}[0]")),
        (vec![("has space", 5)], format!("{field}[0].unit")),
        (vec![("gold", 5), ("gold", 6)], format!("{field}[1].unit")),
    ] {
        let refused = client.create_api_key(admin(metered(&[("", 10)], &thresholds))).await.unwrap_err();
        assert_invalid(&refused, &violation);
    }
    let units: Vec<String> = (0..101).map(|n| format!("u{n}")).collect();
    let many: Vec<(&str, i64)> = units.iter().map(|unit| (unit.as_str(), 1)).collect();
    assert_invalid(&client.create_api_key(admin(metered(&[], &many))).await.unwrap_err(), field);

    let key = client.create_api_key(admin(metered(&[("", 10)], &[]))).await.unwrap().into_inner().api_key.unwrap();
    let update = |thresholds: &[(&str, i64)]| v1::UpdateApiKeyRequest {
        api_key: Some(v1::ApiKey {
            id: key.id.clone(),
            credit_low_thresholds: amounts(thresholds),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["credit_low_thresholds".into()] }),
        ..Default::default()
    };
    assert_invalid(&client.update_api_key(admin(update(&[("", 0)]))).await.unwrap_err(), &format!("{field}[0]"));

    // keys:write may create and update keys, but thresholds are set like credits: admin.
    let (_, writer) = app.create_key("payer", &["keys:write"]).await;
    let refused = client.create_api_key(with_key(&writer, metered(&[], &[("", 5)]))).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let refused = client.update_api_key(with_key(&writer, update(&[("", 5)]))).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");

    // Admin sets them; an update replaces them all, and whoever reads the key sees them.
    client.update_api_key(admin(update(&[("", 5)]))).await.unwrap();
    client.update_api_key(admin(update(&[("gold", 7)]))).await.unwrap();
    let (_, reader) = app.create_key("payer", &["keys:read"]).await;
    let shown = client.get_api_key(with_key(&reader, v1::GetApiKeyRequest { id: key.id.clone() })).await.unwrap();
    assert_eq!(shown.into_inner().api_key.unwrap().credit_low_thresholds, amounts(&[("gold", 7)]));
    app.stop().await;
}

const REPLICA_ENV: [(&str, &str); 2] =
    [("KEYWARD_WEBHOOK_ALLOW_HTTP", "true"), ("KEYWARD_WEBHOOK_POLL_INTERVAL", "50ms")];

/// Two processes charging one key on PostgreSQL, each batching its own charges: the
/// crossing and the exhaustion are each written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_cross_a_threshold_once_on_postgres() {
    let app = spawn_with(Backend::Postgres, fast).await;
    let url = app.config.store.database_url();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = Replica::start(&url, dirs.0.path(), &REPLICA_ENV).await.expect("first replica starts");
    let second = Replica::start(&url, dirs.1.path(), &REPLICA_ENV).await.expect("second replica starts");
    let receiver = Receiver::start().await;
    let created = v1::webhook_service_client::WebhookServiceClient::new(app.channel.clone())
        .create_webhook_endpoint(admin(create(endpoint(&receiver.url(), &ALL_TYPES[7..]))))
        .await
        .unwrap()
        .into_inner();
    receiver.trust(&created.secret);
    let key = app.client.clone().create_api_key(admin(metered(&[("", 150)], &[("", 100)]))).await.unwrap();
    let secret = key.into_inner().secret;
    let (charged_first, charged_second) =
        tokio::join!(charge_all(&first.client, &secret, 100), charge_all(&second.client, &secret, 100));
    assert_eq!(charged_first + charged_second, 150);
    let deliveries = alerts(&receiver, 2).await;
    assert_eq!(types(&deliveries), ["credits.low", "credits.exhausted"]);
    assert_eq!(balance_events(&app).await, 2);
    drop((first, second));
    app.stop().await;
}

both!(a_refill_rearms_both_alerts);
async fn a_refill_rearms_both_alerts(backend: Backend) {
    // The test moves the clock a day forward to make the refill due (so it counts the
    // events in the outbox: receivers refuse a webhook-timestamp a day off).
    let (clock, days) = crate::helpers::movable_clock(chrono::Duration::days(1));
    let app = spawn_with(backend, |config| {
        config.clock = clock.clone();
        config.refill_interval = Duration::from_millis(50);
    })
    .await;
    let mut request = metered(&[("", 10)], &[("", 5)]);
    if let Some(key) = request.api_key.as_mut() {
        key.credit_refills =
            vec![v1::CreditRefill { unit: String::new(), amount: 20, period: v1::RefillPeriod::Daily.into() }];
    }
    let created = app.client.clone().create_api_key(admin(request)).await.unwrap().into_inner();
    assert_eq!(charge_all(&app.client, &created.secret, 10).await, 10);
    assert_eq!(balance_events(&app).await, 2, "one credits.low and one credits.exhausted");

    days.store(1, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let id = created.api_key.unwrap().id;
    let mut credits = CreditServiceClient::new(app.channel.clone());
    loop {
        let request = admin(v1::GetCreditBalancesRequest { api_key_id: id.clone() });
        if credits.get_credit_balances(request).await.unwrap().into_inner().balances == amounts(&[("", 20)]) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the refill applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(balance_events(&app).await, 2, "a refill writes no alert");
    assert_eq!(charge_all(&app.client, &created.secret, 20).await, 20);
    assert_eq!(balance_events(&app).await, 4, "re-armed by the refill, both fire again");
    app.stop().await;
}
