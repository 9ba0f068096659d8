//! The one policy table: which caller may do what, and over which keys. Handlers ask
//! [`authorize`]; they never decide rights themselves.

use std::{collections::BTreeSet, sync::Arc};

use crate::{
    Error,
    model::{ApiKey, CreditSource, Role},
};

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

    /// The caller's organisation (id, display name), both empty if it has none. The keys
    /// it creates belong to it unless the request names another (which only admin may).
    pub fn organization(&self) -> (&str, &str) {
        match self {
            Self::Key(key) => (&key.organization_id, &key.organization_name),
            Self::Person(person) => (&person.organization_id, &person.organization_name),
        }
    }

    /// The latest expiry a key the caller creates may have: a key caller that is not
    /// admin cannot outlive itself through its keys.
    pub fn expiry_ceiling(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        match self {
            Self::Key(key) if !key.effective_scopes.contains(SCOPE_ADMIN) => key.expires_at,
            Self::Key(_) | Self::Person(_) => None,
        }
    }

    /// The scopes that give the caller its rights: a key's effective scopes, its roles'
    /// included (a role carrying a keyward scope confers that scope's rights).
    fn scopes(&self) -> &BTreeSet<String> {
        match self {
            Self::Key(key) => &key.effective_scopes,
            Self::Person(_) => &NO_SCOPES,
        }
    }

    fn holds(&self, grant: Grant) -> bool {
        match (grant, self) {
            (Grant::Any, Self::Key(_)) => true,
            (Grant::Scope(scope), Self::Key(key)) => key.effective_scopes.contains(scope),
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
    /// Add or take away credits, of keys and of owners' pools, set a pool's refills and
    /// low-balance thresholds, and set a key to draw on its owner's pool (balances, refills,
    /// thresholds, ledger and usage, a pool's too, are read with [`Action::ReadKeys`]).
    AdjustCredits,
    /// Create, read, change and delete webhook endpoints and their deliveries (admin only).
    ManageWebhooks,
    /// Capture or release a credit hold (one's own: see [`authorize_settle`]).
    SettleHold,
    /// Get or list roles (global ones, and those of owners in reach).
    ReadRoles,
    /// Create, change and delete roles of owners in reach (global ones: admin only).
    ManageRoles,
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
            Self::ManageWebhooks => "manage webhook endpoints",
            Self::SettleHold => "capture or release credit holds",
            Self::ReadRoles => "read roles",
            Self::ManageRoles => "manage roles",
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
    /// Keys of this organisation, and the caller's own.
    Organization {
        /// The organisation.
        id: String,
        /// The caller's subject: its own keys stay in reach whatever their organisation.
        subject: String,
    },
}

impl Reach {
    /// Whether `key` is within reach. Keys outside it are reported NOT_FOUND, never
    /// PERMISSION_DENIED, so their existence does not leak.
    pub fn covers(&self, key: &ApiKey) -> bool {
        match self {
            Self::All => true,
            Self::Owner(owner) => key.owner == *owner,
            Self::Organization { id, subject } => key.organization_id == *id || key.owner == *subject,
        }
    }

    /// Whether keys of `owner` are within reach.
    pub fn covers_owner(&self, owner: &str) -> bool {
        match self {
            Self::All => true,
            Self::Owner(own) => own == owner,
            // An owner's keys may span organisations; an organisation reach alone does
            // not make every key of another owner visible.
            Self::Organization { subject, .. } => subject == owner,
        }
    }
}

/// What an allowed mutation may touch: keys in its reach that the caller could have
/// created itself (see [`permit`]).
#[derive(Debug, Clone)]
pub struct Authority {
    reach: Reach,
    caller: Caller,
}

impl Authority {
    /// The keys in reach.
    pub fn reach(&self) -> &Reach {
        &self.reach
    }

    /// Admits `key` as the target of the mutation: NOT_FOUND outside the reach,
    /// PERMISSION_DENIED when the key holds rights the caller could not have granted.
    pub fn admit(&self, key: &ApiKey) -> crate::error::Result<()> {
        if !self.reach.covers(key) {
            return Err(Error::key_not_found(key.id.to_string()));
        }
        permit(&self.caller, key)
    }

    /// Admits giving the caller a new secret of `key`. Whoever holds the secret spends the
    /// key's credits, so when a usage-limited key `holds_credits` (a positive balance or a
    /// refill schedule, which only a caller that may adjust credits grants) or draws on
    /// its owner's pool (which only such a caller sets) the caller must hold that right
    /// too: a key it could not have created with them.
    pub fn admit_secret(&self, key: &ApiKey, holds_credits: bool) -> crate::error::Result<()> {
        let spends = holds_credits || key.credit_source == CreditSource::Owner;
        if key.usage_limited && spends && authorize(&self.caller, Action::AdjustCredits).is_err() {
            return Err(Error::PermissionDenied { action: "rotate keys holding credits it could not grant" });
        }
        Ok(())
    }

    /// Admits the state a mutation leaves a key in: the caller must be able to grant it.
    pub fn admit_outcome(&self, key: &ApiKey) -> crate::error::Result<()> {
        permit(&self.caller, key)
    }

    /// Admits a role as it is before or after a change: it must be within reach, and it
    /// may carry a keyward scope only if the caller holds that scope (a role's scopes are
    /// granted to every key that holds it).
    pub fn admit_role(&self, role: &Role) -> crate::error::Result<()> {
        if !role.owner.is_empty() && !self.reach.covers_owner(&role.owner) {
            return Err(Error::NotFound { kind: "role", id: role.name.clone() });
        }
        if role.owner.is_empty() && self.reach != Reach::All {
            return Err(Error::PermissionDenied { action: "manage global roles" });
        }
        grantable(&self.caller, &role.scopes)
    }
}

/// Decides `action` over everything of one owner (its quota, its usage): the owner must
/// be in the caller's reach.
pub fn authorize_owner(caller: &Caller, action: Action, owner: &str) -> crate::error::Result<()> {
    if authorize(caller, action)?.covers_owner(owner) {
        Ok(())
    } else {
        Err(Error::PermissionDenied { action: "act on the keys of other owners" })
    }
}

/// Decides capturing or releasing a hold made by `hold_actor`: admin settles any, a
/// caller with the right only the holds it made itself. Another's hold is NOT_FOUND, so
/// its existence does not leak.
pub fn authorize_settle(caller: &Caller, hold_actor: &str, hold_id: &str) -> crate::error::Result<()> {
    if authorize(caller, Action::SettleHold)? == Reach::All || caller.subject() == hold_actor {
        Ok(())
    } else {
        Err(Error::NotFound { kind: "credit hold", id: hold_id.to_owned() })
    }
}

/// Decides which audit events `caller` may read: those of the keys it may read (every
/// event, its subjects beyond keys included, only for [`Reach::All`]).
pub fn authorize_audit(caller: &Caller) -> crate::error::Result<Reach> {
    authorize(caller, Action::ReadKeys)
}

/// Decides a mutation of existing keys: the caller's reach for `action`, and the
/// ceiling every key it touches must stay under.
pub fn authorize_mutation(caller: &Caller, action: Action) -> crate::error::Result<Authority> {
    Ok(Authority { reach: authorize(caller, action)?, caller: caller.clone() })
}

/// Decides whether `caller` may create `key` (with initial credits, refills or
/// low-balance thresholds when `mints_credits`): the right to create, the owner in reach, and every right the key
/// carries grantable by the caller. Rate limits are set by whoever may adjust credits, and
/// so is drawing on the owner's pool: a key spending credits its creator could not grant
/// would be a climb.
pub fn authorize_new_key(caller: &Caller, key: &ApiKey, mints_credits: bool) -> crate::error::Result<()> {
    let reach = authorize(caller, Action::CreateKey)?;
    if mints_credits || !key.rate_limits.is_empty() || key.credit_source == CreditSource::Owner {
        authorize(caller, Action::AdjustCredits)?;
    }
    if !reach.covers_owner(&key.owner) {
        return Err(Error::PermissionDenied { action: "create API keys for other owners" });
    }
    permit(caller, key)
}

/// Decides the parts of an update that need a right of their own: lifting a usage limit
/// or changing refills is as good as granting credits, and so is changing rate limits
/// (replacing them may raise or drop one) or the credit source (a key moved onto its
/// owner's pool spends credits it never held); low-balance thresholds are set like credits.
pub fn authorize_patch(caller: &Caller, patch: &crate::model::KeyPatch) -> crate::error::Result<Authority> {
    let authority = authorize_mutation(caller, Action::UpdateKey)?;
    if patch.usage_limited.is_some()
        || patch.refills.is_some()
        || patch.low_thresholds.is_some()
        || patch.rate_limits.is_some()
        || patch.credit_source.is_some()
    {
        authorize(caller, Action::AdjustCredits)?;
    }
    Ok(authority)
}

/// The one ceiling rule: a caller that is not admin may hold, create or change a key only
/// if it could grant everything the key carries — each keyward scope, the organisation,
/// unmetered use, a life without expiry (or past the caller's own), and any network.
/// Persons hold no keyward scopes, are not metered and do not expire; their keys belong
/// to their organisation.
pub fn permit(caller: &Caller, key: &ApiKey) -> crate::error::Result<()> {
    let denied = |action| Err(Error::PermissionDenied { action });
    if caller.scopes().contains(SCOPE_ADMIN) {
        return Ok(());
    }
    // Effective scopes: holding a role is being granted its scopes.
    grantable(caller, &key.effective_scopes)?;
    let organization = match caller {
        Caller::Key(own) => own.organization_id.as_str(),
        Caller::Person(person) => person.organization_id.as_str(),
    };
    if key.organization_id != organization {
        return denied("grant or touch keys of another organisation");
    }
    let Caller::Key(own) = caller else { return Ok(()) };
    if !key.usage_limited && own.usage_limited {
        return denied("grant or touch unmetered keys while it is usage-limited");
    }
    if let Some(own_expiry) = own.expires_at
        && key.expires_at.is_none_or(|at| at > own_expiry)
    {
        return denied("grant or touch keys that outlive its own expiry");
    }
    if !own.networks.is_empty() && (key.networks.is_empty() || !key.networks.is_subset(&own.networks)) {
        return denied("grant or touch networks it is not allowed");
    }
    Ok(())
}

/// Whether `caller` may grant every one of `scopes`: admin any, others every scope but
/// keyward's own ones they do not hold.
fn grantable(caller: &Caller, scopes: &BTreeSet<String>) -> crate::error::Result<()> {
    let held = caller.scopes();
    if held.contains(SCOPE_ADMIN)
        || !scopes.iter().any(|scope| RESERVED_SCOPES.contains(&scope.as_str()) && !held.contains(scope))
    {
        Ok(())
    } else {
        Err(Error::PermissionDenied { action: "grant or touch keyward scopes it does not hold" })
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
    (Grant::Scope(SCOPE_KEYS_READ), Action::ReadRoles, Span::Own),
    (Grant::Scope(SCOPE_KEYS_WRITE), Action::ReadRoles, Span::Own),
    (Grant::Scope(SCOPE_KEYS_WRITE), Action::ManageRoles, Span::Own),
    (Grant::Scope(SCOPE_MANAGE), Action::ReadRoles, Span::Own),
    (Grant::Scope(SCOPE_VERIFY), Action::VerifyKey, Span::Every),
    (Grant::Scope(SCOPE_VERIFY), Action::SettleHold, Span::Own),
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
    manager(KEY_MANAGER_ROLES[0], Action::ReadRoles),
    manager(KEY_MANAGER_ROLES[0], Action::ManageRoles),
    manager(KEY_MANAGER_ROLES[1], Action::ReadKeys),
    manager(KEY_MANAGER_ROLES[1], Action::CreateKey),
    manager(KEY_MANAGER_ROLES[1], Action::UpdateKey),
    manager(KEY_MANAGER_ROLES[1], Action::DeleteKey),
    manager(KEY_MANAGER_ROLES[1], Action::ReadQuota),
    manager(KEY_MANAGER_ROLES[1], Action::ReadRoles),
    manager(KEY_MANAGER_ROLES[1], Action::ManageRoles),
    manager(KEY_MANAGER_ROLES[2], Action::ReadKeys),
    manager(KEY_MANAGER_ROLES[2], Action::CreateKey),
    manager(KEY_MANAGER_ROLES[2], Action::UpdateKey),
    manager(KEY_MANAGER_ROLES[2], Action::DeleteKey),
    manager(KEY_MANAGER_ROLES[2], Action::ReadQuota),
    manager(KEY_MANAGER_ROLES[2], Action::ReadRoles),
    manager(KEY_MANAGER_ROLES[2], Action::ManageRoles),
    manager(KEY_MANAGER_ROLES[3], Action::ReadKeys),
    manager(KEY_MANAGER_ROLES[3], Action::CreateKey),
    manager(KEY_MANAGER_ROLES[3], Action::UpdateKey),
    manager(KEY_MANAGER_ROLES[3], Action::DeleteKey),
    manager(KEY_MANAGER_ROLES[3], Action::ReadQuota),
    manager(KEY_MANAGER_ROLES[3], Action::ReadRoles),
    manager(KEY_MANAGER_ROLES[3], Action::ManageRoles),
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
    match (span, caller.organization().0) {
        (Some(Span::Every), _) => Ok(Reach::All),
        (Some(Span::Organization), organization) if !organization.is_empty() => {
            Ok(Reach::Organization { id: organization.to_owned(), subject: caller.owner().to_owned() })
        }
        // Without an organisation claim there is no organisation to reach: own keys only.
        (Some(Span::Organization | Span::Own), _) => Ok(Reach::Owner(caller.owner().to_owned())),
        (None, _) => Err(Error::PermissionDenied { action: action.describe() }),
    }
}

mod roles;
pub use roles::{authorize_role_read, authorize_roles};

#[cfg(test)]
mod tests;
