//! The keyward v1 contract: messages and services generated from `proto/`, and the
//! encoded file descriptor set that server reflection and REST transcoding read.

/// `keyward.v1`: API keys, verification and quotas.
pub mod v1 {
    #![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    tonic::include_proto!("keyward.v1");
    pub use crate::verify_response::VerifyApiKeyResponse;
}

mod verify_response;

/// The `google.rpc.ErrorInfo` metadata entry of an `UNAUTHENTICATED` error whose secret
/// belongs to a key that cannot be used: that key's status as an `ApiKeyStatus` name
/// (`API_KEY_STATUS_INACTIVE`, `API_KEY_STATUS_REVOKED` or `API_KEY_STATUS_EXPIRED`).
pub const ERROR_KEY_STATUS: &str = "api_key_status";

/// The file descriptor set of every proto file, `google.api` annotations included.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("keyward_descriptor");
