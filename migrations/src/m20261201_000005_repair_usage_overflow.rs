use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

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
        // Before usage counters saturated, a sum past i64::MAX turned the SQLite column
        // into a REAL that no longer reads as an integer (GetUsage failed for its key and
        // owner). CAST saturates at i64::MAX, the value the counter now stops at.
        // PostgreSQL refused the overflow instead, so it holds no such value.
        if manager.get_database_backend() != DbBackend::Sqlite {
            return Ok(());
        }
        let db = manager.get_connection();
        db.execute_unprepared("UPDATE usage_counters SET count = CAST(count AS INTEGER) WHERE typeof(count) = 'real'")
            .await?;
        db.execute_unprepared(
            "UPDATE credit_spend_counters SET amount = CAST(amount AS INTEGER) WHERE typeof(amount) = 'real'",
        )
        .await?;
        Ok(())
    }
}
