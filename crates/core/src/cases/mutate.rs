//! Changing existing keys: update, rotate, delete and undelete decide the authority they
//! run under (the store admits the locked row against it), and what they install.

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::KeySettings;
use crate::{
    Error,
    credit::Credit,
    error::Result,
    model::{ApiKey, KeyPatch, KeyStatus, NewSecret},
    policy::{self, Action, Authority, Caller},
    secret::{self, SecretHasher},
};

/// A validated UpdateApiKey.
#[derive(Debug, Default)]
pub struct UpdateKey {
    pub patch: KeyPatch,
    /// Credits given or taken in the same transaction.
    pub credit_deltas: Vec<Credit>,
    pub credit_reason: String,
    /// A secret brought from elsewhere, replacing the key's at once.
    pub import_secret: Option<SecretString>,
}

/// What an update writes, under which authority.
#[derive(Debug)]
pub struct Update {
    pub authority: Authority,
    pub secret: Option<NewSecret>,
    /// How a status in the patch may bring the key back if it turns out revoked; whether
    /// it is revoked is only known once the store holds its row.
    pub restore: Restore,
}

/// Bringing a revoked key back through an update that sets its status: judged against the
/// locked row exactly as UndeleteApiKey judges it, so that neither path is the laxer one.
#[derive(Debug, Clone)]
pub struct Restore {
    caller: Caller,
    retention: Duration,
}

impl Restore {
    /// Admits bringing `key` (revoked) back at `now`: the right to undelete it, within the
    /// retention window.
    pub fn admit(&self, key: &ApiKey, now: DateTime<Utc>) -> Result<()> {
        policy::authorize_mutation(&self.caller, Action::UndeleteKey)?.admit(key)?;
        restorable(key, self.retention, now)
    }
}

/// Whether `key` may come back at `now`: revoked, and less than `retention` ago.
pub fn restorable(key: &ApiKey, retention: Duration, now: DateTime<Utc>) -> Result<()> {
    let id = key.id;
    let deleted_at = match (key.status, key.deleted_at) {
        (KeyStatus::Revoked, Some(at)) => at,
        (KeyStatus::Revoked, None) | (KeyStatus::Active | KeyStatus::Inactive, _) => {
            return Err(Error::FailedPrecondition {
                reason: "API_KEY_NOT_REVOKED",
                message: format!("API key {id} is not revoked; only revoked keys can be undeleted"),
            });
        }
    };
    let retention = chrono::Duration::from_std(retention).map_err(Error::internal)?;
    if deleted_at + retention < now {
        return Err(Error::FailedPrecondition {
            reason: "RETENTION_EXPIRED",
            message: format!(
                "API key {id} was revoked at {deleted_at}, longer ago than the {}-second retention window",
                retention.num_seconds()
            ),
        });
    }
    Ok(())
}

/// Refuses a caller without the right to update keys before its request is read.
pub fn admit_update(caller: &Caller) -> Result<()> {
    policy::authorize(caller, Action::UpdateKey).map(drop)
}

/// Decides an update: the rights each changed part needs, and the secret it installs.
pub fn update_key(
    caller: &Caller,
    command: &UpdateKey,
    settings: &KeySettings,
    hasher: &SecretHasher,
    now: DateTime<Utc>,
) -> Result<Update> {
    let authority = policy::authorize_patch(caller, &command.patch)?;
    if !command.credit_deltas.is_empty() {
        policy::authorize(caller, Action::AdjustCredits)?;
    }
    let secret = match &command.import_secret {
        Some(secret) => {
            policy::authorize(caller, Action::ImportSecret)?;
            Some(new_secret(secret, settings, hasher, now))
        }
        None => None,
    };
    let restore = Restore { caller: caller.clone(), retention: settings.undelete_retention };
    Ok(Update { authority, secret, restore })
}

/// Decides a delete, undelete or rotation of keys: the caller's authority for `action`.
pub fn authorize_key_mutation(caller: &Caller, action: Action) -> Result<Authority> {
    policy::authorize_mutation(caller, action)
}

/// Decides who may rotate: importing a secret takes a right of its own. Refused before
/// the request is read.
pub fn admit_rotation(caller: &Caller, importing: bool) -> Result<Authority> {
    if importing {
        policy::authorize(caller, Action::ImportSecret)?;
    }
    policy::authorize_mutation(caller, Action::RotateKey)
}

/// Decides a rotation of `key` (read within the caller's reach): the grace the old secrets
/// get (at most the configured longest), and the new secret, generated in the key's
/// environment or imported.
pub fn rotate_key(
    key: &ApiKey,
    import_secret: Option<SecretString>,
    grace: Duration,
    settings: &KeySettings,
    hasher: &SecretHasher,
    now: DateTime<Utc>,
) -> Result<(NewSecret, SecretString)> {
    let max = settings.max_rotation_grace;
    if grace > max {
        return Err(Error::invalid(
            "grace_period",
            format!("must be between 0s and {}", humantime::format_duration(max)),
        ));
    }
    let environment = settings.environments.resolve(&key.environment).ok_or_else(|| Error::FailedPrecondition {
        reason: "ENVIRONMENT_NOT_CONFIGURED",
        message: format!("the key's environment {} is no longer configured", key.environment),
    })?;
    let secret = import_secret.unwrap_or_else(|| secret::generate(&environment.key_prefix));
    let grace = chrono::Duration::from_std(grace).map_err(Error::internal)?;
    Ok((new_secret(&secret, settings, hasher, now + grace), secret))
}

/// The owner whose quota a caller reads: the one named, or its own, if in its reach.
pub fn quota_owner(caller: &Caller, owner: String) -> Result<String> {
    let owner = if owner.is_empty() { caller.owner().to_owned() } else { owner };
    policy::authorize_owner(caller, Action::ReadQuota, &owner)?;
    Ok(owner)
}

fn new_secret(
    secret: &SecretString,
    settings: &KeySettings,
    hasher: &SecretHasher,
    old_secrets_until: DateTime<Utc>,
) -> NewSecret {
    NewSecret {
        hash: hasher.hash(secret.expose_secret()),
        hash_version: hasher.version(),
        mask: secret::mask(secret, settings.environments.prefixes()),
        old_secrets_until,
    }
}
