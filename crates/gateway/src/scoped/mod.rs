//! Generic scoped keys (seed `002`): snake_case JSON, `Authorization: Bearer <key or JWT>`.
//! Scopes are `READ`, `CREATE`, `UPDATE`, `DELETE` and `MANAGE`; `MANAGE` is the one that
//! lets a key manage keys, as the policy table decides upstream.

pub mod error;
mod shapes;

use axum::{
    Router,
    extract::{Path, State, rejection::BytesRejection},
    http::HeaderMap,
    response::Response,
    routing::get,
};
use bytes::Bytes;
use http::StatusCode;
use keyward_proto::v1;

use self::error::ScopedError;
pub use self::shapes::*;
use crate::{
    Failure, Upstream, body,
    numbered::{self, respond_no_content},
    pages,
    upstream::request,
};

/// Where the surface lives.
pub const BASE: &str = "/api/v1/api-keys";

pub(crate) fn routes(upstream: Upstream) -> Router {
    Router::new()
        .route(BASE, get(list).post(create).fallback(method_not_allowed))
        .route(&format!("{BASE}/{{key_id}}"), get(fetch).delete(delete).fallback(method_not_allowed))
        .with_state(upstream)
}

async fn method_not_allowed() -> Response {
    error::respond(Failure::MethodNotAllowed)
}

/// A `key_id` that is not a positive integer is a bad request here.
fn key_number(segment: &str) -> Result<String, Failure> {
    numbered::key_number(segment).ok_or_else(|| Failure::BadRequest("key_id must be a positive integer".to_owned()))
}

#[utoipa::path(get, path = "/api/v1/api-keys", tag = "scoped", description = "The caller's keys, never their secrets.",
    security(("bearer" = [])),
    responses((status = 200, body = Vec<ScopedKey>), (status = 401, body = ScopedError), (status = 403, body = ScopedError),
        (status = 413, body = ScopedError), (status = 503, body = ScopedError)))]
pub(crate) async fn list(
    State(upstream): State<Upstream>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    numbered::respond(
        async {
            body::none(body)?;
            let keys = pages::all_api_keys(&upstream, &headers, v1::ListApiKeysRequest::default()).await?;
            Ok((StatusCode::OK, keys.into_iter().map(ScopedKey::from).collect::<Vec<_>>()))
        }
        .await,
        error::respond,
    )
}

#[utoipa::path(post, path = "/api/v1/api-keys", tag = "scoped",
    description = "Creates a key; its scopes are at most the caller's own. The secret is shown once.",
    security(("bearer" = [])), request_body = CreateScopedKey,
    responses((status = 201, body = CreatedScopedKey), (status = 400, body = ScopedError), (status = 401, body = ScopedError),
        (status = 403, body = ScopedError), (status = 409, body = ScopedError), (status = 413, body = ScopedError),
        (status = 429, body = ScopedError), (status = 503, body = ScopedError)))]
pub(crate) async fn create(
    State(upstream): State<Upstream>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    numbered::respond(
        async {
            let CreateScopedKey { key_name, key_scope, organization_id } = body::json(body)?;
            let mut scopes: Vec<String> = key_scope.iter().map(|scope| scope.as_str().to_owned()).collect();
            scopes.dedup();
            let message = v1::CreateApiKeyRequest {
                api_key: Some(v1::ApiKey {
                    name: key_name,
                    scopes,
                    organization_id: organization_id.to_string(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let created = upstream.api_keys().create_api_key(request(&headers, message)).await?.into_inner();
            let key = created.api_key.unwrap_or_default().into();
            Ok((StatusCode::CREATED, CreatedScopedKey { key, api_key: created.secret }))
        }
        .await,
        error::respond,
    )
}

#[utoipa::path(get, path = "/api/v1/api-keys/{key_id}", tag = "scoped", description = "One key, never its secret.",
    security(("bearer" = [])), params(("key_id" = String, Path, description = "The key's number")),
    responses((status = 200, body = ScopedKey), (status = 400, body = ScopedError), (status = 401, body = ScopedError),
        (status = 403, body = ScopedError), (status = 404, body = ScopedError), (status = 413, body = ScopedError),
        (status = 503, body = ScopedError)))]
pub(crate) async fn fetch(
    State(upstream): State<Upstream>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    numbered::respond(
        async {
            body::none(body)?;
            let message = v1::GetApiKeyRequest { id: key_number(&id)? };
            let key = upstream.api_keys().get_api_key(request(&headers, message)).await?.into_inner();
            Ok((StatusCode::OK, ScopedKey::from(key.api_key.unwrap_or_default())))
        }
        .await,
        error::respond,
    )
}

#[utoipa::path(delete, path = "/api/v1/api-keys/{key_id}", tag = "scoped", description = "Revokes a key.",
    security(("bearer" = [])), params(("key_id" = String, Path, description = "The key's number")),
    responses((status = 204, description = "Deleted."), (status = 400, body = ScopedError), (status = 401, body = ScopedError),
        (status = 403, body = ScopedError), (status = 404, body = ScopedError), (status = 413, body = ScopedError),
        (status = 503, body = ScopedError)))]
pub(crate) async fn delete(
    State(upstream): State<Upstream>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        body::none(body)?;
        let message = v1::DeleteApiKeyRequest { id: key_number(&id)?, request_id: String::new() };
        upstream.api_keys().delete_api_key(request(&headers, message)).await?;
        Ok::<_, Failure>(())
    }
    .await;
    respond_no_content(result, error::respond)
}
