//! Credits as callers see them: a key's balances, refill schedules and ledger, and
//! adjustments by hand.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use keyward_core::{
    credit::{Credit, LedgerEntry, Refill},
    error::Result,
    model::AuditAction,
    policy::{Authority, Reach},
};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use crate::{
    Store, alerts,
    db::db_error,
    entity::{credit_balance, credit_refill, credit_transaction},
    envelope::{Claim, Envelope, Mutation},
    keys::{find_in_reach, lock_target},
    ledger::{all_balances, apply_deltas},
    refill::stored_period,
};

/// A key's balances, refill schedules and low-balance thresholds, as shown with the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreditView {
    /// Balance per unit, ordered by unit.
    pub balances: Vec<Credit>,
    /// Refill schedules, ordered by unit.
    pub refills: Vec<Refill>,
    /// Low-balance thresholds, ordered by unit.
    pub low_thresholds: Vec<Credit>,
}

/// Filters and position of one page of a key's or a pool's ledger.
#[derive(Debug, Clone)]
pub struct LedgerQuery {
    /// The account: a key, or an owner's pool (`keyward_core::credit::pool_id`).
    pub key_id: Uuid,
    /// Entries after this id only.
    pub after_id: Option<i64>,
    /// Entries at or after this time only.
    pub start: Option<DateTime<Utc>>,
    /// Entries before this time only.
    pub end: Option<DateTime<Utc>>,
    /// At most this many.
    pub limit: u64,
}

impl Store {
    /// Balances and refill schedules of each of `ids` (keys without either are absent).
    pub async fn credit_views(&self, ids: &[Uuid]) -> Result<HashMap<Uuid, CreditView>> {
        let mut views: HashMap<Uuid, CreditView> = HashMap::new();
        if ids.is_empty() {
            return Ok(views);
        }
        let balances = credit_balance::Entity::find()
            .filter(credit_balance::Column::KeyId.is_in(ids.iter().copied()))
            .order_by_asc(credit_balance::Column::Unit)
            .all(self.db()?)
            .await
            .map_err(db_error)?;
        for row in balances {
            views.entry(row.key_id).or_default().balances.push(Credit::new(row.unit, row.balance));
        }
        let refills = credit_refill::Entity::find()
            .filter(credit_refill::Column::KeyId.is_in(ids.iter().copied()))
            .order_by_asc(credit_refill::Column::Unit)
            .all(self.db()?)
            .await
            .map_err(db_error)?;
        for row in refills {
            let period = stored_period(&row.period)?;
            views.entry(row.key_id).or_default().refills.push(Refill { unit: row.unit, amount: row.amount, period });
        }
        for (key_id, thresholds) in alerts::thresholds(self.db()?, ids).await? {
            views.entry(key_id).or_default().low_thresholds = thresholds;
        }
        Ok(views)
    }

    /// Every balance of a key in reach.
    pub async fn balances(&self, id: Uuid, reach: &Reach) -> Result<Vec<Credit>> {
        find_in_reach(self.db()?, id, reach).await?;
        all_balances(self.db()?, id).await
    }

    /// Adds `deltas` to the balances of a key the authority admits, all or none, with one
    /// ledger entry per unit. A replayed request id changes nothing and returns the
    /// balances as they are.
    pub async fn adjust_credits(
        &self,
        id: Uuid,
        authority: &Authority,
        deltas: &[Credit],
        reason: &str,
        mutation: &Mutation,
    ) -> Result<Vec<Credit>> {
        let txn = self.begin_write().await?;
        lock_target(&txn, id, authority).await?;
        let envelope = Envelope::of(mutation, AuditAction::AdjustCredits, id);
        if let Claim::Replay = envelope.claim(&txn).await? {
            return all_balances(&txn, id).await;
        }
        apply_deltas(&txn, id, deltas, reason, mutation).await?;
        alerts::settle(&txn, &[id], mutation.now).await?;
        envelope.record(&txn).await?;
        let balances = all_balances(&txn, id).await?;
        txn.commit().await.map_err(db_error)?;
        Ok(balances)
    }

    /// A page of a key's ledger, oldest first.
    pub async fn credit_transactions(&self, query: &LedgerQuery, reach: &Reach) -> Result<Vec<LedgerEntry>> {
        find_in_reach(self.db()?, query.key_id, reach).await?;
        ledger_page(self.db()?, query).await
    }
}

/// A page of an account's ledger (a key's or a pool's), oldest first.
pub(crate) async fn ledger_page(conn: &impl ConnectionTrait, query: &LedgerQuery) -> Result<Vec<LedgerEntry>> {
    let mut select = credit_transaction::Entity::find().filter(credit_transaction::Column::KeyId.eq(query.key_id));
    if let Some(after) = query.after_id {
        select = select.filter(credit_transaction::Column::Id.gt(after));
    }
    if let Some(start) = query.start {
        select = select.filter(credit_transaction::Column::CreatedAt.gte(start));
    }
    if let Some(end) = query.end {
        select = select.filter(credit_transaction::Column::CreatedAt.lt(end));
    }
    let rows =
        select.order_by_asc(credit_transaction::Column::Id).limit(query.limit).all(conn).await.map_err(db_error)?;
    Ok(rows
        .into_iter()
        .map(|row| LedgerEntry {
            id: row.id,
            key_id: row.key_id,
            unit: row.unit,
            delta: row.delta,
            balance_after: row.balance_after,
            reason: row.reason,
            request_id: row.request_id,
            actor: row.actor,
            created_at: row.created_at,
            hold_id: row.hold_id,
            spent_by: row.spent_by,
        })
        .collect())
}
