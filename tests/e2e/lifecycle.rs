//! The key lifecycle end to end: create, read, update, revoke, undelete, rotate.

use keyward_proto::v1::{self, ApiKeyStatus, VerificationCode};
use tonic::Code;

use crate::helpers::{Backend, admin, assert_status, both, create_request, key_with, spawn, spawn_with, timestamp_in};

async fn create_get_list_update(backend: Backend) {
    let app = spawn(backend).await;
    let mut client = app.client.clone();
    let mut key = key_with("billing service");
    key.owner = "user-1".into();
    key.organization_id = "org-1".into();
    key.organization_name = "Org One".into();
    key.environment = "sandbox".into();
    key.scopes = vec!["app:read".into(), "app:write".into()];
    key.networks = vec!["Preprod".into()];
    key.metadata.insert("team".into(), "billing".into());
    let created = client.create_api_key(admin(create_request(key))).await.unwrap().into_inner();
    let secret = created.secret;
    let key = created.api_key.unwrap();
    assert!(secret.starts_with("kw_test_"), "sandbox prefix: {secret}");
    assert_eq!(key.mask, format!("kw_test_…{}", &secret[secret.len() - 4..]));
    assert!(uuid::Uuid::parse_str(&key.id).is_ok());
    assert!(key.number > 0);
    assert_eq!(key.status(), ApiKeyStatus::Active);
    assert_eq!((key.owner.as_str(), key.organization_name.as_str()), ("user-1", "Org One"));
    assert!(key.creator.starts_with("key:"), "creator is the admin key: {}", key.creator);
    assert!(key.create_time.is_some() && key.update_time.is_some() && key.delete_time.is_none());

    let fetched = client.get_api_key(admin(v1::GetApiKeyRequest { id: key.id.clone() })).await.unwrap().into_inner();
    assert_eq!(fetched.api_key.as_ref(), Some(&key));

    let listed = client
        .list_api_keys(admin(v1::ListApiKeysRequest { owner: "user-1".into(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.api_keys, vec![key.clone()]);
    assert!(listed.next_page_token.is_empty());

    let update = v1::UpdateApiKeyRequest {
        api_key: Some(v1::ApiKey {
            id: key.id.clone(),
            name: "renamed".into(),
            scopes: vec!["app:read".into()],
            status: ApiKeyStatus::Inactive.into(),
            expire_time: Some(timestamp_in(3600)),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask {
            paths: vec!["name".into(), "scopes".into(), "status".into(), "expire_time".into()],
        }),
        request_id: String::new(),
        ..Default::default()
    };
    let updated = client.update_api_key(admin(update)).await.unwrap().into_inner().api_key.unwrap();
    assert_eq!(updated.name, "renamed");
    assert_eq!(updated.scopes, vec!["app:read".to_owned()]);
    assert_eq!(updated.networks, vec!["Preprod".to_owned()], "fields outside the mask stay");
    assert_eq!(updated.metadata.get("team").map(String::as_str), Some("billing"));
    assert_eq!(updated.status(), ApiKeyStatus::Inactive);
    assert!(updated.expire_time.is_some());
    assert_eq!(app.verify(&secret, &[], "").await.code(), VerificationCode::Inactive);

    let reactivate = v1::UpdateApiKeyRequest {
        api_key: Some(v1::ApiKey { id: key.id.clone(), status: ApiKeyStatus::Active.into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["status".into()] }),
        request_id: String::new(),
        ..Default::default()
    };
    client.update_api_key(admin(reactivate)).await.unwrap();
    let verdict = app.verify(&secret, &["app:read"], "Preprod").await;
    assert!(verdict.valid);
    assert_eq!(verdict.api_key.unwrap().id, key.id);
    app.stop().await;
}
both!(create_get_list_update);

async fn delete_and_undelete(backend: Backend) {
    let app = spawn(backend).await;
    let mut client = app.client.clone();
    let (key, secret) = app.create_key("user-2", &["app:read"]).await;
    assert!(app.verify(&secret, &[], "").await.valid);

    let deleted = client
        .delete_api_key(admin(v1::DeleteApiKeyRequest { id: key.id.clone(), request_id: String::new() }))
        .await
        .unwrap()
        .into_inner()
        .api_key
        .unwrap();
    assert_eq!(deleted.status(), ApiKeyStatus::Revoked);
    assert!(deleted.delete_time.is_some());
    assert_eq!(app.verify(&secret, &[], "").await.code(), VerificationCode::Revoked, "stops verifying at once");

    let got = client.get_api_key(admin(v1::GetApiKeyRequest { id: key.id.clone() })).await.unwrap().into_inner();
    assert_eq!(got.api_key.unwrap().status(), ApiKeyStatus::Revoked, "Get still returns a revoked key");

    let list = |show_revoked| v1::ListApiKeysRequest { owner: "user-2".into(), show_revoked, ..Default::default() };
    assert!(client.list_api_keys(admin(list(false))).await.unwrap().into_inner().api_keys.is_empty());
    assert_eq!(client.list_api_keys(admin(list(true))).await.unwrap().into_inner().api_keys.len(), 1);

    let update = v1::UpdateApiKeyRequest {
        api_key: Some(v1::ApiKey { id: key.id.clone(), name: "nope".into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["name".into()] }),
        request_id: String::new(),
        ..Default::default()
    };
    let refused = client.update_api_key(admin(update)).await.unwrap_err();
    assert_status(&refused, Code::FailedPrecondition, "API_KEY_REVOKED");

    let again = client
        .delete_api_key(admin(v1::DeleteApiKeyRequest { id: key.id.clone(), request_id: String::new() }))
        .await
        .unwrap_err();
    assert_status(&again, Code::FailedPrecondition, "API_KEY_REVOKED");

    let restored = client
        .undelete_api_key(admin(v1::UndeleteApiKeyRequest { id: key.id.clone(), request_id: String::new() }))
        .await
        .unwrap()
        .into_inner()
        .api_key
        .unwrap();
    assert_eq!(restored.status(), ApiKeyStatus::Active);
    assert!(restored.delete_time.is_none());
    assert!(app.verify(&secret, &[], "").await.valid);

    let not_revoked = client
        .undelete_api_key(admin(v1::UndeleteApiKeyRequest { id: key.id.clone(), request_id: String::new() }))
        .await
        .unwrap_err();
    assert_status(&not_revoked, Code::FailedPrecondition, "API_KEY_NOT_REVOKED");

    let missing = client
        .delete_api_key(admin(v1::DeleteApiKeyRequest {
            id: uuid::Uuid::now_v7().to_string(),
            request_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_status(&missing, Code::NotFound, "API_KEY_NOT_FOUND");
    app.stop().await;
}
both!(delete_and_undelete);

async fn undelete_after_retention_is_refused(backend: Backend) {
    let app = spawn_with(backend, |config| config.undelete_retention = std::time::Duration::from_millis(300)).await;
    let mut client = app.client.clone();
    let (key, _) = app.create_key("user-3", &[]).await;
    client
        .delete_api_key(admin(v1::DeleteApiKeyRequest { id: key.id.clone(), request_id: String::new() }))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let refused = client
        .undelete_api_key(admin(v1::UndeleteApiKeyRequest { id: key.id.clone(), request_id: String::new() }))
        .await
        .unwrap_err();
    assert_status(&refused, Code::FailedPrecondition, "RETENTION_EXPIRED");
    // Nor through an update that sets its status: the window is the same.
    let update = v1::UpdateApiKeyRequest {
        api_key: Some(v1::ApiKey { id: key.id.clone(), status: ApiKeyStatus::Active.into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["status".into()] }),
        ..Default::default()
    };
    let refused = client.update_api_key(admin(update)).await.unwrap_err();
    assert_status(&refused, Code::FailedPrecondition, "RETENTION_EXPIRED");
    app.stop().await;
}
both!(undelete_after_retention_is_refused);

async fn rotation_with_and_without_grace(backend: Backend) {
    let app = spawn(backend).await;
    let mut client = app.client.clone();
    let (key, first) = app.create_key("user-4", &[]).await;
    let rotate = |grace: i64| v1::RotateApiKeyRequest {
        id: key.id.clone(),
        grace_period: Some(prost_types::Duration { seconds: grace, nanos: 0 }),
        ..Default::default()
    };
    let rotated = client.rotate_api_key(admin(rotate(2))).await.unwrap().into_inner();
    let second = rotated.secret;
    let rotated_key = rotated.api_key.unwrap();
    assert_ne!(first, second);
    assert_eq!(rotated_key.id, key.id, "same id");
    assert_ne!(rotated_key.mask, key.mask);
    assert!(app.verify(&first, &[], "").await.valid, "old secret verifies during the grace period");
    assert!(app.verify(&second, &[], "").await.valid);
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    assert_eq!(app.verify(&first, &[], "").await.code(), VerificationCode::Expired, "grace period over");
    assert!(app.verify(&second, &[], "").await.valid);

    let third = client.rotate_api_key(admin(rotate(0))).await.unwrap().into_inner().secret;
    assert_eq!(app.verify(&second, &[], "").await.code(), VerificationCode::NotFound, "no grace: gone at once");
    assert!(app.verify(&third, &[], "").await.valid);

    let too_long = client.rotate_api_key(admin(rotate(30 * 86_400))).await.unwrap_err();
    crate::helpers::assert_invalid(&too_long, "grace_period");
    app.stop().await;
}
both!(rotation_with_and_without_grace);

async fn quota_counts_live_keys_and_refuses_past_the_limit(backend: Backend) {
    let app = spawn_with(backend, |config| {
        config.environments = vec!["production:kw_live:3".parse().unwrap(), "sandbox:kw_test:1:1h".parse().unwrap()];
    })
    .await;
    let mut client = app.client.clone();
    let quota = |owner: &str, environment: &str| {
        admin(v1::GetKeyQuotaRequest { owner: owner.into(), environment: environment.into() })
    };
    let mut keys = vec![];
    for _ in 0..3 {
        keys.push(app.create_key("user-5", &[]).await.0);
    }
    let answer = client.get_key_quota(quota("user-5", "production")).await.unwrap().into_inner();
    assert_eq!((answer.used, answer.limit), (3, 3));
    let mut over = key_with("one too many");
    over.owner = "user-5".into();
    let refused = client.create_api_key(admin(create_request(over.clone()))).await.unwrap_err();
    assert_status(&refused, Code::ResourceExhausted, "KEY_QUOTA_EXCEEDED");

    client
        .delete_api_key(admin(v1::DeleteApiKeyRequest { id: keys[0].id.clone(), request_id: String::new() }))
        .await
        .unwrap();
    assert_eq!(client.get_key_quota(quota("user-5", "production")).await.unwrap().into_inner().used, 2);
    client.create_api_key(admin(create_request(over))).await.expect("room again after a revoke");
    let undelete = client
        .undelete_api_key(admin(v1::UndeleteApiKeyRequest { id: keys[0].id.clone(), request_id: String::new() }))
        .await
        .unwrap_err();
    assert_status(&undelete, Code::ResourceExhausted, "KEY_QUOTA_EXCEEDED");

    let mut sandbox = key_with("sandbox key");
    sandbox.owner = "user-5".into();
    sandbox.environment = "sandbox".into();
    let created = client.create_api_key(admin(create_request(sandbox))).await.unwrap().into_inner().api_key.unwrap();
    let ttl = created.expire_time.unwrap().seconds - created.create_time.unwrap().seconds;
    assert_eq!(ttl, 3600, "the environment's default time to live");
    let sandbox_quota = client.get_key_quota(quota("user-5", "sandbox")).await.unwrap().into_inner();
    assert_eq!((sandbox_quota.used, sandbox_quota.limit), (1, 1));
    let unknown = client.get_key_quota(quota("user-5", "staging")).await.unwrap_err();
    crate::helpers::assert_invalid(&unknown, "environment");
    app.stop().await;
}
both!(quota_counts_live_keys_and_refuses_past_the_limit);

async fn concurrent_creates_respect_the_quota(backend: Backend) {
    let app = spawn_with(backend, |config| config.environments = vec!["production:kw_live:10".parse().unwrap()]).await;
    let attempts = (0..50).map(|n| {
        let mut client = app.client.clone();
        let mut key = key_with(&format!("racer {n}"));
        key.owner = "racer".into();
        async move { client.create_api_key(admin(create_request(key))).await }
    });
    let results = futures::future::join_all(attempts).await;
    let created = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(created, 10, "exactly the quota succeeds");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_status(refused, Code::ResourceExhausted, "KEY_QUOTA_EXCEEDED");
    }
    let live = app.running().store.count_live("racer", "production", chrono::Utc::now()).await.unwrap();
    assert_eq!(live, 10);
    app.stop().await;
}
both!(concurrent_creates_respect_the_quota);

async fn rotation_imports_a_chosen_secret(backend: Backend) {
    let app = spawn(backend).await;
    let mut client = app.client.clone();
    let (key, old) = app.create_key("user-import", &[]).await;
    let (_, other_secret) = app.create_key("user-other", &[]).await;
    let (_, writer) = app.create_key("svc", &["keys:write"]).await;
    let imported = "masumi_chosen_secret_0001";
    let rotate = |import_secret: &str| v1::RotateApiKeyRequest {
        id: key.id.clone(),
        import_secret: import_secret.to_owned(),
        ..Default::default()
    };

    // Only admins import, and only secrets of 15 to 550 characters: nothing changes otherwise.
    let refused = client.rotate_api_key(crate::helpers::with_key(&writer, rotate(imported))).await.unwrap_err();
    assert_status(&refused, Code::PermissionDenied, "PERMISSION_DENIED");
    let short = client.rotate_api_key(admin(rotate("too_short_14ch"))).await.unwrap_err();
    crate::helpers::assert_invalid(&short, "import_secret");
    let spaced = client.rotate_api_key(admin(rotate("has a space inside it"))).await.unwrap_err();
    crate::helpers::assert_invalid(&spaced, "import_secret");
    let taken = client.rotate_api_key(admin(rotate(&other_secret))).await.unwrap_err();
    assert_status(&taken, Code::AlreadyExists, "SECRET_ALREADY_EXISTS");
    assert_eq!(app.verify(&old, &[], "").await.code(), VerificationCode::Valid, "refused rotations change nothing");
    assert_eq!(app.verify(&other_secret, &[], "").await.code(), VerificationCode::Valid);

    let rotated = client.rotate_api_key(admin(rotate(imported))).await.unwrap().into_inner();
    assert_eq!(rotated.secret, imported, "the imported secret is shown back this once");
    assert_eq!(rotated.api_key.unwrap().mask, "…0001");
    assert_eq!(app.verify(&old, &[], "").await.code(), VerificationCode::NotFound, "the old secret ends at once");
    let verified = app.verify(imported, &[], "").await;
    assert_eq!((verified.code(), verified.api_key.unwrap().id), (VerificationCode::Valid, key.id.clone()));
    let fetched = client.get_api_key(admin(v1::GetApiKeyRequest { id: key.id.clone() })).await.unwrap().into_inner();
    assert_eq!(fetched.api_key.unwrap().mask, "…0001");
    app.stop().await;
}
both!(rotation_imports_a_chosen_secret);

/// A status in `update_mask` changes with the other fields in one transaction: an update
/// whose credits or imported secret are refused leaves the key exactly as it was, status
/// (and, for a revoked key, its deletion) included; one that succeeds changes all of it.
async fn status_changes_with_the_update_or_not_at_all(backend: Backend) {
    let app = spawn(backend).await;
    let mut client = app.client.clone();
    let mut key = key_with("restored with changes");
    key.usage_limited = true;
    key.credits = vec![v1::CreditAmount { unit: String::new(), amount: 10 }];
    let created = client.create_api_key(admin(create_request(key))).await.unwrap().into_inner();
    let (id, secret) = (created.api_key.unwrap().id, created.secret);
    let (_, taken) = app.create_key("user-other", &[]).await;
    let get = || {
        let (mut client, id) = (app.client.clone(), id.clone());
        async move { client.get_api_key(admin(v1::GetApiKeyRequest { id })).await.unwrap().into_inner().api_key.unwrap() }
    };
    let update = |status: ApiKeyStatus, delta: i64, import_secret: &str| v1::UpdateApiKeyRequest {
        api_key: Some(v1::ApiKey {
            id: id.clone(),
            name: "renamed".into(),
            status: status.into(),
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["status".into(), "name".into()] }),
        credit_deltas: vec![v1::CreditDelta { unit: String::new(), delta }],
        import_secret: import_secret.to_owned(),
        ..Default::default()
    };
    let disable = v1::UpdateApiKeyRequest {
        api_key: Some(v1::ApiKey { id: id.clone(), status: ApiKeyStatus::Inactive.into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["status".into()] }),
        ..Default::default()
    };
    client.update_api_key(admin(disable)).await.unwrap();
    let inactive = get().await;
    assert_eq!(inactive.status(), ApiKeyStatus::Inactive);
    client.update_api_key(admin(update(ApiKeyStatus::Active, -11, ""))).await.unwrap_err();
    let taken_secret = client.update_api_key(admin(update(ApiKeyStatus::Active, 1, &taken))).await.unwrap_err();
    assert_status(&taken_secret, Code::AlreadyExists, "SECRET_ALREADY_EXISTS");
    assert_eq!(get().await, inactive, "exactly as it was");
    assert_eq!(app.verify(&secret, &[], "").await.code(), VerificationCode::Inactive);

    client.delete_api_key(admin(v1::DeleteApiKeyRequest { id: id.clone(), request_id: String::new() })).await.unwrap();
    let revoked = get().await;
    assert!(revoked.status() == ApiKeyStatus::Revoked && revoked.delete_time.is_some());
    client.update_api_key(admin(update(ApiKeyStatus::Active, -11, ""))).await.unwrap_err();
    client.update_api_key(admin(update(ApiKeyStatus::Inactive, 1, &taken))).await.unwrap_err();
    assert_eq!(get().await, revoked, "still revoked, nothing changed");
    assert_eq!(app.verify(&secret, &[], "").await.code(), VerificationCode::Revoked);

    let restored = client.update_api_key(admin(update(ApiKeyStatus::Active, 5, ""))).await.unwrap().into_inner();
    let restored = restored.api_key.unwrap();
    assert_eq!((restored.status(), restored.name.as_str()), (ApiKeyStatus::Active, "renamed"));
    assert_eq!((restored.credits[0].amount, restored.delete_time), (15, None));
    assert_eq!(app.verify(&secret, &[], "").await.code(), VerificationCode::Valid);
    app.stop().await;
}
both!(status_changes_with_the_update_or_not_at_all);
