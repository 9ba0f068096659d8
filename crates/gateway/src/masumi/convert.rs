//! Between the Masumi shapes and keyward's: statuses, networks, handles and cursors,
//! credits, metadata-held lists, and the checks of the contract's limits.

use super::*;

/// Masumi's status of a key. Masumi has no expired: an expired key stays `Active`, as
/// Masumi shows a key past its expiry.
pub(crate) fn masumi_status(status: i32) -> MasumiStatus {
    match v1::ApiKeyStatus::try_from(status) {
        Ok(v1::ApiKeyStatus::Active | v1::ApiKeyStatus::Expired) => MasumiStatus::Active,
        Ok(v1::ApiKeyStatus::Inactive | v1::ApiKeyStatus::Revoked | v1::ApiKeyStatus::Unspecified) | Err(_) => {
            MasumiStatus::Revoked
        }
    }
}

pub(crate) fn is_revoked(key: &v1::ApiKey) -> bool {
    key.status == i32::from(v1::ApiKeyStatus::Revoked)
}

/// keyward's networks as Masumi's: the empty set (any) is both networks, [`NO_NETWORK`]
/// and any network outside Masumi's enum are left out.
pub(crate) fn networks_out(networks: &[String]) -> Vec<Network> {
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
pub(crate) fn networks_in(networks: &[Network]) -> Vec<String> {
    let mut names: Vec<String> = networks.iter().map(|n| n.name().to_owned()).collect();
    names.sort();
    names.dedup();
    if names.is_empty() { vec![NO_NETWORK.to_owned()] } else { names }
}

/// The key's handle: its mask and its number, `kw_live_*****x7Qa~42`, in ASCII so that
/// a client may send it back as `cursorToken` as it is.
pub(crate) fn handle(key: &v1::ApiKey) -> String {
    let mask: String = key.mask.replace('…', "*****").chars().map(|c| if c.is_ascii() { c } else { '*' }).collect();
    format!("{mask}~{}", key.number)
}

/// The token as the 2026-07 list shows it, Masumi's redaction: `*****` and its last four
/// characters.
pub(crate) fn redacted(key: &v1::ApiKey) -> String {
    let tail = key.mask.rsplit_once('…').map_or(key.mask.as_str(), |(_, tail)| tail);
    format!("*****{tail}")
}

/// The key a cursor names, as `ListApiKeysRequest.start_at` takes it: a handle's number,
/// an id or a number; `None` when it names no key of keyward's.
pub(crate) fn cursor_key(cursor: &str) -> Option<String> {
    if let Some((_, number)) = cursor.rsplit_once('~') {
        return is_number(number).then(|| number.to_owned());
    }
    (is_uuid(cursor) || is_number(cursor)).then(|| cursor.to_owned())
}

pub(crate) fn is_number(text: &str) -> bool {
    !text.is_empty() && text.len() <= 19 && text.bytes().all(|b| b.is_ascii_digit())
}

pub(crate) fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.bytes().enumerate().all(|(index, b)| match index {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// The id of a request body: at most 150 characters (400), and a keyward id or number,
/// else no such key (404, as Masumi answers an id it does not hold).
pub(crate) fn key_id(id: String) -> Result<String, Failure> {
    if id.chars().count() > MAX_ID_CHARS {
        return Err(Failure::BadRequest(format!("id must be at most {MAX_ID_CHARS} characters")));
    }
    if is_uuid(&id) || is_number(&id) { Ok(id) } else { Err(Failure::Status(tonic::Status::not_found("no such key"))) }
}

/// A list kept in metadata, in chunks of at most [`META_CHUNK_CHARS`] characters.
pub(crate) fn put_list(metadata: &mut HashMap<String, String>, base: &str, values: &[String]) {
    let prefix = format!("{base}.");
    metadata.retain(|name, _| !name.starts_with(&prefix));
    let text = serde_json::to_string(values).unwrap_or_else(|_| "[]".to_owned());
    let chars: Vec<char> = text.chars().collect();
    for (index, chunk) in chars.chunks(META_CHUNK_CHARS).enumerate() {
        metadata.insert(format!("{prefix}{index}"), chunk.iter().collect());
    }
}

/// A list [`put_list`] kept; empty when there is none.
pub(crate) fn get_list(metadata: &HashMap<String, String>, base: &str) -> Vec<String> {
    let prefix = format!("{base}.");
    let chunks: BTreeMap<usize, &String> = metadata
        .iter()
        .filter_map(|(name, value)| name.strip_prefix(&prefix)?.parse::<usize>().ok().map(|index| (index, value)))
        .collect();
    let text: String = chunks.into_values().map(String::as_str).collect();
    serde_json::from_str(&text).unwrap_or_default()
}

/// What a key's `token` shows.
pub(crate) enum Shown {
    /// The raw key, in the answer that creates it.
    Secret(String),
    /// The handle, which pages as `cursorToken`.
    Handle,
    /// Masumi's 2026-07 redaction.
    Redacted,
}

pub(crate) fn masumi_key(key: v1::ApiKey, shown: Shown) -> MasumiKey {
    let rights = Rights::of(&key.scopes);
    let networks = networks_out(&key.networks);
    let token = match shown {
        Shown::Secret(secret) => secret,
        Shown::Handle => handle(&key),
        Shown::Redacted => redacted(&key),
    };
    MasumiKey {
        token,
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

/// An RPC provider key as Masumi lists it, its secret in clear.
pub(crate) fn rpc_provider_key(key: v1::RpcProviderKey) -> RpcProviderKey {
    RpcProviderKey {
        created_at: rfc3339(key.create_time.as_ref()).unwrap_or_default(),
        updated_at: rfc3339(key.update_time.as_ref()).unwrap_or_default(),
        network: key.network,
        id: key.id,
        rpc_provider_api_key: key.secret,
        rpc_provider: key.provider,
    }
}

/// The non-zero balances of a key, amounts as decimal strings (a unit brought to zero is
/// gone, as in Masumi).
pub(crate) fn remaining(credits: &[v1::CreditAmount]) -> Vec<Credit> {
    credits
        .iter()
        .filter(|credit| credit.amount != 0)
        .map(|credit| Credit { unit: credit.unit.clone(), amount: credit.amount.to_string() })
        .collect()
}

/// Masumi's amounts, parsed: decimal integers without sign (`signed` allows a leading `-`)
/// that fit in 64 bits, units of at most 150 characters. Anything else refuses the whole
/// request before anything changes.
pub(crate) fn amounts(field: &str, credits: &[Credit], signed: bool) -> Result<Vec<(String, i64)>, Failure> {
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
pub(crate) fn deltas(credits: &[Credit]) -> Result<Vec<v1::CreditDelta>, Failure> {
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

pub(crate) fn check_networks(field: &str, networks: Option<&Vec<Network>>) -> Result<(), Failure> {
    match networks {
        Some(networks) if networks.len() > MAX_NETWORKS => {
            Err(Failure::BadRequest(format!("{field} must hold at most {MAX_NETWORKS} items")))
        }
        Some(_) | None => Ok(()),
    }
}

/// CAIP-2 ids as the 2026-07 document writes them: `^[-a-z0-9]{3,8}:[-_a-zA-Z0-9]{1,32}$`.
pub(crate) fn check_chain_ids(chain_ids: Option<&Vec<String>>) -> Result<(), Failure> {
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

pub(crate) fn check_wallet_ids(ids: Option<&Vec<String>>) -> Result<(), Failure> {
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
pub(crate) fn keep_unread(
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
pub(crate) fn page_size(field: &str, given: Option<f64>, default: usize) -> Result<usize, Failure> {
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

pub(crate) fn check_cursor(field: &str, cursor: Option<&String>, max: usize) -> Result<(), Failure> {
    match cursor {
        Some(cursor) if cursor.chars().count() > max => {
            Err(Failure::BadRequest(format!("{field} must be at most {max} characters")))
        }
        Some(_) | None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use keyward_proto::v1;

    use super::{cursor_key, get_list, handle, put_list, redacted};

    #[test]
    fn tokens_are_shown_redacted_and_handles_are_ascii() {
        let key = |mask: &str| v1::ApiKey { mask: mask.to_owned(), number: 42, ..Default::default() };
        assert_eq!(handle(&key("kw_live_…x7Qa")), "kw_live_*****x7Qa~42");
        assert_eq!(handle(&key("…ösen")), "******sen~42");
        assert_eq!(redacted(&key("kw_live_…x7Qa")), "*****x7Qa");
        assert_eq!(cursor_key(&handle(&key("…ösen"))).as_deref(), Some("42"));
    }

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
}
