//! Creating a key: who may, whose it is, in which organisation, how long it lives, and
//! its secret.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use super::KeySettings;
use crate::{
    Error,
    credit::{Credit, Refill},
    error::Result,
    model::{ApiKey, KeyStatus, NewApiKey},
    policy::{self, Action, Caller},
    secret::{self, SecretHasher},
};

/// A validated CreateApiKey: empty owner and organisation fields take the caller's.
#[derive(Debug)]
pub struct CreateKey {
    pub name: String,
    pub owner: String,
    pub organization_id: String,
    pub organization_name: String,
    /// A configured environment's name.
    pub environment: String,
    pub scopes: BTreeSet<String>,
    pub networks: BTreeSet<String>,
    pub status: KeyStatus,
    pub usage_limited: bool,
    pub expires_at: Option<DateTime<Utc>>,
    pub metadata: BTreeMap<String, String>,
    pub credits: Vec<Credit>,
    pub refills: Vec<Refill>,
    /// Low-balance thresholds per unit.
    pub low_thresholds: Vec<Credit>,
    pub rate_limits: Vec<crate::rate::RateLimit>,
    /// Whose balances its verifications spend.
    pub credit_source: crate::model::CreditSource,
    /// A secret brought from elsewhere instead of a generated one.
    pub import_secret: Option<SecretString>,
    /// The roles the key is to hold, by name, each with its scopes (the request names
    /// them; the server fills in their scopes from the store, as [`key_owner`] finds them).
    pub roles: BTreeMap<String, BTreeSet<String>>,
}

/// The owner of a key created with `owner` asked for: the caller's own unless it names one.
pub fn key_owner<'a>(caller: &'a Caller, owner: &'a str) -> &'a str {
    if owner.is_empty() { caller.owner() } else { owner }
}

/// What a creation writes, and the secret shown once.
#[derive(Debug)]
pub struct Creation {
    pub new: NewApiKey,
    pub secret: SecretString,
    /// The owner's live-key quota in the key's environment.
    pub max_live_keys: i64,
}

/// Refuses a caller without the right to create keys (or to import a secret) before its
/// request is read.
pub fn admit_create(caller: &Caller, importing: bool) -> Result<()> {
    policy::authorize(caller, Action::CreateKey)?;
    if importing {
        policy::authorize(caller, Action::ImportSecret)?;
    }
    Ok(())
}

/// Decides a new key: its owner and organisation, its expiry, its secret, and whether the
/// caller may create it at all (the ceiling rule, and admin for initial credits).
pub fn create_key(
    caller: &Caller,
    command: CreateKey,
    settings: &KeySettings,
    hasher: &SecretHasher,
    now: DateTime<Utc>,
) -> Result<Creation> {
    let CreateKey {
        name,
        owner,
        organization_id,
        organization_name,
        environment,
        scopes,
        networks,
        status,
        usage_limited,
        expires_at,
        metadata,
        credits,
        refills,
        low_thresholds,
        rate_limits,
        credit_source,
        import_secret,
        roles,
    } = command;
    admit_create(caller, import_secret.is_some())?;
    let environment = settings.environments.resolve(&environment).ok_or_else(|| {
        Error::invalid(
            "api_key.environment",
            format!("unknown environment; use one of {}", settings.environments.names().join(", ")),
        )
    })?;
    let owner = key_owner(caller, &owner).to_owned();
    // A key belongs to its creator's organisation unless the request names another.
    let (own_id, own_name) = caller.organization();
    let (organization_id, organization_name) = if organization_id.is_empty() || organization_id == own_id {
        let name = if organization_name.is_empty() { own_name.to_owned() } else { organization_name };
        (own_id.to_owned(), name)
    } else {
        (organization_id, organization_name)
    };
    // Without an explicit expiry a key lives the environment's TTL, and never past the
    // expiry of a key that creates it.
    let expires_at = expires_at.or_else(|| {
        let default = environment.default_ttl.and_then(|ttl| chrono::Duration::from_std(ttl).ok()).map(|ttl| now + ttl);
        match (default, caller.expiry_ceiling()) {
            (Some(default), Some(ceiling)) => Some(default.min(ceiling)),
            (default, ceiling) => default.or(ceiling),
        }
    });
    let secret = import_secret.unwrap_or_else(|| secret::generate(&environment.key_prefix));
    let mut key = ApiKey {
        id: Uuid::now_v7(),
        number: 0,
        name,
        mask: secret::mask(&secret, settings.environments.prefixes()),
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
        rate_limits,
        credit_source,
        roles: BTreeSet::new(),
        effective_scopes: BTreeSet::new(),
    };
    key.hold_roles(roles.iter().map(|(name, scopes)| (name.as_str(), scopes)));
    // Initial balances and refills mint credits; thresholds are set by the same right.
    policy::authorize_new_key(caller, &key, !credits.is_empty() || !refills.is_empty() || !low_thresholds.is_empty())?;
    let new = NewApiKey {
        key,
        secret_hash: hasher.hash(secret.expose_secret()),
        hash_version: hasher.version(),
        credits,
        refills,
        low_thresholds,
    };
    Ok(Creation { new, secret, max_live_keys: environment.max_live_keys })
}
