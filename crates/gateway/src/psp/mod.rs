//! The PSP product manager's customer-user API keys (seed `000`), for people with a JWT.
//! Ids are the keys' integer `number`; statuses are lower-case; times RFC 3339 UTC with
//! milliseconds. Who may do what is the policy table's business, upstream.

pub mod error;
mod shapes;

use axum::{
    Router,
    extract::{Path, State, rejection::BytesRejection},
    http::HeaderMap,
    response::Response,
    routing::{get, patch},
};
use bytes::Bytes;
use http::StatusCode;
use keyward_proto::v1;

use self::error::PspError;
pub use self::shapes::*;
use crate::{
    Failure, Settings, Upstream, body,
    numbered::{self, respond_no_content},
    pages,
    upstream::request,
};

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

/// An apiKeyId that is not a number names no key: 404, as for a number no key has.
fn key_number(segment: &str) -> Result<String, Failure> {
    numbered::key_number(segment).ok_or_else(|| Failure::Status(tonic::Status::not_found("no such key")))
}

#[utoipa::path(get, path = "/api/v1/psp/product-manager/customer-user-api-keys", tag = "psp",
    description = "The caller's keys; Super_Dev sees every key of its organisation.",
    security(("bearer" = [])),
    responses((status = 200, body = Vec<ListedCustomerUserApiKey>), (status = 401, body = PspError), (status = 403, body = PspError),
        (status = 413, body = PspError), (status = 503, body = PspError)))]
pub(crate) async fn list(State(psp): State<Psp>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    numbered::respond(
        async {
            body::none(body)?;
            let query =
                v1::ListApiKeysRequest { environment: psp.settings.psp_environment.clone(), ..Default::default() };
            let keys = pages::all_api_keys(&psp.upstream, &headers, query).await?;
            Ok((StatusCode::OK, keys.into_iter().map(ListedCustomerUserApiKey::from).collect::<Vec<_>>()))
        }
        .await,
        error::respond,
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
    numbered::respond(
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
            let key = created.api_key.unwrap_or_default().into();
            Ok((StatusCode::OK, CreatedCustomerUserApiKey { key, raw_key: created.secret }))
        }
        .await,
        error::respond,
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
    respond_no_content(result, error::respond)
}

#[utoipa::path(patch, path = "/api/v1/psp/product-manager/customer-user-api-keys/{apiKeyId}", tag = "psp",
    description = "Activates or deactivates a key.", security(("bearer" = [])),
    params(("apiKeyId" = String, Path, description = "The key's number")), request_body = UpdateCustomerUserApiKey,
    responses((status = 200, body = CustomerUserApiKey), (status = 400, body = PspError), (status = 401, body = PspError),
        (status = 403, body = PspError), (status = 404, body = PspError), (status = 413, body = PspError),
        (status = 503, body = PspError)))]
pub(crate) async fn update(
    State(psp): State<Psp>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    numbered::respond(
        async {
            let UpdateCustomerUserApiKey { status } = body::json(body)?;
            let status = v1::ApiKeyStatus::from(status);
            let message = v1::UpdateApiKeyRequest {
                api_key: Some(v1::ApiKey { id: key_number(&id)?, status: status.into(), ..Default::default() }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["status".to_owned()] }),
                request_id: String::new(),
                ..Default::default()
            };
            let key = psp.upstream.api_keys().update_api_key(request(&headers, message)).await?.into_inner();
            Ok((StatusCode::OK, CustomerUserApiKey::from(key.api_key.unwrap_or_default())))
        }
        .await,
        error::respond,
    )
}

#[utoipa::path(get, path = "/api/v1/psp/product-manager/customer-user-api-keys/usage", tag = "psp",
    description = "The caller's live keys in the gateway's environment, and the most allowed.",
    security(("bearer" = [])),
    responses((status = 200, body = Usage), (status = 401, body = PspError), (status = 403, body = PspError),
        (status = 413, body = PspError), (status = 503, body = PspError)))]
pub(crate) async fn usage(State(psp): State<Psp>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    numbered::respond(
        async {
            body::none(body)?;
            let message =
                v1::GetKeyQuotaRequest { owner: String::new(), environment: psp.settings.psp_environment.clone() };
            let quota = psp.upstream.api_keys().get_key_quota(request(&headers, message)).await?.into_inner();
            Ok((StatusCode::OK, Usage { used: quota.used, limit: quota.limit }))
        }
        .await,
        error::respond,
    )
}
