//! The reads a cache miss makes, on connections of their own, from statements built once;
//! PostgreSQL's one-statement charge batches run on them too.
//!
//! sqlx pings every connection handed back to its pool (unconditionally: it flushes
//! whatever a cancelled statement left), so each pooled read costs a second round trip to
//! PostgreSQL, or a second hand-off to SQLite's worker thread. The verification path's
//! reads, one short statement each, run instead on connections kept here and handed back
//! without a ping. The ping's job is done by never reusing a connection whose read failed
//! or was cancelled: it is dropped, and the next lookup opens a fresh one.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use sea_orm::{
    ColumnTrait, ConnAcquireErr, DbBackend, DbErr, EntityTrait, JoinType, QueryFilter, QueryResult, QuerySelect,
    QueryTrait, RelationTrait, RuntimeErr, Statement, Value,
    sea_query::{Expr, ExprTrait, Query, Values},
    sqlx::{
        self, Connection,
        postgres::{PgConnectOptions, PgConnection},
        sqlite::{SqliteConnectOptions, SqliteConnection},
    },
};
use sea_query_sqlx::SqlxValues;
use tokio::sync::Semaphore;

use crate::{
    db::IDLE_BEFORE_PING,
    entity::{api_key, api_key_secret, owner_rate_limit},
};

/// A read of the verification path: its statement differs from call to call only in the
/// one value it binds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Read {
    /// A key with each of its secrets, found by one secret's hash (a `String`).
    KeyBySecret,
    /// The same, found by the key's id (a `Uuid`).
    KeyById,
    /// Every key one of whose secrets is among a JSON array of hashes (a `String`): the
    /// refresh-ahead reads of many keys, batched into one statement.
    KeysBySecrets,
    /// An owner's shared rate limits, by owner (a `String`).
    OwnerRateLimits,
}

/// The text of each [`Read`] on one backend. Built once: sea-query spends more
/// instructions building a statement than SQLite spends running it.
#[derive(Debug)]
pub(crate) struct Statements {
    backend: DbBackend,
    texts: [String; 4],
}

impl Read {
    fn build(self, backend: DbBackend, value: Value) -> Statement {
        match self {
            Self::KeyBySecret => {
                // The hash is the secrets' primary key, so this is one key id at most: a
                // scalar subquery, which SQLite runs without the temporary index it builds
                // for `IN (SELECT …)`.
                let key_of_hash = Query::select()
                    .column(api_key_secret::Column::KeyId)
                    .from(api_key_secret::Entity)
                    .and_where(Expr::col(api_key_secret::Column::SecretHash).eq(value))
                    .to_owned();
                secrets_with_key(Expr::col((api_key::Entity, api_key::Column::Id)).eq(Expr::from(key_of_hash)), backend)
            }
            Self::KeyById => secrets_with_key(api_key_secret::Column::KeyId.eq(value), backend),
            Self::KeysBySecrets => {
                // One value whatever the number of hashes, so the text is built (and on
                // PostgreSQL prepared) once: a JSON array, unpacked by the database. On
                // PostgreSQL as an array for `= ANY`, which the planner reads from the
                // primary key; it joined `IN (SELECT jsonb_array_elements_text(…))` against
                // every secret, its estimate for the unpacked set being 100 rows.
                let hashes = if backend == DbBackend::Postgres {
                    r#""secret_hash" = ANY(ARRAY(SELECT jsonb_array_elements_text(CAST($1 AS jsonb))))"#
                } else {
                    r#""secret_hash" IN (SELECT value FROM json_each(?))"#
                };
                let keys_of_hashes = Query::select()
                    .column(api_key_secret::Column::KeyId)
                    .from(api_key_secret::Entity)
                    .and_where(Expr::cust_with_values(hashes, [value]))
                    .to_owned();
                secrets_with_key(Expr::col((api_key::Entity, api_key::Column::Id)).in_subquery(keys_of_hashes), backend)
            }
            Self::OwnerRateLimits => {
                owner_rate_limit::Entity::find().filter(owner_rate_limit::Column::Owner.eq(value)).build(backend)
            }
        }
    }

    /// A value of the type the read binds, for building its text.
    fn placeholder(self) -> Value {
        match self {
            Self::KeyBySecret | Self::KeysBySecrets | Self::OwnerRateLimits => Value::from(String::new()),
            Self::KeyById => Value::from(uuid::Uuid::nil()),
        }
    }
}

/// A key once per secret that `which` selects, with that secret's hash and expiry as
/// `secret_hash` and `secret_expires_at`, and its roles (`role_data`). The key's columns keep their own names, so
/// decoding a row looks each name up as it is, with no prefix to format per column.
fn secrets_with_key(which: Expr, backend: DbBackend) -> Statement {
    crate::roles::with_roles(api_key::Entity::find(), backend)
        .join(JoinType::InnerJoin, api_key_secret::Relation::ApiKey.def().rev())
        .column_as(api_key_secret::Column::SecretHash, SECRET_HASH)
        .column_as(api_key_secret::Column::ExpiresAt, SECRET_EXPIRES_AT)
        .filter(which)
        .build(backend)
}

/// The names under which the key reads return the secret's columns.
pub(crate) const SECRET_HASH: &str = "secret_hash";
pub(crate) const SECRET_EXPIRES_AT: &str = "secret_expires_at";

impl Statements {
    pub(crate) fn new(backend: DbBackend) -> Self {
        let text = |read: Read| read.build(backend, read.placeholder()).sql;
        Self {
            backend,
            texts: [Read::KeyBySecret, Read::KeyById, Read::KeysBySecrets, Read::OwnerRateLimits].map(text),
        }
    }

    pub(crate) fn text(&self, read: Read) -> &str {
        &self.texts[read as usize]
    }

    pub(crate) fn backend(&self) -> DbBackend {
        self.backend
    }
}

/// A bounded set of connections for lookups.
#[derive(Debug)]
pub(crate) struct Lookups {
    options: Options,
    idle: Mutex<Vec<Idle>>,
    /// One per connection: a lookup holds one while it runs.
    permits: Semaphore,
    connections: usize,
    acquire_timeout: Duration,
    connect_timeout: Duration,
}

#[derive(Debug)]
pub(crate) enum Options {
    Postgres(Arc<PgConnectOptions>),
    Sqlite(Arc<SqliteConnectOptions>),
}

#[derive(Debug)]
enum Conn {
    Postgres(PgConnection),
    Sqlite(SqliteConnection),
}

#[derive(Debug)]
struct Idle {
    conn: Conn,
    since: Instant,
}

impl Lookups {
    pub(crate) fn new(
        options: Options,
        connections: u32,
        acquire_timeout: Duration,
        connect_timeout: Duration,
    ) -> Self {
        let connections = usize::try_from(connections).unwrap_or(1);
        Self {
            options,
            idle: Mutex::default(),
            permits: Semaphore::new(connections),
            connections,
            acquire_timeout,
            connect_timeout,
        }
    }

    /// How many lookups may run at once.
    pub(crate) fn connections(&self) -> usize {
        self.connections
    }

    /// Every row `statement` reads. Waits for a free connection at most the pool's acquire
    /// timeout, as a pooled read would.
    pub(crate) async fn query_all(&self, sql: &str, values: &Values) -> Result<Vec<QueryResult>, DbErr> {
        let (_permit, (mut conn, reused)) = self.connection().await?;
        // A failed or cancelled read drops `conn`, unreturned. A reused connection the
        // server closed since its last read (a restart, a failover, an administrator's
        // pg_terminate_backend) is replaced once: the read changes nothing, so it can run again.
        let rows = match conn.fetch_all(sql, values).await {
            Ok(rows) => rows,
            Err(err) if reused && is_lost_connection(&err) => {
                conn = self.connect().await?;
                conn.fetch_all(sql, values).await.map_err(query_error)?
            }
            Err(err) => return Err(query_error(err)),
        };
        self.lock().push(Idle { conn, since: Instant::now() });
        Ok(rows)
    }

    /// Every row `statement` returns, run once and never again: a write (one statement,
    /// committed on its own), whose first run may have committed before its connection
    /// was lost. Like a read, it is spared the pool's ping on hand-back.
    pub(crate) async fn write_once(&self, sql: &str, values: &Values) -> Result<Vec<QueryResult>, DbErr> {
        let (_permit, (mut conn, _)) = self.connection().await?;
        let rows = conn.fetch_all(sql, values).await.map_err(query_error)?;
        self.lock().push(Idle { conn, since: Instant::now() });
        Ok(rows)
    }

    /// A turn and a connection, within the acquire timeout in all, as a pooled read
    /// would: waiting for a turn and then for a connect must not add up to twice it.
    async fn connection(&self) -> Result<(tokio::sync::SemaphorePermit<'_>, (Conn, bool)), DbErr> {
        let acquired = async {
            let permit =
                self.permits.acquire().await.map_err(|_| DbErr::ConnectionAcquire(ConnAcquireErr::ConnectionClosed))?;
            Ok((permit, self.take().await?))
        };
        match tokio::time::timeout(self.acquire_timeout, acquired).await {
            Ok(acquired) => acquired,
            Err(_) => Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)),
        }
    }

    /// An idle connection, pinged first if it sat unused long enough for the server to
    /// have dropped it unseen, or else a new one; and whether it served before.
    async fn take(&self) -> Result<(Conn, bool), DbErr> {
        let idle = self.lock().pop();
        if let Some(mut idle) = idle
            && (idle.since.elapsed() < IDLE_BEFORE_PING || idle.conn.ping().await.is_ok())
        {
            return Ok((idle.conn, true));
        }
        Ok((self.connect().await?, false))
    }

    async fn connect(&self) -> Result<Conn, DbErr> {
        match tokio::time::timeout(self.connect_timeout, self.options.connect()).await {
            Ok(connected) => connected.map_err(|err| DbErr::Conn(RuntimeErr::SqlxError(Arc::new(err)))),
            Err(_) => Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // The list is only pushed and popped; a panic elsewhere cannot leave it half-changed.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Options {
    async fn connect(&self) -> Result<Conn, sqlx::Error> {
        Ok(match self {
            Self::Postgres(options) => Conn::Postgres(PgConnection::connect_with(options).await?),
            Self::Sqlite(options) => Conn::Sqlite(SqliteConnection::connect_with(options).await?),
        })
    }
}

impl Conn {
    async fn fetch_all(&mut self, sql: &str, values: &Values) -> Result<Vec<QueryResult>, sqlx::Error> {
        let sql = sqlx::AssertSqlSafe(sql);
        let values = SqlxValues(values.clone());
        Ok(match self {
            Self::Postgres(conn) => {
                sqlx::query_with(sql, values).fetch_all(conn).await?.into_iter().map(QueryResult::from).collect()
            }
            Self::Sqlite(conn) => {
                sqlx::query_with(sql, values).fetch_all(conn).await?.into_iter().map(QueryResult::from).collect()
            }
        })
    }

    async fn ping(&mut self) -> Result<(), sqlx::Error> {
        match self {
            Self::Postgres(conn) => conn.ping().await,
            Self::Sqlite(conn) => conn.ping().await,
        }
    }
}

/// Whether `err` says the connection is gone rather than the statement wrong: an I/O
/// error, or PostgreSQL's notice that it ended the session (57P01 administrator
/// command, 57P02 crash shutdown).
fn is_lost_connection(err: &sqlx::Error) -> bool {
    if let sqlx::Error::Database(database) = err {
        return matches!(database.code().as_deref(), Some("57P01" | "57P02"));
    }
    matches!(err, sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed)
}

fn query_error(err: sqlx::Error) -> DbErr {
    DbErr::Query(RuntimeErr::SqlxError(Arc::new(err)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts are built once, so a read whose text depended on its value, or that
    /// bound more than one, would answer wrongly.
    #[test]
    fn each_read_binds_one_value_and_its_text_does_not_depend_on_it() {
        let values = [
            (Read::KeyBySecret, Value::from("ab".repeat(32))),
            (Read::KeyById, Value::from(uuid::Uuid::new_v4())),
            (Read::KeysBySecrets, Value::from(format!(r#"["{}","{}"]"#, "ab".repeat(32), "cd".repeat(32)))),
            (Read::OwnerRateLimits, Value::from("team-7".to_owned())),
        ];
        for backend in [DbBackend::Sqlite, DbBackend::Postgres] {
            let statements = Statements::new(backend);
            for (read, value) in values.clone() {
                let built = read.build(backend, value.clone());
                assert_eq!(built.sql, statements.text(read), "{read:?} on {backend:?}");
                assert_eq!(built.values, Some(Values(vec![value])), "{read:?} on {backend:?}");
            }
        }
    }

    /// `crates/bench/miss.sh` has the database run the one-key read on its own, so it
    /// must be the read keyward runs.
    #[test]
    fn the_miss_benchmark_runs_the_texts_a_miss_runs() {
        let script = include_str!("../../bench/miss.sh");
        for backend in [DbBackend::Sqlite, DbBackend::Postgres] {
            let text = Statements::new(backend).text(Read::KeyBySecret).to_owned();
            assert!(script.contains(&format!("\n{text}\nSQL\n")), "miss.sh runs another {backend:?} text than {text}");
        }
    }
}
