//! `keyward.v1.ApiKeyService`. Each handler authenticates, asks the policy table,
//! converts the request in, calls the store, and converts the answer out.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use keyward_core::{
    Error,
    credit::{Credit, Refill, RefillPeriod},
    environment::{Environment, Environments},
    error::Result,
    model::{ApiKey, AuditAction, AuditEvent, KeyPatch, KeyStatus, NewApiKey},
    page,
    policy::{self, Action, Authority, Caller, Reach},
    secret,
    validate::{AmountRule, Checks, KeyRef},
};
use keyward_proto::v1::{self, api_key_service_server::ApiKeyService};
use keyward_store::{KeyUpdate, ListQuery, Mutation, NewSecret, Store};
use secrecy::{ExposeSecret, SecretString};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    convert::{self, from_timestamp},
    status::{code_name, to_status},
    verifier::{Cost, Verifier},
};

/// Settings the handlers need.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub(crate) environments: Environments,
    pub(crate) undelete_retention: Duration,
    pub(crate) max_rotation_grace: Duration,
}

/// The ApiKeyService implementation.
#[derive(Debug, Clone)]
pub struct ApiKeyServiceImpl {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    verifier: Verifier,
    rules: Rules,
}

/// One validated UpdateApiKey.
struct Change {
    key: KeyRef,
    /// The key as the caller named it, for NOT_FOUND answers.
    asked: String,
    patch: KeyPatch,
    credit_deltas: Vec<Credit>,
    credit_reason: String,
    import_secret: Option<SecretString>,
    request_id: Option<String>,
}

const UPDATABLE_FIELDS: [&str; 8] =
    ["name", "scopes", "networks", "status", "expire_time", "metadata", "usage_limited", "credit_refills"];

impl ApiKeyServiceImpl {
    pub(crate) fn new(store: Store, verifier: Verifier, rules: Rules) -> Self {
        Self { inner: Arc::new(Inner { store, verifier, rules }) }
    }

    /// A key as answered: with its balances and refill schedules.
    async fn shown(&self, key: &ApiKey) -> Result<v1::ApiKey> {
        Ok(self.shown_all(std::slice::from_ref(key)).await?.pop().unwrap_or_else(|| convert::api_key(key)))
    }

    async fn shown_all(&self, keys: &[ApiKey]) -> Result<Vec<v1::ApiKey>> {
        let ids: Vec<Uuid> = keys.iter().map(|key| key.id).collect();
        let mut views = self.inner.store.credit_views(&ids).await?;
        Ok(keys
            .iter()
            .map(|key| convert::api_key_with_credits(key, views.remove(&key.id).unwrap_or_default()))
            .collect())
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        self.inner.verifier.authenticate(request.metadata()).await.map_err(to_status)
    }

    fn environment(&self, checks: &mut Checks, field: &str, name: &str) -> Option<&Environment> {
        let found = self.inner.rules.environments.resolve(name);
        if found.is_none() {
            checks.fail(
                field,
                format!("unknown environment; use one of {}", self.inner.rules.environments.names().join(", ")),
            );
        }
        found
    }

    async fn audited<T>(
        &self,
        caller: &Caller,
        action: AuditAction,
        target: &str,
        request_id: &str,
        result: Result<T>,
    ) -> Result<T, Status> {
        audited(&self.inner.store, caller, action, target, request_id, result).await
    }

    fn create(
        &self,
        caller: &Caller,
        request: v1::CreateApiKeyRequest,
        now: DateTime<Utc>,
    ) -> Result<(NewApiKey, SecretString, i64, Mutation)> {
        let v1::CreateApiKeyRequest { api_key, request_id, import_secret } = request;
        // Callers without the right are refused before their request is read.
        policy::authorize(caller, Action::CreateKey)?;
        if !import_secret.is_empty() {
            policy::authorize(caller, Action::ImportSecret)?;
        }
        let Some(api_key) = api_key else {
            return Err(Error::invalid("api_key", "is required"));
        };
        let mut checks = Checks::new();
        let v1::ApiKey {
            id: _,
            number: _,
            name,
            mask: _,
            owner,
            creator: _,
            organization_id,
            organization_name,
            environment,
            scopes,
            networks,
            status,
            usage_limited,
            create_time: _,
            update_time: _,
            expire_time,
            delete_time: _,
            last_use_time: _,
            metadata,
            credits,
            credit_refills,
        } = api_key;
        checks.name("api_key.name", &name);
        let credits = checks.credits("api_key.credits", &convert::credits_in(&credits), AmountRule::NonNegative);
        let refills = refills(&mut checks, "api_key.credit_refills", &credit_refills);
        checks.subject("api_key.owner", &owner);
        checks.subject("api_key.organization_id", &organization_id);
        checks.subject("api_key.organization_name", &organization_name);
        let environment = self.environment(&mut checks, "api_key.environment", &environment).cloned();
        let scopes = checks.labels("api_key.scopes", &scopes);
        let networks = checks.labels("api_key.networks", &networks);
        let metadata = checks.metadata("api_key.metadata", &metadata);
        let status = match v1::ApiKeyStatus::try_from(status) {
            Ok(v1::ApiKeyStatus::Unspecified | v1::ApiKeyStatus::Active) => KeyStatus::Active,
            Ok(v1::ApiKeyStatus::Inactive) => KeyStatus::Inactive,
            Ok(v1::ApiKeyStatus::Revoked) | Err(_) => {
                checks.fail("api_key.status", "must be ACTIVE or INACTIVE (or unset) for a new key");
                KeyStatus::Active
            }
        };
        let expires_at = expire_time.as_ref().and_then(|at| future_time(&mut checks, "api_key.expire_time", at, now));
        if !import_secret.is_empty()
            && let Err(problem) = secret::check_importable(&import_secret)
        {
            checks.fail("import_secret", problem);
        }
        let request_id = checks.request_id("request_id", &request_id);
        checks.finish()?;
        let environment = environment.ok_or_else(|| Error::internal("environment vanished after validation"))?;
        let owner = if owner.is_empty() { caller.owner().to_owned() } else { owner };
        // A key belongs to its creator's organisation unless the request names another.
        let (own_id, own_name) = caller.organization();
        let (organization_id, organization_name) = if organization_id.is_empty() || organization_id == own_id {
            let name = if organization_name.is_empty() { own_name.to_owned() } else { organization_name };
            (own_id.to_owned(), name)
        } else {
            (organization_id, organization_name)
        };
        let secret = if import_secret.is_empty() {
            secret::generate(&environment.key_prefix)
        } else {
            SecretString::from(import_secret)
        };
        // Without an explicit expiry a key lives the environment's TTL, and never past
        // the expiry of a key that creates it.
        let expires_at = expires_at.or_else(|| {
            let default =
                environment.default_ttl.and_then(|ttl| chrono::Duration::from_std(ttl).ok()).map(|ttl| now + ttl);
            match (default, caller.expiry_ceiling()) {
                (Some(default), Some(ceiling)) => Some(default.min(ceiling)),
                (default, ceiling) => default.or(ceiling),
            }
        });
        let key = ApiKey {
            id: Uuid::now_v7(),
            number: 0,
            name,
            mask: secret::mask(&secret, self.inner.rules.environments.prefixes()),
            owner,
            creator: caller.subject(),
            organization_id,
            organization_name,
            environment: environment.name.clone(),
            scopes,
            networks,
            status,
            usage_limited,
            created_at: now,
            updated_at: now,
            expires_at,
            deleted_at: None,
            last_used_at: None,
            metadata,
        };
        // Initial balances and refills mint credits.
        policy::authorize_new_key(caller, &key, !credits.is_empty() || !refills.is_empty())?;
        let hasher = self.inner.verifier.hasher();
        let new = NewApiKey {
            key,
            secret_hash: hasher.hash(secret.expose_secret()),
            hash_version: hasher.version(),
            credits,
            refills,
        };
        let mutation = Mutation { actor: caller.subject(), request_id, now };
        Ok((new, secret, environment.max_live_keys, mutation))
    }

    fn patch(&self, request: v1::UpdateApiKeyRequest, now: DateTime<Utc>) -> Result<Change> {
        let v1::UpdateApiKeyRequest { api_key, update_mask, request_id, credit_deltas, credit_reason, import_secret } =
            request;
        let mut checks = Checks::new();
        let Some(api_key) = api_key else {
            return Err(Error::invalid("api_key", "is required"));
        };
        let v1::ApiKey {
            id,
            number: _,
            name,
            mask: _,
            owner: _,
            creator: _,
            organization_id: _,
            organization_name: _,
            environment: _,
            scopes,
            networks,
            status,
            usage_limited,
            create_time: _,
            update_time: _,
            expire_time,
            delete_time: _,
            last_use_time: _,
            metadata,
            credits: _,
            credit_refills,
        } = api_key;
        let key = checks.key_ref("api_key.id", &id);
        let paths = update_mask.map(|mask| mask.paths).unwrap_or_default();
        if paths.is_empty() && credit_deltas.is_empty() && import_secret.is_empty() {
            checks.fail(
                "update_mask",
                format!(
                    "is required: list the fields to change, any of {} (or give credit_deltas or import_secret)",
                    UPDATABLE_FIELDS.join(", ")
                ),
            );
        }
        if paths.len() > UPDATABLE_FIELDS.len() {
            checks.fail("update_mask", format!("must name at most {} fields", UPDATABLE_FIELDS.len()));
        }
        let mut patch = KeyPatch::default();
        for (index, path) in paths.iter().enumerate().take(UPDATABLE_FIELDS.len()) {
            match path.as_str() {
                "name" => {
                    checks.name("api_key.name", &name);
                    patch.name = Some(name.clone());
                }
                "scopes" => patch.scopes = Some(checks.labels("api_key.scopes", &scopes)),
                "networks" => patch.networks = Some(checks.labels("api_key.networks", &networks)),
                "status" => {
                    patch.status = match v1::ApiKeyStatus::try_from(status) {
                        Ok(v1::ApiKeyStatus::Active) => Some(KeyStatus::Active),
                        Ok(v1::ApiKeyStatus::Inactive) => Some(KeyStatus::Inactive),
                        Ok(v1::ApiKeyStatus::Revoked) => {
                            checks.fail("api_key.status", "cannot be set to REVOKED; call DeleteApiKey");
                            None
                        }
                        Ok(v1::ApiKeyStatus::Unspecified) | Err(_) => {
                            checks.fail("api_key.status", "must be ACTIVE or INACTIVE");
                            None
                        }
                    }
                }
                "expire_time" => {
                    patch.expires_at = Some(
                        expire_time.as_ref().and_then(|at| future_time(&mut checks, "api_key.expire_time", at, now)),
                    );
                }
                "metadata" => patch.metadata = Some(checks.metadata("api_key.metadata", &metadata)),
                "usage_limited" => patch.usage_limited = Some(usage_limited),
                "credit_refills" => {
                    patch.refills = Some(refills(&mut checks, "api_key.credit_refills", &credit_refills));
                }
                "credits" => checks.fail(
                    format!("update_mask.paths[{index}]"),
                    "balances change through credit_deltas, AdjustCredits, charges and refills",
                ),
                _ => checks.fail(
                    format!("update_mask.paths[{index}]"),
                    format!("names no updatable field; use any of {}", UPDATABLE_FIELDS.join(", ")),
                ),
            }
        }
        let amounts: Vec<Credit> =
            credit_deltas.iter().map(|delta| Credit::new(delta.unit.clone(), delta.delta)).collect();
        let credit_deltas = checks.credits("credit_deltas", &amounts, AmountRule::NonZero);
        let credit_reason = checks.reason("credit_reason", &credit_reason);
        if !import_secret.is_empty()
            && let Err(problem) = secret::check_importable(&import_secret)
        {
            checks.fail("import_secret", problem);
        }
        let request_id = checks.request_id("request_id", &request_id);
        checks.finish()?;
        let key = key.ok_or_else(|| Error::internal("id vanished after validation"))?;
        let import_secret = Some(import_secret).filter(|secret| !secret.is_empty()).map(SecretString::from);
        Ok(Change { key, asked: id, patch, credit_deltas, credit_reason, import_secret, request_id })
    }

    async fn get_key(&self, caller: &Caller, asked: &str) -> Result<ApiKey> {
        let reach = policy::authorize(caller, Action::ReadKeys)?;
        let mut checks = Checks::new();
        let key = checks.key_ref("id", asked);
        checks.finish()?;
        let id = self.resolve(key.ok_or_else(|| Error::internal("id vanished after validation"))?).await;
        let found = match id {
            Ok(id) => self.inner.store.get(id, &reach).await,
            Err(err) => Err(err),
        };
        found.map_err(|err| err.naming(asked))
    }

    async fn list(&self, caller: &Caller, request: v1::ListApiKeysRequest) -> Result<v1::ListApiKeysResponse> {
        let reach = policy::authorize(caller, Action::ReadKeys)?;
        let v1::ListApiKeysRequest {
            page_size,
            page_token,
            owner,
            organization_id,
            environment,
            status,
            show_revoked,
            start_at,
        } = request;
        let mut checks = Checks::new();
        let limit = page::page_size(page_size);
        if let Err(Error::InvalidArgument(violations)) = &limit {
            violations.iter().for_each(|v| checks.fail(v.field.clone(), v.description.clone()));
        }
        checks.subject("owner", &owner);
        checks.subject("organization_id", &organization_id);
        checks.subject("environment", &environment);
        let status = match v1::ApiKeyStatus::try_from(status) {
            Ok(v1::ApiKeyStatus::Unspecified) => None,
            Ok(v1::ApiKeyStatus::Active) => Some(KeyStatus::Active),
            Ok(v1::ApiKeyStatus::Inactive) => Some(KeyStatus::Inactive),
            Ok(v1::ApiKeyStatus::Revoked) => Some(KeyStatus::Revoked),
            Err(_) => {
                checks.fail("status", "is not a known ApiKeyStatus");
                None
            }
        };
        let start_at =
            Some(start_at).filter(|start| !start.is_empty()).and_then(|start| checks.key_ref("start_at", &start));
        checks.finish()?;
        let limit = limit?;
        let filters = format!("{reach:?}|{owner}|{organization_id}|{environment}|{status:?}|{show_revoked}");
        let after = match (page::decode(&page_token, &filters)?, start_at) {
            (Some(after), _) => Some(after),
            (None, None) => None,
            // The page starts at the key: after the number before its own.
            (None, Some(start)) => match self.start_number(start, &reach).await? {
                Some(number) => Some(number - 1),
                None => return Ok(v1::ListApiKeysResponse::default()),
            },
        };
        let some = |text: String| Some(text).filter(|t| !t.is_empty());
        let query = ListQuery {
            reach,
            owner: some(owner),
            organization_id: some(organization_id),
            environment: some(environment),
            status,
            show_revoked,
            after,
            limit: limit + 1,
        };
        let mut keys = self.inner.store.list(&query).await?;
        let next_page_token = if keys.len() as u64 > limit {
            keys.truncate(usize::try_from(limit).map_err(Error::internal)?);
            keys.last().map(|key| page::encode(key.number, &filters)).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(v1::ListApiKeysResponse { api_keys: self.shown_all(&keys).await?, next_page_token })
    }

    /// The key a mutation of `action` names, and the authority it runs under.
    async fn target(
        &self,
        caller: &Caller,
        action: Action,
        id: &str,
        request_id: &str,
    ) -> Result<(Authority, Uuid, Option<String>)> {
        let authority = policy::authorize_mutation(caller, action)?;
        let mut checks = Checks::new();
        let key = checks.key_ref("id", id);
        let request_id = checks.request_id("request_id", request_id);
        checks.finish()?;
        let key = self.resolve(key.ok_or_else(|| Error::internal("id vanished after validation"))?).await?;
        Ok((authority, key, request_id))
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

    /// The live-key quota of each environment (unlimited for one no longer configured).
    fn quota(&self) -> impl Fn(&str) -> i64 + Sync + '_ {
        |environment| self.inner.rules.environments.resolve(environment).map_or(i64::MAX, |env| env.max_live_keys)
    }

    async fn update(&self, caller: &Caller, request: v1::UpdateApiKeyRequest) -> Result<v1::UpdateApiKeyResponse> {
        // A caller without the right is refused before its request is read.
        policy::authorize(caller, Action::UpdateKey)?;
        let now = Utc::now();
        let change = self.patch(request, now)?;
        let authority = policy::authorize_patch(caller, &change.patch)?;
        if !change.credit_deltas.is_empty() {
            policy::authorize(caller, Action::AdjustCredits)?;
        }
        if change.import_secret.is_some() {
            policy::authorize(caller, Action::ImportSecret)?;
        }
        let asked = change.asked.as_str();
        let id = self.resolve(change.key).await.map_err(|err| err.naming(asked))?;
        let secret = change.import_secret.as_ref().map(|secret| {
            let hasher = self.inner.verifier.hasher();
            NewSecret {
                hash: hasher.hash(secret.expose_secret()),
                hash_version: hasher.version(),
                mask: secret::mask(secret, self.inner.rules.environments.prefixes()),
                old_secrets_until: now,
            }
        });
        let update = KeyUpdate {
            patch: &change.patch,
            credit_deltas: &change.credit_deltas,
            credit_reason: &change.credit_reason,
            secret: secret.as_ref(),
        };
        let mutation = Mutation { actor: caller.subject(), request_id: change.request_id.clone(), now };
        let quota = self.quota();
        let key =
            self.inner.store.update(id, &authority, &update, &quota, &mutation).await.map_err(|e| e.naming(asked))?;
        self.inner.verifier.key_changed(id);
        if let Some(secret) = &secret {
            self.inner.verifier.secret_created(&secret.hash);
        }
        Ok(v1::UpdateApiKeyResponse { api_key: Some(self.shown(&key).await?) })
    }

    async fn delete(&self, caller: &Caller, id: &str, request_id: &str) -> Result<v1::DeleteApiKeyResponse> {
        let (authority, key_id, request_id) = self.target(caller, Action::DeleteKey, id, request_id).await?;
        let mutation = Mutation { actor: caller.subject(), request_id, now: Utc::now() };
        let key = self.inner.store.delete(key_id, &authority, &mutation).await?;
        self.inner.verifier.key_changed(key_id);
        Ok(v1::DeleteApiKeyResponse { api_key: Some(self.shown(&key).await?) })
    }

    async fn undelete(&self, caller: &Caller, id: &str, request_id: &str) -> Result<v1::UndeleteApiKeyResponse> {
        let (authority, key_id, request_id) = self.target(caller, Action::UndeleteKey, id, request_id).await?;
        let mutation = Mutation { actor: caller.subject(), request_id, now: Utc::now() };
        let retention = self.inner.rules.undelete_retention;
        let quota = self.quota();
        let key = self.inner.store.undelete(key_id, &authority, retention, &quota, &mutation).await?;
        self.inner.verifier.key_changed(key_id);
        Ok(v1::UndeleteApiKeyResponse { api_key: Some(self.shown(&key).await?) })
    }

    async fn rotate(&self, caller: &Caller, request: v1::RotateApiKeyRequest) -> Result<v1::RotateApiKeyResponse> {
        let v1::RotateApiKeyRequest { id, grace_period, request_id, import_secret } = request;
        if !import_secret.is_empty() {
            policy::authorize(caller, Action::ImportSecret)?;
            secret::check_importable(&import_secret).map_err(|problem| Error::invalid("import_secret", problem))?;
        }
        let (authority, id, request_id) = self.target(caller, Action::RotateKey, &id, &request_id).await?;
        let max = self.inner.rules.max_rotation_grace;
        let grace = match grace_period.map(Duration::try_from) {
            None => Duration::ZERO,
            Some(Ok(grace)) if grace <= max => grace,
            Some(Ok(_) | Err(_)) => {
                return Err(Error::invalid(
                    "grace_period",
                    format!("must be between 0s and {}", humantime::format_duration(max)),
                ));
            }
        };
        let now = Utc::now();
        let key = self.inner.store.get(id, authority.reach()).await?;
        let environment =
            self.inner.rules.environments.resolve(&key.environment).ok_or_else(|| Error::FailedPrecondition {
                reason: "ENVIRONMENT_NOT_CONFIGURED",
                message: format!("the key's environment {} is no longer configured", key.environment),
            })?;
        let secret = if import_secret.is_empty() {
            secret::generate(&environment.key_prefix)
        } else {
            SecretString::from(import_secret)
        };
        let hasher = self.inner.verifier.hasher();
        let new_secret = NewSecret {
            hash: hasher.hash(secret.expose_secret()),
            hash_version: hasher.version(),
            mask: secret::mask(&secret, self.inner.rules.environments.prefixes()),
            old_secrets_until: now + chrono::Duration::from_std(grace).map_err(Error::internal)?,
        };
        let mutation = Mutation { actor: caller.subject(), request_id, now };
        let key = self.inner.store.rotate(id, &authority, &new_secret, &mutation).await?;
        self.inner.verifier.key_changed(id);
        self.inner.verifier.secret_created(&new_secret.hash);
        Ok(v1::RotateApiKeyResponse {
            api_key: Some(self.shown(&key).await?),
            secret: secret.expose_secret().to_owned(),
        })
    }

    async fn key_quota(&self, caller: &Caller, request: v1::GetKeyQuotaRequest) -> Result<v1::GetKeyQuotaResponse> {
        policy::authorize(caller, Action::ReadQuota)?;
        let v1::GetKeyQuotaRequest { owner, environment } = request;
        let mut checks = Checks::new();
        checks.subject("owner", &owner);
        let environment = self.environment(&mut checks, "environment", &environment).cloned();
        checks.finish()?;
        let environment = environment.ok_or_else(|| Error::internal("environment vanished after validation"))?;
        let owner = if owner.is_empty() { caller.owner().to_owned() } else { owner };
        policy::authorize_owner(caller, Action::ReadQuota, &owner)?;
        let used = self.inner.store.count_live(&owner, &environment.name, Utc::now()).await?;
        Ok(v1::GetKeyQuotaResponse { used, limit: environment.max_live_keys })
    }
}

/// Records the audit event that no effect carried: a failure, or a read that reveals
/// secrets (a successful change recorded its own in its transaction). Maps the error to
/// its status.
pub(crate) async fn audited<T>(
    store: &Store,
    caller: &Caller,
    action: AuditAction,
    target: &str,
    request_id: &str,
    result: Result<T>,
) -> Result<T, Status> {
    if result.is_err() || !action.is_change() {
        let event = AuditEvent {
            actor: caller.subject(),
            action: action.as_str().to_owned(),
            target: target.chars().take(64).collect(),
            request_id: Some(request_id.chars().take(64).collect::<String>()).filter(|id| !id.is_empty()),
            outcome: result.as_ref().map_or_else(|err| code_name(err).to_owned(), |_| "OK".to_owned()),
            occurred_at: Utc::now(),
        };
        if let Err(audit_err) = store.record_audit(&event).await {
            tracing::error!(error = ?audit_err, action = action.as_str(), "could not record an audit event");
        }
    }
    result.map_err(to_status)
}

/// Refill schedules: each unit once, amounts at least 1, a period set.
pub(crate) fn refills(checks: &mut Checks, field: &str, schedules: &[v1::CreditRefill]) -> Vec<Refill> {
    let amounts: Vec<Credit> = schedules.iter().map(|refill| Credit::new(refill.unit.clone(), refill.amount)).collect();
    checks.credits(field, &amounts, AmountRule::Positive);
    schedules
        .iter()
        .enumerate()
        .filter_map(|(index, refill)| {
            let period = match v1::RefillPeriod::try_from(refill.period) {
                Ok(v1::RefillPeriod::Daily) => RefillPeriod::Daily,
                Ok(v1::RefillPeriod::Monthly) => RefillPeriod::Monthly,
                Ok(v1::RefillPeriod::Unspecified) | Err(_) => {
                    checks.fail(format!("{field}[{index}].period"), "must be DAILY or MONTHLY");
                    return None;
                }
            };
            Some(Refill { unit: refill.unit.clone(), amount: refill.amount, period })
        })
        .collect()
}

fn future_time(
    checks: &mut Checks,
    field: &str,
    at: &prost_types::Timestamp,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match from_timestamp(at) {
        Some(at) if at > now => Some(at),
        Some(_) => {
            checks.fail(field, "must be in the future");
            None
        }
        None => {
            checks.fail(field, "is not a valid timestamp");
            None
        }
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
        let result = async {
            let (new, secret, max_live_keys, mutation) = self.create(&caller, request, Utc::now())?;
            let hash = new.secret_hash;
            let key = self.inner.store.create(new, max_live_keys, &mutation).await?;
            self.inner.verifier.secret_created(&hash);
            Ok(v1::CreateApiKeyResponse {
                api_key: Some(self.shown(&key).await?),
                secret: secret.expose_secret().to_owned(),
            })
        }
        .await;
        self.audited(&caller, AuditAction::CreateKey, "", &request_id, result).await.map(Response::new)
    }

    #[tracing::instrument(name = "GetApiKey", skip_all)]
    async fn get_api_key(
        &self,
        request: Request<v1::GetApiKeyRequest>,
    ) -> Result<Response<v1::GetApiKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let v1::GetApiKeyRequest { id } = request.into_inner();
        let key = self.get_key(&caller, &id).await.map_err(to_status)?;
        let api_key = self.shown(&key).await.map_err(to_status)?;
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
        self.audited(&caller, AuditAction::UpdateKey, &target, &request_id, result).await.map(Response::new)
    }

    #[tracing::instrument(name = "DeleteApiKey", skip_all)]
    async fn delete_api_key(
        &self,
        request: Request<v1::DeleteApiKeyRequest>,
    ) -> Result<Response<v1::DeleteApiKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let v1::DeleteApiKeyRequest { id, request_id } = request.into_inner();
        let result = self.delete(&caller, &id, &request_id).await.map_err(|err| err.naming(&id));
        self.audited(&caller, AuditAction::DeleteKey, &id, &request_id, result).await.map(Response::new)
    }

    #[tracing::instrument(name = "UndeleteApiKey", skip_all)]
    async fn undelete_api_key(
        &self,
        request: Request<v1::UndeleteApiKeyRequest>,
    ) -> Result<Response<v1::UndeleteApiKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        let v1::UndeleteApiKeyRequest { id, request_id } = request.into_inner();
        let result = self.undelete(&caller, &id, &request_id).await.map_err(|err| err.naming(&id));
        self.audited(&caller, AuditAction::UndeleteKey, &id, &request_id, result).await.map(Response::new)
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
        self.audited(&caller, AuditAction::RotateKey, &id, &request_id, result).await.map(Response::new)
    }

    #[tracing::instrument(name = "VerifyApiKey", skip_all, fields(api_key.id = tracing::field::Empty))]
    async fn verify_api_key(
        &self,
        request: Request<v1::VerifyApiKeyRequest>,
    ) -> Result<Response<v1::VerifyApiKeyResponse>, Status> {
        let caller = self.caller(&request).await?;
        policy::authorize(&caller, Action::VerifyKey).map_err(to_status)?;
        let v1::VerifyApiKeyRequest { key, required_scopes, network, cost, request_id } = request.into_inner();
        let mut checks = Checks::new();
        checks.labels("required_scopes", &required_scopes);
        if !network.is_empty() {
            checks.label("network", &network);
        }
        let credits = checks.credits("cost", &convert::credits_in(&cost), AmountRule::Positive);
        let request_id = checks.request_id("request_id", &request_id);
        checks.finish().map_err(to_status)?;
        // The actor is only written with a charge: no allocation on the unmetered hot path.
        let actor = if credits.is_empty() { String::new() } else { caller.subject() };
        let cost = Cost { credits, request_id, actor };
        let verification =
            self.inner.verifier.verify(&key, &required_scopes, &network, cost).await.map_err(to_status)?;
        if let Some(key) = &verification.key {
            tracing::Span::current().record("api_key.id", tracing::field::display(key.id));
        }
        tracing::debug!(code = ?verification.verdict, "verified");
        Ok(Response::new(v1::VerifyApiKeyResponse {
            valid: verification.verdict == keyward_core::verify::Verdict::Valid,
            code: convert::verification_code(verification.verdict).into(),
            api_key: verification.key.as_deref().map(convert::api_key),
            remaining_credits: convert::credits(&verification.remaining),
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
                let api_key = self.shown(&key).await.map_err(to_status)?;
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
