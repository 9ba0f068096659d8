//! The audit events no transaction writes: a failed mutation's, and a read that reveals
//! secrets. A successful change records its own event inside its transaction.

use chrono::Utc;
use keyward_core::{
    Error,
    error::Result,
    model::{AuditAction, AuditEvent},
    policy::Caller,
    validate::{self, KeyRef},
};
use keyward_store::Store;
use tonic::Status;

use crate::status::{audit_outcome, to_status};

static AUDIT_FAILURE_LINES: crate::log_lines::LineThrottle = crate::log_lines::LineThrottle::new();

/// Records the audit event `result` needs, if any, and maps an error to its status.
pub(crate) async fn audited<T>(
    store: &Store,
    caller: &Caller,
    action: AuditAction,
    target: &str,
    request_id: &str,
    result: Result<T>,
) -> Result<T, Status> {
    if result.is_err() || !action.is_change() {
        let event = AuditEvent {
            actor: caller.subject(),
            action: action.as_str().to_owned(),
            target: resolved(store, action, target).await,
            request_id: Some(request_id.chars().take(64).collect::<String>()).filter(|id| !id.is_empty()),
            outcome: result.as_ref().map_or_else(|err| audit_outcome(err).to_owned(), |_| "OK".to_owned()),
            occurred_at: Utc::now(),
        };
        // A call refused because the database is unavailable would wait for it a second
        // time to record that; its line is the record.
        let recorded = match &result {
            Err(Error::Unavailable(source)) => Err(Error::Unavailable(source.to_string().into())),
            _ => store.record_audit(&event).await,
        };
        if let Err(audit_err) = recorded
            && let Some(suppressed) = AUDIT_FAILURE_LINES.admit()
        {
            tracing::error!(error = ?audit_err, action = action.as_str(), suppressed, "could not record an audit event");
        }
    }
    result.map_err(to_status)
}

/// The target as its own trail names it: a key the caller named by its number or by its id
/// in another form (upper case, braced) is recorded under its id, so the refusal shows in
/// that key's audit trail. A reference that names no key is kept as the caller sent it.
async fn resolved(store: &Store, action: AuditAction, target: &str) -> String {
    let typed = || target.chars().take(64).collect();
    if !action.targets_key() {
        return typed();
    }
    match validate::key_ref(target) {
        Some(KeyRef::Id(id)) => id.to_string(),
        Some(KeyRef::Number(number)) => store.id_by_number(number).await.map_or_else(|_| typed(), |id| id.to_string()),
        None => typed(),
    }
}
