//! Every rights rule: credentials, each scope, and callers whose own key went bad.

use keyward_proto::v1::{self, ApiKeyStatus, api_key_service_client::ApiKeyServiceClient};
use tonic::{Code, Request, Status, transport::Channel};
use tonic_types::StatusExt;

use crate::helpers::{Backend, admin, assert_status, both, create_request, key_with, spawn, timestamp_in, with_key};

/// Calls every RPC with `make` deciding the credentials; returns each outcome's code.
async fn call_all(client: &ApiKeyServiceClient<Channel>, make: impl Fn() -> Request<()>) -> Vec<(&'static str, Code)> {
    fn dress<T>(bare: Request<()>, message: T) -> Request<T> {
        let (metadata, extensions, ()) = bare.into_parts();
        Request::from_parts(metadata, extensions, message)
    }
    let id = uuid::Uuid::now_v7().to_string();
    let code = |result: Result<(), Status>| result.map_or_else(|status| status.code(), |()| Code::Ok);
    let mut c = client.clone();
    vec![
        ("CreateApiKey", code(c.create_api_key(dress(make(), create_request(key_with("k")))).await.map(drop))),
        ("GetApiKey", code(c.get_api_key(dress(make(), v1::GetApiKeyRequest { id: id.clone() })).await.map(drop))),
        ("ListApiKeys", code(c.list_api_keys(dress(make(), v1::ListApiKeysRequest::default())).await.map(drop))),
        ("UpdateApiKey", code(c.update_api_key(dress(make(), v1::UpdateApiKeyRequest::default())).await.map(drop))),
        (
            "DeleteApiKey",
            code(
                c.delete_api_key(dress(make(), v1::DeleteApiKeyRequest { id: id.clone(), ..Default::default() }))
                    .await
                    .map(drop),
            ),
        ),
        (
            "UndeleteApiKey",
            code(
                c.undelete_api_key(dress(make(), v1::UndeleteApiKeyRequest { id: id.clone(), ..Default::default() }))
                    .await
                    .map(drop),
            ),
        ),
        (
            "RotateApiKey",
            code(c.rotate_api_key(dress(make(), v1::RotateApiKeyRequest { id, ..Default::default() })).await.map(drop)),
        ),
        ("VerifyApiKey", code(c.verify_api_key(dress(make(), v1::VerifyApiKeyRequest::default())).await.map(drop))),
        ("GetCallerApiKey", code(c.get_caller_api_key(dress(make(), v1::GetCallerApiKeyRequest {})).await.map(drop))),
        ("GetKeyQuota", code(c.get_key_quota(dress(make(), v1::GetKeyQuotaRequest::default())).await.map(drop))),
    ]
}

fn bearer(value: &str) -> Request<()> {
    let mut request = Request::new(());
    request.metadata_mut().insert("authorization", value.parse().unwrap());
    request
}

async fn bad_credentials_are_unauthenticated_everywhere(backend: Backend) {
    let app = spawn(backend).await;
    let (inactive, inactive_secret) = app.create_key("svc", &["admin"]).await;
    let (revoked, revoked_secret) = app.create_key("svc", &["admin"]).await;
    let mut expiring = key_with("expiring admin");
    expiring.scopes = vec!["admin".into()];
    expiring.expire_time = Some(timestamp_in(2));
    let expiring_secret =
        app.client.clone().create_api_key(admin(create_request(expiring))).await.unwrap().into_inner().secret;
    let mut client = app.client.clone();
    client
        .update_api_key(admin(v1::UpdateApiKeyRequest {
            api_key: Some(v1::ApiKey { id: inactive.id, status: ApiKeyStatus::Inactive.into(), ..Default::default() }),
            update_mask: Some(prost_types::FieldMask { paths: vec!["status".into()] }),
            request_id: String::new(),
            ..Default::default()
        }))
        .await
        .unwrap();
    client.delete_api_key(admin(v1::DeleteApiKeyRequest { id: revoked.id, request_id: String::new() })).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;

    let cases: Vec<(&str, Option<String>)> = vec![
        ("no credentials", None),
        ("garbage key", Some("Bearer garbage".into())),
        ("wrong scheme", Some(format!("Basic {}", crate::helpers::ADMIN_KEY))),
        ("empty bearer", Some("Bearer ".into())),
        ("unknown imported-looking key", Some("Bearer not-a-key-we-know-of".into())),
        ("inactive caller key", Some(format!("Bearer {inactive_secret}"))),
        ("revoked caller key", Some(format!("Bearer {revoked_secret}"))),
        ("expired caller key", Some(format!("Bearer {expiring_secret}"))),
    ];
    for (case, header) in cases {
        let make = || header.as_deref().map_or_else(|| Request::new(()), bearer);
        for (rpc, code) in call_all(&app.client, make).await {
            assert_eq!(code, Code::Unauthenticated, "{rpc} with {case}");
        }
        // A key found by its secret says why it is refused; no other credential says anything.
        let key_status = match case {
            "inactive caller key" => Some("API_KEY_STATUS_INACTIVE"),
            "revoked caller key" => Some("API_KEY_STATUS_REVOKED"),
            "expired caller key" => Some("API_KEY_STATUS_EXPIRED"),
            _ => None,
        };
        let (metadata, extensions, ()) = make().into_parts();
        let request = Request::from_parts(metadata, extensions, v1::GetCallerApiKeyRequest {});
        let status = client.get_caller_api_key(request).await.unwrap_err();
        assert_status(&status, Code::Unauthenticated, "UNAUTHENTICATED");
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.metadata.get(keyward_proto::ERROR_KEY_STATUS).map(String::as_str), key_status, "{case}");
        assert_eq!(info.metadata.len(), usize::from(key_status.is_some()), "{case}: {:?}", info.metadata);
    }
    let status = client.get_caller_api_key(Request::new(v1::GetCallerApiKeyRequest {})).await.unwrap_err();
    assert_status(&status, Code::Unauthenticated, "UNAUTHENTICATED");
    app.stop().await;
}
both!(bad_credentials_are_unauthenticated_everywhere);

async fn the_token_header_authenticates_too(backend: Backend) {
    let app = spawn(backend).await;
    let mut request = Request::new(v1::GetCallerApiKeyRequest {});
    request.metadata_mut().insert("token", crate::helpers::ADMIN_KEY.parse().unwrap());
    let caller = app.client.clone().get_caller_api_key(request).await.unwrap().into_inner().api_key.unwrap();
    assert_eq!(caller.name, "bootstrap admin");
    assert_eq!(caller.scopes, vec!["admin".to_owned()]);
    app.stop().await;
}
both!(the_token_header_authenticates_too);

async fn each_scope_grants_exactly_its_rights(backend: Backend) {
    let app = spawn(backend).await;
    let (_, reader) = app.create_key("team-a", &["keys:read"]).await;
    let (_, writer) = app.create_key("team-a", &["keys:write"]).await;
    let (_, verifier) = app.create_key("team-a", &["verify"]).await;
    let (_, plain) = app.create_key("team-a", &["app:read"]).await;
    let (own_key, own_secret) = app.create_key("team-a", &["app:read"]).await;
    let (foreign_key, _) = app.create_key("team-b", &[]).await;
    let mut client = app.client.clone();
    let get = |key: &str, id: &str| with_key(key, v1::GetApiKeyRequest { id: id.to_owned() });

    // keys:read: own keys only; foreign keys are NOT_FOUND, never PERMISSION_DENIED.
    assert_eq!(
        client.get_api_key(get(&reader, &own_key.id)).await.unwrap().into_inner().api_key.unwrap().id,
        own_key.id
    );
    assert_status(
        &client.get_api_key(get(&reader, &foreign_key.id)).await.unwrap_err(),
        Code::NotFound,
        "API_KEY_NOT_FOUND",
    );
    let listed = client.list_api_keys(with_key(&reader, v1::ListApiKeysRequest::default())).await.unwrap().into_inner();
    assert!(listed.api_keys.iter().all(|k| k.owner == "team-a") && listed.api_keys.len() == 5);
    let foreign_filter = v1::ListApiKeysRequest { owner: "team-b".into(), ..Default::default() };
    assert!(client.list_api_keys(with_key(&reader, foreign_filter)).await.unwrap().into_inner().api_keys.is_empty());
    let create = client.create_api_key(with_key(&reader, create_request(key_with("x")))).await.unwrap_err();
    assert_status(&create, Code::PermissionDenied, "PERMISSION_DENIED");
    let quota = client.get_key_quota(with_key(&reader, v1::GetKeyQuotaRequest::default())).await.unwrap().into_inner();
    assert_eq!(quota.used, 5);
    let foreign_quota = v1::GetKeyQuotaRequest { owner: "team-b".into(), environment: String::new() };
    assert_status(
        &client.get_key_quota(with_key(&reader, foreign_quota)).await.unwrap_err(),
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let verify = v1::VerifyApiKeyRequest { key: own_secret.clone(), ..Default::default() };
    assert_status(
        &client.verify_api_key(with_key(&reader, verify.clone())).await.unwrap_err(),
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );

    // keys:write: creates for its own owner, no more than its own keyward scopes, no imports.
    let created = client.create_api_key(with_key(&writer, create_request(key_with("made by writer")))).await.unwrap();
    let created = created.into_inner().api_key.unwrap();
    assert_eq!(created.owner, "team-a");
    let mut for_other = key_with("for b");
    for_other.owner = "team-b".into();
    assert_status(
        &client.create_api_key(with_key(&writer, create_request(for_other))).await.unwrap_err(),
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let mut escalate = key_with("escalate");
    escalate.scopes = vec!["admin".into()];
    assert_status(
        &client.create_api_key(with_key(&writer, create_request(escalate))).await.unwrap_err(),
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let escalate_update = v1::UpdateApiKeyRequest {
        api_key: Some(v1::ApiKey { id: created.id.clone(), scopes: vec!["verify".into()], ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["scopes".into()] }),
        request_id: String::new(),
        ..Default::default()
    };
    assert_status(
        &client.update_api_key(with_key(&writer, escalate_update)).await.unwrap_err(),
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let import = v1::CreateApiKeyRequest {
        api_key: Some(key_with("imp")),
        import_secret: "a-chosen-secret-123".into(),
        request_id: String::new(),
    };
    assert_status(
        &client.create_api_key(with_key(&writer, import)).await.unwrap_err(),
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );
    let rotate_foreign = v1::RotateApiKeyRequest { id: foreign_key.id.clone(), ..Default::default() };
    assert_status(
        &client.rotate_api_key(with_key(&writer, rotate_foreign)).await.unwrap_err(),
        Code::NotFound,
        "API_KEY_NOT_FOUND",
    );
    let delete_foreign = v1::DeleteApiKeyRequest { id: foreign_key.id.clone(), request_id: String::new() };
    assert_status(
        &client.delete_api_key(with_key(&writer, delete_foreign)).await.unwrap_err(),
        Code::NotFound,
        "API_KEY_NOT_FOUND",
    );
    let delete_own = v1::DeleteApiKeyRequest { id: created.id.clone(), request_id: String::new() };
    client.delete_api_key(with_key(&writer, delete_own)).await.expect("writer deletes its owner's key");
    let undelete_own = v1::UndeleteApiKeyRequest { id: created.id.clone(), request_id: String::new() };
    client.undelete_api_key(with_key(&writer, undelete_own)).await.expect("and undeletes it");
    assert_status(
        &client.verify_api_key(with_key(&writer, verify.clone())).await.unwrap_err(),
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );

    // verify: any key, nothing else.
    assert!(client.verify_api_key(with_key(&verifier, verify.clone())).await.unwrap().into_inner().valid);
    let foreign_secret = app.create_key("team-c", &[]).await.1;
    let verify_foreign = v1::VerifyApiKeyRequest { key: foreign_secret, ..Default::default() };
    assert!(client.verify_api_key(with_key(&verifier, verify_foreign)).await.unwrap().into_inner().valid);
    assert_status(
        &client.list_api_keys(with_key(&verifier, v1::ListApiKeysRequest::default())).await.unwrap_err(),
        Code::PermissionDenied,
        "PERMISSION_DENIED",
    );

    // An application-only key may read itself and nothing else.
    let me = client.get_caller_api_key(with_key(&plain, v1::GetCallerApiKeyRequest {})).await.unwrap().into_inner();
    assert_eq!(me.api_key.unwrap().scopes, vec!["app:read".to_owned()]);
    for (rpc, code) in call_all(&app.client, || crate::helpers::with_key(&plain, ())).await {
        let expected = if rpc == "GetCallerApiKey" { Code::Ok } else { Code::PermissionDenied };
        assert_eq!(code, expected, "{rpc} with an application-only key");
    }
    app.stop().await;
}
both!(each_scope_grants_exactly_its_rights);
