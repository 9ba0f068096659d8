//! Opaque page tokens (AIP-158): keyset position plus a fingerprint of the filters, so a
//! token survives inserts and deletes between pages and cannot be reused with other filters.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::Error;

/// Default page size when the request gives 0.
pub const DEFAULT_PAGE_SIZE: u64 = 10;
/// Largest page; larger requests are coerced down.
pub const MAX_PAGE_SIZE: u64 = 100;

/// AIP-158 page size: 0 means the default, above the maximum is coerced down, negative is refused.
pub fn page_size(requested: i32) -> crate::error::Result<u64> {
    match u64::try_from(requested) {
        Err(_) => Err(Error::invalid("page_size", format!("must not be negative, got {requested}"))),
        Ok(0) => Ok(DEFAULT_PAGE_SIZE),
        Ok(size) => Ok(size.min(MAX_PAGE_SIZE)),
    }
}

/// How many rows to fetch for a page of `limit`: one more, to learn whether a next page exists.
pub fn fetch_limit(limit: u64) -> u64 {
    limit + 1
}

/// Cuts rows fetched with [`fetch_limit`] to a page of `limit`, with the token of the next
/// page (empty on the last one) made by `token` from the last row kept.
pub fn cut<T>(mut rows: Vec<T>, limit: u64, token: impl Fn(&T) -> String) -> crate::error::Result<(Vec<T>, String)> {
    if rows.len() as u64 <= limit {
        return Ok((rows, String::new()));
    }
    rows.truncate(usize::try_from(limit).map_err(Error::internal)?);
    let next = rows.last().map(token).unwrap_or_default();
    Ok((rows, next))
}

/// Encodes the position after `last_number` for a query whose filters print as `filters`.
pub fn encode(last_number: i64, filters: &str) -> String {
    encode_position(&last_number.to_be_bytes(), filters)
}

/// Decodes a token made by [`encode`] for the same filters; empty means the first page.
pub fn decode(token: &str, filters: &str) -> crate::error::Result<Option<i64>> {
    decode_position::<8>(token, filters).map(|position| position.map(i64::from_be_bytes))
}

/// Encodes the position after the record `last_id` (ids ordered by time, UUID v7).
pub fn encode_id(last_id: Uuid, filters: &str) -> String {
    encode_position(last_id.as_bytes(), filters)
}

/// Decodes a token made by [`encode_id`] for the same filters; empty means the first page.
pub fn decode_id(token: &str, filters: &str) -> crate::error::Result<Option<Uuid>> {
    decode_position::<16>(token, filters).map(|position| position.map(Uuid::from_bytes))
}

fn encode_position(position: &[u8], filters: &str) -> String {
    let mut raw = position.to_vec();
    raw.extend_from_slice(&fingerprint(filters));
    URL_SAFE_NO_PAD.encode(raw)
}

fn decode_position<const N: usize>(token: &str, filters: &str) -> crate::error::Result<Option<[u8; N]>> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| Error::invalid("page_token", why.to_owned());
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad("is not a token returned by this API"))?;
    let (position, print) = raw.split_at_checked(N).ok_or_else(|| bad("is not a token returned by this API"))?;
    if print != fingerprint(filters) {
        return Err(bad(
            "was issued for other filters; repeat the filters of the first page or start over without a token",
        ));
    }
    let position = position.try_into().map_err(|_| bad("is not a token returned by this API"))?;
    Ok(Some(position))
}

fn fingerprint(filters: &str) -> [u8; 8] {
    let digest = Sha256::digest(filters.as_bytes());
    let mut out = [0; 8];
    out.copy_from_slice(&digest[..8]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_follow_aip_158() {
        assert_eq!(page_size(0).unwrap(), 10);
        assert_eq!(page_size(7).unwrap(), 7);
        assert_eq!(page_size(1000).unwrap(), 100);
        assert!(page_size(-1).is_err());
    }

    #[test]
    fn tokens_round_trip_only_with_their_filters() {
        let token = encode(42, "owner=a");
        assert_eq!(decode(&token, "owner=a").unwrap(), Some(42));
        assert!(decode(&token, "owner=b").is_err());
        assert!(decode("garbage!!", "owner=a").is_err());
        assert_eq!(decode("", "owner=a").unwrap(), None);
    }
}
