//! The one error type of keyward's domain. Transports map it exhaustively: gRPC in the
//! server's `status` module; every variant forces a decision there.

use std::fmt;

pub use crate::verify::Unusable;

/// One invalid field of a request, as reported in `google.rpc.BadRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Path of the field, e.g. `api_key.name`.
    pub field: String,
    /// What is wrong and what would be right.
    pub description: String,
}

impl Violation {
    /// A violation of `field`.
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self { field: field.into(), description: description.into() }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.description)
    }
}

/// Everything that can go wrong, classified by what the caller can do about it.
/// `reason` strings are the AIP-193 `ErrorInfo` reasons (UPPER_SNAKE_CASE).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; each violation names a field.
    #[error("invalid request: {}", join(.0))]
    InvalidArgument(Vec<Violation>),
    /// No valid credentials. Deliberately vague (the detail goes to the log only), except
    /// that a key found by the presented secret and refused for its state says which state:
    /// only the holder of that secret can be told so.
    #[error("missing or invalid credentials")]
    Unauthenticated {
        /// Why authentication failed, for the log.
        detail: &'static str,
        /// The state of the key the secret belongs to, when that key exists and cannot be used.
        key: Option<Unusable>,
    },
    /// The caller is known but lacks the right.
    #[error("the caller may not {action}")]
    PermissionDenied {
        /// The action refused, in words.
        action: &'static str,
    },
    /// The resource does not exist or is outside the caller's reach.
    #[error("{kind} {id} not found")]
    NotFound {
        /// Resource kind, e.g. `API key`.
        kind: &'static str,
        /// The id asked for.
        id: String,
    },
    /// The resource exists already, or the request was applied before.
    #[error("{message}")]
    AlreadyExists {
        /// AIP-193 reason.
        reason: &'static str,
        /// What exists.
        message: String,
        /// Id of the existing resource, if any.
        resource_id: Option<String>,
    },
    /// The resource is in a state that forbids the operation.
    #[error("{message}")]
    FailedPrecondition {
        /// AIP-193 reason.
        reason: &'static str,
        /// What state forbids it and what would allow it.
        message: String,
    },
    /// A quota is used up.
    #[error("{message}")]
    ResourceExhausted {
        /// AIP-193 reason.
        reason: &'static str,
        /// Which quota and its limit.
        message: String,
    },
    /// A concurrent change got in the way; retrying the whole request may succeed.
    #[error("{message}")]
    Aborted {
        /// What changed.
        message: String,
    },
    /// Stored data cannot be read back: altered, or written under another key.
    #[error("{message}")]
    DataLoss {
        /// AIP-193 reason.
        reason: &'static str,
        /// What cannot be read and why.
        message: String,
    },
    /// The database cannot be reached right now; retrying later may succeed.
    #[error("storage unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A bug or an unexpected storage failure.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

fn join(violations: &[Violation]) -> String {
    violations.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl Error {
    /// Authentication failed for `detail`, which goes to the log only.
    pub fn unauthenticated(detail: &'static str) -> Self {
        Self::Unauthenticated { detail, key: None }
    }

    /// A single-field invalid-argument error.
    pub fn invalid(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self::InvalidArgument(vec![Violation::new(field, description)])
    }

    /// An API key that does not exist or that the caller may not see.
    pub fn key_not_found(id: impl Into<String>) -> Self {
        Self::NotFound { kind: "API key", id: id.into() }
    }

    /// The same error, but an API key's NOT_FOUND names `asked`, the reference the caller
    /// sent (a key number, say), never the id it resolved to.
    pub fn naming(self, asked: &str) -> Self {
        if let Self::NotFound { kind: "API key", .. } = self { Self::key_not_found(asked) } else { self }
    }

    /// An internal error from any source.
    pub fn internal(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(source.into())
    }
}

/// The result of a domain operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
