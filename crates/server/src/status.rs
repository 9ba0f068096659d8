//! The one mapping from domain errors to gRPC statuses (AIP-193: every status carries an
//! `ErrorInfo`; INVALID_ARGUMENT also a `BadRequest`). The log level follows the error
//! class: internal errors once at `error!` with their cause chain, auth failures at `warn!`.
//! Text a caller chose is logged with `?` (escaped), never raw, so it cannot forge lines.
//! An outage fails every call the same way: those lines are written once a second, with
//! how many were left out, so a database that is away does not also flood the log (each
//! call is still counted in `keyward_grpc_requests_total`).

use std::collections::HashMap;

use keyward_core::{Error, error::Unusable};
use keyward_proto::{ERROR_KEY_STATUS, v1};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::log_lines::LineThrottle;

/// `ErrorInfo.domain` of every keyward error.
pub const ERROR_DOMAIN: &str = "keyward.v1";

/// Converts a domain error into the status a caller sees.
pub fn to_status(err: Error) -> Status {
    // The error's own text: for an invalid argument, every violation joined.
    let text = err.to_string();
    let (code, reason, message, metadata, violations) = match err {
        Error::InvalidArgument(violations) => {
            let message = text;
            tracing::info!(error = ?message, "invalid request");
            (Code::InvalidArgument, "INVALID_ARGUMENT", message, HashMap::new(), violations)
        }
        Error::Unauthenticated { detail, key } => {
            if let Some(suppressed) = AUTHENTICATION_LINES.admit() {
                tracing::warn!(detail, suppressed, "authentication failed");
            }
            let (message, metadata) = match key {
                None => (
                    "missing or invalid credentials: send a valid API key as `authorization: Bearer <key>` or `token: <key>`",
                    HashMap::new(),
                ),
                // Only the holder of the key's secret gets here, so it may know why.
                Some(state) => {
                    let (status, message) = match state {
                        Unusable::Inactive => (v1::ApiKeyStatus::Inactive, "the API key is disabled"),
                        Unusable::Revoked => (v1::ApiKeyStatus::Revoked, "the API key was revoked"),
                        Unusable::Expired => (v1::ApiKeyStatus::Expired, "the API key has expired"),
                    };
                    (message, HashMap::from([(ERROR_KEY_STATUS.to_owned(), status.as_str_name().to_owned())]))
                }
            };
            (Code::Unauthenticated, "UNAUTHENTICATED", message.to_owned(), metadata, vec![])
        }
        Error::PermissionDenied { action } => {
            if let Some(suppressed) = PERMISSION_LINES.admit() {
                tracing::warn!(action, suppressed, "permission denied");
            }
            let metadata = HashMap::from([("action".to_owned(), action.to_owned())]);
            (Code::PermissionDenied, "PERMISSION_DENIED", format!("the caller may not {action}"), metadata, vec![])
        }
        Error::NotFound { kind, id } => {
            tracing::info!(kind, ?id, "not found");
            let message = format!("{kind} {id} not found");
            let metadata = HashMap::from([("id".to_owned(), id)]);
            let reason = match kind {
                "RPC provider key" => "RPC_PROVIDER_KEY_NOT_FOUND",
                "webhook endpoint" => "WEBHOOK_ENDPOINT_NOT_FOUND",
                "event" => "EVENT_NOT_FOUND",
                _ => "API_KEY_NOT_FOUND",
            };
            (Code::NotFound, reason, message, metadata, vec![])
        }
        Error::AlreadyExists { reason, message, resource_id } => {
            tracing::info!(reason, ?message, "already exists");
            let metadata = resource_id.map(|id| HashMap::from([("id".to_owned(), id)])).unwrap_or_default();
            (Code::AlreadyExists, reason, message, metadata, vec![])
        }
        Error::FailedPrecondition { reason, message } => {
            tracing::info!(reason, ?message, "failed precondition");
            (Code::FailedPrecondition, reason, message, HashMap::new(), vec![])
        }
        Error::ResourceExhausted { reason, message } => {
            tracing::info!(reason, ?message, "resource exhausted");
            (Code::ResourceExhausted, reason, message, HashMap::new(), vec![])
        }
        Error::Aborted { message } => {
            tracing::info!(?message, "aborted");
            (Code::Aborted, "CONCURRENT_CHANGE", message, HashMap::new(), vec![])
        }
        Error::DataLoss { reason, message } => {
            if let Some(suppressed) = DATA_LOSS_LINES.admit() {
                tracing::error!(reason, ?message, suppressed, "stored data cannot be read");
            }
            (Code::DataLoss, reason, message, HashMap::new(), vec![])
        }
        Error::Unavailable(source) => {
            if let Some(suppressed) = UNAVAILABLE_LINES.admit() {
                tracing::error!(error = ?source, suppressed, "database unavailable");
            }
            let message = "the database is unavailable; retry later".to_owned();
            (Code::Unavailable, "DATABASE_UNAVAILABLE", message, HashMap::new(), vec![])
        }
        Error::Internal(source) => {
            if let Some(suppressed) = INTERNAL_LINES.admit() {
                tracing::error!(error = ?source, suppressed, "internal error");
            }
            (Code::Internal, "INTERNAL", "internal error".to_owned(), HashMap::new(), vec![])
        }
    };
    let mut details = ErrorDetails::with_error_info(reason, ERROR_DOMAIN, metadata);
    if !violations.is_empty() {
        details.set_bad_request(
            violations.into_iter().map(|v| FieldViolation::new(v.field, v.description)).collect::<Vec<_>>(),
        );
    }
    Status::with_error_details(code, message, details)
}

static AUTHENTICATION_LINES: LineThrottle = LineThrottle::new();
static PERMISSION_LINES: LineThrottle = LineThrottle::new();
static DATA_LOSS_LINES: LineThrottle = LineThrottle::new();
static UNAVAILABLE_LINES: LineThrottle = LineThrottle::new();
static INTERNAL_LINES: LineThrottle = LineThrottle::new();

/// The canonical name of the code an error maps to, as audit events record outcomes.
pub(crate) fn audit_outcome(err: &Error) -> &'static str {
    match err {
        Error::InvalidArgument(_) => "INVALID_ARGUMENT",
        Error::Unauthenticated { .. } => "UNAUTHENTICATED",
        Error::PermissionDenied { .. } => "PERMISSION_DENIED",
        Error::NotFound { .. } => "NOT_FOUND",
        Error::AlreadyExists { .. } => "ALREADY_EXISTS",
        Error::FailedPrecondition { .. } => "FAILED_PRECONDITION",
        Error::ResourceExhausted { .. } => "RESOURCE_EXHAUSTED",
        Error::Aborted { .. } => "ABORTED",
        Error::DataLoss { .. } => "DATA_LOSS",
        Error::Unavailable(_) => "UNAVAILABLE",
        Error::Internal(_) => "INTERNAL",
    }
}
