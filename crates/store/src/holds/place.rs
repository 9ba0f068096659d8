//! Placing credit holds, a batch at a time: verifications that ask for holds at once share
//! one commit, as charges do. On PostgreSQL a batch of one-unit holds without request ids
//! is one statement (`keyward_hold`, created by a migration): one round trip, no BEGIN.
//! Every other batch is one transaction, each hold in it reserving all its units or none.

use chrono::{DateTime, Utc};
use keyward_core::{credit::Credit, error::Result, hold::HoldOutcome, hold::HoldState};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, ExprTrait, QueryFilter,
    sea_query::Expr,
};
use uuid::Uuid;

use super::{HOLD_ATTEMPTS, HoldRequest, with_amounts};
use crate::{
    Store,
    db::{db_error, is_retryable},
    entity::{credit_balance, credit_hold, credit_hold_amount},
    sql::Sql,
};

impl Store {
    /// Places a batch of holds, in its order: each reserves all its amounts or none, each
    /// only if its account's available balance (balance minus live holds) covers it. A
    /// hold whose request id named a hold of its key before answers that hold if it is
    /// the same request (caller and amounts), [`HoldOutcome::RequestIdReused`] otherwise.
    /// Nothing is answered before the commit; on an error nothing of the batch was placed.
    pub async fn place_holds(&self, requests: &[HoldRequest]) -> Result<Vec<HoldOutcome>> {
        let db = self.db()?;
        let direct = db.get_database_backend() == DbBackend::Postgres && suits(requests);
        let mut attempt = 1;
        loop {
            let placed = if direct {
                place_directly(self, db, requests).await
            } else {
                place_in_transaction(self.begin_write().await?, requests).await
            };
            match placed {
                Err(err) if attempt < HOLD_ATTEMPTS && is_retryable(&err) => attempt += 1,
                placed => return placed.map_err(db_error),
            }
        }
    }
}

/// Whether `keyward_hold` can take every hold of `requests`: one unit each and no request
/// id (a repeat must be looked up first).
fn suits(requests: &[HoldRequest]) -> bool {
    requests.iter().all(|request| request.request_id.is_none() && request.amounts.len() == 1)
}

/// Microseconds since the epoch: `keyward_hold` takes times so, not as an array of timestamps.
fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

async fn place_directly(
    store: &Store,
    db: &sea_orm::DatabaseConnection,
    requests: &[HoldRequest],
) -> Result<Vec<HoldOutcome>, DbErr> {
    let ids: Vec<Uuid> = requests.iter().map(|_| Uuid::now_v7()).collect();
    let mut sql = Sql::new(DbBackend::Postgres);
    sql.push("SELECT held_id FROM keyward_hold(").bind(ids.clone(), "uuid[]").push(", ");
    sql.bind(requests.iter().map(|request| request.key_id).collect::<Vec<_>>(), "uuid[]").push(", ");
    sql.bind(requests.iter().map(HoldRequest::account).collect::<Vec<_>>(), "uuid[]").push(", ");
    sql.bind(requests.iter().map(|request| request.actor.clone()).collect::<Vec<_>>(), "varchar[]").push(", ");
    sql.bind(requests.iter().map(|request| request.amounts[0].unit.clone()).collect::<Vec<_>>(), "varchar[]");
    sql.push(", ").bind(requests.iter().map(|request| request.amounts[0].amount).collect::<Vec<_>>(), "bigint[]");
    sql.push(", ").bind(requests.iter().map(|request| micros(request.placed_at)).collect::<Vec<_>>(), "bigint[]");
    sql.push(", ").bind(requests.iter().map(|request| micros(request.expires_at)).collect::<Vec<_>>(), "bigint[]");
    sql.push(")");
    let mut held = std::collections::HashSet::with_capacity(requests.len());
    for row in store.write_once(db, sql.statement()).await? {
        held.insert(row.try_get::<Uuid>("", "held_id")?);
    }
    Ok(ids
        .into_iter()
        .map(|id| if held.contains(&id) { HoldOutcome::Held(id) } else { HoldOutcome::Exceeded })
        .collect())
}

async fn place_in_transaction(txn: DatabaseTransaction, requests: &[HoldRequest]) -> Result<Vec<HoldOutcome>, DbErr> {
    let mut outcomes = Vec::with_capacity(requests.len());
    for request in requests {
        outcomes.push(place_one(&txn, request).await?);
    }
    txn.commit().await?;
    Ok(outcomes)
}

/// One hold inside its batch's transaction. Rows it writes are seen by the holds after it,
/// so a request id repeated within one batch answers as a repeat too.
async fn place_one(txn: &DatabaseTransaction, request: &HoldRequest) -> Result<HoldOutcome, DbErr> {
    if let Some(request_id) = &request.request_id {
        let earlier = credit_hold::Entity::find()
            .filter(credit_hold::Column::KeyId.eq(request.key_id))
            .filter(credit_hold::Column::RequestId.eq(request_id.clone()))
            .one(txn)
            .await?;
        if let Some(earlier) = earlier {
            let earlier = with_amounts(txn, vec![earlier]).await.map_err(|err| DbErr::Custom(err.to_string()))?;
            let mut asked = request.amounts.clone();
            asked.sort();
            return Ok(match earlier.into_iter().next() {
                Some(hold) if hold.actor == request.actor && hold.amounts == asked => HoldOutcome::Held(hold.id),
                _ => HoldOutcome::RequestIdReused,
            });
        }
    }
    let mut units: Vec<&Credit> = request.amounts.iter().collect();
    // One order for every transaction that takes balance rows, so two never wait on
    // each other in a cycle.
    units.sort();
    for (index, credit) in units.iter().enumerate() {
        if !reserve(txn, request.account(), credit, credit.amount).await? {
            // The batch's other holds commit, so what this one reserved goes back now.
            for reserved in &units[..index] {
                reserve(txn, request.account(), reserved, -reserved.amount).await?;
            }
            return Ok(HoldOutcome::Exceeded);
        }
    }
    let id = Uuid::now_v7();
    credit_hold::Entity::insert(credit_hold::ActiveModel {
        id: Set(id),
        key_id: Set(request.key_id),
        actor: Set(request.actor.clone()),
        request_id: Set(request.request_id.clone()),
        state: Set(HoldState::Live.as_str().to_owned()),
        created_at: Set(request.placed_at),
        expires_at: Set(request.expires_at),
        settled_at: Set(None),
        settle_request_id: Set(None),
        pool_id: Set(request.pool_id),
    })
    .exec_without_returning(txn)
    .await?;
    let rows = request.amounts.iter().map(|credit| credit_hold_amount::ActiveModel {
        hold_id: Set(id),
        unit: Set(credit.unit.clone()),
        amount: Set(credit.amount),
        captured: Set(None),
    });
    credit_hold_amount::Entity::insert_many(rows).exec_without_returning(txn).await?;
    Ok(HoldOutcome::Held(id))
}

/// Adds `amount` to what `account` holds of `credit`'s unit if the available balance covers
/// it (a negative amount gives back and always applies); whether it applied.
async fn reserve(txn: &DatabaseTransaction, account: Uuid, credit: &Credit, amount: i64) -> Result<bool, DbErr> {
    let mut update = credit_balance::Entity::update_many()
        .col_expr(credit_balance::Column::Held, Expr::col(credit_balance::Column::Held).add(amount))
        .filter(credit_balance::Column::KeyId.eq(account))
        .filter(credit_balance::Column::Unit.eq(credit.unit.clone()));
    if amount > 0 {
        update = update.filter(
            Expr::col(credit_balance::Column::Balance).sub(Expr::col(credit_balance::Column::Held)).gte(amount),
        );
    }
    Ok(update.exec(txn).await?.rows_affected == 1)
}
