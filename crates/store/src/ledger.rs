//! Ledger primitives: balances and their ledger entries, written together inside the
//! caller's transaction, so the ledger's deltas always sum to the balance.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use keyward_core::{
    credit::{Credit, apply_delta},
    error::Result,
};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
    sea_query::{ArrayType, OnConflict},
};
use uuid::Uuid;

use crate::{
    db::{ROWS_PER_STATEMENT, db_error},
    entity::{credit_balance, credit_transaction},
    envelope::Mutation,
    sql::Sql,
};

/// Ledger reason of initial balances.
const REASON_CREATE: &str = "create";
/// Ledger reason of charges by VerifyApiKey.
pub(crate) const REASON_VERIFY: &str = "verify";

/// Initial balances of a new key, with their ledger entries.
pub(crate) async fn initialize(
    txn: &DatabaseTransaction,
    id: Uuid,
    credits: &[Credit],
    mutation: &Mutation,
) -> Result<()> {
    for credit in credits {
        set_balance(txn, id, &credit.unit, credit.amount).await?;
    }
    let ledger = credits
        .iter()
        .filter(|credit| credit.amount != 0)
        .map(|credit| {
            ledger_row(
                id,
                &credit.unit,
                credit.amount,
                credit.amount,
                REASON_CREATE,
                mutation.request_id.as_deref(),
                &mutation.actor,
                mutation.now,
            )
        })
        .collect();
    insert_ledger(txn, ledger).await
}

pub(crate) async fn all_balances(conn: &impl ConnectionTrait, id: Uuid) -> Result<Vec<Credit>> {
    let rows = credit_balance::Entity::find()
        .filter(credit_balance::Column::KeyId.eq(id))
        .order_by_asc(credit_balance::Column::Unit)
        .all(conn)
        .await
        .map_err(db_error)?;
    Ok(rows.into_iter().map(|row| Credit::new(row.unit, row.balance)).collect())
}

/// The balances of `units` of key `id`, creating missing ones at 0, locked until the
/// transaction ends (SQLite's write transaction already excludes every other writer).
pub(crate) async fn lock_balances<'a>(
    txn: &DatabaseTransaction,
    id: Uuid,
    units: impl IntoIterator<Item = &'a str>,
) -> Result<HashMap<String, i64>> {
    Ok(lock_held_balances(txn, id, units).await?.into_iter().map(|(unit, (balance, _))| (unit, balance)).collect())
}

/// [`lock_balances`] with what live holds reserve of each: (balance, held) per unit.
pub(crate) async fn lock_held_balances<'a>(
    txn: &DatabaseTransaction,
    id: Uuid,
    units: impl IntoIterator<Item = &'a str>,
) -> Result<HashMap<String, (i64, i64)>> {
    let units: Vec<String> = units.into_iter().map(str::to_owned).collect();
    let missing = units.iter().map(|unit| credit_balance::ActiveModel {
        key_id: Set(id),
        unit: Set(unit.clone()),
        balance: Set(0),
        held: Set(0),
        exhausted_armed: Set(false),
    });
    credit_balance::Entity::insert_many(missing)
        .on_conflict_do_nothing()
        .exec_without_returning(txn)
        .await
        .map_err(db_error)?;
    let mut select = credit_balance::Entity::find()
        .filter(credit_balance::Column::KeyId.eq(id))
        .filter(credit_balance::Column::Unit.is_in(units));
    if txn.get_database_backend() == DbBackend::Postgres {
        select = select.lock_exclusive();
    }
    let rows = select.all(txn).await.map_err(db_error)?;
    Ok(rows.into_iter().map(|row| (row.unit, (row.balance, row.held))).collect())
}

pub(crate) async fn set_balance(txn: &DatabaseTransaction, id: Uuid, unit: &str, balance: i64) -> Result<()> {
    credit_balance::Entity::insert(credit_balance::ActiveModel {
        key_id: Set(id),
        unit: Set(unit.to_owned()),
        balance: Set(balance),
        held: Set(0),
        exhausted_armed: Set(balance > 0),
    })
    .on_conflict(
        OnConflict::columns([credit_balance::Column::KeyId, credit_balance::Column::Unit])
            .update_column(credit_balance::Column::Balance)
            .to_owned(),
    )
    .exec_without_returning(txn)
    .await
    .map_err(db_error)?;
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one ledger column each
pub(crate) fn ledger_row(
    key_id: Uuid,
    unit: &str,
    delta: i64,
    balance_after: i64,
    reason: &str,
    request_id: Option<&str>,
    actor: &str,
    at: DateTime<Utc>,
) -> credit_transaction::ActiveModel {
    credit_transaction::ActiveModel {
        id: NotSet,
        key_id: Set(key_id),
        unit: Set(unit.to_owned()),
        delta: Set(delta),
        balance_after: Set(balance_after),
        reason: Set(reason.to_owned()),
        request_id: Set(request_id.map(str::to_owned)),
        actor: Set(actor.to_owned()),
        created_at: Set(at),
        hold_id: Set(None),
        spent_by: Set(None),
    }
}

/// One ledger entry of a charge batch, whose reason, actor's time and transaction are shared.
pub(crate) struct Entry {
    /// The account: a key, or an owner's pool.
    pub(crate) key_id: Uuid,
    pub(crate) unit: String,
    pub(crate) delta: i64,
    pub(crate) balance_after: i64,
    pub(crate) request_id: Option<String>,
    pub(crate) actor: String,
    /// On a pool's entry, the key that spent.
    pub(crate) spent_by: Option<Uuid>,
    /// On a capture's entry, the hold it settles.
    pub(crate) hold_id: Option<Uuid>,
}

/// Writes a batch's entries as multi-row INSERTs (SQLite has no arrays to bind).
pub(crate) async fn insert_entries(
    txn: &DatabaseTransaction,
    entries: &[Entry],
    reason: &str,
    at: DateTime<Utc>,
) -> Result<(), DbErr> {
    let rows: Vec<_> = entries
        .iter()
        .map(|entry| {
            let request_id = entry.request_id.as_deref();
            let mut row = ledger_row(
                entry.key_id,
                &entry.unit,
                entry.delta,
                entry.balance_after,
                reason,
                request_id,
                &entry.actor,
                at,
            );
            row.spent_by = Set(entry.spent_by);
            row.hold_id = Set(entry.hold_id);
            row
        })
        .collect();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        credit_transaction::Entity::insert_many(chunk.to_vec()).exec_without_returning(txn).await?;
    }
    Ok(())
}

/// PostgreSQL's INSERT of a batch's entries, binding a column array each, so that its
/// text (and its prepared plan) is the same whatever their number; a charge batch runs
/// it inside the statement that also fires its alerts ([`crate::alerts::fire`]).
pub(crate) fn push_insert(sql: &mut Sql, entries: Vec<Entry>, reason: &str, at: DateTime<Utc>) {
    let mut columns = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for entry in entries {
        columns.0.push(entry.key_id);
        columns.1.push(entry.unit);
        columns.2.push(entry.delta);
        columns.3.push(entry.balance_after);
        // A request id is never empty (it is a UUID), so '' can stand for none in a text array.
        columns.4.push(sea_orm::Value::from(entry.request_id.unwrap_or_default()));
        columns.5.push(entry.actor);
        // No key has the nil id, so it can stand for none in a uuid array.
        columns.6.push(entry.spent_by.unwrap_or_else(Uuid::nil));
        columns.7.push(entry.hold_id.unwrap_or_else(Uuid::nil));
    }
    sql.push(
        "INSERT INTO credit_transactions \
         (key_id, unit, delta, balance_after, reason, request_id, actor, created_at, spent_by, hold_id) \
         SELECT v.key_id, v.unit, v.delta, v.balance_after, ",
    );
    sql.bind(reason, "varchar").push(", NULLIF(v.request_id, ''), v.actor, ").bind(at, "timestamptz");
    sql.push(", NULLIF(v.spent_by, ").bind(Uuid::nil(), "uuid").push("), NULLIF(v.hold_id, ");
    sql.bind(Uuid::nil(), "uuid").push(")");
    sql.push(" FROM unnest(").bind(columns.0, "uuid[]").push(", ").bind(columns.1, "varchar[]");
    sql.push(", ").bind(columns.2, "bigint[]").push(", ").bind(columns.3, "bigint[]").push(", ");
    sql.bind(sea_orm::Value::Array(ArrayType::String, Some(Box::new(columns.4))), "varchar[]");
    sql.push(", ").bind(columns.5, "varchar[]").push(", ").bind(columns.6, "uuid[]");
    sql.push(", ").bind(columns.7, "uuid[]");
    sql.push(") AS v (key_id, unit, delta, balance_after, request_id, actor, spent_by, hold_id)");
}

pub(crate) async fn insert_ledger(txn: &DatabaseTransaction, rows: Vec<credit_transaction::ActiveModel>) -> Result<()> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        credit_transaction::Entity::insert_many(chunk.to_vec()).exec_without_returning(txn).await.map_err(db_error)?;
    }
    Ok(())
}

/// Adds `deltas` to a key's balances inside `txn`, all or none, with one ledger entry per unit.
pub(crate) async fn apply_deltas(
    txn: &DatabaseTransaction,
    id: Uuid,
    deltas: &[Credit],
    reason: &str,
    mutation: &Mutation,
) -> Result<()> {
    let current = lock_held_balances(txn, id, deltas.iter().map(|delta| delta.unit.as_str())).await?;
    let mut entries = Vec::with_capacity(deltas.len());
    for delta in deltas {
        let (balance, held) = current.get(&delta.unit).copied().unwrap_or((0, 0));
        // Credits live holds reserve are not there to take away: the balance never
        // falls below them.
        apply_delta(&delta.unit, balance - held, delta.amount)?;
        let next = apply_delta(&delta.unit, balance, delta.amount)?;
        entries.push((delta, next));
    }
    for (delta, next) in &entries {
        set_balance(txn, id, &delta.unit, *next).await?;
    }
    let ledger = entries.iter().map(|(delta, next)| {
        ledger_row(
            id,
            &delta.unit,
            delta.amount,
            *next,
            reason,
            mutation.request_id.as_deref(),
            &mutation.actor,
            mutation.now,
        )
    });
    insert_ledger(txn, ledger.collect()).await
}
