use sea_orm_migration::{prelude::*, schema::*};

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
        manager
            .create_table(
                Table::create()
                    .table("api_keys")
                    .col(big_pk_auto("number"))
                    .col(uuid_uniq("id"))
                    .col(string_len("name", 200))
                    .col(string_len("mask", 80))
                    .col(string_len("owner", 200))
                    .col(string_len("creator", 200))
                    .col(string_len("organization_id", 200))
                    .col(string_len("organization_name", 200))
                    .col(string_len("environment", 32))
                    .col(text("scopes"))
                    .col(text("networks"))
                    .col(string_len("status", 16))
                    .col(boolean("usage_limited"))
                    .col(text("metadata"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .col(timestamp_with_time_zone_null("expires_at"))
                    .col(timestamp_with_time_zone_null("deleted_at"))
                    .col(timestamp_with_time_zone_null("last_used_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("api_keys_owner_environment")
                    .table("api_keys")
                    .col("owner")
                    .col("environment")
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("api_key_secrets")
                    .col(string_len("secret_hash", 64).primary_key())
                    .col(big_integer("hash_version"))
                    .col(uuid("key_id"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone_null("expires_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("api_key_secrets_key")
                            .from("api_key_secrets", "key_id")
                            .to("api_keys", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("api_key_secrets_key_id").table("api_key_secrets").col("key_id").to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("audit_events")
                    .col(big_pk_auto("id"))
                    .col(string_len("actor", 250))
                    .col(string_len("action", 64))
                    .col(string_len("target", 64))
                    .col(string_len_null("request_id", 64))
                    .col(string_len("outcome", 32))
                    .col(timestamp_with_time_zone("occurred_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table("idempotency_records")
                    .col(string_len("actor", 250))
                    .col(string_len("request_id", 64))
                    .col(string_len("operation", 64))
                    .col(uuid("key_id"))
                    .col(timestamp_with_time_zone("created_at"))
                    .primary_key(Index::create().col("actor").col("request_id"))
                    .to_owned(),
            )
            .await?;
        // One row per (owner, environment), updated to serialise concurrent creates
        // against the live-key quota: the UPDATE's row lock is portable, unlike
        // SELECT … FOR UPDATE, which SQLite ignores.
        manager
            .create_table(
                Table::create()
                    .table("quota_locks")
                    .col(string_len("owner", 200))
                    .col(string_len("environment", 32))
                    .col(big_integer("generation"))
                    .primary_key(Index::create().col("owner").col("environment"))
                    .to_owned(),
            )
            .await
    }
}
