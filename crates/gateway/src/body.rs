//! Request bodies: bounded, and parsed as JSON with the problem kept for a 400.

use axum::extract::rejection::BytesRejection;
use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::Failure;

/// The JSON body as `T`; an empty body counts as `{}` when `T` allows it.
pub(crate) fn json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, Failure> {
    let body = body?;
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &body };
    serde_json::from_slice(text).map_err(|err| Failure::BadRequest(format!("invalid JSON body: {err}")))
}

/// Checks the body is within the limit, for routes that take none.
pub(crate) fn none(body: Result<Bytes, BytesRejection>) -> Result<(), Failure> {
    body.map(drop).map_err(Failure::from)
}
