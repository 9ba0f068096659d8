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
        // What a charge's request id stands for (key, cost and caller, hashed): a replay
        // that differs is refused instead of getting the first answer. Rows written
        // before have none.
        manager
            .alter_table(
                Table::alter().table("charge_records").add_column(string_len_null("fingerprint", 64)).to_owned(),
            )
            .await?;
        // A request id names one charge, whatever the key: among rows with a fingerprint,
        // each request id is claimed once, which also settles two racing claims.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE UNIQUE INDEX charge_records_request_id ON charge_records (request_id) \
                 WHERE fingerprint IS NOT NULL",
            )
            .await?;
        Ok(())
    }
}
