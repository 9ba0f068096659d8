//! Attacks a hostile tenant tried, one per finding: each must be refused and leave the
//! tables as they were.

use keyward_proto::v1::{self, ApiKeyStatus};
use tonic::Code;
use tonic_types::StatusExt;

use crate::helpers::{
    Backend, admin, assert_invalid, assert_status, both, create_request, key_with, spawn, spawn_with, timestamp_in,
    with_key,
};

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() })
}

/// An admin's downgrade, racing the owner's renames, always sticks.
async fn an_admin_downgrade_is_never_lost(backend: Backend) {
    let app = spawn(backend).await;
    let (_, writer) = app.create_key("tenant", &["keys:write"]).await;
    for round in 0..20 {
        let (target, _) = app.create_key("tenant", &["app:read", "app:write"]).await;
        let renames = (0..6).map(|task| {
            let (mut client, id, writer) = (app.client.clone(), target.id.clone(), writer.clone());
            tokio::spawn(async move {
                for n in 0..5 {
                    let message = v1::UpdateApiKeyRequest {
                        api_key: Some(v1::ApiKey {
                            id: id.clone(),
                            name: format!("r{round} t{task} n{n}"),
                            ..Default::default()
                        }),
                        update_mask: mask(&["name"]),
                        ..Default::default()
                    };
                    client.update_api_key(with_key(&writer, message)).await.expect("the owner renames its key");
                }
            })
        });
        let renames: Vec<_> = renames.collect();
        let downgrade = v1::UpdateApiKeyRequest {
            api_key: Some(v1::ApiKey { id: target.id.clone(), scopes: vec!["app:read".into()], ..Default::default() }),
            update_mask: mask(&["scopes"]),
            ..Default::default()
        };
        app.client.clone().update_api_key(admin(downgrade)).await.expect("the admin downgrades");
        for rename in renames {
            rename.await.unwrap();
        }
        let key = app.client.clone().get_api_key(admin(v1::GetApiKeyRequest { id: target.id })).await.unwrap();
        assert_eq!(key.into_inner().api_key.unwrap().scopes, vec!["app:read"], "round {round}");
    }
    app.stop().await;
}
both!(an_admin_downgrade_is_never_lost);

/// A key number out of reach is NOT_FOUND naming the number only, not the key's UUID.
async fn key_numbers_leak_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let bootstrap = app.client.clone().get_caller_api_key(admin(v1::GetCallerApiKeyRequest {})).await.unwrap();
    let bootstrap = bootstrap.into_inner().api_key.unwrap();
    let (_, reader) = app.create_key("stranger", &["keys:read", "keys:write"]).await;
    let number = bootstrap.number.to_string();
    let mut client = app.client.clone();
    let refusals = [
        client.get_api_key(with_key(&reader, v1::GetApiKeyRequest { id: number.clone() })).await.unwrap_err(),
        client
            .delete_api_key(with_key(&reader, v1::DeleteApiKeyRequest { id: number.clone(), ..Default::default() }))
            .await
            .unwrap_err(),
        client
            .rotate_api_key(with_key(&reader, v1::RotateApiKeyRequest { id: number.clone(), ..Default::default() }))
            .await
            .unwrap_err(),
        client
            .update_api_key(with_key(
                &reader,
                v1::UpdateApiKeyRequest {
                    api_key: Some(v1::ApiKey { id: number.clone(), name: "x".into(), ..Default::default() }),
                    update_mask: mask(&["name"]),
                    ..Default::default()
                },
            ))
            .await
            .unwrap_err(),
    ];
    for status in refusals {
        assert_status(&status, Code::NotFound, "API_KEY_NOT_FOUND");
        let info = status.get_details_error_info().unwrap();
        assert!(!format!("{} {:?}", status.message(), info.metadata).contains(&bootstrap.id), "{status:?}");
        assert!(status.message().contains(&number), "{status:?}");
    }
    app.stop().await;
}
both!(key_numbers_leak_nothing);

/// Scopes that merely look like `admin` do not count as a live admin key.
async fn only_an_exact_admin_scope_is_an_admin(backend: Backend) {
    let app = spawn(backend).await;
    let store = &app.running().store;
    app.create_key("lookalikes", &["x\"admin", "ADMIN", "admin:read", "notadmin"]).await;
    let (second, second_secret) = app.create_key("ops", &["admin"]).await;
    let bootstrap = app.client.clone().get_caller_api_key(admin(v1::GetCallerApiKeyRequest {})).await.unwrap();
    let mut client = app.client.clone();
    for id in [bootstrap.into_inner().api_key.unwrap().id, second.id] {
        let message = v1::DeleteApiKeyRequest { id, ..Default::default() };
        client.delete_api_key(with_key(&second_secret, message)).await.unwrap();
    }
    assert!(!store.has_live_admin(chrono::Utc::now()).await.unwrap(), "look-alike scopes are not admin");
    app.stop().await;
}
both!(only_an_exact_admin_scope_is_an_admin);

/// Bringing an expired key back to life counts against the owner's quota.
async fn reviving_a_key_respects_the_quota(backend: Backend) {
    let app = spawn_with(backend, |config| config.environments = vec!["production:kw_live:2".parse().unwrap()]).await;
    let mut client = app.client.clone();
    let mut short = key_with("short-lived");
    short.owner = "tenant".into();
    short.expire_time = Some(timestamp_in(1));
    let short = client.create_api_key(admin(create_request(short))).await.unwrap().into_inner().api_key.unwrap();
    app.create_key("tenant", &[]).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    app.create_key("tenant", &[]).await;
    let quota = || v1::GetKeyQuotaRequest { owner: "tenant".into(), environment: String::new() };
    assert_eq!(client.get_key_quota(admin(quota())).await.unwrap().into_inner().used, 2);
    for expire_time in [None, Some(timestamp_in(3600))] {
        let revive = v1::UpdateApiKeyRequest {
            api_key: Some(v1::ApiKey { id: short.id.clone(), expire_time, ..Default::default() }),
            update_mask: mask(&["expire_time"]),
            ..Default::default()
        };
        let refused = client.update_api_key(admin(revive)).await.unwrap_err();
        assert_status(&refused, Code::ResourceExhausted, "KEY_QUOTA_EXCEEDED");
    }
    assert_eq!(client.get_key_quota(admin(quota())).await.unwrap().into_inner().used, 2);
    app.stop().await;
}
both!(reviving_a_key_respects_the_quota);

/// A flood of bad entries gets a short answer naming a few of them.
async fn violations_are_bounded_and_control_characters_refused(backend: Backend) {
    let app = spawn(backend).await;
    let mut client = app.client.clone();
    let mut flood = key_with("flood");
    flood.scopes = vec![String::new(); 21_778];
    flood.metadata = (0..100).map(|n| (format!("k{n}"), String::new())).collect();
    let refused = client.create_api_key(admin(create_request(flood))).await.unwrap_err();
    assert_invalid(&refused, "api_key.scopes");
    assert!(refused.message().len() < 2_000, "{} bytes", refused.message().len());
    assert!(refused.get_details_bad_request().unwrap().field_violations.len() <= 11);

    let mut bad = key_with("forger");
    bad.metadata = [("x\nERROR forged line".to_owned(), "v".to_owned())].into();
    let refused = client.create_api_key(admin(create_request(bad))).await.unwrap_err();
    assert_invalid(&refused, "api_key.metadata");
    assert!(!refused.message().contains('\n'), "{refused:?}");
    let mut bad = key_with("forger");
    bad.metadata = [("k".to_owned(), "value\r\nERROR forged".to_owned())].into();
    assert_invalid(&client.create_api_key(admin(create_request(bad))).await.unwrap_err(), "api_key.metadata.k");
    for name in ["tab\there", "bell\u{7}"] {
        assert_invalid(
            &client.create_api_key(admin(create_request(key_with(name)))).await.unwrap_err(),
            "api_key.name",
        );
    }
    assert_eq!(app.count_rows("api_keys").await, 1, "only the bootstrap key");
    app.stop().await;
}
both!(violations_are_bounded_and_control_characters_refused);

/// The mask of an imported secret shows its last four characters only.
async fn imported_secrets_mask_their_prefix(backend: Backend) {
    let app = spawn(backend).await;
    let passphrase = format!("correct-horse-battery-staple_{}", "S".repeat(45) + "tail");
    let request = v1::CreateApiKeyRequest {
        api_key: Some(key_with("imported")),
        import_secret: passphrase.clone(),
        ..Default::default()
    };
    let key = app.client.clone().create_api_key(admin(request)).await.unwrap().into_inner().api_key.unwrap();
    assert_eq!(key.mask, "…tail");
    let generated = app.create_key("svc", &[]).await.0;
    assert!(generated.mask.starts_with("kw_live_…"), "{}", generated.mask);
    app.stop().await;
}
both!(imported_secrets_mask_their_prefix);

/// A revoked admin key stays revoked and inactive keys stay inactive against a writer of
/// the same owner (the reported escalation, end to end through REST too).
async fn a_writer_cannot_climb_through_its_owners_admin_key(backend: Backend) {
    let app = spawn(backend).await;
    let (admin_key, _) = app.create_key("tenant", &["admin"]).await;
    let (_, writer) = app.create_key("tenant", &["keys:write"]).await;
    let mut client = app.client.clone();
    let inactive = v1::UpdateApiKeyRequest {
        api_key: Some(v1::ApiKey {
            id: admin_key.id.clone(),
            status: ApiKeyStatus::Inactive.into(),
            ..Default::default()
        }),
        update_mask: mask(&["status"]),
        ..Default::default()
    };
    client.update_api_key(admin(inactive.clone())).await.unwrap();
    let mut reactivate = inactive;
    reactivate.api_key.as_mut().unwrap().status = ApiKeyStatus::Active.into();
    let refused = client.update_api_key(with_key(&writer, reactivate)).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    let http = app.running().http_addr;
    let rest = reqwest::Client::new();
    let rotate = rest
        .post(format!("http://{http}/v1/apiKeys/{}:rotate", admin_key.id))
        .bearer_auth(&writer)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(rotate.status(), 403);
    assert!(!rotate.text().await.unwrap().contains("kw_live_"), "no secret in the answer");

    client
        .delete_api_key(admin(v1::DeleteApiKeyRequest { id: admin_key.id.clone(), ..Default::default() }))
        .await
        .unwrap();
    let undelete = v1::UndeleteApiKeyRequest { id: admin_key.id.clone(), ..Default::default() };
    assert_eq!(client.undelete_api_key(with_key(&writer, undelete)).await.unwrap_err().code(), Code::PermissionDenied);
    let key = client.get_api_key(admin(v1::GetApiKeyRequest { id: admin_key.id })).await.unwrap().into_inner();
    assert_eq!(key.api_key.unwrap().status(), ApiKeyStatus::Revoked);
    app.stop().await;
}
both!(a_writer_cannot_climb_through_its_owners_admin_key);
