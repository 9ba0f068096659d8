//! Holds placed in batches: verifications asking for holds at once share one commit (on
//! PostgreSQL, one statement when every hold of the batch is of one unit without a request
//! id), and each still reserves all its units or none, only what the balance covers.

use futures::future::join_all;
use keyward_proto::v1;

use crate::{
    credits::{assert_ledger_matches, balances, count_codes, metered_key},
    helpers::{Backend, both, spawn},
    holds::{capture, hold, holds_of, reservations_out_of_line},
};

async fn concurrent_holds_reserve_exactly_what_the_balance_covers(backend: Backend) {
    let app = spawn(backend).await;
    // One unit, no request id: the one-statement batch on PostgreSQL.
    let (single, single_secret) = metered_key(&app, &[("", 50)]).await;
    let answers = join_all((0..80).map(|_| hold(&app.client, &single_secret, &[("", 1)], None, ""))).await;
    let answers: Vec<_> = answers.into_iter().map(|answer| answer.expect("hold answered")).collect();
    assert_eq!(
        count_codes(&answers),
        [("VERIFICATION_CODE_VALID".to_owned(), 50), ("VERIFICATION_CODE_USAGE_EXCEEDED".to_owned(), 30)].into()
    );
    assert!(answers.iter().all(|answer| answer.hold_id.is_empty() != (answer.code() == v1::VerificationCode::Valid)));
    let live = holds_of(&app.channel, &single.id, true).await;
    assert_eq!(live.len(), 50);
    assert!(live.iter().all(|held| held.amounts.len() == 1 && held.amounts[0].amount == 1));
    assert_eq!(reservations_out_of_line(&app).await, 0);
    let captured = capture(&app.channel, &live[0].id, &[("", 1)], "").await.expect("capture");
    assert_eq!(captured.captured[0].amount, 1);
    assert_eq!(balances(&app.channel, &single.id).await, vec![(String::new(), 49)]);

    // Two units each: a hold short of its second unit gives back its first, in the batch
    // whose other holds commit.
    let (double, double_secret) = metered_key(&app, &[("", 100), ("gold", 5)]).await;
    let answers = join_all((0..20).map(|_| hold(&app.client, &double_secret, &[("", 1), ("gold", 1)], None, ""))).await;
    let answers: Vec<_> = answers.into_iter().map(|answer| answer.expect("hold answered")).collect();
    assert_eq!(
        count_codes(&answers),
        [("VERIFICATION_CODE_VALID".to_owned(), 5), ("VERIFICATION_CODE_USAGE_EXCEEDED".to_owned(), 15)].into()
    );
    assert_eq!(holds_of(&app.channel, &double.id, true).await.len(), 5);
    assert_eq!(reservations_out_of_line(&app).await, 0, "every refused hold gave back what it took");
    // What the refused holds gave back is available: 95 of the 100 can be held now.
    let rest = hold(&app.client, &double_secret, &[("", 95)], None, "").await.unwrap();
    assert_eq!(rest.code(), v1::VerificationCode::Valid);
    assert_eq!(reservations_out_of_line(&app).await, 0);
    assert_ledger_matches(&app.channel, &single.id).await;
    assert_ledger_matches(&app.channel, &double.id).await;
    app.stop().await;
}
both!(concurrent_holds_reserve_exactly_what_the_balance_covers);
