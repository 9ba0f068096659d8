//! Refill schedules: replaced with a key's update, and applied by a periodic sweep that
//! any number of replicas may run at once.

use chrono::{DateTime, Utc};
use keyward_core::{
    Error,
    credit::{Refill, RefillPeriod},
    error::Result,
};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect, sea_query::Expr,
};
use uuid::Uuid;

use crate::{
    Store, alerts,
    db::db_error,
    entity::credit_refill,
    ledger::{insert_ledger, ledger_row, lock_balances, set_balance},
};

/// Ledger reason of scheduled top-ups.
const REASON_REFILL: &str = "refill";
/// Actor of scheduled top-ups.
const ACTOR_SCHEDULE: &str = "keyward";
/// Refill schedules handled per sweep.
const REFILLS_PER_SWEEP: u64 = 500;

impl Store {
    /// Applies every refill schedule whose period has started by `now`. Each schedule
    /// moves its `next_refill_at` forward under a compare-and-set in the same
    /// transaction as the top-up, so however many replicas sweep, one applies it.
    /// Returns how many schedules this call applied.
    pub async fn apply_due_refills(&self, now: DateTime<Utc>) -> Result<usize> {
        let due = credit_refill::Entity::find()
            .filter(credit_refill::Column::NextRefillAt.lte(now))
            .limit(REFILLS_PER_SWEEP)
            .all(self.db()?)
            .await
            .map_err(db_error)?;
        let mut applied = 0;
        for schedule in due {
            let period = stored_period(&schedule.period)?;
            let txn = self.begin_write().await?;
            let moved = credit_refill::Entity::update_many()
                .col_expr(credit_refill::Column::NextRefillAt, Expr::value(period.next_start(now)))
                .filter(credit_refill::Column::KeyId.eq(schedule.key_id))
                .filter(credit_refill::Column::Unit.eq(schedule.unit.clone()))
                .filter(credit_refill::Column::NextRefillAt.eq(schedule.next_refill_at))
                .exec(&txn)
                .await
                .map_err(db_error)?;
            if moved.rows_affected == 0 {
                continue;
            }
            let balance = lock_balances(&txn, schedule.key_id, [schedule.unit.as_str()])
                .await?
                .get(&schedule.unit)
                .copied()
                .unwrap_or(0);
            if balance < schedule.amount {
                set_balance(&txn, schedule.key_id, &schedule.unit, schedule.amount).await?;
                let entry = ledger_row(
                    schedule.key_id,
                    &schedule.unit,
                    schedule.amount - balance,
                    schedule.amount,
                    REASON_REFILL,
                    None,
                    ACTOR_SCHEDULE,
                    now,
                );
                insert_ledger(&txn, vec![entry]).await?;
                alerts::settle(&txn, &[schedule.key_id], now).await?;
            }
            txn.commit().await.map_err(db_error)?;
            applied += 1;
        }
        Ok(applied)
    }
}

/// Replaces a key's refill schedules; each first applies at its next period start.
pub(crate) async fn replace_refills(
    txn: &DatabaseTransaction,
    id: Uuid,
    refills: &[Refill],
    now: DateTime<Utc>,
) -> Result<()> {
    credit_refill::Entity::delete_many()
        .filter(credit_refill::Column::KeyId.eq(id))
        .exec(txn)
        .await
        .map_err(db_error)?;
    if refills.is_empty() {
        return Ok(());
    }
    let rows = refills.iter().map(|refill| credit_refill::ActiveModel {
        key_id: Set(id),
        unit: Set(refill.unit.clone()),
        amount: Set(refill.amount),
        period: Set(refill.period.as_str().to_owned()),
        next_refill_at: Set(refill.period.next_start(now)),
    });
    credit_refill::Entity::insert_many(rows).exec_without_returning(txn).await.map_err(db_error)?;
    Ok(())
}

pub(crate) fn stored_period(text: &str) -> Result<RefillPeriod> {
    RefillPeriod::parse(text).ok_or_else(|| Error::internal(format!("stored refill period {text:?} is not valid")))
}
