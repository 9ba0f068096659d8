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
        // The source of truth for credits: charges are conditional updates of these rows.
        manager
            .create_table(
                Table::create()
                    .table("credit_balances")
                    .col(uuid("key_id"))
                    .col(string_len("unit", 256))
                    .col(big_integer("balance"))
                    .primary_key(Index::create().col("key_id").col("unit"))
                    .to_owned(),
            )
            .await?;
        // Append-only: every balance change, written in the change's own transaction.
        manager
            .create_table(
                Table::create()
                    .table("credit_transactions")
                    .col(big_pk_auto("id"))
                    .col(uuid("key_id"))
                    .col(string_len("unit", 256))
                    .col(big_integer("delta"))
                    .col(big_integer("balance_after"))
                    .col(string_len("reason", 200))
                    .col(string_len_null("request_id", 64))
                    .col(string_len("actor", 250))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("credit_transactions_key_id")
                    .table("credit_transactions")
                    .col("key_id")
                    .col("id")
                    .to_owned(),
            )
            .await?;
        // The first outcome of each charge that carried a request id.
        manager
            .create_table(
                Table::create()
                    .table("charge_records")
                    .col(uuid("key_id"))
                    .col(string_len("request_id", 64))
                    .col(boolean("charged"))
                    .col(timestamp_with_time_zone("created_at"))
                    .primary_key(Index::create().col("key_id").col("request_id"))
                    .to_owned(),
            )
            .await?;
        // Refill schedules; `next_refill_at` moves forward under a compare-and-set, so
        // one replica alone applies each period.
        manager
            .create_table(
                Table::create()
                    .table("credit_refills")
                    .col(uuid("key_id"))
                    .col(string_len("unit", 256))
                    .col(big_integer("amount"))
                    .col(string_len("period", 16))
                    .col(timestamp_with_time_zone("next_refill_at"))
                    .primary_key(Index::create().col("key_id").col("unit"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("credit_refills_next_refill_at")
                    .table("credit_refills")
                    .col("next_refill_at")
                    .to_owned(),
            )
            .await?;
        // Credits presented as cost per key, hour and unit, flushed from memory in batches.
        manager
            .create_table(
                Table::create()
                    .table("credit_spend_counters")
                    .col(uuid("key_id"))
                    .col(timestamp_with_time_zone("bucket_start"))
                    .col(string_len("unit", 256))
                    .col(big_integer("amount"))
                    .primary_key(Index::create().col("key_id").col("bucket_start").col("unit"))
                    .to_owned(),
            )
            .await
    }
}
