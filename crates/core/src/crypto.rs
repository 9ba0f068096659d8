//! Encryption at rest of stored credentials: AES-256-GCM under a master key, a random
//! nonce per write, and the owning record's id as associated data so a ciphertext moved
//! to another row no longer opens.

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, Payload},
};
use base64::{Engine, engine::general_purpose::STANDARD};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

const NONCE_LEN: usize = 12;

/// A 256-bit master key and its id (a fingerprint, stored beside each ciphertext).
#[derive(Clone)]
pub struct MasterKey {
    cipher: Aes256Gcm,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey").field("id", &self.id).finish_non_exhaustive()
    }
}

/// A ciphertext that does not open: altered, moved to another record, or sealed under
/// another master key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the ciphertext does not open under this master key and record")]
pub struct Unsealable;

impl MasterKey {
    /// Parses a base64-encoded 32-byte key.
    pub fn from_base64(encoded: &SecretString) -> Result<Self, String> {
        let bytes = STANDARD.decode(encoded.expose_secret().trim()).map_err(|_| "is not valid base64".to_owned())?;
        let key: [u8; 32] =
            bytes.as_slice().try_into().map_err(|_| format!("must decode to 32 bytes, got {}", bytes.len()))?;
        let digest = Sha256::new().chain_update(b"keyward master key id\0").chain_update(key).finalize();
        Ok(Self { cipher: Aes256Gcm::new(&key.into()), id: hex::encode(&digest[..8]) })
    }

    /// A new random key, base64-encoded.
    pub fn generate() -> SecretString {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        SecretString::from(STANDARD.encode(key))
    }

    /// The key's id: a fingerprint that identifies it without revealing it.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Encrypts `plaintext` bound to `record` (associated data): base64 of nonce ‖ ciphertext.
    pub fn seal(&self, plaintext: &[u8], record: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: record })
            .expect("AES-GCM encrypts any message shorter than 64 GiB");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        STANDARD.encode(out)
    }

    /// Decrypts what [`Self::seal`] made for the same `record`.
    pub fn open(&self, sealed: &str, record: &[u8]) -> Result<Vec<u8>, Unsealable> {
        let raw = STANDARD.decode(sealed).map_err(|_| Unsealable)?;
        if raw.len() < NONCE_LEN {
            return Err(Unsealable);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        self.cipher.decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: record }).map_err(|_| Unsealable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secrets_open_only_with_their_key_and_record() {
        let key = MasterKey::from_base64(&MasterKey::generate()).unwrap();
        let other = MasterKey::from_base64(&MasterKey::generate()).unwrap();
        let sealed = key.seal(b"blockfrost-project-key", b"row-1");
        assert_eq!(key.open(&sealed, b"row-1").unwrap(), b"blockfrost-project-key");
        assert_ne!(sealed, key.seal(b"blockfrost-project-key", b"row-1"), "a fresh nonce per write");
        assert_eq!(key.open(&sealed, b"row-2"), Err(Unsealable));
        assert_eq!(other.open(&sealed, b"row-1"), Err(Unsealable));
        assert_ne!(key.id(), other.id());
        let mut tampered = STANDARD.decode(&sealed).unwrap();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert_eq!(key.open(&STANDARD.encode(tampered), b"row-1"), Err(Unsealable));
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        assert!(MasterKey::from_base64(&SecretString::from("not base64!")).is_err());
        assert!(MasterKey::from_base64(&SecretString::from(STANDARD.encode([0u8; 16]))).is_err());
    }
}
