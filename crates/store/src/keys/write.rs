//! Key mutations: create, update, delete, undelete and rotate, each one transaction in
//! its [`Envelope`].

use std::time::Duration;

use chrono::{DateTime, Utc};
use keyward_core::{
    Error,
    cases::{Restore, restorable},
    credit::Credit,
    error::Result,
    model::{ApiKey, AuditAction, KeyPatch, KeyStatus, NewApiKey},
    policy::Authority,
};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbErr, EntityTrait, ExprTrait, QueryFilter, QuerySelect, SqlErr,
    sea_query::Expr,
};
use uuid::Uuid;

use super::{
    find_row,
    quota::{Arrival, enforce_quota, release},
};
use crate::{
    Store, alerts,
    convert::to_row,
    db::db_error,
    entity::{api_key, api_key_secret, credit_balance, credit_refill},
    envelope::{Claim, Envelope, Mutation},
    ledger, refill,
    roles::{KeyRow, find_roles, link_roles, require_roles, with_roles},
};

/// One UpdateApiKey: field changes, credit deltas and a new secret, applied together.
#[derive(Debug, Clone, Copy)]
pub struct KeyUpdate<'a> {
    /// Field changes.
    pub patch: &'a KeyPatch,
    /// Credit deltas, each unit once; empty for none.
    pub credit_deltas: &'a [Credit],
    /// Ledger reason of the deltas.
    pub credit_reason: &'a str,
    /// A secret to install, if any.
    pub secret: Option<&'a NewSecret>,
    /// The judgement of a revoked key's return, asked when the patch sets its status.
    pub restore: &'a Restore,
}

pub use keyward_core::model::NewSecret;

impl Store {
    /// Inserts a key and its secret, unless its owner already holds `max_live_keys` live
    /// keys in its environment. A replayed request id fails with ALREADY_EXISTS.
    pub async fn create(&self, new: NewApiKey, max_live_keys: i64, mutation: &Mutation) -> Result<ApiKey> {
        let txn = self.begin_write().await?;
        let key = &new.key;
        let envelope = Envelope::creating(mutation, AuditAction::CreateKey, key.id);
        if let Claim::Replay = envelope.claim(&txn).await? {
            return Err(envelope.already_applied(&txn).await?);
        }
        enforce_quota(&txn, &key.owner, &key.environment, max_live_keys, mutation.now, Arrival::Joins).await?;
        let inserted = api_key::Entity::insert(to_row(key)?).exec(&txn).await.map_err(db_error)?;
        api_key_secret::Entity::insert(api_key_secret::ActiveModel {
            secret_hash: Set(new.secret_hash.to_hex()),
            hash_version: Set(new.hash_version),
            key_id: Set(key.id),
            created_at: Set(mutation.now),
            expires_at: Set(None),
        })
        .exec(&txn)
        .await
        .map_err(secret_insert_error)?;
        ledger::initialize(&txn, key.id, &new.credits, mutation).await?;
        refill::replace_refills(&txn, key.id, &new.refills, mutation.now).await?;
        alerts::replace_thresholds(&txn, key.id, &new.low_thresholds).await?;
        alerts::settle(&txn, &[key.id], mutation.now).await?;
        let roles = require_roles(&txn, &key.owner, &key.roles).await?;
        link_roles(&txn, key.id, &roles).await?;
        let created = find_row(&txn, key.id).await?;
        // The scopes were judged from the roles as read before this transaction; a role
        // changed since would grant what was not judged.
        if created.effective_scopes != key.effective_scopes {
            return Err(Error::FailedPrecondition {
                reason: "ROLE_CHANGED",
                message: "a role of the key changed while it was being created; retry the request".to_owned(),
            });
        }
        envelope.record_key(&txn, &created, None).await?;
        txn.commit().await.map_err(db_error)?;
        debug_assert_eq!(created.number, inserted.last_insert_id);
        Ok(created)
    }

    /// Applies one update to a key the authority admits, in one transaction: the field
    /// changes, credit deltas (all or none, with their ledger entries) and a new secret.
    /// The row is locked first, so a change the caller was told succeeded sticks, and
    /// the caller must be able to grant the key both as it was and as it becomes. A key
    /// that comes back to life (brought back from revoked, or its expiry lifted) must fit
    /// its owner's quota, which `quota` gives per environment. A revoked key is refused
    /// with FAILED_PRECONDITION unless the patch sets its status and `update.restore`
    /// admits bringing it back.
    pub async fn update(
        &self,
        id: Uuid,
        authority: &Authority,
        update: &KeyUpdate<'_>,
        quota: &(dyn Fn(&str) -> i64 + Sync),
        mutation: &Mutation,
    ) -> Result<ApiKey> {
        let txn = self.begin_write().await?;
        let key = lock_target(&txn, id, authority).await?;
        let envelope = Envelope::of(mutation, AuditAction::UpdateKey, id);
        if let Claim::Replay = envelope.claim(&txn).await? {
            return Ok(key);
        }
        let restoring = key.status == KeyStatus::Revoked && update.patch.status.is_some();
        if restoring {
            update.restore.admit(&key, mutation.now)?;
        }
        let mut next = update.patch.apply(&key, mutation.now)?;
        // The key as it becomes holds its roles' scopes as they are now: the ceiling rule
        // judges them with its own.
        let roles = match &update.patch.roles {
            Some(names) => require_roles(&txn, &next.owner, names).await?,
            None => find_roles(&txn, &next.owner, &key.roles).await?,
        };
        next.hold_roles(roles.iter().map(|role| (role.name.as_str(), &role.scopes)));
        authority.admit_outcome(&next)?;
        let arrival = if restoring {
            Some(Arrival::Joins)
        } else {
            (key.is_expired(mutation.now) && !next.is_expired(mutation.now)).then_some(Arrival::Revives)
        };
        if let Some(arrival) = arrival {
            enforce_quota(&txn, &key.owner, &key.environment, quota(&key.environment), mutation.now, arrival).await?;
        }
        if next != key {
            let mut row = to_row(&next)?;
            row.number = NotSet;
            row.id = NotSet;
            row.last_used_at = NotSet;
            api_key::Entity::update_many()
                .set(row)
                .filter(api_key::Column::Id.eq(id))
                .exec(&txn)
                .await
                .map_err(db_error)?;
        }
        if update.patch.roles.is_some() {
            link_roles(&txn, id, &roles).await?;
        }
        if let Some(refills) = &update.patch.refills {
            refill::replace_refills(&txn, id, refills, mutation.now).await?;
        }
        if let Some(thresholds) = &update.patch.low_thresholds {
            alerts::replace_thresholds(&txn, id, thresholds).await?;
        }
        if !update.credit_deltas.is_empty() {
            ledger::apply_deltas(&txn, id, update.credit_deltas, update.credit_reason, mutation).await?;
        }
        if update.patch.low_thresholds.is_some() || !update.credit_deltas.is_empty() {
            alerts::settle(&txn, &[id], mutation.now).await?;
        }
        if let Some(secret) = update.secret {
            install_secret(&txn, id, secret, mutation.now).await?;
        }
        self.announce(&txn, id).await?;
        let updated = find_row(&txn, id).await?;
        envelope.record_key(&txn, &updated, Some(&key)).await?;
        txn.commit().await.map_err(db_error)?;
        Ok(updated)
    }

    /// Revokes a key the authority admits (soft delete).
    pub async fn delete(&self, id: Uuid, authority: &Authority, mutation: &Mutation) -> Result<ApiKey> {
        let txn = self.begin_write().await?;
        let key = lock_target(&txn, id, authority).await?;
        let envelope = Envelope::of(mutation, AuditAction::DeleteKey, id);
        if let Claim::Replay = envelope.claim(&txn).await? {
            return Ok(key);
        }
        let result = api_key::Entity::update_many()
            .col_expr(api_key::Column::Status, Expr::value(KeyStatus::Revoked.as_str()))
            .col_expr(api_key::Column::DeletedAt, Expr::value(mutation.now))
            .col_expr(api_key::Column::UpdatedAt, Expr::value(mutation.now))
            .filter(api_key::Column::Id.eq(id))
            .filter(api_key::Column::Status.ne(KeyStatus::Revoked.as_str()))
            .exec(&txn)
            .await
            .map_err(db_error)?;
        if result.rows_affected == 0 {
            return Err(Error::FailedPrecondition {
                reason: "API_KEY_REVOKED",
                message: format!("API key {id} is already revoked"),
            });
        }
        release(&txn, &key.owner, &key.environment).await?;
        self.announce(&txn, id).await?;
        let deleted = find_row(&txn, id).await?;
        envelope.record_key(&txn, &deleted, None).await?;
        txn.commit().await.map_err(db_error)?;
        Ok(deleted)
    }

    /// Restores a key the authority admits, revoked less than `retention` ago, within its
    /// owner's quota (`quota` per environment).
    pub async fn undelete(
        &self,
        id: Uuid,
        authority: &Authority,
        retention: Duration,
        quota: &(dyn Fn(&str) -> i64 + Sync),
        mutation: &Mutation,
    ) -> Result<ApiKey> {
        let txn = self.begin_write().await?;
        let key = lock_target(&txn, id, authority).await?;
        let envelope = Envelope::of(mutation, AuditAction::UndeleteKey, id);
        if let Claim::Replay = envelope.claim(&txn).await? {
            return Ok(key);
        }
        restorable(&key, retention, mutation.now)?;
        let max_live_keys = quota(&key.environment);
        enforce_quota(&txn, &key.owner, &key.environment, max_live_keys, mutation.now, Arrival::Joins).await?;
        let result = api_key::Entity::update_many()
            .col_expr(api_key::Column::Status, Expr::value(KeyStatus::Active.as_str()))
            .col_expr(api_key::Column::DeletedAt, Expr::value(Option::<DateTime<Utc>>::None))
            .col_expr(api_key::Column::UpdatedAt, Expr::value(mutation.now))
            .filter(api_key::Column::Id.eq(id))
            .filter(api_key::Column::Status.eq(KeyStatus::Revoked.as_str()))
            .exec(&txn)
            .await
            .map_err(db_error)?;
        if result.rows_affected == 0 {
            return Err(Error::Aborted { message: format!("API key {id} changed during undelete; retry") });
        }
        self.announce(&txn, id).await?;
        let restored = find_row(&txn, id).await?;
        envelope.record_key(&txn, &restored, None).await?;
        txn.commit().await.map_err(db_error)?;
        Ok(restored)
    }

    /// Installs a new secret for a key the authority admits; its old secrets verify until
    /// `secret.old_secrets_until`. A replayed request id fails with ALREADY_EXISTS.
    pub async fn rotate(
        &self,
        id: Uuid,
        authority: &Authority,
        secret: &NewSecret,
        mutation: &Mutation,
    ) -> Result<ApiKey> {
        let txn = self.begin_write().await?;
        let key = lock_target(&txn, id, authority).await?;
        let holds_credits = key.usage_limited && holds_credits(&txn, id).await?;
        authority.admit_secret(&key, holds_credits)?;
        let envelope = Envelope::of(mutation, AuditAction::RotateKey, id);
        if let Claim::Replay = envelope.claim(&txn).await? {
            return Err(envelope.already_applied(&txn).await?);
        }
        if key.status == KeyStatus::Revoked {
            return Err(Error::FailedPrecondition {
                reason: "API_KEY_REVOKED",
                message: format!("API key {id} is revoked; undelete it before rotating"),
            });
        }
        install_secret(&txn, id, secret, mutation.now).await?;
        self.announce(&txn, id).await?;
        let rotated = find_row(&txn, id).await?;
        envelope.record_key(&txn, &rotated, None).await?;
        txn.commit().await.map_err(db_error)?;
        Ok(rotated)
    }
}

/// The target of a mutation, read under a row lock (PostgreSQL; SQLite's write
/// transaction already excludes other writers) and admitted by the caller's authority.
pub(crate) async fn lock_target(txn: &DatabaseTransaction, id: Uuid, authority: &Authority) -> Result<ApiKey> {
    let select = with_roles(api_key::Entity::find().filter(api_key::Column::Id.eq(id)), txn.get_database_backend());
    let row = select.lock_exclusive().into_model::<KeyRow>().one(txn).await.map_err(db_error)?;
    let key = row.ok_or_else(|| Error::key_not_found(id.to_string()))?.into_key()?;
    authority.admit(&key)?;
    Ok(key)
}

/// Whether key `id` holds credits: a positive balance in some unit, or a refill schedule.
async fn holds_credits(txn: &DatabaseTransaction, id: Uuid) -> Result<bool> {
    let balance = credit_balance::Entity::find()
        .filter(credit_balance::Column::KeyId.eq(id))
        .filter(credit_balance::Column::Balance.gt(0))
        .one(txn)
        .await
        .map_err(db_error)?;
    if balance.is_some() {
        return Ok(true);
    }
    let refill =
        credit_refill::Entity::find().filter(credit_refill::Column::KeyId.eq(id)).one(txn).await.map_err(db_error)?;
    Ok(refill.is_some())
}

/// Makes `secret` the key's current secret; its other secrets verify until
/// `secret.old_secrets_until` (or stop now).
async fn install_secret(txn: &DatabaseTransaction, id: Uuid, secret: &NewSecret, now: DateTime<Utc>) -> Result<()> {
    let until = secret.old_secrets_until;
    if until <= now {
        api_key_secret::Entity::delete_many()
            .filter(api_key_secret::Column::KeyId.eq(id))
            .exec(txn)
            .await
            .map_err(db_error)?;
    } else {
        api_key_secret::Entity::update_many()
            .col_expr(api_key_secret::Column::ExpiresAt, Expr::value(until))
            .filter(api_key_secret::Column::KeyId.eq(id))
            .filter(api_key_secret::Column::ExpiresAt.is_null().or(api_key_secret::Column::ExpiresAt.gt(until)))
            .exec(txn)
            .await
            .map_err(db_error)?;
    }
    api_key_secret::Entity::insert(api_key_secret::ActiveModel {
        secret_hash: Set(secret.hash.to_hex()),
        hash_version: Set(secret.hash_version),
        key_id: Set(id),
        created_at: Set(now),
        expires_at: Set(None),
    })
    .exec(txn)
    .await
    .map_err(secret_insert_error)?;
    api_key::Entity::update_many()
        .col_expr(api_key::Column::Mask, Expr::value(secret.mask.as_str()))
        .col_expr(api_key::Column::UpdatedAt, Expr::value(now))
        .filter(api_key::Column::Id.eq(id))
        .exec(txn)
        .await
        .map_err(db_error)?;
    Ok(())
}

/// The error of inserting a secret hash: a hash another key (or this one, within a
/// rotation grace period) already holds means an imported secret is taken.
fn secret_insert_error(err: DbErr) -> Error {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => Error::AlreadyExists {
            reason: "SECRET_ALREADY_EXISTS",
            message: "another API key already has this secret; choose another import_secret".to_owned(),
            resource_id: None,
        },
        Some(_) | None => db_error(err),
    }
}
