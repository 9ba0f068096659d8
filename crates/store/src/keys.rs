//! API keys: the records the verification cache holds, and the reads of keys.

mod quota;
mod write;

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock},
};

use bytes::Bytes;

use chrono::{DateTime, Utc};
use keyward_core::{
    Error,
    error::Result,
    model::{ApiKey, KeyStatus, ShownStatus},
    policy::Reach,
    secret::SecretHash,
};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, ExprTrait, FromQueryResult, QueryFilter, QueryOrder, QueryResult,
    QuerySelect,
};
use uuid::Uuid;

pub(crate) use self::write::lock_target;
pub use self::write::{KeyUpdate, NewSecret};
use crate::{
    Store,
    convert::to_domain,
    db::db_error,
    entity::api_key,
    lookup::{Read, SECRET_EXPIRES_AT, SECRET_HASH},
    roles::{KeyRow, with_roles},
};

/// A key with every secret that can still find it, as the verification cache holds it.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// The key, shared with the callers and answers that use it.
    pub key: Arc<ApiKey>,
    /// Its secrets' keyed hashes and their expiries (set during rotation grace periods).
    pub secrets: Vec<StoredSecret>,
    /// The key's protobuf encoding, made by the first answer that sends it: answers from
    /// the cache encode a key once, not per call. A record is replaced, never changed,
    /// so the encoding cannot go stale but by the clock: it is of the key before its
    /// expiry, and an answer after it encodes the key afresh.
    pub encoded_key: OnceLock<Bytes>,
}

/// One stored secret of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSecret {
    /// Keyed hash.
    pub hash: SecretHash,
    /// When it stops verifying, if it does.
    pub expires_at: Option<DateTime<Utc>>,
}

impl KeyRecord {
    /// The secret with this hash, if the key still has it.
    pub fn secret(&self, hash: &SecretHash) -> Option<&StoredSecret> {
        self.secrets.iter().find(|secret| secret.hash == *hash)
    }
}

/// Filters and position of one ListApiKeys page.
#[derive(Debug, Clone)]
pub struct ListQuery {
    /// Keys the caller may see.
    pub reach: Reach,
    /// Only this owner.
    pub owner: Option<String>,
    /// Only this organisation.
    pub organization_id: Option<String>,
    /// Only this environment.
    pub environment: Option<String>,
    /// Only keys reading this status at `now`.
    pub status: Option<ShownStatus>,
    /// When the status filter tells active keys from expired ones.
    pub now: DateTime<Utc>,
    /// Include revoked keys.
    pub show_revoked: bool,
    /// Start after this key number.
    pub after: Option<i64>,
    /// Page size.
    pub limit: u64,
}

impl Store {
    /// The key one of whose secrets hashes to `hash`, with all its secrets: one indexed read.
    pub async fn find_record_by_secret(&self, hash: &SecretHash) -> Result<Option<KeyRecord>> {
        self.find_record(Read::KeyBySecret, hash.to_hex().into()).await
    }

    /// The key with this id and all its secrets.
    pub async fn find_record_by_id(&self, id: Uuid) -> Result<Option<KeyRecord>> {
        self.find_record(Read::KeyById, id.into()).await
    }

    /// Every key one of whose secrets hashes to one of `hashes`, with all its secrets:
    /// one statement for them all. A hash no key has finds nothing.
    pub async fn find_records_by_secrets(&self, hashes: &[SecretHash]) -> Result<Vec<KeyRecord>> {
        if hashes.is_empty() {
            return Ok(Vec::new());
        }
        let hexes: Vec<String> = hashes.iter().map(SecretHash::to_hex).collect();
        let list = serde_json::to_string(&hexes).map_err(Error::internal)?;
        self.count_lookup();
        let rows = self.lookup(Read::KeysBySecrets, list.into()).await?;
        let mut by_key: HashMap<Uuid, Vec<&QueryResult>> = HashMap::new();
        for row in &rows {
            by_key.entry(row.try_get("", "id").map_err(db_error)?).or_default().push(row);
        }
        by_key.into_values().filter_map(|rows| record_from_rows(&rows).transpose()).collect()
    }

    async fn find_record(&self, read: Read, value: sea_orm::Value) -> Result<Option<KeyRecord>> {
        self.count_lookup();
        let rows = self.lookup(read, value).await?;
        record_from_rows(&rows.iter().collect::<Vec<_>>())
    }

    /// The key with this id, if the reach covers it.
    pub async fn get(&self, id: Uuid, reach: &Reach) -> Result<ApiKey> {
        find_in_reach(self.db()?, id, reach).await
    }

    /// The id of the key with this number; NOT_FOUND when there is none.
    pub async fn id_by_number(&self, number: i64) -> Result<Uuid> {
        let row = api_key::Entity::find_by_id(number).one(self.db()?).await.map_err(db_error)?;
        row.map(|row| row.id).ok_or_else(|| Error::key_not_found(number.to_string()))
    }

    /// One page of keys in `number` order.
    pub async fn list(&self, query: &ListQuery) -> Result<Vec<ApiKey>> {
        let mut select = api_key::Entity::find().order_by_asc(api_key::Column::Number).limit(query.limit);
        match &query.reach {
            Reach::All => {}
            Reach::Owner(owner) => select = select.filter(api_key::Column::Owner.eq(owner.as_str())),
            Reach::Organization { id, subject } => {
                select = select.filter(
                    api_key::Column::OrganizationId.eq(id.as_str()).or(api_key::Column::Owner.eq(subject.as_str())),
                );
            }
        }
        if let Some(owner) = &query.owner {
            select = select.filter(api_key::Column::Owner.eq(owner.as_str()));
        }
        if let Some(organization) = &query.organization_id {
            select = select.filter(api_key::Column::OrganizationId.eq(organization.as_str()));
        }
        if let Some(environment) = &query.environment {
            select = select.filter(api_key::Column::Environment.eq(environment.as_str()));
        }
        // As `ApiKey::status_at` reads a key: only an active one is expired, at its expiry.
        let active = api_key::Column::Status.eq(KeyStatus::Active.as_str());
        match query.status {
            Some(ShownStatus::Active) => {
                let unexpired = api_key::Column::ExpiresAt.is_null().or(api_key::Column::ExpiresAt.gt(query.now));
                select = select.filter(active.and(unexpired));
            }
            Some(ShownStatus::Expired) => select = select.filter(active.and(api_key::Column::ExpiresAt.lte(query.now))),
            Some(ShownStatus::Inactive) => {
                select = select.filter(api_key::Column::Status.eq(KeyStatus::Inactive.as_str()));
            }
            Some(ShownStatus::Revoked) => {
                select = select.filter(api_key::Column::Status.eq(KeyStatus::Revoked.as_str()))
            }
            None if !query.show_revoked => {
                select = select.filter(api_key::Column::Status.ne(KeyStatus::Revoked.as_str()));
            }
            None => {}
        }
        if let Some(after) = query.after {
            select = select.filter(api_key::Column::Number.gt(after));
        }
        let db = self.db()?;
        let rows =
            with_roles(select, db.get_database_backend()).into_model::<KeyRow>().all(db).await.map_err(db_error)?;
        rows.into_iter().map(KeyRow::into_key).collect()
    }

    /// Whether an active, unexpired key holds exactly the `admin` scope. The LIKE only
    /// narrows the rows read (it also matches `x"admin` and, on SQLite, `ADMIN`); the
    /// decoded scopes decide.
    pub async fn has_live_admin(&self, now: DateTime<Utc>) -> Result<bool> {
        let candidates = api_key::Entity::find()
            .filter(api_key::Column::Status.eq(KeyStatus::Active.as_str()))
            .filter(api_key::Column::Scopes.like("%admin%"))
            .filter(api_key::Column::ExpiresAt.is_null().or(api_key::Column::ExpiresAt.gt(now)))
            .all(self.db()?)
            .await
            .map_err(db_error)?;
        for row in candidates {
            if to_domain(row)?.scopes.contains(keyward_core::policy::SCOPE_ADMIN) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The key of rows of one key read (each the key with one of its secrets) with every
/// secret it was returned with; none when no row came back.
fn record_from_rows(rows: &[&QueryResult]) -> Result<Option<KeyRecord>> {
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let mut secrets = Vec::with_capacity(rows.len());
    for row in rows {
        let hash: String = row.try_get("", SECRET_HASH).map_err(db_error)?;
        let hash =
            SecretHash::from_hex(&hash).ok_or_else(|| Error::internal("stored secret_hash is not 64 hex digits"))?;
        secrets.push(StoredSecret { hash, expires_at: row.try_get("", SECRET_EXPIRES_AT).map_err(db_error)? });
    }
    let key = KeyRow::from_query_result(first, "").map_err(db_error)?.into_key()?;
    Ok(Some(KeyRecord { key: Arc::new(key), secrets, encoded_key: OnceLock::new() }))
}

/// The key with this id, holding its roles.
pub(crate) async fn find_row(conn: &impl ConnectionTrait, id: Uuid) -> Result<ApiKey> {
    let select = with_roles(api_key::Entity::find().filter(api_key::Column::Id.eq(id)), conn.get_database_backend());
    let row = select.into_model::<KeyRow>().one(conn).await.map_err(db_error)?;
    row.ok_or_else(|| Error::key_not_found(id.to_string()))?.into_key()
}

pub(crate) async fn find_in_reach(conn: &impl ConnectionTrait, id: Uuid, reach: &Reach) -> Result<ApiKey> {
    let key = find_row(conn, id).await?;
    if reach.covers(&key) { Ok(key) } else { Err(Error::key_not_found(id.to_string())) }
}
