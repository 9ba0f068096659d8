//! The constraints this server validates the native API with, as the OpenAPI document
//! shows them. Each rule is built from the constant its check uses (`keyward_core::validate`,
//! `credit`, `rate`, `secret`, `page`, and the services' own), so a bound changes in both
//! places at once; `tests/e2e/openapi.rs` sends every rule's edge cases through the server
//! and fails when a check and its rule disagree.

use keyward_core::{credit, rate, scope_query, secret, validate};
use keyward_gateway::openapi::{Constraint as C, FieldRule};

use crate::{audit_service::MAX_FILTER_CHARS, role_service, rpc_service, service::UPDATABLE_FIELDS, webhook_service};

/// No control character (`char::is_control`: Unicode category Cc).
const PRINTABLE: &str = "^[^\\x00-\\x1f\\x7f-\\x9f]*$";
/// Printable and not blank (`str::trim` leaves something).
const NOT_BLANK: &str = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$";
/// Printable without whitespace: a label (scope, network, limit name) or an imported secret.
const SOLID: &str = "^[^\\s\\x00-\\x1f\\x7f-\\x9f]*$";
/// A public https URL without user, password or fragment. Narrower than the check (which
/// takes any public host), so that every URL the document offers is one the server takes.
const WEBHOOK_URL: &str = "^https://([a-z0-9]+\\.)+(com|net|org|io|dev)(/[A-Za-z0-9._~/-]*)?$";
/// Visible ASCII: a credit unit.
const VISIBLE_ASCII: &str = "^[!-~]*$";

/// Every rule, `environments` being the configured environments' names (empty when not
/// known here, as in the standalone gateway, which then shows no list).
pub fn field_rules(environments: &[String]) -> Vec<FieldRule> {
    let mut rules = Vec::new();
    let mut add = |message: &str, path: &str, constraints: Vec<C>| {
        rules.extend(constraints.into_iter().map(|constraint| FieldRule::new(message, path, constraint)));
    };
    let pattern = |text: &str| C::Pattern(text.to_owned());
    let label = || vec![C::Chars { min: 1, max: validate::MAX_LABEL_CHARS }, pattern(SOLID)];
    let subject = || vec![C::Chars { min: 0, max: validate::MAX_SUBJECT_CHARS }, pattern(PRINTABLE)];
    let labels = || C::Items { min: 0, max: validate::MAX_SET_LEN };
    let request_id = || vec![C::EmptyOr(vec![C::Uuid])];
    let units = || C::Items { min: 0, max: credit::MAX_UNITS };
    let positive = || C::Range { min: 1, max: i64::MAX };
    let imported = || {
        let (min, max) = (secret::MIN_IMPORTED_LEN, secret::MAX_SECRET_LEN);
        vec![C::EmptyOr(vec![C::Chars { min, max }, pattern(SOLID)])]
    };
    // Negative sizes are refused; sizes above the maximum are coerced down, not refused.
    let page_size = || vec![C::Range { min: 0, max: i64::from(i32::MAX) }];
    let role_name = || pattern(validate::ROLE_NAME_PATTERN);

    // Messages wherever they are inputs.
    for unit in ["keyward.v1.CreditAmount", "keyward.v1.CreditDelta", "keyward.v1.CreditRefill"] {
        add(unit, "unit", vec![C::Chars { min: 0, max: credit::MAX_UNIT_CHARS }, pattern(VISIBLE_ASCII)]);
    }
    // Amounts and limits have no default: an absent one is 0, which is refused.
    add("keyward.v1.CreditRefill", "amount", vec![C::Required, positive()]);
    add("keyward.v1.CreditRefill", "period", vec![values(&["REFILL_PERIOD_DAILY", "REFILL_PERIOD_MONTHLY"])]);
    add("keyward.v1.CreditDelta", "delta", vec![C::Required, C::NonZero { max: i64::MAX }]);
    add("keyward.v1.RateLimit", "name", label());
    add("keyward.v1.RateLimit", "limit", vec![C::Required, C::Range { min: 1, max: rate::MAX_AMOUNT }]);
    add("keyward.v1.RateLimit", "burst", vec![C::Range { min: 1, max: rate::MAX_AMOUNT }]);
    add("keyward.v1.RateLimit", "period", vec![C::Required, pattern(&period_pattern())]);
    add("keyward.v1.RateLimitUse", "name", label());
    add("keyward.v1.RateLimitUse", "cost", vec![C::Range { min: 1, max: rate::MAX_AMOUNT }]);
    add("keyward.v1.ApiKey", "scopes", [vec![labels()], label()].concat());
    add("keyward.v1.ApiKey", "networks", [vec![labels()], label()].concat());
    add(
        "keyward.v1.ApiKey",
        "metadata",
        vec![
            C::Entries { max: validate::MAX_METADATA_ENTRIES },
            C::Keys { min: 1, max: validate::MAX_METADATA_KEY_CHARS, pattern: PRINTABLE.to_owned() },
            C::Chars { min: 0, max: validate::MAX_METADATA_VALUE_CHARS },
            pattern(PRINTABLE),
        ],
    );
    add("keyward.v1.ApiKey", "credits", vec![units()]);
    add("keyward.v1.ApiKey", "credit_refills", vec![units()]);
    add("keyward.v1.ApiKey", "credit_low_thresholds", vec![units()]);
    add("keyward.v1.ApiKey", "rate_limits", vec![C::Items { min: 0, max: rate::MAX_LIMITS }]);
    add(
        "keyward.v1.ApiKey",
        "credit_source",
        vec![values(&["CREDIT_SOURCE_UNSPECIFIED", "CREDIT_SOURCE_KEY", "CREDIT_SOURCE_OWNER"])],
    );
    add("keyward.v1.ApiKey", "roles", vec![C::Items { min: 0, max: validate::MAX_KEY_ROLES }, role_name()]);

    // ApiKeyService.
    let create = "keyward.v1.CreateApiKeyRequest";
    add(create, "api_key.name", vec![C::Chars { min: 1, max: validate::MAX_NAME_CHARS }, pattern(NOT_BLANK)]);
    for field in ["api_key.owner", "api_key.organization_id", "api_key.organization_name"] {
        add(create, field, subject());
    }
    if !environments.is_empty() {
        let mut names = vec![String::new()];
        names.extend(environments.iter().cloned());
        add(create, "api_key.environment", vec![C::Values(names)]);
    }
    add(
        create,
        "api_key.status",
        vec![values(&["API_KEY_STATUS_UNSPECIFIED", "API_KEY_STATUS_ACTIVE", "API_KEY_STATUS_INACTIVE"])],
    );
    add(create, "api_key.credits.amount", vec![C::Range { min: 0, max: i64::MAX }]);
    add(create, "api_key.credit_low_thresholds.amount", vec![C::Required, positive()]);
    add(create, "request_id", request_id());
    add(create, "import_secret", imported());
    for one in ["Get", "Delete", "Undelete", "Rotate"] {
        let message = &format!("keyward.v1.{one}ApiKeyRequest");
        add(message, "id", vec![C::KeyRef]);
        add(message, "request_id", request_id());
    }
    add("keyward.v1.RotateApiKeyRequest", "import_secret", imported());
    add("keyward.v1.RotateApiKeyRequest", "grace_period", vec![pattern("^[0-9]+(\\.[0-9]{1,9})?s$")]);
    let update = "keyward.v1.UpdateApiKeyRequest";
    add(update, "api_key.id", vec![C::KeyRef]);
    add(update, "update_mask", vec![C::Required, pattern(&mask_pattern(&UPDATABLE_FIELDS))]);
    add(update, "credit_deltas", vec![units()]);
    add(update, "credit_reason", vec![C::Chars { min: 0, max: validate::MAX_REASON_CHARS }, pattern(PRINTABLE)]);
    add(update, "api_key.credit_low_thresholds.amount", vec![C::Required, positive()]);
    add(update, "api_key.status", vec![values(&["API_KEY_STATUS_ACTIVE", "API_KEY_STATUS_INACTIVE"])]);
    add(update, "request_id", request_id());
    add(update, "import_secret", imported());
    let list = "keyward.v1.ListApiKeysRequest";
    add(list, "page_size", page_size());
    for field in ["owner", "organization_id", "environment"] {
        add(list, field, subject());
    }
    add(list, "start_at", vec![C::EmptyOr(vec![C::KeyRef])]);
    let verify = "keyward.v1.VerifyApiKeyRequest";
    add(verify, "required_scopes", [vec![labels()], label()].concat());
    add(verify, "network", vec![C::EmptyOr(label())]);
    add(verify, "cost", vec![units()]);
    add(verify, "cost.amount", vec![C::Required, C::Range { min: 1, max: credit::MAX_COST }]);
    add(verify, "request_id", request_id());
    add(verify, "rate_limits", vec![C::Items { min: 0, max: rate::MAX_LIMITS }]);
    // The grammar nests parentheses, which no regular expression states: the document gives
    // the length and the alphabet; the server names the position of any other fault.
    let query = vec![C::Chars { min: 1, max: scope_query::MAX_QUERY_CHARS }, pattern(PRINTABLE)];
    add(verify, "scope_query", vec![C::EmptyOr(query)]);
    add(verify, "hold", vec![units()]);
    add(verify, "hold.amount", vec![C::Required, C::Range { min: 1, max: credit::MAX_COST }]);
    add(verify, "hold_ttl", vec![pattern(HOLD_TTL)]);
    add("keyward.v1.GetKeyQuotaRequest", "owner", subject());
    if !environments.is_empty() {
        let mut names = vec![String::new()];
        names.extend(environments.iter().cloned());
        add("keyward.v1.GetKeyQuotaRequest", "environment", vec![C::Values(names)]);
    }

    // CreditService.
    for message in ["GetCreditBalances", "AdjustCredits", "ListCreditTransactions"] {
        let message = &format!("keyward.v1.{message}Request");
        add(message, "api_key_id", vec![C::Uuid]);
    }
    add("keyward.v1.AdjustCreditsRequest", "deltas", vec![C::Items { min: 1, max: credit::MAX_UNITS }]);
    add(
        "keyward.v1.AdjustCreditsRequest",
        "reason",
        vec![C::Chars { min: 0, max: validate::MAX_REASON_CHARS }, pattern(PRINTABLE)],
    );
    add("keyward.v1.AdjustCreditsRequest", "request_id", request_id());
    add("keyward.v1.ListCreditTransactionsRequest", "page_size", page_size());
    for message in
        ["GetOwnerCreditBalances", "AdjustOwnerCredits", "UpdateOwnerCreditPool", "ListOwnerCreditTransactions"]
    {
        let message = &format!("keyward.v1.{message}Request");
        add(message, "owner", [vec![C::Required], subject()].concat());
        if !environments.is_empty() {
            let mut names = vec![String::new()];
            names.extend(environments.iter().cloned());
            add(message, "environment", vec![C::Values(names)]);
        }
    }
    let adjust_pool = "keyward.v1.AdjustOwnerCreditsRequest";
    add(adjust_pool, "deltas", vec![C::Items { min: 1, max: credit::MAX_UNITS }]);
    add(adjust_pool, "reason", vec![C::Chars { min: 0, max: validate::MAX_REASON_CHARS }, pattern(PRINTABLE)]);
    add(adjust_pool, "request_id", request_id());
    let update_pool = "keyward.v1.UpdateOwnerCreditPoolRequest";
    add(update_pool, "credit_refills", vec![units()]);
    add(update_pool, "credit_low_thresholds", vec![units()]);
    add(update_pool, "credit_low_thresholds.amount", vec![C::Required, positive()]);
    add(update_pool, "request_id", request_id());
    add("keyward.v1.ListOwnerCreditTransactionsRequest", "page_size", page_size());
    for message in ["CaptureCreditHold", "ReleaseCreditHold"] {
        let message = &format!("keyward.v1.{message}Request");
        add(message, "hold_id", vec![C::Uuid]);
        add(message, "request_id", request_id());
    }
    add("keyward.v1.CaptureCreditHoldRequest", "amounts", vec![units()]);
    add("keyward.v1.CaptureCreditHoldRequest", "amounts.amount", vec![C::Range { min: 0, max: credit::MAX_COST }]);
    add("keyward.v1.ListCreditHoldsRequest", "api_key_id", vec![C::EmptyOr(vec![C::Uuid])]);
    add("keyward.v1.ListCreditHoldsRequest", "owner", subject());
    add("keyward.v1.ListCreditHoldsRequest", "page_size", page_size());
    add("keyward.v1.GetUsageRequest", "api_key_id", vec![C::EmptyOr(vec![C::Uuid])]);
    add("keyward.v1.GetUsageRequest", "owner", subject());
    add("keyward.v1.GetUsageRequest", "start_time", vec![C::Required]);
    add(
        "keyward.v1.GetUsageRequest",
        "granularity",
        vec![values(&["USAGE_GRANULARITY_UNSPECIFIED", "USAGE_GRANULARITY_HOUR", "USAGE_GRANULARITY_DAY"])],
    );

    // RateLimitService.
    add("keyward.v1.SetOwnerRateLimitsRequest", "owner", [vec![C::Required], subject()].concat());
    add("keyward.v1.SetOwnerRateLimitsRequest", "rate_limits", vec![C::Items { min: 0, max: rate::MAX_LIMITS }]);
    add("keyward.v1.GetOwnerRateLimitsRequest", "owner", subject());

    // RpcProviderKeyService.
    add("keyward.v1.RpcProviderKey", "network", label());
    add("keyward.v1.RpcProviderKey", "provider", label());
    add(
        "keyward.v1.RpcProviderKey",
        "secret",
        vec![C::Chars { min: 1, max: rpc_service::MAX_SECRET_CHARS }, pattern(PRINTABLE)],
    );
    add("keyward.v1.RpcProviderKey", "description", vec![C::Chars { min: 0, max: rpc_service::MAX_DESCRIPTION_CHARS }]);
    for one in ["Get", "Delete"] {
        let message = &format!("keyward.v1.{one}RpcProviderKeyRequest");
        add(message, "id", vec![C::Uuid]);
    }
    add("keyward.v1.CreateRpcProviderKeyRequest", "rpc_provider_key.secret", vec![C::Required]);
    add("keyward.v1.UpdateRpcProviderKeyRequest", "rpc_provider_key.id", vec![C::Uuid]);
    add(
        "keyward.v1.UpdateRpcProviderKeyRequest",
        "update_mask",
        vec![pattern(&mask_pattern(&rpc_service::UPDATABLE_FIELDS))],
    );
    add("keyward.v1.ListRpcProviderKeysRequest", "page_size", page_size());
    add("keyward.v1.ListRpcProviderKeysRequest", "network", subject());
    add("keyward.v1.ListRpcProviderKeysRequest", "provider", subject());

    // AuditService.
    let audit = "keyward.v1.ListAuditEventsRequest";
    add(audit, "api_key_id", vec![C::EmptyOr(vec![C::Uuid])]);
    for field in ["actor", "action", "outcome"] {
        add(audit, field, vec![C::Chars { min: 0, max: MAX_FILTER_CHARS }]);
    }
    add(audit, "page_size", page_size());

    // WebhookService.
    add("keyward.v1.WebhookEndpoint", "description", vec![C::Chars { min: 0, max: validate::MAX_DESCRIPTION_CHARS }]);
    add(
        "keyward.v1.WebhookEndpoint",
        "url",
        vec![C::Chars { min: 1, max: validate::MAX_WEBHOOK_URL_CHARS }, pattern(WEBHOOK_URL)],
    );
    // `*` last: a list of as many names as there are types, taken in order, is then every
    // type without the wildcard, which the server takes. That `*` stands alone is a rule
    // between entries the document does not state (tests/schemathesis.toml).
    let mut types: Vec<String> =
        keyward_core::event::EventType::ALL.iter().map(|kind| kind.as_str().to_owned()).collect();
    let kinds = types.len();
    types.push(keyward_core::webhook::Subscription::WILDCARD.to_owned());
    add(
        "keyward.v1.WebhookEndpoint",
        "event_types",
        vec![C::Items { min: 1, max: kinds }, C::Unique, C::Values(types)],
    );
    for one in ["Get", "Delete"] {
        let message = &format!("keyward.v1.{one}WebhookEndpointRequest");
        add(message, "id", vec![C::Uuid]);
    }
    add("keyward.v1.RotateWebhookEndpointSecretRequest", "id", vec![C::Uuid]);
    add("keyward.v1.UpdateWebhookEndpointRequest", "webhook_endpoint.id", vec![C::Uuid]);
    add(
        "keyward.v1.UpdateWebhookEndpointRequest",
        "update_mask",
        vec![pattern(&mask_pattern(&webhook_service::UPDATABLE_FIELDS))],
    );
    add("keyward.v1.ListWebhookEndpointsRequest", "page_size", page_size());
    add("keyward.v1.ListWebhookDeliveriesRequest", "endpoint_id", vec![C::Uuid]);
    add("keyward.v1.ListWebhookDeliveriesRequest", "event_id", vec![C::EmptyOr(vec![C::Uuid])]);
    add("keyward.v1.ListWebhookDeliveriesRequest", "page_size", page_size());
    add("keyward.v1.RedeliverEventRequest", "endpoint_id", vec![C::Uuid]);
    add("keyward.v1.RedeliverEventRequest", "event_id", vec![C::Uuid]);
    // RoleService.
    add("keyward.v1.Role", "name", vec![role_name()]);
    add("keyward.v1.Role", "owner", subject());
    add("keyward.v1.Role", "description", vec![C::Chars { min: 0, max: validate::MAX_DESCRIPTION_CHARS }]);
    add("keyward.v1.Role", "scopes", [vec![labels()], label()].concat());
    for one in ["Get", "Delete"] {
        let message = &format!("keyward.v1.{one}RoleRequest");
        add(message, "name", vec![role_name()]);
        add(message, "owner", subject());
    }
    add(
        "keyward.v1.UpdateRoleRequest",
        "update_mask",
        vec![C::Required, pattern(&mask_pattern(&role_service::UPDATABLE_FIELDS))],
    );
    add("keyward.v1.ListRolesRequest", "page_size", page_size());
    add("keyward.v1.ListRolesRequest", "owner", subject());
    rules
}

fn values(names: &[&str]) -> C {
    C::Values(names.iter().map(|name| (*name).to_owned()).collect())
}

/// An update mask of the updatable fields in proto3 JSON (lowerCamelCase, comma-separated),
/// at most as many paths as there are fields.
fn mask_pattern(fields: &[&str]) -> String {
    let names: Vec<String> = fields.iter().map(|field| lower_camel(field)).collect();
    let one = format!("({})", names.join("|"));
    format!("^{one}(,{one}){{0,{}}}$", fields.len() - 1)
}

fn lower_camel(field: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A hold's lifetime in proto3 JSON: whole seconds from 1 to 86,400 (24 hours).
const HOLD_TTL: &str = "^([1-9][0-9]{0,3}|[1-7][0-9]{4}|8[0-5][0-9]{3}|86[0-3][0-9]{2}|86400)(\\.0{1,9})?s$";

/// A rate limit's period in proto3 JSON: whole milliseconds from [`rate::MIN_PERIOD_MS`]
/// to [`rate::MAX_PERIOD_MS`].
fn period_pattern() -> String {
    let (min, max) = (rate::MIN_PERIOD_MS / 1_000, rate::MAX_PERIOD_MS / 1_000);
    debug_assert!(min == 1 && rate::MAX_PERIOD_MS % 1_000 == 0, "the pattern counts whole seconds from 1 s");
    let below = keyward_gateway::openapi::decimal_range(1, max - 1);
    format!("^({below}(\\.[0-9]{{1,3}})?|{max}(\\.0{{1,3}})?)s$")
}
