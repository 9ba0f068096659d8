//! The Masumi payment service's API keys (seed `001`), both of Masumi's contract eras at
//! the same paths: header `token: <key>`, answers in `{"status": "success", "data": …}`.
//!
//! - **2025-12** (the seed): `permission`, `networkLimit`, `limit`/`cursorToken` paging,
//!   revoked keys listed.
//! - **2026-07**: `canRead`/`canPay`/`canAdmin` (`permission` deprecated but accepted),
//!   `NetworkLimit`, `ChainIdLimit`, wallet scopes, `take`/`cursorId` paging, revoked keys
//!   left out of the list.
//!
//! Neither document forbids additional properties, so requests may use either era's field
//! names (unknown fields are ignored, as Masumi's zod schemas do) and every answer carries
//! the union of both eras' fields. Only the list differs: the request's paging parameters
//! tell its era (`take` or `cursorId` → 2026-07, which leaves revoked keys out).
//!
//! Rights are scopes: read → `read`, pay → `pay`, admin → `admin` (Read, ReadAndPay and
//! Admin in the old words). Outside creation, `token` is the key's *handle*: its mask and
//! its number (`kw_live_…x7Qa~42`), unique per key and no secret; sent back as
//! `cursorToken` it pages from that key, inclusive, as Masumi pages from a raw token.
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

pub mod error;

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
use utoipa::{IntoParams, ToSchema};

use self::error::MasumiError;
use crate::{Failure, Upstream, time::rfc3339, upstream::request};

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
        .route("/api/v1/api-key-status", get(status).fallback(method_not_allowed))
        .route("/api/v1/api-key", get(list).post(create).patch(update).delete(delete).fallback(method_not_allowed))
        .route("/api/v1/rpc-api-keys", get(rpc_keys).fallback(method_not_allowed))
        .with_state(upstream)
}

async fn method_not_allowed() -> Response {
    error::respond(Failure::MethodNotAllowed)
}

/// A permission of a Masumi key (deprecated in 2026-07 in favour of the `can…` flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Permission {
    /// Read only.
    Read,
    /// Read and pay.
    ReadAndPay,
    /// Everything.
    Admin,
}

/// What a key may do, as the 2026-07 flags say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Rights {
    read: bool,
    pay: bool,
    admin: bool,
}

impl Rights {
    fn of(scopes: &[String]) -> Self {
        let has = |scope: &str| scopes.iter().any(|s| s == scope);
        Self { read: has("read"), pay: has("pay"), admin: has("admin") }
    }

    fn from_permission(permission: Permission) -> Self {
        match permission {
            Permission::Read => Self { read: true, pay: false, admin: false },
            Permission::ReadAndPay => Self { read: true, pay: true, admin: false },
            Permission::Admin => Self { read: true, pay: true, admin: true },
        }
    }

    /// The rights a request asks for, over `base`: the flags where given, else the
    /// permission; `None` when it asks for neither.
    fn asked(base: Self, permission: Option<Permission>, flags: [Option<bool>; 3]) -> Option<Self> {
        let [read, pay, admin] = flags;
        if flags.iter().any(Option::is_some) {
            Some(Self {
                read: read.unwrap_or(base.read),
                pay: pay.unwrap_or(base.pay),
                admin: admin.unwrap_or(base.admin),
            })
        } else {
            permission.map(Self::from_permission)
        }
    }

    /// The keyward scopes: `admin` alone covers everything.
    fn scopes(self) -> Vec<String> {
        if self.admin {
            return vec!["admin".to_owned()];
        }
        let mut scopes = Vec::new();
        if self.read {
            scopes.push("read".to_owned());
        }
        if self.pay {
            scopes.push("pay".to_owned());
        }
        scopes
    }

    fn permission(self) -> Permission {
        if self.admin {
            Permission::Admin
        } else if self.pay {
            Permission::ReadAndPay
        } else {
            Permission::Read
        }
    }
}

/// A key's status, Masumi's way: a key that does not verify (keyward's disabled or
/// revoked) is `Revoked`; nothing outside the contract's enum is ever answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum MasumiStatus {
    /// The key verifies.
    Active,
    /// The key is revoked (soft-deleted; `Active` restores it within the retention window).
    Revoked,
}

/// A Cardano network a key may be used on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub enum Network {
    /// Cardano's pre-production testnet.
    Preprod,
    /// Cardano's main network.
    Mainnet,
}

impl Network {
    fn name(self) -> &'static str {
        match self {
            Self::Preprod => "Preprod",
            Self::Mainnet => "Mainnet",
        }
    }
}

/// An amount of one unit, as a decimal string.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Credit {
    /// The unit (at most 150 characters); empty is the default unit (lovelace).
    #[schema(max_length = 150)]
    pub unit: String,
    /// The amount, a decimal integer string (a change may be negative).
    #[schema(example = "10000000")]
    pub amount: String,
}

/// A hot wallet a key is scoped to.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WalletScope {
    /// The hot wallet's id.
    #[serde(rename = "hotWalletId")]
    pub hot_wallet_id: String,
}

/// A key, with the fields of both eras, each in its own spelling.
#[derive(Debug, Serialize, ToSchema)]
pub struct MasumiKey {
    /// The key's id.
    pub id: String,
    /// The raw key on creation; otherwise the key's handle (mask and number), which pages
    /// as `cursorToken`.
    pub token: String,
    /// The key's permission (deprecated in 2026-07, computed from the flags).
    pub permission: Permission,
    /// Whether the key may read.
    #[serde(rename = "canRead")]
    pub can_read: bool,
    /// Whether the key may pay.
    #[serde(rename = "canPay")]
    pub can_pay: bool,
    /// Whether the key is an admin key.
    #[serde(rename = "canAdmin")]
    pub can_admin: bool,
    /// Whether the key may only spend its credits.
    #[serde(rename = "usageLimited")]
    pub usage_limited: bool,
    /// Networks the key may be used on (2025-12 spelling).
    #[serde(rename = "networkLimit")]
    pub network_limit: Vec<Network>,
    /// Networks the key may be used on (2026-07 spelling).
    #[serde(rename = "NetworkLimit")]
    pub network_limit_2026: Vec<Network>,
    /// CAIP-2 chain ids the key may be used on, as given.
    #[serde(rename = "ChainIdLimit")]
    pub chain_id_limit: Vec<String>,
    /// Non-zero balances per unit.
    #[serde(rename = "RemainingUsageCredits")]
    pub remaining_usage_credits: Vec<Credit>,
    /// `Active` or `Revoked`.
    pub status: MasumiStatus,
    /// Whether wallet scope filtering is on, as given.
    #[serde(rename = "walletScopeEnabled")]
    pub wallet_scope_enabled: bool,
    /// The hot wallets the key is scoped to, as given.
    #[serde(rename = "WalletScopes")]
    pub wallet_scopes: Vec<WalletScope>,
    /// When the key was revoked (revoked keys only).
    #[serde(rename = "deletedAt", skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
}

/// A page of keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyList {
    /// The keys.
    #[serde(rename = "ApiKeys")]
    pub api_keys: Vec<MasumiKey>,
}

/// An RPC provider key, its secret in clear.
#[derive(Debug, Clone, Serialize, ToSchema)]
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
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RpcKeyList {
    /// The keys.
    #[serde(rename = "RpcProviderKeys")]
    pub rpc_provider_keys: Vec<RpcProviderKey>,
}

/// The answer of `/rpc-api-keys`: the 2025-12 contract has the list at the top level, the
/// 2026-07 one in the envelope's `data`; both are given.
#[derive(Debug, Serialize, ToSchema)]
pub struct RpcKeyAnswer {
    /// Always `success`.
    pub status: String,
    /// The keys (2026-07).
    pub data: RpcKeyList,
    /// The keys (2025-12).
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

/// Body of the create call; fields of either era, unknown fields ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateKey {
    /// `true` (any case) or not; a boolean is taken too. Default true; false for admin keys.
    #[serde(rename = "usageLimited", default, deserialize_with = "lenient_flag")]
    #[schema(value_type = Option<String>)]
    pub usage_limited: Option<bool>,
    /// Initial credits.
    #[serde(rename = "UsageCredits", default)]
    pub usage_credits: Vec<Credit>,
    /// Default Read (deprecated in 2026-07).
    #[serde(default)]
    pub permission: Option<Permission>,
    /// Read right (2026-07).
    #[serde(rename = "canRead", default)]
    pub can_read: Option<bool>,
    /// Pay right (2026-07).
    #[serde(rename = "canPay", default)]
    pub can_pay: Option<bool>,
    /// Admin right (2026-07).
    #[serde(rename = "canAdmin", default)]
    pub can_admin: Option<bool>,
    /// Networks, default both; `[]` is none. Admin keys get both.
    #[serde(rename = "networkLimit", default)]
    #[schema(max_items = 3)]
    pub network_limit: Option<Vec<Network>>,
    /// The same, 2026-07 spelling.
    #[serde(rename = "NetworkLimit", default)]
    #[schema(max_items = 3)]
    pub network_limit_2026: Option<Vec<Network>>,
    /// CAIP-2 chain ids, kept as given.
    #[serde(rename = "ChainIdLimit", default)]
    #[schema(max_items = 50)]
    pub chain_id_limit: Option<Vec<String>>,
    /// `true` (any case) or not, kept as given.
    #[serde(rename = "walletScopeEnabled", default, deserialize_with = "lenient_flag")]
    #[schema(value_type = Option<String>)]
    pub wallet_scope_enabled: Option<bool>,
    /// Hot wallet ids, kept as given.
    #[serde(rename = "WalletScopeHotWalletIds", default)]
    #[schema(max_items = 100)]
    pub wallet_scope_hot_wallet_ids: Option<Vec<String>>,
}

/// Body of the update call; fields of either era, unknown fields ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateKey {
    /// The key's id.
    #[schema(max_length = 150)]
    pub id: String,
    /// A caller-chosen key (15 to 550 characters) to replace the old one, which stops
    /// working at once.
    #[serde(default)]
    #[schema(min_length = 15, max_length = 550)]
    pub token: Option<String>,
    /// Credit changes, applied with the rest in one transaction: all or none; a balance
    /// may not go below zero.
    #[serde(rename = "UsageCreditsToAddOrRemove", default)]
    #[schema(max_items = 25)]
    pub usage_credits_to_add_or_remove: Vec<Credit>,
    /// Whether the key may only spend its credits (a boolean, or `true`/`false` in any case).
    #[serde(rename = "usageLimited", default, deserialize_with = "strict_flag")]
    #[schema(value_type = Option<bool>)]
    pub usage_limited: Option<bool>,
    /// `Revoked` revokes; `Active` restores a revoked key within the retention window.
    #[serde(default)]
    pub status: Option<MasumiStatus>,
    /// Networks; `[]` is none.
    #[serde(rename = "networkLimit", default)]
    #[schema(max_items = 3)]
    pub network_limit: Option<Vec<Network>>,
    /// The same, 2026-07 spelling.
    #[serde(rename = "NetworkLimit", default)]
    #[schema(max_items = 3)]
    pub network_limit_2026: Option<Vec<Network>>,
    /// CAIP-2 chain ids, kept as given.
    #[serde(rename = "ChainIdLimit", default)]
    #[schema(max_items = 50)]
    pub chain_id_limit: Option<Vec<String>>,
    /// Kept as given.
    #[serde(rename = "walletScopeEnabled", default, deserialize_with = "strict_flag")]
    #[schema(value_type = Option<bool>)]
    pub wallet_scope_enabled: Option<bool>,
    /// Hot wallet ids, kept as given (replacing the old ones).
    #[serde(rename = "WalletScopeHotWalletIds", default)]
    #[schema(max_items = 100)]
    pub wallet_scope_hot_wallet_ids: Option<Vec<String>>,
    /// The key's permission (deprecated in 2026-07).
    #[serde(default)]
    pub permission: Option<Permission>,
    /// Read right (2026-07).
    #[serde(rename = "canRead", default)]
    pub can_read: Option<bool>,
    /// Pay right (2026-07).
    #[serde(rename = "canPay", default)]
    pub can_pay: Option<bool>,
    /// Admin right (2026-07).
    #[serde(rename = "canAdmin", default)]
    pub can_admin: Option<bool>,
}

/// Body of the delete call.
#[derive(Debug, Deserialize, ToSchema)]
pub struct DeleteKey {
    /// The key's id.
    #[schema(max_length = 150)]
    pub id: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Given {
    Flag(bool),
    Text(String),
}

/// Masumi's create flags: a string that is `true` in any case is true, any other string false.
fn lenient_flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    Ok(Option::<Given>::deserialize(deserializer)?.map(|given| match given {
        Given::Flag(flag) => flag,
        Given::Text(text) => text.eq_ignore_ascii_case("true"),
    }))
}

/// A boolean, or `true`/`false` in any case.
fn strict_flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    match Option::<Given>::deserialize(deserializer)? {
        None => Ok(None),
        Some(Given::Flag(flag)) => Ok(Some(flag)),
        Some(Given::Text(text)) if text.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Some(Given::Text(text)) if text.eq_ignore_ascii_case("false") => Ok(Some(false)),
        Some(Given::Text(_)) => Err(serde::de::Error::custom("must be true or false")),
    }
}

/// Query of the key list: `limit`/`cursorToken` (2025-12) or `take`/`cursorId` (2026-07).
#[derive(Debug, Deserialize, IntoParams)]
pub struct ListQuery {
    /// Keys per page, 1 to 100; default 10.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<f64>,
    /// The `token` (handle) or id of the first key of the page.
    #[serde(rename = "cursorToken")]
    #[param(max_length = 550)]
    pub cursor_token: Option<String>,
    /// Keys per page, 1 to 100; default 10 (2026-07: revoked keys left out).
    #[param(minimum = 1, maximum = 100)]
    pub take: Option<f64>,
    /// The id of the first key of the page (2026-07: revoked keys left out).
    #[serde(rename = "cursorId")]
    #[param(max_length = 550)]
    pub cursor_id: Option<String>,
}

/// Query of the RPC provider key list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct RpcListQuery {
    /// The id of the first key of the page.
    #[serde(rename = "cursorId")]
    #[param(min_length = 1, max_length = 250)]
    pub cursor_id: Option<String>,
    /// Keys per page, 1 to 100; default 100.
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<f64>,
}

fn masumi_status(status: i32) -> MasumiStatus {
    match v1::ApiKeyStatus::try_from(status) {
        Ok(v1::ApiKeyStatus::Active) => MasumiStatus::Active,
        Ok(v1::ApiKeyStatus::Inactive | v1::ApiKeyStatus::Revoked | v1::ApiKeyStatus::Unspecified) | Err(_) => {
            MasumiStatus::Revoked
        }
    }
}

fn is_revoked(key: &v1::ApiKey) -> bool {
    key.status == i32::from(v1::ApiKeyStatus::Revoked)
}

/// keyward's networks as Masumi's: the empty set (any) is both networks, [`NO_NETWORK`]
/// and any network outside Masumi's enum are left out.
fn networks_out(networks: &[String]) -> Vec<Network> {
    if networks.is_empty() {
        return vec![Network::Mainnet, Network::Preprod];
    }
    let mut out: Vec<Network> = networks
        .iter()
        .filter_map(|n| match n.as_str() {
            "Preprod" => Some(Network::Preprod),
            "Mainnet" => Some(Network::Mainnet),
            _ => None,
        })
        .collect();
    out.sort_by_key(|n| n.name());
    out.dedup();
    out
}

/// Masumi's networks as keyward's: `[]` is [`NO_NETWORK`], never keyward's "any".
fn networks_in(networks: &[Network]) -> Vec<String> {
    let mut names: Vec<String> = networks.iter().map(|n| n.name().to_owned()).collect();
    names.sort();
    names.dedup();
    if names.is_empty() { vec![NO_NETWORK.to_owned()] } else { names }
}

/// The key's handle: its mask and its number, `kw_live_…x7Qa~42`.
fn handle(key: &v1::ApiKey) -> String {
    format!("{}~{}", key.mask, key.number)
}

/// The key a cursor names, as `ListApiKeysRequest.start_at` takes it: a handle's number,
/// an id or a number; `None` when it names no key of keyward's.
fn cursor_key(cursor: &str) -> Option<String> {
    if let Some((_, number)) = cursor.rsplit_once('~') {
        return is_number(number).then(|| number.to_owned());
    }
    (is_uuid(cursor) || is_number(cursor)).then(|| cursor.to_owned())
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.len() <= 19 && text.bytes().all(|b| b.is_ascii_digit())
}

fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(index, b)| match index {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// The id of a request body: at most 150 characters (400), and a keyward id or number,
/// else no such key (404, as Masumi answers an id it does not hold).
fn key_id(id: String) -> Result<String, Failure> {
    if id.chars().count() > MAX_ID_CHARS {
        return Err(Failure::BadRequest(format!("id must be at most {MAX_ID_CHARS} characters")));
    }
    if is_uuid(&id) || is_number(&id) { Ok(id) } else { Err(Failure::Status(tonic::Status::not_found("no such key"))) }
}

/// A list kept in metadata, in chunks of at most [`META_CHUNK_CHARS`] characters.
fn put_list(metadata: &mut HashMap<String, String>, base: &str, values: &[String]) {
    let prefix = format!("{base}.");
    metadata.retain(|name, _| !name.starts_with(&prefix));
    let text = serde_json::to_string(values).unwrap_or_else(|_| "[]".to_owned());
    let chars: Vec<char> = text.chars().collect();
    for (index, chunk) in chars.chunks(META_CHUNK_CHARS).enumerate() {
        metadata.insert(format!("{prefix}{index}"), chunk.iter().collect());
    }
}

/// A list [`put_list`] kept; empty when there is none.
fn get_list(metadata: &HashMap<String, String>, base: &str) -> Vec<String> {
    let prefix = format!("{base}.");
    let chunks: BTreeMap<usize, &String> = metadata
        .iter()
        .filter_map(|(name, value)| name.strip_prefix(&prefix)?.parse::<usize>().ok().map(|index| (index, value)))
        .collect();
    let text: String = chunks.into_values().map(String::as_str).collect();
    serde_json::from_str(&text).unwrap_or_default()
}

fn masumi_key(key: v1::ApiKey, secret: Option<String>) -> MasumiKey {
    let rights = Rights::of(&key.scopes);
    let networks = networks_out(&key.networks);
    MasumiKey {
        token: secret.unwrap_or_else(|| handle(&key)),
        permission: rights.permission(),
        can_read: rights.read || rights.admin,
        can_pay: rights.pay || rights.admin,
        can_admin: rights.admin,
        usage_limited: key.usage_limited,
        network_limit_2026: networks.clone(),
        network_limit: networks,
        chain_id_limit: get_list(&key.metadata, META_CHAIN_IDS),
        remaining_usage_credits: remaining(&key.credits),
        status: masumi_status(key.status),
        wallet_scope_enabled: key.metadata.get(META_WALLET_ENABLED).is_some_and(|v| v == "true"),
        wallet_scopes: get_list(&key.metadata, META_WALLET_IDS)
            .into_iter()
            .map(|hot_wallet_id| WalletScope { hot_wallet_id })
            .collect(),
        deleted_at: rfc3339(key.delete_time.as_ref()),
        id: key.id,
    }
}

/// The non-zero balances of a key, amounts as decimal strings (a unit brought to zero is
/// gone, as in Masumi).
fn remaining(credits: &[v1::CreditAmount]) -> Vec<Credit> {
    credits
        .iter()
        .filter(|credit| credit.amount != 0)
        .map(|credit| Credit { unit: credit.unit.clone(), amount: credit.amount.to_string() })
        .collect()
}

/// Masumi's amounts, parsed: decimal integers without sign (`signed` allows a leading `-`)
/// that fit in 64 bits, units of at most 150 characters. Anything else refuses the whole
/// request before anything changes.
fn amounts(field: &str, credits: &[Credit], signed: bool) -> Result<Vec<(String, i64)>, Failure> {
    credits
        .iter()
        .enumerate()
        .map(|(index, credit)| {
            if credit.unit.chars().count() > MAX_UNIT_CHARS {
                return Err(Failure::BadRequest(format!(
                    "{field}[{index}].unit must be at most {MAX_UNIT_CHARS} characters"
                )));
            }
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

/// Credit changes, one per unit (Masumi applies repeated units one after the other; their
/// sum is the same change), zero changes left out.
fn deltas(credits: &[Credit]) -> Result<Vec<v1::CreditDelta>, Failure> {
    if credits.len() > MAX_DELTAS {
        return Err(Failure::BadRequest(format!("UsageCreditsToAddOrRemove must hold at most {MAX_DELTAS} items")));
    }
    let mut sums: Vec<(String, i64)> = Vec::new();
    for (unit, delta) in amounts("UsageCreditsToAddOrRemove", credits, true)? {
        match sums.iter_mut().find(|(u, _)| *u == unit) {
            Some((_, sum)) => {
                *sum = sum.checked_add(delta).ok_or_else(|| {
                    Failure::BadRequest("UsageCreditsToAddOrRemove adds up beyond 64 bits".to_owned())
                })?;
            }
            None => sums.push((unit, delta)),
        }
    }
    Ok(sums.into_iter().filter(|(_, delta)| *delta != 0).map(|(unit, delta)| v1::CreditDelta { unit, delta }).collect())
}

fn check_networks(field: &str, networks: Option<&Vec<Network>>) -> Result<(), Failure> {
    match networks {
        Some(networks) if networks.len() > MAX_NETWORKS => {
            Err(Failure::BadRequest(format!("{field} must hold at most {MAX_NETWORKS} items")))
        }
        Some(_) | None => Ok(()),
    }
}

/// CAIP-2 ids as the 2026-07 document writes them: `^[-a-z0-9]{3,8}:[-_a-zA-Z0-9]{1,32}$`.
fn check_chain_ids(chain_ids: Option<&Vec<String>>) -> Result<(), Failure> {
    let Some(chain_ids) = chain_ids else { return Ok(()) };
    if chain_ids.len() > MAX_CHAIN_IDS {
        return Err(Failure::BadRequest(format!("ChainIdLimit must hold at most {MAX_CHAIN_IDS} items")));
    }
    for (index, id) in chain_ids.iter().enumerate() {
        let valid = id.split_once(':').is_some_and(|(namespace, reference)| {
            (3..=8).contains(&namespace.len())
                && namespace.bytes().all(|b| b == b'-' || b.is_ascii_lowercase() || b.is_ascii_digit())
                && (1..=32).contains(&reference.len())
                && reference.bytes().all(|b| b == b'-' || b == b'_' || b.is_ascii_alphanumeric())
        });
        if !valid {
            return Err(Failure::BadRequest(format!("ChainIdLimit[{index}] must be a CAIP-2 chain id")));
        }
    }
    Ok(())
}

fn check_wallet_ids(ids: Option<&Vec<String>>) -> Result<(), Failure> {
    let Some(ids) = ids else { return Ok(()) };
    if ids.len() > MAX_WALLET_IDS {
        return Err(Failure::BadRequest(format!("WalletScopeHotWalletIds must hold at most {MAX_WALLET_IDS} items")));
    }
    match ids.iter().position(|id| id.chars().count() > MAX_WALLET_ID_CHARS) {
        Some(index) => Err(Failure::BadRequest(format!(
            "WalletScopeHotWalletIds[{index}] must be at most {MAX_WALLET_ID_CHARS} characters"
        ))),
        None => Ok(()),
    }
}

/// The Masumi-only fields kept in metadata, over `metadata`; whether anything was given.
fn keep_unread(
    metadata: &mut HashMap<String, String>,
    chain_ids: Option<Vec<String>>,
    wallet_enabled: Option<bool>,
    wallet_ids: Option<Vec<String>>,
) -> bool {
    let given = chain_ids.is_some() || wallet_enabled.is_some() || wallet_ids.is_some();
    if let Some(chain_ids) = chain_ids {
        put_list(metadata, META_CHAIN_IDS, &chain_ids);
    }
    if let Some(enabled) = wallet_enabled {
        metadata.insert(META_WALLET_ENABLED.to_owned(), enabled.to_string());
    }
    if let Some(wallet_ids) = wallet_ids {
        put_list(metadata, META_WALLET_IDS, &wallet_ids);
    }
    given
}

/// Keys per page: a number from 1 to 100 (Masumi coerces numbers; a fraction is cut).
fn page_size(field: &str, given: Option<f64>, default: usize) -> Result<usize, Failure> {
    match given {
        None => Ok(default),
        Some(size) if (1.0..=100.0).contains(&size) => {
            // In range, so the cast keeps the whole part exactly.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Ok(size.trunc() as usize)
        }
        Some(_) => Err(Failure::BadRequest(format!("{field} must be between 1 and 100"))),
    }
}

fn check_cursor(field: &str, cursor: Option<&String>, max: usize) -> Result<(), Failure> {
    match cursor {
        Some(cursor) if cursor.chars().count() > max => {
            Err(Failure::BadRequest(format!("{field} must be at most {max} characters")))
        }
        Some(_) | None => Ok(()),
    }
}

/// The JSON body as `T` (an empty body counts as `{}`); a problem names the Masumi field.
fn json<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, Failure> {
    let body = body?;
    let text: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &body };
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let value: T = serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if path == "." || path.is_empty() {
            Failure::BadRequest(format!("invalid JSON body: {inner}"))
        } else {
            Failure::BadRequest(format!("invalid JSON body: {path}: {inner}"))
        }
    })?;
    deserializer.end().map_err(|err| Failure::BadRequest(format!("invalid JSON body: {err}")))?;
    Ok(value)
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
        async {
            crate::body::none(body)?;
            let message = v1::GetCallerApiKeyRequest {};
            let key = upstream.api_keys().get_caller_api_key(request(&headers, message)).await?.into_inner();
            Ok(masumi_key(key.api_key.unwrap_or_default(), None))
        }
        .await,
    )
}

#[utoipa::path(get, path = "/api/v1/api-key", tag = "masumi",
    description = "Every key (admin); the page starts with the cursor's key. `limit`/`cursorToken` (2025-12) list revoked keys, `take`/`cursorId` (2026-07) leave them out.",
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
            crate::body::none(body)?;
            let ListQuery { limit, cursor_token, take, cursor_id } = query(params)?;
            check_cursor("cursorToken", cursor_token.as_ref(), MAX_CURSOR_CHARS)?;
            check_cursor("cursorId", cursor_id.as_ref(), MAX_CURSOR_CHARS)?;
            // The era of the request: 2026-07 pages with take/cursorId and hides revoked keys.
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
            let mut client = upstream.api_keys();
            let mut keys = Vec::new();
            let mut page_token = String::new();
            while keys.len() < size {
                let page = v1::ListApiKeysRequest {
                    page_size: i32::try_from(size - keys.len()).unwrap_or(100).min(100),
                    start_at: if page_token.is_empty() { start_at.clone() } else { String::new() },
                    page_token,
                    show_revoked: !current_era,
                    ..Default::default()
                };
                let page = client.list_api_keys(request(&headers, page)).await?.into_inner();
                keys.extend(page.api_keys.into_iter().map(|key| masumi_key(key, None)));
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
    responses((status = 200, body = Success<MasumiKey>), (status = 400, body = MasumiError), (status = 401, body = MasumiError),
        (status = 409, body = MasumiError), (status = 413, body = MasumiError), (status = 429, body = MasumiError),
        (status = 503, body = MasumiError)))]
pub(crate) async fn create(
    State(upstream): State<Upstream>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    success(
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
            let rights = Rights::asked(Rights::default(), permission, [can_read, can_pay, can_admin])
                .unwrap_or(Rights::from_permission(Permission::Read));
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
            Ok(masumi_key(created.api_key.unwrap_or_default(), Some(created.secret)))
        }
        .await,
    )
}

#[utoipa::path(patch, path = "/api/v1/api-key", tag = "masumi",
    description = "Changes a key (admin). `status: Revoked` revokes it; `Active` restores a revoked key within the server's retention window.",
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

            let mut client = upstream.api_keys();
            let get = v1::GetApiKeyRequest { id: id.clone() };
            let mut current =
                client.get_api_key(request(&headers, get)).await?.into_inner().api_key.unwrap_or_default();
            // Revoked → Active: brought back, if the retention window still allows it.
            if status == Some(MasumiStatus::Active) && is_revoked(&current) {
                let undelete = v1::UndeleteApiKeyRequest { id: id.clone(), request_id: String::new() };
                current = client
                    .undelete_api_key(request(&headers, undelete))
                    .await?
                    .into_inner()
                    .api_key
                    .unwrap_or_default();
            }

            let mut patch = v1::ApiKey { id: id.clone(), ..Default::default() };
            let mut paths = Vec::new();
            if status == Some(MasumiStatus::Active) && current.status != i32::from(v1::ApiKeyStatus::Active) {
                patch.status = v1::ApiKeyStatus::Active.into();
                paths.push("status".to_owned());
            }
            let mut networks = network_limit_2026.or(network_limit).map(|networks| networks_in(&networks));
            let mut usage_limited = usage_limited;
            if let Some(rights) = Rights::asked(Rights::of(&current.scopes), permission, [can_read, can_pay, can_admin])
            {
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
            let mut key = current;
            if !paths.is_empty() || !credit_deltas.is_empty() || token.is_some() {
                // One call, one transaction: the credits, the token and the fields change
                // together or not at all.
                let message = v1::UpdateApiKeyRequest {
                    api_key: Some(patch),
                    update_mask: Some(prost_types::FieldMask { paths }),
                    request_id: String::new(),
                    credit_deltas,
                    credit_reason: "masumi: UsageCreditsToAddOrRemove".to_owned(),
                    import_secret: token.unwrap_or_default(),
                };
                key = client.update_api_key(request(&headers, message)).await?.into_inner().api_key.unwrap_or_default();
            }
            if status == Some(MasumiStatus::Revoked) && !is_revoked(&key) {
                let message = v1::DeleteApiKeyRequest { id, request_id: String::new() };
                key = client.delete_api_key(request(&headers, message)).await?.into_inner().api_key.unwrap_or_default();
            }
            // The answer shows the handle only: an imported token is the caller's own.
            Ok(masumi_key(key, None))
        }
        .await,
    )
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
        async {
            let DeleteKey { id } = json(body)?;
            let id = key_id(id)?;
            let mut client = upstream.api_keys();
            let message = v1::DeleteApiKeyRequest { id: id.clone(), request_id: String::new() };
            match client.delete_api_key(request(&headers, message)).await {
                Ok(deleted) => Ok(masumi_key(deleted.into_inner().api_key.unwrap_or_default(), None)),
                // Already revoked: Masumi sets it revoked again and answers 200.
                Err(status) if status.code() == Code::FailedPrecondition => {
                    let key = client.get_api_key(request(&headers, v1::GetApiKeyRequest { id })).await?.into_inner();
                    let key = key.api_key.unwrap_or_default();
                    if is_revoked(&key) { Ok(masumi_key(key, None)) } else { Err(status.into()) }
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
        Ok::<_, Failure>(keys)
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
        Err(failure) => error::respond(failure),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::{cursor_key, get_list, lenient_flag, put_list, strict_flag};

    #[test]
    fn cursors_name_keys_by_handle_id_or_number() {
        assert_eq!(cursor_key("kw_live_…x7Qa~42").as_deref(), Some("42"));
        assert_eq!(cursor_key("…a~b~7").as_deref(), Some("7"));
        assert_eq!(
            cursor_key("0190f5d2-7c1e-7b3a-9d4e-1f2a3b4c5d6e").as_deref(),
            Some("0190f5d2-7c1e-7b3a-9d4e-1f2a3b4c5d6e")
        );
        assert_eq!(cursor_key("17").as_deref(), Some("17"));
        for other in ["masumi_payment_api_key_secret", "x~", "x~1a", ""] {
            assert_eq!(cursor_key(other), None, "{other}");
        }
    }

    #[test]
    fn long_lists_survive_metadata_chunks() {
        let ids: Vec<String> = (0..100).map(|n| format!("{n:0>150}")).collect();
        let mut metadata = HashMap::new();
        put_list(&mut metadata, "m.ids", &ids);
        assert!(metadata.len() > 1 && metadata.values().all(|v| v.chars().count() <= 1024));
        assert_eq!(get_list(&metadata, "m.ids"), ids);
        put_list(&mut metadata, "m.ids", &["one".to_owned()]);
        assert_eq!((metadata.len(), get_list(&metadata, "m.ids")), (1, vec!["one".to_owned()]));
        assert!(get_list(&metadata, "m.other").is_empty());
    }

    #[test]
    fn flags() {
        let lenient = |json: &str| lenient_flag(&mut serde_json::Deserializer::from_str(json)).unwrap();
        assert_eq!(
            ["\"True\"", "\"FALSE\"", "\"yes\"", "true", "null"].map(lenient),
            [Some(true), Some(false), Some(false), Some(true), None]
        );
        let strict = |json: &str| strict_flag(&mut serde_json::Deserializer::from_str(json)).ok().flatten();
        assert_eq!(
            ["\"True\"", "\"FALSE\"", "\"yes\"", "false"].map(strict),
            [Some(true), Some(false), None, Some(false)]
        );
    }
}
