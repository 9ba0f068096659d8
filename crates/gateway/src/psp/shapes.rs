//! The request and answer shapes of the PSP surface, and a keyward key in them.

use keyward_proto::v1;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{numbered::status_name, time::rfc3339};

/// A customer user API key as every answer shows it; the update answers just this, the
/// list and the create add a field of their own.
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
    /// `active`, `inactive` or `revoked` (only listed keys can be revoked).
    pub status: String,
}

impl From<v1::ApiKey> for CustomerUserApiKey {
    fn from(key: v1::ApiKey) -> Self {
        Self {
            id: key.number,
            key_mask: key.mask,
            name: key.name,
            user_cognito_sub: key.owner,
            creator_cognito_sub: key.creator,
            expires_at: rfc3339(key.expire_time.as_ref()),
            created_at: rfc3339(key.create_time.as_ref()).unwrap_or_default(),
            status: status_name(key.status),
        }
    }
}

/// A key as the list returns it: with its organisation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListedCustomerUserApiKey {
    /// The key.
    #[serde(flatten)]
    pub key: CustomerUserApiKey,
    /// The organisation's display name.
    #[serde(rename = "organisationName")]
    pub organisation_name: String,
}

impl From<v1::ApiKey> for ListedCustomerUserApiKey {
    fn from(mut key: v1::ApiKey) -> Self {
        let organisation_name = std::mem::take(&mut key.organization_name);
        Self { key: key.into(), organisation_name }
    }
}

/// A created key, with its secret, shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedCustomerUserApiKey {
    /// The key.
    #[serde(flatten)]
    pub key: CustomerUserApiKey,
    /// The secret, shown once.
    #[serde(rename = "rawKey")]
    pub raw_key: String,
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

impl From<PspStatus> for v1::ApiKeyStatus {
    fn from(status: PspStatus) -> Self {
        match status {
            PspStatus::Active => Self::Active,
            PspStatus::Inactive => Self::Inactive,
        }
    }
}

/// Live keys of the caller in the environment, and the most allowed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Usage {
    /// Live keys.
    pub used: i64,
    /// The most live keys allowed.
    pub limit: i64,
}
