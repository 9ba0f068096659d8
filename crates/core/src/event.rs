//! Events of keys that webhooks deliver: their types, which change makes which, and
//! their payload as the Standard Webhooks convention shapes it (`type`, `timestamp`,
//! `data`, and the key's event `sequence`). The key in a payload is the key as the API shows it: the mask, never a secret.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::model::{ApiKey, AuditAction, CreditSource, Role, ShownStatus};

/// What an event tells of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    /// A key was created.
    KeyCreated,
    /// A key's fields, credits or secret were changed by UpdateApiKey.
    KeyUpdated,
    /// A key was revoked.
    KeyRevoked,
    /// A revoked key was restored.
    KeyUndeleted,
    /// A key was given a new secret by RotateApiKey.
    KeyRotated,
    /// A key expires within the configured lead time.
    KeyExpiring,
    /// A key has expired.
    KeyExpired,
    /// A balance fell below the key's low threshold for its unit (once per crossing).
    CreditsLow,
    /// A balance fell to 0 (once per exhaustion).
    CreditsExhausted,
    /// A credit hold was released by the server at its expiry (once per hold).
    CreditsHoldExpired,
    /// A role was created.
    RoleCreated,
    /// A role was changed (and with it every key holding it).
    RoleUpdated,
    /// A role was deleted (and taken from the keys holding it, if forced).
    RoleDeleted,
}

impl EventType {
    /// Every event type.
    pub const ALL: [Self; 13] = [
        Self::KeyCreated,
        Self::KeyUpdated,
        Self::KeyRevoked,
        Self::KeyUndeleted,
        Self::KeyRotated,
        Self::KeyExpiring,
        Self::KeyExpired,
        Self::CreditsLow,
        Self::CreditsExhausted,
        Self::CreditsHoldExpired,
        Self::RoleCreated,
        Self::RoleUpdated,
        Self::RoleDeleted,
    ];

    /// The type's name, as endpoints subscribe to it and payloads carry it. Stored; never changes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KeyCreated => "api_key.created",
            Self::KeyUpdated => "api_key.updated",
            Self::KeyRevoked => "api_key.revoked",
            Self::KeyUndeleted => "api_key.undeleted",
            Self::KeyRotated => "api_key.rotated",
            Self::KeyExpiring => "api_key.expiring",
            Self::KeyExpired => "api_key.expired",
            Self::CreditsLow => "credits.low",
            Self::CreditsExhausted => "credits.exhausted",
            Self::CreditsHoldExpired => "credits.hold_expired",
            Self::RoleCreated => "role.created",
            Self::RoleUpdated => "role.updated",
            Self::RoleDeleted => "role.deleted",
        }
    }

    /// The type named `name`, if there is one.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// The event a successful key mutation makes, if any.
    pub fn of_action(action: AuditAction) -> Option<Self> {
        match action {
            AuditAction::CreateKey => Some(Self::KeyCreated),
            AuditAction::UpdateKey => Some(Self::KeyUpdated),
            AuditAction::DeleteKey => Some(Self::KeyRevoked),
            AuditAction::UndeleteKey => Some(Self::KeyUndeleted),
            AuditAction::RotateKey => Some(Self::KeyRotated),
            AuditAction::AdjustCredits
            | AuditAction::AdjustOwnerCredits
            | AuditAction::UpdateOwnerCreditPool
            | AuditAction::SetOwnerRateLimits
            | AuditAction::CreateRpcProviderKey
            | AuditAction::GetRpcProviderKey
            | AuditAction::ListRpcProviderKeys
            | AuditAction::UpdateRpcProviderKey
            | AuditAction::DeleteRpcProviderKey
            | AuditAction::CreateWebhookEndpoint
            | AuditAction::UpdateWebhookEndpoint
            | AuditAction::DeleteWebhookEndpoint
            | AuditAction::RotateWebhookEndpointSecret
            | AuditAction::RedeliverEvent
            | AuditAction::CaptureCreditHold
            | AuditAction::ReleaseCreditHold
            | AuditAction::CreateRole
            | AuditAction::UpdateRole
            | AuditAction::DeleteRole => None,
        }
    }
}

/// RFC 3339 in UTC, as proto3 JSON writes timestamps.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The key as the REST API shows it at `now` (proto3 JSON names; an active key past its
/// expiry reads EXPIRED); no secret, only its mask.
pub fn key_json(key: &ApiKey, now: DateTime<Utc>) -> Value {
    let ApiKey {
        id,
        number,
        name,
        mask,
        owner,
        creator,
        organization_id,
        organization_name,
        environment,
        scopes,
        networks,
        status: _,
        usage_limited,
        created_at,
        updated_at,
        expires_at,
        deleted_at,
        last_used_at,
        metadata,
        rate_limits,
        credit_source,
        roles,
        effective_scopes,
    } = key;
    let credit_source = match credit_source {
        CreditSource::Key => "CREDIT_SOURCE_KEY",
        CreditSource::Owner => "CREDIT_SOURCE_OWNER",
    };
    let status = match key.status_at(now) {
        ShownStatus::Active => "API_KEY_STATUS_ACTIVE",
        ShownStatus::Inactive => "API_KEY_STATUS_INACTIVE",
        ShownStatus::Revoked => "API_KEY_STATUS_REVOKED",
        ShownStatus::Expired => "API_KEY_STATUS_EXPIRED",
    };
    let limits: Vec<Value> = rate_limits
        .iter()
        .map(|limit| {
            json!({
                "name": limit.name,
                "limit": limit.limit.to_string(),
                "period": format!("{}s", limit.period_ms as f64 / 1000.0),
                "burst": limit.burst.to_string(),
                "autoApply": limit.auto_apply,
            })
        })
        .collect();
    json!({
        "id": id.to_string(),
        "number": number.to_string(),
        "name": name,
        "mask": mask,
        "owner": owner,
        "creator": creator,
        "organizationId": organization_id,
        "organizationName": organization_name,
        "environment": environment,
        "scopes": scopes,
        "networks": networks,
        "status": status,
        "usageLimited": usage_limited,
        "createTime": rfc3339(*created_at),
        "updateTime": rfc3339(*updated_at),
        "expireTime": expires_at.map(rfc3339),
        "deleteTime": deleted_at.map(rfc3339),
        "lastUseTime": last_used_at.map(rfc3339),
        "metadata": metadata,
        "rateLimits": limits,
        "creditSource": credit_source,
        "roles": roles,
        "effectiveScopes": effective_scopes,
    })
}

/// Who made a change, under which idempotency token.
#[derive(Debug, Clone, Copy)]
pub struct Author<'a> {
    /// The actor, as audit events name it.
    pub actor: &'a str,
    /// The request's idempotency token, if any.
    pub request_id: Option<&'a str>,
}

/// `data` of a key mutation's event: the key as it is at `now`, as it was (for an
/// update) and who changed it.
pub fn key_change(key: &ApiKey, previous: Option<&ApiKey>, author: Author<'_>, now: DateTime<Utc>) -> Value {
    let mut data = json!({
        "apiKey": key_json(key, now),
        "actor": author.actor,
        "requestId": author.request_id,
    });
    if let (Some(previous), Some(object)) = (previous, data.as_object_mut()) {
        object.insert("previousApiKey".to_owned(), key_json(previous, now));
    }
    data
}

/// `data` of a time event at `now`: the key and the expiry it is about (`api_key.expired`
/// is written once the expiry passed, so its key reads EXPIRED).
pub fn key_expiry(key: &ApiKey, expires_at: DateTime<Utc>, now: DateTime<Utc>) -> Value {
    json!({ "apiKey": key_json(key, now), "expireTime": rfc3339(expires_at) })
}

/// `data` of a balance event at `now`: the key, the unit, its balance and, for
/// `credits.low`, the threshold crossed.
pub fn balance_alert(key: &ApiKey, unit: &str, balance: i64, threshold: Option<i64>, now: DateTime<Utc>) -> Value {
    let mut data = json!({ "apiKey": key_json(key, now), "unit": unit, "balance": balance.to_string() });
    if let (Some(threshold), Some(object)) = (threshold, data.as_object_mut()) {
        object.insert("threshold".to_owned(), Value::String(threshold.to_string()));
    }
    data
}

/// `data` of a balance event of an owner's pool: the pool (owner and environment), the
/// unit, its balance and, for `credits.low`, the threshold crossed.
pub fn pool_balance_alert(owner: &str, environment: &str, unit: &str, balance: i64, threshold: Option<i64>) -> Value {
    let mut data = json!({
        "ownerPool": { "owner": owner, "environment": environment },
        "unit": unit,
        "balance": balance.to_string(),
    });
    if let (Some(threshold), Some(object)) = (threshold, data.as_object_mut()) {
        object.insert("threshold".to_owned(), Value::String(threshold.to_string()));
    }
    data
}

/// `data` of `credits.hold_expired` at `now`: the key, the hold and what it had reserved.
pub fn hold_expired(key: &ApiKey, hold: &crate::hold::Hold, now: DateTime<Utc>) -> Value {
    let amounts: Vec<Value> =
        hold.amounts.iter().map(|credit| json!({ "unit": credit.unit, "amount": credit.amount.to_string() })).collect();
    json!({
        "apiKey": key_json(key, now),
        "holdId": hold.id.to_string(),
        "amounts": amounts,
        "expireTime": rfc3339(hold.expires_at),
    })
}

/// `data` of a role event: the role as the API shows it (and as it was, for an update),
/// who changed it, and how many keys the change reached (their scopes changed with it).
pub fn role_change(role: &Role, previous: Option<&Role>, actor: &str, keys_changed: usize) -> Value {
    let role_json = |role: &Role| {
        json!({
            "name": role.name,
            "owner": role.owner,
            "description": role.description,
            "scopes": role.scopes,
            "createTime": rfc3339(role.created_at),
            "updateTime": rfc3339(role.updated_at),
        })
    };
    let mut data = json!({ "role": role_json(role), "actor": actor, "keysChanged": keys_changed });
    if let (Some(previous), Some(object)) = (previous, data.as_object_mut()) {
        object.insert("previousRole".to_owned(), role_json(previous));
    }
    data
}

/// The body posted to endpoints. `id` is the `webhook-id` header's too, so a receiver that
/// stores bodies (or a queue that drops headers) still deduplicates by it. `sequence`
/// numbers the events of one key 1, 2, 3, … in the order their changes committed:
/// deliveries may arrive in any order, and a receiver puts them back in order (or spots
/// one still to come) by it.
pub fn payload(id: Uuid, kind: EventType, at: DateTime<Utc>, sequence: i64, data: Value) -> String {
    json!({ "id": id.to_string(), "type": kind.as_str(), "timestamp": rfc3339(at), "sequence": sequence, "data": data })
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_parses_back_from_its_name() {
        for kind in EventType::ALL {
            assert_eq!(EventType::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(EventType::parse("api_key.exploded"), None);
    }
}
