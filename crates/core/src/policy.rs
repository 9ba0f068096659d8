//! The one policy table: which caller may do what, and over which keys. Handlers ask
//! [`authorize`]; they never decide rights themselves.

use std::{collections::BTreeSet, sync::Arc};

use crate::{Error, model::ApiKey};

/// Scope that grants every right over every key.
pub const SCOPE_ADMIN: &str = "admin";
/// Scope to read keys and quotas of the caller's owner.
pub const SCOPE_KEYS_READ: &str = "keys:read";
/// Scope to create, change, revoke and rotate keys of the caller's owner.
pub const SCOPE_KEYS_WRITE: &str = "keys:write";
/// Scope to verify any key.
pub const SCOPE_VERIFY: &str = "verify";
/// Scopes that confer rights in keyward itself; a caller may grant only those it holds.
pub const RESERVED_SCOPES: [&str; 4] = [SCOPE_ADMIN, SCOPE_KEYS_READ, SCOPE_KEYS_WRITE, SCOPE_VERIFY];

/// Who is calling, once authenticated.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A keyward API key.
    Key(Arc<ApiKey>),
}

impl Caller {
    /// Subject recorded as the actor of audit events and as the creator of keys.
    pub fn subject(&self) -> String {
        match self {
            Self::Key(key) => format!("key:{}", key.id),
        }
    }

    /// The owner whose keys the caller acts on when its reach is [`Reach::Owner`].
    pub fn owner(&self) -> &str {
        match self {
            Self::Key(key) => &key.owner,
        }
    }

    fn scopes(&self) -> &BTreeSet<String> {
        match self {
            Self::Key(key) => &key.scopes,
        }
    }
}

/// Operations that need a right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Create a key with a generated secret.
    CreateKey,
    /// Create a key with a caller-chosen secret.
    ImportSecret,
    /// Get or list keys.
    ReadKeys,
    /// Change a key's fields.
    UpdateKey,
    /// Revoke a key.
    DeleteKey,
    /// Restore a revoked key.
    UndeleteKey,
    /// Give a key a new secret.
    RotateKey,
    /// Verify a presented secret.
    VerifyKey,
    /// Read an owner's key quota.
    ReadQuota,
    /// Read the caller's own key.
    ReadCallerKey,
    /// Create, read, change and delete RPC provider keys.
    ManageRpcProviderKeys,
    /// Read RPC provider key secrets back in clear.
    RevealRpcProviderKeys,
}

impl Action {
    /// The action in words, for PERMISSION_DENIED messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::CreateKey => "create API keys",
            Self::ImportSecret => "import caller-chosen secrets",
            Self::ReadKeys => "read API keys",
            Self::UpdateKey => "update API keys",
            Self::DeleteKey => "delete API keys",
            Self::UndeleteKey => "undelete API keys",
            Self::RotateKey => "rotate API keys",
            Self::VerifyKey => "verify API keys",
            Self::ReadQuota => "read key quotas",
            Self::ReadCallerKey => "read its own API key",
            Self::ManageRpcProviderKeys => "manage RPC provider keys",
            Self::RevealRpcProviderKeys => "read RPC provider key secrets",
        }
    }
}

/// The keys an allowed action may touch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Every key.
    All,
    /// Keys of this owner only.
    Owner(String),
}

impl Reach {
    /// Whether `key` is within reach. Keys outside it are reported NOT_FOUND, never
    /// PERMISSION_DENIED, so their existence does not leak.
    pub fn covers(&self, key: &ApiKey) -> bool {
        match self {
            Self::All => true,
            Self::Owner(owner) => key.owner == *owner,
        }
    }

    /// Whether keys of `owner` are within reach.
    pub fn covers_owner(&self, owner: &str) -> bool {
        match self {
            Self::All => true,
            Self::Owner(own) => own == owner,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Span {
    Own,
    Every,
}

/// What a scope confers. `ANY` marks rights every authenticated key has.
const ANY: &str = "";
const TABLE: &[(&str, Action, Span)] = &[
    (ANY, Action::ReadCallerKey, Span::Own),
    (SCOPE_KEYS_READ, Action::ReadKeys, Span::Own),
    (SCOPE_KEYS_READ, Action::ReadQuota, Span::Own),
    (SCOPE_KEYS_WRITE, Action::ReadKeys, Span::Own),
    (SCOPE_KEYS_WRITE, Action::ReadQuota, Span::Own),
    (SCOPE_KEYS_WRITE, Action::CreateKey, Span::Own),
    (SCOPE_KEYS_WRITE, Action::UpdateKey, Span::Own),
    (SCOPE_KEYS_WRITE, Action::DeleteKey, Span::Own),
    (SCOPE_KEYS_WRITE, Action::UndeleteKey, Span::Own),
    (SCOPE_KEYS_WRITE, Action::RotateKey, Span::Own),
    (SCOPE_VERIFY, Action::VerifyKey, Span::Every),
];

/// Decides whether `caller` may perform `action`, and over which keys.
pub fn authorize(caller: &Caller, action: Action) -> crate::error::Result<Reach> {
    let scopes = caller.scopes();
    if scopes.contains(SCOPE_ADMIN) {
        return Ok(Reach::All);
    }
    let span = TABLE
        .iter()
        .filter(|(scope, granted, _)| *granted == action && (scope.is_empty() || scopes.contains(*scope)))
        .map(|(_, _, span)| *span)
        .max();
    match span {
        Some(Span::Every) => Ok(Reach::All),
        Some(Span::Own) => Ok(Reach::Owner(caller.owner().to_owned())),
        None => Err(Error::PermissionDenied { action: action.describe() }),
    }
}

/// Refuses to let a caller grant keyward scopes it does not hold itself, so `keys:write`
/// cannot mint an `admin` key.
pub fn check_grantable(caller: &Caller, scopes: &BTreeSet<String>) -> crate::error::Result<()> {
    let held = caller.scopes();
    if held.contains(SCOPE_ADMIN) {
        return Ok(());
    }
    match scopes.iter().find(|scope| RESERVED_SCOPES.contains(&scope.as_str()) && !held.contains(*scope)) {
        Some(_) => Err(Error::PermissionDenied { action: "grant keyward scopes it does not hold" }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::KeyStatus;

    fn caller(scopes: &[&str]) -> Caller {
        let now = chrono::Utc::now();
        Caller::Key(Arc::new(ApiKey {
            id: uuid::Uuid::now_v7(),
            number: 1,
            name: "caller".into(),
            mask: String::new(),
            owner: "svc-a".into(),
            creator: "root".into(),
            organization_id: String::new(),
            organization_name: String::new(),
            environment: "production".into(),
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            networks: BTreeSet::new(),
            status: KeyStatus::Active,
            usage_limited: false,
            created_at: now,
            updated_at: now,
            expires_at: None,
            deleted_at: None,
            last_used_at: None,
            metadata: Default::default(),
        }))
    }

    #[test]
    fn the_table_decides_each_right() {
        assert_eq!(authorize(&caller(&["admin"]), Action::ImportSecret).unwrap(), Reach::All);
        assert_eq!(authorize(&caller(&["keys:read"]), Action::ReadKeys).unwrap(), Reach::Owner("svc-a".into()));
        assert!(authorize(&caller(&["keys:read"]), Action::CreateKey).is_err());
        assert!(authorize(&caller(&["keys:write"]), Action::ImportSecret).is_err());
        assert_eq!(authorize(&caller(&["verify"]), Action::VerifyKey).unwrap(), Reach::All);
        assert!(authorize(&caller(&["verify"]), Action::ReadKeys).is_err());
        assert!(authorize(&caller(&["app:read"]), Action::ReadCallerKey).is_ok());
    }

    #[test]
    fn callers_grant_only_keyward_scopes_they_hold() {
        let writer = caller(&["keys:write"]);
        let set = |s: &[&str]| s.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
        assert!(check_grantable(&writer, &set(&["keys:write", "app:anything"])).is_ok());
        assert!(check_grantable(&writer, &set(&["admin"])).is_err());
        assert!(check_grantable(&caller(&["admin"]), &set(&["admin"])).is_ok());
    }
}
