//! `keyward.v1.RateLimitService`: the rate limits every key of an owner shares.

use chrono::Utc;
use keyward_core::{cases, error::Result, model::AuditAction, policy::Caller, validate::Checks};
use keyward_proto::v1::{self, rate_limit_service_server::RateLimitService};
use keyward_store::{Mutation, Store};
use tonic::{Request, Response, Status};

use crate::{audit::audited, convert, status::to_status, verifier::Verifier};

/// The RateLimitService implementation.
#[derive(Debug, Clone)]
pub struct RateLimitServiceImpl {
    store: Store,
    verifier: Verifier,
}

impl RateLimitServiceImpl {
    pub(crate) fn new(store: Store, verifier: Verifier) -> Self {
        Self { store, verifier }
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        self.verifier.authenticate(request.metadata()).await.map_err(to_status)
    }

    async fn set(
        &self,
        caller: &Caller,
        request: v1::SetOwnerRateLimitsRequest,
    ) -> Result<v1::SetOwnerRateLimitsResponse> {
        let v1::SetOwnerRateLimitsRequest { owner, rate_limits } = request;
        let mut checks = Checks::new();
        if owner.is_empty() {
            checks.fail("owner", "is required");
        }
        checks.subject("owner", &owner);
        let limits = checks.rate_limits("rate_limits", &convert::rate_limits_in(&rate_limits));
        checks.finish()?;
        cases::admit_set_limits(caller, &owner)?;
        let mutation = Mutation { actor: caller.subject(), request_id: None, now: Utc::now() };
        let stored = self.store.set_owner_rate_limits(&owner, &limits, &mutation).await?;
        self.verifier.owner_limits_changed(&owner);
        Ok(v1::SetOwnerRateLimitsResponse { owner, rate_limits: stored.iter().map(convert::rate_limit).collect() })
    }

    async fn get(
        &self,
        caller: &Caller,
        request: v1::GetOwnerRateLimitsRequest,
    ) -> Result<v1::GetOwnerRateLimitsResponse> {
        let v1::GetOwnerRateLimitsRequest { owner } = request;
        let mut checks = Checks::new();
        checks.subject("owner", &owner);
        checks.finish()?;
        let owner = cases::limits_owner(caller, owner)?;
        let limits = self.store.owner_rate_limits(&owner).await?;
        Ok(v1::GetOwnerRateLimitsResponse { owner, rate_limits: limits.iter().map(convert::rate_limit).collect() })
    }
}

#[tonic::async_trait]
impl RateLimitService for RateLimitServiceImpl {
    #[tracing::instrument(name = "SetOwnerRateLimits", skip_all)]
    async fn set_owner_rate_limits(
        &self,
        request: Request<v1::SetOwnerRateLimitsRequest>,
    ) -> Result<Response<v1::SetOwnerRateLimitsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let owner = request.owner.clone();
        let result = self.set(&caller, request).await;
        audited(&self.store, &caller, AuditAction::SetOwnerRateLimits, &owner, "", result).await.map(Response::new)
    }

    #[tracing::instrument(name = "GetOwnerRateLimits", skip_all)]
    async fn get_owner_rate_limits(
        &self,
        request: Request<v1::GetOwnerRateLimitsRequest>,
    ) -> Result<Response<v1::GetOwnerRateLimitsResponse>, Status> {
        let caller = self.caller(&request).await?;
        self.get(&caller, request.into_inner()).await.map(Response::new).map_err(to_status)
    }
}
