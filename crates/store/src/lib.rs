//! keyward's persistence on SQLite and PostgreSQL. Every mutation runs in one short
//! transaction with its audit event and idempotency record; every query inside it goes
//! through the transaction handle.

#![forbid(unsafe_code)]

mod changes;
mod convert;
mod credits;
pub mod entity;
mod rpc_keys;
pub use crate::rpc_keys::RpcKeyQuery;
mod usage;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};
use keyward_core::{
    Error,
    credit::Credit,
    error::Result,
    model::{ApiKey, AuditEvent, KeyPatch, KeyStatus, NewApiKey},
    policy::{Authority, Reach},
    secret::SecretHash,
};
use keyward_migrations::{Migrator, MigratorTrait};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbErr,
    EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait, SqlErr, TransactionOptions,
    TransactionTrait, TryInsertResult,
    sea_query::Expr,
    sqlx::sqlite::SqliteJournalMode,
};
use uuid::Uuid;

pub use crate::{
    changes::{Change, ChangeListener},
    credits::{CreditView, HourlyUsage, LedgerQuery, UsageScope},
    usage::UsageBatch,
};
use crate::{
    convert::{db_error, to_domain, to_row},
    entity::{api_key, api_key_secret, audit_event, idempotency_record, quota_lock},
};

/// The store: a pool of connections to one database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: DatabaseConnection,
    /// Whether the last probe reached the database. While it did not, calls that need
    /// the database fail at once with UNAVAILABLE instead of waiting out the pool.
    reachable: Arc<AtomicBool>,
    probe_timeout: Duration,
    /// PostgreSQL channel on which key changes are announced to every replica.
    notify_channel: Option<Arc<str>>,
    lookup_reads: Arc<AtomicU64>,
}

/// A key with every secret that can still find it, as the verification cache holds it.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// The key, shared with the callers and answers that use it.
    pub key: Arc<ApiKey>,
    /// Its secrets' keyed hashes and their expiries (set during rotation grace periods).
    pub secrets: Vec<StoredSecret>,
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

/// Sizes and timeouts of the connection pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolSettings {
    /// Most connections.
    pub max_connections: u32,
    /// Longest wait for a connection (and for a health probe).
    pub acquire_timeout: Duration,
    /// Longest wait to open a new connection.
    pub connect_timeout: Duration,
}

/// Who is mutating, under which idempotency token, and when.
#[derive(Debug, Clone)]
pub struct Mutation {
    /// Subject recorded in the audit event.
    pub actor: String,
    /// AIP-155 token; a repeat replays the first outcome.
    pub request_id: Option<String>,
    /// The time the mutation takes effect.
    pub now: DateTime<Utc>,
}

/// Mutating operations, as named in audit events and idempotency records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// CreateApiKey.
    Create,
    /// UpdateApiKey.
    Update,
    /// DeleteApiKey.
    Delete,
    /// UndeleteApiKey.
    Undelete,
    /// RotateApiKey.
    Rotate,
    /// CreateRpcProviderKey.
    CreateRpcProviderKey,
    /// UpdateRpcProviderKey.
    UpdateRpcProviderKey,
    /// DeleteRpcProviderKey.
    DeleteRpcProviderKey,
    /// AdjustCredits.
    AdjustCredits,
}

impl Operation {
    /// The RPC name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CreateApiKey",
            Self::Update => "UpdateApiKey",
            Self::Delete => "DeleteApiKey",
            Self::Undelete => "UndeleteApiKey",
            Self::Rotate => "RotateApiKey",
            Self::CreateRpcProviderKey => "CreateRpcProviderKey",
            Self::UpdateRpcProviderKey => "UpdateRpcProviderKey",
            Self::DeleteRpcProviderKey => "DeleteRpcProviderKey",
            Self::AdjustCredits => "AdjustCredits",
        }
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
    /// Only this status.
    pub status: Option<KeyStatus>,
    /// Include revoked keys.
    pub show_revoked: bool,
    /// Start after this key number.
    pub after: Option<i64>,
    /// Page size.
    pub limit: u64,
}

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
}

/// What a rotation installs.
#[derive(Debug, Clone)]
pub struct NewSecret {
    /// Keyed hash of the new secret.
    pub hash: SecretHash,
    /// Version of the hash secret.
    pub hash_version: i64,
    /// Mask of the new secret.
    pub mask: String,
    /// Until when the old secrets keep verifying (`now` ends them at once).
    pub old_secrets_until: DateTime<Utc>,
}

pub(crate) enum Claim {
    Fresh,
    Replay,
}

impl Store {
    /// Connects to `url` (`sqlite://…` or `postgres://…`). A SQLite file is created if
    /// absent and opened in WAL mode. On PostgreSQL, key changes are announced on
    /// `notify_channel`.
    pub async fn connect(url: &str, pool: &PoolSettings, notify_channel: &str) -> Result<Self> {
        let mut options = ConnectOptions::new(url);
        options
            .max_connections(pool.max_connections)
            .min_connections(1)
            .acquire_timeout(pool.acquire_timeout)
            .connect_timeout(pool.connect_timeout)
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(|opts| {
                opts.create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
            })
            .map_sqlx_sqlite_pool_opts(|pool| pool.after_release(|conn, _| Box::pin(async { Ok(reusable(conn)) })))
            .map_sqlx_postgres_pool_opts(|pool| pool.after_release(|conn, _| Box::pin(async { Ok(reusable(conn)) })));
        let db = Database::connect(options).await.map_err(db_error)?;
        let notify_channel =
            (db.get_database_backend() == sea_orm::DbBackend::Postgres).then(|| Arc::from(notify_channel));
        Ok(Self {
            pool: db,
            reachable: Arc::new(AtomicBool::new(true)),
            probe_timeout: pool.acquire_timeout.min(Duration::from_secs(1)),
            notify_channel,
            lookup_reads: Arc::default(),
        })
    }

    /// The pool, unless the last probe found the database unreachable: then UNAVAILABLE
    /// at once, so callers learn it in microseconds rather than after the pool's timeout.
    fn db(&self) -> Result<&DatabaseConnection> {
        if self.reachable.load(Ordering::Acquire) {
            Ok(&self.pool)
        } else {
            Err(Error::Unavailable("the database did not answer the last health probe; retry shortly".into()))
        }
    }

    /// Pings the database (within a second at most) and records the answer:
    /// calls fail fast while it is unreachable and go through again once it answers.
    pub async fn probe(&self) -> bool {
        let answered = matches!(tokio::time::timeout(self.probe_timeout, self.pool.ping()).await, Ok(Ok(())));
        self.reachable.store(answered, Ordering::Release);
        answered
    }

    /// Connections of the pool: (in use, idle).
    pub fn pool_connections(&self) -> (u32, u32) {
        let (size, idle) = if self.notify_channel.is_some() {
            let pool = self.pool.get_postgres_connection_pool();
            (pool.size(), pool.num_idle())
        } else {
            let pool = self.pool.get_sqlite_connection_pool();
            (pool.size(), pool.num_idle())
        };
        let idle = u32::try_from(idle).unwrap_or(u32::MAX);
        (size.saturating_sub(idle), idle)
    }

    /// How many key lookups (by secret or id) reached the database, for tests and metrics.
    pub fn lookup_reads(&self) -> u64 {
        self.lookup_reads.load(Ordering::Relaxed)
    }

    /// Listens for key changes announced by any replica; `None` on SQLite.
    pub async fn change_listener(&self) -> Result<Option<ChangeListener>> {
        match &self.notify_channel {
            Some(channel) => ChangeListener::connect(&self.pool, channel).await.map(Some),
            None => Ok(None),
        }
    }

    /// Announces, on commit of `txn`, that key `id` changed.
    async fn announce(&self, txn: &DatabaseTransaction, id: Uuid) -> Result<()> {
        if let Some(channel) = &self.notify_channel {
            changes::announce(txn, channel, id).await?;
        }
        Ok(())
    }

    /// Applies every pending migration.
    pub async fn migrate(&self) -> Result<()> {
        Migrator::up(&self.pool, None).await.map_err(db_error)
    }

    /// The connection, for tests that inspect tables directly.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.pool
    }

    pub(crate) async fn begin_write(&self) -> Result<DatabaseTransaction> {
        // IMMEDIATE takes SQLite's write lock up front; a deferred transaction that later
        // writes can fail with SQLITE_BUSY when another connection wrote first.
        let options = TransactionOptions {
            sqlite_transaction_mode: Some(sea_orm::SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        };
        self.db()?.begin_with_options(options).await.map_err(db_error)
    }

    /// The key one of whose secrets hashes to `hash`, with all its secrets: one indexed read.
    pub async fn find_record_by_secret(&self, hash: &SecretHash) -> Result<Option<KeyRecord>> {
        self.lookup_reads.fetch_add(1, Ordering::Relaxed);
        let owner_of_hash = sea_orm::sea_query::Query::select()
            .column(api_key_secret::Column::KeyId)
            .from(api_key_secret::Entity)
            .and_where(Expr::col(api_key_secret::Column::SecretHash).eq(hash.to_hex()))
            .to_owned();
        let rows = api_key_secret::Entity::find()
            .filter(api_key_secret::Column::KeyId.in_subquery(owner_of_hash))
            .find_also_related(api_key::Entity)
            .all(self.db()?)
            .await
            .map_err(db_error)?;
        record_from_rows(rows)
    }

    /// The key with this id and all its secrets.
    pub async fn find_record_by_id(&self, id: Uuid) -> Result<Option<KeyRecord>> {
        self.lookup_reads.fetch_add(1, Ordering::Relaxed);
        let rows = api_key_secret::Entity::find()
            .filter(api_key_secret::Column::KeyId.eq(id))
            .find_also_related(api_key::Entity)
            .all(self.db()?)
            .await
            .map_err(db_error)?;
        record_from_rows(rows)
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
        match query.status {
            Some(status) => select = select.filter(api_key::Column::Status.eq(status.as_str())),
            None if !query.show_revoked => {
                select = select.filter(api_key::Column::Status.ne(KeyStatus::Revoked.as_str()));
            }
            None => {}
        }
        if let Some(after) = query.after {
            select = select.filter(api_key::Column::Number.gt(after));
        }
        select.all(self.db()?).await.map_err(db_error)?.into_iter().map(to_domain).collect()
    }

    /// Live (not revoked, not expired) keys of `owner` in `environment`.
    pub async fn count_live(&self, owner: &str, environment: &str, now: DateTime<Utc>) -> Result<i64> {
        count_live(self.db()?, owner, environment, now, None).await
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

    /// Inserts a key and its secret, unless its owner already holds `max_live_keys` live
    /// keys in its environment. A replayed request id fails with ALREADY_EXISTS.
    pub async fn create(&self, new: NewApiKey, max_live_keys: i64, mutation: &Mutation) -> Result<ApiKey> {
        let txn = self.begin_write().await?;
        let key = &new.key;
        if let Claim::Replay = claim(&txn, mutation, Operation::Create, key.id).await? {
            return Err(already_applied(mutation, &txn).await?);
        }
        enforce_quota(&txn, &key.owner, &key.environment, max_live_keys, mutation.now).await?;
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
        credits::initialize(&txn, key.id, &new.credits, &new.refills, mutation).await?;
        audit(&txn, mutation, Operation::Create, key.id).await?;
        let created = find_row(&txn, key.id).await?;
        txn.commit().await.map_err(db_error)?;
        debug_assert_eq!(created.number, inserted.last_insert_id);
        Ok(created)
    }

    /// Applies one update to a key the authority admits, in one transaction: the field
    /// changes, credit deltas (all or none, with their ledger entries) and a new secret.
    /// The row is locked first, so a change the caller was told succeeded sticks, and
    /// the caller must be able to grant the key both as it was and as it becomes. A key
    /// that comes back to life (its expiry lifted) must fit its owner's quota, which
    /// `quota` gives per environment. A revoked key is refused with FAILED_PRECONDITION.
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
        if let Claim::Replay = claim(&txn, mutation, Operation::Update, id).await? {
            return Ok(key);
        }
        let next = update.patch.apply(&key, mutation.now)?;
        authority.admit_outcome(&next)?;
        if key.is_expired(mutation.now) && !next.is_expired(mutation.now) {
            enforce_quota(&txn, &key.owner, &key.environment, quota(&key.environment), mutation.now).await?;
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
        if let Some(refills) = &update.patch.refills {
            credits::replace_refills(&txn, id, refills, mutation.now).await?;
        }
        if !update.credit_deltas.is_empty() {
            credits::apply_deltas(&txn, id, update.credit_deltas, update.credit_reason, mutation).await?;
        }
        if let Some(secret) = update.secret {
            install_secret(&txn, id, secret, mutation.now).await?;
        }
        self.announce(&txn, id).await?;
        audit(&txn, mutation, Operation::Update, id).await?;
        let updated = find_row(&txn, id).await?;
        txn.commit().await.map_err(db_error)?;
        Ok(updated)
    }

    /// Revokes a key the authority admits (soft delete).
    pub async fn delete(&self, id: Uuid, authority: &Authority, mutation: &Mutation) -> Result<ApiKey> {
        let txn = self.begin_write().await?;
        let key = lock_target(&txn, id, authority).await?;
        if let Claim::Replay = claim(&txn, mutation, Operation::Delete, id).await? {
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
        self.announce(&txn, id).await?;
        audit(&txn, mutation, Operation::Delete, id).await?;
        let deleted = find_row(&txn, id).await?;
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
        if let Claim::Replay = claim(&txn, mutation, Operation::Undelete, id).await? {
            return Ok(key);
        }
        let deleted_at = match (key.status, key.deleted_at) {
            (KeyStatus::Revoked, Some(at)) => at,
            (KeyStatus::Revoked, None) | (KeyStatus::Active | KeyStatus::Inactive, _) => {
                return Err(Error::FailedPrecondition {
                    reason: "API_KEY_NOT_REVOKED",
                    message: format!("API key {id} is not revoked; only revoked keys can be undeleted"),
                });
            }
        };
        let retention = chrono::Duration::from_std(retention).map_err(Error::internal)?;
        if deleted_at + retention < mutation.now {
            return Err(Error::FailedPrecondition {
                reason: "RETENTION_EXPIRED",
                message: format!(
                    "API key {id} was revoked at {deleted_at}, longer ago than the {}-second retention window",
                    retention.num_seconds()
                ),
            });
        }
        enforce_quota(&txn, &key.owner, &key.environment, quota(&key.environment), mutation.now).await?;
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
        audit(&txn, mutation, Operation::Undelete, id).await?;
        let restored = find_row(&txn, id).await?;
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
        if let Claim::Replay = claim(&txn, mutation, Operation::Rotate, id).await? {
            return Err(already_applied(mutation, &txn).await?);
        }
        if key.status == KeyStatus::Revoked {
            return Err(Error::FailedPrecondition {
                reason: "API_KEY_REVOKED",
                message: format!("API key {id} is revoked; undelete it before rotating"),
            });
        }
        install_secret(&txn, id, secret, mutation.now).await?;
        self.announce(&txn, id).await?;
        audit(&txn, mutation, Operation::Rotate, id).await?;
        let rotated = find_row(&txn, id).await?;
        txn.commit().await.map_err(db_error)?;
        Ok(rotated)
    }

    /// Records the audit event of a mutation that failed (successful ones are written
    /// with their effect).
    pub async fn record_audit(&self, event: &AuditEvent) -> Result<()> {
        audit_event::Entity::insert(audit_row(event)).exec(self.db()?).await.map_err(db_error)?;
        Ok(())
    }

    /// Audit events, oldest first (for tests and operators).
    pub async fn audit_events(&self) -> Result<Vec<AuditEvent>> {
        let rows = audit_event::Entity::find()
            .order_by_asc(audit_event::Column::Id)
            .all(self.db()?)
            .await
            .map_err(db_error)?;
        Ok(rows.into_iter().map(convert::audit_from_row).collect())
    }
}

fn record_from_rows(rows: Vec<(api_key_secret::Model, Option<api_key::Model>)>) -> Result<Option<KeyRecord>> {
    let mut key = None;
    let mut secrets = Vec::with_capacity(rows.len());
    for (secret, row) in rows {
        if key.is_none() {
            key = row;
        }
        let hash = SecretHash::from_hex(&secret.secret_hash)
            .ok_or_else(|| Error::internal("stored secret_hash is not 64 hex digits"))?;
        secrets.push(StoredSecret { hash, expires_at: secret.expires_at });
    }
    match key {
        Some(row) => Ok(Some(KeyRecord { key: Arc::new(to_domain(row)?), secrets })),
        None => Ok(None),
    }
}

async fn find_row(conn: &impl ConnectionTrait, id: Uuid) -> Result<ApiKey> {
    let row = api_key::Entity::find().filter(api_key::Column::Id.eq(id)).one(conn).await.map_err(db_error)?;
    to_domain(row.ok_or_else(|| Error::key_not_found(id.to_string()))?)
}

/// The target of a mutation, read under a row lock (PostgreSQL; SQLite's write
/// transaction already excludes other writers) and admitted by the caller's authority.
pub(crate) async fn lock_target(txn: &DatabaseTransaction, id: Uuid, authority: &Authority) -> Result<ApiKey> {
    let row = api_key::Entity::find()
        .filter(api_key::Column::Id.eq(id))
        .lock_exclusive()
        .one(txn)
        .await
        .map_err(db_error)?
        .ok_or_else(|| Error::key_not_found(id.to_string()))?;
    let key = to_domain(row)?;
    authority.admit(&key)?;
    Ok(key)
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

pub(crate) async fn find_in_reach(conn: &impl ConnectionTrait, id: Uuid, reach: &Reach) -> Result<ApiKey> {
    let key = find_row(conn, id).await?;
    if reach.covers(&key) { Ok(key) } else { Err(Error::key_not_found(id.to_string())) }
}

/// Live keys of an owner in an environment, counting no further than `at_most`. The
/// revoked-status term is written as the partial index `api_keys_live_by_owner` states it
/// (a literal, not a bound value), so the count reads that index only.
async fn count_live(
    conn: &impl ConnectionTrait,
    owner: &str,
    environment: &str,
    now: DateTime<Utc>,
    at_most: Option<u64>,
) -> Result<i64> {
    let live = api_key::Entity::find()
        .select_only()
        .column(api_key::Column::Number)
        .filter(api_key::Column::Owner.eq(owner))
        .filter(api_key::Column::Environment.eq(environment))
        .filter(Expr::cust("status <> 'revoked'"))
        .filter(api_key::Column::ExpiresAt.is_null().or(api_key::Column::ExpiresAt.gt(now)))
        .limit(at_most)
        .into_query();
    // COUNT over the limited rows (sea-orm's own count drops the LIMIT).
    let count =
        sea_orm::sea_query::Query::select().expr(Expr::cust("COUNT(*) AS n")).from_subquery(live, "live").to_owned();
    let row = conn.query_one(&count).await.map_err(db_error)?.ok_or_else(|| Error::internal("COUNT gave no row"))?;
    row.try_get::<i64>("", "n").map_err(db_error)
}

/// Serialises quota checks of one (owner, environment): the UPDATE holds the lock row
/// until commit, so the count that follows sees every earlier create.
async fn enforce_quota(
    txn: &DatabaseTransaction,
    owner: &str,
    environment: &str,
    max_live_keys: i64,
    now: DateTime<Utc>,
) -> Result<()> {
    quota_lock::Entity::insert(quota_lock::ActiveModel {
        owner: Set(owner.to_owned()),
        environment: Set(environment.to_owned()),
        generation: Set(0),
    })
    .on_conflict_do_nothing()
    .exec(txn)
    .await
    .map_err(db_error)?;
    quota_lock::Entity::update_many()
        .col_expr(quota_lock::Column::Generation, Expr::col(quota_lock::Column::Generation).add(1))
        .filter(quota_lock::Column::Owner.eq(owner))
        .filter(quota_lock::Column::Environment.eq(environment))
        .exec(txn)
        .await
        .map_err(db_error)?;
    // Counting stops at the quota: the check costs the same however many keys there are.
    // (A bound beyond i64 cannot be bound as a SQL integer.)
    let at_most = u64::try_from(max_live_keys.saturating_add(1)).unwrap_or(0);
    let live = count_live(txn, owner, environment, now, Some(at_most)).await?;
    if live >= max_live_keys {
        return Err(Error::ResourceExhausted {
            reason: "KEY_QUOTA_EXCEEDED",
            message: format!(
                "owner {owner} already holds {live} live keys in environment {environment}, the most allowed; revoke one first"
            ),
        });
    }
    Ok(())
}

/// Records (actor, request_id) or finds the earlier record of it.
pub(crate) async fn claim(
    txn: &DatabaseTransaction,
    mutation: &Mutation,
    operation: Operation,
    key_id: Uuid,
) -> Result<Claim> {
    let Some(request_id) = &mutation.request_id else { return Ok(Claim::Fresh) };
    let inserted = idempotency_record::Entity::insert(idempotency_record::ActiveModel {
        actor: Set(mutation.actor.clone()),
        request_id: Set(request_id.clone()),
        operation: Set(operation.as_str().to_owned()),
        key_id: Set(key_id),
        created_at: Set(mutation.now),
    })
    .on_conflict_do_nothing()
    .exec(txn)
    .await
    .map_err(db_error)?;
    match inserted {
        TryInsertResult::Inserted(_) | TryInsertResult::Empty => Ok(Claim::Fresh),
        TryInsertResult::Conflicted => {
            let earlier = idempotency_record::Entity::find_by_id((mutation.actor.clone(), request_id.clone()))
                .one(txn)
                .await
                .map_err(db_error)?
                .ok_or_else(|| Error::internal("idempotency record vanished during its own conflict"))?;
            let same_target = operation == Operation::Create || earlier.key_id == key_id;
            if earlier.operation != operation.as_str() || !same_target {
                return Err(Error::invalid(
                    "request_id",
                    format!(
                        "was already used for {} of API key {}; use a fresh request_id for a new request",
                        earlier.operation, earlier.key_id
                    ),
                ));
            }
            Ok(Claim::Replay)
        }
    }
}

async fn already_applied(mutation: &Mutation, txn: &DatabaseTransaction) -> Result<Error> {
    let request_id = mutation.request_id.clone().unwrap_or_default();
    let earlier = idempotency_record::Entity::find_by_id((mutation.actor.clone(), request_id.clone()))
        .one(txn)
        .await
        .map_err(db_error)?
        .ok_or_else(|| Error::internal("idempotency record vanished"))?;
    Ok(Error::AlreadyExists {
        reason: "REQUEST_ALREADY_APPLIED",
        message: format!(
            "request {request_id} was already applied to API key {}; its secret is shown only once",
            earlier.key_id
        ),
        resource_id: Some(earlier.key_id.to_string()),
    })
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

pub(crate) async fn audit(
    txn: &DatabaseTransaction,
    mutation: &Mutation,
    operation: Operation,
    target: Uuid,
) -> Result<()> {
    let event = AuditEvent {
        actor: mutation.actor.clone(),
        action: operation.as_str().to_owned(),
        target: target.to_string(),
        request_id: mutation.request_id.clone(),
        outcome: "OK".to_owned(),
        occurred_at: mutation.now,
    };
    audit_event::Entity::insert(audit_row(&event)).exec(txn).await.map_err(db_error)?;
    Ok(())
}

fn audit_row(event: &AuditEvent) -> audit_event::ActiveModel {
    audit_event::ActiveModel {
        id: NotSet,
        actor: Set(event.actor.clone()),
        action: Set(event.action.clone()),
        target: Set(event.target.clone()),
        request_id: Set(event.request_id.clone()),
        outcome: Set(event.outcome.clone()),
        occurred_at: Set(event.occurred_at),
    }
}

/// Whether a connection handed back to the pool may serve again: only outside any
/// transaction. After a COMMIT fails (a full disk, say) the rollback that follows can fail
/// too and leave the connection inside a transaction, where every later statement would
/// run and never commit while the write lock stays held. Such a connection is closed
/// (which rolls it back) and the pool opens a fresh one.
fn reusable(conn: &impl sea_orm::sqlx::Connection) -> bool {
    !conn.is_in_transaction()
}

/// Whether an error means the database could not be reached or could not store, so that
/// retrying later may succeed: a lost connection; SQLite's full disk (SQLITE_FULL) or I/O
/// error (SQLITE_IOERR and its extended codes); PostgreSQL's connection errors (class
/// 08), full disk (53100) or shutdown (57P01–57P03).
pub fn is_unavailable(err: &DbErr) -> bool {
    if matches!(err, DbErr::Conn(_) | DbErr::ConnectionAcquire(_)) {
        return true;
    }
    let (DbErr::Exec(sea_orm::RuntimeErr::SqlxError(source)) | DbErr::Query(sea_orm::RuntimeErr::SqlxError(source))) =
        err
    else {
        return false;
    };
    if matches!(&**source, sea_orm::sqlx::Error::Io(_) | sea_orm::sqlx::Error::WorkerCrashed) {
        return true;
    }
    let Some(database) = source.as_database_error() else { return false };
    let code = database.code().unwrap_or_default();
    if database.try_downcast_ref::<sea_orm::sqlx::sqlite::SqliteError>().is_some() {
        code.parse::<i32>().is_ok_and(|code| matches!(code & 0xff, 10 | 13))
    } else {
        code.starts_with("08") || code == "53100" || code.starts_with("57P0")
    }
}
