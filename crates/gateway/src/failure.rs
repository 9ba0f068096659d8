//! What can go wrong on any route, before each surface's `error` module renders it.

use axum::extract::rejection::BytesRejection;
use http::StatusCode;

/// A failed request, in the gateway's terms.
#[derive(Debug)]
pub enum Failure {
    /// The gRPC API answered with an error status (UNAVAILABLE when it cannot be reached).
    Status(tonic::Status),
    /// The body or a parameter is not what the route takes: malformed JSON, a wrong type,
    /// an unknown enum string.
    BadRequest(String),
    /// The body is larger than [`crate::MAX_BODY_BYTES`].
    TooLarge,
    /// No route has this path.
    NoRoute,
    /// The path exists, but not with this method.
    MethodNotAllowed,
}

impl Failure {
    /// The HTTP status of the failure, by grpc-gateway's table for gRPC errors.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Self::Status(status) => crate::status::http_status(status.code()),
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

impl From<tonic::Status> for Failure {
    fn from(status: tonic::Status) -> Self {
        Self::Status(status)
    }
}

impl From<BytesRejection> for Failure {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::TooLarge
        } else {
            Self::BadRequest(rejection.body_text())
        }
    }
}
