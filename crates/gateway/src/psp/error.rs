//! Errors of the PSP surface: `{"message": "…"}` with the seed's fixed sentences.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use http::StatusCode;
use serde::Serialize;
use tonic::Code;
use utoipa::ToSchema;

use crate::Failure;

/// The body of every PSP error.
#[derive(Debug, Serialize, ToSchema)]
pub struct PspError {
    /// What went wrong, in one of the seed's sentences.
    pub message: String,
}

pub(crate) const INVALID_BODY: &str = "Invalid request body.";
pub(crate) const UNAUTHENTICATED: &str = "Invalid authentication credentials.";
pub(crate) const FORBIDDEN: &str = "User does not have a required claim to perform this operation.";
pub(crate) const NOT_FOUND: &str = "Api key not found.";
pub(crate) const UNAVAILABLE: &str = "PSP Product Manager Api is unavailable.";

/// The response of a failed PSP call.
pub(crate) fn respond(failure: Failure) -> Response {
    let (status, message) = match failure {
        Failure::Status(status) => {
            let http = crate::status::http_status(status.code());
            let message = match status.code() {
                Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => INVALID_BODY.to_owned(),
                Code::Unauthenticated => UNAUTHENTICATED.to_owned(),
                Code::PermissionDenied => FORBIDDEN.to_owned(),
                Code::NotFound => NOT_FOUND.to_owned(),
                Code::Unavailable | Code::DeadlineExceeded => UNAVAILABLE.to_owned(),
                Code::AlreadyExists | Code::Aborted | Code::ResourceExhausted | Code::Cancelled => {
                    status.message().to_owned()
                }
                Code::Ok | Code::Unknown | Code::Unimplemented | Code::Internal | Code::DataLoss => {
                    "Internal server error.".to_owned()
                }
            };
            (http, message)
        }
        Failure::BadRequest(_) => (StatusCode::BAD_REQUEST, INVALID_BODY.to_owned()),
        Failure::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large.".to_owned()),
        Failure::NoRoute => (StatusCode::NOT_FOUND, NOT_FOUND.to_owned()),
        Failure::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.".to_owned()),
    };
    (status, Json(PspError { message })).into_response()
}
