//! VerifyApiKey requests converted in: the key, scopes, costs, rate uses and a hold.

use keyward_core::{
    credit::Credit,
    error::Result,
    rate::RateUse,
    validate::{AmountRule, Checks},
};
use keyward_proto::v1;

use super::Verification;
use crate::convert;

pub(in crate::service) fn verification(request: v1::VerifyApiKeyRequest) -> Result<Verification> {
    let v1::VerifyApiKeyRequest {
        key,
        required_scopes,
        network,
        cost,
        request_id,
        rate_limits,
        scope_query,
        hold,
        hold_ttl,
    } = request;
    let mut checks = Checks::new();
    // REQUIRED in the proto: an absent key is a malformed request, not a key that fails.
    if key.is_empty() {
        checks.fail("key", "is required");
    }
    checks.labels("required_scopes", &required_scopes);
    if !network.is_empty() {
        checks.label("network", &network);
    }
    let credits = checks.credits("cost", &convert::credits_in(&cost), AmountRule::Positive);
    let request_id = checks.request_id("request_id", &request_id);
    let rate: Vec<RateUse> =
        rate_limits.into_iter().map(|used| RateUse { name: used.name, cost: used.cost.unwrap_or(1) }).collect();
    checks.rate_uses("rate_limits", &rate);
    let hold = holding(&mut checks, &hold, hold_ttl, !credits.is_empty());
    checks.finish()?;
    Ok(Verification { key, required_scopes, scope_query, network, credits, request_id, rate, hold })
}

/// A verification's hold and its lifetime, if it asks for one.
fn holding(
    checks: &mut Checks,
    hold: &[v1::CreditAmount],
    ttl: Option<prost_types::Duration>,
    costs: bool,
) -> Option<(Vec<Credit>, chrono::TimeDelta)> {
    use keyward_core::hold::{DEFAULT_TTL, MAX_TTL};
    let amounts = checks.credits("hold", &convert::credits_in(hold), AmountRule::Positive);
    if let Some(over) = amounts.iter().find(|credit| credit.amount > keyward_core::credit::MAX_COST) {
        checks.fail("hold", format!("unit {:?} holds {}, more than 10^12", over.unit, over.amount));
    }
    if costs && !amounts.is_empty() {
        checks.fail("hold", "set either cost (charge now) or hold (reserve, capture later), not both");
    }
    let ttl = match ttl {
        None => DEFAULT_TTL,
        Some(ttl) if ttl.nanos == 0 && (1..=MAX_TTL.num_seconds()).contains(&ttl.seconds) => {
            chrono::TimeDelta::seconds(ttl.seconds)
        }
        Some(_) => {
            checks.fail("hold_ttl", "must be whole seconds, from 1 second to 24 hours");
            DEFAULT_TTL
        }
    };
    (!amounts.is_empty()).then_some((amounts, ttl))
}
