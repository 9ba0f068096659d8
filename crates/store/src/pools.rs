//! Owners' credit pools: balances shared by an owner's keys in one environment. A pool is
//! an account like a key: its balances are `credit_balances` rows under the pool's id
//! (`keyward_core::credit::pool_id`), so a pooled key's charges and holds go through the
//! very conditional updates a key's do, and its ledger entries name the pool (`key_id`)
//! and the key that spent (`spent_by`). Its refill schedules and low-balance thresholds
//! are `credit_refills` and `credit_thresholds` rows under the pool's id too, so the
//! refill sweep and the balance alerts treat it as they treat a key.

use keyward_core::{
    credit::{Credit, LedgerEntry, Refill, pool_id},
    error::Result,
    model::AuditAction,
};
use sea_orm::{ActiveValue::Set, ConnectionTrait, DatabaseTransaction, EntityTrait};
use uuid::Uuid;

use crate::{
    CreditView, LedgerQuery, Store, alerts,
    credits::ledger_page,
    db::db_error,
    entity::owner_credit_pool,
    envelope::{Claim, Envelope, Mutation},
    ledger::{all_balances, apply_deltas},
    refill::replace_refills,
};

/// An owner's pool in one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pool {
    pub(crate) owner: String,
    pub(crate) environment: String,
}

impl Store {
    /// Every balance of `owner`'s pool in `environment` (none for a pool never credited).
    pub async fn pool_balances(&self, owner: &str, environment: &str) -> Result<Vec<Credit>> {
        all_balances(self.db()?, pool_id(owner, environment)).await
    }

    /// The balances, refill schedules and low-balance thresholds of `owner`'s pool in
    /// `environment` (all empty for a pool never credited nor set).
    pub async fn pool_view(&self, owner: &str, environment: &str) -> Result<CreditView> {
        let id = pool_id(owner, environment);
        Ok(self.credit_views(&[id]).await?.remove(&id).unwrap_or_default())
    }

    /// Replaces the refill schedules and low-balance thresholds of `owner`'s pool in
    /// `environment`, with its audit row, and returns the pool as it leaves it. Thresholds
    /// the balance is at or above are armed at once; one it is already below fires
    /// nothing until the balance has risen back over it. A replayed request id changes
    /// nothing and returns the pool as it is.
    pub async fn update_pool(
        &self,
        owner: &str,
        environment: &str,
        refills: &[Refill],
        thresholds: &[Credit],
        mutation: &Mutation,
    ) -> Result<CreditView> {
        let id = pool_id(owner, environment);
        let txn = self.begin_write().await?;
        create_pool(&txn, owner, environment, mutation).await?;
        let envelope = Envelope::of(mutation, AuditAction::UpdateOwnerCreditPool, id);
        if let Claim::Fresh = envelope.claim(&txn).await? {
            replace_refills(&txn, id, refills, mutation.now).await?;
            alerts::replace_thresholds(&txn, id, thresholds).await?;
            alerts::settle(&txn, &[id], mutation.now).await?;
            envelope.record(&txn).await?;
            txn.commit().await.map_err(db_error)?;
        }
        self.pool_view(owner, environment).await
    }

    /// A page of the ledger of the pool `query.key_id` names, oldest first.
    pub async fn pool_transactions(&self, query: &LedgerQuery) -> Result<Vec<LedgerEntry>> {
        ledger_page(self.db()?, query).await
    }

    /// Adds `deltas` to the balances of `owner`'s pool in `environment`, all or none,
    /// with one ledger entry per unit, never below what live holds reserve. A replayed
    /// request id changes nothing and returns the balances as they are.
    pub async fn adjust_pool_credits(
        &self,
        owner: &str,
        environment: &str,
        deltas: &[Credit],
        reason: &str,
        mutation: &Mutation,
    ) -> Result<Vec<Credit>> {
        let id = pool_id(owner, environment);
        let txn = self.begin_write().await?;
        create_pool(&txn, owner, environment, mutation).await?;
        let envelope = Envelope::of(mutation, AuditAction::AdjustOwnerCredits, id);
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
}

/// Records `owner`'s pool in `environment` unless it is recorded: alerts name the pool
/// by this row.
async fn create_pool(txn: &DatabaseTransaction, owner: &str, environment: &str, mutation: &Mutation) -> Result<()> {
    owner_credit_pool::Entity::insert(owner_credit_pool::ActiveModel {
        id: Set(pool_id(owner, environment)),
        owner: Set(owner.to_owned()),
        environment: Set(environment.to_owned()),
        created_at: Set(mutation.now),
    })
    .on_conflict_do_nothing()
    .exec_without_returning(txn)
    .await
    .map_err(db_error)?;
    Ok(())
}

/// The pool `id` names, if it is one (else it is a key).
pub(crate) async fn find_pool(conn: &impl ConnectionTrait, id: Uuid) -> Result<Option<Pool>> {
    let row = owner_credit_pool::Entity::find_by_id(id).one(conn).await.map_err(db_error)?;
    Ok(row.map(|row| Pool { owner: row.owner, environment: row.environment }))
}
