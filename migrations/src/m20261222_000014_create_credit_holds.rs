use sea_orm_migration::{prelude::*, schema::*, sea_orm::DbBackend};

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
        // What live holds reserve of each balance: a charge or a new hold takes only what
        // `balance - held` covers, so the reserved credits are never spent twice.
        manager
            .alter_table(Table::alter().table("credit_balances").add_column(big_integer("held").default(0)).to_owned())
            .await?;
        // The hold a ledger entry settles (a capture, an expiry).
        manager
            .alter_table(Table::alter().table("credit_transactions").add_column(uuid_null("hold_id")).to_owned())
            .await?;
        // One row per hold; `state` moves from `live` once, under a compare-and-set, so a
        // hold is captured, released or expired exactly once however many replicas run.
        manager
            .create_table(
                Table::create()
                    .table("credit_holds")
                    .col(uuid("id").primary_key())
                    .col(uuid("key_id"))
                    .col(string_len("actor", 250))
                    .col(string_len_null("request_id", 64))
                    .col(string_len("state", 16))
                    .col(timestamp_with_time_zone("created_at"))
                    .col(timestamp_with_time_zone("expires_at"))
                    .col(timestamp_with_time_zone_null("settled_at"))
                    .col(string_len_null("settle_request_id", 64))
                    .to_owned(),
            )
            .await?;
        // A verification's request id names one hold of its key (NULLs never collide).
        manager
            .create_index(
                Index::create()
                    .name("credit_holds_request")
                    .table("credit_holds")
                    .col("key_id")
                    .col("request_id")
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("credit_holds_due")
                    .table("credit_holds")
                    .col("state")
                    .col("expires_at")
                    .to_owned(),
            )
            .await?;
        // What each hold reserved per unit, and what its capture charged.
        manager
            .create_table(
                Table::create()
                    .table("credit_hold_amounts")
                    .col(uuid("hold_id"))
                    .col(string_len("unit", 256))
                    .col(big_integer("amount"))
                    .col(big_integer_null("captured"))
                    .primary_key(Index::create().col("hold_id").col("unit"))
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            // The one-statement charge of migration 11, now leaving what holds reserve.
            manager.get_connection().execute_unprepared(CHARGE_FUNCTION).await?;
        }
        Ok(())
    }
}

/// Migration 11's `keyward_charge`, debiting only what `balance - held` covers.
const CHARGE_FUNCTION: &str = r#"
CREATE OR REPLACE FUNCTION keyward_charge(
    charge_keys uuid[], charge_units varchar[], charge_costs bigint[], charge_actors varchar[],
    charge_reason varchar, charged_at timestamptz
) RETURNS TABLE (key_id uuid, unit varchar, balance bigint)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH c AS (
        SELECT * FROM unnest(charge_keys, charge_units, charge_costs, charge_actors)
            WITH ORDINALITY AS c (key_id, unit, cost, actor, ord)
    ), t AS (
        SELECT c.key_id, c.unit, sum(c.cost)::bigint AS cost FROM c GROUP BY c.key_id, c.unit
    ), debited AS (
        UPDATE credit_balances AS b SET balance = b.balance - t.cost FROM t
        WHERE b.key_id = t.key_id AND b.unit = t.unit AND b.balance - b.held > t.cost
        RETURNING b.key_id, b.unit, b.balance
    ), ledger AS (
        INSERT INTO credit_transactions (key_id, unit, delta, balance_after, reason, request_id, actor, created_at)
        SELECT c.key_id, c.unit, -c.cost,
            d.balance + coalesce(sum(c.cost) OVER (PARTITION BY c.key_id, c.unit ORDER BY c.ord DESC
                ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0),
            charge_reason, NULL, c.actor, charged_at
        FROM c JOIN debited AS d ON d.key_id = c.key_id AND d.unit = c.unit
        ORDER BY c.ord
    )
    SELECT d.key_id, d.unit, d.balance FROM debited AS d;
    IF EXISTS (
        SELECT 1 FROM credit_thresholds AS th
        JOIN credit_balances AS b ON b.key_id = th.key_id AND b.unit = th.unit
        JOIN unnest(charge_keys, charge_units) AS c (key_id, unit) ON c.key_id = th.key_id AND c.unit = th.unit
        WHERE th.armed AND th.threshold > b.balance
    ) THEN
        RAISE EXCEPTION 'a balance alert fires in this charge batch' USING ERRCODE = 'KW001';
    END IF;
END
$$"#;
