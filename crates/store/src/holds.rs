//! Credit holds: a verification reserves credits (`credit_balances.held`, of the key or of
//! the owner's pool it draws on), and a capture,
//! a release or the expiry sweep settles the hold once. Every charge and every new hold
//! takes only what `balance - held` covers, under the database's own condition, so the
//! reserved credits are never spent twice and `held` never exceeds `balance`.

mod expire;
mod place;

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use keyward_core::{
    Error,
    credit::Credit,
    error::Result,
    hold::{Hold, HoldState, REASON_CAPTURE},
    model::AuditAction,
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::Expr,
};
use uuid::Uuid;

use crate::{
    Store, alerts,
    db::db_error,
    entity::{credit_hold, credit_hold_amount},
    envelope::{Claim, Envelope, Mutation},
    ledger,
};

/// Attempts of a hold's transaction that PostgreSQL aborted as a deadlock.
const HOLD_ATTEMPTS: usize = 5;

/// A hold a verification asks for.
#[derive(Debug, Clone)]
pub struct HoldRequest {
    /// The key whose verification asks for it.
    pub key_id: Uuid,
    /// The owner's pool it reserves from, for a pooled key; else the key's own balances.
    pub pool_id: Option<Uuid>,
    /// What to reserve, each unit once.
    pub amounts: Vec<Credit>,
    /// Idempotency token: a repeat for the same key answers the same hold.
    pub request_id: Option<String>,
    /// Who asks (the verifying caller).
    pub actor: String,
    /// When it is made.
    pub placed_at: DateTime<Utc>,
    /// When the server releases it unless settled before.
    pub expires_at: DateTime<Utc>,
}

impl HoldRequest {
    /// The account whose balances it reserves: the pool, or else the key.
    pub fn account(&self) -> Uuid {
        self.pool_id.unwrap_or(self.key_id)
    }
}

/// Whose holds a list covers.
#[derive(Debug, Clone)]
pub enum HoldScope {
    /// One key's.
    Key(Uuid),
    /// Every key of an owner.
    Owner(String),
}

/// One page of holds, newest first.
#[derive(Debug, Clone)]
pub struct HoldQuery {
    /// Whose holds.
    pub scope: HoldScope,
    /// Only live ones.
    pub live_only: bool,
    /// Holds older (smaller id) than this one only.
    pub before: Option<Uuid>,
    /// At most this many.
    pub limit: u64,
}

/// How a settlement ends a hold.
enum Settle<'a> {
    Capture(&'a [Credit]),
    Release,
}

impl Store {
    /// A hold as stored (NOT_FOUND if there is none).
    pub async fn hold(&self, id: Uuid) -> Result<Hold> {
        read_hold(self.db()?, id).await?.ok_or_else(|| hold_not_found(id))
    }

    /// Captures a live hold: charges `amounts` (each at most what it reserved) and
    /// releases the rest, with one ledger entry per reserved unit, in one transaction.
    /// `admit` decides, on the hold as locked, whether the caller may settle it.
    pub async fn capture_hold(
        &self,
        id: Uuid,
        amounts: &[Credit],
        admit: impl Fn(&Hold) -> Result<()>,
        mutation: &Mutation,
    ) -> Result<Hold> {
        self.settle(id, Settle::Capture(amounts), admit, mutation).await
    }

    /// Releases everything a live hold reserved, charging nothing.
    pub async fn release_hold(
        &self,
        id: Uuid,
        admit: impl Fn(&Hold) -> Result<()>,
        mutation: &Mutation,
    ) -> Result<Hold> {
        self.settle(id, Settle::Release, admit, mutation).await
    }

    async fn settle(
        &self,
        id: Uuid,
        how: Settle<'_>,
        admit: impl Fn(&Hold) -> Result<()>,
        mutation: &Mutation,
    ) -> Result<Hold> {
        // It takes the hold's row, then its balances in unit order as every charge does,
        // so it waits on them rather than deadlocks.
        let txn = self.begin_write().await?;
        try_settle(txn, id, &how, &admit, mutation).await
    }

    /// A page of holds, newest first.
    pub async fn holds(&self, query: &HoldQuery) -> Result<Vec<Hold>> {
        let db = self.db()?;
        let mut select = credit_hold::Entity::find();
        select = match &query.scope {
            HoldScope::Key(key_id) => select.filter(credit_hold::Column::KeyId.eq(*key_id)),
            HoldScope::Owner(owner) => select.filter(
                credit_hold::Column::KeyId.in_subquery(
                    sea_orm::sea_query::Query::select()
                        .column(crate::entity::api_key::Column::Id)
                        .from(crate::entity::api_key::Entity)
                        .and_where(crate::entity::api_key::Column::Owner.eq(owner.clone()))
                        .to_owned(),
                ),
            ),
        };
        if query.live_only {
            select = select.filter(credit_hold::Column::State.eq(HoldState::Live.as_str()));
        }
        if let Some(before) = query.before {
            select = select.filter(credit_hold::Column::Id.lt(before));
        }
        let rows = select.order_by_desc(credit_hold::Column::Id).limit(query.limit).all(db).await.map_err(db_error)?;
        with_amounts(db, rows).await
    }
}

async fn try_settle(
    txn: DatabaseTransaction,
    id: Uuid,
    how: &Settle<'_>,
    admit: &impl Fn(&Hold) -> Result<()>,
    mutation: &Mutation,
) -> Result<Hold> {
    let hold = lock_hold(&txn, id).await?;
    admit(&hold)?;
    let action = match how {
        Settle::Capture(_) => AuditAction::CaptureCreditHold,
        Settle::Release => AuditAction::ReleaseCreditHold,
    };
    let envelope = Envelope::of(mutation, action, id);
    if let Claim::Replay = envelope.claim(&txn).await? {
        return Ok(hold);
    }
    hold.check_live(mutation.now)?;
    let (state, charged) = match how {
        Settle::Capture(amounts) => (HoldState::Captured, Some(hold.capture(amounts)?)),
        Settle::Release => (HoldState::Released, None),
    };
    let charged_of = |unit: &str| {
        charged
            .as_ref()
            .and_then(|charged| charged.iter().find(|credit| credit.unit == unit))
            .map_or(0, |credit| credit.amount)
    };
    // What is this hold's own comes first. The balance row is shared by every settlement and
    // charge of the account, so it is taken last and held over the fewest statements.
    // In whole microseconds, as both stores keep it, so the answer is what a read shows later.
    let settled_at = mutation.now.trunc_subsecs(6);
    end_hold(&txn, hold.id, state, settled_at, mutation.request_id.as_deref()).await?;
    if charged.is_some() {
        for reserved in &hold.amounts {
            credit_hold_amount::Entity::update_many()
                .col_expr(credit_hold_amount::Column::Captured, Expr::value(charged_of(&reserved.unit)))
                .filter(credit_hold_amount::Column::HoldId.eq(hold.id))
                .filter(credit_hold_amount::Column::Unit.eq(reserved.unit.clone()))
                .exec(&txn)
                .await
                .map_err(db_error)?;
        }
    }
    envelope.record(&txn).await?;
    let settled = Hold {
        state,
        captured: charged.clone().unwrap_or_default(),
        settled_at: Some(settled_at),
        settle_request_id: mutation.request_id.clone(),
        ..hold.clone()
    };
    let mut ledger = Vec::new();
    for reserved in &hold.amounts {
        let amount = charged_of(&reserved.unit);
        let balance = unreserve(&txn, hold.account(), reserved, amount).await?;
        if charged.is_some() {
            ledger.push(ledger::Entry {
                key_id: hold.account(),
                unit: reserved.unit.clone(),
                delta: -amount,
                balance_after: balance,
                request_id: mutation.request_id.clone(),
                actor: mutation.actor.clone(),
                spent_by: hold.pool_id.map(|_| hold.key_id),
                hold_id: Some(hold.id),
            });
        }
    }
    // A release moves no balance, so it crosses no alert line; a capture only lowers
    // balances, so it only fires alerts (written with its ledger, as a charge batch's are)
    // and re-arms none.
    if charged.is_some() {
        let fired =
            alerts::fire(&txn, &[hold.account()], ledger, REASON_CAPTURE, mutation.now).await.map_err(db_error)?;
        alerts::emit(&txn, fired, mutation.now).await?;
    }
    txn.commit().await.map_err(db_error)?;
    Ok(settled)
}

/// Gives back what a hold reserved of one unit of an account (a key or a pool) and
/// charges `charged` of it; returns the balance after.
async fn unreserve(txn: &DatabaseTransaction, key_id: Uuid, reserved: &Credit, charged: i64) -> Result<i64> {
    let mut sql = crate::sql::Sql::new(txn.get_database_backend());
    sql.push("UPDATE credit_balances SET balance = balance - ").bind(charged, "bigint");
    sql.push(", held = held - ").bind(reserved.amount, "bigint");
    sql.push(" WHERE key_id = ").bind(key_id, "uuid").push(" AND unit = ").bind(reserved.unit.as_str(), "varchar");
    sql.push(" RETURNING balance");
    let row = txn
        .query_one_raw(sql.statement())
        .await
        .map_err(db_error)?
        .ok_or_else(|| Error::internal(format!("the balance hold of key {key_id} reserved is gone")))?;
    row.try_get("", "balance").map_err(db_error)
}

/// Moves a hold out of `live`: the compare-and-set that makes each hold settle once.
async fn end_hold(
    txn: &DatabaseTransaction,
    id: Uuid,
    state: HoldState,
    at: DateTime<Utc>,
    request_id: Option<&str>,
) -> Result<()> {
    let ended = credit_hold::Entity::update_many()
        .col_expr(credit_hold::Column::State, Expr::value(state.as_str()))
        .col_expr(credit_hold::Column::SettledAt, Expr::value(at))
        .col_expr(credit_hold::Column::SettleRequestId, Expr::value(request_id.map(str::to_owned)))
        .filter(credit_hold::Column::Id.eq(id))
        .filter(credit_hold::Column::State.eq(HoldState::Live.as_str()))
        .exec(txn)
        .await
        .map_err(db_error)?;
    if ended.rows_affected == 1 {
        Ok(())
    } else {
        Err(Error::internal(format!("hold {id} left `live` under its own row lock")))
    }
}

/// The hold `id`, locked until the transaction ends (SQLite's write transaction already
/// excludes every other writer).
async fn lock_hold(txn: &DatabaseTransaction, id: Uuid) -> Result<Hold> {
    let mut select = credit_hold::Entity::find_by_id(id);
    if txn.get_database_backend() == DbBackend::Postgres {
        select = select.lock_exclusive();
    }
    let row = select.one(txn).await.map_err(db_error)?.ok_or_else(|| hold_not_found(id))?;
    with_amounts(txn, vec![row]).await?.pop().ok_or_else(|| hold_not_found(id))
}

async fn read_hold(conn: &impl ConnectionTrait, id: Uuid) -> Result<Option<Hold>> {
    let row = credit_hold::Entity::find_by_id(id).one(conn).await.map_err(db_error)?;
    Ok(with_amounts(conn, row.into_iter().collect()).await?.pop())
}

fn hold_not_found(id: Uuid) -> Error {
    Error::NotFound { kind: "credit hold", id: id.to_string() }
}

/// The holds of `rows`, in their order, with their amounts.
async fn with_amounts(conn: &impl ConnectionTrait, rows: Vec<credit_hold::Model>) -> Result<Vec<Hold>> {
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let amounts = credit_hold_amount::Entity::find()
        .filter(credit_hold_amount::Column::HoldId.is_in(rows.iter().map(|row| row.id)))
        .order_by_asc(credit_hold_amount::Column::Unit)
        .all(conn)
        .await
        .map_err(db_error)?;
    let mut by_hold: HashMap<Uuid, Vec<credit_hold_amount::Model>> = HashMap::new();
    for amount in amounts {
        by_hold.entry(amount.hold_id).or_default().push(amount);
    }
    rows.into_iter()
        .map(|row| {
            let state = HoldState::parse(&row.state)
                .ok_or_else(|| Error::internal(format!("hold {} has unknown state {:?}", row.id, row.state)))?;
            let amounts = by_hold.remove(&row.id).unwrap_or_default();
            let captured = if state == HoldState::Captured {
                amounts.iter().map(|amount| Credit::new(amount.unit.clone(), amount.captured.unwrap_or(0))).collect()
            } else {
                Vec::new()
            };
            Ok(Hold {
                id: row.id,
                key_id: row.key_id,
                pool_id: row.pool_id,
                actor: row.actor,
                amounts: amounts.into_iter().map(|amount| Credit::new(amount.unit, amount.amount)).collect(),
                captured,
                state,
                created_at: row.created_at,
                expires_at: row.expires_at,
                settled_at: row.settled_at,
                settle_request_id: row.settle_request_id,
            })
        })
        .collect()
}
