//! The judgement of a presented secret once its key is known; all in memory.

use chrono::{DateTime, Utc};

use std::collections::BTreeSet;

use crate::{
    model::{ApiKey, KeyStatus},
    scope_query::{Query, grants},
};

/// The outcome of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Valid for the request.
    Valid,
    /// Cannot be a key.
    Malformed,
    /// No key has this secret.
    NotFound,
    /// Disabled.
    Inactive,
    /// Revoked.
    Revoked,
    /// The key or this secret expired.
    Expired,
    /// A required scope is missing.
    InsufficientScope,
    /// The network is not allowed.
    NetworkNotAllowed,
    /// A usage-limited key lacks the credits the request costs; nothing was charged.
    UsageExceeded,
    /// A rate limit of the key is exhausted; nothing was charged.
    RateLimited,
}

/// Why a key found by its secret cannot be used, which the holder of that secret is told
/// (it can learn nothing of a key whose secret it does not hold).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unusable {
    /// Disabled.
    Inactive,
    /// Revoked.
    Revoked,
    /// The key or this secret expired.
    Expired,
}

impl Verdict {
    /// The state of the key that makes this verdict a refusal, when the secret found a key
    /// that cannot be used; `None` for any other verdict.
    pub fn unusable(self) -> Option<Unusable> {
        match self {
            Self::Inactive => Some(Unusable::Inactive),
            Self::Revoked => Some(Unusable::Revoked),
            Self::Expired => Some(Unusable::Expired),
            Self::Valid
            | Self::Malformed
            | Self::NotFound
            | Self::InsufficientScope
            | Self::NetworkNotAllowed
            | Self::UsageExceeded
            | Self::RateLimited => None,
        }
    }

    /// Why authentication with this secret fails, for the log; `None` when it is valid.
    pub fn auth_failure(self) -> Option<&'static str> {
        match self {
            Self::Valid => None,
            Self::Malformed => Some("malformed caller key"),
            Self::NotFound => Some("unknown caller key"),
            Self::Inactive => Some("inactive caller key"),
            Self::Revoked => Some("revoked caller key"),
            Self::Expired => Some("expired caller key"),
            Self::InsufficientScope | Self::NetworkNotAllowed | Self::UsageExceeded | Self::RateLimited => {
                Some("caller key not allowed")
            }
        }
    }
}

/// The network label of a key allowed no network at all (Masumi's `networkLimit: []`):
/// every verification that names a network fails, this label included. (An empty set of
/// networks means any network.)
pub const NO_NETWORK: &str = "keyward.reserved/no-network";

/// Judges `key`, found by a secret that itself expires at `secret_expires_at` (set during
/// a rotation grace period), against the request's scopes (all of `required_scopes`, and
/// `query` when given; a key's `*` segment grants one segment of either) and network.
pub fn judge(
    key: &ApiKey,
    secret_expires_at: Option<DateTime<Utc>>,
    required_scopes: &[String],
    query: Option<&Query>,
    network: &str,
    now: DateTime<Utc>,
) -> Verdict {
    match key.status {
        KeyStatus::Revoked => return Verdict::Revoked,
        KeyStatus::Inactive => return Verdict::Inactive,
        KeyStatus::Active => {}
    }
    if key.is_expired(now) || secret_expires_at.is_some_and(|at| at <= now) {
        return Verdict::Expired;
    }
    // Effective scopes: a key has its roles' scopes as its own.
    let scopes = &key.effective_scopes;
    if !required_scopes.iter().all(|scope| grants(scopes, scope)) || query.is_some_and(|q| !q.holds(scopes)) {
        return Verdict::InsufficientScope;
    }
    let no_network = key.networks.contains(NO_NETWORK);
    if !network.is_empty() && (no_network || (!key.networks.is_empty() && !key.networks.contains(network))) {
        return Verdict::NetworkNotAllowed;
    }
    Verdict::Valid
}

/// The fewest scopes which, added to `held`, would satisfy both `required_scopes` and
/// `query`: the required ones not held, and the smallest set the query still needs beside
/// them. Sorted.
pub fn missing_scopes(held: &BTreeSet<String>, required_scopes: &[String], query: Option<&Query>) -> Vec<String> {
    let mut missing: Vec<&str> =
        required_scopes.iter().map(String::as_str).filter(|scope| !grants(held, scope)).collect();
    missing.sort_unstable();
    missing.dedup();
    let mut more = query.map(|query| query.missing(held, &missing)).unwrap_or_default();
    more.extend(missing.into_iter().map(str::to_owned));
    more.sort();
    more
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(now: DateTime<Utc>) -> ApiKey {
        ApiKey {
            id: uuid::Uuid::now_v7(),
            number: 1,
            name: "no network".into(),
            mask: String::new(),
            owner: "o".into(),
            creator: "c".into(),
            organization_id: String::new(),
            organization_name: String::new(),
            environment: "production".into(),
            scopes: Default::default(),
            networks: Default::default(),
            status: KeyStatus::Active,
            usage_limited: false,
            created_at: now,
            updated_at: now,
            expires_at: None,
            deleted_at: None,
            last_used_at: None,
            metadata: Default::default(),
            rate_limits: vec![],
            credit_source: Default::default(),
            roles: Default::default(),
            effective_scopes: Default::default(),
        }
    }

    #[test]
    fn each_check_decides_in_order_status_expiry_scopes_network() {
        let now = Utc::now();
        let scoped = |scopes: &[&str]| scopes.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let mut key =
            ApiKey { scopes: ["read".to_owned()].into(), networks: ["Preprod".to_owned()].into(), ..key(now) };
        key.hold_roles([]);
        assert_eq!(judge(&key, None, &scoped(&["read"]), None, "Preprod", now), Verdict::Valid);
        assert_eq!(judge(&key, None, &scoped(&["read"]), None, "", now), Verdict::Valid, "no network named");
        assert_eq!(judge(&key, None, &scoped(&["read"]), None, "Mainnet", now), Verdict::NetworkNotAllowed);
        assert_eq!(judge(&key, None, &scoped(&["write"]), None, "Mainnet", now), Verdict::InsufficientScope);
        let rotated_away = Some(now - chrono::Duration::seconds(1));
        assert_eq!(
            judge(&key, rotated_away, &scoped(&["write"]), None, "", now),
            Verdict::Expired,
            "an old secret past its grace"
        );
        assert_eq!(
            judge(&key, Some(now + chrono::Duration::seconds(1)), &[], None, "", now),
            Verdict::Valid,
            "within its grace"
        );
        key.expires_at = Some(now);
        assert_eq!(judge(&key, None, &scoped(&["write"]), None, "", now), Verdict::Expired, "expired at the instant");
        key.status = KeyStatus::Inactive;
        assert_eq!(judge(&key, None, &[], None, "", now), Verdict::Inactive);
        key.status = KeyStatus::Revoked;
        assert_eq!(judge(&key, None, &[], None, "", now), Verdict::Revoked, "revocation is told before expiry");
    }

    #[test]
    fn an_active_key_reads_expired_exactly_when_it_verifies_expired() {
        use crate::model::ShownStatus;
        let now = Utc::now();
        let second = chrono::Duration::seconds(1);
        let mut key = key(now);
        for (expires_at, shown) in [
            (None, ShownStatus::Active),
            (Some(now + second), ShownStatus::Active),
            (Some(now), ShownStatus::Expired),
            (Some(now - second), ShownStatus::Expired),
        ] {
            key.expires_at = expires_at;
            assert_eq!(key.status_at(now), shown, "{expires_at:?}");
            assert_eq!(judge(&key, None, &[], None, "", now) == Verdict::Expired, shown == ShownStatus::Expired);
        }
        // A disabled or revoked key keeps saying what was done to it.
        key.status = KeyStatus::Inactive;
        assert_eq!(key.status_at(now), ShownStatus::Inactive);
        key.status = KeyStatus::Revoked;
        assert_eq!(key.status_at(now), ShownStatus::Revoked);
    }

    #[test]
    fn a_key_with_no_network_fails_every_named_network_even_the_reserved_label() {
        let now = Utc::now();
        let key = ApiKey { networks: [NO_NETWORK.to_owned()].into(), ..key(now) };
        for network in ["Preprod", "Mainnet", NO_NETWORK] {
            assert_eq!(judge(&key, None, &[], None, network, now), Verdict::NetworkNotAllowed, "{network}");
        }
        // Authentication names no network: the key still identifies its caller.
        assert_eq!(judge(&key, None, &[], None, "", now), Verdict::Valid);
    }
}
