//! CreditService's operations on owners' pools: balances, adjustments, refills and
//! low-balance thresholds, and the ledger. A pool is an account like a key's, named by
//! owner and environment; rights are judged over the owner.

use chrono::Utc;
use keyward_core::{
    credit,
    error::Result,
    policy::{self, Action, Caller},
    validate::Checks,
};
use keyward_proto::v1;
use keyward_store::Mutation;

use super::{CreditServiceImpl, LedgerWindow, checked_deltas, ledger_page};
use crate::{
    convert,
    service::{environment_name, refills, thresholds},
};

impl CreditServiceImpl {
    /// The environment (by its configured name) of the pool a request names, its owner checked.
    fn pool(&self, checks: &mut Checks, owner: &str, environment: &str) -> String {
        if owner.is_empty() {
            checks.fail("owner", "is required: name the owner whose pool it is");
        }
        checks.subject("owner", owner);
        environment_name(checks, "environment", environment, &self.environments)
    }

    /// The audit target of a change of a pool: its id, as the store records a change that
    /// went through.
    pub(super) fn pool_target(&self, owner: &str, environment: &str) -> String {
        let resolved = self.environments.resolve(environment).map(|found| found.name.clone());
        credit::pool_id(owner, &resolved.unwrap_or_else(|| environment.to_owned())).to_string()
    }

    pub(super) async fn pool_balances(
        &self,
        caller: &Caller,
        request: v1::GetOwnerCreditBalancesRequest,
    ) -> Result<v1::GetOwnerCreditBalancesResponse> {
        let v1::GetOwnerCreditBalancesRequest { owner, environment } = request;
        let mut checks = Checks::new();
        let environment = self.pool(&mut checks, &owner, &environment);
        checks.finish()?;
        policy::authorize_owner(caller, Action::ReadKeys, &owner)?;
        let view = self.store.pool_view(&owner, &environment).await?;
        Ok(v1::GetOwnerCreditBalancesResponse {
            owner,
            environment,
            balances: convert::credits(&view.balances),
            credit_refills: view.refills.iter().map(convert::refill).collect(),
            credit_low_thresholds: convert::credits(&view.low_thresholds),
        })
    }

    pub(super) async fn adjust_pool(
        &self,
        caller: &Caller,
        request: v1::AdjustOwnerCreditsRequest,
    ) -> Result<v1::AdjustOwnerCreditsResponse> {
        let v1::AdjustOwnerCreditsRequest { owner, environment, deltas, reason, request_id } = request;
        let mut checks = Checks::new();
        let environment = self.pool(&mut checks, &owner, &environment);
        let deltas = checked_deltas(&mut checks, &deltas);
        let reason = checks.reason("reason", &reason);
        let request_id = checks.request_id("request_id", &request_id);
        checks.finish()?;
        policy::authorize_owner(caller, Action::AdjustCredits, &owner)?;
        let mutation = Mutation { actor: caller.subject(), request_id, now: Utc::now() };
        let balances = self.store.adjust_pool_credits(&owner, &environment, &deltas, &reason, &mutation).await?;
        Ok(v1::AdjustOwnerCreditsResponse { balances: convert::credits(&balances) })
    }

    pub(super) async fn update_pool(
        &self,
        caller: &Caller,
        request: v1::UpdateOwnerCreditPoolRequest,
    ) -> Result<v1::UpdateOwnerCreditPoolResponse> {
        let v1::UpdateOwnerCreditPoolRequest { owner, environment, credit_refills, credit_low_thresholds, request_id } =
            request;
        let mut checks = Checks::new();
        let environment = self.pool(&mut checks, &owner, &environment);
        let refills = refills(&mut checks, "credit_refills", &credit_refills);
        let thresholds = thresholds(&mut checks, "credit_low_thresholds", &credit_low_thresholds);
        let request_id = checks.request_id("request_id", &request_id);
        checks.finish()?;
        policy::authorize_owner(caller, Action::AdjustCredits, &owner)?;
        let mutation = Mutation { actor: caller.subject(), request_id, now: Utc::now() };
        let view = self.store.update_pool(&owner, &environment, &refills, &thresholds, &mutation).await?;
        Ok(v1::UpdateOwnerCreditPoolResponse {
            owner,
            environment,
            balances: convert::credits(&view.balances),
            credit_refills: view.refills.iter().map(convert::refill).collect(),
            credit_low_thresholds: convert::credits(&view.low_thresholds),
        })
    }

    pub(super) async fn pool_transactions(
        &self,
        caller: &Caller,
        request: v1::ListOwnerCreditTransactionsRequest,
    ) -> Result<v1::ListOwnerCreditTransactionsResponse> {
        let v1::ListOwnerCreditTransactionsRequest { owner, environment, page_size, page_token, start_time, end_time } =
            request;
        let mut checks = Checks::new();
        let environment = self.pool(&mut checks, &owner, &environment);
        let window = LedgerWindow::check(&mut checks, page_size, start_time.as_ref(), end_time.as_ref());
        checks.finish()?;
        policy::authorize_owner(caller, Action::ReadKeys, &owner)?;
        let id = credit::pool_id(&owner, &environment);
        let filters = format!("{id}|{:?}|{:?}", window.start, window.end);
        let (query, limit) = window.query(id, &page_token, &filters)?;
        let entries = self.store.pool_transactions(&query).await?;
        let (transactions, next_page_token) = ledger_page(entries, limit, &filters)?;
        Ok(v1::ListOwnerCreditTransactionsResponse { transactions, next_page_token })
    }
}
