//! Webhook endpoints and the rules of delivering to them: their signing secrets, the
//! retry schedule, and when an endpoint counts as failing.

use std::{collections::BTreeSet, time::Duration};

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use rand::RngCore;
use secrecy::SecretString;
use uuid::Uuid;

use crate::event::EventType;

/// Prefix of signing secrets (Standard Webhooks).
pub const SECRET_PREFIX: &str = "whsec_";

/// A receiver of events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// UUID v7.
    pub id: Uuid,
    /// Where events are posted.
    pub url: String,
    /// Free text.
    pub description: String,
    /// The event types it receives.
    pub event_types: Subscription,
    /// Whether new events are given to it.
    pub enabled: bool,
    /// Whether its last `consecutive_failures` reached the failure threshold.
    pub failing: bool,
    /// Failed attempts since the last success.
    pub consecutive_failures: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// The event types an endpoint receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscription {
    /// Every type, those added after the endpoint was made too (`*`). Kept as the wildcard,
    /// never expanded, so a new type reaches the endpoint without an update.
    All,
    /// These types only.
    Only(BTreeSet<EventType>),
}

impl Subscription {
    /// The name that stands for every type, alone in an endpoint's list.
    pub const WILDCARD: &'static str = "*";

    /// Whether an event of `kind` is delivered to the endpoint.
    pub fn receives(&self, kind: EventType) -> bool {
        match self {
            Self::All => true,
            Self::Only(kinds) => kinds.contains(&kind),
        }
    }

    /// The names it is stored and shown as: `["*"]`, or the types' names.
    pub fn names(&self) -> Vec<&'static str> {
        match self {
            Self::All => vec![Self::WILDCARD],
            Self::Only(kinds) => kinds.iter().map(|kind| kind.as_str()).collect(),
        }
    }

    /// The subscription these stored names make; `None` if one is unknown, or if `*` is
    /// not alone.
    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let names: Vec<&str> = names.into_iter().collect();
        if names == [Self::WILDCARD] {
            return Some(Self::All);
        }
        names.into_iter().map(EventType::parse).collect::<Option<_>>().map(Self::Only)
    }
}

/// The fields an endpoint update may change; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct EndpointPatch {
    /// New URL.
    pub url: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New event types.
    pub event_types: Option<Subscription>,
    /// New enabled flag.
    pub enabled: Option<bool>,
}

impl EndpointPatch {
    /// `endpoint` with the patch applied at `now`.
    pub fn apply(&self, endpoint: &Endpoint, now: DateTime<Utc>) -> Endpoint {
        let Self { url, description, event_types, enabled } = self;
        Endpoint {
            url: url.clone().unwrap_or_else(|| endpoint.url.clone()),
            description: description.clone().unwrap_or_else(|| endpoint.description.clone()),
            event_types: event_types.clone().unwrap_or_else(|| endpoint.event_types.clone()),
            enabled: enabled.unwrap_or(endpoint.enabled),
            updated_at: now,
            ..endpoint.clone()
        }
    }
}

/// A new signing secret: `whsec_` and base64 of 32 random bytes.
pub fn new_secret() -> SecretString {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    SecretString::from(format!("{SECRET_PREFIX}{}", STANDARD.encode(key)))
}

/// When deliveries are tried again: the first attempt is made at once, and the n-th
/// entry is the wait after the n-th failed attempt; after the last, a delivery is given up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetrySchedule(Vec<Duration>);

impl RetrySchedule {
    /// The schedule of these waits (none: one attempt only).
    pub fn new(waits: Vec<Duration>) -> Self {
        Self(waits)
    }

    /// The wait before the next attempt after `made` attempts failed; `None` once every
    /// attempt of the schedule was made.
    pub fn after(&self, made: i64) -> Option<Duration> {
        usize::try_from(made).ok().and_then(|made| made.checked_sub(1)).and_then(|at| self.0.get(at).copied())
    }

    /// How many attempts a delivery gets.
    pub fn attempts(&self) -> usize {
        self.0.len() + 1
    }
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver answered 2xx.
    Delivered {
        /// Its status.
        status: u16,
        /// The start of its body.
        excerpt: String,
    },
    /// It answered otherwise, or not at all.
    Failed {
        /// Its status, if it answered.
        status: Option<u16>,
        /// What went wrong.
        error: String,
        /// The start of its body.
        excerpt: String,
    },
}

/// Longest excerpt of a receiver's body that is kept.
pub const MAX_EXCERPT_BYTES: usize = 256;

/// The first [`MAX_EXCERPT_BYTES`] of a body, cut at a character boundary.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_EXCERPT_BYTES)]).into_owned();
    text.trim_end_matches('\u{fffd}').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_gives_one_wait_per_attempt_then_stops() {
        let schedule = RetrySchedule::new(vec![Duration::from_secs(5), Duration::from_secs(300)]);
        assert_eq!(schedule.after(1), Some(Duration::from_secs(5)));
        assert_eq!(schedule.after(2), Some(Duration::from_secs(300)));
        assert_eq!(schedule.after(3), None);
        assert_eq!(schedule.attempts(), 3);
        assert_eq!(RetrySchedule::new(Vec::new()).after(1), None);
    }

    #[test]
    fn the_wildcard_receives_every_type_and_stands_alone() {
        assert_eq!(Subscription::from_names(["*"]), Some(Subscription::All));
        assert!(EventType::ALL.into_iter().all(|kind| Subscription::All.receives(kind)));
        assert_eq!(Subscription::All.names(), ["*"]);
        let only = Subscription::from_names(["api_key.created"]).unwrap();
        assert!(only.receives(EventType::KeyCreated) && !only.receives(EventType::KeyRevoked));
        assert_eq!(only.names(), ["api_key.created"]);
        assert_eq!(Subscription::from_names(["*", "api_key.created"]), None);
    }

    #[test]
    fn secrets_are_standard_webhooks_secrets() {
        use secrecy::ExposeSecret;
        let secret = new_secret();
        let key = secret.expose_secret().strip_prefix(SECRET_PREFIX).unwrap();
        assert_eq!(STANDARD.decode(key).unwrap().len(), 32);
    }

    #[test]
    fn excerpts_are_short() {
        assert_eq!(excerpt(&[b'a'; 1000]).len(), MAX_EXCERPT_BYTES);
        assert_eq!(excerpt(b"ok"), "ok");
    }
}
