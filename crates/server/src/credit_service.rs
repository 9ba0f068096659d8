//! `keyward.v1.CreditService`: balances, adjustments, the ledger and usage. Charges
//! happen in VerifyApiKey.

use std::collections::BTreeMap;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use keyward_core::{
    Error,
    credit::{Credit, LedgerEntry, MAX_COST},
    environment::Environments,
    error::Result,
    hold::Hold,
    model::AuditAction,
    page,
    policy::{self, Action, Caller},
    validate::{AmountRule, Checks},
};
use keyward_proto::v1::{self, credit_service_server::CreditService};
use keyward_store::{HoldQuery, HoldScope, LedgerQuery, Mutation, Store, UsageScope};
use tonic::{Request, Response, Status};
use uuid::Uuid;

mod pools;

use crate::{
    audit::audited,
    convert::{self, from_timestamp},
    status::to_status,
    verifier::Verifier,
};

/// Verifications per outcome and credits spent per unit, of one bucket.
type BucketTotals = (BTreeMap<String, i64>, BTreeMap<String, i64>);

/// Longest range GetUsage answers.
const MAX_USAGE_DAYS: i64 = 366;

/// The CreditService implementation.
#[derive(Debug, Clone)]
pub struct CreditServiceImpl {
    store: Store,
    verifier: Verifier,
    /// The environments owners' pools are kept in.
    environments: Environments,
}

impl CreditServiceImpl {
    pub(crate) fn new(store: Store, verifier: Verifier, environments: Environments) -> Self {
        Self { store, verifier, environments }
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        self.verifier.authenticate(request.metadata()).await.map_err(to_status)
    }

    async fn adjust(&self, caller: &Caller, request: v1::AdjustCreditsRequest) -> Result<v1::AdjustCreditsResponse> {
        let authority = policy::authorize_mutation(caller, Action::AdjustCredits)?;
        let v1::AdjustCreditsRequest { api_key_id, deltas, reason, request_id } = request;
        let mut checks = Checks::new();
        let id = checks.uuid("api_key_id", &api_key_id);
        let deltas = checked_deltas(&mut checks, &deltas);
        let reason = checks.reason("reason", &reason);
        let request_id = checks.request_id("request_id", &request_id);
        checks.finish()?;
        let mutation = Mutation { actor: caller.subject(), request_id, now: Utc::now() };
        let balances = self.store.adjust_credits(id, &authority, &deltas, &reason, &mutation).await?;
        Ok(v1::AdjustCreditsResponse { balances: convert::credits(&balances) })
    }

    async fn transactions(
        &self,
        caller: &Caller,
        request: v1::ListCreditTransactionsRequest,
    ) -> Result<v1::ListCreditTransactionsResponse> {
        let reach = policy::authorize(caller, Action::ReadKeys)?;
        let v1::ListCreditTransactionsRequest { api_key_id, page_size, page_token, start_time, end_time } = request;
        let mut checks = Checks::new();
        let id = checks.uuid("api_key_id", &api_key_id);
        let window = LedgerWindow::check(&mut checks, page_size, start_time.as_ref(), end_time.as_ref());
        checks.finish()?;
        let filters = format!("{reach:?}|{id}|{:?}|{:?}", window.start, window.end);
        let (query, limit) = window.query(id, &page_token, &filters)?;
        let entries = self.store.credit_transactions(&query, &reach).await?;
        let (transactions, next_page_token) = ledger_page(entries, limit, &filters)?;
        Ok(v1::ListCreditTransactionsResponse { transactions, next_page_token })
    }

    async fn usage(&self, caller: &Caller, request: v1::GetUsageRequest) -> Result<v1::GetUsageResponse> {
        let reach = policy::authorize(caller, Action::ReadKeys)?;
        let v1::GetUsageRequest { api_key_id, owner, start_time, end_time, granularity, page_size, page_token } =
            request;
        let mut checks = Checks::new();
        let limit = page::page_size(page_size);
        if let Err(Error::InvalidArgument(violations)) = &limit {
            violations.iter().for_each(|v| checks.fail(v.field.clone(), v.description.clone()));
        }
        // The request as sent, not the defaults it resolves to: an open end is "now" on
        // every page.
        let filters = format!("{reach:?}|{api_key_id}|{owner}|{start_time:?}|{end_time:?}|{granularity}");
        let scope = match (api_key_id.is_empty(), owner.is_empty()) {
            (false, true) => UsageScope::Key(checks.uuid("api_key_id", &api_key_id)),
            (true, false) => {
                checks.subject("owner", &owner);
                UsageScope::Owner(owner)
            }
            (true, true) | (false, false) => {
                checks.fail("api_key_id", "set exactly one of api_key_id and owner");
                UsageScope::Key(Uuid::nil())
            }
        };
        if start_time.is_none() {
            checks.fail("start_time", "is required");
        }
        let start = optional_time(&mut checks, "start_time", start_time.as_ref());
        let end = optional_time(&mut checks, "end_time", end_time.as_ref()).unwrap_or_else(Utc::now);
        if let Some(start) = start
            && (end <= start || end - start > TimeDelta::days(MAX_USAGE_DAYS))
        {
            checks.fail("end_time", format!("must be after start_time and at most {MAX_USAGE_DAYS} days later"));
        }
        let bucket = match v1::UsageGranularity::try_from(granularity) {
            Ok(v1::UsageGranularity::Unspecified | v1::UsageGranularity::Hour) => TimeDelta::hours(1),
            Ok(v1::UsageGranularity::Day) => TimeDelta::days(1),
            Err(_) => {
                checks.fail("granularity", "must be HOUR or DAY");
                TimeDelta::hours(1)
            }
        };
        // A start that failed its check never passes `finish`, so the placeholder is never used.
        let start = start.unwrap_or(DateTime::UNIX_EPOCH);
        checks.finish()?;
        let limit = limit?;
        match &scope {
            UsageScope::Key(id) => {
                self.store.get(*id, &reach).await?;
            }
            UsageScope::Owner(owner) => policy::authorize_owner(caller, Action::ReadKeys, owner)?,
        }
        // A page starts after the last bucket of the one before.
        let from = match page::decode(&page_token, &filters)? {
            Some(last) => DateTime::from_timestamp(last, 0)
                .and_then(|last| last.checked_add_signed(bucket))
                .ok_or_else(|| Error::invalid("page_token", "is not a token returned by this API"))?
                .max(start),
            None => start,
        };
        // Stored counters are hourly: a day bucket gathers the hours that start within it,
        // so the first `limit + 1` buckets with usage lie within that many times 24 hours
        // with usage. The bucket after the page's last is where the page ends.
        let hours_per_bucket = u64::try_from(bucket.num_hours()).map_err(Error::internal)?;
        let hours = self.store.usage_hours(&scope, from, end, page::fetch_limit(limit) * hours_per_bucket).await?;
        let mut starts: Vec<DateTime<Utc>> =
            hours.into_iter().map(|hour| hour.duration_trunc(bucket).unwrap_or(hour)).collect();
        starts.dedup();
        let page_end = usize::try_from(limit).ok().and_then(|limit| starts.get(limit)).copied();
        let usage = self.store.hourly_usage(&scope, from, page_end.unwrap_or(end)).await?;
        let mut buckets: BTreeMap<DateTime<Utc>, BucketTotals> = BTreeMap::new();
        for (hour, outcome, count) in usage.verifications {
            let entry = buckets.entry(hour.duration_trunc(bucket).unwrap_or(hour)).or_default();
            let verifications = entry.0.entry(outcome).or_default();
            *verifications = verifications.saturating_add(count);
        }
        for (hour, unit, amount) in usage.spent {
            let entry = buckets.entry(hour.duration_trunc(bucket).unwrap_or(hour)).or_default();
            let spent = entry.1.entry(unit).or_default();
            *spent = spent.saturating_add(amount);
        }
        let next_page_token = match (page_end, buckets.keys().next_back()) {
            (Some(_), Some(last)) => page::encode(last.timestamp(), &filters),
            _ => String::new(),
        };
        Ok(v1::GetUsageResponse {
            next_page_token,
            buckets: buckets
                .into_iter()
                .map(|(start, (verifications, spent))| v1::UsageBucket {
                    start_time: Some(convert::timestamp(start)),
                    verifications: verifications.into_iter().collect(),
                    credits_spent: spent.into_iter().map(|(unit, amount)| v1::CreditAmount { unit, amount }).collect(),
                })
                .collect(),
        })
    }
}

impl CreditServiceImpl {
    async fn capture(
        &self,
        caller: &Caller,
        request: v1::CaptureCreditHoldRequest,
    ) -> Result<v1::CaptureCreditHoldResponse> {
        policy::authorize(caller, Action::SettleHold)?;
        let v1::CaptureCreditHoldRequest { hold_id, amounts, request_id } = request;
        let mut checks = Checks::new();
        let id = checks.uuid("hold_id", &hold_id);
        let amounts = checks.credits("amounts", &convert::credits_in(&amounts), AmountRule::NonNegative);
        if let Some(over) = amounts.iter().find(|credit| credit.amount > MAX_COST) {
            checks.fail("amounts", format!("unit {:?}: {} is more than 10^12", over.unit, over.amount));
        }
        let request_id = checks.request_id("request_id", &request_id);
        checks.finish()?;
        let mutation = Mutation { actor: caller.subject(), request_id, now: Utc::now() };
        let admit = |hold: &Hold| policy::authorize_settle(caller, &hold.actor, &hold_id);
        let hold = self.store.capture_hold(id, &amounts, admit, &mutation).await?;
        Ok(v1::CaptureCreditHoldResponse { hold: Some(convert::credit_hold(&hold)) })
    }

    async fn release(
        &self,
        caller: &Caller,
        request: v1::ReleaseCreditHoldRequest,
    ) -> Result<v1::ReleaseCreditHoldResponse> {
        policy::authorize(caller, Action::SettleHold)?;
        let v1::ReleaseCreditHoldRequest { hold_id, request_id } = request;
        let mut checks = Checks::new();
        let id = checks.uuid("hold_id", &hold_id);
        let request_id = checks.request_id("request_id", &request_id);
        checks.finish()?;
        let mutation = Mutation { actor: caller.subject(), request_id, now: Utc::now() };
        let admit = |hold: &Hold| policy::authorize_settle(caller, &hold.actor, &hold_id);
        let hold = self.store.release_hold(id, admit, &mutation).await?;
        Ok(v1::ReleaseCreditHoldResponse { hold: Some(convert::credit_hold(&hold)) })
    }

    async fn list_holds(
        &self,
        caller: &Caller,
        request: v1::ListCreditHoldsRequest,
    ) -> Result<v1::ListCreditHoldsResponse> {
        let reach = policy::authorize(caller, Action::ReadKeys)?;
        let v1::ListCreditHoldsRequest { api_key_id, owner, live_only, page_size, page_token } = request;
        let mut checks = Checks::new();
        let limit = page::page_size(page_size);
        if let Err(Error::InvalidArgument(violations)) = &limit {
            violations.iter().for_each(|v| checks.fail(v.field.clone(), v.description.clone()));
        }
        let filters = format!("{reach:?}|{api_key_id}|{owner}|{live_only}");
        let scope = match (api_key_id.is_empty(), owner.is_empty()) {
            (false, true) => HoldScope::Key(checks.uuid("api_key_id", &api_key_id)),
            (true, false) => {
                checks.subject("owner", &owner);
                HoldScope::Owner(owner)
            }
            (true, true) | (false, false) => {
                checks.fail("api_key_id", "set exactly one of api_key_id and owner");
                HoldScope::Key(Uuid::nil())
            }
        };
        checks.finish()?;
        let limit = limit?;
        match &scope {
            HoldScope::Key(id) => {
                self.store.get(*id, &reach).await?;
            }
            HoldScope::Owner(owner) => policy::authorize_owner(caller, Action::ReadKeys, owner)?,
        }
        let before = page::decode_id(&page_token, &filters)?;
        let query = HoldQuery { scope, live_only, before, limit: page::fetch_limit(limit) };
        let holds = self.store.holds(&query).await?;
        let (holds, next_page_token) = page::cut(holds, limit, |hold| page::encode_id(hold.id, &filters))?;
        Ok(v1::ListCreditHoldsResponse { holds: holds.iter().map(convert::credit_hold).collect(), next_page_token })
    }
}

/// The page size and time range of a ledger listing (a key's or a pool's), as checked.
struct LedgerWindow {
    limit: Result<u64>,
    start: Option<DateTime<Utc>>,
    end: Option<DateTime<Utc>>,
}

impl LedgerWindow {
    fn check(
        checks: &mut Checks,
        page_size: i32,
        start_time: Option<&prost_types::Timestamp>,
        end_time: Option<&prost_types::Timestamp>,
    ) -> Self {
        let limit = page::page_size(page_size);
        if let Err(Error::InvalidArgument(violations)) = &limit {
            violations.iter().for_each(|v| checks.fail(v.field.clone(), v.description.clone()));
        }
        let start = optional_time(checks, "start_time", start_time);
        let end = optional_time(checks, "end_time", end_time);
        Self { limit, start, end }
    }

    /// The query of the page after `page_token` of account `id`'s ledger, and the page's size.
    fn query(self, id: Uuid, page_token: &str, filters: &str) -> Result<(LedgerQuery, u64)> {
        let limit = self.limit?;
        let after_id = page::decode(page_token, filters)?;
        Ok((
            LedgerQuery { key_id: id, after_id, start: self.start, end: self.end, limit: page::fetch_limit(limit) },
            limit,
        ))
    }
}

/// A page of a ledger listing (a key's or a pool's) and the next page's token, from
/// `entries` (one more than `limit` when a page follows).
/// The `deltas` of an adjustment, of a key or of a pool: at least one, each unit once, none zero.
fn checked_deltas(checks: &mut Checks, deltas: &[v1::CreditDelta]) -> Vec<Credit> {
    if deltas.is_empty() {
        checks.fail("deltas", "is required: name at least one unit and its delta");
    }
    let amounts: Vec<Credit> = deltas.iter().map(|delta| Credit::new(delta.unit.clone(), delta.delta)).collect();
    checks.credits("deltas", &amounts, AmountRule::NonZero)
}

fn ledger_page(entries: Vec<LedgerEntry>, limit: u64, filters: &str) -> Result<(Vec<v1::CreditTransaction>, String)> {
    let (entries, next_page_token) = page::cut(entries, limit, |entry| page::encode(entry.id, filters))?;
    Ok((entries.iter().map(convert::ledger_entry).collect(), next_page_token))
}

fn optional_time(checks: &mut Checks, field: &str, at: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let at = at?;
    let parsed = from_timestamp(at);
    if parsed.is_none() {
        checks.fail(field, "is not a valid timestamp");
    }
    parsed
}

#[tonic::async_trait]
impl CreditService for CreditServiceImpl {
    #[tracing::instrument(name = "GetCreditBalances", skip_all)]
    async fn get_credit_balances(
        &self,
        request: Request<v1::GetCreditBalancesRequest>,
    ) -> Result<Response<v1::GetCreditBalancesResponse>, Status> {
        let caller = self.caller(&request).await?;
        let v1::GetCreditBalancesRequest { api_key_id } = request.into_inner();
        let result = async {
            let reach = policy::authorize(&caller, Action::ReadKeys)?;
            let mut checks = Checks::new();
            let id = checks.uuid("api_key_id", &api_key_id);
            checks.finish()?;
            let key = self.store.get(id, &reach).await?;
            let balances = self.store.balances(id, &reach).await?;
            Ok(v1::GetCreditBalancesResponse {
                usage_limited: key.usage_limited,
                balances: convert::credits(&balances),
            })
        }
        .await;
        result.map(Response::new).map_err(to_status)
    }

    #[tracing::instrument(name = "AdjustCredits", skip_all)]
    async fn adjust_credits(
        &self,
        request: Request<v1::AdjustCreditsRequest>,
    ) -> Result<Response<v1::AdjustCreditsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let (target, request_id) = (request.api_key_id.clone(), request.request_id.clone());
        let result = self.adjust(&caller, request).await;
        audited(&self.store, &caller, AuditAction::AdjustCredits, &target, &request_id, result).await.map(Response::new)
    }

    #[tracing::instrument(name = "GetOwnerCreditBalances", skip_all)]
    async fn get_owner_credit_balances(
        &self,
        request: Request<v1::GetOwnerCreditBalancesRequest>,
    ) -> Result<Response<v1::GetOwnerCreditBalancesResponse>, Status> {
        let caller = self.caller(&request).await?;
        self.pool_balances(&caller, request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    #[tracing::instrument(name = "AdjustOwnerCredits", skip_all)]
    async fn adjust_owner_credits(
        &self,
        request: Request<v1::AdjustOwnerCreditsRequest>,
    ) -> Result<Response<v1::AdjustOwnerCreditsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let target = self.pool_target(&request.owner, &request.environment);
        let request_id = request.request_id.clone();
        let result = self.adjust_pool(&caller, request).await;
        audited(&self.store, &caller, AuditAction::AdjustOwnerCredits, &target, &request_id, result)
            .await
            .map(Response::new)
    }

    #[tracing::instrument(name = "UpdateOwnerCreditPool", skip_all)]
    async fn update_owner_credit_pool(
        &self,
        request: Request<v1::UpdateOwnerCreditPoolRequest>,
    ) -> Result<Response<v1::UpdateOwnerCreditPoolResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let target = self.pool_target(&request.owner, &request.environment);
        let request_id = request.request_id.clone();
        let result = self.update_pool(&caller, request).await;
        audited(&self.store, &caller, AuditAction::UpdateOwnerCreditPool, &target, &request_id, result)
            .await
            .map(Response::new)
    }

    #[tracing::instrument(name = "ListOwnerCreditTransactions", skip_all)]
    async fn list_owner_credit_transactions(
        &self,
        request: Request<v1::ListOwnerCreditTransactionsRequest>,
    ) -> Result<Response<v1::ListOwnerCreditTransactionsResponse>, Status> {
        let caller = self.caller(&request).await?;
        self.pool_transactions(&caller, request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    #[tracing::instrument(name = "ListCreditTransactions", skip_all)]
    async fn list_credit_transactions(
        &self,
        request: Request<v1::ListCreditTransactionsRequest>,
    ) -> Result<Response<v1::ListCreditTransactionsResponse>, Status> {
        let caller = self.caller(&request).await?;
        self.transactions(&caller, request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    #[tracing::instrument(name = "CaptureCreditHold", skip_all)]
    async fn capture_credit_hold(
        &self,
        request: Request<v1::CaptureCreditHoldRequest>,
    ) -> Result<Response<v1::CaptureCreditHoldResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let (target, request_id) = (request.hold_id.clone(), request.request_id.clone());
        let result = self.capture(&caller, request).await;
        audited(&self.store, &caller, AuditAction::CaptureCreditHold, &target, &request_id, result)
            .await
            .map(Response::new)
    }

    #[tracing::instrument(name = "ReleaseCreditHold", skip_all)]
    async fn release_credit_hold(
        &self,
        request: Request<v1::ReleaseCreditHoldRequest>,
    ) -> Result<Response<v1::ReleaseCreditHoldResponse>, Status> {
        let caller = self.caller(&request).await?;
        let request = request.into_inner();
        let (target, request_id) = (request.hold_id.clone(), request.request_id.clone());
        let result = self.release(&caller, request).await;
        audited(&self.store, &caller, AuditAction::ReleaseCreditHold, &target, &request_id, result)
            .await
            .map(Response::new)
    }

    #[tracing::instrument(name = "ListCreditHolds", skip_all)]
    async fn list_credit_holds(
        &self,
        request: Request<v1::ListCreditHoldsRequest>,
    ) -> Result<Response<v1::ListCreditHoldsResponse>, Status> {
        let caller = self.caller(&request).await?;
        self.list_holds(&caller, request.into_inner()).await.map(Response::new).map_err(to_status)
    }

    #[tracing::instrument(name = "GetUsage", skip_all)]
    async fn get_usage(&self, request: Request<v1::GetUsageRequest>) -> Result<Response<v1::GetUsageResponse>, Status> {
        let caller = self.caller(&request).await?;
        self.usage(&caller, request.into_inner()).await.map(Response::new).map_err(to_status)
    }
}
