//! Charging: batches of VerifyApiKey charges, each debited in full or not at all under
//! the database's own `balance >= cost` condition, with request ids that name one charge.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use keyward_core::{
    credit::{Charge, ChargeOutcome, Credit},
    error::Result,
};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, ExprTrait,
    QueryFilter, QueryOrder, sea_query::Expr,
};
use uuid::Uuid;

use crate::{
    Store,
    db::{ROWS_PER_STATEMENT, db_error, is_retryable},
    entity::{charge_record, credit_balance, credit_transaction},
    ledger::{REASON_VERIFY, ledger_row},
    sql::Sql,
};

/// Attempts of a charge batch that PostgreSQL aborted as a deadlock.
const CHARGE_ATTEMPTS: usize = 5;

impl Store {
    /// Applies a batch of charges in one transaction: each is charged in full or not at
    /// all, under the database's own `balance >= cost` condition, with its ledger
    /// entries. A charge whose request id was seen before gets the first outcome if it is
    /// the same charge (key, cost and caller), and [`ChargeOutcome::RequestIdReused`] with
    /// nothing charged otherwise. Nothing is reported charged before the commit.
    pub async fn charge(&self, charges: &[Charge], now: DateTime<Utc>) -> Result<Vec<ChargeOutcome>> {
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
) -> std::result::Result<Vec<ChargeOutcome>, DbErr> {
    let backend = txn.get_database_backend();
    let mut outcomes: Vec<Option<ChargeOutcome>> = vec![None; charges.len()];

    // A request id stands for one charge: a repeat within this batch follows the
    // first charge with that id if it is the same charge; one that differs is judged
    // once the first's claim has shown which charge the id stands for.
    let fingerprints: Vec<Option<String>> =
        charges.iter().map(|charge| charge.request_id.as_ref().map(|_| charge.fingerprint())).collect();
    let mut first_of: HashMap<&str, usize> = HashMap::new();
    let mut copies = Vec::new();
    let mut differing = Vec::new();
    let mut fresh = Vec::new();
    for (index, charge) in charges.iter().enumerate() {
        match charge.request_id.as_deref() {
            Some(request_id) => match first_of.get(request_id) {
                Some(&first) if fingerprints[first] == fingerprints[index] => copies.push((index, first)),
                Some(_) => differing.push(index),
                None => {
                    first_of.insert(request_id, index);
                    fresh.push(index);
                }
            },
            None => fresh.push(index),
        }
    }

    // Claim the request ids; one claimed earlier gets the first outcome if it stands
    // for the same charge, and is refused otherwise.
    let claimed = claim_request_ids(&txn, backend, charges, &fingerprints, &first_of, now).await?;
    let mut earlier = Vec::new();
    fresh.retain(|&index| match charges[index].request_id.as_deref() {
        Some(request_id) if !claimed.contains(request_id) => {
            earlier.push(index);
            false
        }
        Some(_) | None => true,
    });
    for index in earlier {
        let fingerprint = fingerprints[index].as_deref().unwrap_or_default();
        outcomes[index] = Some(replayed_outcome(&txn, &charges[index], fingerprint).await?);
    }
    for index in differing {
        let request_id = charges[index].request_id.as_deref().unwrap_or_default();
        outcomes[index] = Some(if claimed.contains(request_id) {
            ChargeOutcome::RequestIdReused
        } else {
            let fingerprint = fingerprints[index].as_deref().unwrap_or_default();
            replayed_outcome(&txn, &charges[index], fingerprint).await?
        });
    }

    let mut ledger = Vec::new();
    let mut charged_ids = Vec::new();

    // First each key's charges together: one conditional debit of their summed cost
    // per unit. Where that covers them all, each charge's balance follows from the
    // one returned (the database did the arithmetic, under its own condition).
    let mut by_key: BTreeMap<Uuid, Vec<usize>> = BTreeMap::new();
    for &index in &fresh {
        by_key.entry(charges[index].key_id).or_default().push(index);
    }
    let mut totals: BTreeMap<(Uuid, String), i64> = BTreeMap::new();
    let mut overflowing = HashSet::new();
    for charge in fresh.iter().map(|&index| &charges[index]) {
        for cost in &charge.costs {
            let total = totals.entry((charge.key_id, cost.unit.clone())).or_default();
            match total.checked_add(cost.amount) {
                Some(sum) => *total = sum,
                None => {
                    overflowing.insert(charge.key_id);
                }
            }
        }
    }
    totals.retain(|(key_id, _), _| !overflowing.contains(key_id));
    let rows: Vec<(Uuid, &str, i64)> = totals.iter().map(|((key, unit), cost)| (*key, unit.as_str(), *cost)).collect();
    let debited = debit(&txn, backend, rows).await?;
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
                let charge = &charges[index];
                let after = charge
                    .costs
                    .iter()
                    .map(|cost| {
                        let balance = running.entry(cost.unit.as_str()).or_default();
                        *balance -= cost.amount;
                        Credit::new(cost.unit.clone(), *balance)
                    })
                    .collect();
                outcomes[index] = Some(settle(charge, after, now, &mut ledger, &mut charged_ids));
            }
            continue;
        }
        for (unit, total) in &units {
            if debited.contains_key(&(key_id, (*unit).clone())) {
                credit_back(&txn, key_id, unit, *total).await?;
            }
        }
        if members.len() == 1 && !overflowing.contains(&key_id) {
            outcomes[members[0]] = Some(ChargeOutcome::Exceeded);
        } else {
            one_by_one.extend(members);
        }
    }

    // Keys whose balance does not cover all their charges: one charge per key per
    // round, in arrival order, so one statement never touches a row twice.
    one_by_one.sort_unstable();
    let mut pending = one_by_one;
    while !pending.is_empty() {
        let mut keys_in_round = HashSet::new();
        let (round, later): (Vec<usize>, Vec<usize>) =
            pending.iter().partition(|&&index| keys_in_round.insert(charges[index].key_id));
        pending = later;
        let mut rows = Vec::new();
        for &index in &round {
            let charge = &charges[index];
            rows.extend(charge.costs.iter().map(|cost| (charge.key_id, cost.unit.as_str(), cost.amount)));
        }
        let debited = debit(&txn, backend, rows).await?;
        for index in round {
            let charge = &charges[index];
            let after: Vec<Credit> = charge
                .costs
                .iter()
                .filter_map(|cost| {
                    debited
                        .get(&(charge.key_id, cost.unit.clone()))
                        .map(|&balance| Credit::new(cost.unit.clone(), balance))
                })
                .collect();
            if after.len() == charge.costs.len() {
                outcomes[index] = Some(settle(charge, after, now, &mut ledger, &mut charged_ids));
            } else {
                // Some units were too low: give back the ones this statement took.
                for credit in &after {
                    let cost = charge.costs.iter().find(|cost| cost.unit == credit.unit).map_or(0, |cost| cost.amount);
                    credit_back(&txn, charge.key_id, &credit.unit, cost).await?;
                }
                outcomes[index] = Some(ChargeOutcome::Exceeded);
            }
        }
    }
    for chunk in ledger.chunks(ROWS_PER_STATEMENT) {
        credit_transaction::Entity::insert_many(chunk.to_vec()).exec_without_returning(&txn).await?;
    }
    if !charged_ids.is_empty() {
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
    txn.commit().await?;
    for (index, first) in copies {
        outcomes[index] = outcomes[first].clone();
    }
    Ok(outcomes.into_iter().map(|outcome| outcome.unwrap_or(ChargeOutcome::Exceeded)).collect())
}

/// Inserts a charge record, with its fingerprint, per first request id of the batch;
/// returns the request ids this transaction claimed. A claim racing another
/// transaction's waits for it to end (the unique index on request_id decides).
async fn claim_request_ids(
    txn: &DatabaseTransaction,
    backend: DbBackend,
    charges: &[Charge],
    fingerprints: &[Option<String>],
    first_of: &HashMap<&str, usize>,
    now: DateTime<Utc>,
) -> std::result::Result<HashSet<String>, DbErr> {
    let mut claimed = HashSet::new();
    // A fixed order keeps two batches sharing request ids from waiting on each other in a cycle.
    let mut ids: Vec<(&str, usize)> = first_of.iter().map(|(request_id, index)| (*request_id, *index)).collect();
    ids.sort_unstable();
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let mut sql = Sql::new(backend);
        sql.push("INSERT INTO charge_records (key_id, request_id, charged, created_at, fingerprint) VALUES ");
        for (position, (request_id, index)) in chunk.iter().enumerate() {
            sql.push(if position == 0 { "(" } else { ", (" });
            sql.bind(charges[*index].key_id, "").push(", ").bind(*request_id, "").push(", ").bind(false, "");
            sql.push(", ").bind(now, "").push(", ").bind(fingerprints[*index].clone(), "").push(")");
        }
        sql.push(" ON CONFLICT DO NOTHING RETURNING request_id");
        for row in txn.query_all_raw(sql.statement()).await? {
            claimed.insert(row.try_get::<String>("", "request_id")?);
        }
    }
    Ok(claimed)
}

/// The answer to a charge whose request id an earlier charge claimed: that charge's
/// outcome if it was the same charge (same fingerprint), else [`ChargeOutcome::RequestIdReused`].
async fn replayed_outcome(
    txn: &DatabaseTransaction,
    charge: &Charge,
    fingerprint: &str,
) -> std::result::Result<ChargeOutcome, DbErr> {
    let request_id = charge.request_id.clone().unwrap_or_default();
    // Read through the unique index on request_id (it holds the rows with a fingerprint).
    let claim = charge_record::Entity::find()
        .filter(charge_record::Column::RequestId.eq(request_id.clone()))
        .filter(charge_record::Column::Fingerprint.is_not_null())
        .one(txn)
        .await?;
    if let Some(claim) = claim {
        return if claim.fingerprint.as_deref() == Some(fingerprint) {
            first_outcome(txn, charge).await
        } else {
            Ok(ChargeOutcome::RequestIdReused)
        };
    }
    // A record from before fingerprints: the same key's, or the claim would have gone
    // through. Its ledger entries tell what a charge that went through was; one that did
    // not left none, and replaying its refusal gives nothing away.
    let record = charge_record::Entity::find_by_id((charge.key_id, request_id.clone())).one(txn).await?;
    let Some(record) = record else { return Ok(ChargeOutcome::RequestIdReused) };
    if record.charged {
        let entries = verify_entries(txn, charge.key_id, &request_id).await?;
        let mut charged: Vec<Credit> =
            entries.iter().map(|entry| Credit::new(entry.unit.clone(), -entry.delta)).collect();
        charged.sort();
        let mut asked = charge.costs.clone();
        asked.sort();
        if charged != asked || entries.iter().any(|entry| entry.actor != charge.actor) {
            return Ok(ChargeOutcome::RequestIdReused);
        }
    }
    first_outcome(txn, charge).await
}

/// Records a charge that went through: its ledger entries and its request id.
fn settle(
    charge: &Charge,
    after: Vec<Credit>,
    now: DateTime<Utc>,
    ledger: &mut Vec<credit_transaction::ActiveModel>,
    charged_ids: &mut Vec<(Uuid, String)>,
) -> ChargeOutcome {
    for (cost, balance) in charge.costs.iter().zip(&after) {
        ledger.push(ledger_row(
            charge.key_id,
            &cost.unit,
            -cost.amount,
            balance.amount,
            REASON_VERIFY,
            charge.request_id.as_deref(),
            &charge.actor,
            now,
        ));
    }
    if let Some(request_id) = &charge.request_id {
        charged_ids.push((charge.key_id, request_id.clone()));
    }
    ChargeOutcome::Charged(after)
}

/// Gives back credits a debit of this transaction took.
async fn credit_back(
    txn: &DatabaseTransaction,
    key_id: Uuid,
    unit: &str,
    amount: i64,
) -> std::result::Result<(), DbErr> {
    credit_balance::Entity::update_many()
        .col_expr(credit_balance::Column::Balance, Expr::col(credit_balance::Column::Balance).add(amount))
        .filter(credit_balance::Column::KeyId.eq(key_id))
        .filter(credit_balance::Column::Unit.eq(unit.to_owned()))
        .exec(txn)
        .await?;
    Ok(())
}

/// The outcome the first charge with this (key, request id) had.
async fn first_outcome(txn: &DatabaseTransaction, charge: &Charge) -> std::result::Result<ChargeOutcome, DbErr> {
    let request_id = charge.request_id.clone().unwrap_or_default();
    let record = charge_record::Entity::find_by_id((charge.key_id, request_id.clone())).one(txn).await?;
    if !record.is_some_and(|record| record.charged) {
        return Ok(ChargeOutcome::Exceeded);
    }
    let entries = verify_entries(txn, charge.key_id, &request_id).await?;
    Ok(ChargeOutcome::Charged(entries.into_iter().map(|entry| Credit::new(entry.unit, entry.balance_after)).collect()))
}

/// The ledger entries a charge with this (key, request id) wrote, by unit.
async fn verify_entries(
    txn: &DatabaseTransaction,
    key_id: Uuid,
    request_id: &str,
) -> std::result::Result<Vec<credit_transaction::Model>, DbErr> {
    credit_transaction::Entity::find()
        .filter(credit_transaction::Column::KeyId.eq(key_id))
        .filter(credit_transaction::Column::RequestId.eq(request_id.to_owned()))
        .filter(credit_transaction::Column::Reason.eq(REASON_VERIFY))
        .order_by_asc(credit_transaction::Column::Unit)
        .all(txn)
        .await
}

/// One conditional UPDATE debiting each (key, unit) of `rows` (each at most once) whose
/// balance covers its cost; returns the new balance of each debited (key, unit).
async fn debit(
    txn: &DatabaseTransaction,
    backend: DbBackend,
    mut rows: Vec<(Uuid, &str, i64)>,
) -> std::result::Result<HashMap<(Uuid, String), i64>, DbErr> {
    // Rows locked in one order by every batch cannot deadlock one another.
    rows.sort_unstable();
    let mut debited = HashMap::with_capacity(rows.len());
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let mut sql = Sql::new(backend);
        let postgres = backend == DbBackend::Postgres;
        sql.push(if postgres {
            "UPDATE credit_balances AS b SET balance = b.balance - v.cost FROM (VALUES "
        } else {
            "UPDATE credit_balances AS b SET balance = b.balance - v.column3 FROM (VALUES "
        });
        for (position, (key_id, unit, cost)) in chunk.iter().enumerate() {
            sql.push(if position == 0 { "(" } else { ", (" });
            sql.bind(*key_id, "uuid").push(", ").bind(*unit, "varchar").push(", ").bind(*cost, "bigint").push(")");
        }
        sql.push(if postgres {
            ") AS v (key_id, unit, cost) WHERE b.key_id = v.key_id AND b.unit = v.unit AND b.balance >= v.cost \
             RETURNING b.key_id, b.unit, b.balance"
        } else {
            ") AS v WHERE b.key_id = v.column1 AND b.unit = v.column2 AND b.balance >= v.column3 \
             RETURNING key_id, unit, balance"
        });
        for row in txn.query_all_raw(sql.statement()).await? {
            debited.insert(
                (row.try_get::<Uuid>("", "key_id")?, row.try_get::<String>("", "unit")?),
                row.try_get::<i64>("", "balance")?,
            );
        }
    }
    Ok(debited)
}
