//! The outbox: events written in the transaction of the change they tell of, one delivery
//! per endpoint that wanted them, and the claims and results of the dispatchers of every
//! replica. A claim is one statement and no transaction stays open while a replica posts.

use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use keyward_core::{
    Error,
    crypto::MasterKey,
    error::Result,
    event::{self, EventType},
    webhook::Outcome,
};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, EntityTrait, ExprTrait, QueryFilter, QuerySelect,
    sea_query::Expr,
};
use secrecy::SecretString;
use uuid::Uuid;

use crate::{
    Store,
    db::db_error,
    entity::{webhook_attempt, webhook_delivery, webhook_endpoint, webhook_event},
    sql::Sql,
    webhooks::{open_secret, stored_types},
};

/// States of a delivery.
pub(crate) const PENDING: &str = "pending";
const DELIVERED: &str = "delivered";
const FAILED: &str = "failed";

/// Writes an event of `kind` about key `key_id` inside `txn`, numbered next in the key's
/// sequence, with a delivery due now for every enabled endpoint that receives its type.
/// Returns the event's id.
pub(crate) async fn emit(
    txn: &DatabaseTransaction,
    kind: EventType,
    key_id: Uuid,
    data: serde_json::Value,
    now: DateTime<Utc>,
) -> Result<Uuid> {
    let sequence = next_sequence(txn, key_id).await?;
    let id = Uuid::now_v7();
    webhook_event::Entity::insert(webhook_event::ActiveModel {
        id: Set(id),
        event_type: Set(kind.as_str().to_owned()),
        payload: Set(event::payload(id, kind, now, sequence, data)),
        created_at: Set(now),
    })
    .exec(txn)
    .await
    .map_err(db_error)?;
    let endpoints = webhook_endpoint::Entity::find()
        .filter(webhook_endpoint::Column::Enabled.eq(true))
        .all(txn)
        .await
        .map_err(db_error)?;
    let mut deliveries = Vec::new();
    for endpoint in endpoints {
        if stored_types(&endpoint.event_types)?.receives(kind) {
            deliveries.push(new_delivery(id, endpoint.id, now));
        }
    }
    if !deliveries.is_empty() {
        webhook_delivery::Entity::insert_many(deliveries).exec_without_returning(txn).await.map_err(db_error)?;
    }
    Ok(id)
}

/// Takes the next number of `key_id`'s event sequence. Its row stays locked until `txn`
/// ends, so the numbers follow the order in which the key's changes commit, with no gap
/// (a rolled-back change gives its number back). Every caller takes it after its other
/// locks, which keeps lock order the same everywhere.
async fn next_sequence(txn: &DatabaseTransaction, key_id: Uuid) -> Result<i64> {
    let mut sql = Sql::new(txn.get_database_backend());
    sql.push("INSERT INTO event_sequences (key_id, last) VALUES (").bind(key_id, "uuid");
    sql.push(", 1) ON CONFLICT (key_id) DO UPDATE SET last = event_sequences.last + 1 RETURNING last");
    let row = txn
        .query_one_raw(sql.statement())
        .await
        .map_err(db_error)?
        .ok_or_else(|| Error::internal("the event sequence upsert returned no row".to_owned()))?;
    row.try_get("", "last").map_err(db_error)
}

pub(crate) fn new_delivery(event_id: Uuid, endpoint_id: Uuid, now: DateTime<Utc>) -> webhook_delivery::ActiveModel {
    webhook_delivery::ActiveModel {
        id: NotSet,
        event_id: Set(event_id),
        endpoint_id: Set(endpoint_id),
        state: Set(PENDING.to_owned()),
        attempts: Set(0),
        next_attempt_at: Set(now),
        claimed_until: Set(None),
        created_at: Set(now),
    }
}

/// A delivery a dispatcher holds until `claimed_until`: everything it needs to post it.
#[derive(Debug)]
pub struct Claimed {
    /// The delivery row.
    pub delivery_id: i64,
    /// The event: its `webhook-id`.
    pub event_id: Uuid,
    /// Its type.
    pub event_type: String,
    /// The body to post.
    pub payload: String,
    /// The endpoint.
    pub endpoint_id: Uuid,
    /// Where to post.
    pub url: String,
    /// The endpoint's signing secret.
    pub secret: SecretString,
    /// The number of this attempt, from 1.
    pub attempt: i64,
    /// Until when it is held.
    pub claimed_until: DateTime<Utc>,
}

/// How many deliveries a claim may take: at most `total`, and for each endpoint what
/// `per_endpoint` leaves after the posts to it this replica has in flight (`busy`).
#[derive(Debug, Clone, Copy)]
pub struct Room<'a> {
    /// Free slots of this replica.
    pub total: u64,
    /// Most posts to one endpoint this replica makes at once.
    pub per_endpoint: u64,
    /// Endpoints this replica is posting to, and how many posts each.
    pub busy: &'a [(Uuid, u64)],
}

/// What a finished attempt leaves behind.
#[derive(Debug)]
pub struct AttemptResult<'a> {
    /// How it ended.
    pub outcome: &'a Outcome,
    /// When it was made.
    pub at: DateTime<Utc>,
    /// When the next attempt is due, if any is left after a failure.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Failures in a row that mark an endpoint failing.
    pub failure_threshold: i64,
}

/// The outbox's backlog: deliveries still pending, and the age of the oldest.
#[derive(Debug, Clone, Copy, Default)]
pub struct Backlog {
    /// Pending deliveries.
    pub pending: i64,
    /// When the oldest pending delivery's event was written.
    pub oldest: Option<DateTime<Utc>>,
}

impl Store {
    /// Claims due deliveries to enabled endpoints until `until`, in one statement, within
    /// `room`: the earliest due first, at most `room.total`, and for each endpoint no more
    /// than its room (what this replica's posts to it leave of `room.per_endpoint`), so
    /// one endpoint's backlog cannot take every slot. Rows another replica holds are
    /// passed over: claimed until later, or (PostgreSQL) claimed by a statement racing
    /// this one, whose row lock this one waits out and whose claim it then sees when it
    /// checks the row again. So each delivery is posted by one replica at a time.
    pub async fn claim_deliveries(
        &self,
        master: &MasterKey,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
        room: &Room<'_>,
    ) -> Result<Vec<Claimed>> {
        // Whole microseconds, as both databases store them, so the release at shutdown
        // finds the claim by its value.
        let until = until.trunc_subsecs(6);
        let db = self.db()?;
        let backend = db.get_database_backend();
        let per_endpoint = i64::try_from(room.per_endpoint).unwrap_or(i64::MAX);
        let mut sql = Sql::new(backend);
        sql.push("UPDATE webhook_deliveries SET claimed_until = ").bind(until, "timestamptz");
        // The claimable test again on the row itself: on PostgreSQL a racing claim's rows
        // are checked afresh after its commit, and left alone.
        sql.push(" WHERE state = ").bind(PENDING, "text");
        sql.push(" AND next_attempt_at <= ").bind(now, "timestamptz");
        sql.push(" AND (claimed_until IS NULL OR claimed_until <= ").bind(now, "timestamptz");
        sql.push(") AND id IN (SELECT id FROM (SELECT d.id, d.next_attempt_at, d.endpoint_id, ");
        sql.push("ROW_NUMBER() OVER (PARTITION BY d.endpoint_id ORDER BY d.next_attempt_at, d.id) AS place");
        sql.push(" FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE d.state = ");
        sql.bind(PENDING, "text");
        sql.push(" AND e.enabled AND d.next_attempt_at <= ").bind(now, "timestamptz");
        sql.push(" AND (d.claimed_until IS NULL OR d.claimed_until <= ").bind(now, "timestamptz").push(")");
        let full: Vec<Uuid> =
            room.busy.iter().filter(|(_, posting)| *posting >= room.per_endpoint).map(|(id, _)| *id).collect();
        if !full.is_empty() {
            sql.push(" AND d.endpoint_id NOT IN (");
            for (position, id) in full.iter().enumerate() {
                if position > 0 {
                    sql.push(", ");
                }
                sql.bind(*id, "uuid");
            }
            sql.push(")");
        }
        sql.push(") ranked WHERE place <= ");
        let partial: Vec<(Uuid, i64)> = room
            .busy
            .iter()
            .filter(|(_, posting)| *posting < room.per_endpoint)
            .map(|(id, posting)| (*id, per_endpoint - i64::try_from(*posting).unwrap_or(0)))
            .collect();
        if partial.is_empty() {
            sql.bind(per_endpoint, "bigint");
        } else {
            sql.push("CASE endpoint_id");
            for (id, left) in partial {
                sql.push(" WHEN ").bind(id, "uuid").push(" THEN ").bind(left, "bigint");
            }
            sql.push(" ELSE ").bind(per_endpoint, "bigint").push(" END");
        }
        sql.push(" ORDER BY next_attempt_at, id LIMIT ").bind(i64::try_from(room.total).unwrap_or(i64::MAX), "bigint");
        sql.push(") RETURNING id, event_id, endpoint_id, attempts");
        let rows = db.query_all_raw(sql.statement()).await.map_err(db_error)?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.try_get("", "id").map_err(db_error)?;
            let event_id: Uuid = row.try_get("", "event_id").map_err(db_error)?;
            let endpoint_id: Uuid = row.try_get("", "endpoint_id").map_err(db_error)?;
            let attempts: i64 = row.try_get("", "attempts").map_err(db_error)?;
            claimed.push((id, event_id, endpoint_id, attempts));
        }
        if claimed.is_empty() {
            return Ok(Vec::new());
        }
        let events: HashMap<Uuid, webhook_event::Model> = webhook_event::Entity::find()
            .filter(webhook_event::Column::Id.is_in(claimed.iter().map(|row| row.1)))
            .all(db)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(|row| (row.id, row))
            .collect();
        let endpoints: HashMap<Uuid, webhook_endpoint::Model> = webhook_endpoint::Entity::find()
            .filter(webhook_endpoint::Column::Id.is_in(claimed.iter().map(|row| row.2)))
            .all(db)
            .await
            .map_err(db_error)?
            .into_iter()
            .map(|row| (row.id, row))
            .collect();
        let mut due = Vec::with_capacity(claimed.len());
        for (delivery_id, event_id, endpoint_id, attempts) in claimed {
            // Deleted since the claim: its deliveries went with it.
            let (Some(event), Some(endpoint)) = (events.get(&event_id), endpoints.get(&endpoint_id)) else { continue };
            due.push(Claimed {
                delivery_id,
                event_id,
                event_type: event.event_type.clone(),
                payload: event.payload.clone(),
                endpoint_id,
                url: endpoint.url.clone(),
                secret: open_secret(master, endpoint)?,
                attempt: attempts + 1,
                claimed_until: until,
            });
        }
        Ok(due)
    }

    /// Hands back claims this replica holds and will not post (it is stopping), so another
    /// replica, or this one's next start, posts them at once instead of after the lease.
    /// A claim already recorded, or lapsed and taken by another replica, is left alone.
    pub async fn release_claims(&self, claims: &[(i64, DateTime<Utc>)]) -> Result<u64> {
        if claims.is_empty() {
            return Ok(0);
        }
        let mut held = Condition::any();
        for (delivery_id, until) in claims {
            held = held.add(
                Condition::all()
                    .add(webhook_delivery::Column::Id.eq(*delivery_id))
                    .add(webhook_delivery::Column::ClaimedUntil.eq(*until)),
            );
        }
        let released = webhook_delivery::Entity::update_many()
            .col_expr(webhook_delivery::Column::ClaimedUntil, Expr::value(Option::<DateTime<Utc>>::None))
            .filter(held)
            .exec(self.db()?)
            .await
            .map_err(db_error)?;
        Ok(released.rows_affected)
    }

    /// Records an attempt: its row in the endpoint's history, the delivery done, due again
    /// or given up, and the endpoint's run of failures. Moves the delivery on only if no
    /// other attempt was recorded since the claim (a claim that outlived its lease).
    pub async fn record_attempt(&self, claimed: &Claimed, result: &AttemptResult<'_>) -> Result<()> {
        let (status, error, excerpt, delivered) = match result.outcome {
            Outcome::Delivered { status, excerpt } => (Some(*status), String::new(), excerpt.clone(), true),
            Outcome::Failed { status, error, excerpt } => (*status, error.clone(), excerpt.clone(), false),
        };
        let next = if delivered { None } else { result.next_attempt_at };
        let txn = self.begin_write().await?;
        webhook_attempt::Entity::insert(webhook_attempt::ActiveModel {
            id: NotSet,
            event_id: Set(claimed.event_id),
            endpoint_id: Set(claimed.endpoint_id),
            event_type: Set(claimed.event_type.clone()),
            attempt: Set(claimed.attempt),
            attempted_at: Set(result.at),
            status_code: Set(status.map_or(0, i64::from)),
            error: Set(error),
            response_excerpt: Set(excerpt),
            next_attempt_at: Set(next),
        })
        .exec(&txn)
        .await
        .map_err(db_error)?;
        let state = match (delivered, next) {
            (true, _) => DELIVERED,
            (false, Some(_)) => PENDING,
            (false, None) => FAILED,
        };
        let mut update = webhook_delivery::Entity::update_many()
            .col_expr(webhook_delivery::Column::State, Expr::value(state))
            .col_expr(webhook_delivery::Column::Attempts, Expr::value(claimed.attempt))
            .col_expr(webhook_delivery::Column::ClaimedUntil, Expr::value(Option::<DateTime<Utc>>::None));
        if let Some(next) = next {
            update = update.col_expr(webhook_delivery::Column::NextAttemptAt, Expr::value(next));
        }
        update
            .filter(webhook_delivery::Column::Id.eq(claimed.delivery_id))
            .filter(webhook_delivery::Column::Attempts.eq(claimed.attempt - 1))
            .exec(&txn)
            .await
            .map_err(db_error)?;
        let endpoint =
            webhook_endpoint::Entity::update_many().filter(webhook_endpoint::Column::Id.eq(claimed.endpoint_id));
        let endpoint = if delivered {
            endpoint
                .col_expr(webhook_endpoint::Column::ConsecutiveFailures, Expr::value(0_i64))
                .col_expr(webhook_endpoint::Column::Failing, Expr::value(false))
        } else {
            let failures = Expr::col(webhook_endpoint::Column::ConsecutiveFailures).add(1_i64);
            endpoint
                .col_expr(webhook_endpoint::Column::ConsecutiveFailures, failures.clone())
                .col_expr(webhook_endpoint::Column::Failing, failures.gte(result.failure_threshold))
        };
        endpoint.exec(&txn).await.map_err(db_error)?;
        txn.commit().await.map_err(db_error)
    }

    /// The deliveries still pending, and when the oldest one's event was written.
    pub async fn outbox_backlog(&self) -> Result<Backlog> {
        let db = self.db()?;
        let row = webhook_delivery::Entity::find()
            .select_only()
            .column_as(webhook_delivery::Column::Id.count(), "pending")
            .column_as(webhook_delivery::Column::CreatedAt.min(), "oldest")
            .filter(webhook_delivery::Column::State.eq(PENDING))
            .into_tuple::<(i64, Option<DateTime<Utc>>)>()
            .one(db)
            .await
            .map_err(db_error)?;
        let (pending, oldest) = row.unwrap_or_default();
        Ok(Backlog { pending, oldest })
    }

    /// Events written so far, by type (every replica's).
    pub async fn events_by_type(&self) -> Result<Vec<(String, i64)>> {
        webhook_event::Entity::find()
            .select_only()
            .column(webhook_event::Column::EventType)
            .column_as(webhook_event::Column::Id.count(), "events")
            .group_by(webhook_event::Column::EventType)
            .into_tuple::<(String, i64)>()
            .all(self.db()?)
            .await
            .map_err(db_error)
    }
}

/// Queues event `event_id` for endpoint `endpoint_id` again, due now.
pub(crate) async fn requeue(
    txn: &DatabaseTransaction,
    event_id: Uuid,
    endpoint_id: Uuid,
    now: DateTime<Utc>,
) -> Result<()> {
    webhook_event::Entity::find_by_id(event_id)
        .one(txn)
        .await
        .map_err(db_error)?
        .ok_or_else(|| Error::NotFound { kind: "event", id: event_id.to_string() })?;
    let reset = webhook_delivery::Entity::update_many()
        .col_expr(webhook_delivery::Column::State, Expr::value(PENDING))
        .col_expr(webhook_delivery::Column::NextAttemptAt, Expr::value(now))
        .col_expr(webhook_delivery::Column::ClaimedUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .filter(webhook_delivery::Column::EventId.eq(event_id))
        .filter(webhook_delivery::Column::EndpointId.eq(endpoint_id))
        .exec(txn)
        .await
        .map_err(db_error)?;
    if reset.rows_affected == 0 {
        webhook_delivery::Entity::insert(new_delivery(event_id, endpoint_id, now)).exec(txn).await.map_err(db_error)?;
    }
    Ok(())
}
