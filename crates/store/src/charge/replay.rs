//! Request ids of a batch: which charges repeat an earlier one, and the answers repeats get.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use keyward_core::credit::{Charge, ChargeOutcome, Credit};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter, QueryOrder,
};
use uuid::Uuid;

use crate::{
    db::ROWS_PER_STATEMENT,
    entity::{charge_record, credit_transaction},
    ledger::REASON_VERIFY,
    sql::Sql,
};

/// The charges of a batch sorted by request id. A request id stands for one charge: a
/// repeat within the batch follows the first charge with that id if it is the same
/// charge; one that differs is judged once the first's claim has shown which charge the
/// id stands for.
pub(super) struct RequestIds<'a> {
    fingerprints: Vec<Option<String>>,
    first_of: HashMap<&'a str, usize>,
    /// (index, index of the same charge earlier in the batch).
    pub(super) copies: Vec<(usize, usize)>,
    differing: Vec<usize>,
    /// Charges without a request id, and the first with each.
    fresh: Vec<usize>,
}

impl<'a> RequestIds<'a> {
    pub(super) fn sort(charges: &'a [Charge]) -> Self {
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
        Self { fingerprints, first_of, copies, differing, fresh }
    }

    /// Claims the request ids and answers every charge that repeats one claimed earlier
    /// (the first outcome if it stands for the same charge, a refusal otherwise) or that
    /// differs from its first in this batch. Returns the charges still to be charged.
    pub(super) async fn answer_repeats(
        &self,
        txn: &DatabaseTransaction,
        charges: &[Charge],
        now: DateTime<Utc>,
        outcomes: &mut [Option<ChargeOutcome>],
    ) -> Result<Vec<usize>, DbErr> {
        let claimed = self.claim(txn, charges, now).await?;
        let mut fresh = self.fresh.clone();
        let mut earlier = Vec::new();
        fresh.retain(|&index| match charges[index].request_id.as_deref() {
            Some(request_id) if !claimed.contains(request_id) => {
                earlier.push(index);
                false
            }
            Some(_) | None => true,
        });
        for index in earlier {
            outcomes[index] = Some(replayed_outcome(txn, &charges[index], self.fingerprint(index)).await?);
        }
        for &index in &self.differing {
            let request_id = charges[index].request_id.as_deref().unwrap_or_default();
            outcomes[index] = Some(if claimed.contains(request_id) {
                ChargeOutcome::RequestIdReused
            } else {
                replayed_outcome(txn, &charges[index], self.fingerprint(index)).await?
            });
        }
        Ok(fresh)
    }

    fn fingerprint(&self, index: usize) -> &str {
        self.fingerprints[index].as_deref().unwrap_or_default()
    }

    /// Inserts a charge record, with its fingerprint, per first request id of the batch;
    /// returns the request ids this transaction claimed. A claim racing another
    /// transaction's waits for it to end (the unique index on request_id decides).
    async fn claim(
        &self,
        txn: &DatabaseTransaction,
        charges: &[Charge],
        now: DateTime<Utc>,
    ) -> Result<HashSet<String>, DbErr> {
        let backend = txn.get_database_backend();
        let mut claimed = HashSet::new();
        // A fixed order keeps two batches sharing request ids from waiting on each other in a cycle.
        let mut ids: Vec<(&str, usize)> =
            self.first_of.iter().map(|(request_id, index)| (*request_id, *index)).collect();
        ids.sort_unstable();
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let mut sql = Sql::new(backend);
            sql.push("INSERT INTO charge_records (key_id, request_id, charged, created_at, fingerprint) VALUES ");
            for (position, (request_id, index)) in chunk.iter().enumerate() {
                sql.push(if position == 0 { "(" } else { ", (" });
                sql.bind(charges[*index].key_id, "").push(", ").bind(*request_id, "").push(", ").bind(false, "");
                sql.push(", ").bind(now, "").push(", ").bind(self.fingerprints[*index].clone(), "").push(")");
            }
            sql.push(" ON CONFLICT DO NOTHING RETURNING request_id");
            for row in txn.query_all_raw(sql.statement()).await? {
                claimed.insert(row.try_get::<String>("", "request_id")?);
            }
        }
        Ok(claimed)
    }
}

/// The answer to a charge whose request id an earlier charge claimed: that charge's
/// outcome if it was the same charge (same fingerprint), else [`ChargeOutcome::RequestIdReused`].
async fn replayed_outcome(
    txn: &DatabaseTransaction,
    charge: &Charge,
    fingerprint: &str,
) -> Result<ChargeOutcome, DbErr> {
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
/// The outcome the first charge with this (key, request id) had.
async fn first_outcome(txn: &DatabaseTransaction, charge: &Charge) -> Result<ChargeOutcome, DbErr> {
    let request_id = charge.request_id.clone().unwrap_or_default();
    let record = charge_record::Entity::find_by_id((charge.key_id, request_id.clone())).one(txn).await?;
    if !record.is_some_and(|record| record.charged) {
        return Ok(ChargeOutcome::Exceeded);
    }
    let entries = verify_entries(txn, charge.key_id, &request_id).await?;
    Ok(ChargeOutcome::Charged(entries.into_iter().map(|entry| Credit::new(entry.unit, entry.balance_after)).collect()))
}

/// The ledger entries a charge with this (key, request id) wrote, by unit: on the key's
/// own balances, or on a pool's as the key that spent.
async fn verify_entries(
    txn: &DatabaseTransaction,
    key_id: Uuid,
    request_id: &str,
) -> Result<Vec<credit_transaction::Model>, DbErr> {
    credit_transaction::Entity::find()
        .filter(
            Condition::any()
                .add(credit_transaction::Column::KeyId.eq(key_id))
                .add(credit_transaction::Column::SpentBy.eq(key_id)),
        )
        .filter(credit_transaction::Column::RequestId.eq(request_id.to_owned()))
        .filter(credit_transaction::Column::Reason.eq(REASON_VERIFY))
        .order_by_asc(credit_transaction::Column::Unit)
        .all(txn)
        .await
}
