//! Webhook endpoints: their rows, with the signing secret sealed under the master key
//! and bound to the endpoint's id, and the history of their deliveries.

use chrono::{DateTime, Utc};
use keyward_core::{
    Error,
    crypto::MasterKey,
    error::Result,
    model::AuditAction,
    webhook::{Endpoint, EndpointPatch, Subscription},
};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::{
    Store,
    db::db_error,
    entity::{webhook_attempt, webhook_endpoint},
    envelope::{Envelope, Mutation},
    outbox::requeue,
};

/// One attempt of one delivery, as ListWebhookDeliveries shows it.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// Position in the history: later attempts have larger ids.
    pub id: i64,
    /// The event.
    pub event_id: Uuid,
    /// Its type.
    pub event_type: String,
    /// Which attempt, from 1.
    pub attempt: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// The receiver's status; 0 if none.
    pub status_code: i64,
    /// Why it failed; empty on success.
    pub error: String,
    /// The start of the receiver's body.
    pub excerpt: String,
    /// When the next attempt is due, if one is.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// Filters and position of one page of an endpoint's attempts.
#[derive(Debug, Clone)]
pub struct AttemptQuery {
    /// The endpoint.
    pub endpoint_id: Uuid,
    /// Only this event.
    pub event_id: Option<Uuid>,
    /// Attempts before this id only.
    pub before: Option<i64>,
    /// Page size.
    pub limit: u64,
}

fn not_found(id: Uuid) -> Error {
    Error::NotFound { kind: "webhook endpoint", id: id.to_string() }
}

pub(crate) fn stored_types(text: &str) -> Result<Subscription> {
    let names: Vec<String> = serde_json::from_str(text).map_err(Error::internal)?;
    Subscription::from_names(names.iter().map(String::as_str))
        .ok_or_else(|| Error::internal(format!("stored event types {names:?} are not a subscription")))
}

fn types_text(types: &Subscription) -> Result<String> {
    serde_json::to_string(&types.names()).map_err(Error::internal)
}

/// The signing secret of an endpoint row, in clear.
pub(crate) fn open_secret(master: &MasterKey, row: &webhook_endpoint::Model) -> Result<SecretString> {
    let lost = |message: String| Error::DataLoss { reason: "CIPHERTEXT_INVALID", message };
    if row.master_key_id != master.id() {
        return Err(Error::DataLoss {
            reason: "SEALED_UNDER_ANOTHER_MASTER_KEY",
            message: format!("the secret of webhook endpoint {} was encrypted under another master key", row.id),
        });
    }
    let secret = master
        .open(&row.sealed_secret, row.id.as_bytes())
        .map_err(|_| lost(format!("the secret of webhook endpoint {} does not decrypt", row.id)))?;
    String::from_utf8(secret)
        .map(SecretString::from)
        .map_err(|_| lost(format!("the secret of webhook endpoint {} is not UTF-8", row.id)))
}

fn to_endpoint(row: webhook_endpoint::Model) -> Result<Endpoint> {
    let webhook_endpoint::Model {
        id,
        url,
        description,
        event_types,
        enabled,
        sealed_secret: _,
        master_key_id: _,
        consecutive_failures,
        failing,
        created_at,
        updated_at,
    } = row;
    Ok(Endpoint {
        id,
        url,
        description,
        event_types: stored_types(&event_types)?,
        enabled,
        failing,
        consecutive_failures,
        created_at,
        updated_at,
    })
}

async fn find_row(conn: &impl ConnectionTrait, id: Uuid) -> Result<webhook_endpoint::Model> {
    webhook_endpoint::Entity::find_by_id(id).one(conn).await.map_err(db_error)?.ok_or_else(|| not_found(id))
}

impl Store {
    /// Stores a new endpoint with its signing secret sealed.
    pub async fn create_endpoint(
        &self,
        master: &MasterKey,
        endpoint: &Endpoint,
        secret: &SecretString,
        mutation: &Mutation,
    ) -> Result<Endpoint> {
        let txn = self.begin_write().await?;
        webhook_endpoint::Entity::insert(webhook_endpoint::ActiveModel {
            id: Set(endpoint.id),
            url: Set(endpoint.url.clone()),
            description: Set(endpoint.description.clone()),
            event_types: Set(types_text(&endpoint.event_types)?),
            enabled: Set(endpoint.enabled),
            sealed_secret: Set(master.seal(secret.expose_secret().as_bytes(), endpoint.id.as_bytes())),
            master_key_id: Set(master.id().to_owned()),
            consecutive_failures: Set(0),
            failing: Set(false),
            created_at: Set(mutation.now),
            updated_at: Set(mutation.now),
        })
        .exec(&txn)
        .await
        .map_err(db_error)?;
        Envelope::of(mutation, AuditAction::CreateWebhookEndpoint, endpoint.id).record(&txn).await?;
        let created = to_endpoint(find_row(&txn, endpoint.id).await?)?;
        txn.commit().await.map_err(db_error)?;
        Ok(created)
    }

    /// One endpoint.
    pub async fn endpoint(&self, id: Uuid) -> Result<Endpoint> {
        to_endpoint(find_row(self.db()?, id).await?)
    }

    /// Endpoints in creation order, after `after`.
    pub async fn endpoints(&self, after: Option<Uuid>, limit: u64) -> Result<Vec<Endpoint>> {
        let mut select = webhook_endpoint::Entity::find().order_by_asc(webhook_endpoint::Column::Id).limit(limit);
        if let Some(after) = after {
            select = select.filter(webhook_endpoint::Column::Id.gt(after));
        }
        select.all(self.db()?).await.map_err(db_error)?.into_iter().map(to_endpoint).collect()
    }

    /// Applies `patch` to an endpoint.
    pub async fn update_endpoint(&self, id: Uuid, patch: &EndpointPatch, mutation: &Mutation) -> Result<Endpoint> {
        let txn = self.begin_write().await?;
        let current = to_endpoint(find_row(&txn, id).await?)?;
        let next = patch.apply(&current, mutation.now);
        webhook_endpoint::Entity::update_many()
            .set(webhook_endpoint::ActiveModel {
                url: Set(next.url.clone()),
                description: Set(next.description.clone()),
                event_types: Set(types_text(&next.event_types)?),
                enabled: Set(next.enabled),
                updated_at: Set(mutation.now),
                ..Default::default()
            })
            .filter(webhook_endpoint::Column::Id.eq(id))
            .exec(&txn)
            .await
            .map_err(db_error)?;
        Envelope::of(mutation, AuditAction::UpdateWebhookEndpoint, id).record(&txn).await?;
        let updated = to_endpoint(find_row(&txn, id).await?)?;
        txn.commit().await.map_err(db_error)?;
        Ok(updated)
    }

    /// Deletes an endpoint with its deliveries and their history.
    pub async fn delete_endpoint(&self, id: Uuid, mutation: &Mutation) -> Result<()> {
        let txn = self.begin_write().await?;
        let deleted = webhook_endpoint::Entity::delete_by_id(id).exec(&txn).await.map_err(db_error)?;
        if deleted.rows_affected == 0 {
            return Err(not_found(id));
        }
        Envelope::of(mutation, AuditAction::DeleteWebhookEndpoint, id).record(&txn).await?;
        txn.commit().await.map_err(db_error)
    }

    /// Replaces an endpoint's signing secret.
    pub async fn rotate_endpoint_secret(
        &self,
        master: &MasterKey,
        id: Uuid,
        secret: &SecretString,
        mutation: &Mutation,
    ) -> Result<Endpoint> {
        let txn = self.begin_write().await?;
        let updated = webhook_endpoint::Entity::update_many()
            .set(webhook_endpoint::ActiveModel {
                sealed_secret: Set(master.seal(secret.expose_secret().as_bytes(), id.as_bytes())),
                master_key_id: Set(master.id().to_owned()),
                updated_at: Set(mutation.now),
                ..Default::default()
            })
            .filter(webhook_endpoint::Column::Id.eq(id))
            .exec(&txn)
            .await
            .map_err(db_error)?;
        if updated.rows_affected == 0 {
            return Err(not_found(id));
        }
        Envelope::of(mutation, AuditAction::RotateWebhookEndpointSecret, id).record(&txn).await?;
        let endpoint = to_endpoint(find_row(&txn, id).await?)?;
        txn.commit().await.map_err(db_error)?;
        Ok(endpoint)
    }

    /// Queues an event for an endpoint again, due now.
    pub async fn redeliver(&self, endpoint_id: Uuid, event_id: Uuid, mutation: &Mutation) -> Result<()> {
        let txn = self.begin_write().await?;
        find_row(&txn, endpoint_id).await?;
        requeue(&txn, event_id, endpoint_id, mutation.now).await?;
        Envelope::of(mutation, AuditAction::RedeliverEvent, endpoint_id).record(&txn).await?;
        txn.commit().await.map_err(db_error)
    }

    /// One page of an endpoint's attempts, newest first.
    pub async fn attempts(&self, query: &AttemptQuery) -> Result<Vec<Attempt>> {
        let db = self.db()?;
        find_row(db, query.endpoint_id).await?;
        let mut select = webhook_attempt::Entity::find()
            .filter(webhook_attempt::Column::EndpointId.eq(query.endpoint_id))
            .order_by_desc(webhook_attempt::Column::Id)
            .limit(query.limit);
        if let Some(event_id) = query.event_id {
            select = select.filter(webhook_attempt::Column::EventId.eq(event_id));
        }
        if let Some(before) = query.before {
            select = select.filter(webhook_attempt::Column::Id.lt(before));
        }
        let rows = select.all(db).await.map_err(db_error)?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let webhook_attempt::Model {
                    id,
                    event_id,
                    endpoint_id: _,
                    event_type,
                    attempt,
                    attempted_at,
                    status_code,
                    error,
                    response_excerpt,
                    next_attempt_at,
                } = row;
                Attempt {
                    id,
                    event_id,
                    event_type,
                    attempt,
                    at: attempted_at,
                    status_code,
                    error,
                    excerpt: response_excerpt,
                    next_attempt_at,
                }
            })
            .collect())
    }

    /// Re-seals every endpoint's secret under `new` inside the master-key rotation.
    pub(crate) async fn reseal_endpoints(
        txn: &sea_orm::DatabaseTransaction,
        old: &MasterKey,
        new: &MasterKey,
    ) -> Result<usize> {
        let rows = webhook_endpoint::Entity::find().all(txn).await.map_err(db_error)?;
        let count = rows.len();
        for row in rows {
            let secret = open_secret(old, &row)?;
            webhook_endpoint::Entity::update_many()
                .col_expr(
                    webhook_endpoint::Column::SealedSecret,
                    sea_orm::sea_query::Expr::value(new.seal(secret.expose_secret().as_bytes(), row.id.as_bytes())),
                )
                .col_expr(webhook_endpoint::Column::MasterKeyId, sea_orm::sea_query::Expr::value(new.id()))
                .filter(webhook_endpoint::Column::Id.eq(row.id))
                .exec(txn)
                .await
                .map_err(db_error)?;
        }
        Ok(count)
    }
}
