//! `keyward.v1.RoleService`: roles, the named bundles of scopes keys hold. The policy
//! table decides who manages whose roles; the store applies a change to a role and to
//! every key holding it in one transaction, and this replica's cache forgets those keys
//! (other replicas hear of them through the change listener).

mod requests;
pub(crate) use requests::UPDATABLE_FIELDS;

use chrono::Utc;
use keyward_core::{
    error::Result,
    model::{AuditAction, Role},
    page,
    policy::{self, Caller},
};
use keyward_proto::v1::{self, role_service_server::RoleService};
use keyward_store::{Mutation, Store};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{audit::audited, status::to_status, verifier::Verifier};

/// The RoleService implementation.
#[derive(Debug, Clone)]
pub struct RoleServiceImpl {
    store: Store,
    verifier: Verifier,
}

impl RoleServiceImpl {
    pub(crate) fn new(store: Store, verifier: Verifier) -> Self {
        Self { store, verifier }
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        self.verifier.authenticate(request.metadata()).await.map_err(to_status)
    }

    fn mutation(caller: &Caller) -> Mutation {
        Mutation { actor: caller.subject(), request_id: None, now: Utc::now() }
    }

    /// Forgets the cached keys a role change reached.
    fn keys_changed(&self, ids: &[Uuid]) {
        for id in ids {
            self.verifier.key_changed(*id);
        }
    }

    async fn create(&self, caller: &Caller, request: v1::CreateRoleRequest) -> Result<v1::CreateRoleResponse> {
        let mutation = Self::mutation(caller);
        let role = requests::role(request, caller, mutation.now)?;
        let authority = policy::authorize_roles(caller, &role.owner)?;
        let created = self.store.create_role(&role, &authority, &mutation).await?;
        Ok(v1::CreateRoleResponse { role: Some(requests::to_proto(&created)) })
    }

    async fn get(&self, caller: &Caller, request: v1::GetRoleRequest) -> Result<v1::GetRoleResponse> {
        let v1::GetRoleRequest { name, owner } = request;
        let named = requests::named(caller, name, owner)?;
        policy::authorize_role_read(caller, &named.owner)?;
        let role = self.store.role(&named.owner, &named.name).await?;
        Ok(v1::GetRoleResponse { role: Some(requests::to_proto(&role)) })
    }

    async fn list(&self, caller: &Caller, request: v1::ListRolesRequest) -> Result<v1::ListRolesResponse> {
        let v1::ListRolesRequest { page_size, page_token, owner } = request;
        let owner = requests::list_owner(caller, owner)?;
        policy::authorize_role_read(caller, &owner)?;
        let limit = page::page_size(page_size)?;
        let filters = format!("roles|{owner}");
        let after = page::decode_id(&page_token, &filters)?;
        let roles = self.store.roles(&owner, after, page::fetch_limit(limit)).await?;
        let (roles, next_page_token) = page::cut(roles, limit, |role| page::encode_id(role.id, &filters))?;
        Ok(v1::ListRolesResponse { roles: roles.iter().map(requests::to_proto).collect(), next_page_token })
    }

    async fn update(&self, caller: &Caller, request: v1::UpdateRoleRequest) -> Result<v1::UpdateRoleResponse> {
        let (named, patch) = requests::patch(request, caller)?;
        let authority = policy::authorize_roles(caller, &named.owner)?;
        let (role, changed) =
            self.store.update_role(&named.owner, &named.name, &patch, &authority, &Self::mutation(caller)).await?;
        self.keys_changed(&changed);
        Ok(v1::UpdateRoleResponse { role: Some(requests::to_proto(&role)) })
    }

    async fn delete(&self, caller: &Caller, request: v1::DeleteRoleRequest) -> Result<v1::DeleteRoleResponse> {
        let v1::DeleteRoleRequest { name, owner, force } = request;
        let named = requests::named(caller, name, owner)?;
        let authority = policy::authorize_roles(caller, &named.owner)?;
        let changed =
            self.store.delete_role(&named.owner, &named.name, force, &authority, &Self::mutation(caller)).await?;
        self.keys_changed(&changed);
        Ok(v1::DeleteRoleResponse {})
    }
}

/// How a failed change's audit row names the role the request named.
fn target(caller: &Caller, name: &str, owner: &str) -> String {
    Role::audit_target(&requests::role_owner(caller, name, owner), name)
}

#[tonic::async_trait]
impl RoleService for RoleServiceImpl {
    #[tracing::instrument(name = "CreateRole", skip_all)]
    async fn create_role(
        &self,
        request: Request<v1::CreateRoleRequest>,
    ) -> Result<Response<v1::CreateRoleResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let named = request.role.as_ref().map(|role| target(&caller, &role.name, &role.owner)).unwrap_or_default();
        let result = self.create(&caller, request).await;
        audited(&self.store, &caller, AuditAction::CreateRole, &named, "", result).await.map(Response::new)
    }

    #[tracing::instrument(name = "GetRole", skip_all)]
    async fn get_role(&self, request: Request<v1::GetRoleRequest>) -> Result<Response<v1::GetRoleResponse>, Status> {
        let caller = self.caller(&request).await?;
        self.get(&caller, request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    #[tracing::instrument(name = "ListRoles", skip_all)]
    async fn list_roles(
        &self,
        request: Request<v1::ListRolesRequest>,
    ) -> Result<Response<v1::ListRolesResponse>, Status> {
        let caller = self.caller(&request).await?;
        self.list(&caller, request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    #[tracing::instrument(name = "UpdateRole", skip_all)]
    async fn update_role(
        &self,
        request: Request<v1::UpdateRoleRequest>,
    ) -> Result<Response<v1::UpdateRoleResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let named = request.role.as_ref().map(|role| target(&caller, &role.name, &role.owner)).unwrap_or_default();
        let result = self.update(&caller, request).await;
        audited(&self.store, &caller, AuditAction::UpdateRole, &named, "", result).await.map(Response::new)
    }

    #[tracing::instrument(name = "DeleteRole", skip_all)]
    async fn delete_role(
        &self,
        request: Request<v1::DeleteRoleRequest>,
    ) -> Result<Response<v1::DeleteRoleResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let named = target(&caller, &request.name, &request.owner);
        let result = self.delete(&caller, request).await;
        audited(&self.store, &caller, AuditAction::DeleteRole, &named, "", result).await.map(Response::new)
    }
}
