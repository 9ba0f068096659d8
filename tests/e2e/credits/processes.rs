//! One balance across processes: two replicas sharing it on PostgreSQL, and a server
//! killed in the middle of charges losing none it answered.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_balance_on_postgres() {
    let app = spawn(Backend::Postgres).await;
    let url = app.config.store.database_url();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let first = Replica::start(&url, dirs.0.path(), &[]).await.expect("first replica starts");
    let second = Replica::start(&url, dirs.1.path(), &[]).await.expect("second replica starts");
    let (key, secret) = metered_key(&app, &[("", 100)]).await;
    let answers = join_all((0..200).map(|n| {
        let client = if n % 2 == 0 { &first.client } else { &second.client };
        charge(client, &secret, &[("", 1)], "")
    }))
    .await;
    let codes = count_codes(&answers);
    assert_eq!(codes.get("VERIFICATION_CODE_VALID"), Some(&100), "{codes:?}");
    assert_eq!(codes.get("VERIFICATION_CODE_USAGE_EXCEEDED"), Some(&100), "{codes:?}");
    assert_eq!(balances(&app.channel, &key.id).await, vec![(String::new(), 0)]);
    let entries = assert_ledger_matches(&app.channel, &key.id).await;
    assert_eq!(entries.iter().filter(|entry| entry.reason == "verify").count(), 100);
    drop((first, second));
    app.stop().await;
}

async fn a_killed_server_loses_no_charge(backend: Backend) {
    let app = spawn(backend).await;
    let url = app.config.store.database_url();
    let dir = tempfile::tempdir().unwrap();
    let (key, secret) = metered_key(&app, &[("", 1_000_000)]).await;
    let replica = Replica::start(&url, dir.path(), &[]).await.expect("replica starts");
    let client = replica.client.clone();
    let confirmed = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let load: Vec<_> = (0..16)
        .map(|_| {
            let (client, secret, confirmed) = (client.clone(), secret.clone(), Arc::clone(&confirmed));
            tokio::spawn(async move {
                loop {
                    let request_id = uuid::Uuid::new_v4().to_string();
                    let request = v1::VerifyApiKeyRequest {
                        key: secret.clone(),
                        cost: amounts(&[("", 1)]),
                        request_id: request_id.clone(),
                        ..Default::default()
                    };
                    match client.clone().verify_api_key(admin(request)).await {
                        Ok(answer) if answer.get_ref().valid => {
                            confirmed.lock().unwrap().insert(request_id);
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    // Kill the process (SIGKILL: no shutdown, no flush) once charges are flowing.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while confirmed.lock().unwrap().len() < 200 {
        assert!(std::time::Instant::now() < deadline, "charges flow through the replica");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(replica);
    for worker in load {
        worker.await.unwrap();
    }
    let confirmed = confirmed.lock().unwrap().clone();

    let restarted = Replica::start(&url, dir.path(), &[]).await.expect("replica restarts");
    let entries = assert_ledger_matches(&restarted.channel, &key.id).await;
    let in_ledger: HashSet<String> = entries.iter().map(|entry| entry.request_id.clone()).collect();
    let missing: Vec<_> = confirmed.iter().filter(|id| !in_ledger.contains(*id)).collect();
    assert!(missing.is_empty(), "{} charges answered VALID are not in the ledger", missing.len());
    let charged = entries.iter().filter(|entry| entry.reason == "verify").count();
    assert!(charged >= confirmed.len(), "every ledger charge is a real one ({charged} ≥ {})", confirmed.len());
    drop(restarted);
    app.stop().await;
}
both!(a_killed_server_loses_no_charge);
