//! AIP-155 request ids: retries replay, never double-apply, never re-show a secret.

use keyward_proto::v1;
use tonic::Code;

use crate::helpers::{Backend, admin, assert_invalid, assert_status, both, key_with, spawn};

async fn retries_apply_once(backend: Backend) {
    let app = spawn(backend).await;
    let mut client = app.client.clone();
    let request_id = uuid::Uuid::new_v4().to_string();
    let create = v1::CreateApiKeyRequest {
        api_key: Some(key_with("once")),
        request_id: request_id.clone(),
        import_secret: String::new(),
    };
    let first = client.create_api_key(admin(create.clone())).await.unwrap().into_inner();
    let keys = app.count_rows("api_keys").await;
    let replay = client.create_api_key(admin(create)).await.unwrap_err();
    assert_status(&replay, Code::AlreadyExists, "REQUEST_ALREADY_APPLIED");
    let info = tonic_types::StatusExt::get_details_error_info(&replay).unwrap();
    assert_eq!(info.metadata.get("id"), first.api_key.as_ref().map(|k| &k.id), "names the key of the first call");
    assert!(!replay.message().contains(&first.secret), "the secret is never shown again");
    assert_eq!(app.count_rows("api_keys").await, keys, "no second key");

    let id = first.api_key.unwrap().id;
    let delete_id = uuid::Uuid::new_v4().to_string();
    let delete = v1::DeleteApiKeyRequest { id: id.clone(), request_id: delete_id.clone() };
    let deleted = client.delete_api_key(admin(delete.clone())).await.unwrap().into_inner().api_key.unwrap();
    let again = client.delete_api_key(admin(delete)).await.unwrap().into_inner().api_key.unwrap();
    assert_eq!(deleted, again, "a retried delete replays the answer instead of failing");

    let undelete = v1::UndeleteApiKeyRequest { id: id.clone(), request_id: delete_id };
    assert_invalid(&client.undelete_api_key(admin(undelete)).await.unwrap_err(), "request_id");

    client
        .undelete_api_key(admin(v1::UndeleteApiKeyRequest { id: id.clone(), request_id: String::new() }))
        .await
        .unwrap();
    let rotate =
        v1::RotateApiKeyRequest { id: id.clone(), request_id: uuid::Uuid::new_v4().to_string(), ..Default::default() };
    let rotated = client.rotate_api_key(admin(rotate.clone())).await.unwrap().into_inner();
    assert_status(
        &client.rotate_api_key(admin(rotate)).await.unwrap_err(),
        Code::AlreadyExists,
        "REQUEST_ALREADY_APPLIED",
    );
    assert!(app.verify(&rotated.secret, &[], "").await.valid, "the replay did not rotate again");

    let update = v1::UpdateApiKeyRequest {
        api_key: Some(v1::ApiKey { id, name: "renamed once".into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["name".into()] }),
        request_id: uuid::Uuid::new_v4().to_string(),
        ..Default::default()
    };
    let updated = client.update_api_key(admin(update.clone())).await.unwrap().into_inner();
    let replayed = client.update_api_key(admin(update)).await.unwrap().into_inner();
    assert_eq!(updated, replayed);
    let update_events =
        app.running().store.audit_events().await.unwrap().into_iter().filter(|e| e.action == "UpdateApiKey").count();
    assert_eq!(update_events, 1, "applied once");
    app.stop().await;
}
both!(retries_apply_once);
