//! `keyward.v1.ApiKeyService`. Each handler authenticates, converts the request in
//! ([`requests`]), lets core's use cases decide, calls the store, and converts the answer
//! out.

mod requests;
pub(crate) use requests::{UPDATABLE_FIELDS, environment_name, refills, thresholds};

use std::sync::Arc;

use chrono::{DateTime, Utc};
use keyward_core::{
    Error,
    cases::{self, KeySettings},
    error::Result,
    model::{ApiKey, AuditAction},
    page,
    policy::{self, Action, Caller, Reach},
    validate::KeyRef,
};
use keyward_proto::v1::{self, api_key_service_server::ApiKeyService};
use keyward_store::{KeyUpdate, ListQuery, Mutation, Store};
use secrecy::ExposeSecret;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    audit::audited,
    convert,
    status::to_status,
    verifier::{Cost, Moment, Verifier},
};

/// The ApiKeyService implementation.
#[derive(Debug, Clone)]
pub struct ApiKeyServiceImpl {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    verifier: Verifier,
    settings: KeySettings,
}

impl ApiKeyServiceImpl {
    pub(crate) fn new(store: Store, verifier: Verifier, settings: KeySettings) -> Self {
        Self { inner: Arc::new(Inner { store, verifier, settings }) }
    }

    /// A key as answered: with its balances and refill schedules, and its status as it
    /// reads now.
    async fn with_balances(&self, key: &ApiKey) -> Result<v1::ApiKey> {
        let now = Utc::now();
        let mut answered = self.all_with_balances(std::slice::from_ref(key), now).await?;
        Ok(answered.pop().unwrap_or_else(|| convert::api_key(key, now)))
    }

    /// Keys as answered, their statuses as they read at `now`.
    async fn all_with_balances(&self, keys: &[ApiKey], now: DateTime<Utc>) -> Result<Vec<v1::ApiKey>> {
        let ids: Vec<Uuid> = keys.iter().map(|key| key.id).collect();
        let mut views = self.inner.store.credit_views(&ids).await?;
        Ok(keys
            .iter()
            .map(|key| convert::api_key_with_credits(key, views.remove(&key.id).unwrap_or_default(), now))
            .collect())
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        self.inner.verifier.authenticate(request.metadata()).await.map_err(to_status)
    }

    fn mutation(caller: &Caller, request_id: Option<String>) -> Mutation {
        Mutation { actor: caller.subject(), request_id, now: Utc::now() }
    }

    async fn create(&self, caller: &Caller, request: v1::CreateApiKeyRequest) -> Result<v1::CreateApiKeyResponse> {
        // Callers without the right are refused before their request is read.
        cases::admit_create(caller, !request.import_secret.is_empty())?;
        let now = Utc::now();
        let mut checked = requests::create(request, &self.inner.settings.environments, now)?;
        self.resolve_roles(caller, &mut checked.command).await?;
        let hasher = self.inner.verifier.hasher();
        let creation = cases::create_key(caller, checked.command, &self.inner.settings, hasher, now)?;
        let mutation = Mutation { actor: caller.subject(), request_id: checked.request_id, now };
        let hash = creation.new.secret_hash;
        let key = self.inner.store.create(creation.new, creation.max_live_keys, &mutation).await?;
        self.inner.verifier.secret_created(&hash);
        Ok(v1::CreateApiKeyResponse {
            api_key: Some(self.with_balances(&key).await?),
            secret: creation.secret.expose_secret().to_owned(),
        })
    }

    /// Fills in the scopes of the roles a new key is to hold, as its owner's roles (and
    /// global ones) have them. Only for an owner in reach: another's role names are not
    /// the caller's to probe.
    async fn resolve_roles(&self, caller: &Caller, command: &mut cases::CreateKey) -> Result<()> {
        if command.roles.is_empty() {
            return Ok(());
        }
        let owner = cases::key_owner(caller, &command.owner).to_owned();
        policy::authorize_owner(caller, Action::CreateKey, &owner)?;
        let names = command.roles.keys().cloned().collect();
        for role in self.inner.store.roles_for_key(&owner, &names).await? {
            command.roles.insert(role.name, role.scopes);
        }
        Ok(())
    }

    async fn get(&self, caller: &Caller, asked: &str) -> Result<ApiKey> {
        let reach = policy::authorize(caller, Action::ReadKeys)?;
        let found = match self.resolve(requests::key(asked)?).await {
            Ok(id) => self.inner.store.get(id, &reach).await,
            Err(err) => Err(err),
        };
        found.map_err(|err| err.naming(asked))
    }

    async fn list(&self, caller: &Caller, request: v1::ListApiKeysRequest) -> Result<v1::ListApiKeysResponse> {
        let reach = policy::authorize(caller, Action::ReadKeys)?;
        let listing = requests::listing(request)?;
        let filters = listing.filters(&reach);
        let after = match (page::decode(&listing.page_token, &filters)?, listing.start_at) {
            (Some(after), _) => Some(after),
            (None, None) => None,
            // The page starts at the key: after the number before its own.
            (None, Some(start)) => match self.start_number(start, &reach).await? {
                Some(number) => Some(number - 1),
                None => return Ok(v1::ListApiKeysResponse::default()),
            },
        };
        let limit = listing.limit;
        // One moment for the status filter and the statuses answered, so that they agree.
        let now = Utc::now();
        let query = ListQuery {
            reach,
            owner: listing.owner,
            organization_id: listing.organization_id,
            environment: listing.environment,
            status: listing.status,
            now,
            show_revoked: listing.show_revoked,
            after,
            limit: page::fetch_limit(limit),
        };
        let keys = self.inner.store.list(&query).await?;
        let (keys, next_page_token) = page::cut(keys, limit, |key| page::encode(key.number, &filters))?;
        Ok(v1::ListApiKeysResponse { api_keys: self.all_with_balances(&keys, now).await?, next_page_token })
    }

    /// The id of a key named by id or number. An unknown number is NOT_FOUND, like a key
    /// outside the caller's reach, so numbers reveal no more than ids.
    async fn resolve(&self, key: KeyRef) -> Result<Uuid> {
        match key {
            KeyRef::Id(id) => Ok(id),
            KeyRef::Number(number) => self.inner.store.id_by_number(number).await,
        }
    }

    /// The number of the key a list starts at, if it exists and is in reach.
    async fn start_number(&self, start: KeyRef, reach: &Reach) -> Result<Option<i64>> {
        let id = match self.resolve(start).await {
            Ok(id) => id,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(err) => return Err(err),
        };
        match self.inner.store.get(id, reach).await {
            Ok(key) => Ok(Some(key.number)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    async fn update(&self, caller: &Caller, request: v1::UpdateApiKeyRequest) -> Result<v1::UpdateApiKeyResponse> {
        // A caller without the right is refused before its request is read.
        cases::admit_update(caller)?;
        let now = Utc::now();
        let change = requests::update(request, now)?;
        let hasher = self.inner.verifier.hasher();
        let decided = cases::update_key(caller, &change.command, &self.inner.settings, hasher, now)?;
        let asked = change.asked.as_str();
        let id = self.resolve(change.key).await.map_err(|err| err.naming(asked))?;
        let update = KeyUpdate {
            patch: &change.command.patch,
            credit_deltas: &change.command.credit_deltas,
            credit_reason: &change.command.credit_reason,
            secret: decided.secret.as_ref(),
            restore: &decided.restore,
        };
        let mutation = Mutation { actor: caller.subject(), request_id: change.request_id, now };
        let quota = |environment: &str| self.inner.settings.quota(environment);
        let key = self
            .inner
            .store
            .update(id, &decided.authority, &update, &quota, &mutation)
            .await
            .map_err(|e| e.naming(asked))?;
        self.inner.verifier.key_changed(id);
        if let Some(secret) = &decided.secret {
            self.inner.verifier.secret_created(&secret.hash);
        }
        Ok(v1::UpdateApiKeyResponse { api_key: Some(self.with_balances(&key).await?) })
    }

    async fn delete(&self, caller: &Caller, id: &str, request_id: &str) -> Result<v1::DeleteApiKeyResponse> {
        let authority = cases::authorize_key_mutation(caller, Action::DeleteKey)?;
        let target = requests::target(id, request_id)?;
        let id = self.resolve(target.command).await?;
        let key = self.inner.store.delete(id, &authority, &Self::mutation(caller, target.request_id)).await?;
        self.inner.verifier.key_changed(id);
        Ok(v1::DeleteApiKeyResponse { api_key: Some(self.with_balances(&key).await?) })
    }

    async fn undelete(&self, caller: &Caller, id: &str, request_id: &str) -> Result<v1::UndeleteApiKeyResponse> {
        let authority = cases::authorize_key_mutation(caller, Action::UndeleteKey)?;
        let target = requests::target(id, request_id)?;
        let id = self.resolve(target.command).await?;
        let mutation = Self::mutation(caller, target.request_id);
        let retention = self.inner.settings.undelete_retention;
        let quota = |environment: &str| self.inner.settings.quota(environment);
        let key = self.inner.store.undelete(id, &authority, retention, &quota, &mutation).await?;
        self.inner.verifier.key_changed(id);
        Ok(v1::UndeleteApiKeyResponse { api_key: Some(self.with_balances(&key).await?) })
    }

    async fn rotate(&self, caller: &Caller, request: v1::RotateApiKeyRequest) -> Result<v1::RotateApiKeyResponse> {
        let authority = cases::admit_rotation(caller, !request.import_secret.is_empty())?;
        let rotation = requests::rotation(request)?;
        let id = self.resolve(rotation.key).await?;
        let now = Utc::now();
        let key = self.inner.store.get(id, authority.reach()).await?;
        let hasher = self.inner.verifier.hasher();
        let (new_secret, secret) =
            cases::rotate_key(&key, rotation.import_secret, rotation.grace, &self.inner.settings, hasher, now)?;
        let mutation = Mutation { actor: caller.subject(), request_id: rotation.request_id, now };
        let key = self.inner.store.rotate(id, &authority, &new_secret, &mutation).await?;
        self.inner.verifier.key_changed(id);
        self.inner.verifier.secret_created(&new_secret.hash);
        Ok(v1::RotateApiKeyResponse {
            api_key: Some(self.with_balances(&key).await?),
            secret: secret.expose_secret().to_owned(),
        })
    }

    async fn key_quota(&self, caller: &Caller, request: v1::GetKeyQuotaRequest) -> Result<v1::GetKeyQuotaResponse> {
        policy::authorize(caller, Action::ReadQuota)?;
        let (owner, environment) = requests::quota(request, &self.inner.settings.environments)?;
        let owner = cases::quota_owner(caller, owner)?;
        let used = self.inner.store.count_live(&owner, &environment, Utc::now()).await?;
        Ok(v1::GetKeyQuotaResponse { used, limit: self.inner.settings.quota(&environment) })
    }
}

#[tonic::async_trait]
impl ApiKeyService for ApiKeyServiceImpl {
    #[tracing::instrument(name = "CreateApiKey", skip_all)]
    async fn create_api_key(
        &self,
        request: Request<v1::CreateApiKeyRequest>,
    ) -> Result<Response<v1::CreateApiKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let request_id = request.request_id.clone();
        let result = self.create(&caller, request).await;
        audited(&self.inner.store, &caller, AuditAction::CreateKey, "", &request_id, result).await.map(Response::new)
    }

    #[tracing::instrument(name = "GetApiKey", skip_all)]
    async fn get_api_key(
        &self,
        request: Request<v1::GetApiKeyRequest>,
    ) -> Result<Response<v1::GetApiKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let v1::GetApiKeyRequest { id } = request.into_inner();
        let key = self.get(&caller, &id).await.map_err(to_status)?;
        let api_key = self.with_balances(&key).await.map_err(to_status)?;
        Ok(Response::new(v1::GetApiKeyResponse { api_key: Some(api_key) }))
    }

    #[tracing::instrument(name = "ListApiKeys", skip_all)]
    async fn list_api_keys(
        &self,
        request: Request<v1::ListApiKeysRequest>,
    ) -> Result<Response<v1::ListApiKeysResponse>, Status> {
        let caller = self.caller(&request).await?;
        self.list(&caller, request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    #[tracing::instrument(name = "UpdateApiKey", skip_all)]
    async fn update_api_key(
        &self,
        request: Request<v1::UpdateApiKeyRequest>,
    ) -> Result<Response<v1::UpdateApiKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let target = request.api_key.as_ref().map(|key| key.id.clone()).unwrap_or_default();
        let request_id = request.request_id.clone();
        let result = self.update(&caller, request).await;
        audited(&self.inner.store, &caller, AuditAction::UpdateKey, &target, &request_id, result)
            .await
            .map(Response::new)
    }

    #[tracing::instrument(name = "DeleteApiKey", skip_all)]
    async fn delete_api_key(
        &self,
        request: Request<v1::DeleteApiKeyRequest>,
    ) -> Result<Response<v1::DeleteApiKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let v1::DeleteApiKeyRequest { id, request_id } = request.into_inner();
        let result = self.delete(&caller, &id, &request_id).await.map_err(|err| err.naming(&id));
        audited(&self.inner.store, &caller, AuditAction::DeleteKey, &id, &request_id, result).await.map(Response::new)
    }

    #[tracing::instrument(name = "UndeleteApiKey", skip_all)]
    async fn undelete_api_key(
        &self,
        request: Request<v1::UndeleteApiKeyRequest>,
    ) -> Result<Response<v1::UndeleteApiKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let v1::UndeleteApiKeyRequest { id, request_id } = request.into_inner();
        let result = self.undelete(&caller, &id, &request_id).await.map_err(|err| err.naming(&id));
        audited(&self.inner.store, &caller, AuditAction::UndeleteKey, &id, &request_id, result).await.map(Response::new)
    }

    #[tracing::instrument(name = "RotateApiKey", skip_all)]
    async fn rotate_api_key(
        &self,
        request: Request<v1::RotateApiKeyRequest>,
    ) -> Result<Response<v1::RotateApiKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let (id, request_id) = (request.id.clone(), request.request_id.clone());
        let result = self.rotate(&caller, request).await.map_err(|err| err.naming(&id));
        audited(&self.inner.store, &caller, AuditAction::RotateKey, &id, &request_id, result).await.map(Response::new)
    }

    #[tracing::instrument(name = "VerifyApiKey", skip_all, fields(api_key.id = tracing::field::Empty))]
    async fn verify_api_key(
        &self,
        request: Request<v1::VerifyApiKeyRequest>,
    ) -> Result<Response<v1::VerifyApiKeyResponse>, Status> {
        let at = Moment::now();
        let caller = self.inner.verifier.authenticate_at(request.metadata(), at).await.map_err(to_status)?;
        policy::authorize(&caller, Action::VerifyKey).map_err(to_status)?;
        let requests::Verification { key, required_scopes, scope_query, network, credits, request_id, rate, hold } =
            requests::verification(request.into_inner()).map_err(to_status)?;
        let query = self.inner.verifier.query(&scope_query).map_err(to_status)?;
        // The actor is only written with a charge or a hold: no allocation on the
        // unmetered hot path.
        let actor = if credits.is_empty() && hold.is_none() { String::new() } else { caller.subject() };
        let cost = Cost { credits, request_id, actor, rate, hold };
        let verification = self
            .inner
            .verifier
            .verify(&key, &required_scopes, query.as_deref(), &network, cost, at)
            .await
            .map_err(to_status)?;
        if let Some(key) = verification.key() {
            tracing::Span::current().record("api_key.id", tracing::field::display(key.id));
        }
        tracing::debug!(code = ?verification.verdict, "verified");
        Ok(Response::new(v1::VerifyApiKeyResponse {
            valid: verification.verdict == keyward_core::verify::Verdict::Valid,
            code: convert::verification_code(verification.verdict).into(),
            api_key: None,
            encoded_api_key: verification.record.as_deref().map(|record| convert::encoded_api_key(record, at.wall)),
            remaining_credits: convert::credits(&verification.remaining),
            rate_limits: verification.limits.iter().map(convert::rate_limit_state).collect(),
            missing_scopes: verification.missing,
            hold_id: verification.hold_id.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    #[tracing::instrument(name = "GetCallerApiKey", skip_all)]
    async fn get_caller_api_key(
        &self,
        request: Request<v1::GetCallerApiKeyRequest>,
    ) -> Result<Response<v1::GetCallerApiKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        policy::authorize(&caller, Action::ReadCallerKey).map_err(to_status)?;
        let v1::GetCallerApiKeyRequest {} = request.into_inner();
        match caller {
            Caller::Key(key) => {
                let api_key = self.with_balances(&key).await.map_err(to_status)?;
                Ok(Response::new(v1::GetCallerApiKeyResponse { api_key: Some(api_key) }))
            }
            Caller::Person(_) => Err(to_status(Error::PermissionDenied { action: Action::ReadCallerKey.describe() })),
        }
    }

    #[tracing::instrument(name = "GetKeyQuota", skip_all)]
    async fn get_key_quota(
        &self,
        request: Request<v1::GetKeyQuotaRequest>,
    ) -> Result<Response<v1::GetKeyQuotaResponse>, Status> {
        let caller = self.caller(&request).await?;
        self.key_quota(&caller, request.into_inner()).await.map(Response::new).map_err(to_status)
    }
}
