//! Owners' credit pools: balances shared by an owner's keys in one environment. A pool is
//! an account like a key: its balances are `credit_balances` rows under the pool's id
//! (`keyward_core::credit::pool_id`), so a pooled key's charges and holds go through the
//! very conditional updates a key's do, and its ledger entries name the pool (`key_id`)
//! and the key that spent (`spent_by`).

use keyward_core::{
    credit::{Credit, pool_id},
    error::Result,
    model::AuditAction,
};
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait};
use uuid::Uuid;

use crate::{
    Store, alerts,
    db::db_error,
    entity::owner_credit_pool,
    envelope::{Claim, Envelope, Mutation},
    ledger::{all_balances, apply_deltas},
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
        owner_credit_pool::Entity::insert(owner_credit_pool::ActiveModel {
            id: Set(id),
            owner: Set(owner.to_owned()),
            environment: Set(environment.to_owned()),
            created_at: Set(mutation.now),
        })
        .on_conflict_do_nothing()
        .exec_without_returning(&txn)
        .await
        .map_err(db_error)?;
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

/// The pool `id` names, if it is one (else it is a key).
pub(crate) async fn find_pool(conn: &impl ConnectionTrait, id: Uuid) -> Result<Option<Pool>> {
    let row = owner_credit_pool::Entity::find_by_id(id).one(conn).await.map_err(db_error)?;
    Ok(row.map(|row| Pool { owner: row.owner, environment: row.environment }))
}
