//! The request and answer shapes of the generic scoped-key surface, and a keyward key in them.

use keyward_proto::v1;
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use crate::{numbered::status_name, time::rfc3339};

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
    pub(crate) fn as_str(self) -> &'static str {
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

impl From<v1::ApiKey> for ScopedKey {
    fn from(key: v1::ApiKey) -> Self {
        let known = [KeyScope::Read, KeyScope::Create, KeyScope::Update, KeyScope::Delete, KeyScope::Manage];
        Self {
            key_id: key.number,
            key_name: key.name,
            key_scope: key.scopes.into_iter().filter(|s| known.iter().any(|k| k.as_str() == s)).collect(),
            organization_id: key.organization_id.parse().ok(),
            key_mask: key.mask,
            status: status_name(key.status),
            created_at: rfc3339(key.create_time.as_ref()).unwrap_or_default(),
        }
    }
}
