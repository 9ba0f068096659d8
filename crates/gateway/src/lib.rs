//! keyward's REST gateway. It holds no business logic: every route turns an HTTP request
//! into a call of the gRPC API (in process, or over a channel to another process), and the
//! answer back into the JSON of the surface it belongs to:
//!
//! - the native API, transcoded from the `google.api.http` rules of the descriptor set
//!   with the proto3 JSON mapping ([`native`]);
//! - the PSP customer-user keys ([`psp`]), the Masumi payment-service keys ([`masumi`])
//!   and the generic scoped keys ([`scoped`]), each in its own legacy JSON shape.
//!
//! Each surface maps failures to HTTP in its own `error` module, from one [`Failure`] type.

#![forbid(unsafe_code)]

mod body;
mod failure;
pub mod masumi;
pub mod native;
pub mod openapi;
pub mod psp;
pub mod scoped;
pub mod status;
mod time;
pub mod upstream;

use axum::{Router, extract::DefaultBodyLimit};

pub use crate::{failure::Failure, upstream::Upstream};

/// Largest request body any route accepts; larger ones are answered 413 in the surface's shape.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Settings of the gateway itself (the rest is the upstream's business).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Environment the PSP surface creates keys in and counts them for; empty means the
    /// server's default environment.
    pub psp_environment: String,
}

/// Every REST route, over `upstream`: the native API, the three compatible surfaces and
/// `GET /openapi.json`.
pub fn router(upstream: Upstream, settings: Settings) -> Router {
    let native = native::Native::new(upstream.clone());
    Router::new()
        .merge(psp::routes(upstream.clone(), settings.clone()))
        .merge(masumi::routes(upstream.clone()))
        .merge(scoped::routes(upstream))
        .merge(openapi::routes(&native))
        .merge(native.routes())
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}
