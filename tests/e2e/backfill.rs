//! Migration 16 on rows written before it: the quota's count of held keys and the owner of
//! each audit event's key are filled in for what was there, not only kept from then on.
//! The database is wound back to before migrations 16 and 17 (their columns, indexes and
//! function dropped, their records deleted) under rows a server wrote, and a new server
//! start runs them again.

use keyward_proto::v1;
use sea_orm::{ConnectionTrait, Database, DbBackend};
use tonic::{Code, transport::Channel};

use crate::{
    helpers::{Backend, admin, assert_status, both, create_request, key_with, spawn_with},
    owner_scale::held_and_counted,
};

const OWNER: &str = "early";

/// Winds the database at `url` back to before migrations 16 and 17.
async fn unmigrate(url: &str) {
    let db = Database::connect(url).await.expect("connect");
    let mut statements = vec![
        "DROP INDEX api_keys_owner_number",
        "DROP INDEX api_keys_organization_number",
        "DROP INDEX audit_events_key_owner",
        "DROP INDEX audit_events_key_organization",
        "ALTER TABLE quota_locks DROP COLUMN held",
        "ALTER TABLE audit_events DROP COLUMN key_owner",
        "ALTER TABLE audit_events DROP COLUMN key_organization",
        "DELETE FROM seaql_migrations WHERE version IN \
         ('m20261223_000016_index_owner_reads', 'm20261225_000017_create_hold_function')",
    ];
    if db.get_database_backend() == DbBackend::Postgres {
        statements.push("DROP FUNCTION keyward_hold");
    }
    for statement in statements {
        db.execute_unprepared(statement).await.unwrap_or_else(|err| panic!("{statement}: {err}"));
    }
    db.close().await.ok();
}

async fn create(channel: &Channel, name: &str) -> Result<v1::ApiKey, tonic::Status> {
    let mut key = key_with(name);
    key.owner = OWNER.into();
    let mut client = v1::api_key_service_client::ApiKeyServiceClient::new(channel.clone());
    Ok(client.create_api_key(admin(create_request(key))).await?.into_inner().api_key.expect("the key"))
}

async fn owner_reads_are_filled_in_for_rows_written_before_them(backend: Backend) {
    let mut app = spawn_with(backend, |config| {
        config.environments = vec!["production:kw_live:3".parse().unwrap()];
    })
    .await;
    let mut keys = Vec::new();
    for name in ["one", "two", "three"] {
        keys.push(create(&app.channel, name).await.expect("within the quota"));
    }
    let delete = v1::DeleteApiKeyRequest { id: keys[0].id.clone(), request_id: String::new() };
    app.client.delete_api_key(admin(delete)).await.expect("delete");
    app.running.take().expect("running").stop().await.expect("stops");

    unmigrate(&app.config.store.database_url()).await;
    let running = keyward_server::start(app.config.clone()).await.expect("restarts and migrates");
    app.channel = Channel::from_shared(format!("http://{}", running.grpc_addr)).unwrap().connect_lazy();
    app.client = v1::api_key_service_client::ApiKeyServiceClient::new(app.channel.clone());
    app.running = Some(running);

    assert_eq!(held_and_counted(&app, OWNER).await, (2, 2), "the quota counts the keys held before");
    let filled = format!("audit_events WHERE key_owner = '{OWNER}'");
    assert_eq!(app.count_rows(&filled).await, 4, "three creates and a delete, each under its key's owner");
    let unfilled = "audit_events WHERE key_owner IS NULL";
    assert_eq!(app.count_rows(unfilled).await, 0, "every event targets a key here");
    // The count is what the quota reads: one more key fits, the next does not.
    create(&app.channel, "four").await.expect("the quota has room for one");
    let refused = create(&app.channel, "five").await.unwrap_err();
    assert_status(&refused, Code::ResourceExhausted, "KEY_QUOTA_EXCEEDED");
    // A key's audit trail, read through the owner index, holds its events from before.
    let mut audit = v1::audit_service_client::AuditServiceClient::new(app.channel.clone());
    let request = v1::ListAuditEventsRequest { api_key_id: keys[0].id.clone(), ..Default::default() };
    let events = audit.list_audit_events(admin(request)).await.expect("audit").into_inner().audit_events;
    assert_eq!(events.len(), 2, "its create and its delete: {events:?}");
    app.stop().await;
}
both!(owner_reads_are_filled_in_for_rows_written_before_them);
