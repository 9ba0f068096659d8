//! Secrets: `<prefix>_<43 base62 chars><6 base62 chars of CRC32>`, their masks and their
//! keyed hashes. The checksum lets a mistyped or forged keyward secret be refused
//! without any I/O, and lets secret scanners recognise leaked keys.

use hmac::{Hmac, Mac};
use rand::{Rng, distr::Alphanumeric};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// Random base62 characters of a generated secret: 43 × log2(62) ≈ 256 bits.
const RANDOM_LEN: usize = 43;
/// Base62 characters of the CRC32 checksum (62^6 > 2^32).
const CHECKSUM_LEN: usize = 6;
/// Shortest caller-chosen (imported) secret.
pub const MIN_IMPORTED_LEN: usize = 15;
/// Longest secret of any kind.
pub const MAX_SECRET_LEN: usize = 550;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Generates a new secret with `prefix`.
pub fn generate(prefix: &str) -> SecretString {
    let body: String = rand::rng().sample_iter(Alphanumeric).take(RANDOM_LEN).map(char::from).collect();
    let mut secret = format!("{prefix}_{body}");
    let sum = checksum(&[secret.as_bytes()]);
    secret.extend(sum.iter().map(|&b| char::from(b)));
    SecretString::from(secret)
}

/// The base62 CRC32 of the concatenated `parts` (parts, so that checking a presented
/// secret needs no copy of it: verification checks two per call).
fn checksum(parts: &[&[u8]]) -> [u8; CHECKSUM_LEN] {
    let mut crc = crc32fast::Hasher::new();
    parts.iter().for_each(|part| crc.update(part));
    let mut value = crc.finalize();
    let mut out = [b'0'; CHECKSUM_LEN];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    out
}

/// What a presented string can be, decided without I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A keyward secret with a valid checksum.
    Keyward,
    /// Not keyward-shaped, but could be an imported caller-chosen secret.
    Imported,
    /// Cannot be any key.
    Malformed,
}

/// Classifies `presented` against the configured prefixes.
pub fn classify<'a>(presented: &str, mut prefixes: impl Iterator<Item = &'a str>) -> Shape {
    if presented.len() > MAX_SECRET_LEN || !allowed_characters(presented) {
        return Shape::Malformed;
    }
    let keyward_prefixed = prefixes.any(|prefix| {
        presented.len() > prefix.len() && presented.starts_with(prefix) && presented.as_bytes()[prefix.len()] == b'_'
    });
    if keyward_prefixed {
        return if has_valid_checksum(presented) { Shape::Keyward } else { Shape::Malformed };
    }
    if presented.len() >= MIN_IMPORTED_LEN { Shape::Imported } else { Shape::Malformed }
}

/// No control or whitespace character: one byte scan for the usual all-ASCII secret. The
/// scans fold over every byte instead of stopping at the first bad one, which lets the
/// compiler check 16 or 32 bytes per instruction; a secret is at most 550 bytes.
fn allowed_characters(presented: &str) -> bool {
    all_bytes(presented, |b| b.is_ascii_graphic()) || !presented.chars().any(|c| c.is_control() || c.is_whitespace())
}

fn all_bytes(text: &str, accept: impl Fn(u8) -> bool) -> bool {
    text.bytes().fold(true, |ok, b| ok & accept(b))
}

fn has_valid_checksum(secret: &str) -> bool {
    let Some((head, body)) = secret.rsplit_once('_') else { return false };
    if body.len() != RANDOM_LEN + CHECKSUM_LEN || !all_bytes(body, |b| b.is_ascii_alphanumeric()) {
        return false;
    }
    let (random, sum) = body.split_at(RANDOM_LEN);
    checksum(&[head.as_bytes(), b"_", random.as_bytes()]) == sum.as_bytes()
}

/// The mask shown in place of a secret: its last 4 characters, after its prefix when it
/// is a keyward secret of one of the configured `prefixes`. An imported secret shows no
/// prefix: what precedes its last `_` may be most of a passphrase.
pub fn mask<'a>(secret: &SecretString, prefixes: impl Iterator<Item = &'a str>) -> String {
    let secret = secret.expose_secret();
    let tail: String = secret.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    let mut prefixes = prefixes;
    match secret.rsplit_once('_') {
        Some((prefix, _)) if prefixes.any(|known| known == prefix) && has_valid_checksum(secret) => {
            format!("{prefix}_…{tail}")
        }
        Some(_) | None => format!("…{tail}"),
    }
}

/// Checks a caller-chosen secret for import.
pub fn check_importable(secret: &str) -> Result<(), String> {
    let len = secret.chars().count();
    if !(MIN_IMPORTED_LEN..=MAX_SECRET_LEN).contains(&len) {
        return Err(format!("must be {MIN_IMPORTED_LEN} to {MAX_SECRET_LEN} characters, got {len}"));
    }
    if secret.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain whitespace or control characters".to_owned());
    }
    Ok(())
}

/// HMAC-SHA-256 of a secret under the server's hash secret; the only form in which
/// secrets are stored (hex-encoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SecretHash(pub [u8; 32]);

impl SecretHash {
    /// The stored, hex-encoded form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses the stored form.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }
}

/// Computes keyed hashes. A stolen database alone cannot confirm guesses.
#[derive(Clone)]
pub struct SecretHasher {
    mac: Hmac<Sha256>,
    version: i64,
}

impl std::fmt::Debug for SecretHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretHasher").field("version", &self.version).finish_non_exhaustive()
    }
}

impl SecretHasher {
    /// A hasher keyed with `hash_secret`.
    pub fn new(hash_secret: &SecretString) -> Self {
        let key = hash_secret.expose_secret().as_bytes();
        let mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts keys of any length");
        let fingerprint = Sha256::new().chain_update(b"keyward hash secret id\0").chain_update(key).finalize();
        let version = i64::from(u32::from_be_bytes([fingerprint[0], fingerprint[1], fingerprint[2], fingerprint[3]]));
        Self { mac, version }
    }

    /// Identifies the hash secret, stored beside each hash so a later change of secret is detectable.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// The keyed hash of `secret`.
    pub fn hash(&self, secret: &str) -> SecretHash {
        let mut mac = self.mac.clone();
        mac.update(secret.as_bytes());
        SecretHash(mac.finalize().into_bytes().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_pass_their_checksum_and_typos_do_not() {
        let secret = generate("kw_live");
        let text = secret.expose_secret();
        assert_eq!(text.len(), "kw_live_".len() + RANDOM_LEN + CHECKSUM_LEN);
        assert_eq!(classify(text, ["kw_live"].into_iter()), Shape::Keyward);
        let mut typo = text.to_owned().into_bytes();
        typo[12] = if typo[12] == b'a' { b'b' } else { b'a' };
        assert_eq!(classify(std::str::from_utf8(&typo).unwrap(), ["kw_live"].into_iter()), Shape::Malformed);
        assert_eq!(classify("kw_live_short", ["kw_live"].into_iter()), Shape::Malformed);
    }

    #[test]
    fn other_strings_are_imported_or_malformed_by_length() {
        assert_eq!(classify("masumi_payment_api_key_secret", ["kw_live"].into_iter()), Shape::Imported);
        assert_eq!(classify("tooshort", ["kw_live"].into_iter()), Shape::Malformed);
        assert_eq!(classify(&"x".repeat(551), ["kw_live"].into_iter()), Shape::Malformed);
        assert_eq!(classify("has a space in it ok", ["kw_live"].into_iter()), Shape::Malformed);
    }

    #[test]
    fn masks_show_prefix_and_last_four() {
        let secret = generate("kw_test");
        let text = secret.expose_secret();
        let known = || ["kw_live", "kw_test"].into_iter();
        assert_eq!(mask(&secret, known()), format!("kw_test_…{}", &text[text.len() - 4..]));
        assert_eq!(mask(&SecretString::from("imported-secret-1234"), known()), "…1234");
        assert_eq!(mask(&secret, ["kw_live"].into_iter()), format!("…{}", &text[text.len() - 4..]));
        // A passphrase shaped like a keyward secret shows none of what precedes its `_`.
        let passphrase = format!("my-long-private-passphrase_{}", "a".repeat(49));
        assert_eq!(mask(&SecretString::from(passphrase), known()), "…aaaa");
    }

    #[test]
    fn hashes_depend_on_the_hash_secret() {
        let a = SecretHasher::new(&SecretString::from("one"));
        let b = SecretHasher::new(&SecretString::from("two"));
        assert_eq!(a.hash("k"), a.hash("k"));
        assert_ne!(a.hash("k"), b.hash("k"));
        assert_ne!(a.version(), b.version());
    }
}
