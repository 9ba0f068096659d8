//! ListOwnerCreditTransactions: a pool's ledger, oldest first, in pages, each entry naming
//! the key that spent.

use keyward_proto::v1::{self, credit_service_client::CreditServiceClient};
use tonic::transport::Channel;

use super::{PAYER, adjust_pool, pooled_key, spend};
use crate::{
    credits::ledger,
    helpers::{Backend, admin, assert_invalid, both, spawn},
};

/// Every ledger entry of `owner`'s pool in the default environment, read in pages of 2.
pub(crate) async fn pool_ledger(channel: &Channel, owner: &str) -> Vec<v1::CreditTransaction> {
    let mut client = CreditServiceClient::new(channel.clone());
    let (mut entries, mut page_token) = (Vec::new(), String::new());
    loop {
        let request = v1::ListOwnerCreditTransactionsRequest {
            owner: owner.to_owned(),
            page_size: 2,
            page_token,
            ..Default::default()
        };
        let page = client.list_owner_credit_transactions(admin(request)).await.unwrap().into_inner();
        assert!(page.transactions.len() <= 2);
        entries.extend(page.transactions);
        if page.next_page_token.is_empty() {
            return entries;
        }
        page_token = page.next_page_token;
    }
}

async fn a_pools_ledger_pages_oldest_first_naming_the_key_that_spent(backend: Backend) {
    let app = spawn(backend).await;
    adjust_pool(&app.channel, PAYER, &[("", 100)], "").await.unwrap();
    let (first, first_secret) = pooled_key(&app, PAYER, "pooled-ledger-a").await;
    let (second, second_secret) = pooled_key(&app, PAYER, "pooled-ledger-b").await;
    for round in 0..3 {
        assert_eq!(spend(&app, &first_secret, &[("", round + 1)]).await.code(), v1::VerificationCode::Valid);
        assert_eq!(spend(&app, &second_secret, &[("", 10)]).await.code(), v1::VerificationCode::Valid);
    }
    let entries = pool_ledger(&app.channel, PAYER).await;
    assert_eq!(entries.len(), 7, "{entries:?}");
    assert!(entries.windows(2).all(|pair| pair[0].id < pair[1].id), "oldest first");
    let pool = &entries[0].api_key_id;
    assert!(entries.iter().all(|entry| &entry.api_key_id == pool), "every entry names the pool");
    assert!(*pool != first.id && *pool != second.id);
    assert_eq!((entries[0].reason.as_str(), entries[0].spent_by_api_key_id.as_str()), ("adjust", ""));
    let spenders: Vec<(&str, i64, i64)> = entries[1..]
        .iter()
        .map(|entry| (entry.spent_by_api_key_id.as_str(), entry.delta, entry.balance_after))
        .collect();
    let (a, b) = (first.id.as_str(), second.id.as_str());
    assert_eq!(spenders, [(a, -1, 99), (b, -10, 89), (a, -2, 87), (b, -10, 77), (a, -3, 74), (b, -10, 64)]);
    assert!(entries[1..].iter().all(|entry| entry.reason == "verify"));
    assert!(ledger(&app.channel, &first.id).await.is_empty(), "a pooled key's own ledger holds none of it");

    // A time window; another owner's pool is empty; bad input is refused.
    let mut client = CreditServiceClient::new(app.channel.clone());
    let before = v1::ListOwnerCreditTransactionsRequest {
        owner: PAYER.into(),
        end_time: entries[0].create_time,
        ..Default::default()
    };
    assert!(client.list_owner_credit_transactions(admin(before)).await.unwrap().into_inner().transactions.is_empty());
    let since = v1::ListOwnerCreditTransactionsRequest {
        owner: PAYER.into(),
        start_time: entries[0].create_time,
        ..Default::default()
    };
    assert_eq!(client.list_owner_credit_transactions(admin(since)).await.unwrap().into_inner().transactions, entries);
    assert!(pool_ledger(&app.channel, "pool-other").await.is_empty());
    let bad = [
        (v1::ListOwnerCreditTransactionsRequest::default(), "owner"),
        (
            v1::ListOwnerCreditTransactionsRequest {
                owner: PAYER.into(),
                environment: "nowhere".into(),
                ..Default::default()
            },
            "environment",
        ),
        (
            v1::ListOwnerCreditTransactionsRequest { owner: PAYER.into(), page_size: -1, ..Default::default() },
            "page_size",
        ),
        (
            v1::ListOwnerCreditTransactionsRequest {
                owner: PAYER.into(),
                page_token: "nonsense".into(),
                ..Default::default()
            },
            "page_token",
        ),
    ];
    for (request, field) in bad {
        assert_invalid(&client.list_owner_credit_transactions(admin(request)).await.unwrap_err(), field);
    }
    app.stop().await;
}
both!(a_pools_ledger_pages_oldest_first_naming_the_key_that_spent);
