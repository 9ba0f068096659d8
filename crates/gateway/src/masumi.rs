//! The Masumi payment service's API keys (seed `001`).

use axum::Router;

use crate::Upstream;

pub(crate) fn routes(_upstream: Upstream) -> Router {
    Router::new()
}
