//! Cross-replica change notifications on PostgreSQL (`LISTEN/NOTIFY`). A notification is
//! sent inside the mutation's transaction, so it is delivered exactly when the change
//! commits, to every replica listening, this one included.

use std::time::Duration;

use keyward_core::{Error, error::Result};
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, Statement,
    sqlx::{
        self,
        postgres::{PgListener, PgPoolOptions},
    },
};
use uuid::Uuid;

use crate::{Store, db::db_error};

/// `application_name` of the listener's connection (README names it for operators).
const LISTENER_NAME: &str = "keyward change listener";
/// How long the listener waits between tries to reconnect.
const RECONNECT_PAUSE: Duration = Duration::from_millis(250);
/// Failed tries per warning line: one line a second.
const RECONNECT_TRIES_PER_LINE: u64 = 4;

/// What a listener reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Key `id` changed on some replica.
    Key(Uuid),
    /// The shared rate limits of an owner changed on some replica.
    Owner(String),
    /// The listener is not connected; notifications are being missed until [`Change::Resynced`].
    Lost,
    /// The listener is (re)connected; notifications sent before this may have been missed.
    Resynced,
}

/// Receives key changes announced on a channel; reconnects by itself.
#[derive(Debug)]
pub struct ChangeListener {
    listener: PgListener,
    connected: bool,
}

/// Marks a notification about an owner's shared limits; a key's is its bare UUID.
const OWNER_PREFIX: &str = "owner:";

impl Store {
    /// Listens for key changes announced by any replica; `None` on SQLite.
    pub async fn change_listener(&self) -> Result<Option<ChangeListener>> {
        match self.notify_channel() {
            Some(channel) => ChangeListener::connect(self.connection(), channel).await.map(Some),
            None => Ok(None),
        }
    }

    /// Announces, on commit of `txn`, that key `id` changed.
    pub(crate) async fn announce(&self, txn: &DatabaseTransaction, id: Uuid) -> Result<()> {
        self.notify(txn, id.to_string()).await
    }

    /// Announces, on commit of `txn`, that the shared rate limits of `owner` changed.
    pub(crate) async fn announce_owner(&self, txn: &DatabaseTransaction, owner: &str) -> Result<()> {
        self.notify(txn, format!("{OWNER_PREFIX}{owner}")).await
    }

    async fn notify(&self, txn: &DatabaseTransaction, payload: String) -> Result<()> {
        if let Some(channel) = self.notify_channel() {
            let statement = Statement::from_sql_and_values(
                DbBackend::Postgres,
                "SELECT pg_notify($1, $2)",
                [channel.into(), payload.into()],
            );
            txn.execute_raw(statement).await.map_err(db_error)?;
        }
        Ok(())
    }
}

impl ChangeListener {
    async fn connect(db: &DatabaseConnection, channel: &str) -> Result<Self> {
        // A pool of its own, named so operators (and tests) can tell the listener's
        // connection apart in pg_stat_activity.
        let options =
            db.get_postgres_connection_pool().connect_options().as_ref().clone().application_name(LISTENER_NAME);
        let pool = PgPoolOptions::new().max_connections(1).connect_lazy_with(options);
        let mut listener = PgListener::connect_with(&pool).await.map_err(listen_error)?;
        listener.ignore_pool_close_event(true);
        listener.listen(channel).await.map_err(listen_error)?;
        Ok(Self { listener, connected: false })
    }

    /// The next event. The first one is always [`Change::Resynced`].
    pub async fn next(&mut self) -> Change {
        if !self.connected {
            // A trivial query through the listener proves its connection (and so its
            // LISTEN) is back before the cache is trusted again. Tries four times a second
            // and says so once a second, with how many tries failed.
            let mut failed: u64 = 0;
            loop {
                match sqlx::query("SELECT 1").execute(&mut self.listener).await {
                    Ok(_) => {
                        self.connected = true;
                        return Change::Resynced;
                    }
                    Err(err) => {
                        failed += 1;
                        if failed % RECONNECT_TRIES_PER_LINE == 1 {
                            tracing::warn!(error = %err, failed, "change listener cannot reconnect yet");
                        }
                        tokio::time::sleep(RECONNECT_PAUSE).await;
                    }
                }
            }
        }
        loop {
            match self.listener.try_recv().await {
                Ok(Some(notification)) => {
                    if let Some(owner) = notification.payload().strip_prefix(OWNER_PREFIX) {
                        return Change::Owner(owner.to_owned());
                    }
                    match Uuid::try_parse(notification.payload()) {
                        Ok(id) => return Change::Key(id),
                        Err(_) => tracing::warn!(payload = notification.payload(), "ignoring a malformed key change"),
                    }
                }
                // The connection dropped and was re-established: whatever was sent in between is lost.
                Ok(None) => {
                    tracing::warn!("change listener reconnected; dropping cached keys");
                    return Change::Resynced;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "change listener lost its connection");
                    self.connected = false;
                    return Change::Lost;
                }
            }
        }
    }
}

fn listen_error(err: sqlx::Error) -> Error {
    Error::Unavailable(Box::new(err))
}
