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
        // ListAuditEvents by key reads one key's events, newest first.
        manager
            .create_index(
                Index::create().name("audit_events_target").table("audit_events").col("target").col("id").to_owned(),
            )
            .await?;
        // Receivers of events; the signing secret is sealed under the master key, bound
        // to the endpoint's id.
        manager
            .create_table(
                Table::create()
                    .table("webhook_endpoints")
                    .col(pk_uuid("id"))
                    .col(text("url"))
                    .col(text("description"))
                    .col(text("event_types"))
                    .col(boolean("enabled"))
                    .col(text("sealed_secret"))
                    .col(string_len("master_key_id", 32))
                    .col(big_integer("consecutive_failures").default(0))
                    .col(boolean("failing").default(false))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("updated_at"))
                    .to_owned(),
            )
            .await?;
        // The outbox: one row per event, written in the transaction of the change it
        // tells of; its id is the `webhook-id` of every delivery of it.
        manager
            .create_table(
                Table::create()
                    .table("webhook_events")
                    .col(pk_uuid("id"))
                    .col(string_len("event_type", 64))
                    .col(text("payload"))
                    .col(timestamp_with_time_zone("created_at"))
                    .to_owned(),
            )
            .await?;
        // One row per (event, endpoint) subscribed when the event was written: what is
        // due when, and who holds it (`claimed_until`) while a replica posts it.
        manager
            .create_table(
                Table::create()
                    .table("webhook_deliveries")
                    .col(big_pk_auto("id"))
                    .col(uuid("event_id"))
                    .col(uuid("endpoint_id"))
                    .col(string_len("state", 16))
                    .col(big_integer("attempts"))
                    .col(timestamp_with_time_zone("next_attempt_at"))
                    .col(timestamp_with_time_zone_null("claimed_until"))
                    .col(timestamp_with_time_zone("created_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("webhook_deliveries_event")
                            .from("webhook_deliveries", "event_id")
                            .to("webhook_events", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("webhook_deliveries_endpoint")
                            .from("webhook_deliveries", "endpoint_id")
                            .to("webhook_endpoints", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("webhook_deliveries_due")
                    .table("webhook_deliveries")
                    .col("state")
                    .col("next_attempt_at")
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("webhook_deliveries_event_endpoint")
                    .table("webhook_deliveries")
                    .col("event_id")
                    .col("endpoint_id")
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Every POST and how it ended: what ListWebhookDeliveries shows.
        manager
            .create_table(
                Table::create()
                    .table("webhook_attempts")
                    .col(big_pk_auto("id"))
                    .col(uuid("event_id"))
                    .col(uuid("endpoint_id"))
                    .col(string_len("event_type", 64))
                    .col(big_integer("attempt"))
                    .col(timestamp_with_time_zone("attempted_at"))
                    .col(big_integer("status_code"))
                    .col(text("error"))
                    .col(text("response_excerpt"))
                    .col(timestamp_with_time_zone_null("next_attempt_at"))
                    .foreign_key(
                        ForeignKey::create()
                            .name("webhook_attempts_endpoint")
                            .from("webhook_attempts", "endpoint_id")
                            .to("webhook_endpoints", "id")
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("webhook_attempts_endpoint")
                    .table("webhook_attempts")
                    .col("endpoint_id")
                    .col("id")
                    .to_owned(),
            )
            .await?;
        // Time events already written, once per key, kind and expiry: the sweep's
        // compare-and-set across replicas.
        manager
            .create_table(
                Table::create()
                    .table("expiry_notices")
                    .col(uuid("key_id"))
                    .col(string_len("kind", 16))
                    .col(timestamp_with_time_zone("expires_at"))
                    .primary_key(Index::create().col("key_id").col("kind").col("expires_at"))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
