//! RoleService conversions: requests checked into the domain's terms, every bad field
//! named at once, and roles back into their proto form.

use chrono::{DateTime, Utc};
use keyward_core::{
    Error,
    error::Result,
    model::{Role, RolePatch},
    policy::Caller,
    validate::{Checks, MAX_DESCRIPTION_CHARS},
};
use keyward_proto::v1;
use uuid::Uuid;

use crate::convert::timestamp;

pub(crate) const UPDATABLE_FIELDS: [&str; 2] = ["description", "scopes"];

/// Which role a request names: its owner (empty for a global role) and name.
pub(super) struct RoleName {
    pub(super) owner: String,
    pub(super) name: String,
}

/// The role `name` of `owner` as `caller` names it: a global name is the global role's;
/// any other is the role of `owner`, the caller's own when it names none.
fn role_name(checks: &mut Checks, prefix: &str, caller: &Caller, name: String, owner: String) -> RoleName {
    checks.role_name(&format!("{prefix}name"), &name);
    checks.subject(&format!("{prefix}owner"), &owner);
    RoleName { owner: role_owner(caller, &name, &owner), name }
}

/// The owner of the role `name` that `caller` names with `owner`.
pub(super) fn role_owner(caller: &Caller, name: &str, owner: &str) -> String {
    let owner = if Role::is_global_name(name) {
        ""
    } else if owner.is_empty() {
        caller.owner()
    } else {
        owner
    };
    owner.to_owned()
}

/// A new role, checked.
pub(super) fn role(request: v1::CreateRoleRequest, caller: &Caller, now: DateTime<Utc>) -> Result<Role> {
    let v1::CreateRoleRequest { role } = request;
    let Some(role) = role else {
        return Err(Error::invalid("role", "is required"));
    };
    let v1::Role { name, description, scopes, create_time: _, update_time: _, owner } = role;
    let mut checks = Checks::new();
    if Role::is_global_name(&name) && !owner.is_empty() {
        checks.fail("role.owner", "must be empty for a global role (a name starting with `global:`)");
    }
    let RoleName { owner, name } = role_name(&mut checks, "role.", caller, name, owner);
    checks.text("role.description", &description, MAX_DESCRIPTION_CHARS);
    let scopes = checks.labels("role.scopes", &scopes);
    checks.finish()?;
    Ok(Role { id: Uuid::now_v7(), owner, name, description, scopes, created_at: now, updated_at: now })
}

/// A role named by a Get or Delete request, checked.
pub(super) fn named(caller: &Caller, name: String, owner: String) -> Result<RoleName> {
    let mut checks = Checks::new();
    let named = role_name(&mut checks, "", caller, name, owner);
    checks.finish()?;
    Ok(named)
}

/// An update, checked: the role it names and the fields its mask names.
pub(super) fn patch(request: v1::UpdateRoleRequest, caller: &Caller) -> Result<(RoleName, RolePatch)> {
    let v1::UpdateRoleRequest { role, update_mask } = request;
    let Some(role) = role else {
        return Err(Error::invalid("role", "is required"));
    };
    let v1::Role { name, description, scopes, create_time: _, update_time: _, owner } = role;
    let mut checks = Checks::new();
    let named = role_name(&mut checks, "role.", caller, name, owner);
    let paths = update_mask.map(|mask| mask.paths).unwrap_or_default();
    if paths.is_empty() {
        checks.fail(
            "update_mask",
            format!("is required: list the fields to change, any of {}", UPDATABLE_FIELDS.join(", ")),
        );
    }
    let mut patch = RolePatch::default();
    for (index, path) in paths.iter().enumerate().take(UPDATABLE_FIELDS.len() + 1) {
        match path.as_str() {
            "description" => {
                checks.text("role.description", &description, MAX_DESCRIPTION_CHARS);
                patch.description = Some(description.clone());
            }
            "scopes" => patch.scopes = Some(checks.labels("role.scopes", &scopes)),
            other => checks.fail(
                format!("update_mask.paths[{index}]"),
                format!("`{other}` cannot be updated; use any of {}", UPDATABLE_FIELDS.join(", ")),
            ),
        }
    }
    checks.finish()?;
    Ok((named, patch))
}

/// The owner a ListRoles request lists besides the global roles, checked.
pub(super) fn list_owner(caller: &Caller, owner: String) -> Result<String> {
    let mut checks = Checks::new();
    checks.subject("owner", &owner);
    checks.finish()?;
    Ok(if owner.is_empty() { caller.owner().to_owned() } else { owner })
}

/// The proto form of a role.
pub(super) fn to_proto(role: &Role) -> v1::Role {
    let Role { id: _, owner, name, description, scopes, created_at, updated_at } = role;
    v1::Role {
        name: name.clone(),
        description: description.clone(),
        scopes: scopes.iter().cloned().collect(),
        create_time: Some(timestamp(*created_at)),
        update_time: Some(timestamp(*updated_at)),
        owner: owner.clone(),
    }
}
