//! Roles, the keys' links to them, and how a key read resolves its roles' scopes into its
//! effective scopes (in the same statement as the key: a correlated subquery, so a cache
//! miss stays one read).

use std::collections::BTreeSet;

use keyward_core::{
    Error,
    error::Result,
    event::{self, EventType},
    model::{ApiKey, AuditAction, Role, RolePatch},
    policy::Authority,
};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait,
    FromQueryResult, QueryFilter, QueryOrder, QueryResult, QuerySelect, Select, SqlErr, sea_query::Expr,
};
use uuid::Uuid;

use crate::{
    Store,
    convert::to_domain,
    db::{ROWS_PER_STATEMENT, db_error},
    entity::{api_key, api_key_role, role},
    envelope::{Mutation, record_change},
    outbox,
};

/// The name under which a key read returns its roles: a JSON array of `[name, [scopes]]`.
pub(crate) const ROLE_DATA: &str = "role_data";

/// The roles of the key of the row being read, as one JSON text.
fn role_data(backend: DbBackend) -> Expr {
    let text = if backend == DbBackend::Postgres {
        r#"(SELECT COALESCE(CAST(json_agg(json_build_array(r."name", CAST(r."scopes" AS json))) AS text), '[]') FROM "api_key_roles" AS kr JOIN "roles" AS r ON r."id" = kr."role_id" WHERE kr."key_id" = "api_keys"."id")"#
    } else {
        r#"(SELECT json_group_array(json_array(r."name", json(r."scopes"))) FROM "api_key_roles" AS kr JOIN "roles" AS r ON r."id" = kr."role_id" WHERE kr."key_id" = "api_keys"."id")"#
    };
    Expr::cust(text)
}

/// A key read with its roles (see [`ROLE_DATA`]).
pub(crate) fn with_roles(select: Select<api_key::Entity>, backend: DbBackend) -> Select<api_key::Entity> {
    select.column_as(role_data(backend), ROLE_DATA)
}

/// A key row read by [`with_roles`].
#[derive(Debug)]
pub(crate) struct KeyRow {
    model: api_key::Model,
    role_data: Option<String>,
}

impl FromQueryResult for KeyRow {
    fn from_query_result(res: &QueryResult, pre: &str) -> std::result::Result<Self, DbErr> {
        Ok(Self { model: api_key::Model::from_query_result(res, pre)?, role_data: res.try_get(pre, ROLE_DATA)? })
    }
}

impl KeyRow {
    /// The key, holding its roles.
    pub(crate) fn into_key(self) -> Result<ApiKey> {
        let mut key = to_domain(self.model)?;
        let roles: Vec<(String, BTreeSet<String>)> = match self.role_data.as_deref() {
            None | Some("") => Vec::new(),
            Some(text) => serde_json::from_str(text)
                .map_err(|err| Error::internal(format!("stored roles of key {} are not valid: {err}", key.id)))?,
        };
        key.hold_roles(roles.iter().map(|(name, scopes)| (name.as_str(), scopes)));
        Ok(key)
    }
}

fn not_found(name: &str) -> Error {
    Error::NotFound { kind: "role", id: name.to_owned() }
}

fn to_role(row: role::Model) -> Result<Role> {
    let role::Model { id, owner, name, description, scopes, created_at, updated_at } = row;
    let scopes = serde_json::from_str(&scopes)
        .map_err(|err| Error::internal(format!("stored scopes of role {name} are not valid: {err}")))?;
    Ok(Role { id, owner, name, description, scopes, created_at, updated_at })
}

fn scopes_text(scopes: &BTreeSet<String>) -> Result<String> {
    serde_json::to_string(scopes).map_err(Error::internal)
}

/// The roles named `names` that a key of `owner` may hold (its owner's, and global ones
/// for global names). Names no such role has are left out.
pub(crate) async fn find_roles(
    conn: &impl ConnectionTrait,
    owner: &str,
    names: &BTreeSet<String>,
) -> Result<Vec<Role>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let (global, own): (Vec<&String>, Vec<&String>) = names.iter().partition(|name| Role::is_global_name(name));
    let which = Condition::any()
        .add(Condition::all().add(role::Column::Owner.eq(owner)).add(role::Column::Name.is_in(own)))
        .add(Condition::all().add(role::Column::Owner.eq("")).add(role::Column::Name.is_in(global)));
    role::Entity::find().filter(which).all(conn).await.map_err(db_error)?.into_iter().map(to_role).collect()
}

/// The roles named `names` for a key of `owner`, each of which must exist: a name that
/// finds none is NOT_FOUND, as a role out of the caller's reach would be.
pub(crate) async fn require_roles(
    conn: &impl ConnectionTrait,
    owner: &str,
    names: &BTreeSet<String>,
) -> Result<Vec<Role>> {
    let roles = find_roles(conn, owner, names).await?;
    match names.iter().find(|name| !roles.iter().any(|role| role.name == **name)) {
        Some(missing) => Err(not_found(missing)),
        None => Ok(roles),
    }
}

/// Makes key `key_id` hold exactly `roles`.
pub(crate) async fn link_roles(txn: &DatabaseTransaction, key_id: Uuid, roles: &[Role]) -> Result<()> {
    api_key_role::Entity::delete_many()
        .filter(api_key_role::Column::KeyId.eq(key_id))
        .exec(txn)
        .await
        .map_err(db_error)?;
    if roles.is_empty() {
        return Ok(());
    }
    let rows = roles.iter().map(|role| api_key_role::ActiveModel { key_id: Set(key_id), role_id: Set(role.id) });
    api_key_role::Entity::insert_many(rows).exec(txn).await.map_err(db_error)?;
    Ok(())
}

/// Ids of the keys that hold role `role_id`.
async fn holders(txn: &DatabaseTransaction, role_id: Uuid) -> Result<Vec<Uuid>> {
    let rows = api_key_role::Entity::find()
        .filter(api_key_role::Column::RoleId.eq(role_id))
        .all(txn)
        .await
        .map_err(db_error)?;
    Ok(rows.into_iter().map(|row| row.key_id).collect())
}

/// The keys `ids`, each holding its roles. Callers pass at most [`ROWS_PER_STATEMENT`] ids,
/// so a role held by any number of keys stays within the databases' bind limits and
/// only one page of keys is in memory at a time.
async fn keys(txn: &DatabaseTransaction, ids: &[Uuid]) -> Result<Vec<ApiKey>> {
    let select = api_key::Entity::find().filter(api_key::Column::Id.is_in(ids.iter().copied()));
    let rows =
        with_roles(select, txn.get_database_backend()).into_model::<KeyRow>().all(txn).await.map_err(db_error)?;
    rows.into_iter().map(KeyRow::into_key).collect()
}

async fn lock_role(txn: &DatabaseTransaction, owner: &str, name: &str) -> Result<Role> {
    let row = role::Entity::find()
        .filter(role::Column::Owner.eq(owner))
        .filter(role::Column::Name.eq(name))
        .lock_exclusive()
        .one(txn)
        .await
        .map_err(db_error)?
        .ok_or_else(|| not_found(name))?;
    to_role(row)
}

fn insert_error(name: &str) -> impl FnOnce(DbErr) -> Error + '_ {
    move |err| match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(_)) => Error::AlreadyExists {
            reason: "ROLE_ALREADY_EXISTS",
            message: format!("a role named `{name}` exists already; choose another name or update it"),
            resource_id: Some(name.to_owned()),
        },
        Some(_) | None => db_error(err),
    }
}

impl Store {
    /// The roles named `names` that a key of `owner` may hold; a name none has is NOT_FOUND.
    pub async fn roles_for_key(&self, owner: &str, names: &BTreeSet<String>) -> Result<Vec<Role>> {
        require_roles(self.db()?, owner, names).await
    }

    /// Stores a new role the authority admits.
    pub async fn create_role(&self, new: &Role, authority: &Authority, mutation: &Mutation) -> Result<Role> {
        authority.admit_role(new)?;
        let txn = self.begin_write().await?;
        role::Entity::insert(role::ActiveModel {
            id: Set(new.id),
            owner: Set(new.owner.clone()),
            name: Set(new.name.clone()),
            description: Set(new.description.clone()),
            scopes: Set(scopes_text(&new.scopes)?),
            created_at: Set(mutation.now),
            updated_at: Set(mutation.now),
        })
        .exec(&txn)
        .await
        .map_err(insert_error(&new.name))?;
        record_change(&txn, mutation, AuditAction::CreateRole, &Role::audit_target(&new.owner, &new.name)).await?;
        let created = lock_role(&txn, &new.owner, &new.name).await?;
        let data = event::role_change(&created, None, &mutation.actor, 0);
        outbox::emit(&txn, EventType::RoleCreated, created.id, data, mutation.now).await?;
        txn.commit().await.map_err(db_error)?;
        Ok(created)
    }

    /// The role `name` of `owner` (`""` for a global one).
    pub async fn role(&self, owner: &str, name: &str) -> Result<Role> {
        let row = role::Entity::find()
            .filter(role::Column::Owner.eq(owner))
            .filter(role::Column::Name.eq(name))
            .one(self.db()?)
            .await
            .map_err(db_error)?
            .ok_or_else(|| not_found(name))?;
        to_role(row)
    }

    /// The global roles and those of `owner`, in creation order, after `after`.
    pub async fn roles(&self, owner: &str, after: Option<Uuid>, limit: u64) -> Result<Vec<Role>> {
        let mut select = role::Entity::find()
            .filter(role::Column::Owner.is_in([owner, ""]))
            .order_by_asc(role::Column::Id)
            .limit(limit);
        if let Some(after) = after {
            select = select.filter(role::Column::Id.gt(after));
        }
        select.all(self.db()?).await.map_err(db_error)?.into_iter().map(to_role).collect()
    }

    /// Applies `patch` to role `name` of `owner`, and so to every key that holds it.
    /// The authority admits the role as it is and as it becomes, and each key holding
    /// it as it is and as it becomes: changing a role is changing those keys. Returns
    /// the role and the keys it changed (announced to every replica on commit).
    pub async fn update_role(
        &self,
        owner: &str,
        name: &str,
        patch: &RolePatch,
        authority: &Authority,
        mutation: &Mutation,
    ) -> Result<(Role, Vec<Uuid>)> {
        let txn = self.begin_write().await?;
        let current = lock_role(&txn, owner, name).await?;
        authority.admit_role(&current)?;
        let next = patch.apply(&current, mutation.now);
        authority.admit_role(&next)?;
        let held_by = holders(&txn, current.id).await?;
        let scopes_change = next.scopes != current.scopes;
        if scopes_change {
            for chunk in held_by.chunks(ROWS_PER_STATEMENT) {
                for key in keys(&txn, chunk).await? {
                    authority.admit(&key)?;
                }
            }
        }
        role::Entity::update_many()
            .set(role::ActiveModel {
                description: Set(next.description.clone()),
                scopes: Set(scopes_text(&next.scopes)?),
                updated_at: Set(mutation.now),
                ..Default::default()
            })
            .filter(role::Column::Id.eq(current.id))
            .exec(&txn)
            .await
            .map_err(db_error)?;
        if scopes_change {
            for chunk in held_by.chunks(ROWS_PER_STATEMENT) {
                for key in keys(&txn, chunk).await? {
                    authority.admit_outcome(&key)?;
                    self.announce(&txn, key.id).await?;
                }
            }
        }
        record_change(&txn, mutation, AuditAction::UpdateRole, &Role::audit_target(owner, name)).await?;
        let updated = lock_role(&txn, owner, name).await?;
        let changed = if scopes_change { held_by } else { Vec::new() };
        let data = event::role_change(&updated, Some(&current), &mutation.actor, changed.len());
        outbox::emit(&txn, EventType::RoleUpdated, updated.id, data, mutation.now).await?;
        txn.commit().await.map_err(db_error)?;
        Ok((updated, changed))
    }

    /// Deletes role `name` of `owner`. A role keys hold is refused with their number
    /// unless `force`, which takes it from them (each a key the authority admits).
    /// Returns the keys it was taken from (announced to every replica on commit).
    pub async fn delete_role(
        &self,
        owner: &str,
        name: &str,
        force: bool,
        authority: &Authority,
        mutation: &Mutation,
    ) -> Result<Vec<Uuid>> {
        let txn = self.begin_write().await?;
        let current = lock_role(&txn, owner, name).await?;
        authority.admit_role(&current)?;
        let held_by = holders(&txn, current.id).await?;
        if !held_by.is_empty() && !force {
            return Err(Error::FailedPrecondition {
                reason: "ROLE_IN_USE",
                message: format!(
                    "role `{name}` is held by {} API key(s); take it from them first, or delete it with force",
                    held_by.len()
                ),
            });
        }
        for chunk in held_by.chunks(ROWS_PER_STATEMENT) {
            for key in keys(&txn, chunk).await? {
                authority.admit(&key)?;
            }
        }
        api_key_role::Entity::delete_many()
            .filter(api_key_role::Column::RoleId.eq(current.id))
            .exec(&txn)
            .await
            .map_err(db_error)?;
        role::Entity::delete_by_id(current.id).exec(&txn).await.map_err(db_error)?;
        for id in &held_by {
            self.announce(&txn, *id).await?;
        }
        record_change(&txn, mutation, AuditAction::DeleteRole, &Role::audit_target(owner, name)).await?;
        let data = event::role_change(&current, None, &mutation.actor, held_by.len());
        outbox::emit(&txn, EventType::RoleDeleted, current.id, data, mutation.now).await?;
        txn.commit().await.map_err(db_error)?;
        Ok(held_by)
    }
}
