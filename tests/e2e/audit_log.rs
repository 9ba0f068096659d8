//! ListAuditEvents: the audit log read back, newest first, filtered, and never beyond the
//! reader's reach.

use keyward_proto::v1::{self, audit_service_client::AuditServiceClient};
use sea_orm::ConnectionTrait;
use tonic::Code;

use crate::helpers::{Backend, admin, assert_status, both, spawn, with_key};

fn list(key_id: &str) -> v1::ListAuditEventsRequest {
    v1::ListAuditEventsRequest { api_key_id: key_id.to_owned(), ..Default::default() }
}

both!(audit_events_are_read_back_within_reach);
async fn audit_events_are_read_back_within_reach(backend: Backend) {
    let app = spawn(backend).await;
    let mut audit = AuditServiceClient::new(app.channel.clone());
    let (mine, _) = app.create_key("owner-a", &[]).await;
    let (theirs, _) = app.create_key("owner-b", &[]).await;
    let (_, reader) = app.create_key("owner-a", &["keys:read"]).await;
    app.client
        .clone()
        .delete_api_key(admin(v1::DeleteApiKeyRequest { id: mine.id.clone(), ..Default::default() }))
        .await
        .unwrap();
    // A refused change is audited too, with its outcome.
    let refused = app
        .client
        .clone()
        .delete_api_key(admin(v1::DeleteApiKeyRequest { id: mine.id.clone(), ..Default::default() }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);

    // Admin: every event of the key, newest first, with actor, action, outcome and time.
    let events = audit.list_audit_events(admin(list(&mine.id))).await.unwrap().into_inner().audit_events;
    let actions: Vec<(&str, &str)> = events.iter().map(|e| (e.action.as_str(), e.outcome.as_str())).collect();
    assert_eq!(actions, [("DeleteApiKey", "FAILED_PRECONDITION"), ("DeleteApiKey", "OK"), ("CreateApiKey", "OK")]);
    assert!(events.windows(2).all(|pair| pair[0].id > pair[1].id));
    assert!(events.iter().all(|e| e.target == mine.id && e.actor.starts_with("key:") && e.occur_time.is_some()));

    // Filters: action and outcome.
    let request = v1::ListAuditEventsRequest { outcome: "FAILED_PRECONDITION".into(), ..list("") };
    let failed = audit.list_audit_events(admin(request)).await.unwrap().into_inner().audit_events;
    assert_eq!(failed.len(), 1);
    let request = v1::ListAuditEventsRequest { action: "CreateApiKey".into(), ..list("") };
    let created = audit.list_audit_events(admin(request)).await.unwrap().into_inner().audit_events;
    assert!(created.len() >= 3, "{created:?}");

    // Pages of one, newest first, cover the key's events exactly.
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let request = v1::ListAuditEventsRequest { page_size: 1, page_token: token, ..list(&mine.id) };
        let page = audit.list_audit_events(admin(request)).await.unwrap().into_inner();
        seen.extend(page.audit_events.into_iter().map(|e| e.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, events.iter().map(|e| e.id).collect::<Vec<_>>());

    // Another owner's reader: its owner's keys only, and another owner's key is NOT_FOUND.
    let own = audit.list_audit_events(with_key(&reader, list(""))).await.unwrap().into_inner().audit_events;
    assert!(!own.is_empty());
    assert!(own.iter().all(|e| e.target != theirs.id), "another owner's event leaked: {own:?}");
    assert!(own.iter().any(|e| e.target == mine.id));
    let hidden = audit.list_audit_events(with_key(&reader, list(&theirs.id))).await.unwrap_err();
    assert_status(&hidden, Code::NotFound, "API_KEY_NOT_FOUND");
    // A key without a right to read keys reads no audit events.
    let (_, plain) = app.create_key("owner-a", &[]).await;
    let denied = audit.list_audit_events(with_key(&plain, list(""))).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    app.stop().await;
}

both!(refused_changes_are_audited_under_the_key_id);
async fn refused_changes_are_audited_under_the_key_id(backend: Backend) {
    let app = spawn(backend).await;
    let mut audit = AuditServiceClient::new(app.channel.clone());
    let mut client = app.client.clone();
    let (key, _) = app.create_key("owner-r", &[]).await;
    let delete = |id: String| admin(v1::DeleteApiKeyRequest { id, ..Default::default() });
    client.delete_api_key(delete(key.id.clone())).await.unwrap();
    // Refused, each naming the key another way: its number, its id in upper case, braced.
    let refused = client.delete_api_key(delete(key.number.to_string())).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let upper = v1::RotateApiKeyRequest { id: key.id.to_uppercase(), ..Default::default() };
    assert_eq!(client.rotate_api_key(admin(upper)).await.unwrap_err().code(), Code::FailedPrecondition);
    let refused = client.delete_api_key(delete(format!("{{{}}}", key.id))).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    // A number that names no key is kept as the caller sent it.
    let missing = client.delete_api_key(delete("987654321".into())).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);

    let events = audit.list_audit_events(admin(list(&key.id))).await.unwrap().into_inner().audit_events;
    let actions: Vec<(&str, &str)> = events.iter().map(|e| (e.action.as_str(), e.outcome.as_str())).collect();
    assert_eq!(
        actions,
        [
            ("DeleteApiKey", "FAILED_PRECONDITION"),
            ("RotateApiKey", "FAILED_PRECONDITION"),
            ("DeleteApiKey", "FAILED_PRECONDITION"),
            ("DeleteApiKey", "OK"),
            ("CreateApiKey", "OK"),
        ]
    );
    assert!(events.iter().all(|e| e.target == key.id), "{events:?}");
    let request = v1::ListAuditEventsRequest { outcome: "NOT_FOUND".into(), ..list("") };
    let not_found = audit.list_audit_events(admin(request)).await.unwrap().into_inner().audit_events;
    assert_eq!(not_found.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(), ["987654321"]);
    app.stop().await;
}

both!(a_reader_of_many_keys_reads_their_audit_events);
/// Past both stores' bind-parameter limits (32,766 on SQLite, 65,535 on PostgreSQL): the
/// keys in reach are a subquery, not a list of ids.
async fn a_reader_of_many_keys_reads_their_audit_events(backend: Backend) {
    const KEYS: i64 = 70_000;
    let app = spawn(backend).await;
    let mut audit = AuditServiceClient::new(app.channel.clone());
    let (template, _) = app.create_key("owner-many", &[]).await;
    let (_, reader) = app.create_key("owner-many", &["keys:read"]).await;
    let (other, _) = app.create_key("owner-other", &[]).await;
    let connection = app.running().store.connection();
    let backend = connection.get_database_backend();
    let postgres = backend == sea_orm::DbBackend::Postgres;
    let (series, id) =
        if postgres { ("generate_series(1, $1) AS n", "gen_random_uuid()") } else { ("n", "randomblob(16)") };
    let copy = format!(
        "INSERT INTO api_keys (id, name, mask, owner, creator, organization_id, organization_name, environment, \
         scopes, networks, status, usage_limited, metadata, created_at, updated_at, expires_at, deleted_at, \
         last_used_at, rate_limits) \
         SELECT {id}, name, mask, owner, creator, organization_id, organization_name, environment, scopes, \
         networks, 'revoked', usage_limited, metadata, created_at, updated_at, expires_at, created_at, \
         last_used_at, rate_limits FROM api_keys, {series} WHERE number = {}",
        template.number
    );
    let statement = if postgres {
        sea_orm::Statement::from_sql_and_values(backend, copy, [KEYS.into()])
    } else {
        let copy = format!("WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) {copy}");
        sea_orm::Statement::from_sql_and_values(backend, copy, [KEYS.into()])
    };
    connection.execute_raw(statement).await.expect("copies of the key");
    assert!(app.count_rows("api_keys").await > KEYS);

    let events = audit.list_audit_events(with_key(&reader, list(""))).await.unwrap().into_inner().audit_events;
    assert!(events.iter().any(|e| e.target == template.id), "{events:?}");
    assert!(events.iter().all(|e| e.target != other.id), "another owner's event leaked: {events:?}");
    app.stop().await;
}
