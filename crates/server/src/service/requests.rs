//! ApiKeyService requests converted in: every field checked, all violations answered at
//! once in one `BadRequest`, and the result handed over as core's commands. Rights and
//! rules are not decided here; core's use cases decide them.

use std::{collections::BTreeSet, time::Duration};

use chrono::{DateTime, Utc};
use keyward_core::{
    Error,
    cases::{CreateKey, UpdateKey},
    credit::{Credit, Refill, RefillPeriod},
    environment::Environments,
    error::Result,
    model::{CreditSource, KeyPatch, KeyStatus, ShownStatus},
    page,
    rate::RateUse,
    secret,
    validate::{AmountRule, Checks, KeyRef},
};
use keyward_proto::v1;
use secrecy::SecretString;

use crate::convert::{self, from_timestamp};

mod verification;
pub(super) use verification::verification;

/// A checked request: the command, and its idempotency token if it has one.
pub(super) struct Checked<T> {
    pub(super) command: T,
    pub(super) request_id: Option<String>,
}

/// A checked UpdateApiKey: the key it names (and how the caller named it, for NOT_FOUND).
pub(super) struct Change {
    pub(super) key: KeyRef,
    pub(super) asked: String,
    pub(super) command: UpdateKey,
    pub(super) request_id: Option<String>,
}

/// A checked RotateApiKey.
pub(super) struct Rotation {
    pub(super) key: KeyRef,
    pub(super) grace: Duration,
    pub(super) import_secret: Option<SecretString>,
    pub(super) request_id: Option<String>,
}

/// A checked ListApiKeys, but for where the page starts.
pub(super) struct Listing {
    pub(super) limit: u64,
    pub(super) owner: Option<String>,
    pub(super) organization_id: Option<String>,
    pub(super) environment: Option<String>,
    pub(super) status: Option<ShownStatus>,
    pub(super) show_revoked: bool,
    pub(super) page_token: String,
    pub(super) start_at: Option<KeyRef>,
}

impl Listing {
    /// The filters a page token is bound to, with the caller's reach.
    pub(super) fn filters(&self, reach: &keyward_core::policy::Reach) -> String {
        let Self { owner, organization_id, environment, status, show_revoked, .. } = self;
        let text = |value: &Option<String>| value.clone().unwrap_or_default();
        format!("{reach:?}|{}|{}|{}|{status:?}|{show_revoked}", text(owner), text(organization_id), text(environment))
    }
}

/// A checked VerifyApiKey.
pub(super) struct Verification {
    pub(super) key: String,
    pub(super) required_scopes: Vec<String>,
    /// The scope query as given; parsed by the verifier, which keeps it parsed.
    pub(super) scope_query: String,
    pub(super) network: String,
    pub(super) credits: Vec<Credit>,
    pub(super) request_id: Option<String>,
    pub(super) rate: Vec<RateUse>,
    /// Credits to reserve instead of charging, and for how long.
    pub(super) hold: Option<(Vec<Credit>, chrono::TimeDelta)>,
}

pub(crate) const UPDATABLE_FIELDS: [&str; 12] = [
    "name",
    "scopes",
    "networks",
    "status",
    "expire_time",
    "metadata",
    "usage_limited",
    "credit_refills",
    "credit_low_thresholds",
    "rate_limits",
    "credit_source",
    "roles",
];

pub(super) fn create(
    request: v1::CreateApiKeyRequest,
    environments: &Environments,
    now: DateTime<Utc>,
) -> Result<Checked<CreateKey>> {
    let v1::CreateApiKeyRequest { api_key, request_id, import_secret } = request;
    let Some(api_key) = api_key else {
        return Err(Error::invalid("api_key", "is required"));
    };
    let mut checks = Checks::new();
    let v1::ApiKey {
        id: _,
        number: _,
        name,
        mask: _,
        owner,
        creator: _,
        organization_id,
        organization_name,
        environment,
        scopes,
        networks,
        status,
        usage_limited,
        create_time: _,
        update_time: _,
        expire_time,
        delete_time: _,
        last_use_time: _,
        metadata,
        credits,
        credit_refills,
        rate_limits,
        credit_low_thresholds,
        credit_source,
        roles,
        effective_scopes: _,
    } = api_key;
    checks.name("api_key.name", &name);
    let credit_source = credit_source_in(&mut checks, credit_source);
    let rate_limits = checks.rate_limits("api_key.rate_limits", &convert::rate_limits_in(&rate_limits));
    let credits = checks.credits("api_key.credits", &convert::credits_in(&credits), AmountRule::NonNegative);
    let refills = refills(&mut checks, "api_key.credit_refills", &credit_refills);
    let low_thresholds = thresholds(&mut checks, "api_key.credit_low_thresholds", &credit_low_thresholds);
    checks.subject("api_key.owner", &owner);
    checks.subject("api_key.organization_id", &organization_id);
    checks.subject("api_key.organization_name", &organization_name);
    let environment = environment_name(&mut checks, "api_key.environment", &environment, environments);
    let scopes = checks.labels("api_key.scopes", &scopes);
    let roles = checks.role_names("api_key.roles", &roles).into_iter().map(|name| (name, BTreeSet::new())).collect();
    let networks = checks.labels("api_key.networks", &networks);
    let metadata = checks.metadata("api_key.metadata", &metadata);
    let status = match v1::ApiKeyStatus::try_from(status) {
        Ok(v1::ApiKeyStatus::Unspecified | v1::ApiKeyStatus::Active) => KeyStatus::Active,
        Ok(v1::ApiKeyStatus::Inactive) => KeyStatus::Inactive,
        Ok(v1::ApiKeyStatus::Expired) => {
            checks.fail("api_key.status", EXPIRED_IS_OUTPUT_ONLY);
            KeyStatus::Active
        }
        Ok(v1::ApiKeyStatus::Revoked) | Err(_) => {
            checks.fail("api_key.status", "must be ACTIVE or INACTIVE (or unset) for a new key");
            KeyStatus::Active
        }
    };
    let expires_at = expire_time.as_ref().and_then(|at| future_time(&mut checks, "api_key.expire_time", at, now));
    let import_secret = importable(&mut checks, import_secret);
    let request_id = checks.request_id("request_id", &request_id);
    checks.finish()?;
    let command = CreateKey {
        name,
        owner,
        organization_id,
        organization_name,
        environment,
        scopes,
        networks,
        status,
        usage_limited,
        expires_at,
        metadata,
        credits,
        refills,
        low_thresholds,
        rate_limits,
        credit_source,
        import_secret,
        roles,
    };
    Ok(Checked { command, request_id })
}

pub(super) fn update(request: v1::UpdateApiKeyRequest, now: DateTime<Utc>) -> Result<Change> {
    let v1::UpdateApiKeyRequest { api_key, update_mask, request_id, credit_deltas, credit_reason, import_secret } =
        request;
    let mut checks = Checks::new();
    let Some(api_key) = api_key else {
        return Err(Error::invalid("api_key", "is required"));
    };
    let v1::ApiKey {
        id,
        number: _,
        name,
        mask: _,
        owner: _,
        creator: _,
        organization_id: _,
        organization_name: _,
        environment: _,
        scopes,
        networks,
        status,
        usage_limited,
        create_time: _,
        update_time: _,
        expire_time,
        delete_time: _,
        last_use_time: _,
        metadata,
        credits: _,
        credit_refills,
        rate_limits,
        credit_low_thresholds,
        credit_source,
        roles,
        effective_scopes: _,
    } = api_key;
    let key = checks.key_ref("api_key.id", &id);
    let paths = update_mask.map(|mask| mask.paths).unwrap_or_default();
    if paths.is_empty() && credit_deltas.is_empty() && import_secret.is_empty() {
        checks.fail(
            "update_mask",
            format!(
                "is required: list the fields to change, any of {} (or give credit_deltas or import_secret)",
                UPDATABLE_FIELDS.join(", ")
            ),
        );
    }
    if paths.len() > UPDATABLE_FIELDS.len() {
        checks.fail("update_mask", format!("must name at most {} fields", UPDATABLE_FIELDS.len()));
    }
    let mut patch = KeyPatch::default();
    for (index, path) in paths.iter().enumerate().take(UPDATABLE_FIELDS.len()) {
        match path.as_str() {
            "name" => {
                checks.name("api_key.name", &name);
                patch.name = Some(name.clone());
            }
            "scopes" => patch.scopes = Some(checks.labels("api_key.scopes", &scopes)),
            "networks" => patch.networks = Some(checks.labels("api_key.networks", &networks)),
            "status" => patch.status = updated_status(&mut checks, status),
            "expire_time" => {
                patch.expires_at =
                    Some(expire_time.as_ref().and_then(|at| future_time(&mut checks, "api_key.expire_time", at, now)));
            }
            "metadata" => patch.metadata = Some(checks.metadata("api_key.metadata", &metadata)),
            "usage_limited" => patch.usage_limited = Some(usage_limited),
            "credit_refills" => patch.refills = Some(refills(&mut checks, "api_key.credit_refills", &credit_refills)),
            "credit_low_thresholds" => {
                patch.low_thresholds =
                    Some(thresholds(&mut checks, "api_key.credit_low_thresholds", &credit_low_thresholds))
            }
            "rate_limits" => {
                patch.rate_limits =
                    Some(checks.rate_limits("api_key.rate_limits", &convert::rate_limits_in(&rate_limits)));
            }
            "credit_source" => patch.credit_source = Some(credit_source_in(&mut checks, credit_source)),
            "roles" => patch.roles = Some(checks.role_names("api_key.roles", &roles)),
            "credits" => checks.fail(
                format!("update_mask.paths[{index}]"),
                "balances change through credit_deltas, AdjustCredits, charges and refills",
            ),
            _ => checks.fail(
                format!("update_mask.paths[{index}]"),
                format!("names no updatable field; use any of {}", UPDATABLE_FIELDS.join(", ")),
            ),
        }
    }
    let amounts: Vec<Credit> = credit_deltas.iter().map(|delta| Credit::new(delta.unit.clone(), delta.delta)).collect();
    let credit_deltas = checks.credits("credit_deltas", &amounts, AmountRule::NonZero);
    let credit_reason = checks.reason("credit_reason", &credit_reason);
    let import_secret = importable(&mut checks, import_secret);
    let request_id = checks.request_id("request_id", &request_id);
    checks.finish()?;
    let command = UpdateKey { patch, credit_deltas, credit_reason, import_secret };
    Ok(Change { key, asked: id, command, request_id })
}

/// The key a Get, Delete or Undelete names.
pub(super) fn key(id: &str) -> Result<KeyRef> {
    let mut checks = Checks::new();
    let key = checks.key_ref("id", id);
    checks.finish()?;
    Ok(key)
}

/// The key a Delete or Undelete names, and its idempotency token.
pub(super) fn target(id: &str, request_id: &str) -> Result<Checked<KeyRef>> {
    let mut checks = Checks::new();
    let key = checks.key_ref("id", id);
    let request_id = checks.request_id("request_id", request_id);
    checks.finish()?;
    Ok(Checked { command: key, request_id })
}

pub(super) fn rotation(request: v1::RotateApiKeyRequest) -> Result<Rotation> {
    let v1::RotateApiKeyRequest { id, grace_period, request_id, import_secret } = request;
    let mut checks = Checks::new();
    let import_secret = importable(&mut checks, import_secret);
    let key = checks.key_ref("id", &id);
    let request_id = checks.request_id("request_id", &request_id);
    let grace = match grace_period.map(Duration::try_from) {
        None => Duration::ZERO,
        Some(Ok(grace)) => grace,
        Some(Err(_)) => {
            checks.fail("grace_period", "must not be negative");
            Duration::ZERO
        }
    };
    checks.finish()?;
    Ok(Rotation { key, grace, import_secret, request_id })
}

pub(super) fn listing(request: v1::ListApiKeysRequest) -> Result<Listing> {
    let v1::ListApiKeysRequest {
        page_size,
        page_token,
        owner,
        organization_id,
        environment,
        status,
        show_revoked,
        start_at,
    } = request;
    let mut checks = Checks::new();
    let limit = page::page_size(page_size);
    if let Err(Error::InvalidArgument(violations)) = &limit {
        violations.iter().for_each(|v| checks.fail(v.field.clone(), v.description.clone()));
    }
    checks.subject("owner", &owner);
    checks.subject("organization_id", &organization_id);
    checks.subject("environment", &environment);
    let status = match v1::ApiKeyStatus::try_from(status) {
        Ok(v1::ApiKeyStatus::Unspecified) => None,
        Ok(v1::ApiKeyStatus::Active) => Some(ShownStatus::Active),
        Ok(v1::ApiKeyStatus::Inactive) => Some(ShownStatus::Inactive),
        Ok(v1::ApiKeyStatus::Revoked) => Some(ShownStatus::Revoked),
        Ok(v1::ApiKeyStatus::Expired) => Some(ShownStatus::Expired),
        Err(_) => {
            checks.fail("status", "is not a known ApiKeyStatus");
            None
        }
    };
    let start_at = Some(start_at).filter(|start| !start.is_empty()).map(|start| checks.key_ref("start_at", &start));
    checks.finish()?;
    let some = |text: String| Some(text).filter(|t| !t.is_empty());
    Ok(Listing {
        limit: limit?,
        owner: some(owner),
        organization_id: some(organization_id),
        environment: some(environment),
        status,
        show_revoked,
        page_token,
        start_at,
    })
}

/// The owner and the environment whose quota a GetKeyQuota asks for.
pub(super) fn quota(request: v1::GetKeyQuotaRequest, environments: &Environments) -> Result<(String, String)> {
    let v1::GetKeyQuotaRequest { owner, environment } = request;
    let mut checks = Checks::new();
    checks.subject("owner", &owner);
    let environment = environment_name(&mut checks, "environment", &environment, environments);
    checks.finish()?;
    Ok((owner, environment))
}

/// The configured environment `name` names (empty: the default), by its own name.
pub(crate) fn environment_name(checks: &mut Checks, field: &str, name: &str, environments: &Environments) -> String {
    match environments.resolve(name) {
        Some(environment) => environment.name.clone(),
        None => {
            checks.fail(field, format!("unknown environment; use one of {}", environments.names().join(", ")));
            String::new()
        }
    }
}

/// The credit source a request names (unset: the key's own balances).
fn credit_source_in(checks: &mut Checks, source: i32) -> CreditSource {
    match v1::CreditSource::try_from(source) {
        Ok(v1::CreditSource::Unspecified | v1::CreditSource::Key) => CreditSource::Key,
        Ok(v1::CreditSource::Owner) => CreditSource::Owner,
        Err(_) => {
            checks.fail("api_key.credit_source", "must be CREDIT_SOURCE_KEY or CREDIT_SOURCE_OWNER (or unset)");
            CreditSource::Key
        }
    }
}

/// Why a request may not set EXPIRED, and what to do instead.
const EXPIRED_IS_OUTPUT_ONLY: &str = "API_KEY_STATUS_EXPIRED is output only (an active key past its expire_time reads so); set expire_time instead: a later one, or none, makes the key verify again";

fn updated_status(checks: &mut Checks, status: i32) -> Option<KeyStatus> {
    match v1::ApiKeyStatus::try_from(status) {
        Ok(v1::ApiKeyStatus::Active) => Some(KeyStatus::Active),
        Ok(v1::ApiKeyStatus::Inactive) => Some(KeyStatus::Inactive),
        Ok(v1::ApiKeyStatus::Revoked) => {
            checks.fail("api_key.status", "cannot be set to REVOKED; call DeleteApiKey");
            None
        }
        Ok(v1::ApiKeyStatus::Expired) => {
            checks.fail("api_key.status", EXPIRED_IS_OUTPUT_ONLY);
            None
        }
        Ok(v1::ApiKeyStatus::Unspecified) | Err(_) => {
            checks.fail("api_key.status", "must be ACTIVE or INACTIVE");
            None
        }
    }
}

fn importable(checks: &mut Checks, secret: String) -> Option<SecretString> {
    if secret.is_empty() {
        return None;
    }
    if let Err(problem) = secret::check_importable(&secret) {
        checks.fail("import_secret", problem);
    }
    Some(SecretString::from(secret))
}

/// Low-balance thresholds, of a key or of an owner's pool: each unit once, each at least
/// 1 (a balance is never below 0).
pub(crate) fn thresholds(checks: &mut Checks, field: &str, thresholds: &[v1::CreditAmount]) -> Vec<Credit> {
    checks.credits(field, &convert::credits_in(thresholds), AmountRule::Positive)
}

/// Refill schedules, of a key or of an owner's pool: each unit once, amounts at least 1,
/// a period set.
pub(crate) fn refills(checks: &mut Checks, field: &str, schedules: &[v1::CreditRefill]) -> Vec<Refill> {
    let amounts: Vec<Credit> = schedules.iter().map(|refill| Credit::new(refill.unit.clone(), refill.amount)).collect();
    checks.credits(field, &amounts, AmountRule::Positive);
    schedules
        .iter()
        .enumerate()
        .filter_map(|(index, refill)| {
            let period = match v1::RefillPeriod::try_from(refill.period) {
                Ok(v1::RefillPeriod::Daily) => RefillPeriod::Daily,
                Ok(v1::RefillPeriod::Monthly) => RefillPeriod::Monthly,
                Ok(v1::RefillPeriod::Unspecified) | Err(_) => {
                    checks.fail(format!("{field}[{index}].period"), "must be DAILY or MONTHLY");
                    return None;
                }
            };
            Some(Refill { unit: refill.unit.clone(), amount: refill.amount, period })
        })
        .collect()
}

fn future_time(
    checks: &mut Checks,
    field: &str,
    at: &prost_types::Timestamp,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match from_timestamp(at) {
        Some(at) if at > now => Some(at),
        Some(_) => {
            checks.fail(field, "must be in the future");
            None
        }
        None => {
            checks.fail(field, "is not a valid timestamp");
            None
        }
    }
}
