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

/// Serialises quota checks of one (owner, environment): the UPDATE holds the lock row
/// until commit, so the count that follows sees every earlier create.
pub(super) async fn enforce_quota(
    txn: &DatabaseTransaction,
    owner: &str,
    environment: &str,
    max_live_keys: i64,
    now: DateTime<Utc>,
) -> Result<()> {
    quota_lock::Entity::insert(quota_lock::ActiveModel {
        owner: Set(owner.to_owned()),
        environment: Set(environment.to_owned()),
        generation: Set(0),
    })
    .on_conflict_do_nothing()
    .exec(txn)
    .await
    .map_err(db_error)?;
    quota_lock::Entity::update_many()
        .col_expr(quota_lock::Column::Generation, Expr::col(quota_lock::Column::Generation).add(1))
        .filter(quota_lock::Column::Owner.eq(owner))
        .filter(quota_lock::Column::Environment.eq(environment))
        .exec(txn)
        .await
        .map_err(db_error)?;
    // Counting stops at the quota: the check costs the same however many keys there are.
    // (A bound beyond i64 cannot be bound as a SQL integer.)
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
