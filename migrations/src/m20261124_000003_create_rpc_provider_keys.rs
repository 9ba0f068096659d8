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
                    .table("rpc_provider_keys")
                    .col(pk_uuid("id"))
                    .col(string_len("network", 100))
                    .col(string_len("provider", 100))
                    .col(string_len("description", 500))
                    .col(boolean("enabled"))
                    .col(text("sealed_secret"))
                    .col(string_len("master_key_id", 32))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;
        // One row sealed under the master key, so a start with the wrong key is refused
        // before it can write anything under it.
        manager
            .create_table(
                Table::create()
                    .table("master_key_canary")
                    .col(integer("id").primary_key())
                    .col(string_len("master_key_id", 32))
                    .col(text("sealed"))
                    .to_owned(),
            )
            .await
    }
}
