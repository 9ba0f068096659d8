//! `keyward.v1.RpcProviderKeyService`: admin-only storage of upstream credentials,
//! encrypted at rest. Every call is audited, reads included.

use std::sync::Arc;

use chrono::Utc;
use keyward_core::{
    Error,
    crypto::MasterKey,
    error::Result,
    model::{AuditAction, RpcProviderKey, RpcProviderKeyPatch},
    page,
    policy::{self, Action, Caller},
    validate::Checks,
};
use keyward_proto::v1::{self, rpc_provider_key_service_server::RpcProviderKeyService};
use keyward_store::{Mutation, RpcKeyQuery, Store};
use secrecy::{ExposeSecret, SecretString};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{audit::audited, convert::timestamp, status::to_status, verifier::Verifier};

pub(crate) const MAX_SECRET_CHARS: usize = 1000;
pub(crate) const MAX_DESCRIPTION_CHARS: usize = 500;
/// Masumi's `/rpc-api-keys` lists 100 by default; so does this.
const DEFAULT_PAGE_SIZE: u64 = 100;
pub(crate) const UPDATABLE_FIELDS: [&str; 3] = ["secret", "description", "enabled"];

/// The RpcProviderKeyService implementation.
#[derive(Debug, Clone)]
pub struct RpcProviderKeyServiceImpl {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    verifier: Verifier,
    master: MasterKey,
}

fn to_proto(key: &RpcProviderKey, reveal: bool) -> v1::RpcProviderKey {
    let RpcProviderKey { id, network, provider, secret, description, enabled, created_at, updated_at } = key;
    let secret = secret.expose_secret();
    let tail: String = secret.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    v1::RpcProviderKey {
        id: id.to_string(),
        network: network.clone(),
        provider: provider.clone(),
        secret: if reveal { secret.to_owned() } else { String::new() },
        secret_mask: format!("…{tail}"),
        description: description.clone(),
        enabled: *enabled,
        create_time: Some(timestamp(*created_at)),
        update_time: Some(timestamp(*updated_at)),
    }
}

fn check_secret(checks: &mut Checks, field: &str, secret: &str) {
    let len = secret.chars().count();
    if len == 0 || len > MAX_SECRET_CHARS {
        checks.fail(field, format!("must be 1 to {MAX_SECRET_CHARS} characters, got {len}"));
    } else if secret.chars().any(|c| c.is_control()) {
        checks.fail(field, "must not contain control characters");
    }
}

fn check_description(checks: &mut Checks, field: &str, description: &str) {
    let len = description.chars().count();
    if len > MAX_DESCRIPTION_CHARS {
        checks.fail(field, format!("must be at most {MAX_DESCRIPTION_CHARS} characters, got {len}"));
    }
}

impl RpcProviderKeyServiceImpl {
    pub(crate) fn new(store: Store, verifier: Verifier, master: MasterKey) -> Self {
        Self { inner: Arc::new(Inner { store, verifier, master }) }
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        self.inner.verifier.authenticate(request.metadata()).await.map_err(to_status)
    }

    fn create(&self, caller: &Caller, request: v1::CreateRpcProviderKeyRequest) -> Result<(RpcProviderKey, Mutation)> {
        policy::authorize(caller, Action::ManageRpcProviderKeys)?;
        let v1::CreateRpcProviderKeyRequest { rpc_provider_key } = request;
        let Some(key) = rpc_provider_key else {
            return Err(Error::invalid("rpc_provider_key", "is required"));
        };
        let v1::RpcProviderKey {
            id: _,
            network,
            provider,
            secret,
            secret_mask: _,
            description,
            enabled,
            create_time: _,
            update_time: _,
        } = key;
        let mut checks = Checks::new();
        checks.label("rpc_provider_key.network", &network);
        checks.label("rpc_provider_key.provider", &provider);
        check_secret(&mut checks, "rpc_provider_key.secret", &secret);
        check_description(&mut checks, "rpc_provider_key.description", &description);
        checks.finish()?;
        let now = Utc::now();
        let key = RpcProviderKey {
            id: Uuid::now_v7(),
            network,
            provider,
            secret: SecretString::from(secret),
            description,
            enabled,
            created_at: now,
            updated_at: now,
        };
        Ok((key, Mutation { actor: caller.subject(), request_id: None, now }))
    }

    fn patch(&self, request: v1::UpdateRpcProviderKeyRequest) -> Result<(Uuid, RpcProviderKeyPatch)> {
        let v1::UpdateRpcProviderKeyRequest { rpc_provider_key, update_mask } = request;
        let Some(key) = rpc_provider_key else {
            return Err(Error::invalid("rpc_provider_key", "is required"));
        };
        let v1::RpcProviderKey {
            id,
            network: _,
            provider: _,
            secret,
            secret_mask: _,
            description,
            enabled,
            create_time: _,
            update_time: _,
        } = key;
        let mut checks = Checks::new();
        let id = checks.uuid("rpc_provider_key.id", &id);
        let paths = update_mask.map(|mask| mask.paths).unwrap_or_default();
        if paths.is_empty() {
            checks.fail(
                "update_mask",
                format!("is required: list the fields to change, any of {}", UPDATABLE_FIELDS.join(", ")),
            );
        }
        let mut patch = RpcProviderKeyPatch::default();
        for (index, path) in paths.iter().enumerate() {
            match path.as_str() {
                "secret" => {
                    check_secret(&mut checks, "rpc_provider_key.secret", &secret);
                    patch.secret = Some(SecretString::from(secret.clone()));
                }
                "description" => {
                    check_description(&mut checks, "rpc_provider_key.description", &description);
                    patch.description = Some(description.clone());
                }
                "enabled" => patch.enabled = Some(enabled),
                other => checks.fail(
                    format!("update_mask.paths[{index}]"),
                    format!("`{other}` cannot be updated; use any of {}", UPDATABLE_FIELDS.join(", ")),
                ),
            }
        }
        checks.finish()?;
        Ok((id, patch))
    }

    async fn list(
        &self,
        caller: &Caller,
        request: v1::ListRpcProviderKeysRequest,
    ) -> Result<v1::ListRpcProviderKeysResponse> {
        policy::authorize(caller, Action::ManageRpcProviderKeys)?;
        if request.reveal {
            policy::authorize(caller, Action::RevealRpcProviderKeys)?;
        }
        let v1::ListRpcProviderKeysRequest { page_size, page_token, network, provider, reveal } = request;
        let mut checks = Checks::new();
        checks.subject("network", &network);
        checks.subject("provider", &provider);
        let limit = match page_size {
            0 => Ok(DEFAULT_PAGE_SIZE),
            size => page::page_size(size),
        };
        if let Err(Error::InvalidArgument(violations)) = &limit {
            violations.iter().for_each(|v| checks.fail(v.field.clone(), v.description.clone()));
        }
        checks.finish()?;
        let limit = limit?;
        let filters = format!("rpc|{network}|{provider}");
        let after = page::decode_id(&page_token, &filters)?;
        let some = |text: String| Some(text).filter(|t| !t.is_empty());
        let query =
            RpcKeyQuery { network: some(network), provider: some(provider), after, limit: page::fetch_limit(limit) };
        let keys = self.inner.store.list_rpc_keys(&self.inner.master, &query).await?;
        let (keys, next_page_token) = page::cut(keys, limit, |key| page::encode_id(key.id, &filters))?;
        Ok(v1::ListRpcProviderKeysResponse {
            rpc_provider_keys: keys.iter().map(|key| to_proto(key, reveal)).collect(),
            next_page_token,
        })
    }

    fn target(&self, caller: &Caller, id: &str) -> Result<Uuid> {
        policy::authorize(caller, Action::ManageRpcProviderKeys)?;
        let mut checks = Checks::new();
        let id = checks.uuid("id", id);
        checks.finish()?;
        Ok(id)
    }
}

#[tonic::async_trait]
impl RpcProviderKeyService for RpcProviderKeyServiceImpl {
    #[tracing::instrument(name = "CreateRpcProviderKey", skip_all)]
    async fn create_rpc_provider_key(
        &self,
        request: Request<v1::CreateRpcProviderKeyRequest>,
    ) -> Result<Response<v1::CreateRpcProviderKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let result = async {
            let (key, mutation) = self.create(&caller, request.into_inner())?;
            let created = self.inner.store.create_rpc_key(&self.inner.master, &key, &mutation).await?;
            Ok(v1::CreateRpcProviderKeyResponse { rpc_provider_key: Some(to_proto(&created, false)) })
        }
        .await;
        audited(&self.inner.store, &caller, AuditAction::CreateRpcProviderKey, "", "", result).await.map(Response::new)
    }

    #[tracing::instrument(name = "GetRpcProviderKey", skip_all)]
    async fn get_rpc_provider_key(
        &self,
        request: Request<v1::GetRpcProviderKeyRequest>,
    ) -> Result<Response<v1::GetRpcProviderKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let v1::GetRpcProviderKeyRequest { id, reveal } = request.into_inner();
        let result = async {
            let key_id = self.target(&caller, &id)?;
            if reveal {
                policy::authorize(&caller, Action::RevealRpcProviderKeys)?;
            }
            let key = self.inner.store.get_rpc_key(&self.inner.master, key_id).await?;
            Ok(v1::GetRpcProviderKeyResponse { rpc_provider_key: Some(to_proto(&key, reveal)) })
        }
        .await;
        audited(&self.inner.store, &caller, AuditAction::GetRpcProviderKey, &id, "", result).await.map(Response::new)
    }

    #[tracing::instrument(name = "ListRpcProviderKeys", skip_all)]
    async fn list_rpc_provider_keys(
        &self,
        request: Request<v1::ListRpcProviderKeysRequest>,
    ) -> Result<Response<v1::ListRpcProviderKeysResponse>, Status> {
        let caller = self.caller(&request).await?;
        let result = self.list(&caller, request.into_inner()).await;
        audited(&self.inner.store, &caller, AuditAction::ListRpcProviderKeys, "", "", result).await.map(Response::new)
    }

    #[tracing::instrument(name = "UpdateRpcProviderKey", skip_all)]
    async fn update_rpc_provider_key(
        &self,
        request: Request<v1::UpdateRpcProviderKeyRequest>,
    ) -> Result<Response<v1::UpdateRpcProviderKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let target = request.rpc_provider_key.as_ref().map(|key| key.id.clone()).unwrap_or_default();
        let result = async {
            policy::authorize(&caller, Action::ManageRpcProviderKeys)?;
            let (id, patch) = self.patch(request)?;
            let mutation = Mutation { actor: caller.subject(), request_id: None, now: Utc::now() };
            let key = self.inner.store.update_rpc_key(&self.inner.master, id, &patch, &mutation).await?;
            Ok(v1::UpdateRpcProviderKeyResponse { rpc_provider_key: Some(to_proto(&key, false)) })
        }
        .await;
        audited(&self.inner.store, &caller, AuditAction::UpdateRpcProviderKey, &target, "", result)
            .await
            .map(Response::new)
    }

    #[tracing::instrument(name = "DeleteRpcProviderKey", skip_all)]
    async fn delete_rpc_provider_key(
        &self,
        request: Request<v1::DeleteRpcProviderKeyRequest>,
    ) -> Result<Response<v1::DeleteRpcProviderKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let v1::DeleteRpcProviderKeyRequest { id } = request.into_inner();
        let result = async {
            let key_id = self.target(&caller, &id)?;
            let mutation = Mutation { actor: caller.subject(), request_id: None, now: Utc::now() };
            self.inner.store.delete_rpc_key(key_id, &mutation).await?;
            Ok(v1::DeleteRpcProviderKeyResponse {})
        }
        .await;
        audited(&self.inner.store, &caller, AuditAction::DeleteRpcProviderKey, &id, "", result).await.map(Response::new)
    }
}
