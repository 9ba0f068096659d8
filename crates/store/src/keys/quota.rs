//! The per-owner quota of live keys, checked under a lock row so that concurrent
//! creates cannot both pass it.

use chrono::{DateTime, Utc};
use keyward_core::{Error, error::Result};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, ExprTrait, QueryFilter,
    QuerySelect, QueryTrait, sea_query::Expr,
};

use crate::{
    Store,
    db::db_error,
    entity::{api_key, quota_lock},
};

impl Store {
    /// Live (not revoked, not expired) keys of `owner` in `environment`.
    pub async fn count_live(&self, owner: &str, environment: &str, now: DateTime<Utc>) -> Result<i64> {
        count_live(self.db()?, owner, environment, now, None).await
    }
}

/// Live keys of an owner in an environment, counting no further than `at_most`. The
/// revoked-status term is written as the partial index `api_keys_live_by_owner` states it
/// (a literal, not a bound value), so the count reads that index only.
async fn count_live(
    conn: &impl ConnectionTrait,
    owner: &str,
    environment: &str,
    now: DateTime<Utc>,
    at_most: Option<u64>,
) -> Result<i64> {
    let live = api_key::Entity::find()
        .select_only()
        .column(api_key::Column::Number)
        .filter(api_key::Column::Owner.eq(owner))
        .filter(api_key::Column::Environment.eq(environment))
        .filter(Expr::cust("status <> 'revoked'"))
        .filter(api_key::Column::ExpiresAt.is_null().or(api_key::Column::ExpiresAt.gt(now)))
        .limit(at_most)
        .into_query();
    // COUNT over the limited rows (sea-orm's own count drops the LIMIT).
    let count =
        sea_orm::sea_query::Query::select().expr(Expr::cust("COUNT(*) AS n")).from_subquery(live, "live").to_owned();
    let row = conn.query_one(&count).await.map_err(db_error)?.ok_or_else(|| Error::internal("COUNT gave no row"))?;
    row.try_get::<i64>("", "n").map_err(db_error)
}

/// What a quota-checked write does to the keys its owner holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Arrival {
    /// A key that was not held (new, or brought back from revoked) becomes held.
    Joins,
    /// A key already held (not revoked) becomes live again: its expiry is lifted.
    Revives,
}

/// Serialises quota checks of one (owner, environment) and keeps its count of held
/// (not revoked) keys: the UPDATE holds the lock row until commit, so the check that
/// follows sees every earlier create. Live keys are never more than held ones, so a
/// count of held keys within the quota admits without counting; only an owner at the
/// quota by that count (some of its keys may have expired) has its live keys counted.
pub(super) async fn enforce_quota(
    txn: &DatabaseTransaction,
    owner: &str,
    environment: &str,
    max_live_keys: i64,
    now: DateTime<Utc>,
    arrival: Arrival,
) -> Result<()> {
    quota_lock::Entity::insert(quota_lock::ActiveModel {
        owner: Set(owner.to_owned()),
        environment: Set(environment.to_owned()),
        generation: Set(0),
        held: Set(0),
    })
    .on_conflict_do_nothing()
    .exec(txn)
    .await
    .map_err(db_error)?;
    let joins = i64::from(arrival == Arrival::Joins);
    let held = adjust_held(txn, owner, environment, joins).await?;
    if held <= max_live_keys {
        return Ok(());
    }
    // Counting stops at the quota: the check costs at most the quota, whatever the owner
    // ever held. (A bound beyond i64 cannot be bound as a SQL integer.)
    let at_most = u64::try_from(max_live_keys.saturating_add(1)).unwrap_or(0);
    let live = count_live(txn, owner, environment, now, Some(at_most)).await?;
    if live >= max_live_keys {
        return Err(Error::ResourceExhausted {
            reason: "KEY_QUOTA_EXCEEDED",
            message: format!(
                "owner {owner} already holds {live} live keys in environment {environment}, the most allowed; revoke one first"
            ),
        });
    }
    Ok(())
}

/// Records that a key of (owner, environment) was revoked, in the revoking transaction.
pub(super) async fn release(txn: &DatabaseTransaction, owner: &str, environment: &str) -> Result<()> {
    adjust_held(txn, owner, environment, -1).await.map(drop)
}

/// Adds `delta` to the held count of (owner, environment) under its row lock, and gives
/// the count after it. A row missing (only for keys written before the count existed,
/// which its migration counted) reads as zero held.
async fn adjust_held(txn: &DatabaseTransaction, owner: &str, environment: &str, delta: i64) -> Result<i64> {
    quota_lock::Entity::update_many()
        .col_expr(quota_lock::Column::Generation, Expr::col(quota_lock::Column::Generation).add(1))
        .col_expr(quota_lock::Column::Held, Expr::col(quota_lock::Column::Held).add(delta))
        .filter(quota_lock::Column::Owner.eq(owner))
        .filter(quota_lock::Column::Environment.eq(environment))
        .exec(txn)
        .await
        .map_err(db_error)?;
    let row =
        quota_lock::Entity::find_by_id((owner.to_owned(), environment.to_owned())).one(txn).await.map_err(db_error)?;
    Ok(row.map_or(0, |row| row.held))
}
