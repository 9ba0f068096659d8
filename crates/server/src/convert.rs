//! Domain ⇄ proto conversions. Proto messages are destructured without `..`, so a new
//! field is a compile error here rather than silently dropped data.

use chrono::{DateTime, TimeZone, Utc};
use keyward_core::{
    credit::{Credit, LedgerEntry, Refill, RefillPeriod},
    model::{ApiKey, CreditSource, ShownStatus},
    rate::{RateLimit, RateLimitInput},
    verify::Verdict,
};
use keyward_proto::v1;
use keyward_store::{CreditView, KeyRecord};
use prost::{Message, bytes::Bytes};

use crate::limiter::LimitState;

/// A proto timestamp.
pub(crate) fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: at.timestamp(), nanos: i32::try_from(at.timestamp_subsec_nanos()).unwrap_or(0) }
}

/// A proto timestamp as a UTC time, if it is a valid one.
pub(crate) fn from_timestamp(at: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(at.nanos).ok()?;
    Utc.timestamp_opt(at.seconds, nanos).single()
}

pub(crate) fn status(status: ShownStatus) -> v1::ApiKeyStatus {
    match status {
        ShownStatus::Active => v1::ApiKeyStatus::Active,
        ShownStatus::Inactive => v1::ApiKeyStatus::Inactive,
        ShownStatus::Revoked => v1::ApiKeyStatus::Revoked,
        ShownStatus::Expired => v1::ApiKeyStatus::Expired,
    }
}

pub(crate) fn verification_code(verdict: Verdict) -> v1::VerificationCode {
    match verdict {
        Verdict::Valid => v1::VerificationCode::Valid,
        Verdict::Malformed => v1::VerificationCode::Malformed,
        Verdict::NotFound => v1::VerificationCode::NotFound,
        Verdict::Inactive => v1::VerificationCode::Inactive,
        Verdict::Revoked => v1::VerificationCode::Revoked,
        Verdict::Expired => v1::VerificationCode::Expired,
        Verdict::InsufficientScope => v1::VerificationCode::InsufficientScope,
        Verdict::NetworkNotAllowed => v1::VerificationCode::NetworkNotAllowed,
        Verdict::UsageExceeded => v1::VerificationCode::UsageExceeded,
        Verdict::RateLimited => v1::VerificationCode::RateLimited,
    }
}

pub(crate) fn credit(credit: &Credit) -> v1::CreditAmount {
    v1::CreditAmount { unit: credit.unit.clone(), amount: credit.amount }
}

pub(crate) fn credits(credits: &[Credit]) -> Vec<v1::CreditAmount> {
    credits.iter().map(credit).collect()
}

/// Amounts as the domain holds them, unchecked (validation follows).
pub(crate) fn credits_in(amounts: &[v1::CreditAmount]) -> Vec<Credit> {
    amounts.iter().map(|amount| Credit::new(amount.unit.clone(), amount.amount)).collect()
}

pub(crate) fn refill(refill: &Refill) -> v1::CreditRefill {
    let period = match refill.period {
        RefillPeriod::Daily => v1::RefillPeriod::Daily,
        RefillPeriod::Monthly => v1::RefillPeriod::Monthly,
    };
    v1::CreditRefill { unit: refill.unit.clone(), amount: refill.amount, period: period.into() }
}

/// A key with its balances, refill schedules and low-balance thresholds, as it reads at `now`.
pub(crate) fn api_key_with_credits(key: &ApiKey, view: CreditView, now: DateTime<Utc>) -> v1::ApiKey {
    let CreditView { balances, refills, low_thresholds } = view;
    v1::ApiKey {
        credits: credits(&balances),
        credit_refills: refills.iter().map(refill).collect(),
        credit_low_thresholds: credits(&low_thresholds),
        ..api_key(key, now)
    }
}

pub(crate) fn ledger_entry(entry: &LedgerEntry) -> v1::CreditTransaction {
    let LedgerEntry {
        id,
        key_id,
        unit,
        delta,
        balance_after,
        reason,
        request_id,
        actor,
        created_at,
        hold_id,
        spent_by,
    } = entry;
    v1::CreditTransaction {
        id: *id,
        api_key_id: key_id.to_string(),
        unit: unit.clone(),
        delta: *delta,
        balance_after: *balance_after,
        reason: reason.clone(),
        request_id: request_id.clone().unwrap_or_default(),
        actor: actor.clone(),
        create_time: Some(timestamp(*created_at)),
        hold_id: hold_id.map(|id| id.to_string()).unwrap_or_default(),
        spent_by_api_key_id: spent_by.map(|id| id.to_string()).unwrap_or_default(),
    }
}

/// A credit hold as the API shows it.
pub(crate) fn credit_hold(hold: &keyward_core::hold::Hold) -> v1::CreditHold {
    use keyward_core::hold::HoldState;
    let state = match hold.state {
        HoldState::Live => v1::CreditHoldState::Live,
        HoldState::Captured => v1::CreditHoldState::Captured,
        HoldState::Released => v1::CreditHoldState::Released,
        HoldState::Expired => v1::CreditHoldState::Expired,
    };
    v1::CreditHold {
        id: hold.id.to_string(),
        api_key_id: hold.key_id.to_string(),
        amounts: credits(&hold.amounts),
        captured: credits(&hold.captured),
        state: state.into(),
        actor: hold.actor.clone(),
        create_time: Some(timestamp(hold.created_at)),
        expire_time: Some(timestamp(hold.expires_at)),
        settle_time: hold.settled_at.map(timestamp),
        settle_request_id: hold.settle_request_id.clone().unwrap_or_default(),
    }
}

/// A found key's encoding for a verification answer at `now`, made once per record: the
/// record is cached, and this is most of what a cached verification would otherwise build.
/// The cached encoding is of the key before its expiry; an answer about an expired key
/// (refused, so off the hot path) encodes it afresh to say EXPIRED.
pub(crate) fn encoded_api_key(record: &KeyRecord, now: DateTime<Utc>) -> Bytes {
    if record.key.status_at(now) == ShownStatus::Expired {
        return api_key(&record.key, now).encode_to_vec().into();
    }
    record.encoded_key.get_or_init(|| api_key(&record.key, now).encode_to_vec().into()).clone()
}

/// The proto form of a key as it reads at `now`; the secret is never part of either.
pub(crate) fn api_key(key: &ApiKey, now: DateTime<Utc>) -> v1::ApiKey {
    let ApiKey {
        id,
        number,
        name,
        mask,
        owner,
        creator,
        organization_id,
        organization_name,
        environment,
        scopes,
        networks,
        status: _,
        usage_limited,
        created_at,
        updated_at,
        expires_at,
        deleted_at,
        last_used_at,
        metadata,
        rate_limits,
        credit_source,
        roles,
        effective_scopes,
    } = key;
    v1::ApiKey {
        id: id.to_string(),
        number: *number,
        name: name.clone(),
        mask: mask.clone(),
        owner: owner.clone(),
        creator: creator.clone(),
        organization_id: organization_id.clone(),
        organization_name: organization_name.clone(),
        environment: environment.clone(),
        scopes: scopes.iter().cloned().collect(),
        networks: networks.iter().cloned().collect(),
        status: status(key.status_at(now)).into(),
        usage_limited: *usage_limited,
        create_time: Some(timestamp(*created_at)),
        update_time: Some(timestamp(*updated_at)),
        expire_time: expires_at.map(timestamp),
        delete_time: deleted_at.map(timestamp),
        last_use_time: last_used_at.map(timestamp),
        metadata: metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        credits: Vec::new(),
        credit_refills: Vec::new(),
        credit_low_thresholds: Vec::new(),
        rate_limits: rate_limits.iter().map(rate_limit).collect(),
        credit_source: match credit_source {
            CreditSource::Key => v1::CreditSource::Key,
            CreditSource::Owner => v1::CreditSource::Owner,
        }
        .into(),
        roles: roles.iter().cloned().collect(),
        effective_scopes: effective_scopes.iter().cloned().collect(),
    }
}

pub(crate) fn rate_limit(limit: &RateLimit) -> v1::RateLimit {
    let RateLimit { name, limit, period_ms, burst, auto_apply } = limit;
    v1::RateLimit {
        name: name.clone(),
        limit: *limit,
        period: Some(prost_types::Duration {
            seconds: period_ms / 1_000,
            nanos: i32::try_from(period_ms % 1_000 * 1_000_000).unwrap_or(0),
        }),
        burst: Some(*burst),
        auto_apply: *auto_apply,
    }
}

/// Limits as a request states them, unchecked (validation follows): a period that is
/// not whole, non-negative milliseconds has none.
pub(crate) fn rate_limits_in(limits: &[v1::RateLimit]) -> Vec<RateLimitInput> {
    limits
        .iter()
        .map(|limit| {
            let v1::RateLimit { name, limit, period, burst, auto_apply } = limit;
            let period_ms = period
                .as_ref()
                .filter(|period| period.nanos % 1_000_000 == 0 && period.seconds >= 0 && period.nanos >= 0)
                .and_then(|period| period.seconds.checked_mul(1_000)?.checked_add(i64::from(period.nanos / 1_000_000)));
            RateLimitInput { name: name.clone(), limit: *limit, period_ms, burst: *burst, auto_apply: *auto_apply }
        })
        .collect()
}

pub(crate) fn rate_limit_state(state: &LimitState) -> v1::RateLimitState {
    let LimitState { name, limit, remaining, reset_at } = state;
    v1::RateLimitState { name: name.clone(), limit: *limit, remaining: *remaining, reset_time: reset_at.map(timestamp) }
}
