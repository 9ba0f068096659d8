//! The Masumi payment service's API keys (seed `001`): header `token: <key>`, answers in
//! `{"status": "success", "data": …}`. Permissions are scopes: Read → `read`;
//! ReadAndPay → `read`, `pay`; Admin → `admin`. Outside creation, `token` is the key's
//! mask: keyward keeps no secret it could return.
//!
//! Credits are the key's balances per unit (`""` is the default unit, lovelace), amounts
//! as decimal strings: `UsageCredits` are a new key's initial balances,
//! `RemainingUsageCredits` its balances now, and `UsageCreditsToAddOrRemove` one atomic
//! `AdjustCredits`. A `token` on PATCH imports a caller-chosen key through `RotateApiKey`.

pub mod error;

use axum::{
    Json, Router,
    extract::{Query, State, rejection::BytesRejection, rejection::QueryRejection},
    http::HeaderMap,
    response::{IntoResponse, Response},
    routing::get,
};
use bytes::Bytes;
use http::StatusCode;
use keyward_proto::v1;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};

use self::error::MasumiError;
use crate::{Failure, Upstream, body, time::rfc3339, upstream::request};

const BOTH_NETWORKS: [&str; 2] = ["Preprod", "Mainnet"];

pub(crate) fn routes(upstream: Upstream) -> Router {
    Router::new()
        .route("/api/v1/api-key-status", get(status).fallback(method_not_allowed))
        .route("/api/v1/api-key", get(list).post(create).patch(update).delete(delete).fallback(method_not_allowed))
        .route("/api/v1/rpc-api-keys", get(rpc_keys).fallback(method_not_allowed))
        .with_state(upstream)
}

async fn method_not_allowed() -> Response {
    error::respond(Failure::MethodNotAllowed)
}

/// A permission of a Masumi key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Permission {
    /// Read only.
    Read,
    /// Read and pay.
    ReadAndPay,
    /// Everything.
    Admin,
}

impl Permission {
    fn scopes(self) -> Vec<String> {
        let scopes: &[&str] = match self {
            Self::Read => &["read"],
            Self::ReadAndPay => &["read", "pay"],
            Self::Admin => &["admin"],
        };
        scopes.iter().map(|s| (*s).to_owned()).collect()
    }

    fn of(scopes: &[String]) -> Self {
        if scopes.iter().any(|s| s == "admin") {
            Self::Admin
        } else if scopes.iter().any(|s| s == "pay") {
            Self::ReadAndPay
        } else {
            Self::Read
        }
    }
}

/// A key's status, Masumi's way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum MasumiStatus {
    /// The key verifies.
    Active,
    /// The key is disabled.
    Inactive,
    /// The key is deleted, for good.
    Revoked,
}

/// A network a key may be used on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Network {
    /// Cardano's pre-production testnet.
    Preprod,
    /// Cardano's main network.
    Mainnet,
}

/// An amount of one unit, as a decimal string.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credit {
    /// The unit; empty is the default unit (lovelace).
    pub unit: String,
    /// The amount, a decimal integer string (a change may be negative).
    #[schema(example = "10000000")]
    pub amount: String,
}

/// The calling key.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyStatus {
    /// `Active`, `Inactive` or `Revoked`.
    pub status: MasumiStatus,
    /// The key's mask.
    pub token: String,
    /// The key's permission.
    pub permission: Permission,
    /// Networks the key may be used on.
    #[serde(rename = "networkLimit")]
    pub network_limit: Vec<String>,
    /// Whether the key may only spend its credits.
    #[serde(rename = "usageLimited")]
    pub usage_limited: bool,
    /// Balances per unit.
    #[serde(rename = "RemainingUsageCredits")]
    pub remaining_usage_credits: Vec<Credit>,
}

/// A key in the admin list.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListedKey {
    /// The key's id.
    pub id: String,
    /// The key's mask.
    pub token: String,
    /// The key's permission.
    pub permission: Permission,
    /// Whether the key may only spend its credits.
    #[serde(rename = "usageLimited")]
    pub usage_limited: bool,
    /// Balances per unit.
    #[serde(rename = "RemainingUsageCredits")]
    pub remaining_usage_credits: Vec<Credit>,
    /// `Active`, `Inactive` or `Revoked`.
    pub status: MasumiStatus,
    /// Networks the key may be used on.
    #[serde(rename = "networkLimit")]
    pub network_limit: Vec<String>,
}

/// A page of keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    /// The keys.
    #[serde(rename = "ApiKeys")]
    pub api_keys: Vec<ListedKey>,
}

/// A key as create, update and delete return it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangedKey {
    /// The key's id.
    pub id: String,
    /// The raw key on creation; the mask otherwise.
    pub token: String,
    /// The key's permission.
    pub permission: Permission,
    /// Whether the key may only spend its credits.
    #[serde(rename = "usageLimited")]
    pub usage_limited: bool,
    /// Networks the key may be used on.
    #[serde(rename = "networkLimit")]
    pub network_limit: Vec<String>,
    /// `Active`, `Inactive` or `Revoked`.
    pub status: MasumiStatus,
    /// When the key was deleted (only on delete).
    #[serde(rename = "deletedAt", skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
}

/// An RPC provider key, its secret in clear.
#[derive(Debug, Serialize, ToSchema)]
pub struct RpcProviderKey {
    /// The network.
    pub network: String,
    /// The id.
    pub id: String,
    /// The provider's credential.
    #[serde(rename = "rpcProviderApiKey")]
    pub rpc_provider_api_key: String,
    /// The provider, e.g. `Blockfrost`.
    #[serde(rename = "rpcProvider")]
    pub rpc_provider: String,
    /// When it was created.
    #[serde(rename = "createdAt")]
    pub created_at: String,
    /// When it was last changed.
    #[serde(rename = "updatedAt")]
    pub updated_at: String,
}

/// A page of RPC provider keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct RpcKeyList {
    /// The keys.
    #[serde(rename = "RpcProviderKeys")]
    pub rpc_provider_keys: Vec<RpcProviderKey>,
}

/// The success envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct Success<T> {
    /// Always `success`.
    pub status: String,
    /// The answer.
    pub data: T,
}

/// Body of the create call.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// `true`/`false`, as a string or a boolean; default true.
    #[serde(rename = "usageLimited", default, deserialize_with = "flag")]
    #[schema(value_type = Option<String>)]
    pub usage_limited: Option<bool>,
    /// Initial credits.
    #[serde(rename = "UsageCredits", default)]
    pub usage_credits: Vec<Credit>,
    /// Default Read.
    #[serde(default)]
    pub permission: Option<Permission>,
    /// Default both networks.
    #[serde(rename = "networkLimit", default)]
    pub network_limit: Option<Vec<Network>>,
}

/// Body of the update call.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateKey {
    /// The key's id.
    pub id: String,
    /// A caller-chosen key (15 to 550 characters) to replace the old one, which stops
    /// working at once.
    #[serde(default)]
    #[schema(min_length = 15, max_length = 550)]
    pub token: Option<String>,
    /// Credit changes, applied as one adjustment: all or none; a balance may not go below zero.
    #[serde(rename = "UsageCreditsToAddOrRemove", default)]
    pub usage_credits_to_add_or_remove: Vec<Credit>,
    /// Whether the key may only spend its credits.
    #[serde(rename = "usageLimited", default, deserialize_with = "flag")]
    #[schema(value_type = Option<bool>)]
    pub usage_limited: Option<bool>,
    /// `Active` or `Inactive`; a revoked key stays revoked.
    #[serde(default)]
    pub status: Option<MasumiStatus>,
    /// Networks the key may be used on.
    #[serde(rename = "networkLimit", default)]
    pub network_limit: Option<Vec<Network>>,
}

/// Body of the delete call.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteKey {
    /// The key's id.
    pub id: String,
}

fn flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        Flag(bool),
        Text(String),
    }
    match Option::<Given>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Given::Flag(flag)) => Ok(Some(flag)),
        Some(Given::Text(text)) => match text.as_str() {
            "true" => Ok(Some(true)),
            "false" => Ok(Some(false)),
            _ => Err(serde::de::Error::custom("usageLimited must be true or false")),
        },
    }
}

/// Query of the key list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Keys per page, 1 to 100; default 10.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// The id of the last key of the previous page (the page starts with it).
    #[serde(rename = "cursorToken")]
    #[param(max_length = 550)]
    pub cursor_token: Option<String>,
    /// The same, by its newer name.
    #[serde(rename = "cursorId")]
    #[param(max_length = 550)]
    pub cursor_id: Option<String>,
}

/// Query of the RPC provider key list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct RpcListQuery {
    /// The id of the last key of the previous page (the page starts with it).
    #[serde(rename = "cursorId")]
    #[param(min_length = 1, max_length = 250)]
    pub cursor_id: Option<String>,
    /// Keys per page, 1 to 100; default 100.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
}

fn masumi_status(status: i32) -> MasumiStatus {
    match v1::ApiKeyStatus::try_from(status) {
        Ok(v1::ApiKeyStatus::Inactive) => MasumiStatus::Inactive,
        Ok(v1::ApiKeyStatus::Revoked) => MasumiStatus::Revoked,
        Ok(v1::ApiKeyStatus::Active | v1::ApiKeyStatus::Unspecified) | Err(_) => MasumiStatus::Active,
    }
}

fn networks(networks: Vec<String>) -> Vec<String> {
    if networks.is_empty() { BOTH_NETWORKS.iter().map(|n| (*n).to_owned()).collect() } else { networks }
}

fn network_names(networks: &[Network]) -> Vec<String> {
    networks
        .iter()
        .map(|n| match n {
            Network::Preprod => "Preprod".to_owned(),
            Network::Mainnet => "Mainnet".to_owned(),
        })
        .collect()
}

fn changed(key: v1::ApiKey, token: Option<String>) -> ChangedKey {
    ChangedKey {
        token: token.unwrap_or_else(|| key.mask.clone()),
        permission: Permission::of(&key.scopes),
        usage_limited: key.usage_limited,
        status: masumi_status(key.status),
        deleted_at: rfc3339(key.delete_time.as_ref()),
        network_limit: networks(key.networks),
        id: key.id,
    }
}

/// The balances of a key, amounts as decimal strings.
fn remaining(credits: Vec<v1::CreditAmount>) -> Vec<Credit> {
    credits.into_iter().map(|credit| Credit { unit: credit.unit, amount: credit.amount.to_string() }).collect()
}

/// Masumi's amounts, parsed: decimal integers without sign (`signed` allows a leading `-`)
/// that fit in 64 bits. Anything else refuses the whole request before anything changes.
fn amounts(field: &str, credits: &[Credit], signed: bool) -> Result<Vec<(String, i64)>, Failure> {
    credits
        .iter()
        .enumerate()
        .map(|(index, credit)| {
            let digits =
                if signed { credit.amount.strip_prefix('-').unwrap_or(&credit.amount) } else { &credit.amount };
            let amount = if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                credit.amount.parse::<i64>().ok()
            } else {
                None
            };
            let kind = if signed { "an integer" } else { "a non-negative integer" };
            amount.map(|amount| (credit.unit.clone(), amount)).ok_or_else(|| {
                Failure::BadRequest(format!(
                    "{field}[{index}].amount must be {kind} as a decimal string within 64 bits, got {:?}",
                    credit.amount.chars().take(40).collect::<String>()
                ))
            })
        })
        .collect()
}

fn limit(given: Option<i64>, default: i32) -> Result<i32, Failure> {
    match given {
        None => Ok(default),
        Some(limit @ 1..=100) => i32::try_from(limit).map_err(|_| Failure::BadRequest("limit".to_owned())),
        Some(_) => Err(Failure::BadRequest("limit must be between 1 and 100".to_owned())),
    }
}

fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, Failure> {
    query.map(|Query(q)| q).map_err(|err| Failure::BadRequest(format!("invalid query: {}", err.body_text())))
}

fn success<T: Serialize>(result: Result<T, Failure>) -> Response {
    match result {
        Ok(data) => (StatusCode::OK, Json(Success { status: "success".to_owned(), data })).into_response(),
        Err(failure) => error::respond(failure),
    }
}

#[utoipa::path(get, path = "/api/v1/api-key-status", tag = "masumi", description = "The calling key.",
    security(("token" = [])),
    responses((status = 200, body = Success<KeyStatus>), (status = 401, body = MasumiError), (status = 413, body = MasumiError),
        (status = 503, body = MasumiError)))]
pub(crate) async fn status(
    State(upstream): State<Upstream>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    success(
        async {
            body::none(body)?;
            let message = v1::GetCallerApiKeyRequest {};
            let key = upstream.api_keys().get_caller_api_key(request(&headers, message)).await?.into_inner();
            let key = key.api_key.unwrap_or_default();
            Ok(KeyStatus {
                status: masumi_status(key.status),
                token: key.mask,
                permission: Permission::of(&key.scopes),
                network_limit: networks(key.networks),
                usage_limited: key.usage_limited,
                remaining_usage_credits: remaining(key.credits),
            })
        }
        .await,
    )
}

#[utoipa::path(get, path = "/api/v1/api-key", tag = "masumi", description = "Every key (admin); the page starts with the cursor's key.",
    security(("token" = [])), params(ListQuery),
    responses((status = 200, body = Success<KeyList>), (status = 400, body = MasumiError), (status = 401, body = MasumiError),
        (status = 413, body = MasumiError), (status = 503, body = MasumiError)))]
pub(crate) async fn list(
    State(upstream): State<Upstream>,
    headers: HeaderMap,
    params: Result<Query<ListQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    success(
        async {
            body::none(body)?;
            let ListQuery { limit: given, cursor_token, cursor_id } = query(params)?;
            let limit = usize::try_from(limit(given, 10)?).unwrap_or(10);
            let cursor = cursor_id.or(cursor_token).filter(|c| !c.is_empty());
            let mut client = upstream.api_keys();
            let mut keys = Vec::new();
            let mut page_token = String::new();
            // Masumi's cursors are inclusive ids: the first page starts at the cursor's key.
            while keys.len() < limit {
                let page = v1::ListApiKeysRequest {
                    page_size: i32::try_from(limit - keys.len()).unwrap_or(100).min(100),
                    start_at: if page_token.is_empty() { cursor.clone().unwrap_or_default() } else { String::new() },
                    page_token,
                    show_revoked: true,
                    ..Default::default()
                };
                let page = client.list_api_keys(request(&headers, page)).await?.into_inner();
                keys.extend(page.api_keys.into_iter().map(|key| ListedKey {
                    permission: Permission::of(&key.scopes),
                    usage_limited: key.usage_limited,
                    remaining_usage_credits: remaining(key.credits),
                    status: masumi_status(key.status),
                    token: key.mask,
                    network_limit: networks(key.networks),
                    id: key.id,
                }));
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            Ok(KeyList { api_keys: keys })
        }
        .await,
    )
}

#[utoipa::path(post, path = "/api/v1/api-key", tag = "masumi", description = "Creates a key (admin); `token` is the raw key, shown once.",
    security(("token" = [])), request_body = CreateKey,
    responses((status = 200, body = Success<ChangedKey>), (status = 400, body = MasumiError), (status = 401, body = MasumiError),
        (status = 409, body = MasumiError), (status = 413, body = MasumiError), (status = 429, body = MasumiError),
        (status = 503, body = MasumiError)))]
pub(crate) async fn create(
    State(upstream): State<Upstream>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    success(
        async {
            let CreateKey { usage_limited, usage_credits, permission, network_limit } = body::json(body)?;
            let credits = amounts("UsageCredits", &usage_credits, false)?
                .into_iter()
                .map(|(unit, amount)| v1::CreditAmount { unit, amount })
                .collect();
            let permission = permission.unwrap_or(Permission::Read);
            let network_limit = network_limit.unwrap_or_else(|| vec![Network::Preprod, Network::Mainnet]);
            let message = v1::CreateApiKeyRequest {
                api_key: Some(v1::ApiKey {
                    name: "Masumi API key".to_owned(),
                    scopes: permission.scopes(),
                    networks: network_names(&network_limit),
                    usage_limited: usage_limited.unwrap_or(true),
                    credits,
                    ..Default::default()
                }),
                ..Default::default()
            };
            let created = upstream.api_keys().create_api_key(request(&headers, message)).await?.into_inner();
            Ok(changed(created.api_key.unwrap_or_default(), Some(created.secret)))
        }
        .await,
    )
}

#[utoipa::path(patch, path = "/api/v1/api-key", tag = "masumi", description = "Changes a key (admin).",
    security(("token" = [])), request_body = UpdateKey,
    responses((status = 200, body = Success<ChangedKey>), (status = 400, body = MasumiError), (status = 401, body = MasumiError),
        (status = 404, body = MasumiError), (status = 409, body = MasumiError), (status = 413, body = MasumiError),
        (status = 503, body = MasumiError)))]
pub(crate) async fn update(
    State(upstream): State<Upstream>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    success(
        async {
            let UpdateKey { id, token, usage_credits_to_add_or_remove, usage_limited, status, network_limit } =
                body::json(body)?;
            // Everything is checked before anything changes.
            let deltas: Vec<v1::CreditDelta> =
                amounts("UsageCreditsToAddOrRemove", &usage_credits_to_add_or_remove, true)?
                    .into_iter()
                    // Adding or removing nothing is no change (and AdjustCredits refuses zero deltas).
                    .filter(|(_, delta)| *delta != 0)
                    .map(|(unit, delta)| v1::CreditDelta { unit, delta })
                    .collect();
            let mut patch = v1::ApiKey { id, ..Default::default() };
            let mut paths = Vec::new();
            match status {
                Some(MasumiStatus::Active) => patch.status = v1::ApiKeyStatus::Active.into(),
                Some(MasumiStatus::Inactive) => patch.status = v1::ApiKeyStatus::Inactive.into(),
                Some(MasumiStatus::Revoked) => {
                    return Err(Failure::BadRequest("status must be Active or Inactive; DELETE revokes".to_owned()));
                }
                None => {}
            }
            if status.is_some() {
                paths.push("status".to_owned());
            }
            if let Some(networks) = &network_limit {
                patch.networks = network_names(networks);
                paths.push("networks".to_owned());
            }
            if let Some(usage_limited) = usage_limited {
                patch.usage_limited = usage_limited;
                paths.push("usage_limited".to_owned());
            }
            // One call, one transaction: the credits, the token and the fields change
            // together or not at all (a revoked key is refused and never re-activated).
            let message = v1::UpdateApiKeyRequest {
                api_key: Some(patch),
                update_mask: Some(prost_types::FieldMask { paths }),
                request_id: String::new(),
                credit_deltas: deltas,
                credit_reason: "masumi: UsageCreditsToAddOrRemove".to_owned(),
                import_secret: token.unwrap_or_default(),
            };
            let key = upstream.api_keys().update_api_key(request(&headers, message)).await?.into_inner();
            // The response shows the mask only: an imported token is the caller's own.
            Ok(changed(key.api_key.unwrap_or_default(), None))
        }
        .await,
    )
}

#[utoipa::path(delete, path = "/api/v1/api-key", tag = "masumi", description = "Revokes a key (admin), for good.",
    security(("token" = [])), request_body = DeleteKey,
    responses((status = 200, body = Success<ChangedKey>), (status = 400, body = MasumiError), (status = 401, body = MasumiError),
        (status = 404, body = MasumiError), (status = 413, body = MasumiError), (status = 503, body = MasumiError)))]
pub(crate) async fn delete(
    State(upstream): State<Upstream>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    success(
        async {
            let DeleteKey { id } = body::json(body)?;
            let message = v1::DeleteApiKeyRequest { id, request_id: String::new() };
            let key = upstream.api_keys().delete_api_key(request(&headers, message)).await?.into_inner();
            Ok(changed(key.api_key.unwrap_or_default(), None))
        }
        .await,
    )
}

#[utoipa::path(get, path = "/api/v1/rpc-api-keys", tag = "masumi", description = "RPC provider keys in clear (admin); the page starts with the cursor's key.",
    security(("token" = [])), params(RpcListQuery),
    responses((status = 200, body = Success<RpcKeyList>), (status = 400, body = MasumiError), (status = 401, body = MasumiError),
        (status = 413, body = MasumiError), (status = 503, body = MasumiError)))]
pub(crate) async fn rpc_keys(
    State(upstream): State<Upstream>,
    headers: HeaderMap,
    params: Result<Query<RpcListQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    success(
        async {
            body::none(body)?;
            let RpcListQuery { cursor_id, limit: given } = query(params)?;
            let limit = usize::try_from(limit(given, 100)?).unwrap_or(100);
            let cursor = cursor_id.filter(|c| !c.is_empty());
            let mut client = upstream.rpc_provider_keys();
            let mut keys = Vec::new();
            let mut page_token = String::new();
            let mut started = cursor.is_none();
            while keys.len() < limit {
                let page =
                    v1::ListRpcProviderKeysRequest { page_size: 100, page_token, reveal: true, ..Default::default() };
                let page = client.list_rpc_provider_keys(request(&headers, page)).await?.into_inner();
                for key in page.rpc_provider_keys {
                    started = started || cursor.as_deref() == Some(key.id.as_str());
                    if started && keys.len() < limit {
                        keys.push(RpcProviderKey {
                            created_at: rfc3339(key.create_time.as_ref()).unwrap_or_default(),
                            updated_at: rfc3339(key.update_time.as_ref()).unwrap_or_default(),
                            network: key.network,
                            id: key.id,
                            rpc_provider_api_key: key.secret,
                            rpc_provider: key.provider,
                        });
                    }
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            Ok(RpcKeyList { rpc_provider_keys: keys })
        }
        .await,
    )
}
