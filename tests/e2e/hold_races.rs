//! Credit holds under races: concurrent holds, charges and settlements on one balance
//! (across two replicas on PostgreSQL) never over-reserve or settle a hold twice, the
//! reservation stays within the balance at every moment sampled, and a SIGKILL in the
//! middle of captures loses none answered OK.

use std::{
    collections::{BTreeSet, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::future::join_all;
use keyward_proto::v1::{self, api_key_service_client::ApiKeyServiceClient};
use tonic::transport::Channel;

use crate::{
    credits::{amounts, assert_ledger_matches, balances, metered_key},
    helpers::{Backend, Replica, TestApp, admin, both, spawn},
    holds::{OUT_OF_LINE, capture, hold, holds_of, release, reservations_out_of_line},
};

/// Samples the reservations out of line until `done`; returns the worst count seen. A sample
/// the busy database does not answer in time is skipped.
fn sample_reservations(app: &Arc<TestApp>, done: &Arc<AtomicBool>) -> tokio::task::JoinHandle<i64> {
    let (app, done) = (Arc::clone(app), Arc::clone(done));
    tokio::spawn(async move {
        let mut worst = 0;
        while !done.load(Ordering::SeqCst) {
            if let Ok(count) = app.try_count_rows(OUT_OF_LINE).await {
                worst = worst.max(count);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        worst
    })
}

/// Runs `call` until it answers other than UNAVAILABLE, as a client would: hundreds of
/// writes queue on one balance here, and a server shedding load answers UNAVAILABLE. Each
/// call passes the same request id, so a retry of one that did commit is a replay.
async fn retrying<T, F: Future<Output = Result<T, tonic::Status>>>(
    mut call: impl FnMut() -> F,
) -> Result<T, tonic::Status> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    let mut backoff = Duration::from_millis(20);
    loop {
        match call().await {
            Err(status) if status.code() == tonic::Code::Unavailable && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            outcome => return outcome,
        }
    }
}

/// Captures 1 of hold `id` (or releases it), with a request id of its own.
async fn settle(channel: Channel, id: String, captures: bool) -> Result<&'static str, tonic::Status> {
    let request_id = uuid::Uuid::new_v4().to_string();
    retrying(|| async {
        if captures {
            capture(&channel, &id, &[("", 1)], &request_id).await.map(|_| "capture")
        } else {
            release(&channel, &id, &request_id).await.map(|_| "release")
        }
    })
    .await
}

async fn holds_charges_and_settlements_racing_stay_exact(backend: Backend) {
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
    let (key, secret) = metered_key(&app, &[("", 100)]).await;
    let done = Arc::new(AtomicBool::new(false));
    let sampler = sample_reservations(&app, &done);

    // 150 holds of 1 and 150 charges of 1 on a balance of 100: exactly 100 go through.
    let holds = join_all((0..150).map(|n| {
        let (client, secret, request_id) = (&clients[n % clients.len()], &secret, uuid::Uuid::new_v4().to_string());
        async move { retrying(|| hold(client, secret, &[("", 1)], None, &request_id)).await }
    }))
    .await;
    let charges = join_all((0..150).map(|n| {
        let request = v1::VerifyApiKeyRequest {
            key: secret.clone(),
            cost: amounts(&[("", 1)]),
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        };
        let client = &clients[(n + 1) % clients.len()];
        async move {
            let call = || {
                let (mut client, request) = (client.clone(), admin(request.clone()));
                async move { client.verify_api_key(request).await }
            };
            retrying(call).await.unwrap().into_inner()
        }
    }))
    .await;
    let held: Vec<String> = holds
        .into_iter()
        .map(Result::unwrap)
        .filter(|answer| answer.code() == v1::VerificationCode::Valid)
        .map(|answer| answer.hold_id)
        .collect();
    let charged = charges.iter().filter(|answer| answer.code() == v1::VerificationCode::Valid).count();
    assert_eq!(held.len() + charged, 100, "{} held, {charged} charged", held.len());

    // Each hold settled by three racers at once (two captures and a release, each with a
    // request id of its own): exactly one wins.
    let channels = &channels;
    let settlements = join_all(held.iter().enumerate().flat_map(|(n, id)| {
        (0..3).map(move |k| settle(channels[(n + k) % channels.len()].clone(), id.clone(), k < 2))
    }))
    .await;
    done.store(true, Ordering::SeqCst);
    let won: Vec<&str> = settlements.iter().filter_map(|outcome| outcome.as_ref().ok().copied()).collect();
    let failures: Vec<String> = settlements
        .iter()
        .filter_map(|outcome| outcome.as_ref().err())
        .map(|status| format!("{:?}: {}", status.code(), status.message()))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(won.len(), held.len(), "one settlement of each hold; the losers were told {failures:?}");
    assert!(
        settlements
            .iter()
            .filter_map(|outcome| outcome.as_ref().err())
            .all(|status| status.code() == tonic::Code::FailedPrecondition),
        "the losers are told the hold was settled, not {failures:?}"
    );
    let captures = won.iter().filter(|how| **how == "capture").count();
    let balance = 100 - i64::try_from(charged + captures).unwrap();
    assert_eq!(balances(&app.channel, &key.id).await, vec![(String::new(), balance)]);
    let entries = assert_ledger_matches(&app.channel, &key.id).await;
    assert_eq!(entries.iter().filter(|entry| entry.reason == "capture").count(), captures);
    let distinct: HashSet<&str> =
        entries.iter().filter(|entry| entry.reason == "capture").map(|entry| entry.hold_id.as_str()).collect();
    assert_eq!(distinct.len(), captures, "no hold captured twice");
    assert!(holds_of(&app.channel, &key.id, true).await.is_empty());
    assert_eq!(sampler.await.unwrap(), 0, "a reservation was out of line while the race ran");
    assert_eq!(reservations_out_of_line(&app).await, 0);
    drop(replicas);
    Arc::into_inner(app).expect("the sampler is done").stop().await;
}
both!(holds_charges_and_settlements_racing_stay_exact);

async fn a_killed_server_loses_no_capture(backend: Backend) {
    let app = spawn(backend).await;
    let url = app.config.store.database_url();
    let dir = tempfile::tempdir().unwrap();
    let (key, secret) = metered_key(&app, &[("", 1_000_000)]).await;
    let mut ids = Vec::new();
    for _ in 0..400 {
        ids.push(hold(&app.client, &secret, &[("", 2)], Some(3600), "").await.unwrap().hold_id);
    }
    let replica = Replica::start(&url, dir.path(), &[]).await.expect("replica starts");
    let queue = Arc::new(Mutex::new(ids));
    let confirmed = Arc::new(Mutex::new(HashSet::new()));
    let load: Vec<_> = (0..16)
        .map(|_| {
            let (channel, queue, confirmed) = (replica.channel.clone(), Arc::clone(&queue), Arc::clone(&confirmed));
            tokio::spawn(async move {
                loop {
                    let Some(id) = queue.lock().unwrap().pop() else { return };
                    match capture(&channel, &id, &[("", 1)], &uuid::Uuid::new_v4().to_string()).await {
                        Ok(_) => {
                            confirmed.lock().unwrap().insert(id);
                        }
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    // Kill the process (SIGKILL: no shutdown) once captures are flowing.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while confirmed.lock().unwrap().len() < 50 {
        assert!(std::time::Instant::now() < deadline, "captures flow through the replica");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    drop(replica);
    for worker in load {
        worker.await.unwrap();
    }
    let confirmed = confirmed.lock().unwrap().clone();

    let entries = assert_ledger_matches(&app.channel, &key.id).await;
    let captured: HashSet<String> =
        entries.iter().filter(|entry| entry.reason == "capture").map(|entry| entry.hold_id.clone()).collect();
    let missing: Vec<_> = confirmed.iter().filter(|id| !captured.contains(*id)).collect();
    assert!(missing.is_empty(), "{} captures answered OK are not in the ledger", missing.len());
    let settled = holds_of(&app.channel, &key.id, false).await;
    let captured_holds = settled.iter().filter(|hold| hold.state == i32::from(v1::CreditHoldState::Captured)).count();
    assert_eq!(captured_holds, captured.len(), "a hold is captured iff its capture is in the ledger");
    let spent = i64::try_from(captured.len()).unwrap();
    assert_eq!(balances(&app.channel, &key.id).await, vec![(String::new(), 1_000_000 - spent)]);
    assert_eq!(reservations_out_of_line(&app).await, 0);
    app.stop().await;
}
both!(a_killed_server_loses_no_capture);
