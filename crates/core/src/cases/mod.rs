//! The use cases of key management. Each takes the caller, a validated command, the
//! settings and `now`, and decides: what to write, or the refusal. With the policy table
//! these are the only places rights and rules are decided; the server's handlers convert
//! requests in, call a use case and the store, and convert the answer out.

mod create;
mod limits;
mod mutate;

pub use create::{CreateKey, Creation, admit_create, create_key, key_owner};
pub use limits::{admit_set_limits, limits_owner};
pub use mutate::{
    Restore, Update, UpdateKey, admit_rotation, admit_update, authorize_key_mutation, quota_owner, restorable,
    rotate_key, update_key,
};

use std::time::Duration;

use crate::environment::Environments;

/// The operator's settings the use cases apply.
#[derive(Debug, Clone)]
pub struct KeySettings {
    /// The configured environments: key prefixes, default TTLs, live-key quotas.
    pub environments: Environments,
    /// How long a revoked key may be brought back.
    pub undelete_retention: Duration,
    /// The longest grace period a rotation may give the old secret.
    pub max_rotation_grace: Duration,
}

impl KeySettings {
    /// The live-key quota of an environment (unlimited for one no longer configured).
    pub fn quota(&self, environment: &str) -> i64 {
        self.environments.resolve(environment).map_or(i64::MAX, |env| env.max_live_keys)
    }
}

#[cfg(test)]
mod tests;
