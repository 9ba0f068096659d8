//! The native API's errors in the document: Google's JSON error model as
//! `native/error.rs` renders it, with the two details keyward attaches.

use serde_json::{Map, Value, json};

use super::schema::COMPONENTS;

/// The statuses a native call answers for its gRPC codes (`crate::status`), and what each means.
const STATUSES: [(&str, &str); 7] = [
    ("400", "INVALID_ARGUMENT (a `BadRequest` names each bad field), FAILED_PRECONDITION or OUT_OF_RANGE."),
    ("401", "UNAUTHENTICATED: no credential, or one that does not verify."),
    ("403", "PERMISSION_DENIED: the caller lacks the right."),
    ("404", "NOT_FOUND: no such resource within the caller's reach."),
    ("409", "ALREADY_EXISTS (e.g. a request id already applied) or ABORTED."),
    ("429", "RESOURCE_EXHAUSTED: a quota or rate limit."),
    ("503", "UNAVAILABLE: the service or its database cannot be reached; retry later."),
];

/// Adds the error schemas and the shared error responses to `components`.
pub(super) fn add_components(components: &mut Map<String, Value>) {
    let schemas = components.entry("schemas").or_insert_with(|| json!({}));
    schemas["NativeError"] = json!({
        "type": "object",
        "description": "Google's JSON error model: the status of a failed call.",
        "required": ["error"],
        "properties": {"error": {
            "type": "object",
            "required": ["code", "message", "status", "details"],
            "properties": {
                "code": {"type": "integer", "description": "The HTTP status."},
                "message": {"type": "string", "description": "For the developer; not to be shown to users."},
                "status": {"type": "string", "description": "The gRPC code's name, e.g. `INVALID_ARGUMENT`."},
                "details": {"type": "array", "items": {"anyOf": [
                    {"$ref": format!("{COMPONENTS}google.rpc.ErrorInfo")},
                    {"$ref": format!("{COMPONENTS}google.rpc.BadRequest")}
                ]}}
            }
        }}
    });
    schemas["google.rpc.ErrorInfo"] = json!({
        "type": "object",
        "description": "Why the call failed, as a stable reason in UPPER_SNAKE_CASE.",
        "required": ["@type", "reason", "domain", "metadata"],
        "properties": {
            "@type": {"const": "type.googleapis.com/google.rpc.ErrorInfo"},
            "reason": {"type": "string"},
            "domain": {"type": "string"},
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}}
        }
    });
    schemas["google.rpc.BadRequest"] = json!({
        "type": "object",
        "description": "Every field of the request that is not valid, and why.",
        "required": ["@type", "fieldViolations"],
        "properties": {
            "@type": {"const": "type.googleapis.com/google.rpc.BadRequest"},
            "fieldViolations": {"type": "array", "items": {
                "type": "object",
                "required": ["field", "description"],
                "properties": {
                    "field": {"type": "string", "description": "The field's path in the request, proto names."},
                    "description": {"type": "string"}
                }
            }}
        }
    });
    let responses = components.entry("responses").or_insert_with(|| json!({}));
    for (status, description) in STATUSES.iter().copied().chain([("default", "Any other error.")]) {
        responses[response_name(status)] = json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": format!("{COMPONENTS}NativeError")}}}
        });
    }
}

/// The error responses of every native operation.
pub(super) fn responses() -> Map<String, Value> {
    STATUSES
        .iter()
        .map(|(status, _)| *status)
        .chain(["default"])
        .map(|status| (status.to_owned(), json!({"$ref": format!("#/components/responses/{}", response_name(status))})))
        .collect()
}

fn response_name(status: &str) -> String {
    if status == "default" { "NativeErrorDefault".to_owned() } else { format!("NativeError{status}") }
}
