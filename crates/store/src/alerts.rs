//! Balance alerts: `credits.low` when a balance falls below its key's threshold for the
//! unit, `credits.exhausted` when it reaches 0. Each is a flag beside the balance
//! (`credit_thresholds.armed`, `credit_balances.exhausted_armed`): the change that takes
//! the balance past it clears the flag with one conditional UPDATE and writes the event,
//! a change that lifts the balance back sets it again, both in the change's transaction
//! while it holds the balance's row lock. So an event exists iff its change committed,
//! and racing changes write one event per crossing.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use keyward_core::{
    credit::Credit,
    error::Result,
    event::{self, EventType},
};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect,
};
use uuid::Uuid;

use crate::{
    db::{ROWS_PER_STATEMENT, db_error},
    entity::{credit_balance, credit_threshold},
    keys::find_row,
    ledger::{self, all_balances},
    outbox,
    pools::find_pool,
    sql::Sql,
};

/// A balance that crossed an alert's line in this transaction.
#[derive(Debug)]
pub(crate) struct Alert {
    key_id: Uuid,
    unit: String,
    /// The `credits.low` threshold crossed; `None` for `credits.exhausted`.
    threshold: Option<i64>,
}

/// Replaces a key's low-balance thresholds. The key's balances are locked first, so a
/// charge racing the change either committed before (and the new flags see its balance)
/// or waits for it (and fires against the new thresholds); [`settle`] then arms those
/// the balance is at or above.
pub(crate) async fn replace_thresholds(txn: &DatabaseTransaction, id: Uuid, thresholds: &[Credit]) -> Result<()> {
    if txn.get_database_backend() == DbBackend::Postgres {
        credit_balance::Entity::find()
            .filter(credit_balance::Column::KeyId.eq(id))
            .order_by_asc(credit_balance::Column::Unit)
            .lock_exclusive()
            .all(txn)
            .await
            .map_err(db_error)?;
    }
    credit_threshold::Entity::delete_many()
        .filter(credit_threshold::Column::KeyId.eq(id))
        .exec(txn)
        .await
        .map_err(db_error)?;
    if thresholds.is_empty() {
        return Ok(());
    }
    let rows = thresholds.iter().map(|threshold| credit_threshold::ActiveModel {
        key_id: Set(id),
        unit: Set(threshold.unit.clone()),
        threshold: Set(threshold.amount),
        armed: Set(false),
    });
    credit_threshold::Entity::insert_many(rows).exec_without_returning(txn).await.map_err(db_error)?;
    Ok(())
}

/// The low-balance thresholds of each of `ids`, ordered by unit.
pub(crate) async fn thresholds(conn: &impl ConnectionTrait, ids: &[Uuid]) -> Result<BTreeMap<Uuid, Vec<Credit>>> {
    let rows = credit_threshold::Entity::find()
        .filter(credit_threshold::Column::KeyId.is_in(ids.iter().copied()))
        .order_by_asc(credit_threshold::Column::Unit)
        .all(conn)
        .await
        .map_err(db_error)?;
    let mut by_key: BTreeMap<Uuid, Vec<Credit>> = BTreeMap::new();
    for row in rows {
        by_key.entry(row.key_id).or_default().push(Credit::new(row.unit, row.threshold));
    }
    Ok(by_key)
}

/// After a change that may have moved balances of `ids` either way (an adjustment, a
/// refill, an update, a creation): writes the events of every alert crossed and re-arms
/// those the balances are back over.
pub(crate) async fn settle(txn: &DatabaseTransaction, ids: &[Uuid], now: DateTime<Utc>) -> Result<()> {
    let fired = fire(txn, ids, Vec::new(), "", now).await.map_err(db_error)?;
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut sql = Sql::new(txn.get_database_backend());
        sql.push("UPDATE credit_balances SET exhausted_armed = TRUE WHERE NOT exhausted_armed AND balance > 0");
        keys_in(&mut sql, chunk);
        txn.execute_raw(sql.statement()).await.map_err(db_error)?;
        let mut sql = Sql::new(txn.get_database_backend());
        sql.push("UPDATE credit_thresholds SET armed = TRUE WHERE NOT armed AND threshold <= ");
        sql.push(BALANCE);
        keys_in(&mut sql, chunk);
        txn.execute_raw(sql.statement()).await.map_err(db_error)?;
    }
    emit(txn, fired, now).await
}

/// The balance of a threshold's key and unit (NULL without one, which never crosses).
const BALANCE: &str = "(SELECT b.balance FROM credit_balances b \
                       WHERE b.key_id = credit_thresholds.key_id AND b.unit = credit_thresholds.unit)";

/// Writes `ledger` (entries of a charge batch, with their reason and time) and disarms
/// every armed alert of `ids` whose balance is past its line, returning them: the alerts
/// this transaction fires. Balances only fall in a charge, so it needs no re-arming. On
/// PostgreSQL all of it is one statement (the insert and the two updates as CTEs), two
/// round trips fewer per charge batch than one statement each.
pub(crate) async fn fire(
    txn: &DatabaseTransaction,
    ids: &[Uuid],
    ledger: Vec<ledger::Entry>,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<Vec<Alert>, DbErr> {
    let backend = txn.get_database_backend();
    if backend == DbBackend::Postgres {
        let mut sql = Sql::new(backend);
        sql.push("WITH ");
        if !ledger.is_empty() {
            sql.push("ledger AS (");
            ledger::push_insert(&mut sql, ledger, reason, now);
            sql.push("), ");
        }
        sql.push("low AS (UPDATE credit_thresholds SET armed = FALSE WHERE armed AND threshold > ");
        sql.push(BALANCE);
        keys_in(&mut sql, ids);
        sql.push(" RETURNING key_id, unit, threshold), gone AS (UPDATE credit_balances SET exhausted_armed = FALSE ");
        sql.push("WHERE exhausted_armed AND balance <= 0");
        keys_in(&mut sql, ids);
        sql.push(
            " RETURNING key_id, unit) SELECT key_id, unit, threshold FROM low \
             UNION ALL SELECT key_id, unit, NULL::bigint FROM gone",
        );
        return txn
            .query_all_raw(sql.statement())
            .await?
            .into_iter()
            .map(|row| {
                Ok(Alert {
                    key_id: row.try_get("", "key_id")?,
                    unit: row.try_get("", "unit")?,
                    threshold: row.try_get("", "threshold")?,
                })
            })
            .collect();
    }
    ledger::insert_entries(txn, &ledger, reason, now).await?;
    let mut fired = Vec::new();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut sql = Sql::new(backend);
        sql.push("UPDATE credit_thresholds SET armed = FALSE WHERE armed AND threshold > ");
        sql.push(BALANCE);
        keys_in(&mut sql, chunk);
        sql.push(" RETURNING key_id, unit, threshold");
        for row in txn.query_all_raw(sql.statement()).await? {
            fired.push(Alert {
                key_id: row.try_get("", "key_id")?,
                unit: row.try_get("", "unit")?,
                threshold: Some(row.try_get("", "threshold")?),
            });
        }
        let mut sql = Sql::new(backend);
        sql.push("UPDATE credit_balances SET exhausted_armed = FALSE WHERE exhausted_armed AND balance <= 0");
        keys_in(&mut sql, chunk);
        sql.push(" RETURNING key_id, unit");
        for row in txn.query_all_raw(sql.statement()).await? {
            fired.push(Alert { key_id: row.try_get("", "key_id")?, unit: row.try_get("", "unit")?, threshold: None });
        }
    }
    Ok(fired)
}

/// Whose balance crossed an alert's line.
enum Subject {
    Key(Box<keyward_core::model::ApiKey>),
    Pool(crate::pools::Pool),
}

/// Writes the event of each fired alert, with the key as the API shows it (or the
/// owner's pool) and the balance as this transaction leaves it.
pub(crate) async fn emit(txn: &DatabaseTransaction, fired: Vec<Alert>, now: DateTime<Utc>) -> Result<()> {
    // In account order: batches firing alerts of the same accounts take their event
    // sequence rows in the same order, so they wait on each other rather than deadlock.
    let accounts: BTreeSet<Uuid> = fired.iter().map(|alert| alert.key_id).collect();
    for account in accounts {
        let subject = match find_pool(txn, account).await? {
            Some(pool) => Subject::Pool(pool),
            None => Subject::Key(Box::new(find_row(txn, account).await?)),
        };
        let balances = all_balances(txn, account).await?;
        for alert in fired.iter().filter(|alert| alert.key_id == account) {
            let balance = balances.iter().find(|credit| credit.unit == alert.unit).map_or(0, |credit| credit.amount);
            let kind = if alert.threshold.is_some() { EventType::CreditsLow } else { EventType::CreditsExhausted };
            let data = match &subject {
                Subject::Pool(pool) => {
                    event::pool_balance_alert(&pool.owner, &pool.environment, &alert.unit, balance, alert.threshold)
                }
                Subject::Key(key) => event::balance_alert(key, &alert.unit, balance, alert.threshold, now),
            };
            outbox::emit(txn, kind, account, data, now).await?;
        }
    }
    Ok(())
}

/// Restricts a statement to the keys `ids`: on PostgreSQL one array parameter, so the
/// statement's text (and its prepared plan) is the same for any number of keys.
fn keys_in(sql: &mut Sql, ids: &[Uuid]) {
    if sql.backend() == DbBackend::Postgres {
        sql.push(" AND key_id = ANY(").bind(ids.to_vec(), "uuid[]").push(")");
        return;
    }
    sql.push(" AND key_id IN (");
    for (position, id) in ids.iter().enumerate() {
        if position > 0 {
            sql.push(", ");
        }
        sql.bind(*id, "uuid");
    }
    sql.push(")");
}
