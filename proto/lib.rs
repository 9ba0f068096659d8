//! The keyward v1 contract: messages and services generated from `proto/`, and the
//! encoded file descriptor set that server reflection and REST transcoding read.

/// `keyward.v1`: API keys, verification and quotas.
pub mod v1 {
    #![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    tonic::include_proto!("keyward.v1");
    pub use crate::verify_response::VerifyApiKeyResponse;
}

mod verify_response;

/// The file descriptor set of every proto file, `google.api` annotations included.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("keyward_descriptor");
