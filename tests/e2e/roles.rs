//! Roles: create, read, list, change and delete them; keys hold them by name and verify
//! with their scopes (effective scopes), a change reaches cached keys at once, a role in
//! use is not deleted unless forced, and every change is audited.

use keyward_proto::v1::{self, VerificationCode, role_service_client::RoleServiceClient};
use tonic::{Code, transport::Channel};

use crate::helpers::{Backend, TestApp, admin, assert_invalid, assert_status, both, spawn, with_key};

pub(crate) fn roles(channel: &Channel) -> RoleServiceClient<Channel> {
    RoleServiceClient::new(channel.clone())
}

pub(crate) fn role(name: &str, owner: &str, scopes: &[&str]) -> v1::Role {
    v1::Role {
        name: name.to_owned(),
        owner: owner.to_owned(),
        description: format!("role {name}"),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    }
}

pub(crate) fn create(role: v1::Role) -> v1::CreateRoleRequest {
    v1::CreateRoleRequest { role: Some(role) }
}

pub(crate) fn set_scopes(name: &str, owner: &str, scopes: &[&str]) -> v1::UpdateRoleRequest {
    v1::UpdateRoleRequest {
        role: Some(role(name, owner, scopes)),
        update_mask: Some(prost_types::FieldMask { paths: vec!["scopes".into()] }),
    }
}

/// Creates a key as admin for `owner` with `scopes` and `roles`; returns it and its secret.
pub(crate) async fn key_with_roles(
    app_client: &v1::api_key_service_client::ApiKeyServiceClient<Channel>,
    owner: &str,
    scopes: &[&str],
    roles: &[&str],
) -> (v1::ApiKey, String) {
    let key = v1::ApiKey {
        name: "holds roles".into(),
        owner: owner.to_owned(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        roles: roles.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    };
    let request = v1::CreateApiKeyRequest { api_key: Some(key), ..Default::default() };
    let created = app_client.clone().create_api_key(admin(request)).await.expect("create key").into_inner();
    (created.api_key.unwrap(), created.secret)
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| (*s).to_owned()).collect()
}

async fn roles_are_created_read_listed_changed_and_deleted(backend: Backend) {
    let app = spawn(backend).await;
    let mut client = roles(&app.channel);
    let created = client.create_role(admin(create(role("reader", "acme", &["docs.read"])))).await.unwrap().into_inner();
    let reader = created.role.unwrap();
    assert_eq!((reader.name.as_str(), reader.owner.as_str()), ("reader", "acme"));
    assert_eq!(reader.scopes, strings(&["docs.read"]));
    assert!(reader.create_time.is_some() && reader.update_time.is_some());
    client.create_role(admin(create(role("global:auditor", "", &["audit.read"])))).await.unwrap();
    client.create_role(admin(create(role("reader", "other", &["other.read"])))).await.unwrap();

    // A name is unique per owner; a global name is the global role's only.
    let again = client.create_role(admin(create(role("reader", "acme", &[])))).await.unwrap_err();
    assert_status(&again, Code::AlreadyExists, "ROLE_ALREADY_EXISTS");
    let owned_global = client.create_role(admin(create(role("global:x", "acme", &[])))).await.unwrap_err();
    assert_invalid(&owned_global, "role.owner");
    for bad in ["", "Upper", "-lead", "has space", &"x".repeat(65)] {
        let refused = client.create_role(admin(create(role(bad, "acme", &[])))).await.unwrap_err();
        assert_invalid(&refused, "role.name");
    }

    let got = client
        .get_role(admin(v1::GetRoleRequest { name: "reader".into(), owner: "acme".into() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.role.unwrap(), reader);
    let missing =
        client.get_role(admin(v1::GetRoleRequest { name: "nobody".into(), owner: "acme".into() })).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    // A list pages through the owner's roles and the global ones, not another owner's.
    let mut names = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = v1::ListRolesRequest { page_size: 1, page_token, owner: "acme".into() };
        let page = client.list_roles(admin(request)).await.unwrap().into_inner();
        names.extend(page.roles.into_iter().map(|role| format!("{}/{}", role.owner, role.name)));
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    assert_eq!(names, ["acme/reader", "/global:auditor"]);

    let updated = client
        .update_role(admin(set_scopes("reader", "acme", &["docs.read", "docs.list"])))
        .await
        .unwrap()
        .into_inner()
        .role
        .unwrap();
    assert_eq!(updated.scopes, strings(&["docs.list", "docs.read"]));
    assert_eq!(updated.description, reader.description, "only the fields in the mask change");
    let unknown_field = v1::UpdateRoleRequest {
        role: Some(role("reader", "acme", &[])),
        update_mask: Some(prost_types::FieldMask { paths: vec!["name".into()] }),
    };
    assert_invalid(&client.update_role(admin(unknown_field)).await.unwrap_err(), "update_mask.paths[0]");

    let delete = v1::DeleteRoleRequest { name: "reader".into(), owner: "acme".into(), force: false };
    client.delete_role(admin(delete)).await.unwrap();
    let gone =
        client.get_role(admin(v1::GetRoleRequest { name: "reader".into(), owner: "acme".into() })).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    let audited: Vec<(String, String)> = app
        .running()
        .store
        .audit_events()
        .await
        .unwrap()
        .into_iter()
        .filter(|event| event.action.ends_with("Role") && event.outcome == "OK")
        .map(|event| (event.action, event.target))
        .collect();
    assert_eq!(
        audited,
        [
            ("CreateRole", "role:acme/reader"),
            ("CreateRole", "role:/global:auditor"),
            ("CreateRole", "role:other/reader"),
            ("UpdateRole", "role:acme/reader"),
            ("DeleteRole", "role:acme/reader"),
        ]
        .map(|(action, target)| (action.to_owned(), target.to_owned()))
    );
    app.stop().await;
}
both!(roles_are_created_read_listed_changed_and_deleted);

async fn keys_verify_with_their_roles_scopes(backend: Backend) {
    let app = spawn(backend).await;
    let mut client = roles(&app.channel);
    client.create_role(admin(create(role("editor", "acme", &["docs.write", "docs.*"])))).await.unwrap();
    client.create_role(admin(create(role("global:billing", "", &["billing.read"])))).await.unwrap();
    client.create_role(admin(create(role("stranger", "other", &["secret.read"])))).await.unwrap();

    let (key, secret) = key_with_roles(&app.client, "acme", &["own.read"], &["editor", "global:billing"]).await;
    assert_eq!(key.roles, strings(&["editor", "global:billing"]));
    assert_eq!(key.scopes, strings(&["own.read"]));
    assert_eq!(key.effective_scopes, strings(&["billing.read", "docs.*", "docs.write", "own.read"]));
    let got = app.client.clone().get_api_key(admin(v1::GetApiKeyRequest { id: key.id.clone() })).await.unwrap();
    assert_eq!(got.into_inner().api_key.unwrap().effective_scopes, key.effective_scopes);
    let listed = app
        .client
        .clone()
        .list_api_keys(admin(v1::ListApiKeysRequest { owner: "acme".into(), ..Default::default() }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.api_keys[0].roles, key.roles);

    // Required scopes and scope queries both see the roles' scopes (wildcards included).
    assert!(app.verify(&secret, &["docs.write", "billing.read", "own.read"], "").await.valid);
    assert!(app.verify(&secret, &["docs.anything"], "").await.valid);
    let query = v1::VerifyApiKeyRequest {
        key: secret.clone(),
        scope_query: "billing.read AND (docs.delete OR nothing)".into(),
        ..Default::default()
    };
    let answer = app.client.clone().verify_api_key(admin(query)).await.unwrap().into_inner();
    assert_eq!(answer.code(), VerificationCode::Valid, "docs.* grants docs.delete");
    assert_eq!(app.verify(&secret, &["secret.read"], "").await.code(), VerificationCode::InsufficientScope);

    // Only the key owner's roles and global ones are for it to hold.
    let foreign =
        v1::ApiKey { name: "x".into(), owner: "acme".into(), roles: strings(&["stranger"]), ..Default::default() };
    let refused = app
        .client
        .clone()
        .create_api_key(admin(v1::CreateApiKeyRequest { api_key: Some(foreign), ..Default::default() }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    let malformed = v1::ApiKey { name: "x".into(), roles: strings(&["Bad Name"]), ..Default::default() };
    let refused = app
        .client
        .clone()
        .create_api_key(admin(v1::CreateApiKeyRequest { api_key: Some(malformed), ..Default::default() }))
        .await
        .unwrap_err();
    assert_invalid(&refused, "api_key.roles[0]");

    // Attaching and detaching by UpdateApiKey changes a cached key at once.
    let (plain, plain_secret) = key_with_roles(&app.client, "acme", &[], &[]).await;
    assert_eq!(app.verify(&plain_secret, &["docs.write"], "").await.code(), VerificationCode::InsufficientScope);
    let attach = |names: &[&str]| v1::UpdateApiKeyRequest {
        api_key: Some(v1::ApiKey { id: plain.id.clone(), roles: strings(names), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["roles".into()] }),
        ..Default::default()
    };
    let attached = app.client.clone().update_api_key(admin(attach(&["editor"]))).await.unwrap().into_inner();
    assert_eq!(attached.api_key.unwrap().effective_scopes, strings(&["docs.*", "docs.write"]));
    assert!(app.verify(&plain_secret, &["docs.write"], "").await.valid);
    app.client.clone().update_api_key(admin(attach(&[]))).await.unwrap();
    assert_eq!(app.verify(&plain_secret, &["docs.write"], "").await.code(), VerificationCode::InsufficientScope);
    app.stop().await;
}
both!(keys_verify_with_their_roles_scopes);

async fn role_changes_reach_cached_keys_and_deletes_in_use_are_refused(backend: Backend) {
    let app = spawn(backend).await;
    let mut client = roles(&app.channel);
    client.create_role(admin(create(role("ops", "acme", &["ops.read"])))).await.unwrap();
    let (first, first_secret) = key_with_roles(&app.client, "acme", &[], &["ops"]).await;
    let (_, second_secret) = key_with_roles(&app.client, "acme", &["ops.deploy"], &["ops"]).await;
    for secret in [&first_secret, &second_secret] {
        assert!(app.verify(secret, &["ops.read"], "").await.valid, "cached with the role's scopes");
    }
    client.update_role(admin(set_scopes("ops", "acme", &["ops.write"]))).await.unwrap();
    for secret in [&first_secret, &second_secret] {
        assert!(app.verify(secret, &["ops.write"], "").await.valid, "the new scope at once");
        assert_eq!(app.verify(secret, &["ops.read"], "").await.code(), VerificationCode::InsufficientScope);
    }

    let delete = |force: bool| v1::DeleteRoleRequest { name: "ops".into(), owner: "acme".into(), force };
    let in_use = client.delete_role(admin(delete(false))).await.unwrap_err();
    assert_status(&in_use, Code::FailedPrecondition, "ROLE_IN_USE");
    assert!(in_use.message().contains("held by 2 API key"), "{}", in_use.message());
    assert!(app.verify(&first_secret, &["ops.write"], "").await.valid, "a refused delete changes nothing");

    client.delete_role(admin(delete(true))).await.unwrap();
    assert_eq!(app.verify(&first_secret, &["ops.write"], "").await.code(), VerificationCode::InsufficientScope);
    assert!(app.verify(&second_secret, &["ops.deploy"], "").await.valid, "its own scopes stay");
    let got = app.client.clone().get_api_key(admin(v1::GetApiKeyRequest { id: first.id })).await.unwrap();
    assert!(got.into_inner().api_key.unwrap().roles.is_empty());
    app.stop().await;
}
both!(role_changes_reach_cached_keys_and_deletes_in_use_are_refused);

/// A role that carries `keys:write` gives its holder that right, as the scope would.
async fn roles_confer_keyward_rights(backend: Backend) {
    let app: TestApp = spawn(backend).await;
    roles(&app.channel).create_role(admin(create(role("manager", "acme", &["keys:write"])))).await.unwrap();
    let (_, secret) = key_with_roles(&app.client, "acme", &[], &["manager"]).await;
    let request = v1::CreateApiKeyRequest {
        api_key: Some(v1::ApiKey { name: "made by a role".into(), ..Default::default() }),
        ..Default::default()
    };
    let made = app.client.clone().create_api_key(with_key(&secret, request)).await.unwrap().into_inner();
    assert_eq!(made.api_key.unwrap().owner, "acme");
    app.stop().await;
}
both!(roles_confer_keyward_rights);
