//! The connection: pool, health circuit, write transactions, and what a database error
//! means to the caller (retry later, retry now, or a fault).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use keyward_core::{Error, error::Result};
use keyward_migrations::{Migrator, MigratorTrait};
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, QueryResult,
    Statement, TransactionOptions, TransactionTrait, Value, sea_query::Values, sqlx::sqlite::SqliteJournalMode,
};

use crate::lookup::{self, Lookups, Read, Statements};

/// Rows per multi-row statement: well under SQLite's and PostgreSQL's bind-parameter limits.
pub(crate) const ROWS_PER_STATEMENT: usize = 500;

/// The store: a pool of connections to one database.
#[derive(Debug, Clone)]
pub struct Store {
    pool: DatabaseConnection,
    /// Whether the last probe reached the database. While it did not, calls that need
    /// the database fail at once with UNAVAILABLE instead of waiting out the pool.
    reachable: Arc<AtomicBool>,
    /// Probes failed in a row since the last one that answered.
    failed_probes: Arc<AtomicU32>,
    probe_timeout: Duration,
    /// PostgreSQL channel on which key changes are announced to every replica.
    notify_channel: Option<Arc<str>>,
    lookup_reads: Arc<AtomicU64>,
    /// Connections for the verification path's lookups, when the pool may spare some.
    lookups: Option<Arc<Lookups>>,
    statements: Arc<Statements>,
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

/// Probes that must fail in a row before the database counts as unreachable: under a
/// burst of load one ping can wait out its second for a pooled connection or a starved
/// database while statements still complete, and turning every call away then would
/// make an outage of a spike.
const FAILED_PROBES_UNREACHABLE: u32 = 2;

/// How long a pooled connection may sit unused before it is pinged on its next acquire.
pub(crate) const IDLE_BEFORE_PING: Duration = Duration::from_secs(1);

/// PostgreSQL advisory lock key held while migrating ("keyward" in ASCII).
const MIGRATION_LOCK: i64 = 0x006b_6579_7761_7264;

impl Store {
    /// Connects to `url` (`sqlite://…` or `postgres://…`). A SQLite file is created if
    /// absent and opened in WAL mode. On PostgreSQL, key changes are announced on
    /// `notify_channel`.
    pub async fn connect(url: &str, pool: &PoolSettings, notify_channel: &str) -> Result<Self> {
        // Half the connections, when there are two or more, serve the verification path's
        // lookups (crate::lookup).
        let lookup_connections = pool.max_connections / 2;
        let mut options = ConnectOptions::new(url);
        options
            .max_connections(pool.max_connections - lookup_connections)
            .min_connections(1)
            .acquire_timeout(pool.acquire_timeout)
            .connect_timeout(pool.connect_timeout)
            .sqlx_logging(false)
            // sqlx pings a pooled connection on every acquire by default: a second round
            // trip per statement, a third of a cache miss's cost on PostgreSQL. Only a
            // connection left idle a while may have been dropped by the server unseen; a
            // busy one that broke fails its statement as a ping would have.
            .test_before_acquire_if_idle_for(IDLE_BEFORE_PING)
            .map_sqlx_sqlite_opts(|opts| {
                opts.create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
            })
            .map_sqlx_sqlite_pool_opts(|pool| pool.after_release(|conn, _| Box::pin(async { Ok(reusable(conn)) })))
            .map_sqlx_postgres_pool_opts(|pool| pool.after_release(|conn, _| Box::pin(async { Ok(reusable(conn)) })));
        let db = Database::connect(options).await.map_err(db_error)?;
        let postgres = db.get_database_backend() == DbBackend::Postgres;
        let notify_channel = postgres.then(|| Arc::from(notify_channel));
        let lookups = (lookup_connections > 0).then(|| {
            let options = if postgres {
                lookup::Options::Postgres(db.get_postgres_connection_pool().connect_options())
            } else {
                lookup::Options::Sqlite(db.get_sqlite_connection_pool().connect_options())
            };
            Arc::new(Lookups::new(options, lookup_connections, pool.acquire_timeout, pool.connect_timeout))
        });
        let statements = Arc::new(Statements::new(db.get_database_backend()));
        Ok(Self {
            pool: db,
            reachable: Arc::new(AtomicBool::new(true)),
            failed_probes: Arc::default(),
            probe_timeout: pool.acquire_timeout.min(Duration::from_secs(1)),
            notify_channel,
            lookup_reads: Arc::default(),
            lookups,
            statements,
        })
    }

    /// The pool, unless the last probe found the database unreachable: then UNAVAILABLE
    /// at once, so callers learn it in microseconds rather than after the pool's timeout.
    pub(crate) fn db(&self) -> Result<&DatabaseConnection> {
        if self.reachable.load(Ordering::Acquire) {
            Ok(&self.pool)
        } else {
            Err(Error::Unavailable("the database did not answer the last health probe; retry shortly".into()))
        }
    }

    /// Pings the database (within a second at most) and records the answer: after
    /// [`FAILED_PROBES_UNREACHABLE`] failures in a row calls fail fast, and they go
    /// through again once a ping answers. Returns whether the database counts as reachable.
    pub async fn probe(&self) -> bool {
        let answered = matches!(tokio::time::timeout(self.probe_timeout, self.pool.ping()).await, Ok(Ok(())));
        let failed = if answered { 0 } else { self.failed_probes.load(Ordering::Acquire).saturating_add(1) };
        self.failed_probes.store(failed, Ordering::Release);
        let reachable = failed < FAILED_PROBES_UNREACHABLE;
        self.reachable.store(reachable, Ordering::Release);
        reachable
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

    /// How many reads of the verification path run at once: one per lookup connection, or
    /// one when the pool serves them.
    pub fn lookup_concurrency(&self) -> usize {
        self.lookups.as_ref().map_or(1, |lookups| lookups.connections())
    }

    /// Every row a read of the verification path returns: on the lookup connections, or
    /// the pool if there are none.
    pub(crate) async fn lookup(&self, read: Read, value: Value) -> Result<Vec<QueryResult>> {
        let pool = self.db()?;
        let (sql, values) = (self.statements.text(read), Values(vec![value]));
        match &self.lookups {
            Some(lookups) => lookups.query_all(sql, &values).await,
            None => pool.query_all_raw(Statement::from_sql_and_values(self.statements.backend(), sql, values)).await,
        }
        .map_err(db_error)
    }

    /// Every row one statement returns that writes and commits on its own: on the lookup
    /// connections (spared the pool's ping on hand-back) if there are any, or the pool.
    /// Never run again after a failure, since its first run may have committed.
    pub(crate) async fn write_once(
        &self,
        pool: &DatabaseConnection,
        statement: Statement,
    ) -> Result<Vec<QueryResult>, DbErr> {
        match &self.lookups {
            Some(lookups) => {
                lookups.write_once(&statement.sql, &statement.values.unwrap_or_else(|| Values(Vec::new()))).await
            }
            None => pool.query_all_raw(statement).await,
        }
    }

    /// A read of a key by secret or id, counted for tests and metrics.
    pub(crate) fn count_lookup(&self) {
        self.lookup_reads.fetch_add(1, Ordering::Relaxed);
    }

    /// The channel key changes are announced on: PostgreSQL's only.
    pub(crate) fn notify_channel(&self) -> Option<&str> {
        self.notify_channel.as_deref()
    }

    /// Applies every pending migration. On PostgreSQL they run in one transaction that
    /// first takes an advisory lock, so replicas starting together on a new database
    /// apply them once, one after the other, instead of racing to create the same
    /// tables (SQLite's write lock serialises them already).
    pub async fn migrate(&self) -> Result<()> {
        if self.notify_channel.is_none() {
            return Migrator::up(&self.pool, None).await.map_err(db_error);
        }
        let txn = self.pool.begin().await.map_err(db_error)?;
        txn.execute_unprepared(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")).await.map_err(db_error)?;
        Migrator::up(&txn, None).await.map_err(db_error)?;
        txn.commit().await.map_err(db_error)
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
}

/// Whether a connection handed back to the pool may serve again: only outside any
/// transaction. After a COMMIT fails (a full disk, say) the rollback that follows can fail
/// too and leave the connection inside a transaction, where every later statement would
/// run and never commit while the write lock stays held. Such a connection is closed
/// (which rolls it back) and the pool opens a fresh one.
fn reusable(conn: &impl sea_orm::sqlx::Connection) -> bool {
    !conn.is_in_transaction()
}

pub(crate) fn db_error(err: DbErr) -> Error {
    if is_unavailable(&err) { Error::Unavailable(Box::new(err)) } else { Error::Internal(Box::new(err)) }
}

/// The database's own error code (SQLSTATE on PostgreSQL, the result code on SQLite), if
/// the error came from the database.
pub(crate) fn database_code(err: &DbErr) -> Option<(bool, String)> {
    let (DbErr::Exec(sea_orm::RuntimeErr::SqlxError(source)) | DbErr::Query(sea_orm::RuntimeErr::SqlxError(source))) =
        err
    else {
        return None;
    };
    let database = source.as_database_error()?;
    let sqlite = database.try_downcast_ref::<sea_orm::sqlx::sqlite::SqliteError>().is_some();
    Some((sqlite, database.code().unwrap_or_default().into_owned()))
}

/// Whether an error means the database could not be reached or could not store, so that
/// retrying later may succeed: a lost connection; SQLite's full disk (SQLITE_FULL), I/O
/// error (SQLITE_IOERR and its extended codes) or a write lock not granted within the busy
/// timeout (SQLITE_BUSY, SQLITE_LOCKED); PostgreSQL's connection errors (class
/// 08), full disk (53100) or shutdown (57P01–57P03).
pub fn is_unavailable(err: &DbErr) -> bool {
    if matches!(err, DbErr::Conn(_) | DbErr::ConnectionAcquire(_)) {
        return true;
    }
    if let DbErr::Exec(sea_orm::RuntimeErr::SqlxError(source)) | DbErr::Query(sea_orm::RuntimeErr::SqlxError(source)) =
        err
        && matches!(&**source, sea_orm::sqlx::Error::Io(_) | sea_orm::sqlx::Error::WorkerCrashed)
    {
        return true;
    }
    match database_code(err) {
        // SQLite: BUSY and LOCKED (the write lock stayed taken past the busy timeout, a
        // crowd of writers on one file), IOERR and FULL. Each passes; a retry may succeed.
        Some((true, code)) => code.parse::<i32>().is_ok_and(|code| matches!(code & 0xff, 5 | 6 | 10 | 13)),
        Some((false, code)) => code.starts_with("08") || code == "53100" || code.starts_with("57P0"),
        None => false,
    }
}

/// Whether PostgreSQL aborted the transaction only because of a lock cycle (40P01) or a
/// serialisation conflict (40001), so that running it again is safe and likely to succeed.
pub(crate) fn is_retryable(err: &DbErr) -> bool {
    matches!(database_code(err), Some((false, code)) if code == "40P01" || code == "40001")
}
