use sea_orm_migration::{prelude::*, schema::*, sea_orm::DbBackend};

#[derive(DeriveMigrationName)]
pub(crate) struct Migration;

// async_trait cannot name the manager's lifetime in the trait's own signature.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        // The keys of an (owner, environment) that are not revoked, kept by every write
        // that revokes a key or brings one back, in the transaction that holds this row's
        // lock. Creates below the quota check this number instead of counting keys.
        manager
            .alter_table(Table::alter().table("quota_locks").add_column(big_integer("held").default(0)).to_owned())
            .await?;
        db.execute_unprepared(
            "INSERT INTO quota_locks (owner, environment, generation, held) \
             SELECT owner, environment, 0, COUNT(*) FROM api_keys WHERE status <> 'revoked' \
             GROUP BY owner, environment \
             ON CONFLICT (owner, environment) DO UPDATE SET held = excluded.held",
        )
        .await?;
        // A page of an owner's (or an organisation's) keys in number order reads the
        // page from an index, not every key of the owner sorted.
        for (name, column) in [("api_keys_owner_number", "owner"), ("api_keys_organization_number", "organization_id")]
        {
            manager
                .create_index(Index::create().name(name).table("api_keys").col(column).col("number").to_owned())
                .await?;
        }
        // The owner and organisation of the key an audit event targets, written with the
        // event: an audit page within an owner's reach reads an index on them, newest
        // first, instead of matching the targets against every key of the owner.
        for column in ["key_owner", "key_organization"] {
            manager
                .alter_table(Table::alter().table("audit_events").add_column(string_len_null(column, 200)).to_owned())
                .await?;
            manager
                .create_index(
                    Index::create()
                        .name(format!("audit_events_{column}"))
                        .table("audit_events")
                        .col(column)
                        .col("id")
                        .to_owned(),
                )
                .await?;
        }
        // Events written before: their keys' ids as text, the way targets name them
        // (PostgreSQL prints a `uuid` so; SQLite holds it as 16 bytes).
        let key_id = if manager.get_database_backend() == DbBackend::Postgres {
            "CAST(id AS TEXT)"
        } else {
            "CASE WHEN typeof(id) = 'blob' THEN lower(substr(hex(id), 1, 8) || '-' || substr(hex(id), 9, 4) || '-' \
             || substr(hex(id), 13, 4) || '-' || substr(hex(id), 17, 4) || '-' || substr(hex(id), 21, 12)) \
             ELSE id END"
        };
        db.execute_unprepared(&format!(
            "UPDATE audit_events SET key_owner = keys.owner, key_organization = keys.organization_id \
             FROM (SELECT {key_id} AS target, owner, organization_id FROM api_keys) AS keys \
             WHERE keys.target = audit_events.target"
        ))
        .await?;
        Ok(())
    }
}
