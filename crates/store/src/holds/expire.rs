//! The expiry sweep of credit holds: each live hold past its expiry is released once,
//! however many replicas sweep, with a ledger entry per unit (`hold_expired`, delta 0:
//! the balance was never charged) and a `credits.hold_expired` event, in one transaction.

use chrono::{DateTime, Utc};
use keyward_core::{
    error::Result,
    event::{self, EventType},
    hold::{HoldState, REASON_EXPIRED},
};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{end_hold, lock_hold, unreserve};
use crate::{
    Store,
    db::db_error,
    entity::credit_hold,
    keys::find_row,
    ledger::{insert_ledger, ledger_row},
    outbox,
};

/// Holds released per sweep, at most.
const HOLDS_PER_SWEEP: u64 = 500;

/// The actor of what the server does on its own.
const SERVER_ACTOR: &str = "keyward";

impl Store {
    /// Releases the live holds whose expiry passed by `now`. Returns how many this call
    /// released (another replica's sweep may release some of those it found first).
    pub async fn expire_holds(&self, now: DateTime<Utc>) -> Result<usize> {
        let due: Vec<uuid::Uuid> = credit_hold::Entity::find()
            .select_only()
            .column(credit_hold::Column::Id)
            .filter(credit_hold::Column::State.eq(HoldState::Live.as_str()))
            .filter(credit_hold::Column::ExpiresAt.lte(now))
            .order_by_asc(credit_hold::Column::ExpiresAt)
            .limit(HOLDS_PER_SWEEP)
            .into_tuple()
            .all(self.db()?)
            .await
            .map_err(db_error)?;
        let mut released = 0;
        for id in due {
            let txn = self.begin_write().await?;
            // Locked, then read again: a replica that swept it (or a capture that came
            // first) committed before this lock was granted, and it is no longer live.
            let hold = lock_hold(&txn, id).await?;
            if hold.state != HoldState::Live {
                continue;
            }
            let mut ledger = Vec::with_capacity(hold.amounts.len());
            for reserved in &hold.amounts {
                let balance = unreserve(&txn, hold.account(), reserved, 0).await?;
                let mut row =
                    ledger_row(hold.account(), &reserved.unit, 0, balance, REASON_EXPIRED, None, SERVER_ACTOR, now);
                row.hold_id = Set(Some(hold.id));
                row.spent_by = Set(hold.pool_id.map(|_| hold.key_id));
                ledger.push(row);
            }
            insert_ledger(&txn, ledger).await?;
            end_hold(&txn, hold.id, HoldState::Expired, now, None).await?;
            let key = find_row(&txn, hold.key_id).await?;
            outbox::emit(&txn, EventType::CreditsHoldExpired, hold.key_id, event::hold_expired(&key, &hold, now), now)
                .await?;
            txn.commit().await.map_err(db_error)?;
            released += 1;
        }
        Ok(released)
    }
}
