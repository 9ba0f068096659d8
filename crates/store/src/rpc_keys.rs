//! RPC provider keys: secrets sealed under the master key, bound to their row's id.

use keyward_core::{
    Error,
    crypto::MasterKey,
    error::Result,
    model::{AuditAction, RpcProviderKey, RpcProviderKeyPatch},
};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, TransactionTrait,
};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::{
    Store,
    db::db_error,
    entity::{master_key_canary, rpc_provider_key},
    envelope::{Envelope, Mutation},
};

const CANARY_ID: i32 = 1;
const CANARY_PLAINTEXT: &[u8] = b"keyward master key canary";
const CANARY_RECORD: &[u8] = b"master_key_canary";

/// Filters and position of one ListRpcProviderKeys page.
#[derive(Debug, Clone, Default)]
pub struct RpcKeyQuery {
    /// Only this network.
    pub network: Option<String>,
    /// Only this provider.
    pub provider: Option<String>,
    /// Start after this id.
    pub after: Option<Uuid>,
    /// Page size.
    pub limit: u64,
}

fn not_found(id: Uuid) -> Error {
    Error::NotFound { kind: "RPC provider key", id: id.to_string() }
}

fn open_row(master: &MasterKey, row: rpc_provider_key::Model) -> Result<RpcProviderKey> {
    let rpc_provider_key::Model {
        id,
        network,
        provider,
        description,
        enabled,
        sealed_secret,
        master_key_id,
        created_at,
        updated_at,
    } = row;
    if master_key_id != master.id() {
        return Err(Error::DataLoss {
            reason: "SEALED_UNDER_ANOTHER_MASTER_KEY",
            message: format!(
                "RPC provider key {id} was encrypted under master key {master_key_id}, not the configured {}; run `keyward rotate-master-key`",
                master.id()
            ),
        });
    }
    let secret = master.open(&sealed_secret, id.as_bytes()).map_err(|_| Error::DataLoss {
        reason: "CIPHERTEXT_INVALID",
        message: format!(
            "the stored secret of RPC provider key {id} does not decrypt: the row's ciphertext or id was altered"
        ),
    })?;
    let secret = String::from_utf8(secret).map_err(|_| Error::DataLoss {
        reason: "CIPHERTEXT_INVALID",
        message: format!("the stored secret of RPC provider key {id} is not UTF-8"),
    })?;
    Ok(RpcProviderKey {
        id,
        network,
        provider,
        secret: SecretString::from(secret),
        description,
        enabled,
        created_at,
        updated_at,
    })
}

fn sealed_row(master: &MasterKey, key: &RpcProviderKey) -> rpc_provider_key::ActiveModel {
    rpc_provider_key::ActiveModel {
        id: Set(key.id),
        network: Set(key.network.clone()),
        provider: Set(key.provider.clone()),
        description: Set(key.description.clone()),
        enabled: Set(key.enabled),
        sealed_secret: Set(master.seal(key.secret.expose_secret().as_bytes(), key.id.as_bytes())),
        master_key_id: Set(master.id().to_owned()),
        created_at: Set(key.created_at),
        updated_at: Set(key.updated_at),
    }
}

async fn find(conn: &impl ConnectionTrait, master: &MasterKey, id: Uuid) -> Result<RpcProviderKey> {
    let row = rpc_provider_key::Entity::find_by_id(id).one(conn).await.map_err(db_error)?;
    open_row(master, row.ok_or_else(|| not_found(id))?)
}

fn canary_error(master: &MasterKey, stored_id: &str) -> Error {
    Error::FailedPrecondition {
        reason: "WRONG_MASTER_KEY",
        message: format!(
            "the master key (id {}) is not the one this database's secrets are encrypted under (id {stored_id}); \
             configure the right KEYWARD_MASTER_KEY / KEYWARD_MASTER_KEY_FILE, or run `keyward rotate-master-key`",
            master.id()
        ),
    }
}

impl Store {
    /// Checks `master` against the stored canary, writing one on first use. A wrong key
    /// is refused before anything is encrypted under it.
    pub async fn check_master_key(&self, master: &MasterKey) -> Result<()> {
        let txn = self.db()?.begin().await.map_err(db_error)?;
        match master_key_canary::Entity::find_by_id(CANARY_ID).one(&txn).await.map_err(db_error)? {
            Some(canary) => {
                if master.open(&canary.sealed, CANARY_RECORD).as_deref() != Ok(CANARY_PLAINTEXT) {
                    return Err(canary_error(master, &canary.master_key_id));
                }
            }
            None => {
                master_key_canary::Entity::insert(master_key_canary::ActiveModel {
                    id: Set(CANARY_ID),
                    master_key_id: Set(master.id().to_owned()),
                    sealed: Set(master.seal(CANARY_PLAINTEXT, CANARY_RECORD)),
                })
                .on_conflict_do_nothing()
                .exec(&txn)
                .await
                .map_err(db_error)?;
            }
        }
        txn.commit().await.map_err(db_error)
    }

    /// Re-encrypts every RPC provider key, webhook signing secret and the canary from `old`
    /// to `new`, in one transaction; returns how many RPC provider keys were re-encrypted.
    pub async fn rotate_master_key(&self, old: &MasterKey, new: &MasterKey) -> Result<usize> {
        let txn = self.begin_write().await?;
        let canary = master_key_canary::Entity::find_by_id(CANARY_ID).one(&txn).await.map_err(db_error)?;
        if let Some(canary) = &canary
            && old.open(&canary.sealed, CANARY_RECORD).as_deref() != Ok(CANARY_PLAINTEXT)
        {
            return Err(canary_error(old, &canary.master_key_id));
        }
        let rows = rpc_provider_key::Entity::find().all(&txn).await.map_err(db_error)?;
        let count = rows.len();
        for row in rows {
            let key = open_row(old, row)?;
            rpc_provider_key::Entity::update(sealed_row(new, &key)).exec(&txn).await.map_err(db_error)?;
        }
        Self::reseal_endpoints(&txn, old, new).await?;
        master_key_canary::Entity::delete_many().exec(&txn).await.map_err(db_error)?;
        master_key_canary::Entity::insert(master_key_canary::ActiveModel {
            id: Set(CANARY_ID),
            master_key_id: Set(new.id().to_owned()),
            sealed: Set(new.seal(CANARY_PLAINTEXT, CANARY_RECORD)),
        })
        .exec(&txn)
        .await
        .map_err(db_error)?;
        txn.commit().await.map_err(db_error)?;
        Ok(count)
    }

    /// Stores a new RPC provider key.
    pub async fn create_rpc_key(
        &self,
        master: &MasterKey,
        key: &RpcProviderKey,
        mutation: &Mutation,
    ) -> Result<RpcProviderKey> {
        let txn = self.begin_write().await?;
        rpc_provider_key::Entity::insert(sealed_row(master, key)).exec(&txn).await.map_err(db_error)?;
        Envelope::of(mutation, AuditAction::CreateRpcProviderKey, key.id).record(&txn).await?;
        let created = find(&txn, master, key.id).await?;
        txn.commit().await.map_err(db_error)?;
        Ok(created)
    }

    /// One RPC provider key, its secret decrypted.
    pub async fn get_rpc_key(&self, master: &MasterKey, id: Uuid) -> Result<RpcProviderKey> {
        find(self.db()?, master, id).await
    }

    /// One page of RPC provider keys in creation order.
    pub async fn list_rpc_keys(&self, master: &MasterKey, query: &RpcKeyQuery) -> Result<Vec<RpcProviderKey>> {
        let mut select = rpc_provider_key::Entity::find().order_by_asc(rpc_provider_key::Column::Id).limit(query.limit);
        if let Some(network) = &query.network {
            select = select.filter(rpc_provider_key::Column::Network.eq(network.as_str()));
        }
        if let Some(provider) = &query.provider {
            select = select.filter(rpc_provider_key::Column::Provider.eq(provider.as_str()));
        }
        if let Some(after) = query.after {
            select = select.filter(rpc_provider_key::Column::Id.gt(after));
        }
        let rows = select.all(self.db()?).await.map_err(db_error)?;
        rows.into_iter().map(|row| open_row(master, row)).collect()
    }

    /// Changes an RPC provider key.
    pub async fn update_rpc_key(
        &self,
        master: &MasterKey,
        id: Uuid,
        patch: &RpcProviderKeyPatch,
        mutation: &Mutation,
    ) -> Result<RpcProviderKey> {
        let txn = self.begin_write().await?;
        let mut key = find(&txn, master, id).await?;
        let RpcProviderKeyPatch { secret, description, enabled } = patch.clone();
        if let Some(secret) = secret {
            key.secret = secret;
        }
        if let Some(description) = description {
            key.description = description;
        }
        if let Some(enabled) = enabled {
            key.enabled = enabled;
        }
        key.updated_at = mutation.now;
        let mut row = sealed_row(master, &key);
        row.created_at = NotSet;
        rpc_provider_key::Entity::update(row).exec(&txn).await.map_err(db_error)?;
        Envelope::of(mutation, AuditAction::UpdateRpcProviderKey, id).record(&txn).await?;
        let updated = find(&txn, master, id).await?;
        txn.commit().await.map_err(db_error)?;
        Ok(updated)
    }

    /// Deletes an RPC provider key for good.
    pub async fn delete_rpc_key(&self, id: Uuid, mutation: &Mutation) -> Result<()> {
        let txn = self.begin_write().await?;
        let deleted = rpc_provider_key::Entity::delete_by_id(id).exec(&txn).await.map_err(db_error)?;
        if deleted.rows_affected == 0 {
            return Err(not_found(id));
        }
        Envelope::of(mutation, AuditAction::DeleteRpcProviderKey, id).record(&txn).await?;
        txn.commit().await.map_err(db_error)
    }
}
