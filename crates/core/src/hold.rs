//! Credit holds (authorize → capture / release): what a hold is, how long it lives, and
//! what a capture may charge. The store applies them; this module decides.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::{Error, credit::Credit, error::Result};

/// How long a hold lives when the request does not say.
pub const DEFAULT_TTL: TimeDelta = TimeDelta::minutes(15);
/// The longest a hold may live.
pub const MAX_TTL: TimeDelta = TimeDelta::hours(24);

/// Ledger reason of a capture's charge.
pub const REASON_CAPTURE: &str = "capture";
/// Ledger reason of a hold the server released at its expiry.
pub const REASON_EXPIRED: &str = "hold_expired";

/// Where a hold stands. It leaves `Live` once and never comes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldState {
    /// Reserving its amounts.
    Live,
    /// Captured: part or all of it charged, the rest released.
    Captured,
    /// Released by request: nothing charged.
    Released,
    /// Released by the server at its expiry: nothing charged.
    Expired,
}

impl HoldState {
    /// Stored name; never changes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "live",
            Self::Captured => "captured",
            Self::Released => "released",
            Self::Expired => "expired",
        }
    }

    /// The state a stored name stands for.
    pub fn parse(text: &str) -> Option<Self> {
        [Self::Live, Self::Captured, Self::Released, Self::Expired].into_iter().find(|state| state.as_str() == text)
    }
}

/// A hold as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// Its id (a UUIDv7: ids ascend with time).
    pub id: Uuid,
    /// The key whose verification made it.
    pub key_id: Uuid,
    /// The owner's pool it reserves from, when the key drew on one; else the key's own balances.
    pub pool_id: Option<Uuid>,
    /// Who made it.
    pub actor: String,
    /// What it reserved, ordered by unit.
    pub amounts: Vec<Credit>,
    /// What its capture charged, ordered by unit (empty unless captured).
    pub captured: Vec<Credit>,
    /// Where it stands.
    pub state: HoldState,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When the server releases it unless settled before.
    pub expires_at: DateTime<Utc>,
    /// When it left `Live`.
    pub settled_at: Option<DateTime<Utc>>,
    /// The request id of the capture or release that settled it.
    pub settle_request_id: Option<String>,
}

impl Hold {
    /// The account whose balances it reserves: the pool, or else the key.
    pub fn account(&self) -> Uuid {
        self.pool_id.unwrap_or(self.key_id)
    }

    /// Refuses to settle a hold that is not live (or is past its expiry at `now`), naming
    /// how and when it was settled.
    pub fn check_live(&self, now: DateTime<Utc>) -> Result<()> {
        let how = match self.state {
            HoldState::Live if self.expires_at > now => return Ok(()),
            HoldState::Live | HoldState::Expired => format!("expired at {}", self.expires_at.to_rfc3339()),
            HoldState::Captured => "was already captured".to_owned(),
            HoldState::Released => "was already released".to_owned(),
        };
        let by = match (&self.settle_request_id, self.settled_at) {
            (Some(request_id), Some(at)) => format!(" by request {request_id} at {}", at.to_rfc3339()),
            (None, Some(at)) => format!(" at {}", at.to_rfc3339()),
            _ => String::new(),
        };
        Err(Error::FailedPrecondition {
            reason: "HOLD_SETTLED",
            message: format!("hold {} {how}{by}; nothing was changed", self.id),
        })
    }

    /// What a capture of `amounts` charges per reserved unit (0 for units it leaves out),
    /// ordered by unit: FAILED_PRECONDITION, charging nothing, when an amount exceeds
    /// what the hold reserved for its unit or names a unit it did not reserve.
    pub fn capture(&self, amounts: &[Credit]) -> Result<Vec<Credit>> {
        let reserved: BTreeMap<&str, i64> =
            self.amounts.iter().map(|credit| (credit.unit.as_str(), credit.amount)).collect();
        let mut charged: BTreeMap<&str, i64> = reserved.keys().map(|unit| (*unit, 0)).collect();
        for amount in amounts {
            match reserved.get(amount.unit.as_str()) {
                Some(&held) if amount.amount <= held => {
                    charged.insert(amount.unit.as_str(), amount.amount);
                }
                Some(&held) => {
                    return Err(Error::FailedPrecondition {
                        reason: "CAPTURE_EXCEEDS_HOLD",
                        message: format!(
                            "unit {:?}: capturing {} exceeds the {held} hold {} reserved; nothing was charged",
                            amount.unit, amount.amount, self.id
                        ),
                    });
                }
                None => {
                    return Err(Error::FailedPrecondition {
                        reason: "CAPTURE_EXCEEDS_HOLD",
                        message: format!(
                            "unit {:?}: hold {} reserved nothing of it; nothing was charged",
                            amount.unit, self.id
                        ),
                    });
                }
            }
        }
        Ok(charged.into_iter().map(|(unit, amount)| Credit::new(unit, amount)).collect())
    }
}

/// What became of a hold asked for by a verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Reserved: the hold's id.
    Held(Uuid),
    /// Some available balance (balance minus live holds) was too low; nothing reserved.
    Exceeded,
    /// The request id was first used for another hold (another cost or caller).
    RequestIdReused,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hold(state: HoldState) -> Hold {
        let at = DateTime::UNIX_EPOCH;
        Hold {
            id: Uuid::nil(),
            pool_id: None,
            key_id: Uuid::nil(),
            actor: "key:x".into(),
            amounts: vec![Credit::new("", 10), Credit::new("gpu", 5)],
            captured: Vec::new(),
            state,
            created_at: at,
            expires_at: at + TimeDelta::minutes(15),
            settled_at: None,
            settle_request_id: None,
        }
    }

    #[test]
    fn a_capture_charges_up_to_each_reserved_unit_and_nothing_of_units_left_out() {
        let charged = hold(HoldState::Live).capture(&[Credit::new("gpu", 5)]).unwrap();
        assert_eq!(charged, vec![Credit::new("", 0), Credit::new("gpu", 5)]);
    }

    #[test]
    fn a_capture_over_the_hold_or_of_another_unit_is_refused() {
        let over = hold(HoldState::Live).capture(&[Credit::new("", 11)]).unwrap_err();
        assert!(matches!(over, Error::FailedPrecondition { reason: "CAPTURE_EXCEEDS_HOLD", .. }));
        let other = hold(HoldState::Live).capture(&[Credit::new("tokens", 1)]).unwrap_err();
        assert!(matches!(other, Error::FailedPrecondition { reason: "CAPTURE_EXCEEDS_HOLD", .. }));
    }

    #[test]
    fn only_a_live_hold_before_its_expiry_may_be_settled_and_a_refusal_names_the_earlier_settlement() {
        let live = hold(HoldState::Live);
        assert!(live.check_live(live.created_at).is_ok());
        assert!(live.check_live(live.expires_at).is_err());
        let mut captured = hold(HoldState::Captured);
        captured.settle_request_id = Some("r-1".into());
        captured.settled_at = Some(captured.created_at);
        let Err(Error::FailedPrecondition { message, .. }) = captured.check_live(captured.created_at) else {
            panic!("a captured hold was settled again");
        };
        assert!(message.contains("already captured by request r-1"), "{message}");
    }

    #[test]
    fn every_state_parses_back_from_its_name() {
        for state in [HoldState::Live, HoldState::Captured, HoldState::Released, HoldState::Expired] {
            assert_eq!(HoldState::parse(state.as_str()), Some(state));
        }
    }
}
