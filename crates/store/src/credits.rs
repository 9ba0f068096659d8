//! Credits: balances, the ledger, charges, adjustments and refills. Every balance change
//! and its ledger entry are written in one transaction, so the ledger's deltas always
//! sum to the balance.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use keyward_core::{
    Error,
    credit::{Charge, ChargeOutcome, Credit, LedgerEntry, Refill, RefillPeriod, apply_delta},
    error::Result,
    policy::{Authority, Reach},
};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, ExprTrait,
    QueryFilter, QueryOrder, QuerySelect, Statement, Value,
    sea_query::{Expr, OnConflict, Query},
};
use uuid::Uuid;

use crate::{
    Claim, Mutation, Operation, Store, audit, claim,
    convert::db_error,
    entity::{
        api_key, charge_record, credit_balance, credit_refill, credit_spend_counter, credit_transaction, usage_counter,
    },
    find_in_reach, lock_target,
};

/// Ledger reason of initial balances.
const REASON_CREATE: &str = "create";
/// Ledger reason of charges by VerifyApiKey.
const REASON_VERIFY: &str = "verify";
/// Ledger reason of scheduled top-ups.
const REASON_REFILL: &str = "refill";
/// Actor of scheduled top-ups.
const ACTOR_SCHEDULE: &str = "keyward";
/// Attempts of a charge batch that PostgreSQL aborted as a deadlock.
const CHARGE_ATTEMPTS: usize = 5;
/// Rows per multi-row statement: well under both databases' bind-parameter limits.
const ROWS_PER_STATEMENT: usize = 500;
/// Refill schedules handled per sweep.
const REFILLS_PER_SWEEP: u64 = 500;

/// A key's balances and refill schedules, as shown with the key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreditView {
    /// Balance per unit, ordered by unit.
    pub balances: Vec<Credit>,
    /// Refill schedules, ordered by unit.
    pub refills: Vec<Refill>,
}

/// Filters and position of one page of a key's ledger.
#[derive(Debug, Clone)]
pub struct LedgerQuery {
    /// The key.
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

/// Whose usage to read.
#[derive(Debug, Clone)]
pub enum UsageScope {
    /// One key.
    Key(Uuid),
    /// Every key of an owner.
    Owner(String),
}

/// Stored hourly usage: verifications per (hour, outcome) and credits spent per (hour, unit).
#[derive(Debug, Clone, Default)]
pub struct HourlyUsage {
    /// (hour, outcome, count).
    pub verifications: Vec<(DateTime<Utc>, String, i64)>,
    /// (hour, unit, amount).
    pub spent: Vec<(DateTime<Utc>, String, i64)>,
}

/// A raw SQL statement with placeholders in the dialect of its backend.
struct Sql {
    backend: DbBackend,
    text: String,
    values: Vec<Value>,
}

impl Sql {
    fn new(backend: DbBackend) -> Self {
        Self { backend, text: String::new(), values: Vec::new() }
    }

    fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends a placeholder for `value`, with a cast on PostgreSQL where the type
    /// cannot be inferred (inside VALUES lists).
    fn bind(&mut self, value: impl Into<Value>, pg_type: &str) -> &mut Self {
        self.values.push(value.into());
        if self.backend == DbBackend::Postgres {
            self.text.push_str(&format!("${}", self.values.len()));
            if !pg_type.is_empty() {
                self.text.push_str("::");
                self.text.push_str(pg_type);
            }
        } else {
            self.text.push('?');
        }
        self
    }

    fn statement(self) -> Statement {
        Statement::from_sql_and_values(self.backend, self.text, self.values)
    }
}

/// Whether PostgreSQL aborted the transaction only because of a lock cycle or a
/// serialisation conflict, so that running it again is safe and likely to succeed.
fn is_retryable(err: &DbErr) -> bool {
    let text = err.to_string();
    text.contains("deadlock detected") || text.contains("could not serialize access")
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
        if let Claim::Replay = claim(&txn, mutation, Operation::AdjustCredits, id).await? {
            return all_balances(&txn, id).await;
        }
        apply_deltas(&txn, id, deltas, reason, mutation).await?;
        audit(&txn, mutation, Operation::AdjustCredits, id).await?;
        let balances = all_balances(&txn, id).await?;
        txn.commit().await.map_err(db_error)?;
        Ok(balances)
    }

    /// Applies a batch of charges in one transaction: each is charged in full or not at
    /// all, under the database's own `balance >= cost` condition, with its ledger
    /// entries. A charge whose request id was seen before gets the first outcome if it is
    /// the same charge (key, cost and caller), and [`ChargeOutcome::RequestIdReused`] with
    /// nothing charged otherwise. Nothing is reported charged before the commit.
    pub async fn charge(&self, charges: &[Charge], now: DateTime<Utc>) -> Result<Vec<ChargeOutcome>> {
        let mut attempt = 1;
        loop {
            match self.try_charge(charges, now).await {
                Err(err) if attempt < CHARGE_ATTEMPTS && is_retryable(&err) => {
                    tracing::debug!(attempt, "charge batch hit a lock cycle; running it again");
                    attempt += 1;
                }
                result => return result.map_err(db_error),
            }
        }
    }

    async fn try_charge(
        &self,
        charges: &[Charge],
        now: DateTime<Utc>,
    ) -> std::result::Result<Vec<ChargeOutcome>, DbErr> {
        let backend = self.pool.get_database_backend();
        let txn = self.begin_write().await.map_err(|err| DbErr::Custom(err.to_string()))?;
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
        let rows: Vec<(Uuid, &str, i64)> =
            totals.iter().map(|((key, unit), cost)| (*key, unit.as_str(), *cost)).collect();
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
                        let cost =
                            charge.costs.iter().find(|cost| cost.unit == credit.unit).map_or(0, |cost| cost.amount);
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

    /// A page of a key's ledger, oldest first.
    pub async fn credit_transactions(&self, query: &LedgerQuery, reach: &Reach) -> Result<Vec<LedgerEntry>> {
        find_in_reach(self.db()?, query.key_id, reach).await?;
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
        let rows = select
            .order_by_asc(credit_transaction::Column::Id)
            .limit(query.limit)
            .all(self.db()?)
            .await
            .map_err(db_error)?;
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
            })
            .collect())
    }

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
            }
            txn.commit().await.map_err(db_error)?;
            applied += 1;
        }
        Ok(applied)
    }

    /// Stored hourly usage of a key or an owner's keys within `[start, end)`.
    pub async fn hourly_usage(
        &self,
        scope: &UsageScope,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Result<HourlyUsage> {
        let keys = match scope {
            UsageScope::Key(id) => Condition::all().add(usage_counter::Column::KeyId.eq(*id)),
            UsageScope::Owner(owner) => Condition::all().add(
                usage_counter::Column::KeyId.in_subquery(
                    Query::select()
                        .column(api_key::Column::Id)
                        .from(api_key::Entity)
                        .and_where(api_key::Column::Owner.eq(owner.clone()))
                        .to_owned(),
                ),
            ),
        };
        let counters = usage_counter::Entity::find()
            .filter(keys)
            .filter(usage_counter::Column::BucketStart.gte(start))
            .filter(usage_counter::Column::BucketStart.lt(end))
            .all(self.db()?)
            .await
            .map_err(db_error)?;
        let spend_keys = match scope {
            UsageScope::Key(id) => Condition::all().add(credit_spend_counter::Column::KeyId.eq(*id)),
            UsageScope::Owner(owner) => Condition::all().add(
                credit_spend_counter::Column::KeyId.in_subquery(
                    Query::select()
                        .column(api_key::Column::Id)
                        .from(api_key::Entity)
                        .and_where(api_key::Column::Owner.eq(owner.clone()))
                        .to_owned(),
                ),
            ),
        };
        let spent = credit_spend_counter::Entity::find()
            .filter(spend_keys)
            .filter(credit_spend_counter::Column::BucketStart.gte(start))
            .filter(credit_spend_counter::Column::BucketStart.lt(end))
            .all(self.db()?)
            .await
            .map_err(db_error)?;
        Ok(HourlyUsage {
            verifications: counters.into_iter().map(|row| (row.bucket_start, row.outcome, row.count)).collect(),
            spent: spent.into_iter().map(|row| (row.bucket_start, row.unit, row.amount)).collect(),
        })
    }
}

/// Initial balances (with their ledger entries) and refill schedules of a new key.
pub(crate) async fn initialize(
    txn: &DatabaseTransaction,
    id: Uuid,
    credits: &[Credit],
    refills: &[Refill],
    mutation: &Mutation,
) -> Result<()> {
    for credit in credits {
        set_balance(txn, id, &credit.unit, credit.amount).await?;
    }
    let ledger = credits
        .iter()
        .filter(|credit| credit.amount != 0)
        .map(|credit| {
            ledger_row(
                id,
                &credit.unit,
                credit.amount,
                credit.amount,
                REASON_CREATE,
                mutation.request_id.as_deref(),
                &mutation.actor,
                mutation.now,
            )
        })
        .collect();
    insert_ledger(txn, ledger).await?;
    replace_refills(txn, id, refills, mutation.now).await
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

fn stored_period(text: &str) -> Result<RefillPeriod> {
    RefillPeriod::parse(text).ok_or_else(|| Error::internal(format!("stored refill period {text:?} is not valid")))
}

async fn all_balances(conn: &impl ConnectionTrait, id: Uuid) -> Result<Vec<Credit>> {
    let rows = credit_balance::Entity::find()
        .filter(credit_balance::Column::KeyId.eq(id))
        .order_by_asc(credit_balance::Column::Unit)
        .all(conn)
        .await
        .map_err(db_error)?;
    Ok(rows.into_iter().map(|row| Credit::new(row.unit, row.balance)).collect())
}

/// The balances of `units` of key `id`, creating missing ones at 0, locked until the
/// transaction ends (SQLite's write transaction already excludes every other writer).
async fn lock_balances<'a>(
    txn: &DatabaseTransaction,
    id: Uuid,
    units: impl IntoIterator<Item = &'a str>,
) -> Result<HashMap<String, i64>> {
    let units: Vec<String> = units.into_iter().map(str::to_owned).collect();
    let missing = units.iter().map(|unit| credit_balance::ActiveModel {
        key_id: Set(id),
        unit: Set(unit.clone()),
        balance: Set(0),
    });
    credit_balance::Entity::insert_many(missing)
        .on_conflict_do_nothing()
        .exec_without_returning(txn)
        .await
        .map_err(db_error)?;
    let mut select = credit_balance::Entity::find()
        .filter(credit_balance::Column::KeyId.eq(id))
        .filter(credit_balance::Column::Unit.is_in(units));
    if txn.get_database_backend() == DbBackend::Postgres {
        select = select.lock_exclusive();
    }
    let rows = select.all(txn).await.map_err(db_error)?;
    Ok(rows.into_iter().map(|row| (row.unit, row.balance)).collect())
}

async fn set_balance(txn: &DatabaseTransaction, id: Uuid, unit: &str, balance: i64) -> Result<()> {
    credit_balance::Entity::insert(credit_balance::ActiveModel {
        key_id: Set(id),
        unit: Set(unit.to_owned()),
        balance: Set(balance),
    })
    .on_conflict(
        OnConflict::columns([credit_balance::Column::KeyId, credit_balance::Column::Unit])
            .update_column(credit_balance::Column::Balance)
            .to_owned(),
    )
    .exec_without_returning(txn)
    .await
    .map_err(db_error)?;
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one ledger column each
fn ledger_row(
    key_id: Uuid,
    unit: &str,
    delta: i64,
    balance_after: i64,
    reason: &str,
    request_id: Option<&str>,
    actor: &str,
    at: DateTime<Utc>,
) -> credit_transaction::ActiveModel {
    credit_transaction::ActiveModel {
        id: NotSet,
        key_id: Set(key_id),
        unit: Set(unit.to_owned()),
        delta: Set(delta),
        balance_after: Set(balance_after),
        reason: Set(reason.to_owned()),
        request_id: Set(request_id.map(str::to_owned)),
        actor: Set(actor.to_owned()),
        created_at: Set(at),
    }
}

async fn insert_ledger(txn: &DatabaseTransaction, rows: Vec<credit_transaction::ActiveModel>) -> Result<()> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        credit_transaction::Entity::insert_many(chunk.to_vec()).exec_without_returning(txn).await.map_err(db_error)?;
    }
    Ok(())
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

/// Adds `deltas` to a key's balances inside `txn`, all or none, with one ledger entry per unit.
pub(crate) async fn apply_deltas(
    txn: &DatabaseTransaction,
    id: Uuid,
    deltas: &[Credit],
    reason: &str,
    mutation: &Mutation,
) -> Result<()> {
    let current = lock_balances(txn, id, deltas.iter().map(|delta| delta.unit.as_str())).await?;
    let mut entries = Vec::with_capacity(deltas.len());
    for delta in deltas {
        let balance = current.get(&delta.unit).copied().unwrap_or(0);
        let next = apply_delta(&delta.unit, balance, delta.amount)?;
        entries.push((delta, next));
    }
    for (delta, next) in &entries {
        set_balance(txn, id, &delta.unit, *next).await?;
    }
    let ledger = entries.iter().map(|(delta, next)| {
        ledger_row(
            id,
            &delta.unit,
            delta.amount,
            *next,
            reason,
            mutation.request_id.as_deref(),
            &mutation.actor,
            mutation.now,
        )
    });
    insert_ledger(txn, ledger.collect()).await
}
