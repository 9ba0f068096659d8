//! The sweep for time events: `api_key.expiring` a lead time before a key's expiry and
//! `api_key.expired` once it passed, each written once per key and expiry however many
//! replicas sweep, by a notice row whose insert is the compare-and-set.

use chrono::{DateTime, Utc};
use keyward_core::{
    error::Result,
    event::{self, EventType},
    model::KeyStatus,
};
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait, TryInsertResult};
use uuid::Uuid;

use crate::{Store, db::db_error, entity::expiry_notice, keys::find_row, outbox, sql::Sql};

/// Keys handled per kind per sweep.
const KEYS_PER_SWEEP: i64 = 500;

impl Store {
    /// Writes the time events due at `now`: `api_key.expiring` for live keys expiring
    /// within `lead`, `api_key.expired` for those whose expiry passed. Returns how many
    /// events this call wrote.
    pub async fn sweep_expiry(&self, now: DateTime<Utc>, lead: std::time::Duration) -> Result<usize> {
        let horizon = now + chrono::Duration::from_std(lead).unwrap_or(chrono::Duration::MAX);
        let mut written = 0;
        for kind in [EventType::KeyExpiring, EventType::KeyExpired] {
            for (key_id, expires_at) in self.expiry_candidates(kind, now, horizon).await? {
                let txn = self.begin_write().await?;
                let claimed = expiry_notice::Entity::insert(expiry_notice::ActiveModel {
                    key_id: Set(key_id),
                    kind: Set(kind.as_str().to_owned()),
                    expires_at: Set(expires_at),
                })
                .on_conflict_do_nothing()
                .exec(&txn)
                .await
                .map_err(db_error)?;
                if let TryInsertResult::Conflicted = claimed {
                    // Another replica wrote this event.
                    continue;
                }
                let key = find_row(&txn, key_id).await?;
                if key.expires_at != Some(expires_at) || key.status == KeyStatus::Revoked {
                    // Changed since it was found; the next sweep sees it as it is now.
                    continue;
                }
                outbox::emit(&txn, kind, key_id, event::key_expiry(&key, expires_at, now), now).await?;
                txn.commit().await.map_err(db_error)?;
                written += 1;
            }
        }
        Ok(written)
    }

    async fn expiry_candidates(
        &self,
        kind: EventType,
        now: DateTime<Utc>,
        horizon: DateTime<Utc>,
    ) -> Result<Vec<(Uuid, DateTime<Utc>)>> {
        let db = self.db()?;
        let mut sql = Sql::new(db.get_database_backend());
        sql.push("SELECT k.id, k.expires_at FROM api_keys k WHERE k.status <> ")
            .bind(KeyStatus::Revoked.as_str(), "text")
            .push(" AND k.expires_at IS NOT NULL");
        if kind == EventType::KeyExpiring {
            sql.push(" AND k.expires_at > ").bind(now, "timestamptz");
            sql.push(" AND k.expires_at <= ").bind(horizon, "timestamptz");
        } else {
            sql.push(" AND k.expires_at <= ").bind(now, "timestamptz");
        }
        sql.push(" AND NOT EXISTS (SELECT 1 FROM expiry_notices n WHERE n.key_id = k.id AND n.kind = ")
            .bind(kind.as_str(), "text")
            .push(" AND n.expires_at = k.expires_at) ORDER BY k.expires_at LIMIT ")
            .bind(KEYS_PER_SWEEP, "bigint");
        let rows = db.query_all_raw(sql.statement()).await.map_err(db_error)?;
        rows.iter()
            .map(|row| Ok((row.try_get("", "id").map_err(db_error)?, row.try_get("", "expires_at").map_err(db_error)?)))
            .collect()
    }
}
