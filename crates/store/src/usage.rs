//! Usage: verification counters, credits spent and last-use times, flushed in batches on
//! an interval instead of written per call, and read back per hour.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use keyward_core::error::Result;
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, ExprTrait, QueryFilter,
    QueryOrder, QuerySelect, TransactionTrait,
    sea_query::{Expr, OnConflict, Query, SimpleExpr},
};
use uuid::Uuid;

use crate::{
    Store,
    db::{ROWS_PER_STATEMENT, db_error},
    entity::{api_key, credit_spend_counter, usage_counter},
    sql::Sql,
};

/// A map keyed by ids and hours the process made itself, not by what a caller chose:
/// it is written on every verification, so it hashes with foldhash rather than SipHash.
pub(crate) type UsageMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Usage gathered in memory since the last flush.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UsageBatch {
    /// Verifications per (key, hour, outcome).
    pub counts: UsageMap<(Uuid, DateTime<Utc>, &'static str), i64>,
    /// Latest successful use per key.
    pub last_used: UsageMap<Uuid, DateTime<Utc>>,
    /// Credits presented as cost by valid verifications, per (key, hour, unit).
    pub spent: UsageMap<(Uuid, DateTime<Utc>, String), i64>,
}

impl UsageBatch {
    /// Whether there is nothing to flush.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty() && self.last_used.is_empty() && self.spent.is_empty()
    }

    /// One batch per row, so rows can be written (and refused) one at a time.
    pub fn into_rows(self) -> impl Iterator<Item = UsageBatch> {
        let counts = self
            .counts
            .into_iter()
            .map(|(key, count)| UsageBatch { counts: UsageMap::from_iter([(key, count)]), ..UsageBatch::default() });
        let spent = self
            .spent
            .into_iter()
            .map(|(key, amount)| UsageBatch { spent: UsageMap::from_iter([(key, amount)]), ..UsageBatch::default() });
        let last_used = self
            .last_used
            .into_iter()
            .map(|(id, at)| UsageBatch { last_used: UsageMap::from_iter([(id, at)]), ..UsageBatch::default() });
        counts.chain(spent).chain(last_used)
    }
}

/// [`Store::flush_usage`] on PostgreSQL: one statement per table whatever the batch's
/// size, its rows bound as column arrays. Built from chunks of bound rows instead, a flush
/// of 100,000 keys' usage took more than 10 s, most of it building and binding the
/// statements.
async fn flush_on_postgres(txn: &DatabaseTransaction, batch: &UsageBatch) -> Result<()> {
    let counts =
        batch.counts.iter().map(|((key_id, hour, outcome), count)| (*key_id, *hour, (*outcome).to_owned(), *count));
    add_counters(txn, "usage_counters", "outcome", "count", counts).await?;
    let spent = batch.spent.iter().map(|((key_id, hour, unit), amount)| (*key_id, *hour, unit.clone(), *amount));
    add_counters(txn, "credit_spend_counters", "unit", "amount", spent).await?;
    if !batch.last_used.is_empty() {
        // Kept to the second, as on SQLite.
        let (ids, times): (Vec<Uuid>, Vec<DateTime<Utc>>) = batch
            .last_used
            .iter()
            .map(|(id, at)| (*id, at.duration_trunc(TimeDelta::seconds(1)).unwrap_or(*at)))
            .unzip();
        let mut sql = Sql::new(DbBackend::Postgres);
        sql.push("UPDATE api_keys SET last_used_at = v.at FROM unnest(");
        sql.bind(ids, "uuid[]").push(", ").bind(times, "timestamptz[]");
        sql.push(") AS v (id, at) WHERE api_keys.id = v.id AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < v.at)");
        txn.execute_raw(sql.statement()).await.map_err(db_error)?;
    }
    Ok(())
}

/// Adds `rows` (key, hour, `label`, amount) to `table`'s `column`, saturating: one
/// statement, the rows bound as column arrays.
async fn add_counters(
    txn: &DatabaseTransaction,
    table: &str,
    label: &str,
    column: &str,
    rows: impl Iterator<Item = (Uuid, DateTime<Utc>, String, i64)>,
) -> Result<()> {
    let mut columns = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (key_id, hour, name, amount) in rows {
        columns.0.push(key_id);
        columns.1.push(hour);
        columns.2.push(name);
        columns.3.push(Ord::max(amount, 0));
    }
    if columns.0.is_empty() {
        return Ok(());
    }
    let mut sql = Sql::new(DbBackend::Postgres);
    sql.push(&format!("INSERT INTO {table} (key_id, bucket_start, {label}, {column}) SELECT * FROM unnest("));
    sql.bind(columns.0, "uuid[]").push(", ").bind(columns.1, "timestamptz[]").push(", ");
    sql.bind(columns.2, "varchar[]").push(", ").bind(columns.3, "bigint[]");
    sql.push(&format!(") ON CONFLICT (key_id, bucket_start, {label}) DO UPDATE SET {column} = "));
    sql.push(&saturating_sum_sql(table, column));
    txn.execute_raw(sql.statement()).await.map_err(db_error)?;
    Ok(())
}

/// Whose usage to read.
#[derive(Debug, Clone)]
pub enum UsageScope {
    /// One key.
    Key(Uuid),
    /// Every key of an owner.
    Owner(String),
}

/// Stored hourly usage: verifications per (hour, outcome) and credits spent per (hour, unit).
#[derive(Debug, Clone, Default)]
pub struct HourlyUsage {
    /// (hour, outcome, count).
    pub verifications: Vec<(DateTime<Utc>, String, i64)>,
    /// (hour, unit, amount).
    pub spent: Vec<(DateTime<Utc>, String, i64)>,
}

/// `table.column + excluded.column`, stopping at `i64::MAX` instead of overflowing: an
/// overflow turns the column into a REAL on SQLite and fails the statement on PostgreSQL.
/// The subtraction cannot overflow, as flushed amounts are never negative.
fn saturating_sum(table: &str, column: &str) -> SimpleExpr {
    Expr::cust(saturating_sum_sql(table, column))
}

fn saturating_sum_sql(table: &str, column: &str) -> String {
    let max = i64::MAX;
    format!(
        "CASE WHEN {table}.{column} > {max} - excluded.{column} THEN {max} ELSE {table}.{column} + excluded.{column} END"
    )
}

/// Rows of `scope`, by their key column `key_id`.
fn of_scope(scope: &UsageScope, key_id: impl ColumnTrait) -> Condition {
    match scope {
        UsageScope::Key(id) => Condition::all().add(key_id.eq(*id)),
        UsageScope::Owner(owner) => Condition::all().add(
            key_id.in_subquery(
                Query::select()
                    .column(api_key::Column::Id)
                    .from(api_key::Entity)
                    .and_where(api_key::Column::Owner.eq(owner.clone()))
                    .to_owned(),
            ),
        ),
    }
}

impl Store {
    /// Adds a batch to the stored counters and moves last-use times forward, in one transaction.
    pub async fn flush_usage(&self, batch: &UsageBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let db = self.db()?;
        let txn = db.begin().await.map_err(db_error)?;
        if db.get_database_backend() == DbBackend::Postgres {
            flush_on_postgres(&txn, batch).await?;
            return txn.commit().await.map_err(db_error);
        }
        let counters: Vec<_> = batch
            .counts
            .iter()
            .map(|((key_id, bucket_start, outcome), count)| usage_counter::ActiveModel {
                key_id: Set(*key_id),
                bucket_start: Set(*bucket_start),
                outcome: Set((*outcome).to_owned()),
                count: Set(Ord::max(*count, 0)),
            })
            .collect();
        for chunk in counters.chunks(ROWS_PER_STATEMENT) {
            usage_counter::Entity::insert_many(chunk.to_vec())
                .on_conflict(
                    OnConflict::columns([
                        usage_counter::Column::KeyId,
                        usage_counter::Column::BucketStart,
                        usage_counter::Column::Outcome,
                    ])
                    .value(usage_counter::Column::Count, saturating_sum("usage_counters", "count"))
                    .to_owned(),
                )
                .exec(&txn)
                .await
                .map_err(db_error)?;
        }
        let spent: Vec<_> = batch
            .spent
            .iter()
            .map(|((key_id, bucket_start, unit), amount)| credit_spend_counter::ActiveModel {
                key_id: Set(*key_id),
                bucket_start: Set(*bucket_start),
                unit: Set(unit.clone()),
                amount: Set(Ord::max(*amount, 0)),
            })
            .collect();
        for chunk in spent.chunks(ROWS_PER_STATEMENT) {
            credit_spend_counter::Entity::insert_many(chunk.to_vec())
                .on_conflict(
                    OnConflict::columns([
                        credit_spend_counter::Column::KeyId,
                        credit_spend_counter::Column::BucketStart,
                        credit_spend_counter::Column::Unit,
                    ])
                    .value(credit_spend_counter::Column::Amount, saturating_sum("credit_spend_counters", "amount"))
                    .to_owned(),
                )
                .exec(&txn)
                .await
                .map_err(db_error)?;
        }
        // Last-use times are kept to the second: one UPDATE per second that saw uses.
        let mut by_second: BTreeMap<DateTime<Utc>, Vec<Uuid>> = BTreeMap::new();
        for (key_id, at) in &batch.last_used {
            let second = at.duration_trunc(TimeDelta::seconds(1)).unwrap_or(*at);
            by_second.entry(second).or_default().push(*key_id);
        }
        for (at, ids) in by_second {
            for chunk in ids.chunks(ROWS_PER_STATEMENT) {
                api_key::Entity::update_many()
                    .col_expr(api_key::Column::LastUsedAt, Expr::value(at))
                    .filter(api_key::Column::Id.is_in(chunk.iter().copied()))
                    .filter(api_key::Column::LastUsedAt.is_null().or(api_key::Column::LastUsedAt.lt(at)))
                    .exec(&txn)
                    .await
                    .map_err(db_error)?;
            }
        }
        txn.commit().await.map_err(db_error)
    }

    /// Stored verification count of a key and outcome, over all hours (for tests and operators).
    pub async fn usage_count(&self, key_id: Uuid, outcome: &str) -> Result<i64> {
        let rows = usage_counter::Entity::find()
            .filter(usage_counter::Column::KeyId.eq(key_id))
            .filter(usage_counter::Column::Outcome.eq(outcome))
            .all(self.db()?)
            .await
            .map_err(db_error)?;
        Ok(rows.iter().fold(0_i64, |total, row| total.saturating_add(row.count)))
    }

    /// The first `limit` hours within `[start, end)` that hold usage of a key or an
    /// owner's keys, oldest first: where a page of buckets ends.
    pub async fn usage_hours(
        &self,
        scope: &UsageScope,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        limit: u64,
    ) -> Result<Vec<DateTime<Utc>>> {
        let db = self.db()?;
        let counted: Vec<DateTime<Utc>> = usage_counter::Entity::find()
            .select_only()
            .column(usage_counter::Column::BucketStart)
            .distinct()
            .filter(of_scope(scope, usage_counter::Column::KeyId))
            .filter(usage_counter::Column::BucketStart.gte(start))
            .filter(usage_counter::Column::BucketStart.lt(end))
            .order_by_asc(usage_counter::Column::BucketStart)
            .limit(limit)
            .into_tuple()
            .all(db)
            .await
            .map_err(db_error)?;
        let spent: Vec<DateTime<Utc>> = credit_spend_counter::Entity::find()
            .select_only()
            .column(credit_spend_counter::Column::BucketStart)
            .distinct()
            .filter(of_scope(scope, credit_spend_counter::Column::KeyId))
            .filter(credit_spend_counter::Column::BucketStart.gte(start))
            .filter(credit_spend_counter::Column::BucketStart.lt(end))
            .order_by_asc(credit_spend_counter::Column::BucketStart)
            .limit(limit)
            .into_tuple()
            .all(db)
            .await
            .map_err(db_error)?;
        let hours: BTreeSet<DateTime<Utc>> = counted.into_iter().chain(spent).collect();
        Ok(hours.into_iter().take(usize::try_from(limit).unwrap_or(usize::MAX)).collect())
    }

    /// Stored hourly usage of a key or an owner's keys within `[start, end)`.
    pub async fn hourly_usage(
        &self,
        scope: &UsageScope,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<HourlyUsage> {
        let counters = usage_counter::Entity::find()
            .filter(of_scope(scope, usage_counter::Column::KeyId))
            .filter(usage_counter::Column::BucketStart.gte(start))
            .filter(usage_counter::Column::BucketStart.lt(end))
            .all(self.db()?)
            .await
            .map_err(db_error)?;
        let spent = credit_spend_counter::Entity::find()
            .filter(of_scope(scope, credit_spend_counter::Column::KeyId))
            .filter(credit_spend_counter::Column::BucketStart.gte(start))
            .filter(credit_spend_counter::Column::BucketStart.lt(end))
            .all(self.db()?)
            .await
            .map_err(db_error)?;
        Ok(HourlyUsage {
            verifications: counters.into_iter().map(|row| (row.bucket_start, row.outcome, row.count)).collect(),
            spent: spent.into_iter().map(|row| (row.bucket_start, row.unit, row.amount)).collect(),
        })
    }
}
