//! Errors of the generic scoped-key surface: `{"error": "<CODE>", "message": "…"}` with
//! grpc-gateway's status.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use tonic_types::StatusExt;
use utoipa::ToSchema;

use crate::{Failure, status::code_name};

/// The body of every error of the scoped-key surface.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScopedError {
    /// The gRPC code's name, e.g. `NOT_FOUND`.
    pub error: String,
    /// What went wrong.
    pub message: String,
}

/// The response of a failed call.
pub(crate) fn respond(failure: Failure) -> Response {
    let http = failure.http_status();
    let (error, message) = match failure {
        Failure::Status(status) => {
            let message = if status.get_details_error_info().is_none() && status.code() == tonic::Code::Unavailable {
                "the keyward API is unavailable; retry later".to_owned()
            } else {
                status.message().to_owned()
            };
            (code_name(status.code()), message)
        }
        Failure::BadRequest(message) => ("INVALID_ARGUMENT", message),
        Failure::TooLarge => {
            ("INVALID_ARGUMENT", format!("the request body is larger than {} bytes", crate::MAX_BODY_BYTES))
        }
        Failure::NoRoute => ("NOT_FOUND", "no route has this path".to_owned()),
        Failure::MethodNotAllowed => ("UNIMPLEMENTED", "the path does not take this method".to_owned()),
    };
    (http, Json(ScopedError { error: error.to_owned(), message })).into_response()
}
