//! An owner's keys under concurrent writes: the quota's count of held keys, key numbers
//! and list pages stay exact however the writes interleave.

use std::collections::BTreeSet;

use keyward_proto::v1::{self, ApiKeyStatus};
use sea_orm::{ConnectionTrait, Statement};
use tonic::Code;

use crate::helpers::{Backend, TestApp, admin, assert_status, both, create_request, key_with, spawn_with};

const QUOTA: usize = 10;

/// The quota row's count of held keys beside the keys actually not revoked.
pub(crate) async fn held_and_counted(app: &TestApp, owner: &str) -> (i64, i64) {
    let connection = app.running().store.connection();
    let backend = connection.get_database_backend();
    let one = |sql: &str| Statement::from_sql_and_values(backend, sql, [owner.into()]);
    let (held, counted) = if backend == sea_orm::DbBackend::Postgres {
        (
            "SELECT held AS n FROM quota_locks WHERE owner = $1 AND environment = 'production'",
            "SELECT COUNT(*) AS n FROM api_keys WHERE owner = $1 AND status <> 'revoked'",
        )
    } else {
        (
            "SELECT held AS n FROM quota_locks WHERE owner = ? AND environment = 'production'",
            "SELECT COUNT(*) AS n FROM api_keys WHERE owner = ? AND status <> 'revoked'",
        )
    };
    let mut values = vec![];
    for sql in [held, counted] {
        let row = connection.query_one_raw(one(sql)).await.unwrap().expect("a row");
        values.push(row.try_get::<i64>("", "n").unwrap());
    }
    (values[0], values[1])
}

async fn create(app: &TestApp, owner: &str, name: String) -> Result<v1::ApiKey, tonic::Status> {
    let mut key = key_with(&name);
    key.owner = owner.into();
    let created = app.client.clone().create_api_key(admin(create_request(key))).await?;
    Ok(created.into_inner().api_key.expect("the key"))
}

async fn delete(app: &TestApp, id: &str) -> Result<(), tonic::Status> {
    let request = v1::DeleteApiKeyRequest { id: id.to_owned(), request_id: String::new() };
    app.client.clone().delete_api_key(admin(request)).await.map(drop)
}

async fn quota_and_numbers_hold_under_concurrent_creates_and_revokes(backend: Backend) {
    let app = spawn_with(backend, |config| {
        config.environments = vec![format!("production:kw_live:{QUOTA}").parse().unwrap()];
    })
    .await;
    let racers = futures::future::join_all((0..3 * QUOTA).map(|n| create(&app, "crowd", format!("racer {n}")))).await;
    let first: Vec<v1::ApiKey> = racers.iter().filter_map(|r| r.as_ref().ok().cloned()).collect();
    assert_eq!(first.len(), QUOTA, "exactly the quota succeeds");
    for refused in racers.iter().filter_map(|r| r.as_ref().err()) {
        assert_status(refused, Code::ResourceExhausted, "KEY_QUOTA_EXCEEDED");
    }
    assert_eq!(held_and_counted(&app, "crowd").await, (QUOTA as i64, QUOTA as i64));

    // Revokes racing creates: whichever order they commit in, the count stays exact and
    // never lets the owner past the quota.
    let revokes = futures::future::join_all(first.iter().take(QUOTA / 2).map(|key| delete(&app, &key.id)));
    let creates = futures::future::join_all((0..QUOTA).map(|n| create(&app, "crowd", format!("second {n}"))));
    let (revoked, second) = futures::join!(revokes, creates);
    assert!(revoked.iter().all(Result::is_ok), "{revoked:?}");
    let (held, counted) = held_and_counted(&app, "crowd").await;
    assert_eq!(held, counted, "the held count is the keys not revoked");
    assert!(counted <= QUOTA as i64, "{counted} keys live past a quota of {QUOTA}");
    // Room left is exactly what the count says, then no more.
    let mut fill = vec![];
    for n in 0..QUOTA - counted as usize {
        fill.push(create(&app, "crowd", format!("fill {n}")).await.expect("room under the quota"));
    }
    let refused = create(&app, "crowd", "one too many".into()).await.unwrap_err();
    assert_status(&refused, Code::ResourceExhausted, "KEY_QUOTA_EXCEEDED");

    let numbers: Vec<i64> =
        first.iter().chain(second.iter().filter_map(|r| r.as_ref().ok())).chain(&fill).map(|key| key.number).collect();
    assert_eq!(numbers.iter().collect::<BTreeSet<_>>().len(), numbers.len(), "key numbers are unique: {numbers:?}");
    app.stop().await;
}
both!(quota_and_numbers_hold_under_concurrent_creates_and_revokes);

async fn revive_paths_keep_the_held_count(backend: Backend) {
    let app = spawn_with(backend, |config| config.environments = vec!["production:kw_live:2".parse().unwrap()]).await;
    let mut client = app.client.clone();
    let a = create(&app, "reviver", "a".into()).await.unwrap();
    let b = create(&app, "reviver", "b".into()).await.unwrap();
    delete(&app, &a.id).await.unwrap();
    assert_eq!(held_and_counted(&app, "reviver").await, (1, 1));
    let undelete = v1::UndeleteApiKeyRequest { id: a.id.clone(), request_id: String::new() };
    client.undelete_api_key(admin(undelete.clone())).await.expect("room for it again");
    assert_eq!(held_and_counted(&app, "reviver").await, (2, 2));

    delete(&app, &b.id).await.unwrap();
    let c = create(&app, "reviver", "c".into()).await.unwrap();
    // Brought back by an update of its status: the owner is at the quota, so it is refused
    // and nothing changes; after another revoke it fits and is counted.
    let restore = v1::UpdateApiKeyRequest {
        api_key: Some(v1::ApiKey { id: b.id.clone(), status: ApiKeyStatus::Active.into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["status".into()] }),
        ..Default::default()
    };
    let refused = client.update_api_key(admin(restore.clone())).await.unwrap_err();
    assert_status(&refused, Code::ResourceExhausted, "KEY_QUOTA_EXCEEDED");
    assert_eq!(held_and_counted(&app, "reviver").await, (2, 2));
    delete(&app, &c.id).await.unwrap();
    client.update_api_key(admin(restore)).await.expect("room for it after a revoke");
    assert_eq!(held_and_counted(&app, "reviver").await, (2, 2));
    let refused = client.undelete_api_key(admin(v1::UndeleteApiKeyRequest { id: c.id, request_id: String::new() }));
    assert_status(&refused.await.unwrap_err(), Code::ResourceExhausted, "KEY_QUOTA_EXCEEDED");
    assert_eq!(held_and_counted(&app, "reviver").await, (2, 2));
    app.stop().await;
}
both!(revive_paths_keep_the_held_count);
