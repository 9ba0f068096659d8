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
        // A key's limits travel with its row, so the verification cache holds them.
        manager
            .alter_table(Table::alter().table("api_keys").add_column(text("rate_limits").default("[]")).to_owned())
            .await?;
        // Limits shared by every key of an owner.
        manager
            .create_table(
                Table::create()
                    .table("owner_rate_limits")
                    .col(string_len("owner", 200).primary_key())
                    .col(text("rate_limits"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;
        // One token bucket per subject, limit name and period, shared by every replica.
        // `level` is in units (a token is `period_ms` units); `leased` and `leased_prev`
        // count the units replicas took during lease window `epoch` and the one before
        // and have not given back: refill stops short of them, so bucket and leases
        // together never exceed a full bucket.
        manager
            .create_table(
                Table::create()
                    .table("rate_buckets")
                    .col(string_len("subject", 250))
                    .col(string_len("name", 100))
                    .col(big_integer("period_ms"))
                    .col(big_integer("level"))
                    .col(big_integer("refilled_at"))
                    .col(big_integer("epoch"))
                    .col(big_integer("leased"))
                    .col(big_integer("leased_prev"))
                    .col(big_integer("granted"))
                    .primary_key(Index::create().col("subject").col("name").col("period_ms"))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
