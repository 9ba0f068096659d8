//! PostgreSQL's charge batch in one statement (`keyward_charge`, created by a
//! migration): no BEGIN, no COMMIT of its own, one round trip. It takes the common
//! case, charges of one unit without request ids on keys' own balances that stay above 0
//! and cross no alert; what it leaves goes the transactional way.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use keyward_core::credit::{Charge, ChargeOutcome, Credit};
use sea_orm::{DatabaseConnection, DbErr};
use uuid::Uuid;

use crate::{Store, db::database_code, ledger::REASON_VERIFY, sql::Sql};

/// What `keyward_charge` raises when a balance alert would fire: the statement is rolled
/// back, so nothing of the batch was charged.
const ALERT_FIRES: &str = "KW001";

/// Whether every charge of `charges` is one the statement can take. A pooled key's
/// charge is not: its ledger entry names the key that spent, which the statement's does not.
pub(super) fn suits(charges: &[Charge]) -> bool {
    charges.iter().all(|charge| charge.request_id.is_none() && charge.costs.len() == 1 && charge.pool_id.is_none())
}

/// What one statement did: the outcome of each charge it took, `None` for those left to
/// the transactional path (a balance that would not stay above 0).
pub(super) enum Direct {
    Charged(Vec<Option<ChargeOutcome>>),
    /// A balance alert would fire; nothing was charged.
    AlertFires,
}

/// Runs `charges` (all [`suits`]) through `keyward_charge`.
pub(super) async fn charge(
    store: &Store,
    db: &DatabaseConnection,
    charges: &[Charge],
    now: DateTime<Utc>,
) -> Result<Direct, DbErr> {
    let mut columns = (
        Vec::with_capacity(charges.len()),
        Vec::with_capacity(charges.len()),
        Vec::with_capacity(charges.len()),
        Vec::with_capacity(charges.len()),
    );
    for charge in charges {
        let cost = &charge.costs[0];
        columns.0.push(charge.key_id);
        columns.1.push(cost.unit.clone());
        columns.2.push(cost.amount);
        columns.3.push(charge.actor.clone());
    }
    let mut sql = Sql::new(db.get_database_backend());
    sql.push("SELECT key_id, unit, balance FROM keyward_charge(");
    sql.bind(columns.0, "uuid[]").push(", ").bind(columns.1, "varchar[]").push(", ");
    sql.bind(columns.2, "bigint[]").push(", ").bind(columns.3, "varchar[]").push(", ");
    sql.bind(REASON_VERIFY, "varchar").push(", ").bind(now, "timestamptz").push(")");
    let rows = match store.write_once(db, sql.statement()).await {
        Ok(rows) => rows,
        Err(err) if matches!(database_code(&err), Some((false, code)) if code == ALERT_FIRES) => {
            return Ok(Direct::AlertFires);
        }
        Err(err) => return Err(err),
    };
    // Each (key, unit)'s balance before the batch's charges, from the one after them.
    let mut running: HashMap<(Uuid, String), i64> = HashMap::with_capacity(rows.len());
    for row in rows {
        running.insert((row.try_get("", "key_id")?, row.try_get("", "unit")?), row.try_get("", "balance")?);
    }
    for charge in charges {
        let cost = &charge.costs[0];
        if let Some(balance) = running.get_mut(&(charge.key_id, cost.unit.clone())) {
            *balance += cost.amount;
        }
    }
    Ok(Direct::Charged(
        charges
            .iter()
            .map(|charge| {
                let cost = &charge.costs[0];
                let balance = running.get_mut(&(charge.key_id, cost.unit.clone()))?;
                *balance -= cost.amount;
                Some(ChargeOutcome::Charged(vec![Credit::new(cost.unit.clone(), *balance)]))
            })
            .collect(),
    ))
}
