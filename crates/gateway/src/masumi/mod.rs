//! The Masumi payment service's API keys (seed `001`), both of Masumi's contract eras at
//! the same paths: header `token: <key>`, answers in `{"status": "success", "data": …}`.
//!
//! - **2025-12** (the seed): `permission`, `networkLimit`, `limit`/`cursorToken` paging,
//!   every key listed, deleted ones included.
//! - **2026-07**: `canRead`/`canPay`/`canAdmin` (`permission` deprecated but accepted),
//!   `NetworkLimit`, `ChainIdLimit`, wallet scopes, `take`/`cursorId` paging, deleted keys
//!   left out of the list, tokens listed as `*****` and their last four characters.
//!
//! Neither document forbids additional properties, so requests may use either era's field
//! names (unknown fields are ignored, as Masumi's zod schemas do) and every answer carries
//! the union of both eras' fields. Only the list differs: the request's paging parameters
//! tell its era (`take` or `cursorId` → 2026-07).
//!
//! Statuses: Masumi's `PATCH {"status": "Revoked"}` sets no `deletedAt` and is undone by
//! `Active`, so it is keyward's INACTIVE; Masumi's `DELETE` (which sets `deletedAt`) is
//! keyward's revoke. Both are `Revoked` in answers.
//!
//! Rights are scopes: read → `read`, pay → `pay`, admin → `admin` (Read, ReadAndPay and
//! Admin in the old words). Outside creation and a 2026-07 list, `token` is the key's
//! *handle*: its mask and its number (`kw_live_*****x7Qa~42`), unique per key, ASCII and no
//! secret; sent back as `cursorToken` it pages from that key, inclusive, as Masumi pages
//! from a raw token.
//!
//! Networks: keyward's empty set means "any", so a Masumi key with `networkLimit: []` (no
//! network at all) holds the one reserved label [`NO_NETWORK`], which no Cardano request
//! names, and fails verification for every named network. Chain ids and wallet scopes
//! are not keyward's business: they are kept faithfully in the key's metadata
//! (`masumi.*` entries) and returned as given.
//!
//! Credits are the key's balances per unit (`""` is the default unit, lovelace), amounts
//! as decimal strings: `UsageCredits` are a new key's initial balances,
//! `RemainingUsageCredits` its non-zero balances now, and `UsageCreditsToAddOrRemove` one
//! atomic change in the same transaction as the other changes of a PATCH.

mod convert;
mod envelope;
pub mod error;
mod shapes;

use std::collections::{BTreeMap, HashMap};

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
use serde::{Deserialize, Deserializer, Serialize, de::DeserializeOwned};
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use utoipa::{IntoParams, ToSchema};

use self::convert::*;
use self::envelope::{json, query, success};
use self::error::MasumiError;
pub use self::shapes::*;
use crate::{
    Failure, Upstream,
    pages::{self, MAX_PAGE_SIZE, PageRequest},
    time::rfc3339,
    upstream::request,
};

/// The network label of a key that may be used on no network (`networkLimit: []`).
/// keyward's empty network set means "any"; this label is reserved for "none": no
/// Cardano network has this name, so every request that names a network is refused.
pub const NO_NETWORK: &str = "keyward.reserved/no-network";

/// The scopes the Masumi rights map to; other keyward scopes on a key are left alone.
const MASUMI_SCOPES: [&str; 3] = ["read", "pay", "admin"];
/// Metadata entries of what keyward keeps for Masumi without interpreting it.
const META_CHAIN_IDS: &str = "masumi.ChainIdLimit";
const META_WALLET_IDS: &str = "masumi.WalletScopeHotWalletIds";
const META_WALLET_ENABLED: &str = "masumi.walletScopeEnabled";
/// Metadata values are bounded (1024 characters): longer lists are kept in numbered chunks.
const META_CHUNK_CHARS: usize = 1000;

/// The document's limits.
const MAX_ID_CHARS: usize = 150;
const MAX_UNIT_CHARS: usize = 150;
const MAX_NETWORKS: usize = 3;
const MAX_DELTAS: usize = 25;
const MAX_CHAIN_IDS: usize = 50;
const MAX_WALLET_IDS: usize = 100;
const MAX_WALLET_ID_CHARS: usize = 150;
const MAX_CURSOR_CHARS: usize = 550;
const MAX_RPC_CURSOR_CHARS: usize = 250;
const MIN_TOKEN_CHARS: usize = 15;
const MAX_TOKEN_CHARS: usize = 550;

pub(crate) fn routes(upstream: Upstream) -> Router {
    Router::new()
        .route("/api/v1/health", get(health).fallback(method_not_allowed))
        .route("/api/v1/api-key-status", get(status).fallback(method_not_allowed))
        .route("/api/v1/api-key", get(list).post(create).patch(update).delete(delete).fallback(method_not_allowed))
        .route("/api/v1/rpc-api-keys", get(rpc_keys).fallback(method_not_allowed))
        .with_state(upstream)
}

async fn method_not_allowed() -> Response {
    error::respond(Failure::MethodNotAllowed)
}

#[utoipa::path(get, path = "/api/v1/health", tag = "masumi", description = "`ok` while the database answers (no authentication).",
    responses((status = 200, body = Success<Health>), (status = 503, body = MasumiError)))]
pub(crate) async fn health(State(upstream): State<Upstream>, headers: HeaderMap) -> Response {
    success(
        &headers,
        async {
            let check = HealthCheckRequest { service: String::new() };
            let answer = upstream.health().check(request(&headers, check)).await?.into_inner();
            if answer.status == i32::from(ServingStatus::Serving) {
                Ok(Health { status: "ok".to_owned() })
            } else {
                Err(Failure::Status(tonic::Status::unavailable("the database does not answer")))
            }
        }
        .await,
    )
}

#[utoipa::path(get, path = "/api/v1/api-key-status", tag = "masumi", description = "The calling key (any right).",
    security(("token" = [])),
    responses((status = 200, body = Success<MasumiKey>), (status = 401, body = MasumiError), (status = 413, body = MasumiError),
        (status = 503, body = MasumiError)))]
pub(crate) async fn status(
    State(upstream): State<Upstream>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    success(
        &headers,
        async {
            crate::body::none(body)?;
            let message = v1::GetCallerApiKeyRequest {};
            let key = upstream.api_keys().get_caller_api_key(request(&headers, message)).await?.into_inner();
            Ok(masumi_key(key.api_key.unwrap_or_default(), Shown::Handle))
        }
        .await,
    )
}

#[utoipa::path(get, path = "/api/v1/api-key", tag = "masumi",
    description = "Every key (admin); the page starts with the cursor's key. `limit`/`cursorToken` (2025-12) list deleted keys too, `take`/`cursorId` (2026-07) leave them out and redact tokens as `*****` and their last four characters.",
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
        &headers,
        async {
            crate::body::none(body)?;
            let ListQuery { limit, cursor_token, take, cursor_id } = query(params)?;
            check_cursor("cursorToken", cursor_token.as_ref(), MAX_CURSOR_CHARS)?;
            check_cursor("cursorId", cursor_id.as_ref(), MAX_CURSOR_CHARS)?;
            // The era of the request: 2026-07 pages with take/cursorId and hides deleted keys.
            let current_era = take.is_some() || cursor_id.is_some();
            let size = match take {
                Some(_) => page_size("take", take, 10)?,
                None => page_size("limit", limit, 10)?,
            };
            let cursor = cursor_id.or(cursor_token).filter(|c| !c.is_empty());
            let start_at = match cursor {
                None => String::new(),
                Some(cursor) => match cursor_key(&cursor) {
                    Some(start_at) => start_at,
                    // Names no key: an empty page, as Masumi answers a cursor it does not hold.
                    None => return Ok(KeyList { api_keys: Vec::new() }),
                },
            };
            let headers = &headers;
            let fetch = |next: PageRequest| {
                let mut client = upstream.api_keys();
                // The cursor places the first page; the tokens place the rest.
                let start_at = if next.page_token.is_empty() { start_at.clone() } else { String::new() };
                let page = v1::ListApiKeysRequest {
                    page_size: next.page_size(),
                    start_at,
                    page_token: next.page_token,
                    show_revoked: !current_era,
                    ..Default::default()
                };
                async move { Ok(client.list_api_keys(request(headers, page)).await?.into_inner().into()) }
            };
            let keys = pages::collect(size, fetch, |_| true).await?;
            let shown = || if current_era { Shown::Redacted } else { Shown::Handle };
            Ok(KeyList { api_keys: keys.into_iter().map(|key| masumi_key(key, shown())).collect() })
        }
        .await,
    )
}

#[utoipa::path(post, path = "/api/v1/api-key", tag = "masumi", description = "Creates a key (admin); `token` is the raw key, shown once.",
    security(("token" = [])), request_body = CreateKey,
    responses((status = 200, body = Success<MasumiKey>), (status = 400, body = MasumiError), (status = 401, body = MasumiError),
        (status = 409, body = MasumiError), (status = 413, body = MasumiError), (status = 429, body = MasumiError),
        (status = 503, body = MasumiError)))]
pub(crate) async fn create(
    State(upstream): State<Upstream>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    success(
        &headers,
        async {
            let CreateKey {
                usage_limited,
                usage_credits,
                permission,
                can_read,
                can_pay,
                can_admin,
                network_limit,
                network_limit_2026,
                chain_id_limit,
                wallet_scope_enabled,
                wallet_scope_hot_wallet_ids,
            } = json(body)?;
            check_networks("networkLimit", network_limit.as_ref())?;
            check_networks("NetworkLimit", network_limit_2026.as_ref())?;
            check_chain_ids(chain_id_limit.as_ref())?;
            check_wallet_ids(wallet_scope_hot_wallet_ids.as_ref())?;
            let credits = amounts("UsageCredits", &usage_credits, false)?
                .into_iter()
                .map(|(unit, amount)| v1::CreditAmount { unit, amount })
                .collect();
            // The seed's own example makes an admin key with `usageLimited: "true"`, which
            // 2025-12 answers unlimited; a request in 2026-07's words is refused for it.
            let current_era = [can_read, can_pay, can_admin, wallet_scope_enabled].iter().any(Option::is_some)
                || network_limit_2026.is_some()
                || chain_id_limit.is_some()
                || wallet_scope_hot_wallet_ids.is_some();
            let rights = Rights::asked(Rights::default(), permission, [can_read, can_pay, can_admin])
                .unwrap_or(Rights::from_permission(Permission::Read));
            check_admin_rules(rights, usage_limited.filter(|_| current_era), wallet_scope_enabled)?;
            // As Masumi does: an admin key may use both networks and is not usage limited.
            let (networks, usage_limited) = if rights.admin {
                (networks_in(&[Network::Mainnet, Network::Preprod]), false)
            } else {
                let networks = network_limit_2026.or(network_limit).unwrap_or(vec![Network::Mainnet, Network::Preprod]);
                (networks_in(&networks), usage_limited.unwrap_or(true))
            };
            let mut metadata = HashMap::new();
            keep_unread(&mut metadata, chain_id_limit, wallet_scope_enabled, wallet_scope_hot_wallet_ids);
            let message = v1::CreateApiKeyRequest {
                api_key: Some(v1::ApiKey {
                    name: "Masumi API key".to_owned(),
                    scopes: rights.scopes(),
                    networks,
                    usage_limited,
                    credits,
                    metadata,
                    ..Default::default()
                }),
                ..Default::default()
            };
            let created = upstream.api_keys().create_api_key(request(&headers, message)).await?.into_inner();
            Ok(masumi_key(created.api_key.unwrap_or_default(), Shown::Secret(created.secret)))
        }
        .await,
    )
}

#[utoipa::path(patch, path = "/api/v1/api-key", tag = "masumi",
    description = "Changes a key (admin), all or nothing. `status: Revoked` disables it (still listed, reversible); `Active` enables it, or restores a deleted key within the server's retention window.",
    security(("token" = [])), request_body = UpdateKey,
    responses((status = 200, body = Success<MasumiKey>), (status = 400, body = MasumiError), (status = 401, body = MasumiError),
        (status = 404, body = MasumiError), (status = 409, body = MasumiError), (status = 413, body = MasumiError),
        (status = 503, body = MasumiError)))]
pub(crate) async fn update(
    State(upstream): State<Upstream>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    success(
        &headers,
        async {
            let UpdateKey {
                id,
                token,
                usage_credits_to_add_or_remove,
                usage_limited,
                status,
                network_limit,
                network_limit_2026,
                chain_id_limit,
                wallet_scope_enabled,
                wallet_scope_hot_wallet_ids,
                permission,
                can_read,
                can_pay,
                can_admin,
            } = json(body)?;
            // Everything is checked before anything changes.
            let id = key_id(id)?;
            if let Some(token) = &token {
                let len = token.chars().count();
                if !(MIN_TOKEN_CHARS..=MAX_TOKEN_CHARS).contains(&len) {
                    return Err(Failure::BadRequest(format!(
                        "token must be {MIN_TOKEN_CHARS} to {MAX_TOKEN_CHARS} characters, got {len}"
                    )));
                }
            }
            check_networks("networkLimit", network_limit.as_ref())?;
            check_networks("NetworkLimit", network_limit_2026.as_ref())?;
            check_chain_ids(chain_id_limit.as_ref())?;
            check_wallet_ids(wallet_scope_hot_wallet_ids.as_ref())?;
            let credit_deltas = deltas(&usage_credits_to_add_or_remove)?;

            // Read first: the rights and the Masumi-only lists are merged into what the key
            // holds, and the status asked for is a change only against the current one.
            let mut client = upstream.api_keys();
            let get = v1::GetApiKeyRequest { id: id.clone() };
            let current = client.get_api_key(request(&headers, get)).await?.into_inner().api_key.unwrap_or_default();
            let asked = Rights::asked(Rights::of(&current.scopes), permission, [can_read, can_pay, can_admin]);
            let wallet_scoped = wallet_scope_enabled
                .unwrap_or_else(|| current.metadata.get(META_WALLET_ENABLED).is_some_and(|v| v == "true"));
            // In both eras: Masumi ignores the flag on an admin key, keyward would meter it.
            check_admin_rules(asked.unwrap_or(Rights::of(&current.scopes)), usage_limited, Some(wallet_scoped))?;

            let mut patch = v1::ApiKey { id: id.clone(), ..Default::default() };
            let mut paths = Vec::new();
            let active = masumi_status(current.status) == MasumiStatus::Active;
            let status = match status {
                Some(MasumiStatus::Active) if !active => Some(v1::ApiKeyStatus::Active),
                Some(MasumiStatus::Revoked) if active => Some(v1::ApiKeyStatus::Inactive),
                Some(MasumiStatus::Active | MasumiStatus::Revoked) | None => None,
            };
            if let Some(status) = status {
                patch.status = status.into();
                paths.push("status".to_owned());
            }
            let mut networks = network_limit_2026.or(network_limit).map(|networks| networks_in(&networks));
            let mut usage_limited = usage_limited;
            if let Some(rights) = asked {
                // The Masumi rights are replaced; other keyward scopes of the key stay.
                let mut scopes: Vec<String> =
                    current.scopes.iter().filter(|s| !MASUMI_SCOPES.contains(&s.as_str())).cloned().collect();
                scopes.extend(rights.scopes());
                patch.scopes = scopes;
                paths.push("scopes".to_owned());
                if rights.admin {
                    networks = Some(networks_in(&[Network::Mainnet, Network::Preprod]));
                    usage_limited = Some(false);
                }
            }
            if let Some(networks) = networks {
                patch.networks = networks;
                paths.push("networks".to_owned());
            }
            if let Some(usage_limited) = usage_limited {
                patch.usage_limited = usage_limited;
                paths.push("usage_limited".to_owned());
            }
            let mut metadata = current.metadata.clone();
            if keep_unread(&mut metadata, chain_id_limit, wallet_scope_enabled, wallet_scope_hot_wallet_ids) {
                patch.metadata = metadata;
                paths.push("metadata".to_owned());
            }
            if paths.is_empty() && credit_deltas.is_empty() && token.is_none() {
                return Ok(masumi_key(current, Shown::Handle));
            }
            // One call, one transaction: the status, the credits, the token and the fields
            // change together or not at all.
            let message = v1::UpdateApiKeyRequest {
                api_key: Some(patch),
                update_mask: Some(prost_types::FieldMask { paths }),
                request_id: String::new(),
                credit_deltas,
                credit_reason: "masumi: UsageCreditsToAddOrRemove".to_owned(),
                import_secret: token.unwrap_or_default(),
            };
            let key = client.update_api_key(request(&headers, message)).await?.into_inner().api_key.unwrap_or_default();
            // The answer shows the handle only: an imported token is the caller's own.
            Ok(masumi_key(key, Shown::Handle))
        }
        .await,
    )
}

/// Masumi's (2026-07) rules for admin keys, request shapes of this surface: an admin key
/// is never usage limited and has no wallet scope; asking for either is 400, as in Masumi.
fn check_admin_rules(rights: Rights, usage_limited: Option<bool>, wallet_scoped: Option<bool>) -> Result<(), Failure> {
    if !rights.admin {
        return Ok(());
    }
    if usage_limited == Some(true) {
        return Err(Failure::BadRequest("Admin API keys cannot have usage limits".to_owned()));
    }
    if wallet_scoped == Some(true) {
        return Err(Failure::BadRequest("Admin API keys cannot have wallet scope enabled".to_owned()));
    }
    Ok(())
}

#[utoipa::path(delete, path = "/api/v1/api-key", tag = "masumi", description = "Revokes a key (admin); a revoked key is answered as it is.",
    security(("token" = [])), request_body = DeleteKey,
    responses((status = 200, body = Success<MasumiKey>), (status = 400, body = MasumiError), (status = 401, body = MasumiError),
        (status = 404, body = MasumiError), (status = 413, body = MasumiError), (status = 503, body = MasumiError)))]
pub(crate) async fn delete(
    State(upstream): State<Upstream>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    success(
        &headers,
        async {
            let DeleteKey { id } = json(body)?;
            let id = key_id(id)?;
            let mut client = upstream.api_keys();
            let message = v1::DeleteApiKeyRequest { id: id.clone(), request_id: String::new() };
            match client.delete_api_key(request(&headers, message)).await {
                Ok(deleted) => Ok(masumi_key(deleted.into_inner().api_key.unwrap_or_default(), Shown::Handle)),
                // Already revoked: Masumi sets it revoked again and answers 200.
                Err(status) if status.code() == Code::FailedPrecondition => {
                    let key = client.get_api_key(request(&headers, v1::GetApiKeyRequest { id })).await?.into_inner();
                    let key = key.api_key.unwrap_or_default();
                    if is_revoked(&key) { Ok(masumi_key(key, Shown::Handle)) } else { Err(status.into()) }
                }
                Err(status) => Err(status.into()),
            }
        }
        .await,
    )
}

#[utoipa::path(get, path = "/api/v1/rpc-api-keys", tag = "masumi",
    description = "RPC provider keys in clear (admin); the page starts with the cursor's key. The list is both at the top level (2025-12) and in `data` (2026-07).",
    security(("token" = [])), params(RpcListQuery),
    responses((status = 200, body = RpcKeyAnswer), (status = 400, body = MasumiError), (status = 401, body = MasumiError),
        (status = 413, body = MasumiError), (status = 503, body = MasumiError)))]
pub(crate) async fn rpc_keys(
    State(upstream): State<Upstream>,
    headers: HeaderMap,
    params: Result<Query<RpcListQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answer = async {
        crate::body::none(body)?;
        let RpcListQuery { cursor_id, limit } = query(params)?;
        check_cursor("cursorId", cursor_id.as_ref(), MAX_RPC_CURSOR_CHARS)?;
        let limit = page_size("limit", limit, 100)?;
        let cursor = cursor_id.filter(|c| !c.is_empty());
        // keyward's tokens cannot name a key to start at: the keys before the cursor's are skipped.
        let mut started = cursor.is_none();
        let from_cursor = |key: &v1::RpcProviderKey| {
            started = started || cursor.as_deref() == Some(key.id.as_str());
            started
        };
        let headers = &headers;
        let fetch = |next: PageRequest| {
            let mut client = upstream.rpc_provider_keys();
            let page = v1::ListRpcProviderKeysRequest {
                page_size: MAX_PAGE_SIZE,
                page_token: next.page_token,
                reveal: true,
                ..Default::default()
            };
            async move { Ok(client.list_rpc_provider_keys(request(headers, page)).await?.into_inner().into()) }
        };
        let keys = pages::collect(limit, fetch, from_cursor).await?;
        Ok::<_, Failure>(keys.into_iter().map(rpc_provider_key).collect::<Vec<_>>())
    }
    .await;
    match answer {
        Ok(keys) => {
            let answer = RpcKeyAnswer {
                status: "success".to_owned(),
                data: RpcKeyList { rpc_provider_keys: keys.clone() },
                rpc_provider_keys: keys,
            };
            (StatusCode::OK, Json(answer)).into_response()
        }
        Err(failure) => error::respond_to(&headers, failure),
    }
}
