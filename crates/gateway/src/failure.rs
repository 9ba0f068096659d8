//! What can go wrong on any route, before each surface's `error` module renders it.

use axum::extract::rejection::BytesRejection;
use http::StatusCode;
use tonic_types::StatusExt;

use crate::status::code_name;

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

    /// The gRPC code's name and the message, for the surfaces that answer in gRPC's terms
    /// (the native API and the scoped keys).
    pub(crate) fn code_and_message(&self) -> (&'static str, String) {
        match self {
            Self::Status(status) => (code_name(status.code()), upstream_message(status)),
            Self::BadRequest(message) => ("INVALID_ARGUMENT", message.clone()),
            Self::TooLarge => {
                ("INVALID_ARGUMENT", format!("the request body is larger than {} bytes", crate::MAX_BODY_BYTES))
            }
            Self::NoRoute => ("NOT_FOUND", "no route has this path".to_owned()),
            Self::MethodNotAllowed => ("UNIMPLEMENTED", "the path does not take this method".to_owned()),
        }
    }
}

/// The status message, or a fixed one when the upstream could not be reached: every
/// keyward error carries an ErrorInfo, so a status without one was made by the transport,
/// whose message names its internals.
fn upstream_message(status: &tonic::Status) -> String {
    if status.code() == tonic::Code::Unavailable && status.get_details_error_info().is_none() {
        "the keyward API is unavailable; retry later".to_owned()
    } else {
        status.message().to_owned()
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
