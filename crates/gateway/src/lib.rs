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
//! Every route answers with or without a trailing slash, an unknown path answers 404 in
//! the shape of the surface its prefix belongs to, and CORS is answered when configured
//! ([`CorsOrigins`]).

#![forbid(unsafe_code)]

mod body;
mod cors;
mod failure;
pub mod masumi;
pub mod native;
mod numbered;
pub mod openapi;
mod pages;
pub mod psp;
pub mod scoped;
pub mod status;
mod time;
pub mod upstream;

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::Uri,
    middleware::Next,
    response::Response,
};
use tower::Layer;
use tower_http::normalize_path::NormalizePathLayer;

pub use crate::{cors::CorsOrigins, failure::Failure, upstream::Upstream};

/// Largest request body any route accepts; larger ones are answered 413 in the surface's shape.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Settings of the gateway itself (the rest is the upstream's business).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Environment the PSP surface creates keys in and counts them for; empty means the
    /// server's default environment.
    pub psp_environment: String,
    /// Browser origins allowed to call the REST routes (CORS); none by default.
    pub cors_allowed_origins: CorsOrigins,
    /// The constraints the server validates the native API's requests with, for the
    /// document to show (the gateway enforces none of them).
    pub field_rules: Vec<openapi::FieldRule>,
}

/// Every REST route, over `upstream`: the native API, the three compatible surfaces and
/// `GET /openapi.json`; a trailing slash is ignored, and CORS is answered as configured.
pub fn router(upstream: Upstream, settings: Settings) -> Router {
    let native = native::Native::new(upstream.clone());
    let routes = Router::new()
        .merge(psp::routes(upstream.clone(), settings.clone()))
        .merge(masumi::routes(upstream.clone()))
        .merge(scoped::routes(upstream))
        .merge(openapi::routes(&native, &settings.field_rules))
        .merge(native.routes())
        .route_layer(axum::middleware::from_fn(name_route))
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    // Paths are trimmed before routing (a layer on a Router runs after it), so that
    // `/api/v1/api-key/` is `/api/v1/api-key`, as Masumi's generated client calls it.
    let trimmed = NormalizePathLayer::trim_trailing_slash().layer(routes);
    match settings.cors_allowed_origins.layer() {
        Some(cors) => Router::new().fallback_service(cors.layer(trimmed)),
        None => Router::new().fallback_service(trimmed),
    }
}

/// The route template a response answered, for the server's HTTP span and metrics (set
/// on the response: they are recorded outside routing, where the match is not known).
#[derive(Debug, Clone)]
pub struct HttpRoute(pub String);

/// Route layer: names the matched route in the response, unless the handler named a
/// finer one (the native API's routes are templates of its own, matched in its handler).
pub async fn name_route(request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|path| path.as_str().to_owned());
    let mut response = next.run(request).await;
    if let Some(route) = route
        && response.extensions().get::<HttpRoute>().is_none()
    {
        response.extensions_mut().insert(HttpRoute(route));
    }
    response
}

/// An unknown path, answered in the shape of the surface whose prefix it carries.
async fn no_route(uri: Uri) -> Response {
    let path = uri.path();
    let under = |base: &str| path == base || path.strip_prefix(base).is_some_and(|rest| rest.starts_with('/'));
    if under(psp::BASE) {
        psp::error::respond(Failure::NoRoute)
    } else if under(scoped::BASE) {
        scoped::error::respond(Failure::NoRoute)
    } else if under("/api/v1") {
        // Masumi's server prefix: every other path under it is Masumi's.
        masumi::error::respond(Failure::NoRoute)
    } else {
        native::error::respond(Failure::NoRoute)
    }
}
