//! RPC provider keys: admin-only storage, encrypted at rest, tamper-evident, and a
//! master key that can be rotated and is checked at start.

use std::collections::HashMap;

use keyward_proto::v1::{self, rpc_provider_key_service_client::RpcProviderKeyServiceClient};
use keyward_store::entity::rpc_provider_key;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, sea_query::Expr};
use tonic::{Code, transport::Channel};

use crate::helpers::{Backend, Replica, admin, assert_invalid, assert_status, both, keyward_binary, spawn, with_key};

fn client(channel: &Channel) -> RpcProviderKeyServiceClient<Channel> {
    RpcProviderKeyServiceClient::new(channel.clone())
}

fn new_key(network: &str, secret: &str) -> v1::CreateRpcProviderKeyRequest {
    v1::CreateRpcProviderKeyRequest {
        rpc_provider_key: Some(v1::RpcProviderKey {
            network: network.into(),
            provider: "Blockfrost".into(),
            secret: secret.into(),
            description: format!("{network} project"),
            enabled: true,
            ..Default::default()
        }),
    }
}

async fn create_read_update_delete(backend: Backend) {
    let app = spawn(backend).await;
    let mut rpc = client(&app.channel);
    let created = rpc.create_rpc_provider_key(admin(new_key("Preprod", "preprodAbCdEf123456"))).await.unwrap();
    let created = created.into_inner().rpc_provider_key.unwrap();
    assert_eq!((created.secret.as_str(), created.secret_mask.as_str()), ("", "…3456"), "masked by default");
    rpc.create_rpc_provider_key(admin(new_key("Mainnet", "mainnetXyZ987654"))).await.unwrap();

    let get = |reveal| admin(v1::GetRpcProviderKeyRequest { id: created.id.clone(), reveal });
    assert_eq!(rpc.get_rpc_provider_key(get(false)).await.unwrap().into_inner().rpc_provider_key.unwrap().secret, "");
    let revealed = rpc.get_rpc_provider_key(get(true)).await.unwrap().into_inner().rpc_provider_key.unwrap();
    assert_eq!(revealed.secret, "preprodAbCdEf123456");
    assert_eq!((revealed.network.as_str(), revealed.provider.as_str()), ("Preprod", "Blockfrost"));

    let list = |network: &str| {
        admin(v1::ListRpcProviderKeysRequest { network: network.into(), reveal: true, ..Default::default() })
    };
    let mainnet = rpc.list_rpc_provider_keys(list("Mainnet")).await.unwrap().into_inner().rpc_provider_keys;
    assert_eq!(mainnet.iter().map(|k| k.secret.as_str()).collect::<Vec<_>>(), vec!["mainnetXyZ987654"]);
    assert_eq!(rpc.list_rpc_provider_keys(list("")).await.unwrap().into_inner().rpc_provider_keys.len(), 2);

    let update = v1::UpdateRpcProviderKeyRequest {
        rpc_provider_key: Some(v1::RpcProviderKey {
            id: created.id.clone(),
            secret: "rotatedPreprodKey42".into(),
            enabled: false,
            ..Default::default()
        }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["secret".into(), "enabled".into()] }),
    };
    let updated = rpc.update_rpc_provider_key(admin(update)).await.unwrap().into_inner().rpc_provider_key.unwrap();
    assert_eq!((updated.secret_mask.as_str(), updated.enabled), ("…ey42", false));
    assert_eq!(updated.description, "Preprod project", "fields outside the mask stay");
    let revealed = rpc.get_rpc_provider_key(get(true)).await.unwrap().into_inner().rpc_provider_key.unwrap();
    assert_eq!(revealed.secret, "rotatedPreprodKey42");

    let bad_mask = v1::UpdateRpcProviderKeyRequest {
        rpc_provider_key: Some(v1::RpcProviderKey { id: created.id.clone(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["network".into()] }),
    };
    assert_invalid(&rpc.update_rpc_provider_key(admin(bad_mask)).await.unwrap_err(), "update_mask.paths[0]");
    let empty = rpc.create_rpc_provider_key(admin(new_key("", ""))).await.unwrap_err();
    assert_invalid(&empty, "rpc_provider_key.secret");
    assert_invalid(&empty, "rpc_provider_key.network");

    rpc.delete_rpc_provider_key(admin(v1::DeleteRpcProviderKeyRequest { id: created.id.clone() })).await.unwrap();
    assert_status(
        &rpc.get_rpc_provider_key(get(false)).await.unwrap_err(),
        Code::NotFound,
        "RPC_PROVIDER_KEY_NOT_FOUND",
    );
    let again = rpc.delete_rpc_provider_key(admin(v1::DeleteRpcProviderKeyRequest { id: created.id.clone() })).await;
    assert_status(&again.unwrap_err(), Code::NotFound, "RPC_PROVIDER_KEY_NOT_FOUND");

    let events = app.running().store.audit_events().await.unwrap();
    let reads = events.iter().filter(|e| e.action == "GetRpcProviderKey" && e.target == created.id).count();
    assert_eq!(reads, 4, "every read is audited, reveals included");
    assert!(events.iter().any(|e| e.action == "ListRpcProviderKeys"));
    assert!(events.iter().any(|e| e.action == "DeleteRpcProviderKey" && e.outcome == "NOT_FOUND"));
    app.stop().await;
}
both!(create_read_update_delete);

async fn only_admins_reach_rpc_provider_keys(backend: Backend) {
    let app = spawn(backend).await;
    let (_, writer) = app.create_key("ops", &["keys:write", "keys:read", "verify"]).await;
    let mut rpc = client(&app.channel);
    let id = rpc.create_rpc_provider_key(admin(new_key("Preprod", "secretsecret1"))).await.unwrap();
    let id = id.into_inner().rpc_provider_key.unwrap().id;
    let denied = |status: tonic::Status| assert_status(&status, Code::PermissionDenied, "PERMISSION_DENIED");
    denied(rpc.create_rpc_provider_key(with_key(&writer, new_key("Preprod", "x12345"))).await.unwrap_err());
    denied(
        rpc.get_rpc_provider_key(with_key(&writer, v1::GetRpcProviderKeyRequest { id: id.clone(), reveal: false }))
            .await
            .unwrap_err(),
    );
    denied(rpc.list_rpc_provider_keys(with_key(&writer, v1::ListRpcProviderKeysRequest::default())).await.unwrap_err());
    denied(
        rpc.update_rpc_provider_key(with_key(&writer, v1::UpdateRpcProviderKeyRequest::default())).await.unwrap_err(),
    );
    denied(rpc.delete_rpc_provider_key(with_key(&writer, v1::DeleteRpcProviderKeyRequest { id })).await.unwrap_err());
    let anonymous = rpc.list_rpc_provider_keys(tonic::Request::new(v1::ListRpcProviderKeysRequest::default())).await;
    assert_eq!(anonymous.unwrap_err().code(), Code::Unauthenticated);
    app.stop().await;
}
both!(only_admins_reach_rpc_provider_keys);

async fn secrets_are_sealed_and_tampering_is_detected(backend: Backend) {
    let app = spawn(backend).await;
    let mut rpc = client(&app.channel);
    let mut ids = vec![];
    for (network, secret) in
        [("Preprod", "firstSecretValue01"), ("Mainnet", "secondSecretValue2"), ("Preview", "thirdSecretValue03")]
    {
        let created = rpc.create_rpc_provider_key(admin(new_key(network, secret))).await.unwrap();
        ids.push(created.into_inner().rpc_provider_key.unwrap().id);
    }
    let db = app.running().store.connection();
    let rows = rpc_provider_key::Entity::find().all(db).await.unwrap();
    for row in &rows {
        let raw = format!("{row:?}");
        for secret in ["firstSecretValue01", "secondSecretValue2", "thirdSecretValue03"] {
            assert!(!raw.contains(secret), "the stored row holds the secret in clear: {raw}");
        }
    }
    let id = |n: usize| uuid::Uuid::parse_str(&ids[n]).unwrap();
    let sealed: HashMap<_, _> = rows.iter().map(|row| (row.id, row.sealed_secret.clone())).collect();
    let expect_data_loss = |status: tonic::Status| assert_status(&status, Code::DataLoss, "CIPHERTEXT_INVALID");
    let get = |n: usize| admin(v1::GetRpcProviderKeyRequest { id: ids[n].clone(), reveal: true });

    // A flipped bit in the ciphertext.
    let mut altered = sealed[&id(0)].clone().into_bytes();
    altered[20] = if altered[20] == b'A' { b'B' } else { b'A' };
    rpc_provider_key::Entity::update_many()
        .col_expr(rpc_provider_key::Column::SealedSecret, Expr::value(String::from_utf8(altered).unwrap()))
        .filter(rpc_provider_key::Column::Id.eq(id(0)))
        .exec(db)
        .await
        .unwrap();
    expect_data_loss(rpc.get_rpc_provider_key(get(0)).await.unwrap_err());
    // Another row's ciphertext, moved over.
    rpc_provider_key::Entity::update_many()
        .col_expr(rpc_provider_key::Column::SealedSecret, Expr::value(sealed[&id(2)].clone()))
        .filter(rpc_provider_key::Column::Id.eq(id(1)))
        .exec(db)
        .await
        .unwrap();
    expect_data_loss(rpc.get_rpc_provider_key(get(1)).await.unwrap_err());
    // The row's id changed under its ciphertext.
    let moved = uuid::Uuid::now_v7();
    rpc_provider_key::Entity::update_many()
        .col_expr(rpc_provider_key::Column::Id, Expr::value(moved))
        .filter(rpc_provider_key::Column::Id.eq(id(2)))
        .exec(db)
        .await
        .unwrap();
    let moved_get = admin(v1::GetRpcProviderKeyRequest { id: moved.to_string(), reveal: false });
    expect_data_loss(rpc.get_rpc_provider_key(moved_get).await.unwrap_err());
    let listing = rpc.list_rpc_provider_keys(admin(v1::ListRpcProviderKeysRequest::default())).await.unwrap_err();
    assert_eq!(listing.code(), Code::DataLoss, "a list never returns garbage either");
    app.stop().await;
}
both!(secrets_are_sealed_and_tampering_is_detected);

async fn pages_return_each_rpc_provider_key_once(backend: Backend) {
    let app = spawn(backend).await;
    let mut rpc = client(&app.channel);
    let mut created = std::collections::BTreeSet::new();
    for n in 0..250 {
        let network = if n % 2 == 0 { "Preprod" } else { "Mainnet" };
        let key = rpc.create_rpc_provider_key(admin(new_key(network, &format!("secret-{n:04}")))).await.unwrap();
        created.insert(key.into_inner().rpc_provider_key.unwrap().id);
    }
    let first =
        rpc.list_rpc_provider_keys(admin(v1::ListRpcProviderKeysRequest::default())).await.unwrap().into_inner();
    assert_eq!(first.rpc_provider_keys.len(), 100, "the default page is 100, as in Masumi");
    let mut seen = vec![];
    let mut token = String::new();
    loop {
        let request = v1::ListRpcProviderKeysRequest { page_size: 7, page_token: token, ..Default::default() };
        let page = rpc.list_rpc_provider_keys(admin(request)).await.unwrap().into_inner();
        seen.extend(page.rpc_provider_keys.into_iter().map(|key| key.id));
        token = page.next_page_token;
        if token.is_empty() {
            break;
        }
    }
    assert_eq!(seen.len(), 250, "no key twice");
    assert_eq!(seen.into_iter().collect::<std::collections::BTreeSet<_>>(), created);
    let negative = v1::ListRpcProviderKeysRequest { page_size: -5, ..Default::default() };
    assert_invalid(&rpc.list_rpc_provider_keys(admin(negative)).await.unwrap_err(), "page_size");
    app.stop().await;
}
both!(pages_return_each_rpc_provider_key_once);

async fn master_key_rotation_end_to_end(backend: Backend) {
    // The harness provides the database; servers and the rotation run as processes.
    let app = spawn(backend).await;
    let url = app.config.store.database_url();
    let mut app = app;
    app.running.take().unwrap().stop().await.unwrap();
    let keys = tempfile::tempdir().unwrap();
    let key_file = |name: &str, byte: u8| {
        let path = keys.path().join(name);
        std::fs::write(&path, base64_of(&[byte; 32])).unwrap();
        path
    };
    let (old, new, wrong) = (key_file("old", 1), key_file("new", 2), key_file("wrong", 3));
    let data = tempfile::tempdir().unwrap();
    let env_for = |path: &std::path::Path| vec![("KEYWARD_MASTER_KEY_FILE", path.to_str().unwrap().to_owned())];

    // The harness sealed its canary with the test master key: move it to the old key file.
    let rotate = |from: Vec<(&'static str, String)>, to: &std::path::Path| {
        let mut command = std::process::Command::new(keyward_binary());
        command
            .args(["rotate-master-key", "--new-key-file", to.to_str().unwrap()])
            .env("KEYWARD_DATABASE_URL", &url)
            .env("KEYWARD_DATA_DIR", data.path())
            .env_remove("KEYWARD_MASTER_KEY")
            .envs(from);
        command.output().unwrap()
    };
    let moved = rotate(vec![("KEYWARD_MASTER_KEY", crate::helpers::MASTER_KEY.to_owned())], &old);
    assert!(moved.status.success(), "{}", String::from_utf8_lossy(&moved.stderr));

    let start = |path: &std::path::Path| {
        let (url, dir, path) = (url.clone(), data.path().to_owned(), path.to_str().unwrap().to_owned());
        async move { Replica::start(&url, &dir, &[("KEYWARD_MASTER_KEY_FILE", &path)]).await }
    };
    let server = start(&old).await.expect("starts with the old key");
    let mut rpc = client(&server.channel);
    let mut secrets = vec![];
    for n in 0..3 {
        let secret = format!("rotation-secret-{n}");
        rpc.create_rpc_provider_key(admin(new_key("Preprod", &secret))).await.unwrap();
        secrets.push(secret);
    }
    drop(rpc);
    drop(server);

    let rotated = rotate(env_for(&old), &new);
    assert!(rotated.status.success(), "{}", String::from_utf8_lossy(&rotated.stderr));
    std::fs::remove_file(&old).unwrap();

    let server = start(&new).await.expect("starts with the new key, the old one gone");
    let listed = client(&server.channel)
        .list_rpc_provider_keys(admin(v1::ListRpcProviderKeysRequest { reveal: true, ..Default::default() }))
        .await
        .unwrap()
        .into_inner()
        .rpc_provider_keys;
    let mut read_back: Vec<_> = listed.into_iter().map(|key| key.secret).collect();
    read_back.sort();
    assert_eq!(read_back, secrets, "every secret reads back under the new key");
    drop(server);

    let refused = start(&wrong).await.err().expect("a start with the wrong master key is refused");
    assert!(!refused.starts_with("exit status: 0"), "non-zero exit: {refused}");
    assert!(refused.contains("master key"), "the message says why: {refused}");
    app.stop().await;
}
both!(master_key_rotation_end_to_end);

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
