//! Charging: batches of VerifyApiKey charges, each debited in full or not at all under
//! the database's own `balance >= cost` condition, with request ids that name one charge.

mod direct;
mod replay;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use keyward_core::{
    credit::{Charge, ChargeOutcome, Credit},
    error::Result,
};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, ExprTrait,
    QueryFilter, sea_query::Expr,
};
use uuid::Uuid;

use self::{direct::Direct, replay::RequestIds};
use crate::{
    Store, alerts,
    db::{ROWS_PER_STATEMENT, db_error, is_retryable},
    entity::{charge_record, credit_balance},
    ledger::{self, REASON_VERIFY},
    sql::Sql,
};

/// What a charge batch came to.
#[derive(Debug)]
pub struct Charged {
    /// Each charge's outcome where it is known; `None` where `failure` left it unconfirmed.
    pub outcomes: Vec<Option<ChargeOutcome>>,
    /// Why some charges are unconfirmed: the database failed before or while committing
    /// them (a batch's one statement may have committed others already).
    pub failure: Option<keyward_core::Error>,
}

/// Attempts of a charge batch that PostgreSQL aborted as a deadlock.
const CHARGE_ATTEMPTS: usize = 5;

impl Store {
    /// Applies a batch of charges in one transaction: each is charged in full or not at
    /// all, under the database's own `balance >= cost` condition, with its ledger
    /// entries. A charge whose request id was seen before gets the first outcome if it is
    /// the same charge (key, cost and caller), and [`ChargeOutcome::RequestIdReused`] with
    /// nothing charged otherwise. Nothing is reported charged before the commit. On
    /// PostgreSQL a batch that `direct::suits` is first offered to one statement; what
    /// it leaves (balances that would reach 0) takes the transaction after it, and all of
    /// it does when a balance alert would fire. If that transaction fails, the charges
    /// the statement committed keep their outcomes; only the rest are unconfirmed.
    pub async fn charge(&self, charges: &[Charge], now: DateTime<Utc>) -> Charged {
        let mut outcomes = vec![None; charges.len()];
        match self.charge_directly(charges, now).await {
            Ok(Some(taken)) => outcomes = taken,
            Ok(None) => {}
            Err(err) => return Charged { outcomes, failure: Some(err) },
        }
        let left: Vec<usize> = (0..charges.len()).filter(|&index| outcomes[index].is_none()).collect();
        if left.is_empty() {
            return Charged { outcomes, failure: None };
        }
        let settled = if left.len() == charges.len() {
            self.charge_in_transaction(charges, now).await
        } else {
            let left_charges: Vec<Charge> = left.iter().map(|&index| charges[index].clone()).collect();
            self.charge_in_transaction(&left_charges, now).await
        };
        // What the statement charged stands, committed, whatever the transaction does.
        match settled {
            Ok(settled) => {
                for (index, outcome) in left.into_iter().zip(settled) {
                    outcomes[index] = Some(outcome);
                }
                Charged { outcomes, failure: None }
            }
            Err(err) => Charged { outcomes, failure: Some(err) },
        }
    }

    /// On PostgreSQL, a batch that `direct::suits` in one statement: the outcome of each
    /// charge it took, `None` for those it left; `None` for the whole batch elsewhere, or
    /// when a balance alert would fire (nothing was charged then).
    async fn charge_directly(
        &self,
        charges: &[Charge],
        now: DateTime<Utc>,
    ) -> Result<Option<Vec<Option<ChargeOutcome>>>> {
        let db = self.db()?;
        if db.get_database_backend() != DbBackend::Postgres || !direct::suits(charges) {
            return Ok(None);
        }
        let mut attempt = 1;
        loop {
            match direct::charge(self, db, charges, now).await {
                Err(err) if attempt < CHARGE_ATTEMPTS && is_retryable(&err) => attempt += 1,
                Err(err) => return Err(db_error(err)),
                Ok(Direct::AlertFires) => return Ok(None),
                Ok(Direct::Charged(taken)) => return Ok(Some(taken)),
            }
        }
    }

    /// Applies a batch of charges in one transaction (see [`Self::charge`]).
    async fn charge_in_transaction(&self, charges: &[Charge], now: DateTime<Utc>) -> Result<Vec<ChargeOutcome>> {
        let mut attempt = 1;
        loop {
            let txn = self.begin_write().await?;
            match try_charge(txn, charges, now).await {
                Err(err) if attempt < CHARGE_ATTEMPTS && is_retryable(&err) => {
                    tracing::debug!(attempt, "charge batch hit a lock cycle; running it again");
                    attempt += 1;
                }
                result => return result.map_err(db_error),
            }
        }
    }
}

async fn try_charge(
    txn: DatabaseTransaction,
    charges: &[Charge],
    now: DateTime<Utc>,
) -> Result<Vec<ChargeOutcome>, DbErr> {
    let request_ids = RequestIds::sort(charges);
    let mut batch = Batch {
        backend: txn.get_database_backend(),
        txn,
        charges,
        now,
        outcomes: vec![None; charges.len()],
        ledger: Vec::new(),
        charged_ids: Vec::new(),
        charged_keys: BTreeSet::new(),
    };
    let fresh = request_ids.answer_repeats(&batch.txn, charges, now, &mut batch.outcomes).await?;
    let one_by_one = batch.charge_by_key(&fresh).await?;
    batch.charge_one_by_one(one_by_one).await?;
    batch.commit(&request_ids.copies).await
}

/// One batch inside its transaction: the answers so far, and what the commit writes
/// besides the debits.
struct Batch<'a> {
    txn: DatabaseTransaction,
    backend: DbBackend,
    charges: &'a [Charge],
    now: DateTime<Utc>,
    outcomes: Vec<Option<ChargeOutcome>>,
    ledger: Vec<ledger::Entry>,
    /// (key, request id) of every charge that went through.
    charged_ids: Vec<(Uuid, String)>,
    /// Accounts (keys and pools) whose balances fell, whose balance alerts may fire.
    charged_keys: BTreeSet<Uuid>,
}

impl Batch<'_> {
    /// Each account's charges together (a key's, or a pool's from all its keys): one
    /// conditional debit of their summed cost per unit. Where that covers them all, each
    /// charge's balance follows from the one returned (the database did the arithmetic,
    /// under its own condition). Returns the charges of accounts it did not cover, to be
    /// tried one by one.
    async fn charge_by_key(&mut self, fresh: &[usize]) -> Result<Vec<usize>, DbErr> {
        let charges = self.charges;
        let mut by_key: BTreeMap<Uuid, Vec<usize>> = BTreeMap::new();
        for &index in fresh {
            by_key.entry(charges[index].account()).or_default().push(index);
        }
        let mut totals: BTreeMap<(Uuid, String), i64> = BTreeMap::new();
        let mut overflowing = HashSet::new();
        for charge in fresh.iter().map(|&index| &charges[index]) {
            for cost in &charge.costs {
                let total = totals.entry((charge.account(), cost.unit.clone())).or_default();
                match total.checked_add(cost.amount) {
                    Some(sum) => *total = sum,
                    None => {
                        overflowing.insert(charge.account());
                    }
                }
            }
        }
        totals.retain(|(key_id, _), _| !overflowing.contains(key_id));
        let rows: Vec<(Uuid, &str, i64)> =
            totals.iter().map(|((key, unit), cost)| (*key, unit.as_str(), *cost)).collect();
        let debited = debit(&self.txn, self.backend, rows).await?;
        let mut one_by_one = Vec::new();
        for (key_id, members) in by_key {
            let units: Vec<(&String, i64)> = totals
                .range((key_id, String::new())..)
                .take_while(|((key, _), _)| *key == key_id)
                .map(|((_, unit), cost)| (unit, *cost))
                .collect();
            let covered = !overflowing.contains(&key_id)
                && units.iter().all(|(unit, _)| debited.contains_key(&(key_id, (*unit).clone())));
            if covered {
                let mut running: HashMap<&str, i64> = units
                    .iter()
                    .map(|(unit, total)| (unit.as_str(), debited[&(key_id, (*unit).clone())] + total))
                    .collect();
                for index in members {
                    let after = charges[index]
                        .costs
                        .iter()
                        .map(|cost| {
                            let balance = running.entry(cost.unit.as_str()).or_default();
                            *balance -= cost.amount;
                            Credit::new(cost.unit.clone(), *balance)
                        })
                        .collect();
                    self.settle(index, after);
                }
                continue;
            }
            for (unit, total) in &units {
                if debited.contains_key(&(key_id, (*unit).clone())) {
                    credit_back(&self.txn, key_id, unit, *total).await?;
                }
            }
            if members.len() == 1 && !overflowing.contains(&key_id) {
                self.outcomes[members[0]] = Some(ChargeOutcome::Exceeded);
            } else {
                one_by_one.extend(members);
            }
        }
        Ok(one_by_one)
    }

    /// Charges of accounts whose balance does not cover all of them: one charge per
    /// account per round, in arrival order, so one statement never touches a row twice.
    async fn charge_one_by_one(&mut self, mut pending: Vec<usize>) -> Result<(), DbErr> {
        let charges = self.charges;
        pending.sort_unstable();
        while !pending.is_empty() {
            let mut keys_in_round = HashSet::new();
            let (round, later): (Vec<usize>, Vec<usize>) =
                pending.iter().partition(|&&index| keys_in_round.insert(charges[index].account()));
            pending = later;
            let mut rows = Vec::new();
            for &index in &round {
                let charge = &charges[index];
                rows.extend(charge.costs.iter().map(|cost| (charge.account(), cost.unit.as_str(), cost.amount)));
            }
            let debited = debit(&self.txn, self.backend, rows).await?;
            for index in round {
                let charge = &charges[index];
                let after: Vec<Credit> = charge
                    .costs
                    .iter()
                    .filter_map(|cost| {
                        debited
                            .get(&(charge.account(), cost.unit.clone()))
                            .map(|&balance| Credit::new(cost.unit.clone(), balance))
                    })
                    .collect();
                if after.len() == charge.costs.len() {
                    self.settle(index, after);
                } else {
                    // Some units were too low: give back the ones this statement took.
                    for credit in &after {
                        let cost =
                            charge.costs.iter().find(|cost| cost.unit == credit.unit).map_or(0, |cost| cost.amount);
                        credit_back(&self.txn, charge.account(), &credit.unit, cost).await?;
                    }
                    self.outcomes[index] = Some(ChargeOutcome::Exceeded);
                }
            }
        }
        Ok(())
    }

    /// Records a charge that went through: its ledger entries and its request id.
    fn settle(&mut self, index: usize, after: Vec<Credit>) {
        let charge = &self.charges[index];
        for (cost, balance) in charge.costs.iter().zip(&after) {
            self.ledger.push(ledger::Entry {
                key_id: charge.account(),
                unit: cost.unit.clone(),
                delta: -cost.amount,
                balance_after: balance.amount,
                request_id: charge.request_id.clone(),
                actor: charge.actor.clone(),
                spent_by: charge.pool_id.map(|_| charge.key_id),
                hold_id: None,
            });
        }
        self.charged_keys.insert(charge.account());
        if let Some(request_id) = &charge.request_id {
            self.charged_ids.push((charge.key_id, request_id.clone()));
        }
        self.outcomes[index] = Some(ChargeOutcome::Charged(after));
    }

    /// Writes the ledger entries, marks the request ids charged and writes the events of
    /// the balance alerts the batch crossed, commits, and only then answers: a copy of a
    /// charge within the batch gets its first's outcome.
    async fn commit(self, copies: &[(usize, usize)]) -> Result<Vec<ChargeOutcome>, DbErr> {
        let Self { txn, backend, mut outcomes, ledger, charged_ids, charged_keys, now, .. } = self;
        if backend == DbBackend::Postgres && !charged_ids.is_empty() {
            let (keys, request_ids): (Vec<Uuid>, Vec<String>) = charged_ids.into_iter().unzip();
            let mut sql = Sql::new(backend);
            sql.push("UPDATE charge_records SET charged = TRUE WHERE (key_id, request_id) IN (SELECT * FROM unnest(");
            sql.bind(keys, "uuid[]").push(", ").bind(request_ids, "varchar[]").push("))");
            txn.execute_raw(sql.statement()).await?;
        } else if !charged_ids.is_empty() {
            let mut any = Condition::any();
            for (key_id, request_id) in charged_ids {
                any = any.add(
                    Condition::all()
                        .add(charge_record::Column::KeyId.eq(key_id))
                        .add(charge_record::Column::RequestId.eq(request_id)),
                );
            }
            charge_record::Entity::update_many()
                .col_expr(charge_record::Column::Charged, Expr::value(true))
                .filter(any)
                .exec(&txn)
                .await?;
        }
        let charged_keys: Vec<Uuid> = charged_keys.into_iter().collect();
        let fired = alerts::fire(&txn, &charged_keys, ledger, REASON_VERIFY, now).await?;
        alerts::emit(&txn, fired, now).await.map_err(|err| DbErr::Custom(err.to_string()))?;
        txn.commit().await?;
        for &(index, first) in copies {
            outcomes[index] = outcomes[first].clone();
        }
        Ok(outcomes.into_iter().map(|outcome| outcome.unwrap_or(ChargeOutcome::Exceeded)).collect())
    }
}

/// Gives back credits a debit of this transaction took from an account.
async fn credit_back(txn: &DatabaseTransaction, key_id: Uuid, unit: &str, amount: i64) -> Result<(), DbErr> {
    credit_balance::Entity::update_many()
        .col_expr(credit_balance::Column::Balance, Expr::col(credit_balance::Column::Balance).add(amount))
        .filter(credit_balance::Column::KeyId.eq(key_id))
        .filter(credit_balance::Column::Unit.eq(unit.to_owned()))
        .exec(txn)
        .await?;
    Ok(())
}

/// One conditional UPDATE debiting each (account, unit) of `rows` (each at most once)
/// whose available balance covers its cost; returns the new balance of each debited one.
async fn debit(
    txn: &DatabaseTransaction,
    backend: DbBackend,
    mut rows: Vec<(Uuid, &str, i64)>,
) -> Result<HashMap<(Uuid, String), i64>, DbErr> {
    // Rows sent in one order by every batch: the planner mostly locks them in it, and a
    // lock cycle between two batches when it does not (a hash join, say) is retried
    // whole (`is_retryable`), so no charge is lost or doubled by one.
    rows.sort_unstable();
    let mut debited = HashMap::with_capacity(rows.len());
    let returned = if backend == DbBackend::Postgres {
        // Column arrays rather than a VALUES list: one statement text for every batch
        // size, prepared once per connection.
        let mut columns =
            (Vec::with_capacity(rows.len()), Vec::with_capacity(rows.len()), Vec::with_capacity(rows.len()));
        for (key_id, unit, cost) in rows {
            columns.0.push(key_id);
            columns.1.push(unit.to_owned());
            columns.2.push(cost);
        }
        let mut sql = Sql::new(backend);
        sql.push("UPDATE credit_balances AS b SET balance = b.balance - v.cost FROM unnest(");
        sql.bind(columns.0, "uuid[]").push(", ").bind(columns.1, "varchar[]").push(", ").bind(columns.2, "bigint[]");
        sql.push(
            ") AS v (key_id, unit, cost) WHERE b.key_id = v.key_id AND b.unit = v.unit AND b.balance - b.held >= v.cost \
             RETURNING b.key_id, b.unit, b.balance",
        );
        txn.query_all_raw(sql.statement()).await?
    } else {
        let mut returned = Vec::new();
        for chunk in rows.chunks(ROWS_PER_STATEMENT) {
            let mut sql = Sql::new(backend);
            sql.push("UPDATE credit_balances AS b SET balance = b.balance - v.column3 FROM (VALUES ");
            for (position, (key_id, unit, cost)) in chunk.iter().enumerate() {
                sql.push(if position == 0 { "(" } else { ", (" });
                sql.bind(*key_id, "").push(", ").bind(*unit, "").push(", ").bind(*cost, "").push(")");
            }
            sql.push(
                ") AS v WHERE b.key_id = v.column1 AND b.unit = v.column2 AND b.balance - b.held >= v.column3 \
                 RETURNING key_id, unit, balance",
            );
            returned.extend(txn.query_all_raw(sql.statement()).await?);
        }
        returned
    };
    for row in returned {
        debited.insert(
            (row.try_get::<Uuid>("", "key_id")?, row.try_get::<String>("", "unit")?),
            row.try_get::<i64>("", "balance")?,
        );
    }
    Ok(debited)
}
