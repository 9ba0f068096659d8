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
        // PostgreSQL's batch of one-unit holds in one statement, so in one round trip and
        // one commit without BEGIN, as `keyward_charge` does for charges: in the batch's
        // order, each hold reserves its amount only if `balance - held` of its account
        // covers it (the same condition as the transactional path), and the holds that
        // reserved get their rows. A hold moves no balance, so it crosses no alert line.
        // Returns the ids of the holds that reserved.
        if manager.get_database_backend() != DbBackend::Postgres {
            return Ok(());
        }
        manager.get_connection().execute_unprepared(HOLD_FUNCTION).await?;
        Ok(())
    }
}

/// Times come as microseconds since the epoch, so no array of timestamps is bound.
const HOLD_FUNCTION: &str = r#"
CREATE FUNCTION keyward_hold(
    hold_ids uuid[], hold_keys uuid[], hold_accounts uuid[], hold_actors varchar[], hold_units varchar[],
    hold_amounts bigint[], hold_created bigint[], hold_expiries bigint[]
) RETURNS TABLE (held_id uuid)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    reserved uuid[] := '{}';
BEGIN
    FOR i IN 1 .. coalesce(array_length(hold_ids, 1), 0) LOOP
        UPDATE credit_balances SET held = held + hold_amounts[i]
        WHERE key_id = hold_accounts[i] AND unit = hold_units[i] AND balance - held >= hold_amounts[i];
        IF FOUND THEN
            reserved := reserved || hold_ids[i];
        END IF;
    END LOOP;
    INSERT INTO credit_holds (id, key_id, actor, request_id, state, created_at, expires_at, pool_id)
    SELECT h.id, h.key_id, h.actor, NULL, 'live',
        timestamptz 'epoch' + h.created * interval '1 microsecond',
        timestamptz 'epoch' + h.expires * interval '1 microsecond',
        nullif(h.account, h.key_id)
    FROM unnest(hold_ids, hold_keys, hold_accounts, hold_actors, hold_created, hold_expiries)
        AS h (id, key_id, account, actor, created, expires)
    WHERE h.id = ANY (reserved);
    INSERT INTO credit_hold_amounts (hold_id, unit, amount)
    SELECT h.id, h.unit, h.amount
    FROM unnest(hold_ids, hold_units, hold_amounts) AS h (id, unit, amount)
    WHERE h.id = ANY (reserved);
    RETURN QUERY SELECT unnest(reserved);
END
$$"#;
