//! VerifyApiKey answers: every code, and malformed input refused without a lookup.

use keyward_proto::v1::{self, VerificationCode};

use crate::helpers::{Backend, admin, both, create_request, key_with, spawn, timestamp_in};

async fn every_verification_code(backend: Backend) {
    let app = spawn(backend).await;
    let mut client = app.client.clone();
    let mut key = key_with("scoped");
    key.scopes = vec!["app:read".into()];
    key.networks = vec!["Mainnet".into()];
    let secret = client.create_api_key(admin(create_request(key))).await.unwrap().into_inner().secret;

    let code = |response: v1::VerifyApiKeyResponse| (response.valid, response.code());
    assert_eq!(code(app.verify(&secret, &["app:read"], "Mainnet").await), (true, VerificationCode::Valid));
    assert_eq!(
        code(app.verify(&secret, &[], "").await),
        (true, VerificationCode::Valid),
        "empty network skips the check"
    );
    assert_eq!(code(app.verify(&secret, &["app:write"], "").await), (false, VerificationCode::InsufficientScope));
    assert_eq!(code(app.verify(&secret, &[], "Preprod").await), (false, VerificationCode::NetworkNotAllowed));

    let mut typo = secret.clone().into_bytes();
    let at = typo.len() - 10;
    typo[at] = if typo[at] == b'x' { b'y' } else { b'x' };
    let typo = String::from_utf8(typo).unwrap();
    // `key` is REQUIRED: none at all is a malformed request, not a malformed key.
    let empty = client.verify_api_key(admin(v1::VerifyApiKeyRequest::default())).await;
    assert_eq!(empty.unwrap_err().code(), tonic::Code::InvalidArgument);
    for malformed in
        ["garbage".into(), typo, "kw_live_".into(), "x".repeat(100 * 1024), "has spaces in it, many".into()]
    {
        let answer = app.verify(&malformed, &[], "").await;
        assert_eq!(code(answer), (false, VerificationCode::Malformed), "{malformed:.40}");
    }
    let well_formed_unknown = {
        let other = client.create_api_key(admin(create_request(key_with("other")))).await.unwrap().into_inner();
        client
            .rotate_api_key(admin(v1::RotateApiKeyRequest { id: other.api_key.unwrap().id, ..Default::default() }))
            .await
            .unwrap();
        other.secret
    };
    let answer = app.verify(&well_formed_unknown, &[], "").await;
    assert_eq!(code(answer.clone()), (false, VerificationCode::NotFound));
    assert!(answer.api_key.is_none());
    assert_eq!(code(app.verify("an-unknown-imported-token", &[], "").await), (false, VerificationCode::NotFound));

    let mut short_lived = key_with("short lived");
    short_lived.expire_time = Some(timestamp_in(2));
    let short = client.create_api_key(admin(create_request(short_lived))).await.unwrap().into_inner().secret;
    assert!(app.verify(&short, &[], "").await.valid);
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    let expired = app.verify(&short, &[], "").await;
    assert_eq!(code(expired.clone()), (false, VerificationCode::Expired));
    assert!(expired.api_key.is_some(), "the key is named when it was found");
    app.stop().await;
}
both!(every_verification_code);

async fn imported_secrets_verify_and_are_hashed(backend: Backend) {
    let app = spawn(backend).await;
    let mut client = app.client.clone();
    let imported = "masumi_payment_api_key_secret_42";
    let request = v1::CreateApiKeyRequest {
        api_key: Some(key_with("migrated")),
        import_secret: imported.into(),
        request_id: String::new(),
    };
    let created = client.create_api_key(admin(request.clone())).await.unwrap().into_inner();
    assert_eq!(created.secret, imported);
    assert_eq!(created.api_key.unwrap().mask, "…t_42");
    assert!(app.verify(imported, &[], "").await.valid);

    let duplicate = client.create_api_key(admin(request)).await.unwrap_err();
    crate::helpers::assert_status(&duplicate, tonic::Code::AlreadyExists, "SECRET_ALREADY_EXISTS");

    // Only keyed hashes are stored: no column of any secret row holds the secret.
    let backend = app.running().store.connection().get_database_backend();
    let rows = app
        .running()
        .store
        .connection()
        .query_all_raw(sea_orm::Statement::from_string(backend, "SELECT secret_hash FROM api_key_secrets".to_owned()))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2, "the admin's and the imported one");
    for row in rows {
        let hash: String = row.try_get("", "secret_hash").unwrap();
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(imported) && !hash.contains(crate::helpers::ADMIN_KEY));
    }
    app.stop().await;
}
both!(imported_secrets_verify_and_are_hashed);

use sea_orm::ConnectionTrait;
