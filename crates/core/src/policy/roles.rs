//! Who may read and change roles, beside the table's rows for them.

use super::{Action, Authority, Caller, Reach, authorize};
use crate::Error;

/// Decides a change of the roles of `owner` (empty: the global roles, which only admin
/// manages). The [`Authority`] then admits the role as it is and as it becomes, and —
/// a role's change being a change of every key that holds it — each of those keys as
/// it is and as it becomes, as an update of the key itself would be judged.
pub fn authorize_roles(caller: &Caller, owner: &str) -> crate::error::Result<Authority> {
    let reach = authorize(caller, Action::ManageRoles)?;
    if owner.is_empty() && reach != Reach::All {
        return Err(Error::PermissionDenied { action: "manage global roles" });
    }
    if !owner.is_empty() && !reach.covers_owner(owner) {
        return Err(Error::PermissionDenied { action: "manage the roles of other owners" });
    }
    Ok(Authority { reach, caller: caller.clone() })
}

/// Decides reading the roles of `owner`: global roles are readable by every caller with
/// the right (keys may hold them); an owner's only within reach.
pub fn authorize_role_read(caller: &Caller, owner: &str) -> crate::error::Result<()> {
    let reach = authorize(caller, Action::ReadRoles)?;
    if owner.is_empty() || reach.covers_owner(owner) {
        Ok(())
    } else {
        Err(Error::PermissionDenied { action: "read the roles of other owners" })
    }
}
