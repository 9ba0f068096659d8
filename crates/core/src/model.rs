//! Domain records: API keys, their status, patches and audit events.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use uuid::Uuid;

mod role;
pub use role::{GLOBAL_ROLE_PREFIX, Role, RolePatch};

/// Lifecycle status of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyStatus {
    /// Verifies.
    Active,
    /// Disabled, reversibly.
    Inactive,
    /// Soft-deleted; final unless undeleted within the retention window.
    Revoked,
}

impl KeyStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Inactive => "inactive",
            Self::Revoked => "revoked",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "inactive" => Some(Self::Inactive),
            "revoked" => Some(Self::Revoked),
            _ => None,
        }
    }
}

/// A key's status as the API shows it at a moment: the stored [`KeyStatus`], but an active
/// key whose expiry has passed reads [`ShownStatus::Expired`]. Computed, never stored, so
/// that no sweep has to catch up with the clock; [`ApiKey::status_at`] alone decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ShownStatus {
    /// Active and unexpired: verifies.
    Active,
    /// Disabled, reversibly.
    Inactive,
    /// Soft-deleted.
    Revoked,
    /// Active, but past its expiry: does not verify until the expiry is moved or cleared.
    Expired,
}

/// Whose balances a key's verifications charge and hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum CreditSource {
    /// The key's own.
    #[default]
    Key,
    /// Its owner's pool in the key's environment, shared with the owner's other pooled keys there.
    Owner,
}

impl CreditSource {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Owner => "owner",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "key" => Some(Self::Key),
            "owner" => Some(Self::Owner),
            _ => None,
        }
    }
}

/// An API key as the domain sees it. The secret is never part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// UUID v7.
    pub id: Uuid,
    /// Stable integer id for the compatibility APIs.
    pub number: i64,
    /// Human-readable name.
    pub name: String,
    /// Prefix and last 4 characters of the current secret.
    pub mask: String,
    /// Subject the key belongs to.
    pub owner: String,
    /// Subject that created the key.
    pub creator: String,
    /// Organisation id, empty if none.
    pub organization_id: String,
    /// Organisation display name, empty if none.
    pub organization_name: String,
    /// Environment label.
    pub environment: String,
    /// Granted scopes.
    pub scopes: BTreeSet<String>,
    /// Allowed networks; empty means any.
    pub networks: BTreeSet<String>,
    /// Lifecycle status.
    pub status: KeyStatus,
    /// Whether the key may only spend the credits it holds.
    pub usage_limited: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revocation time, if revoked.
    pub deleted_at: Option<DateTime<Utc>>,
    /// Last authentication or verification, if any.
    pub last_used_at: Option<DateTime<Utc>>,
    /// Free-form labels.
    pub metadata: BTreeMap<String, String>,
    /// Rate limits, names unique.
    pub rate_limits: Vec<crate::rate::RateLimit>,
    /// Whose balances its verifications charge and hold.
    pub credit_source: CreditSource,
    /// Names of the roles the key holds.
    pub roles: BTreeSet<String>,
    /// Its own scopes and its roles', together: what verification and the ceiling rule
    /// judge. Kept beside the key (and so in the verification cache) so that no check
    /// reads the roles again.
    pub effective_scopes: BTreeSet<String>,
}

impl ApiKey {
    /// The owner's pool its verifications charge and hold, when it draws on one.
    pub fn pool(&self) -> Option<Uuid> {
        (self.credit_source == CreditSource::Owner).then(|| crate::credit::pool_id(&self.owner, &self.environment))
    }

    /// Whether the key has expired at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }

    /// The status the API shows at `now`: only an active key reads expired, so a disabled
    /// or revoked key keeps saying what was done to it.
    pub fn status_at(&self, now: DateTime<Utc>) -> ShownStatus {
        match self.status {
            KeyStatus::Active if self.is_expired(now) => ShownStatus::Expired,
            KeyStatus::Active => ShownStatus::Active,
            KeyStatus::Inactive => ShownStatus::Inactive,
            KeyStatus::Revoked => ShownStatus::Revoked,
        }
    }

    /// Gives the key exactly these roles, each with its scopes, and its effective scopes
    /// from them and its own.
    pub fn hold_roles<'a>(&mut self, roles: impl IntoIterator<Item = (&'a str, &'a BTreeSet<String>)>) {
        self.roles.clear();
        self.effective_scopes.clone_from(&self.scopes);
        for (name, scopes) in roles {
            self.roles.insert(name.to_owned());
            self.effective_scopes.extend(scopes.iter().cloned());
        }
    }
}

/// Everything needed to insert a key; built by the server from a validated request.
#[derive(Debug, Clone)]
pub struct NewApiKey {
    /// The key as it will be stored (its `number` is assigned by the store).
    pub key: ApiKey,
    /// Keyed hash of its secret.
    pub secret_hash: crate::secret::SecretHash,
    /// Version of the hash secret.
    pub hash_version: i64,
    /// Initial balances, each unit once.
    pub credits: Vec<crate::credit::Credit>,
    /// Refill schedules, each unit once.
    pub refills: Vec<crate::credit::Refill>,
    /// Low-balance thresholds (`credits.low`), each unit once.
    pub low_thresholds: Vec<crate::credit::Credit>,
}

/// A secret a rotation, or an update importing one, installs.
#[derive(Debug, Clone)]
pub struct NewSecret {
    /// Keyed hash of the new secret.
    pub hash: crate::secret::SecretHash,
    /// Version of the hash secret.
    pub hash_version: i64,
    /// Mask of the new secret.
    pub mask: String,
    /// Until when the old secrets keep verifying (`now` ends them at once).
    pub old_secrets_until: DateTime<Utc>,
}

/// The fields an update may change; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyPatch {
    /// New name.
    pub name: Option<String>,
    /// New scopes.
    pub scopes: Option<BTreeSet<String>>,
    /// New networks.
    pub networks: Option<BTreeSet<String>>,
    /// New status, ACTIVE or INACTIVE only; on a revoked key it brings the key back (the
    /// store asks [`crate::cases::Restore`] first).
    pub status: Option<KeyStatus>,
    /// New expiry; `Some(None)` clears it.
    pub expires_at: Option<Option<DateTime<Utc>>>,
    /// New metadata, replacing the old.
    pub metadata: Option<BTreeMap<String, String>>,
    /// New usage limit, if changed.
    pub usage_limited: Option<bool>,
    /// New refill schedules (replacing all), if changed.
    pub refills: Option<Vec<crate::credit::Refill>>,
    /// New low-balance thresholds (replacing all), if changed.
    pub low_thresholds: Option<Vec<crate::credit::Credit>>,
    /// New rate limits (replacing all), if changed.
    pub rate_limits: Option<Vec<crate::rate::RateLimit>>,
    /// New credit source, if changed.
    pub credit_source: Option<CreditSource>,
    /// New roles (replacing all), if changed; the store resolves their scopes.
    pub roles: Option<BTreeSet<String>>,
}

impl KeyPatch {
    /// Applies the patch to `key` (at `now`); refuses to change a revoked key unless the
    /// patch sets its status, which brings it back.
    pub fn apply(&self, key: &ApiKey, now: DateTime<Utc>) -> crate::error::Result<ApiKey> {
        if key.status == KeyStatus::Revoked && self.status.is_none() {
            return Err(crate::Error::FailedPrecondition {
                reason: "API_KEY_REVOKED",
                message: format!(
                    "API key {} is revoked and cannot be updated; undelete it first, or set its status in the same update",
                    key.id
                ),
            });
        }
        let mut next = key.clone();
        if key.status == KeyStatus::Revoked {
            next.deleted_at = None;
        }
        let Self {
            name,
            scopes,
            networks,
            status,
            expires_at,
            metadata,
            usage_limited,
            refills: _,
            low_thresholds: _,
            rate_limits,
            credit_source,
            roles,
        } = self.clone();
        if let Some(name) = name {
            next.name = name;
        }
        if let Some(scopes) = scopes {
            next.scopes = scopes;
        }
        if let Some(networks) = networks {
            next.networks = networks;
        }
        if let Some(status) = status {
            next.status = status;
        }
        if let Some(expires_at) = expires_at {
            next.expires_at = expires_at;
        }
        if let Some(metadata) = metadata {
            next.metadata = metadata;
        }
        if let Some(usage_limited) = usage_limited {
            next.usage_limited = usage_limited;
        }
        if let Some(rate_limits) = rate_limits {
            next.rate_limits = rate_limits;
        }
        if let Some(credit_source) = credit_source {
            next.credit_source = credit_source;
        }
        // Effective scopes follow from the roles' scopes, which the store resolves (and
        // the ceiling rule judges) before the outcome is written.
        if let Some(roles) = roles {
            next.roles = roles;
        }
        next.updated_at = now;
        Ok(next)
    }
}

/// Who did what to which resource, and how it ended. Written for every mutation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    /// Subject of the caller (`key:<id>` for key callers).
    pub actor: String,
    /// What was done: an [`AuditAction`]'s name, e.g. `CreateApiKey`.
    pub action: String,
    /// Resource id, empty if none exists.
    pub target: String,
    /// The request's idempotency token, if given.
    pub request_id: Option<String>,
    /// `OK` or the error's code.
    pub outcome: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

/// What an audit event records. Finer than [`crate::policy::Action`], which grants the
/// right to answer: one right, managing RPC provider keys, covers five of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    /// A key was created.
    CreateKey,
    /// A key's fields, credits or secret were changed.
    UpdateKey,
    /// A key was revoked.
    DeleteKey,
    /// A revoked key was restored.
    UndeleteKey,
    /// A key was given a new secret.
    RotateKey,
    /// A key's balances were adjusted.
    AdjustCredits,
    /// An owner's pool's balances were adjusted.
    AdjustOwnerCredits,
    /// An owner's pool's refill schedules and low-balance thresholds were replaced.
    UpdateOwnerCreditPool,
    /// An owner's shared rate limits were replaced.
    SetOwnerRateLimits,
    /// An RPC provider key was created.
    CreateRpcProviderKey,
    /// An RPC provider key's secret was read.
    GetRpcProviderKey,
    /// RPC provider keys' secrets were listed.
    ListRpcProviderKeys,
    /// An RPC provider key was changed.
    UpdateRpcProviderKey,
    /// An RPC provider key was deleted.
    DeleteRpcProviderKey,
    /// A webhook endpoint was created.
    CreateWebhookEndpoint,
    /// A webhook endpoint was changed.
    UpdateWebhookEndpoint,
    /// A webhook endpoint was deleted.
    DeleteWebhookEndpoint,
    /// A webhook endpoint was given a new signing secret.
    RotateWebhookEndpointSecret,
    /// An event was queued for delivery again.
    RedeliverEvent,
    /// A credit hold was captured.
    CaptureCreditHold,
    /// A credit hold was released.
    ReleaseCreditHold,
    /// A role was created.
    CreateRole,
    /// A role was changed.
    UpdateRole,
    /// A role was deleted.
    DeleteRole,
}

impl AuditAction {
    /// Whether the action's target is an API key, named as the caller named it (its id
    /// or its number).
    pub fn targets_key(self) -> bool {
        matches!(self, Self::UpdateKey | Self::DeleteKey | Self::UndeleteKey | Self::RotateKey | Self::AdjustCredits)
    }

    /// The name stored in [`AuditEvent::action`] and in idempotency records. Stored rows
    /// and their readers hold these names, so they never change (they began as the names
    /// of the RPCs).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateKey => "CreateApiKey",
            Self::UpdateKey => "UpdateApiKey",
            Self::DeleteKey => "DeleteApiKey",
            Self::UndeleteKey => "UndeleteApiKey",
            Self::RotateKey => "RotateApiKey",
            Self::AdjustCredits => "AdjustCredits",
            Self::AdjustOwnerCredits => "AdjustOwnerCredits",
            Self::UpdateOwnerCreditPool => "UpdateOwnerCreditPool",
            Self::SetOwnerRateLimits => "SetOwnerRateLimits",
            Self::CreateRpcProviderKey => "CreateRpcProviderKey",
            Self::GetRpcProviderKey => "GetRpcProviderKey",
            Self::ListRpcProviderKeys => "ListRpcProviderKeys",
            Self::UpdateRpcProviderKey => "UpdateRpcProviderKey",
            Self::DeleteRpcProviderKey => "DeleteRpcProviderKey",
            Self::CreateWebhookEndpoint => "CreateWebhookEndpoint",
            Self::UpdateWebhookEndpoint => "UpdateWebhookEndpoint",
            Self::DeleteWebhookEndpoint => "DeleteWebhookEndpoint",
            Self::RotateWebhookEndpointSecret => "RotateWebhookEndpointSecret",
            Self::RedeliverEvent => "RedeliverEvent",
            Self::CaptureCreditHold => "CaptureCreditHold",
            Self::ReleaseCreditHold => "ReleaseCreditHold",
            Self::CreateRole => "CreateRole",
            Self::UpdateRole => "UpdateRole",
            Self::DeleteRole => "DeleteRole",
        }
    }

    /// Whether the action changes state. A change that succeeds writes its event in its
    /// own transaction; a read that reveals secrets, and any failure, are recorded apart.
    pub fn is_change(self) -> bool {
        match self {
            Self::GetRpcProviderKey | Self::ListRpcProviderKeys => false,
            Self::CreateKey
            | Self::UpdateKey
            | Self::DeleteKey
            | Self::UndeleteKey
            | Self::RotateKey
            | Self::AdjustCredits
            | Self::AdjustOwnerCredits
            | Self::UpdateOwnerCreditPool
            | Self::SetOwnerRateLimits
            | Self::CreateRpcProviderKey
            | Self::UpdateRpcProviderKey
            | Self::DeleteRpcProviderKey
            | Self::CreateWebhookEndpoint
            | Self::UpdateWebhookEndpoint
            | Self::DeleteWebhookEndpoint
            | Self::RotateWebhookEndpointSecret
            | Self::RedeliverEvent
            | Self::CaptureCreditHold
            | Self::ReleaseCreditHold
            | Self::CreateRole
            | Self::UpdateRole
            | Self::DeleteRole => true,
        }
    }
}

/// An upstream provider credential. Its secret exists in clear only in memory.
#[derive(Debug, Clone)]
pub struct RpcProviderKey {
    /// UUID v7.
    pub id: Uuid,
    /// Network, e.g. `Preprod`.
    pub network: String,
    /// Provider, e.g. `Blockfrost`.
    pub provider: String,
    /// The credential.
    pub secret: secrecy::SecretString,
    /// Free-form description.
    pub description: String,
    /// Whether it is in use.
    pub enabled: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// The fields an RPC provider key update may change; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct RpcProviderKeyPatch {
    /// New secret.
    pub secret: Option<secrecy::SecretString>,
    /// New description.
    pub description: Option<String>,
    /// New enabled flag.
    pub enabled: Option<bool>,
}
