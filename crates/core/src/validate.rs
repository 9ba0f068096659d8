//! Field rules shared by every surface. Each check adds violations to [`Checks`]; the
//! request is refused once, with every bad field named.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use crate::{
    Error, Violation,
    address::internal_address,
    credit::{Credit, MAX_UNIT_CHARS, MAX_UNITS},
};

/// Which amounts a list of credits may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmountRule {
    /// At least 1 (costs, refill amounts).
    Positive,
    /// At least 0 (initial balances).
    NonNegative,
    /// Any but 0 (adjustments).
    NonZero,
}

impl AmountRule {
    fn describe(self) -> &'static str {
        match self {
            Self::Positive => "amount must be at least 1",
            Self::NonNegative => "amount must not be negative",
            Self::NonZero => "delta must not be zero (nor -2^63)",
        }
    }
}

/// How a request names a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRef {
    /// By its id.
    Id(Uuid),
    /// By its stable number.
    Number(i64),
}

/// The key `value` names, if it is well formed: its id as a UUID in any form (upper
/// case, braced, URN) or its positive number in decimal.
pub fn key_ref(value: &str) -> Option<KeyRef> {
    if is_number(value) {
        return value.parse::<i64>().ok().filter(|number| *number > 0).map(KeyRef::Number);
    }
    Uuid::try_parse(value).ok().filter(|id| !id.is_nil()).map(KeyRef::Id)
}

/// Whether `value` is written as a key number (it may still be out of range).
fn is_number(value: &str) -> bool {
    !value.is_empty() && value.len() <= 19 && value.bytes().all(|b| b.is_ascii_digit())
}

/// Longest key name.
pub const MAX_NAME_CHARS: usize = 200;
/// Longest owner, organisation or other subject id.
pub const MAX_SUBJECT_CHARS: usize = 200;
/// Most scopes or networks on one key.
pub const MAX_SET_LEN: usize = 64;
/// Longest scope or network string.
pub const MAX_LABEL_CHARS: usize = 100;
/// Most metadata entries.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Longest metadata key.
pub const MAX_METADATA_KEY_CHARS: usize = 64;
/// Longest metadata value.
pub const MAX_METADATA_VALUE_CHARS: usize = 1024;

/// Longest webhook endpoint URL.
pub const MAX_WEBHOOK_URL_CHARS: usize = 2000;
/// Longest webhook endpoint description.
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// Longest role name.
pub const MAX_ROLE_NAME_CHARS: usize = 64;
/// Most roles one key holds.
pub const MAX_KEY_ROLES: usize = 20;
/// A role name as the document states it (the check below is the same rule).
pub const ROLE_NAME_PATTERN: &str = "^[a-z0-9][a-z0-9._:-]{0,63}$";

/// Most violations reported for one request: enough to fix it, never a flood.
pub const MAX_VIOLATIONS: usize = 10;
/// Longest reason of a credit adjustment.
pub const MAX_REASON_CHARS: usize = 200;
/// Ledger reason of an adjustment that gives none.
pub const DEFAULT_REASON: &str = "adjust";

/// Accumulates violations of one request, at most [`MAX_VIOLATIONS`] of them.
#[derive(Debug, Default)]
pub struct Checks(Vec<Violation>);

impl Checks {
    /// Starts an empty set of violations.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records a violation; past [`MAX_VIOLATIONS`], one last entry says the list stops.
    pub fn fail(&mut self, field: impl Into<String>, description: impl Into<String>) {
        match self.0.len() {
            len if len < MAX_VIOLATIONS => self.0.push(Violation::new(field, description)),
            MAX_VIOLATIONS => self.0.push(Violation::new(
                "request",
                format!("has more than {MAX_VIOLATIONS} invalid fields; fix these first"),
            )),
            _ => {}
        }
    }

    /// An optional ledger reason: at most [`MAX_REASON_CHARS`] characters without control
    /// characters. Returns the reason to record ([`DEFAULT_REASON`] when blank).
    pub fn reason(&mut self, field: &str, value: &str) -> String {
        if value.chars().count() > MAX_REASON_CHARS || value.chars().any(char::is_control) {
            self.fail(field, format!("must be at most {MAX_REASON_CHARS} characters without control characters"));
        }
        if value.trim().is_empty() { DEFAULT_REASON.to_owned() } else { value.to_owned() }
    }

    /// A required, printable name of 1 to [`MAX_NAME_CHARS`] characters.
    pub fn name(&mut self, field: &str, value: &str) {
        let len = value.chars().count();
        if value.trim().is_empty() {
            self.fail(field, "is required and must not be blank");
        } else if len > MAX_NAME_CHARS {
            self.fail(field, format!("must be at most {MAX_NAME_CHARS} characters, got {len}"));
        } else if value.chars().any(char::is_control) {
            self.fail(field, "must not contain control characters");
        }
    }

    /// An optional subject id: at most [`MAX_SUBJECT_CHARS`] printable characters.
    pub fn subject(&mut self, field: &str, value: &str) {
        let len = value.chars().count();
        if len > MAX_SUBJECT_CHARS {
            self.fail(field, format!("must be at most {MAX_SUBJECT_CHARS} characters, got {len}"));
        } else if value.chars().any(|c| c.is_control()) {
            self.fail(field, "must not contain control characters");
        }
    }

    /// Scopes or networks: each 1 to [`MAX_LABEL_CHARS`] characters without whitespace,
    /// at most [`MAX_SET_LEN`] of them. Returns the set (duplicates folded).
    pub fn labels(&mut self, field: &str, values: &[String]) -> BTreeSet<String> {
        if values.len() > MAX_SET_LEN {
            self.fail(field, format!("must hold at most {MAX_SET_LEN} entries, got {}", values.len()));
            return BTreeSet::new();
        }
        for (index, value) in values.iter().enumerate() {
            self.label(&format!("{field}[{index}]"), value);
        }
        values.iter().cloned().collect()
    }

    /// One required label (scope, network, provider): 1 to [`MAX_LABEL_CHARS`] characters
    /// without whitespace.
    pub fn label(&mut self, field: &str, value: &str) {
        let len = value.chars().count();
        if len == 0 || len > MAX_LABEL_CHARS || value.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.fail(field, format!("must be 1 to {MAX_LABEL_CHARS} characters without whitespace"));
        }
    }

    /// A role name: 1 to [`MAX_ROLE_NAME_CHARS`] of `[a-z0-9._:-]`, starting with a
    /// letter or digit ([`ROLE_NAME_PATTERN`]).
    pub fn role_name(&mut self, field: &str, value: &str) {
        let allowed = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b':' | b'-');
        let well_formed = value.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && value.len() <= MAX_ROLE_NAME_CHARS
            && value.bytes().all(allowed);
        if !well_formed {
            self.fail(
                field,
                format!(
                    "must be 1 to {MAX_ROLE_NAME_CHARS} characters of a-z, 0-9, '.', '_', ':' and '-', starting with a letter or digit"
                ),
            );
        }
    }

    /// The roles of a key: at most [`MAX_KEY_ROLES`] role names. Returns the set.
    pub fn role_names(&mut self, field: &str, values: &[String]) -> BTreeSet<String> {
        if values.len() > MAX_KEY_ROLES {
            self.fail(field, format!("must hold at most {MAX_KEY_ROLES} roles, got {}", values.len()));
            return BTreeSet::new();
        }
        for (index, value) in values.iter().enumerate() {
            self.role_name(&format!("{field}[{index}]"), value);
        }
        values.iter().cloned().collect()
    }

    /// Metadata: at most [`MAX_METADATA_ENTRIES`] entries with bounded keys and values.
    pub fn metadata(
        &mut self,
        field: &str,
        values: &std::collections::HashMap<String, String>,
    ) -> BTreeMap<String, String> {
        if values.len() > MAX_METADATA_ENTRIES {
            self.fail(field, format!("must hold at most {MAX_METADATA_ENTRIES} entries, got {}", values.len()));
            return BTreeMap::new();
        }
        for (key, value) in values {
            let key_len = key.chars().count();
            if key_len == 0 || key_len > MAX_METADATA_KEY_CHARS || key.chars().any(char::is_control) {
                // A bad key is not echoed in the field path: it may be long or forge log lines.
                self.fail(
                    field,
                    format!("keys must be 1 to {MAX_METADATA_KEY_CHARS} characters without control characters"),
                );
                continue;
            }
            if value.chars().count() > MAX_METADATA_VALUE_CHARS || value.chars().any(char::is_control) {
                self.fail(
                    format!("{field}.{key}"),
                    format!("values must be at most {MAX_METADATA_VALUE_CHARS} characters without control characters"),
                );
            }
        }
        values.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// A required UUID. A value that fails its check comes back as the nil UUID, which
    /// names no key and never leaves the checks: [`Checks::finish`] refuses the request.
    pub fn uuid(&mut self, field: &str, value: &str) -> Uuid {
        if value.is_empty() {
            self.fail(field, "is required");
            return Uuid::nil();
        }
        Uuid::try_parse(value).unwrap_or_else(|_| {
            self.fail(field, "must be a UUID such as 0190b4a4-6d8e-7c3a-9f1e-2b5c7d9e1f30");
            Uuid::nil()
        })
    }

    /// A key named by its id (a UUID) or by its number (the integer id of the compatible
    /// REST APIs), in decimal. A value that fails its check comes back as the nil UUID,
    /// which [`Checks::finish`] never lets through.
    pub fn key_ref(&mut self, field: &str, value: &str) -> KeyRef {
        if let Some(key) = key_ref(value) {
            return key;
        }
        if is_number(value) {
            self.fail(field, "must be a UUID or a positive key number");
            return KeyRef::Id(Uuid::nil());
        }
        KeyRef::Id(self.uuid(field, value))
    }

    /// An optional idempotency token (AIP-155): empty, or a UUID.
    pub fn request_id(&mut self, field: &str, value: &str) -> Option<String> {
        if value.is_empty() {
            return None;
        }
        match Uuid::try_parse(value) {
            Ok(id) => Some(id.hyphenated().to_string()),
            Err(_) => {
                self.fail(field, "must be a UUID (use a fresh UUID v4 per logical request)");
                None
            }
        }
    }

    /// A list of credit amounts or deltas: at most [`MAX_UNITS`] entries, each unit valid
    /// and named once, each amount allowed by `rule`. Returns the entries sorted by unit.
    pub fn credits(&mut self, field: &str, entries: &[Credit], rule: AmountRule) -> Vec<Credit> {
        if entries.len() > MAX_UNITS {
            self.fail(field, format!("must hold at most {MAX_UNITS} units, got {}", entries.len()));
            return Vec::new();
        }
        let mut seen = BTreeSet::new();
        for (index, entry) in entries.iter().enumerate() {
            self.unit(&format!("{field}[{index}].unit"), &entry.unit);
            if !seen.insert(entry.unit.as_str()) {
                self.fail(format!("{field}[{index}].unit"), format!("names unit {:?} a second time", entry.unit));
            }
            let allowed = match rule {
                AmountRule::Positive => entry.amount > 0,
                AmountRule::NonNegative => entry.amount >= 0,
                // i64::MIN has no positive counterpart, so taking it away could not be undone.
                AmountRule::NonZero => entry.amount != 0 && entry.amount != i64::MIN,
            };
            if !allowed {
                self.fail(format!("{field}[{index}]"), rule.describe());
            }
        }
        let mut sorted = entries.to_vec();
        sorted.sort();
        sorted
    }

    /// A credit unit: empty (the default unit) or up to [`MAX_UNIT_CHARS`] visible ASCII characters.
    pub fn unit(&mut self, field: &str, value: &str) {
        if value.len() > MAX_UNIT_CHARS || !value.chars().all(|c| c.is_ascii_graphic()) {
            self.fail(
                field,
                format!("must be empty (the default unit) or up to {MAX_UNIT_CHARS} visible ASCII characters"),
            );
        }
    }

    /// A webhook endpoint's URL: absolute, `https` (or `http` where `allow_http`), with a
    /// host, no user or password and no fragment; without `allow_http`, not an address
    /// that is not globally reachable either.
    pub fn webhook_url(&mut self, field: &str, value: &str, allow_http: bool) -> Option<url::Url> {
        let url = match url::Url::parse(value) {
            Ok(url) => url,
            Err(err) => {
                self.fail(field, format!("is not an absolute URL: {err}"));
                return None;
            }
        };
        let failures = self.0.len();
        match url.scheme() {
            "https" => {}
            "http" if allow_http => {}
            "http" => self.fail(field, "must be https:// (this server does not allow http:// endpoints)"),
            other => self.fail(field, format!("must be https://, not {other}://")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            self.fail(field, "must not hold a user name or password; authenticate with the signing secret");
        }
        if url.fragment().is_some() {
            self.fail(field, "must not have a #fragment");
        }
        if value.len() > MAX_WEBHOOK_URL_CHARS {
            self.fail(field, format!("must be at most {MAX_WEBHOOK_URL_CHARS} characters"));
        }
        let internal = match url.host() {
            None => {
                self.fail(field, "must name a host");
                false
            }
            Some(url::Host::Domain(domain)) => {
                if !dns_name(domain) {
                    self.fail(field, "must name its host by a DNS name: labels of letters, digits and inner hyphens");
                }
                domain.eq_ignore_ascii_case("localhost") || domain.ends_with(".localhost")
            }
            Some(url::Host::Ipv4(ip)) => internal_address(ip.into()),
            Some(url::Host::Ipv6(ip)) => internal_address(ip.into()),
        };
        if internal && !allow_http {
            self.fail(
                field,
                "must be globally reachable on this server, not loopback, private, shared, link-local or reserved",
            );
        }
        (self.0.len() == failures).then_some(url)
    }

    /// A webhook endpoint's event types: at least one, each a known type, each once; or
    /// `*` alone, for every type.
    pub fn event_types(&mut self, field: &str, values: &[String]) -> crate::webhook::Subscription {
        use crate::{event::EventType, webhook::Subscription};
        if values.is_empty() {
            self.fail(field, "must name at least one event type, or `*` for every type");
        }
        if values.len() > 1 && values.iter().any(|value| value == Subscription::WILDCARD) {
            self.fail(field, "`*` means every event type, so it stands alone: name `*` only, or the types without it");
            return Subscription::All;
        }
        if values.iter().any(|value| value == Subscription::WILDCARD) {
            return Subscription::All;
        }
        let mut kinds = BTreeSet::new();
        for value in values {
            match EventType::parse(value) {
                Some(kind) => {
                    if !kinds.insert(kind) {
                        self.fail(field, format!("names {value:?} twice"));
                    }
                }
                None => {
                    let known: Vec<&str> = EventType::ALL.iter().map(|kind| kind.as_str()).collect();
                    self.fail(
                        field,
                        format!(
                            "{value:?} is not an event type; known: {}, or `*` alone for every type",
                            known.join(", ")
                        ),
                    );
                }
            }
        }
        Subscription::Only(kinds)
    }

    /// Free text of at most `max` characters.
    pub fn text(&mut self, field: &str, value: &str, max: usize) {
        if value.chars().count() > max {
            self.fail(field, format!("must be at most {max} characters"));
        }
    }

    /// Refuses the request if any check failed.
    pub fn finish(self) -> crate::error::Result<()> {
        if self.0.is_empty() { Ok(()) } else { Err(Error::InvalidArgument(self.0)) }
    }
}

/// A host name a resolver can look up (RFC 1123, after IDNA, which the URL parser applies):
/// the URL parser itself lets through characters such as `*` that no DNS name holds.
fn dns_name(domain: &str) -> bool {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    domain.len() <= 253
        && domain.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}
