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
/// Scope of the generic scoped-key API (seed `002`) that lets a key manage the keys of
/// its owner there: read, create, update and delete them.
pub const SCOPE_MANAGE: &str = "MANAGE";
/// Scopes that confer rights in keyward itself; a caller may grant only those it holds.
pub const RESERVED_SCOPES: [&str; 5] = [SCOPE_ADMIN, SCOPE_KEYS_READ, SCOPE_KEYS_WRITE, SCOPE_VERIFY, SCOPE_MANAGE];

/// PSP role that may list, update and delete every key of its organisation, but not create.
pub const ROLE_SUPER_DEV: &str = "Super_Dev";
/// PSP roles that manage (list, create, update, delete) their own keys.
pub const KEY_MANAGER_ROLES: [&str; 4] = ["Issuer_Admin", "Issuer_Dev", "Verifier_Admin", "Verifier_Dev"];

/// A person, as their identity provider's token describes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// The token's `sub`: owner and creator of the keys they make.
    pub subject: String,
    /// Organisation id claim, empty if absent.
    pub organization_id: String,
    /// Organisation display name claim, empty if absent.
    pub organization_name: String,
    /// Role claims.
    pub roles: BTreeSet<String>,
}

/// Who is calling, once authenticated.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A keyward API key.
    Key(Arc<ApiKey>),
    /// A person with a JWT from the configured identity provider.
    Person(Arc<Person>),
}

static NO_SCOPES: BTreeSet<String> = BTreeSet::new();

impl Caller {
    /// Subject recorded as the actor of audit events and as the creator of keys.
    pub fn subject(&self) -> String {
        match self {
            Self::Key(key) => format!("key:{}", key.id),
            Self::Person(person) => person.subject.clone(),
        }
    }

    /// The owner whose keys the caller acts on when its reach is [`Reach::Owner`].
    pub fn owner(&self) -> &str {
        match self {
            Self::Key(key) => &key.owner,
            Self::Person(person) => &person.subject,
        }
    }

    /// The organisation keys the caller creates belong to: a person's own; a key
    /// caller names it in the request.
    pub fn organization(&self) -> Option<(&str, &str)> {
        match self {
            Self::Key(_) => None,
            Self::Person(person) => Some((&person.organization_id, &person.organization_name)),
        }
    }

    fn scopes(&self) -> &BTreeSet<String> {
        match self {
            Self::Key(key) => &key.scopes,
            Self::Person(_) => &NO_SCOPES,
        }
    }

    fn holds(&self, grant: Grant) -> bool {
        match (grant, self) {
            (Grant::Any, Self::Key(_)) => true,
            (Grant::Scope(scope), Self::Key(key)) => key.scopes.contains(scope),
            (Grant::Role(role), Self::Person(person)) => person.roles.contains(role),
            (Grant::Any | Grant::Scope(_), Self::Person(_)) | (Grant::Role(_), Self::Key(_)) => false,
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
    /// Add or take away credits (balances, ledger and usage are read with [`Action::ReadKeys`]).
    AdjustCredits,
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
            Self::AdjustCredits => "adjust credits",
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
    /// Keys of this organisation.
    Organization(String),
}

impl Reach {
    /// Whether `key` is within reach. Keys outside it are reported NOT_FOUND, never
    /// PERMISSION_DENIED, so their existence does not leak.
    pub fn covers(&self, key: &ApiKey) -> bool {
        match self {
            Self::All => true,
            Self::Owner(owner) => key.owner == *owner,
            Self::Organization(organization) => key.organization_id == *organization,
        }
    }

    /// Whether keys of `owner` are within reach.
    pub fn covers_owner(&self, owner: &str) -> bool {
        match self {
            Self::All => true,
            Self::Owner(own) => own == owner,
            // An owner's keys may span organisations; an organisation reach alone does
            // not make every key of an owner visible.
            Self::Organization(_) => false,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Span {
    Own,
    Organization,
    Every,
}

/// What confers a right: anything authenticated as a key, a key's scope, or a person's role.
#[derive(Clone, Copy)]
enum Grant {
    Any,
    Scope(&'static str),
    Role(&'static str),
}

const fn manager(role: &'static str, action: Action) -> (Grant, Action, Span) {
    (Grant::Role(role), action, Span::Own)
}

/// Every right there is, besides `admin` (which has them all, over every key).
const TABLE: &[(Grant, Action, Span)] = &[
    (Grant::Any, Action::ReadCallerKey, Span::Own),
    (Grant::Scope(SCOPE_KEYS_READ), Action::ReadKeys, Span::Own),
    (Grant::Scope(SCOPE_KEYS_READ), Action::ReadQuota, Span::Own),
    (Grant::Scope(SCOPE_KEYS_WRITE), Action::ReadKeys, Span::Own),
    (Grant::Scope(SCOPE_KEYS_WRITE), Action::ReadQuota, Span::Own),
    (Grant::Scope(SCOPE_KEYS_WRITE), Action::CreateKey, Span::Own),
    (Grant::Scope(SCOPE_KEYS_WRITE), Action::UpdateKey, Span::Own),
    (Grant::Scope(SCOPE_KEYS_WRITE), Action::DeleteKey, Span::Own),
    (Grant::Scope(SCOPE_KEYS_WRITE), Action::UndeleteKey, Span::Own),
    (Grant::Scope(SCOPE_KEYS_WRITE), Action::RotateKey, Span::Own),
    (Grant::Scope(SCOPE_VERIFY), Action::VerifyKey, Span::Every),
    (Grant::Scope(SCOPE_MANAGE), Action::ReadKeys, Span::Own),
    (Grant::Scope(SCOPE_MANAGE), Action::ReadQuota, Span::Own),
    (Grant::Scope(SCOPE_MANAGE), Action::CreateKey, Span::Own),
    (Grant::Scope(SCOPE_MANAGE), Action::UpdateKey, Span::Own),
    (Grant::Scope(SCOPE_MANAGE), Action::DeleteKey, Span::Own),
    (Grant::Role(ROLE_SUPER_DEV), Action::ReadKeys, Span::Organization),
    (Grant::Role(ROLE_SUPER_DEV), Action::UpdateKey, Span::Organization),
    (Grant::Role(ROLE_SUPER_DEV), Action::DeleteKey, Span::Organization),
    (Grant::Role(ROLE_SUPER_DEV), Action::ReadQuota, Span::Own),
    manager(KEY_MANAGER_ROLES[0], Action::ReadKeys),
    manager(KEY_MANAGER_ROLES[0], Action::CreateKey),
    manager(KEY_MANAGER_ROLES[0], Action::UpdateKey),
    manager(KEY_MANAGER_ROLES[0], Action::DeleteKey),
    manager(KEY_MANAGER_ROLES[0], Action::ReadQuota),
    manager(KEY_MANAGER_ROLES[1], Action::ReadKeys),
    manager(KEY_MANAGER_ROLES[1], Action::CreateKey),
    manager(KEY_MANAGER_ROLES[1], Action::UpdateKey),
    manager(KEY_MANAGER_ROLES[1], Action::DeleteKey),
    manager(KEY_MANAGER_ROLES[1], Action::ReadQuota),
    manager(KEY_MANAGER_ROLES[2], Action::ReadKeys),
    manager(KEY_MANAGER_ROLES[2], Action::CreateKey),
    manager(KEY_MANAGER_ROLES[2], Action::UpdateKey),
    manager(KEY_MANAGER_ROLES[2], Action::DeleteKey),
    manager(KEY_MANAGER_ROLES[2], Action::ReadQuota),
    manager(KEY_MANAGER_ROLES[3], Action::ReadKeys),
    manager(KEY_MANAGER_ROLES[3], Action::CreateKey),
    manager(KEY_MANAGER_ROLES[3], Action::UpdateKey),
    manager(KEY_MANAGER_ROLES[3], Action::DeleteKey),
    manager(KEY_MANAGER_ROLES[3], Action::ReadQuota),
];

/// Decides whether `caller` may perform `action`, and over which keys.
pub fn authorize(caller: &Caller, action: Action) -> crate::error::Result<Reach> {
    if caller.scopes().contains(SCOPE_ADMIN) {
        return Ok(Reach::All);
    }
    let span = TABLE
        .iter()
        .filter(|(grant, granted, _)| *granted == action && caller.holds(*grant))
        .map(|(_, _, span)| *span)
        .max();
    match (span, caller.organization()) {
        (Some(Span::Every), _) => Ok(Reach::All),
        (Some(Span::Organization), Some((organization, _))) if !organization.is_empty() => {
            Ok(Reach::Organization(organization.to_owned()))
        }
        // Without an organisation claim there is no organisation to reach: own keys only.
        (Some(Span::Organization | Span::Own), _) => Ok(Reach::Owner(caller.owner().to_owned())),
        (None, _) => Err(Error::PermissionDenied { action: action.describe() }),
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
        assert_eq!(authorize(&caller(&["MANAGE"]), Action::CreateKey).unwrap(), Reach::Owner("svc-a".into()));
        assert!(authorize(&caller(&["READ", "CREATE", "UPDATE", "DELETE"]), Action::ReadKeys).is_err());
        assert!(check_grantable(&caller(&["keys:write"]), &["MANAGE".to_owned()].into()).is_err());
    }

    fn person(roles: &[&str]) -> Caller {
        Caller::Person(Arc::new(Person {
            subject: "user-1".into(),
            organization_id: "org-1".into(),
            organization_name: "Org One".into(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        }))
    }

    #[test]
    fn psp_roles_follow_the_claims_table() {
        let own = Reach::Owner("user-1".into());
        let org = Reach::Organization("org-1".into());
        assert_eq!(authorize(&person(&["Super_Dev"]), Action::ReadKeys).unwrap(), org);
        assert_eq!(authorize(&person(&["Super_Dev"]), Action::DeleteKey).unwrap(), org);
        assert!(authorize(&person(&["Super_Dev"]), Action::CreateKey).is_err());
        for role in KEY_MANAGER_ROLES {
            for action in [Action::ReadKeys, Action::CreateKey, Action::UpdateKey, Action::DeleteKey, Action::ReadQuota]
            {
                assert_eq!(authorize(&person(&[role]), action).unwrap(), own, "{role} {action:?}");
            }
            assert!(authorize(&person(&[role]), Action::VerifyKey).is_err());
        }
        assert_eq!(authorize(&person(&["Super_Dev", "Issuer_Dev"]), Action::ReadKeys).unwrap(), org, "the wider reach");
        assert!(authorize(&person(&["Viewer"]), Action::ReadKeys).is_err());
        assert!(authorize(&person(&[]), Action::ReadCallerKey).is_err());
        assert!(check_grantable(&person(&["Issuer_Admin"]), &["admin".to_owned()].into()).is_err());
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
