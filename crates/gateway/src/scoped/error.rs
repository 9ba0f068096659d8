//! Errors of the generic scoped-key surface: `{"error": "<CODE>", "message": "…"}` with
//! grpc-gateway's status.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::Failure;

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
    let (error, message) = failure.code_and_message();
    (failure.http_status(), Json(ScopedError { error: error.to_owned(), message })).into_response()
}
