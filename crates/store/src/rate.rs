//! Owners' shared rate limits, and the shared rate-limit buckets. A replica leases
//! tokens from a bucket row with one conditional UPDATE that, in the same statement,
//! gives back what its previous slice did not use, refills by elapsed time, forgets the
//! leases of windows that ended a whole window ago, and grants what the bucket holds up
//! to the amount asked. The database serialises these statements, so no interleaving of
//! replicas can take more than the bucket held.

use keyward_core::{
    error::Result,
    model::AuditAction,
    rate::{RateLimit, Shape},
};
use sea_orm::{
    ActiveValue::Set, ConnectionTrait, DbBackend, EntityTrait, FromQueryResult, Statement, Value, sea_query::OnConflict,
};

use crate::{
    db::{Store, db_error},
    entity::owner_rate_limit,
    envelope::{Mutation, record_change},
    lookup::Read,
};

/// One lease of tokens from a bucket.
#[derive(Debug, Clone, Copy)]
pub struct Lease<'a> {
    /// Whose bucket: `key:<id>`.
    pub subject: &'a str,
    /// The limit's name.
    pub name: &'a str,
    /// The limit's arithmetic.
    pub shape: Shape,
    /// The replica's time, in milliseconds since the epoch.
    pub now_ms: i64,
    /// The lease window `now_ms` falls in; slices of earlier windows are no longer spent.
    pub window: i64,
    /// Tokens asked for; 0 only gives the slice back.
    pub want: i64,
    /// What the replica held of the bucket before: its window, the tokens it leased
    /// then, and those it did not use.
    pub slice: Option<Slice>,
}

/// What a replica holds of a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    /// The lease window it was leased in.
    pub window: i64,
    /// Tokens leased.
    pub leased: i64,
    /// Tokens not used.
    pub unused: i64,
}

/// The outcome of a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Granted {
    /// Tokens granted, at most the amount asked.
    pub tokens: i64,
    /// Units left in the bucket after the grant.
    pub level: i64,
}

impl Store {
    /// Leases tokens (see the module), creating a full bucket on first use.
    pub async fn lease(&self, lease: &Lease<'_>) -> Result<Granted> {
        let db = self.db()?;
        let backend = db.get_database_backend();
        if let Some(granted) = db.query_one_raw(update(backend, lease)).await.map_err(db_error)? {
            return read(&granted);
        }
        db.execute_raw(insert(backend, lease)).await.map_err(db_error)?;
        let granted = db
            .query_one_raw(update(backend, lease))
            .await
            .map_err(db_error)?
            .ok_or_else(|| keyward_core::Error::internal("rate bucket vanished after its insert"))?;
        read(&granted)
    }
}

fn read(row: &sea_orm::QueryResult) -> Result<Granted> {
    Ok(Granted {
        tokens: row.try_get::<i64>("", "granted").map_err(db_error)?,
        level: row.try_get::<i64>("", "level").map_err(db_error)?,
    })
}

/// `text` with `:name` parameters numbered in the backend's dialect (each name bound
/// once, used as often as the statement needs).
fn statement(backend: DbBackend, text: &str, params: &[(&str, Value)]) -> Statement {
    let mut sql = text.to_owned();
    // Longest names first, so `:unused` is not cut by a shorter name it starts with.
    let mut order: Vec<usize> = (0..params.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(params[i].0.len()));
    for i in order {
        let placeholder = if backend == DbBackend::Postgres {
            format!("${}::{}", i + 1, pg_type(&params[i].1))
        } else {
            format!("?{}", i + 1)
        };
        sql = sql.replace(&format!(":{}", params[i].0), &placeholder);
    }
    Statement::from_sql_and_values(backend, sql, params.iter().map(|(_, value)| value.clone()))
}

fn pg_type(value: &Value) -> &'static str {
    if matches!(value, Value::String(_)) { "text" } else { "bigint" }
}

fn functions(backend: DbBackend) -> (&'static str, &'static str) {
    if backend == DbBackend::Postgres { ("LEAST", "GREATEST") } else { ("MIN", "MAX") }
}

fn params(lease: &Lease<'_>) -> Vec<(&'static str, Value)> {
    let Shape { limit, unit, capacity } = lease.shape;
    // No slice: a window no row is ever in (nor one after), so nothing is given back.
    let slice = lease.slice.unwrap_or(Slice { window: i64::MIN, leased: 0, unused: 0 });
    vec![
        ("subject", lease.subject.into()),
        ("name", lease.name.into()),
        ("unit", unit.into()),
        ("limit", limit.into()),
        ("capacity", capacity.into()),
        ("max_elapsed", lease.shape.max_elapsed_ms().into()),
        ("now", lease.now_ms.into()),
        ("window", lease.window.into()),
        ("want", lease.want.into()),
        ("slice_window", slice.window.into()),
        ("slice_leased", (slice.leased * unit).into()),
        ("slice_unused", (slice.unused * unit).into()),
    ]
}

fn update(backend: DbBackend, lease: &Lease<'_>) -> Statement {
    let (min, max) = functions(backend);
    // The row counts the units out on lease in its window (`leased`) and in the window
    // before (`leased_prev`); older leases are forgotten, their slices no longer spent.
    // A slice given back stops counting as out, and its unused units come back, only
    // while its window is still counted: once forgotten, its tokens are lost
    // (under-admission, never over).
    let current = "(epoch = :slice_window)";
    let previous = "(epoch - 1 = :slice_window)";
    let out_current = format!("{max}(leased - CASE WHEN {current} THEN :slice_leased ELSE 0 END, 0)");
    let out_previous = format!("{max}(leased_prev - CASE WHEN {previous} THEN :slice_leased ELSE 0 END, 0)");
    let level = format!("level + CASE WHEN {current} OR {previous} THEN :slice_unused ELSE 0 END");
    let elapsed = format!("{min}({max}(:now - refilled_at, 0), :max_elapsed)");
    // The units still out on lease as of the lease's window: a row last moved a window
    // or more before it still counts leases this lease forgets.
    let outstanding = format!(
        "CASE WHEN epoch >= :window THEN {out_current} + {out_previous} \
              WHEN epoch = :window - 1 THEN {out_current} ELSE 0 END"
    );
    // Refill stops short of the units still out on lease: bucket and leases together never
    // hold more than a full bucket.
    let refilled = format!("{max}({min}({level} + {elapsed} * :limit, :capacity - ({outstanding})), 0)");
    // A lease is counted in its own window. One for a window the row already forgets
    // (a replica whose clock lags by more than a window) is granted nothing.
    let granted = format!("CASE WHEN :window < epoch - 1 THEN 0 ELSE {min}(:want, ({refilled}) / :unit) END");
    // Moving to a later window shifts the counts: this window's leases become the
    // previous window's, and those before are forgotten.
    let text = format!(
        "UPDATE rate_buckets SET \
           level = {refilled} - {granted} * :unit, \
           granted = {granted}, \
           leased = CASE WHEN epoch < :window THEN {granted} * :unit \
                         WHEN epoch = :window THEN {out_current} + {granted} * :unit \
                         ELSE {out_current} END, \
           leased_prev = CASE WHEN epoch < :window - 1 THEN 0 \
                              WHEN epoch = :window - 1 THEN {out_current} \
                              WHEN epoch = :window THEN {out_previous} \
                              ELSE {out_previous} + {granted} * :unit END, \
           epoch = {max}(epoch, :window), \
           refilled_at = {max}(refilled_at, :now) \
         WHERE subject = :subject AND name = :name AND period_ms = :unit \
         RETURNING granted, level"
    );
    statement(backend, &text, &params(lease))
}

fn insert(backend: DbBackend, lease: &Lease<'_>) -> Statement {
    let text = "INSERT INTO rate_buckets \
                  (subject, name, period_ms, level, refilled_at, epoch, leased, leased_prev, granted) \
                VALUES (:subject, :name, :unit, :capacity, :now, :window, 0, 0, 0) ON CONFLICT DO NOTHING";
    let params: Vec<_> = params(lease)
        .into_iter()
        .filter(|(name, _)| ["subject", "name", "unit", "capacity", "now", "window"].contains(name))
        .collect();
    statement(backend, text, &params)
}

impl Store {
    /// The shared rate limits of `owner`; empty when it has none.
    pub async fn owner_rate_limits(&self, owner: &str) -> Result<Vec<RateLimit>> {
        let Some(row) = self.lookup(Read::OwnerRateLimits, owner.to_owned().into()).await?.into_iter().next() else {
            return Ok(Vec::new());
        };
        let row = owner_rate_limit::Model::from_query_result(&row, "").map_err(db_error)?;
        limits_from_json(&row.rate_limits)
    }

    /// Replaces the shared rate limits of `owner`, with its audit row, and announces the
    /// change to every replica on commit.
    pub async fn set_owner_rate_limits(
        &self,
        owner: &str,
        limits: &[RateLimit],
        mutation: &Mutation,
    ) -> Result<Vec<RateLimit>> {
        let txn = self.begin_write().await?;
        let row = owner_rate_limit::ActiveModel {
            owner: Set(owner.to_owned()),
            rate_limits: Set(serde_json::to_string(limits).map_err(keyward_core::Error::internal)?),
            updated_at: Set(mutation.now),
        };
        owner_rate_limit::Entity::insert(row)
            .on_conflict(
                OnConflict::column(owner_rate_limit::Column::Owner)
                    .update_columns([owner_rate_limit::Column::RateLimits, owner_rate_limit::Column::UpdatedAt])
                    .to_owned(),
            )
            .exec(&txn)
            .await
            .map_err(db_error)?;
        record_change(&txn, mutation, AuditAction::SetOwnerRateLimits, owner).await?;
        self.announce_owner(&txn, owner).await?;
        txn.commit().await.map_err(db_error)?;
        Ok(limits.to_vec())
    }
}

fn limits_from_json(text: &str) -> Result<Vec<RateLimit>> {
    serde_json::from_str(text)
        .map_err(|err| keyward_core::Error::internal(format!("stored owner rate_limits are not valid: {err}")))
}
