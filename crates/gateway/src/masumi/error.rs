//! Errors of the Masumi surface: `{"status": "error", "error": {"message": "…"}}`. As in
//! the Masumi service itself, every authentication or permission failure is a 401, its
//! message in Masumi's words: no token, a token of no key, a revoked key, a missing right.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, StatusCode, header::AUTHORIZATION};
use keyward_proto::{ERROR_KEY_STATUS, v1};
use serde::Serialize;
use tonic::Code;
use tonic_types::StatusExt;
use utoipa::ToSchema;

use crate::Failure;

/// The body of every Masumi error.
#[derive(Debug, Serialize, ToSchema)]
pub struct MasumiError {
    /// Always `error`.
    pub status: String,
    /// What went wrong.
    pub error: MasumiErrorMessage,
}

/// The message of a Masumi error.
#[derive(Debug, Serialize, ToSchema)]
pub struct MasumiErrorMessage {
    /// What went wrong.
    pub message: String,
}

/// keyward's field names in messages, and the Masumi fields they stand for.
const FIELD_NAMES: [(&str, &str); 6] = [
    ("import_secret", "token"),
    ("credit_deltas", "UsageCreditsToAddOrRemove"),
    ("api_key.credits", "UsageCredits"),
    ("api_key.networks", "networkLimit"),
    ("api_key.usage_limited", "usageLimited"),
    ("api_key.scopes", "permission"),
];

/// A keyward message in Masumi's words: its fields named as the Masumi request names them.
fn masumi_names(message: &str) -> String {
    FIELD_NAMES.iter().fold(message.to_owned(), |message, (ours, theirs)| message.replace(ours, theirs))
}

/// The response of a failed Masumi call that carried no credential to speak of.
pub(crate) fn respond(failure: Failure) -> Response {
    respond_with(failure, false)
}

/// The response of a failed Masumi call with `headers`: as Masumi, a missing token is told
/// apart from one that does not authenticate.
pub(crate) fn respond_to(headers: &HeaderMap, failure: Failure) -> Response {
    let presented = [headers.get("token"), headers.get(AUTHORIZATION)]
        .into_iter()
        .flatten()
        .any(|value| !value.as_bytes().trim_ascii().is_empty());
    respond_with(failure, presented)
}

/// Why a presented token was refused, as Masumi says it: a key that exists but is not
/// active is "revoked" in Masumi's words (keyward tells only the holder of its secret).
fn refused_token(status: &tonic::Status) -> &'static str {
    let info = status.get_details_error_info();
    let key_status = info.as_ref().and_then(|info| info.metadata.get(ERROR_KEY_STATUS)).map(String::as_str);
    match key_status.and_then(v1::ApiKeyStatus::from_str_name) {
        Some(v1::ApiKeyStatus::Inactive | v1::ApiKeyStatus::Revoked) => "Unauthorized, API key is revoked",
        Some(v1::ApiKeyStatus::Expired) => "Unauthorized, API key has expired",
        Some(v1::ApiKeyStatus::Active | v1::ApiKeyStatus::Unspecified) | None => {
            "Unauthorized, invalid authentication token provided"
        }
    }
}

fn respond_with(failure: Failure, presented: bool) -> Response {
    let (status, message) = match failure {
        Failure::Status(status) => match status.code() {
            Code::Unauthenticated if presented => (StatusCode::UNAUTHORIZED, refused_token(&status).to_owned()),
            Code::Unauthenticated => {
                (StatusCode::UNAUTHORIZED, "Unauthorized, no authentication token provided".to_owned())
            }
            // Every Masumi route a key may lack the right for is an admin route.
            Code::PermissionDenied => (StatusCode::UNAUTHORIZED, "Unauthorized, admin access required".to_owned()),
            Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "Service unavailable".to_owned()),
            Code::NotFound => (StatusCode::NOT_FOUND, "API key not found".to_owned()),
            Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss | Code::Unimplemented => {
                (crate::status::http_status(status.code()), "Internal server error".to_owned())
            }
            Code::Cancelled
            | Code::InvalidArgument
            | Code::DeadlineExceeded
            | Code::AlreadyExists
            | Code::ResourceExhausted
            | Code::FailedPrecondition
            | Code::Aborted
            | Code::OutOfRange => (crate::status::http_status(status.code()), masumi_names(status.message())),
        },
        Failure::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
        Failure::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "Request body too large".to_owned()),
        Failure::NoRoute => (StatusCode::NOT_FOUND, "Not found".to_owned()),
        Failure::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "Method not allowed".to_owned()),
    };
    let body = MasumiError { status: "error".to_owned(), error: MasumiErrorMessage { message } };
    (status, Json(body)).into_response()
}
