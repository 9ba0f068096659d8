//! Bad input: INVALID_ARGUMENT naming each field, and nothing half-written.

use keyward_proto::v1;
use tonic::Code;

use crate::helpers::{Backend, admin, assert_invalid, assert_status, both, create_request, key_with, spawn};

async fn bad_creates_are_refused_and_write_nothing(backend: Backend) {
    let app = spawn(backend).await;
    let mut client = app.client.clone();
    let keys_before = app.count_rows("api_keys").await;
    let secrets_before = app.count_rows("api_key_secrets").await;

    let missing = client.create_api_key(admin(v1::CreateApiKeyRequest::default())).await.unwrap_err();
    assert_invalid(&missing, "api_key");
    for (name, why) in [("", "empty"), ("   ", "blank"), (&"n".repeat(10 * 1024), "10 KB")] {
        let status = client.create_api_key(admin(create_request(key_with(name)))).await.unwrap_err();
        assert_invalid(&status, "api_key.name");
        assert!(!status.message().is_empty(), "{why}: a message a person can act on");
    }
    let mut bad = key_with("ok");
    bad.environment = "staging".into();
    bad.scopes = vec!["has space".into()];
    bad.status = v1::ApiKeyStatus::Revoked.into();
    bad.expire_time = Some(prost_types::Timestamp { seconds: 1, nanos: 0 });
    let status = client.create_api_key(admin(create_request(bad))).await.unwrap_err();
    for field in ["api_key.environment", "api_key.scopes[0]", "api_key.status", "api_key.expire_time"] {
        assert_invalid(&status, field);
    }
    let request_id = v1::CreateApiKeyRequest {
        api_key: Some(key_with("ok")),
        request_id: "not-a-uuid".into(),
        import_secret: String::new(),
    };
    assert_invalid(&client.create_api_key(admin(request_id)).await.unwrap_err(), "request_id");
    let short_import = v1::CreateApiKeyRequest {
        api_key: Some(key_with("ok")),
        request_id: String::new(),
        import_secret: "short".into(),
    };
    assert_invalid(&client.create_api_key(admin(short_import)).await.unwrap_err(), "import_secret");
    let long_import = v1::CreateApiKeyRequest {
        api_key: Some(key_with("ok")),
        request_id: String::new(),
        import_secret: "x".repeat(551),
    };
    assert_invalid(&client.create_api_key(admin(long_import)).await.unwrap_err(), "import_secret");

    assert_eq!(app.count_rows("api_keys").await, keys_before, "no key half-written");
    assert_eq!(app.count_rows("api_key_secrets").await, secrets_before, "no secret half-written");
    app.stop().await;
}
both!(bad_creates_are_refused_and_write_nothing);

async fn bad_ids_masks_and_page_sizes(backend: Backend) {
    let app = spawn(backend).await;
    let mut client = app.client.clone();
    let (key, _) = app.create_key("validation", &[]).await;

    for id in ["", "not-a-uuid", "../../etc/passwd", &"f".repeat(5000)] {
        assert_invalid(&client.get_api_key(admin(v1::GetApiKeyRequest { id: id.to_owned() })).await.unwrap_err(), "id");
        let delete = v1::DeleteApiKeyRequest { id: id.to_owned(), request_id: String::new() };
        assert_invalid(&client.delete_api_key(admin(delete)).await.unwrap_err(), "id");
        let rotate = v1::RotateApiKeyRequest { id: id.to_owned(), ..Default::default() };
        assert_invalid(&client.rotate_api_key(admin(rotate)).await.unwrap_err(), "id");
    }
    let unknown =
        client.get_api_key(admin(v1::GetApiKeyRequest { id: uuid::Uuid::now_v7().to_string() })).await.unwrap_err();
    assert_status(&unknown, Code::NotFound, "API_KEY_NOT_FOUND");

    let update = |paths: &[&str]| v1::UpdateApiKeyRequest {
        api_key: Some(v1::ApiKey { id: key.id.clone(), name: "renamed".into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() }),
        request_id: String::new(),
        ..Default::default()
    };
    assert_invalid(&client.update_api_key(admin(update(&["owner"]))).await.unwrap_err(), "update_mask.paths[0]");
    assert_invalid(
        &client.update_api_key(admin(update(&["name", "bogus"]))).await.unwrap_err(),
        "update_mask.paths[1]",
    );
    assert_invalid(&client.update_api_key(admin(update(&[]))).await.unwrap_err(), "update_mask");
    assert_invalid(&client.update_api_key(admin(update(&["status"]))).await.unwrap_err(), "api_key.status");
    assert_invalid(&client.update_api_key(admin(v1::UpdateApiKeyRequest::default())).await.unwrap_err(), "api_key");
    let unchanged = client.get_api_key(admin(v1::GetApiKeyRequest { id: key.id.clone() })).await.unwrap().into_inner();
    assert_eq!(unchanged.api_key.unwrap().name, key.name, "a refused update changes nothing");

    let negative = v1::ListApiKeysRequest { page_size: -1, ..Default::default() };
    assert_invalid(&client.list_api_keys(admin(negative)).await.unwrap_err(), "page_size");
    let bad_token = v1::ListApiKeysRequest { page_token: "%%%".into(), ..Default::default() };
    assert_invalid(&client.list_api_keys(admin(bad_token)).await.unwrap_err(), "page_token");
    let bad_scope =
        v1::VerifyApiKeyRequest { key: "whatever".into(), required_scopes: vec![String::new()], ..Default::default() };
    assert_invalid(&client.verify_api_key(admin(bad_scope)).await.unwrap_err(), "required_scopes[0]");
    app.stop().await;
}
both!(bad_ids_masks_and_page_sizes);
