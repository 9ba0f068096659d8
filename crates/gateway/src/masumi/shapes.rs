//! The request and answer shapes of the Masumi surface, of both contract eras, and the
//! rights a Masumi permission or `can…` flag stands for.

use super::*;

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
pub(crate) struct Rights {
    pub(crate) read: bool,
    pub(crate) pay: bool,
    pub(crate) admin: bool,
}

impl Rights {
    pub(crate) fn of(scopes: &[String]) -> Self {
        let has = |scope: &str| scopes.iter().any(|s| s == scope);
        Self { read: has("read"), pay: has("pay"), admin: has("admin") }
    }

    pub(crate) fn from_permission(permission: Permission) -> Self {
        match permission {
            Permission::Read => Self { read: true, pay: false, admin: false },
            Permission::ReadAndPay => Self { read: true, pay: true, admin: false },
            Permission::Admin => Self { read: true, pay: true, admin: true },
        }
    }

    /// The rights a request asks for, over `base`: the flags where given, else the
    /// permission; `None` when it asks for neither.
    pub(crate) fn asked(base: Self, permission: Option<Permission>, flags: [Option<bool>; 3]) -> Option<Self> {
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
    pub(crate) fn scopes(self) -> Vec<String> {
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

    pub(crate) fn permission(self) -> Permission {
        if self.admin {
            Permission::Admin
        } else if self.pay {
            Permission::ReadAndPay
        } else {
            Permission::Read
        }
    }
}

/// A key's status, Masumi's way: a key that does not verify (keyward's disabled, as
/// Masumi's revoke, or revoked, as Masumi's delete) is `Revoked`; nothing outside the
/// contract's enum is ever answered.
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
    pub(crate) fn name(self) -> &'static str {
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
    /// The raw key on creation; in a 2026-07 list `*****` and its last four characters;
    /// otherwise the key's handle (mask and number), which pages as `cursorToken`.
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
    /// When the key was deleted (deleted keys only).
    #[serde(rename = "deletedAt", skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
}

/// The service's health.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` while the database answers.
    pub status: String,
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
    /// `true` (any case) or not; a boolean is taken too. Default true; admin keys are never
    /// usage limited (`true` is refused for them).
    #[serde(rename = "usageLimited", default, deserialize_with = "lenient_flag")]
    #[schema(value_type = Option<String>)]
    pub usage_limited: Option<bool>,
    /// Initial credits (required, as in Masumi; `[]` for none).
    #[serde(rename = "UsageCredits")]
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
    /// `true` (any case) or not, kept as given; refused for admin keys.
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
    /// `Revoked` disables the key (still listed); `Active` enables it, or restores a deleted
    /// key within the retention window.
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
pub(crate) enum Given {
    Flag(bool),
    Text(String),
}

/// Masumi's create flags: a string that is `true` in any case is true, any other string false.
pub(crate) fn lenient_flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
    Ok(Option::<Given>::deserialize(deserializer)?.map(|given| match given {
        Given::Flag(flag) => flag,
        Given::Text(text) => text.eq_ignore_ascii_case("true"),
    }))
}

/// A boolean, or `true`/`false` in any case.
pub(crate) fn strict_flag<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<bool>, D::Error> {
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
    /// Keys per page, 1 to 100; default 10 (2026-07: deleted keys left out).
    #[param(minimum = 1, maximum = 100)]
    pub take: Option<f64>,
    /// The id of the first key of the page (2026-07: deleted keys left out).
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

#[cfg(test)]
mod tests {
    use super::{lenient_flag, strict_flag};

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
