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
        // The last event sequence number of each key. Events are posted in no set order,
        // so each carries its key's next number, taken from this row in the transaction
        // that writes the event: the row lock orders a key's events as their changes
        // commit. A table of its own rather than a column of the key, so a charge batch,
        // which locks balances and not keys, takes no key lock to write an alert.
        manager
            .create_table(
                Table::create().table("event_sequences").col(pk_uuid("key_id")).col(big_integer("last")).to_owned(),
            )
            .await?;
        Ok(())
    }
}
