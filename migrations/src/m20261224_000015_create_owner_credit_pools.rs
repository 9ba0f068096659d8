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
        // One row per owner's pool in one environment. Its balances are `credit_balances`
        // rows whose `key_id` is the pool's id (an account that is not a key): a pooled
        // key's charges and holds are then the very conditional updates a key's are, and
        // siblings racing on one pool race on its one row per unit.
        manager
            .create_table(
                Table::create()
                    .table("owner_credit_pools")
                    .col(uuid("id").primary_key())
                    .col(string_len("owner", 200))
                    .col(string_len("environment", 32))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("owner_credit_pools_owner_environment")
                    .table("owner_credit_pools")
                    .col("owner")
                    .col("environment")
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Whose balances a key spends: `key` (its own) or `owner` (its owner's pool).
        manager
            .alter_table(
                Table::alter().table("api_keys").add_column(string_len("credit_source", 16).default("key")).to_owned(),
            )
            .await?;
        // The key that spent, on a pool's ledger entries (`key_id` names the pool there).
        manager
            .alter_table(Table::alter().table("credit_transactions").add_column(uuid_null("spent_by")).to_owned())
            .await?;
        // The pool a pooled key's hold reserves from (NULL: the key's own balances).
        manager.alter_table(Table::alter().table("credit_holds").add_column(uuid_null("pool_id")).to_owned()).await
    }
}
