use sea_orm_migration::prelude::*;

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
        // The quota counts an owner's live keys in one environment. Revoked keys never
        // count, so a partial index leaves them out, and ordering by expiry lets the count
        // skip expired ones: its cost depends on the live keys, not on every key the owner
        // ever had. The same statement runs on SQLite and PostgreSQL.
        manager
            .get_connection()
            .execute_unprepared(
                "CREATE INDEX api_keys_live_by_owner ON api_keys (owner, environment, expires_at) \
                 WHERE status <> 'revoked'",
            )
            .await?;
        Ok(())
    }
}
