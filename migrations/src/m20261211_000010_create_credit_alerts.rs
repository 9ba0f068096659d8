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
        // Balance alerts. `credits.exhausted` is armed while a balance is above 0: the
        // change that takes it to 0 clears the flag in its own transaction (so it fires
        // once), one that lifts the balance sets it again. Balances already at 0 start
        // disarmed: they were exhausted before alerts existed.
        manager
            .alter_table(
                Table::alter()
                    .table("credit_balances")
                    .add_column(boolean("exhausted_armed").default(false))
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared("UPDATE credit_balances SET exhausted_armed = TRUE WHERE balance > 0")
            .await?;
        // `credits.low`: a key's threshold per unit, armed while the balance is at or
        // above it, cleared by the change that takes it below.
        manager
            .create_table(
                Table::create()
                    .table("credit_thresholds")
                    .col(uuid("key_id"))
                    .col(string_len("unit", 256))
                    .col(big_integer("threshold"))
                    .col(boolean("armed"))
                    .primary_key(Index::create().col("key_id").col("unit"))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
