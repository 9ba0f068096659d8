//! What the two surfaces that name keys by their integer `number` share (PSP and the
//! generic scoped keys): the id in the path, the lower-case status names, and how an
//! answer or a failure becomes the response. Each surface passes its own error renderer.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use keyward_proto::v1;
use serde::Serialize;

use crate::Failure;

/// Renders a failure in one surface's error shape.
pub(crate) type RenderError = fn(Failure) -> Response;

/// The key a path segment names, as the API takes it: `None` unless it is a positive
/// integer, which no key's number is then. Each surface refuses that in its own words.
pub(crate) fn key_number(segment: &str) -> Option<String> {
    segment.parse::<i64>().ok().filter(|number| *number > 0).map(|number| number.to_string())
}

/// A key's status in the surfaces' lower-case words. Their vocabularies have no expired:
/// an expired key reads active, as it is stored, beside the expiry the answers show.
pub(crate) fn status_name(status: i32) -> String {
    match v1::ApiKeyStatus::try_from(status) {
        Ok(v1::ApiKeyStatus::Active | v1::ApiKeyStatus::Expired) => "active",
        Ok(v1::ApiKeyStatus::Inactive) => "inactive",
        Ok(v1::ApiKeyStatus::Revoked) => "revoked",
        Ok(v1::ApiKeyStatus::Unspecified) | Err(_) => "unknown",
    }
    .to_owned()
}

/// `body` as JSON with its HTTP status, or the failure as `render_error` shapes it.
pub(crate) fn respond<T: Serialize>(result: Result<(StatusCode, T), Failure>, render_error: RenderError) -> Response {
    match result {
        Ok((status, body)) => (status, Json(body)).into_response(),
        Err(failure) => render_error(failure),
    }
}

/// 204 without a body (what the deletes answer), or the failure as `render_error` shapes it.
pub(crate) fn respond_no_content(result: Result<(), Failure>, render_error: RenderError) -> Response {
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(failure) => render_error(failure),
    }
}

#[cfg(test)]
mod tests {
    use super::key_number;

    #[test]
    fn only_positive_integers_name_keys() {
        assert_eq!(key_number("42").as_deref(), Some("42"));
        // The API takes the number as it prints it.
        assert_eq!(key_number("007").as_deref(), Some("7"));
        for other in ["0", "-3", "4.2", "abc", "", "99999999999999999999"] {
            assert_eq!(key_number(other), None, "{other}");
        }
    }
}
