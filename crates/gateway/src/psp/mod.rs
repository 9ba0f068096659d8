//! The PSP product manager's customer-user API keys (seed `000`), for people with a JWT.
//! Ids are the keys' integer `number`; statuses are lower-case; times RFC 3339 UTC with
//! milliseconds. Who may do what is the policy table's business, upstream.

pub mod error;

use axum::{
    Json, Router,
    extract::{Path, State, rejection::BytesRejection},
    http::HeaderMap,
    response::{IntoResponse, Response},
    routing::{get, patch},
};
use bytes::Bytes;
use http::StatusCode;
use keyward_proto::v1;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use self::error::PspError;
use crate::{Failure, Settings, Upstream, body, pages, time::rfc3339, upstream::request};

/// Where the surface lives.
pub const BASE: &str = "/api/v1/psp/product-manager/customer-user-api-keys";

#[derive(Debug, Clone)]
pub(crate) struct Psp {
    upstream: Upstream,
    settings: Settings,
}

pub(crate) fn routes(upstream: Upstream, settings: Settings) -> Router {
    Router::new()
        .route(BASE, get(list).post(create).fallback(method_not_allowed))
        .route(&format!("{BASE}/usage"), get(usage).fallback(method_not_allowed))
        .route(&format!("{BASE}/{{apiKeyId}}"), patch(update).delete(delete).fallback(method_not_allowed))
        .with_state(Psp { upstream, settings })
}

async fn method_not_allowed() -> Response {
    error::respond(Failure::MethodNotAllowed)
}

/// A customer user API key, as the list returns it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CustomerUserApiKey {
    /// The key's number.
    pub id: i64,
    /// The key's prefix and last 4 characters.
    #[serde(rename = "keyMask")]
    pub key_mask: String,
    /// The key's name.
    pub name: String,
    /// The owner's subject.
    #[serde(rename = "userCognitoSub")]
    pub user_cognito_sub: String,
    /// The creator's subject.
    #[serde(rename = "creatorCognitoSub")]
    pub creator_cognito_sub: String,
    /// When the key expires; null when it does not.
    #[serde(rename = "expiresAt")]
    pub expires_at: Option<String>,
    /// When the key was created.
    #[serde(rename = "createdAt")]
    pub created_at: String,
    /// `active`, `inactive` or `revoked`.
    pub status: String,
    /// The organisation's display name.
    #[serde(rename = "organisationName")]
    pub organisation_name: String,
}

/// A created key: the list's fields but the organisation, plus the secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedCustomerUserApiKey {
    /// The key's number.
    pub id: i64,
    /// The key's prefix and last 4 characters.
    #[serde(rename = "keyMask")]
    pub key_mask: String,
    /// The key's name.
    pub name: String,
    /// The owner's subject.
    #[serde(rename = "userCognitoSub")]
    pub user_cognito_sub: String,
    /// The creator's subject.
    #[serde(rename = "creatorCognitoSub")]
    pub creator_cognito_sub: String,
    /// When the key expires; null when it does not.
    #[serde(rename = "expiresAt")]
    pub expires_at: Option<String>,
    /// When the key was created.
    #[serde(rename = "createdAt")]
    pub created_at: String,
    /// `active` or `inactive`.
    pub status: String,
    /// The secret, shown once.
    #[serde(rename = "rawKey")]
    pub raw_key: String,
}

/// An updated key: the list's fields but the organisation.
#[derive(Debug, Serialize, ToSchema)]
pub struct UpdatedCustomerUserApiKey {
    /// The key's number.
    pub id: i64,
    /// The key's prefix and last 4 characters.
    #[serde(rename = "keyMask")]
    pub key_mask: String,
    /// The key's name.
    pub name: String,
    /// The owner's subject.
    #[serde(rename = "userCognitoSub")]
    pub user_cognito_sub: String,
    /// The creator's subject.
    #[serde(rename = "creatorCognitoSub")]
    pub creator_cognito_sub: String,
    /// When the key expires; null when it does not.
    #[serde(rename = "expiresAt")]
    pub expires_at: Option<String>,
    /// When the key was created.
    #[serde(rename = "createdAt")]
    pub created_at: String,
    /// `active` or `inactive`.
    pub status: String,
}

/// Body of the create call.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCustomerUserApiKey {
    /// The key's name, 1 to 200 characters.
    pub name: String,
}

/// Body of the update call.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateCustomerUserApiKey {
    /// The new status.
    pub status: PspStatus,
}

/// A status a key may be set to.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PspStatus {
    /// The key verifies.
    Active,
    /// The key is disabled.
    Inactive,
}

/// Live keys of the caller in the environment, and the most allowed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    /// Live keys.
    pub used: i64,
    /// The most live keys allowed.
    pub limit: i64,
}

fn status_name(status: i32) -> String {
    match v1::ApiKeyStatus::try_from(status) {
        Ok(v1::ApiKeyStatus::Active) => "active",
        Ok(v1::ApiKeyStatus::Inactive) => "inactive",
        Ok(v1::ApiKeyStatus::Revoked) => "revoked",
        Ok(v1::ApiKeyStatus::Unspecified) | Err(_) => "unknown",
    }
    .to_owned()
}

fn listed(key: v1::ApiKey) -> CustomerUserApiKey {
    CustomerUserApiKey {
        id: key.number,
        key_mask: key.mask,
        name: key.name,
        user_cognito_sub: key.owner,
        creator_cognito_sub: key.creator,
        expires_at: rfc3339(key.expire_time.as_ref()),
        created_at: rfc3339(key.create_time.as_ref()).unwrap_or_default(),
        status: status_name(key.status),
        organisation_name: key.organization_name,
    }
}

fn updated(key: v1::ApiKey) -> UpdatedCustomerUserApiKey {
    let CustomerUserApiKey {
        id,
        key_mask,
        name,
        user_cognito_sub,
        creator_cognito_sub,
        expires_at,
        created_at,
        status,
        organisation_name: _,
    } = listed(key);
    UpdatedCustomerUserApiKey {
        id,
        key_mask,
        name,
        user_cognito_sub,
        creator_cognito_sub,
        expires_at,
        created_at,
        status,
    }
}

/// An apiKeyId that is not a number names no key.
fn key_number(raw: &str) -> Result<String, Failure> {
    raw.parse::<i64>()
        .ok()
        .filter(|number| *number > 0)
        .map(|number| number.to_string())
        .ok_or_else(|| Failure::Status(tonic::Status::not_found("no such key")))
}

fn respond<T: Serialize>(result: Result<(StatusCode, T), Failure>) -> Response {
    match result {
        Ok((status, body)) => (status, Json(body)).into_response(),
        Err(failure) => error::respond(failure),
    }
}

#[utoipa::path(get, path = "/api/v1/psp/product-manager/customer-user-api-keys", tag = "psp",
    description = "The caller's keys; Super_Dev sees every key of its organisation.",
    security(("bearer" = [])),
    responses((status = 200, body = Vec<CustomerUserApiKey>), (status = 401, body = PspError), (status = 403, body = PspError),
        (status = 413, body = PspError), (status = 503, body = PspError)))]
pub(crate) async fn list(State(psp): State<Psp>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    respond(
        async {
            body::none(body)?;
            let query =
                v1::ListApiKeysRequest { environment: psp.settings.psp_environment.clone(), ..Default::default() };
            let keys = pages::all_api_keys(&psp.upstream, &headers, query).await?;
            Ok((StatusCode::OK, keys.into_iter().map(listed).collect::<Vec<_>>()))
        }
        .await,
    )
}

#[utoipa::path(post, path = "/api/v1/psp/product-manager/customer-user-api-keys", tag = "psp",
    description = "Creates a key for the caller in the gateway's environment; the secret is shown once.",
    security(("bearer" = [])), request_body = CreateCustomerUserApiKey,
    responses((status = 200, body = CreatedCustomerUserApiKey), (status = 400, body = PspError), (status = 401, body = PspError),
        (status = 403, body = PspError), (status = 409, body = PspError), (status = 413, body = PspError),
        (status = 429, body = PspError), (status = 503, body = PspError)))]
pub(crate) async fn create(
    State(psp): State<Psp>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(
        async {
            let CreateCustomerUserApiKey { name } = body::json(body)?;
            let message = v1::CreateApiKeyRequest {
                api_key: Some(v1::ApiKey {
                    name,
                    environment: psp.settings.psp_environment.clone(),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let created = psp.upstream.api_keys().create_api_key(request(&headers, message)).await?.into_inner();
            let key = created.api_key.unwrap_or_default();
            let UpdatedCustomerUserApiKey {
                id,
                key_mask,
                name,
                user_cognito_sub,
                creator_cognito_sub,
                expires_at,
                created_at,
                status,
            } = updated(key);
            let body = CreatedCustomerUserApiKey {
                id,
                key_mask,
                name,
                user_cognito_sub,
                creator_cognito_sub,
                expires_at,
                created_at,
                status,
                raw_key: created.secret,
            };
            Ok((StatusCode::OK, body))
        }
        .await,
    )
}

#[utoipa::path(delete, path = "/api/v1/psp/product-manager/customer-user-api-keys/{apiKeyId}", tag = "psp",
    description = "Revokes a key.", security(("bearer" = [])),
    params(("apiKeyId" = String, Path, description = "The key's number")),
    responses((status = 204, description = "Api key deleted successfully."), (status = 401, body = PspError),
        (status = 403, body = PspError), (status = 404, body = PspError), (status = 413, body = PspError),
        (status = 503, body = PspError)))]
pub(crate) async fn delete(
    State(psp): State<Psp>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        body::none(body)?;
        let message = v1::DeleteApiKeyRequest { id: key_number(&id)?, request_id: String::new() };
        psp.upstream.api_keys().delete_api_key(request(&headers, message)).await?;
        Ok::<_, Failure>(())
    }
    .await;
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(failure) => error::respond(failure),
    }
}

#[utoipa::path(patch, path = "/api/v1/psp/product-manager/customer-user-api-keys/{apiKeyId}", tag = "psp",
    description = "Activates or deactivates a key.", security(("bearer" = [])),
    params(("apiKeyId" = String, Path, description = "The key's number")), request_body = UpdateCustomerUserApiKey,
    responses((status = 200, body = UpdatedCustomerUserApiKey), (status = 400, body = PspError), (status = 401, body = PspError),
        (status = 403, body = PspError), (status = 404, body = PspError), (status = 413, body = PspError),
        (status = 503, body = PspError)))]
pub(crate) async fn update(
    State(psp): State<Psp>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    respond(
        async {
            let UpdateCustomerUserApiKey { status } = body::json(body)?;
            let status = match status {
                PspStatus::Active => v1::ApiKeyStatus::Active,
                PspStatus::Inactive => v1::ApiKeyStatus::Inactive,
            };
            let message = v1::UpdateApiKeyRequest {
                api_key: Some(v1::ApiKey { id: key_number(&id)?, status: status.into(), ..Default::default() }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["status".to_owned()] }),
                request_id: String::new(),
                ..Default::default()
            };
            let key = psp.upstream.api_keys().update_api_key(request(&headers, message)).await?.into_inner();
            Ok((StatusCode::OK, updated(key.api_key.unwrap_or_default())))
        }
        .await,
    )
}

#[utoipa::path(get, path = "/api/v1/psp/product-manager/customer-user-api-keys/usage", tag = "psp",
    description = "The caller's live keys in the gateway's environment, and the most allowed.",
    security(("bearer" = [])),
    responses((status = 200, body = Usage), (status = 401, body = PspError), (status = 403, body = PspError),
        (status = 413, body = PspError), (status = 503, body = PspError)))]
pub(crate) async fn usage(State(psp): State<Psp>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    respond(
        async {
            body::none(body)?;
            let message =
                v1::GetKeyQuotaRequest { owner: String::new(), environment: psp.settings.psp_environment.clone() };
            let quota = psp.upstream.api_keys().get_key_quota(request(&headers, message)).await?.into_inner();
            Ok((StatusCode::OK, Usage { used: quota.used, limit: quota.limit }))
        }
        .await,
    )
}
