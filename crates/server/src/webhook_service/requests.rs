//! WebhookService conversions: requests checked into the domain's terms, every bad field
//! named at once, and endpoints and attempts back into their proto form.

use chrono::{DateTime, Utc};
use keyward_core::{
    Error,
    error::Result,
    validate::{Checks, MAX_DESCRIPTION_CHARS},
    webhook::{Endpoint, EndpointPatch},
};
use keyward_proto::v1;
use keyward_store::Attempt;
use uuid::Uuid;

use crate::convert::timestamp;

pub(crate) const UPDATABLE_FIELDS: [&str; 4] = ["url", "description", "event_types", "enabled"];

/// A new endpoint, checked.
pub(super) fn endpoint(
    request: v1::CreateWebhookEndpointRequest,
    allow_http: bool,
    now: DateTime<Utc>,
) -> Result<Endpoint> {
    let v1::CreateWebhookEndpointRequest { webhook_endpoint } = request;
    let Some(endpoint) = webhook_endpoint else {
        return Err(Error::invalid("webhook_endpoint", "is required"));
    };
    let v1::WebhookEndpoint {
        id: _,
        url,
        description,
        event_types,
        enabled,
        failing: _,
        consecutive_failures: _,
        create_time: _,
        update_time: _,
    } = endpoint;
    let mut checks = Checks::new();
    checks.webhook_url("webhook_endpoint.url", &url, allow_http);
    checks.text("webhook_endpoint.description", &description, MAX_DESCRIPTION_CHARS);
    let event_types = checks.event_types("webhook_endpoint.event_types", &event_types);
    checks.finish()?;
    Ok(Endpoint {
        id: Uuid::now_v7(),
        url,
        description,
        event_types,
        enabled,
        failing: false,
        consecutive_failures: 0,
        created_at: now,
        updated_at: now,
    })
}

/// An update, checked: the endpoint's id and the fields its mask names.
pub(super) fn patch(request: v1::UpdateWebhookEndpointRequest, allow_http: bool) -> Result<(Uuid, EndpointPatch)> {
    let v1::UpdateWebhookEndpointRequest { webhook_endpoint, update_mask } = request;
    let Some(endpoint) = webhook_endpoint else {
        return Err(Error::invalid("webhook_endpoint", "is required"));
    };
    let v1::WebhookEndpoint {
        id,
        url,
        description,
        event_types,
        enabled,
        failing: _,
        consecutive_failures: _,
        create_time: _,
        update_time: _,
    } = endpoint;
    let mut checks = Checks::new();
    let id = checks.uuid("webhook_endpoint.id", &id);
    let paths = update_mask.map(|mask| mask.paths).unwrap_or_default();
    if paths.is_empty() {
        checks.fail(
            "update_mask",
            format!("is required: list the fields to change, any of {}", UPDATABLE_FIELDS.join(", ")),
        );
    }
    let mut patch = EndpointPatch::default();
    for (index, path) in paths.iter().enumerate().take(UPDATABLE_FIELDS.len() + 1) {
        match path.as_str() {
            "url" => {
                checks.webhook_url("webhook_endpoint.url", &url, allow_http);
                patch.url = Some(url.clone());
            }
            "description" => {
                checks.text("webhook_endpoint.description", &description, MAX_DESCRIPTION_CHARS);
                patch.description = Some(description.clone());
            }
            "event_types" => patch.event_types = Some(checks.event_types("webhook_endpoint.event_types", &event_types)),
            "enabled" => patch.enabled = Some(enabled),
            other => checks.fail(
                format!("update_mask.paths[{index}]"),
                format!("`{other}` cannot be updated; use any of {}", UPDATABLE_FIELDS.join(", ")),
            ),
        }
    }
    checks.finish()?;
    Ok((id, patch))
}

/// An id field, checked.
pub(super) fn id(field: &str, value: &str) -> Result<Uuid> {
    let mut checks = Checks::new();
    let id = checks.uuid(field, value);
    checks.finish()?;
    Ok(id)
}

/// The proto form of an endpoint; its secret is never part of it.
pub(super) fn to_proto(endpoint: &Endpoint) -> v1::WebhookEndpoint {
    let Endpoint { id, url, description, event_types, enabled, failing, consecutive_failures, created_at, updated_at } =
        endpoint;
    v1::WebhookEndpoint {
        id: id.to_string(),
        url: url.clone(),
        description: description.clone(),
        event_types: event_types.names().into_iter().map(str::to_owned).collect(),
        enabled: *enabled,
        failing: *failing,
        consecutive_failures: *consecutive_failures,
        create_time: Some(timestamp(*created_at)),
        update_time: Some(timestamp(*updated_at)),
    }
}

/// The proto form of an attempt.
pub(super) fn delivery(attempt: &Attempt) -> v1::WebhookDelivery {
    let Attempt { id: _, event_id, event_type, attempt, at, status_code, error, excerpt, next_attempt_at } = attempt;
    v1::WebhookDelivery {
        event_id: event_id.to_string(),
        event_type: event_type.clone(),
        attempt: *attempt,
        attempt_time: Some(timestamp(*at)),
        status_code: i32::try_from(*status_code).unwrap_or(0),
        error: error.clone(),
        response_excerpt: excerpt.clone(),
        next_attempt_time: next_attempt_at.map(timestamp),
    }
}
