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
        // Roles: named bundles of scopes. `owner` is empty for a global role; a name is
        // unique per owner (global names carry their own prefix, so they never meet an
        // owner's). `scopes` is a JSON array of strings, as on api_keys.
        manager
            .create_table(
                Table::create()
                    .table("roles")
                    .col(uuid("id").primary_key())
                    .col(string_len("owner", 200))
                    .col(string_len("name", 64))
                    .col(string_len("description", 500))
                    .col(text("scopes"))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("roles_owner_name").table("roles").col("owner").col("name").unique().to_owned(),
            )
            .await?;
        // Which key holds which role: read by key (every key read resolves its roles) and
        // by role (a role's change reaches the keys holding it; delete counts them).
        manager
            .create_table(
                Table::create()
                    .table("api_key_roles")
                    .col(uuid("key_id"))
                    .col(uuid("role_id"))
                    .primary_key(Index::create().col("key_id").col("role_id"))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("api_key_roles_role")
                    .table("api_key_roles")
                    .col("role_id")
                    .col("key_id")
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
