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
        // Verifications per key, hour and outcome, flushed from memory in batches.
        manager
            .create_table(
                Table::create()
                    .table("usage_counters")
                    .col(uuid("key_id"))
                    .col(timestamp_with_time_zone("bucket_start"))
                    .col(string_len("outcome", 32))
                    .col(big_integer("count"))
                    .primary_key(Index::create().col("key_id").col("bucket_start").col("outcome"))
                    .to_owned(),
            )
            .await
    }
}
