//! Errors of the native API, as Google's JSON error model:
//! `{"error": {"code": <HTTP status>, "message", "status": "<gRPC code name>", "details": [...]}}`,
//! the details being the status's `google.rpc` messages in proto3 JSON.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};
use tonic_types::StatusExt;

use crate::Failure;

/// The response of a failed native call.
pub(crate) fn respond(failure: Failure) -> Response {
    let http = failure.http_status();
    let (status, message) = failure.code_and_message();
    let details = if let Failure::Status(status) = &failure { details(status) } else { Vec::new() };
    let body = json!({"error": {"code": http.as_u16(), "message": message, "status": status, "details": details}});
    (http, Json(body)).into_response()
}

/// The status's `google.rpc` details in proto3 JSON.
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
