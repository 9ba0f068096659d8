//! Sibling keys racing on one owner's pool: concurrent charges and holds from two pooled
//! keys (across two replicas on PostgreSQL) never take more than the pool holds, and the
//! pool's ledger sums to its balance.

use std::sync::Arc;

use futures::future::join_all;
use keyward_proto::v1::{self, api_key_service_client::ApiKeyServiceClient};
use tonic::transport::Channel;

use crate::{
    credits::amounts,
    helpers::{Backend, Replica, admin, both, spawn},
    holds::{hold, reservations_out_of_line},
    pools::{PAYER, adjust_pool, ledger_out_of_line, pool_balances, pool_entries_spent_by, pooled_key},
};

async fn siblings_racing_on_one_pool_never_overdraw(backend: Backend) {
    let app = Arc::new(spawn(backend).await);
    let url = app.config.store.database_url();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let replicas = if backend == Backend::Postgres {
        vec![
            Replica::start(&url, dirs.0.path(), &[]).await.expect("first replica"),
            Replica::start(&url, dirs.1.path(), &[]).await.expect("second replica"),
        ]
    } else {
        Vec::new()
    };
    let channels: Vec<Channel> = if replicas.is_empty() {
        vec![app.channel.clone()]
    } else {
        replicas.iter().map(|replica| replica.channel.clone()).collect()
    };
    let clients: Vec<ApiKeyServiceClient<Channel>> = channels.iter().cloned().map(ApiKeyServiceClient::new).collect();
    adjust_pool(&app.channel, PAYER, &[("", 100)], "").await.unwrap();
    let secrets = [pooled_key(&app, PAYER, "sibling-a").await.1, pooled_key(&app, PAYER, "sibling-b").await.1];

    // 160 charges of 1 (half with request ids) and 40 holds of 1, from both siblings on
    // both replicas, on a pool of 100: exactly 100 go through.
    let charges = join_all((0..160).map(|n| {
        let request_id = if n % 2 == 0 { uuid::Uuid::new_v4().to_string() } else { String::new() };
        let request = v1::VerifyApiKeyRequest {
            key: secrets[n % 2].clone(),
            cost: amounts(&[("", 1)]),
            request_id,
            ..Default::default()
        };
        let mut client = clients[(n / 2) % clients.len()].clone();
        async move { client.verify_api_key(admin(request)).await.unwrap().into_inner() }
    }));
    let holds = join_all((0..40).map(|n| hold(&clients[n % clients.len()], &secrets[n % 2], &[("", 1)], None, "")));
    let (charges, holds) = tokio::join!(charges, holds);
    let charged = charges.iter().filter(|answer| answer.code() == v1::VerificationCode::Valid).count();
    let held = holds.into_iter().map(Result::unwrap).filter(|a| a.code() == v1::VerificationCode::Valid).count();
    assert_eq!(charged + held, 100, "{charged} charged and {held} held of a pool of 100");
    for answer in &charges {
        let code = answer.code();
        assert!(matches!(code, v1::VerificationCode::Valid | v1::VerificationCode::UsageExceeded), "{code:?}");
    }

    let balance = 100 - i64::try_from(charged).unwrap();
    assert_eq!(pool_balances(&app.channel, PAYER).await, vec![(String::new(), balance)]);
    let spent = pool_entries_spent_by(&app, "sibling-a").await + pool_entries_spent_by(&app, "sibling-b").await;
    assert_eq!(spent, i64::try_from(charged).unwrap(), "one pool entry per charge, naming its key");
    assert_eq!(reservations_out_of_line(&app).await, 0);
    assert_eq!(ledger_out_of_line(&app).await, 0);
    drop(replicas);
    Arc::into_inner(app).expect("no task holds the app").stop().await;
}
both!(siblings_racing_on_one_pool_never_overdraw);
