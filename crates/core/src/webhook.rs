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
    pub event_types: BTreeSet<EventType>,
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

/// The fields an endpoint update may change; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct EndpointPatch {
    /// New URL.
    pub url: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New event types.
    pub event_types: Option<BTreeSet<EventType>>,
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
