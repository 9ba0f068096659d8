//! Errors of the native API, as Google's JSON error model:
//! `{"error": {"code": <HTTP status>, "message", "status": "<gRPC code name>", "details": [...]}}`,
//! the details being the status's `google.rpc` messages in proto3 JSON.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tonic_types::StatusExt;

use crate::{Failure, status::code_name};

/// The response of a failed native call.
pub(crate) fn respond(failure: Failure) -> Response {
    let http = failure.http_status();
    let (status, message, details) = match failure {
        Failure::Status(status) => {
            let details = details(&status);
            (code_name(status.code()), upstream_message(&status), details)
        }
        Failure::BadRequest(message) => ("INVALID_ARGUMENT", message, vec![]),
        Failure::TooLarge => {
            ("INVALID_ARGUMENT", format!("the request body is larger than {} bytes", crate::MAX_BODY_BYTES), vec![])
        }
        Failure::NoRoute => ("NOT_FOUND", "no route has this path".to_owned(), vec![]),
        Failure::MethodNotAllowed => ("UNIMPLEMENTED", "the path does not take this method".to_owned(), vec![]),
    };
    let body = json!({"error": {"code": http.as_u16(), "message": message, "status": status, "details": details}});
    (http, Json(body)).into_response()
}

/// The status message, or a fixed one when the upstream could not be reached (the
/// transport's own message would name its internals).
fn upstream_message(status: &tonic::Status) -> String {
    // Every keyward error carries an ErrorInfo; a status without one was made by the
    // transport, whose message names its internals.
    if status.code() == tonic::Code::Unavailable && status.get_details_error_info().is_none() {
        "the keyward API is unavailable; retry later".to_owned()
    } else {
        status.message().to_owned()
    }
}

fn details(status: &tonic::Status) -> Vec<Value> {
    let mut details = Vec::new();
    if let Some(info) = status.get_details_error_info() {
        details.push(json!({
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": info.reason,
            "domain": info.domain,
            "metadata": info.metadata,
        }));
    }
    if let Some(bad) = status.get_details_bad_request() {
        let violations: Vec<Value> =
            bad.field_violations.iter().map(|v| json!({"field": v.field, "description": v.description})).collect();
        details.push(json!({"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": violations}));
    }
    details
}
