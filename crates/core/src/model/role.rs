//! Roles: named bundles of scopes that keys hold, and their patches.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// What starts the name of a global role, and only of one: a key's role name says by
/// itself whether it is its owner's role or a global one.
pub const GLOBAL_ROLE_PREFIX: &str = "global:";

/// A named bundle of scopes that keys hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// UUID v7; what keys' links name.
    pub id: Uuid,
    /// Owner whose keys may hold it; empty for a global role.
    pub owner: String,
    /// Unique per owner; starts with [`GLOBAL_ROLE_PREFIX`] if and only if global.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The scopes it grants.
    pub scopes: BTreeSet<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl Role {
    /// Whether `name` is a global role's.
    pub fn is_global_name(name: &str) -> bool {
        name.starts_with(GLOBAL_ROLE_PREFIX)
    }

    /// The owner whose role `name` is, for a key or caller of `owner`: none for a global name.
    pub fn owner_of<'a>(name: &str, owner: &'a str) -> &'a str {
        if Self::is_global_name(name) { "" } else { owner }
    }

    /// How audit events name role `name` of `owner` (`role:<owner>/<name>`, `role:/<name>`
    /// for a global one): unique, and readable without a lookup.
    pub fn audit_target(owner: &str, name: &str) -> String {
        format!("role:{owner}/{name}")
    }
}

/// The fields a role update may change; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RolePatch {
    /// New description.
    pub description: Option<String>,
    /// New scopes.
    pub scopes: Option<BTreeSet<String>>,
}

impl RolePatch {
    /// The role as the patch leaves it at `now`.
    pub fn apply(&self, role: &Role, now: DateTime<Utc>) -> Role {
        let mut next = role.clone();
        if let Some(description) = &self.description {
            next.description.clone_from(description);
        }
        if let Some(scopes) = &self.scopes {
            next.scopes.clone_from(scopes);
        }
        next.updated_at = now;
        next
    }
}
