//! A role change on one replica reaches the verification cache of another: the store
//! announces every key holding the role, and the other replica's change listener evicts
//! them, as it does for a change of the keys themselves.

use std::time::Duration;

use keyward_proto::v1::{self, VerificationCode};

use crate::{
    helpers::{Backend, Replica, admin, spawn},
    roles::{create, key_with_roles, role, roles, set_scopes},
};

async fn code(replica: &Replica, secret: &str, scope: &str) -> VerificationCode {
    let request = v1::VerifyApiKeyRequest {
        key: secret.to_owned(),
        required_scopes: vec![scope.to_owned()],
        ..Default::default()
    };
    replica.client.clone().verify_api_key(admin(request)).await.unwrap().into_inner().code()
}

/// Waits until `reader` answers `want` for `secret` and `scope`; a replica that has not
/// within 5 s (the cache TTL being an hour, only the notification can bring it) fails.
async fn await_code(reader: &Replica, secret: &str, scope: &str, want: VerificationCode) {
    let changed_at = std::time::Instant::now();
    while code(reader, secret, scope).await != want {
        assert!(changed_at.elapsed() < Duration::from_secs(5), "the other replica still answers as before the change");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_changes_reach_another_replica() {
    let app = spawn(Backend::Postgres).await;
    let url = app.config.store.database_url();
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let env = [("KEYWARD_CACHE_TTL", "1h")];
    let writer = Replica::start(&url, dirs.0.path(), &env).await.expect("writer starts");
    let reader = Replica::start(&url, dirs.1.path(), &env).await.expect("reader starts");
    roles(&writer.channel).create_role(admin(create(role("ops", "acme", &["ops.read"])))).await.unwrap();
    let (_, secret) = key_with_roles(&writer.client, "acme", &[], &["ops"]).await;
    for _ in 0..3 {
        assert_eq!(code(&reader, &secret, "ops.read").await, VerificationCode::Valid, "cached on the reader");
    }

    roles(&writer.channel).update_role(admin(set_scopes("ops", "acme", &["ops.write"]))).await.unwrap();
    await_code(&reader, &secret, "ops.read", VerificationCode::InsufficientScope).await;
    assert_eq!(code(&reader, &secret, "ops.write").await, VerificationCode::Valid);

    let delete = v1::DeleteRoleRequest { name: "ops".into(), owner: "acme".into(), force: true };
    roles(&writer.channel).delete_role(admin(delete)).await.unwrap();
    await_code(&reader, &secret, "ops.write", VerificationCode::InsufficientScope).await;
    drop((writer, reader));
    app.stop().await;
}
