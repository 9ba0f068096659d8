//! Roles in the escalation matrix: every caller kind against every kind of role, for
//! every role RPC and for holding a role (attached by UpdateApiKey, or given at
//! CreateApiKey). Holding a role is being granted its scopes, and changing a role is
//! changing every key that holds it, so each answer is the ceiling rule's: no caller but
//! admin reaches `admin` through a role, and a refused call changes nothing.

use std::time::Duration;

use keyward_proto::v1::{self, role_service_client::RoleServiceClient};
use tonic::{Code, Status, transport::Channel};

use super::{CALLERS, CallerKind, Callers, TargetKind};
use crate::{
    helpers::{Backend, TestApp, admin, both},
    jwt::{Signer, spawn_with_jwks, write_jwks},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RoleKind {
    /// The caller's owner's role carrying an application scope.
    Plain,
    /// The caller's owner's role carrying `admin` (made by admin).
    HoldsAdmin,
    /// The caller's owner's role carrying `keys:write`.
    HoldsKeysWrite,
    /// A global role carrying an application scope.
    Global,
    /// Another owner's role.
    OtherOwner,
}

const ROLE_KINDS: [RoleKind; 5] =
    [RoleKind::Plain, RoleKind::HoldsAdmin, RoleKind::HoldsKeysWrite, RoleKind::Global, RoleKind::OtherOwner];

impl RoleKind {
    fn scopes(self) -> Vec<String> {
        let scope = match self {
            Self::HoldsAdmin => "admin",
            Self::HoldsKeysWrite => "keys:write",
            Self::Plain | Self::Global | Self::OtherOwner => "app.read",
        };
        vec![scope.to_owned()]
    }

    /// The role of this kind named after `tag`, for `caller`.
    fn role(self, caller: CallerKind, tag: &str) -> v1::Role {
        let owner = Callers::owner(caller);
        let (name, owner) = match self {
            Self::Global => (format!("global:{tag}"), String::new()),
            Self::OtherOwner => (tag.to_owned(), format!("{owner}-neighbour")),
            Self::Plain | Self::HoldsAdmin | Self::HoldsKeysWrite => (tag.to_owned(), owner),
        };
        v1::Role { name, owner, description: String::new(), scopes: self.scopes(), ..Default::default() }
    }

    /// Whether the caller could grant every scope of the role.
    fn grantable_by(self, caller: CallerKind) -> bool {
        match self {
            Self::Plain | Self::Global | Self::OtherOwner => true,
            Self::HoldsAdmin => caller == CallerKind::Admin,
            Self::HoldsKeysWrite => caller.scopes().iter().any(|scope| matches!(*scope, "admin" | "keys:write")),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Create,
    Get,
    List,
    /// UpdateRole adding an application scope.
    Update,
    /// UpdateRole adding `admin`.
    Escalate,
    /// UpdateApiKey giving one of the caller's owner's keys the role.
    Attach,
    /// CreateApiKey of a key holding the role.
    CreateKey,
    /// DeleteRole with force, while a key holds the role.
    Delete,
}

const OPS: [Op; 8] = [Op::Create, Op::Get, Op::List, Op::Update, Op::Escalate, Op::Attach, Op::CreateKey, Op::Delete];

/// Whether the caller holds the right the operation needs, as the policy table grants it.
fn holds(caller: CallerKind, op: Op) -> bool {
    use CallerKind as C;
    let manages = matches!(caller, C::Admin | C::Writer | C::ReaderWriter | C::LimitedWriter | C::IssuerAdmin);
    match op {
        Op::Create | Op::Update | Op::Escalate | Op::Delete => manages,
        Op::Get | Op::List => manages || matches!(caller, C::Reader | C::Manager),
        Op::Attach => manages || matches!(caller, C::Manager | C::SuperDev),
        Op::CreateKey => manages || caller == C::Manager,
    }
}

/// The answer the rule gives.
fn expected(caller: CallerKind, role: RoleKind, op: Op) -> Code {
    let allowed = |yes: bool| if yes { Code::Ok } else { Code::PermissionDenied };
    let held_by_key = matches!(op, Op::Attach | Op::CreateKey);
    if caller == CallerKind::Anonymous {
        Code::Unauthenticated
    } else if !holds(caller, op) {
        Code::PermissionDenied
    } else if held_by_key && role == RoleKind::OtherOwner {
        // A key holds only its owner's roles and global ones: another's is none it has.
        Code::NotFound
    } else if caller == CallerKind::Admin {
        Code::Ok
    } else if held_by_key {
        allowed(role.grantable_by(caller))
    } else if role == RoleKind::OtherOwner {
        Code::PermissionDenied
    } else if matches!(op, Op::Get | Op::List) {
        Code::Ok
    } else if role == RoleKind::Global {
        Code::PermissionDenied
    } else {
        allowed(op != Op::Escalate && role.grantable_by(caller))
    }
}

/// A key of `owner` anyone in the matrix could have made (metered, expiring, Preprod).
fn plain_key(owner: &str, roles: Vec<String>) -> v1::ApiKey {
    v1::ApiKey { roles, ..TargetKind::Plain.key(owner) }
}

async fn admin_key(app: &TestApp, key: v1::ApiKey) -> v1::ApiKey {
    let request = v1::CreateApiKeyRequest { api_key: Some(key), ..Default::default() };
    app.client.clone().create_api_key(admin(request)).await.unwrap().into_inner().api_key.unwrap()
}

async fn role_state(client: &RoleServiceClient<Channel>, role: &v1::Role) -> Option<v1::Role> {
    let request = v1::GetRoleRequest { name: role.name.clone(), owner: role.owner.clone() };
    client.clone().get_role(admin(request)).await.ok().map(|answer| answer.into_inner().role.unwrap())
}

async fn key_state(app: &TestApp, id: &str) -> v1::ApiKey {
    let request = admin(v1::GetApiKeyRequest { id: id.to_owned() });
    app.client.clone().get_api_key(request).await.unwrap().into_inner().api_key.unwrap()
}

struct Case<'a> {
    app: &'a TestApp,
    roles: RoleServiceClient<Channel>,
    callers: &'a Callers,
    caller: CallerKind,
    kind: RoleKind,
}

impl Case<'_> {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        self.callers.request(self.caller, message)
    }

    async fn call(&self, op: Op, role: &v1::Role, tag: &str, own_key: &v1::ApiKey) -> Result<(), Status> {
        let (mut roles, mut keys) = (self.roles.clone(), self.app.client.clone());
        let with_scope = |scope: &str| {
            let mut scopes = role.scopes.clone();
            scopes.push(scope.to_owned());
            v1::UpdateRoleRequest {
                role: Some(v1::Role { scopes, ..role.clone() }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["scopes".into()] }),
            }
        };
        match op {
            Op::Create => {
                let fresh = self.kind.role(self.caller, &format!("made-{tag}"));
                roles.create_role(self.request(v1::CreateRoleRequest { role: Some(fresh) })).await.map(drop)
            }
            Op::Get => {
                let message = v1::GetRoleRequest { name: role.name.clone(), owner: role.owner.clone() };
                roles.get_role(self.request(message)).await.map(drop)
            }
            Op::List => {
                let message = v1::ListRolesRequest { owner: role.owner.clone(), ..Default::default() };
                roles.list_roles(self.request(message)).await.map(drop)
            }
            Op::Update => roles.update_role(self.request(with_scope("app.more"))).await.map(drop),
            Op::Escalate => roles.update_role(self.request(with_scope("admin"))).await.map(drop),
            Op::Attach => {
                let message = v1::UpdateApiKeyRequest {
                    api_key: Some(v1::ApiKey {
                        id: own_key.id.clone(),
                        roles: vec![role.name.clone()],
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths: vec!["roles".into()] }),
                    ..Default::default()
                };
                keys.update_api_key(self.request(message)).await.map(drop)
            }
            Op::CreateKey => {
                let key = plain_key(&Callers::owner(self.caller), vec![role.name.clone()]);
                keys.create_api_key(self.request(v1::CreateApiKeyRequest { api_key: Some(key), ..Default::default() }))
                    .await
                    .map(drop)
            }
            Op::Delete => {
                let message = v1::DeleteRoleRequest { name: role.name.clone(), owner: role.owner.clone(), force: true };
                roles.delete_role(self.request(message)).await.map(drop)
            }
        }
    }
}

async fn every_caller_against_every_role(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let signer = Signer::ec("escalation-roles");
    write_jwks(&jwks, &[&signer]);
    let app = spawn_with_jwks(backend, jwks.to_str().unwrap(), Duration::from_secs(60)).await;
    let callers = Callers::create(&app, &signer).await;
    let roles = RoleServiceClient::new(app.channel.clone());
    let mut failures = Vec::new();
    for (c, caller) in CALLERS.into_iter().enumerate() {
        let owner = Callers::owner(caller);
        for (r, kind) in ROLE_KINDS.into_iter().enumerate() {
            let tag = format!("r{r}-c{c}");
            let role = kind.role(caller, &tag);
            let request = admin(v1::CreateRoleRequest { role: Some(role.clone()) });
            let role = roles.clone().create_role(request).await.unwrap().into_inner().role.unwrap();
            // A key of the role's owner holds it; a key of the caller's owner is there to attach it to.
            let holder = admin_key(&app, plain_key(&role_owner(&role, &owner), vec![role.name.clone()])).await;
            let own_key = admin_key(&app, plain_key(&owner, vec![])).await;
            let case = Case { app: &app, roles: roles.clone(), callers: &callers, caller, kind };
            for op in OPS {
                let before = (role_state(&roles, &role).await, key_state(&app, &holder.id).await);
                let own_before = key_state(&app, &own_key.id).await;
                let outcome = case.call(op, &role, &tag, &own_key).await;
                let got = outcome.as_ref().map_or_else(Status::code, |()| Code::Ok);
                let want = expected(caller, kind, op);
                if got != want {
                    let message = outcome.as_ref().err().map(|status| status.message().to_owned()).unwrap_or_default();
                    failures.push(format!("{caller:?} {op:?} {kind:?}: want {want:?}, got {got:?} {message}"));
                }
                if outcome.is_err() {
                    let after = (role_state(&roles, &role).await, key_state(&app, &holder.id).await);
                    if after != before || key_state(&app, &own_key.id).await != own_before {
                        failures.push(format!("{caller:?} {op:?} {kind:?}: refused, yet something changed"));
                    }
                    if op == Op::Create {
                        let fresh = kind.role(caller, &format!("made-{tag}"));
                        if role_state(&roles, &fresh).await.is_some() {
                            failures.push(format!("{caller:?} Create {kind:?}: refused, yet the role exists"));
                        }
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} answers differ from the rule:\n{}", failures.len(), failures.join("\n"));
    app.stop().await;
}
both!(every_caller_against_every_role);

/// The owner whose key may hold `role`: its own, or for a global role the caller's.
fn role_owner(role: &v1::Role, caller_owner: &str) -> String {
    if role.owner.is_empty() { caller_owner.to_owned() } else { role.owner.clone() }
}
