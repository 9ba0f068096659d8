//! Cache misses read together: concurrent misses share one statement, and each still gets
//! its own key's answer — duplicates, keys mid-rotation with both secrets, revoked keys
//! and secrets no key has among them.

use futures::future::join_all;
use keyward_proto::v1::{self, VerificationCode};

use crate::{
    cache::metric,
    helpers::{Backend, admin, both, spawn},
};

async fn concurrent_misses_share_reads_and_each_gets_its_own_answer(backend: Backend) {
    let app = spawn(backend).await;
    let mut client = app.client.clone();
    let mut expected = Vec::new();
    for n in 0..40 {
        let (key, secret) = app.create_key(&format!("crowd-{}", n % 4), &[]).await;
        expected.push((secret, VerificationCode::Valid, Some(key.id)));
    }
    // Mid-rotation: the old secret (in its grace period) and the new both find the key.
    let (rotating, old) = app.create_key("crowd-rotating", &[]).await;
    let rotate = v1::RotateApiKeyRequest {
        id: rotating.id.clone(),
        grace_period: Some(prost_types::Duration { seconds: 600, nanos: 0 }),
        ..Default::default()
    };
    let new = client.rotate_api_key(admin(rotate)).await.unwrap().into_inner().secret;
    expected.push((old, VerificationCode::Valid, Some(rotating.id.clone())));
    expected.push((new, VerificationCode::Valid, Some(rotating.id.clone())));
    // Rotated away without grace: a well-formed secret no key has any more.
    let (replaced, gone) = app.create_key("crowd-replaced", &[]).await;
    client.rotate_api_key(admin(v1::RotateApiKeyRequest { id: replaced.id, ..Default::default() })).await.unwrap();
    expected.push((gone, VerificationCode::NotFound, None));
    let (revoked, revoked_secret) = app.create_key("crowd-revoked", &[]).await;
    client
        .delete_api_key(admin(v1::DeleteApiKeyRequest { id: revoked.id.clone(), ..Default::default() }))
        .await
        .unwrap();
    expected.push((revoked_secret, VerificationCode::Revoked, Some(revoked.id)));
    // Every secret asked for twice at once.
    let calls: Vec<_> = expected.iter().chain(&expected).cloned().collect();

    let misses_before = metric(&app, "keyward_cache_lookups_total{result=\"miss\"}").await;
    let read = metric(&app, "keyward_cache_miss_read_batch_size_sum").await;
    let statements = metric(&app, "keyward_cache_miss_read_batch_size_count").await;
    let answers = join_all(calls.iter().map(|(secret, _, _)| app.verify(secret, &[], ""))).await;
    for ((secret, code, id), answer) in calls.iter().zip(&answers) {
        assert_eq!(answer.code(), *code, "{secret}");
        let answered_id = answer.api_key.as_ref().map(|key| key.id.clone());
        assert_eq!(answered_id, *id, "{secret} is answered with its own key");
    }
    let misses_after = metric(&app, "keyward_cache_lookups_total{result=\"miss\"}").await;
    let misses = misses_after - misses_before;
    let read = metric(&app, "keyward_cache_miss_read_batch_size_sum").await - read;
    let statements = metric(&app, "keyward_cache_miss_read_batch_size_count").await - statements;
    assert!(misses >= expected.len() as u64, "each secret missed the cache at least once: {misses}");
    assert_eq!(read, misses, "every miss was read, once");
    assert!(statements < misses, "{misses} concurrent misses took {statements} statements: none shared");

    // And afterwards each is answered from the cache.
    for (secret, code, _) in &expected {
        assert_eq!(app.verify(secret, &[], "").await.code(), *code);
    }
    assert_eq!(metric(&app, "keyward_cache_lookups_total{result=\"miss\"}").await, misses_after);
    app.stop().await;
}
both!(concurrent_misses_share_reads_and_each_gets_its_own_answer);
