//! Generic scoped keys (seed `002`): snake_case JSON, `Authorization: Bearer <key or JWT>`.
//! Scopes are `READ`, `CREATE`, `UPDATE`, `DELETE` and `MANAGE`; `MANAGE` is the one that
//! lets a key manage keys, as the policy table decides upstream.

pub mod error;

use axum::{
    Json, Router,
    extract::{Path, State, rejection::BytesRejection},
    http::HeaderMap,
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::Bytes;
use http::StatusCode;
use keyward_proto::v1;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use self::error::ScopedError;
use crate::{Failure, Upstream, body, pages, time::rfc3339, upstream::request};

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

/// A scope of the generic surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum KeyScope {
    /// Execute reads.
    Read,
    /// Create resources.
    Create,
    /// Execute updates.
    Update,
    /// Execute deletes.
    Delete,
    /// Manage accounts, and keys here.
    Manage,
}

impl KeyScope {
    fn as_str(self) -> &'static str {
        match self {
            Self::Read => "READ",
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Manage => "MANAGE",
        }
    }
}

/// A key, never its secret.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScopedKey {
    /// The key's number.
    pub key_id: i64,
    /// The key's name.
    pub key_name: String,
    /// The key's scopes (only those of this surface).
    pub key_scope: Vec<String>,
    /// The organisation's numeric id; null when it is not a number.
    pub organization_id: Option<i64>,
    /// The key's prefix and last 4 characters.
    pub key_mask: String,
    /// `active`, `inactive` or `revoked`.
    pub status: String,
    /// When the key was created, RFC 3339 UTC.
    pub created_at: String,
}

/// A created key with its secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedScopedKey {
    /// The key.
    #[serde(flatten)]
    pub key: ScopedKey,
    /// The secret.
    pub api_key: String,
}

/// Body of the create call.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateScopedKey {
    /// The key's name.
    pub key_name: String,
    /// Scopes: an array, or a comma-separated string.
    #[serde(deserialize_with = "scopes")]
    #[schema(value_type = Vec<KeyScope>)]
    pub key_scope: Vec<KeyScope>,
    /// The organisation's numeric id (a number, or a string of digits).
    #[serde(deserialize_with = "organization")]
    #[schema(value_type = i64)]
    pub organization_id: i64,
}

fn scopes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<KeyScope>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        List(Vec<KeyScope>),
        Text(String),
    }
    match Given::deserialize(deserializer)? {
        Given::List(list) => Ok(list),
        Given::Text(text) => text
            .split(',')
            .map(|scope| KeyScope::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(scope.trim())))
            .collect(),
    }
}

fn organization<'de, D: Deserializer<'de>>(deserializer: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Number(i64),
        Text(String),
    }
    match Given::deserialize(deserializer)? {
        Given::Number(number) => Ok(number),
        Given::Text(text) => text.trim().parse().map_err(serde::de::Error::custom),
    }
}

fn scoped(key: v1::ApiKey) -> ScopedKey {
    let status = match v1::ApiKeyStatus::try_from(key.status) {
        Ok(v1::ApiKeyStatus::Active) => "active",
        Ok(v1::ApiKeyStatus::Inactive) => "inactive",
        Ok(v1::ApiKeyStatus::Revoked) => "revoked",
        Ok(v1::ApiKeyStatus::Unspecified) | Err(_) => "unknown",
    };
    let known = [KeyScope::Read, KeyScope::Create, KeyScope::Update, KeyScope::Delete, KeyScope::Manage];
    ScopedKey {
        key_id: key.number,
        key_name: key.name,
        key_scope: key.scopes.into_iter().filter(|s| known.iter().any(|k| k.as_str() == s)).collect(),
        organization_id: key.organization_id.parse().ok(),
        key_mask: key.mask,
        status: status.to_owned(),
        created_at: rfc3339(key.create_time.as_ref()).unwrap_or_default(),
    }
}

fn key_number(raw: &str) -> Result<String, Failure> {
    raw.parse::<i64>()
        .ok()
        .filter(|number| *number > 0)
        .map(|number| number.to_string())
        .ok_or_else(|| Failure::BadRequest("key_id must be a positive integer".to_owned()))
}

fn respond<T: Serialize>(result: Result<(StatusCode, T), Failure>) -> Response {
    match result {
        Ok((status, body)) => (status, Json(body)).into_response(),
        Err(failure) => error::respond(failure),
    }
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
    respond(
        async {
            body::none(body)?;
            let keys = pages::all_api_keys(&upstream, &headers, v1::ListApiKeysRequest::default()).await?;
            Ok((StatusCode::OK, keys.into_iter().map(scoped).collect::<Vec<_>>()))
        }
        .await,
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
    respond(
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
            let key = scoped(created.api_key.unwrap_or_default());
            Ok((StatusCode::CREATED, CreatedScopedKey { key, api_key: created.secret }))
        }
        .await,
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
    respond(
        async {
            body::none(body)?;
            let message = v1::GetApiKeyRequest { id: key_number(&id)? };
            let key = upstream.api_keys().get_api_key(request(&headers, message)).await?.into_inner();
            Ok((StatusCode::OK, scoped(key.api_key.unwrap_or_default())))
        }
        .await,
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
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(failure) => error::respond(failure),
    }
}
