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
        // PostgreSQL's charge batch in one statement, so in one round trip and one commit
        // without BEGIN: each (key, unit) debited its charges' summed cost if its balance
        // stays above 0 (reaching 0 fires `credits.exhausted`, which the transactional
        // path writes), and each charge's ledger entry written with the balance it left
        // (the balance after the charges that follow it in the batch, added back). A
        // VOLATILE function takes a fresh snapshot per statement, so the check after the
        // debit sees every threshold committed before the debit took its row locks (a
        // threshold change takes them first): if an armed one is now above its balance,
        // the whole statement is rolled back (KW001) and the batch goes the
        // transactional way, which fires the alert with its event. Returns the new
        // balance of each (key, unit) debited.
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager
            .get_connection()
            .execute_unprepared(
                r#"
CREATE FUNCTION keyward_charge(
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
        WHERE b.key_id = t.key_id AND b.unit = t.unit AND b.balance > t.cost
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
$$"#,
            )
            .await?;
        Ok(())
    }
}
