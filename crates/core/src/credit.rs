//! Credits: amounts per unit, refill schedules, and the arithmetic on balances. Amounts
//! are whole numbers in `i64`; every sum is checked, never wrapped or saturated.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use uuid::Uuid;

/// Most units one cost, adjustment, balance list or refill list may name.
pub const MAX_UNITS: usize = 100;
/// Longest unit (asset ids are far shorter).
pub const MAX_UNIT_CHARS: usize = 256;
/// Most one verification may cost in one unit: far above any real price, and far enough
/// below `i64::MAX` that the counters of millions of calls stay exact.
pub const MAX_COST: i64 = 1_000_000_000_000;

/// An amount of credits in one unit (`""` is the default unit).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Credit {
    /// The unit.
    pub unit: String,
    /// The amount.
    pub amount: i64,
}

impl Credit {
    /// An amount of `unit`.
    pub fn new(unit: impl Into<String>, amount: i64) -> Self {
        Self { unit: unit.into(), amount }
    }
}

/// How often a refill schedule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefillPeriod {
    /// At every midnight UTC.
    Daily,
    /// At midnight UTC on the first of every month.
    Monthly,
}

impl RefillPeriod {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Monthly => "monthly",
        }
    }

    /// Parses a stored name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "daily" => Some(Self::Daily),
            "monthly" => Some(Self::Monthly),
            _ => None,
        }
    }

    /// The start of the period `at` falls in.
    pub fn period_start(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let day = at.date_naive();
        let first = match self {
            Self::Daily => day,
            Self::Monthly => day.with_day(1).unwrap_or(day),
        };
        midnight(first)
    }

    /// The start of the period after the one `at` falls in.
    pub fn next_start(self, at: DateTime<Utc>) -> DateTime<Utc> {
        let day = at.date_naive();
        let next = match self {
            Self::Daily => day.succ_opt(),
            Self::Monthly => {
                let (year, month) = if day.month() == 12 { (day.year() + 1, 1) } else { (day.year(), day.month() + 1) };
                NaiveDate::from_ymd_opt(year, month, 1)
            }
        };
        next.map_or(DateTime::<Utc>::MAX_UTC, midnight)
    }
}

fn midnight(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN))
}

/// A refill schedule of one unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refill {
    /// The unit.
    pub unit: String,
    /// The balance it is topped up to.
    pub amount: i64,
    /// When.
    pub period: RefillPeriod,
}

/// The id of `owner`'s credit pool in `environment`: derived, not assigned, so a pooled
/// key finds its pool's balances without a read, and every replica agrees on it. Its
/// version bits mark it a custom UUID, so it never equals a key's (v7) id.
pub fn pool_id(owner: &str, environment: &str) -> Uuid {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    digest.update(b"keyward owner pool\0");
    digest.update((owner.len() as u64).to_be_bytes());
    digest.update(owner.as_bytes());
    digest.update(environment.as_bytes());
    let mut bytes = [0; 16];
    bytes.copy_from_slice(&digest.finalize()[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// A charge for one verification: every unit of `costs` or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// The key charged (the key that spends, when it draws on a pool).
    pub key_id: Uuid,
    /// The owner's pool whose balances it debits instead of the key's, if any.
    pub pool_id: Option<Uuid>,
    /// What it costs, each unit once.
    pub costs: Vec<Credit>,
    /// Idempotency token: a repeat for the same key charges nothing more.
    pub request_id: Option<String>,
    /// Who asked (the verifying caller).
    pub actor: String,
}

impl Charge {
    /// The account whose balances it debits: the pool, or else the key.
    pub fn account(&self) -> Uuid {
        self.pool_id.unwrap_or(self.key_id)
    }

    /// What a request id stands for: the key, every unit and amount of the cost, and the
    /// caller, as a SHA-256 hex digest. A replay must match it to get the first answer.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut costs: Vec<&Credit> = self.costs.iter().collect();
        costs.sort();
        let mut digest = Sha256::new();
        digest.update(b"keyward charge\0");
        digest.update(self.key_id.as_bytes());
        // Lengths before the text, so no two different charges encode alike.
        digest.update((self.actor.len() as u64).to_be_bytes());
        digest.update(self.actor.as_bytes());
        digest.update((costs.len() as u64).to_be_bytes());
        for cost in costs {
            digest.update((cost.unit.len() as u64).to_be_bytes());
            digest.update(cost.unit.as_bytes());
            digest.update(cost.amount.to_be_bytes());
        }
        hex::encode(digest.finalize())
    }
}

/// What became of a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Charged; the balances of the charged units afterwards.
    Charged(Vec<Credit>),
    /// Some balance was too low; nothing was charged.
    Exceeded,
    /// The request id was first used for another charge (another key, cost or caller);
    /// nothing was charged.
    RequestIdReused,
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    /// Position in the ledger.
    pub id: i64,
    /// The account: a key, or an owner's pool ([`pool_id`]).
    pub key_id: Uuid,
    /// The unit.
    pub unit: String,
    /// The change.
    pub delta: i64,
    /// The balance right after it.
    pub balance_after: i64,
    /// Why.
    pub reason: String,
    /// The request id of the call that made it.
    pub request_id: Option<String>,
    /// Who made it.
    pub actor: String,
    /// When.
    pub created_at: DateTime<Utc>,
    /// The hold it settles (a capture, an expiry), if any.
    pub hold_id: Option<Uuid>,
    /// On a pool's entry, the key that spent (a charge, a hold's capture or expiry).
    pub spent_by: Option<Uuid>,
}

/// Refuses a verification cost with an amount above [`MAX_COST`] (INVALID_ARGUMENT
/// naming `cost`), whether or not the key is usage-limited.
pub fn check_costs(costs: &[Credit]) -> crate::error::Result<()> {
    let violations: Vec<crate::Violation> = costs
        .iter()
        .filter(|cost| cost.amount > MAX_COST)
        .map(|cost| {
            crate::Violation::new(
                "cost",
                format!("unit {:?} costs {}, more than one verification may cost ({MAX_COST})", cost.unit, cost.amount),
            )
        })
        .collect();
    if violations.is_empty() { Ok(()) } else { Err(crate::Error::InvalidArgument(violations)) }
}

/// Most units, besides the default one, that the operator may let keys which are not
/// usage-limited be counted under.
pub const MAX_COUNTED_UNITS: usize = 32;

/// The units usage can be counted under. A usage-limited key is counted only in units it
/// holds a balance in, since a cost naming any other is `USAGE_EXCEEDED` and not counted;
/// a key that is not usage-limited has no balances to bound it, so its cost may name
/// only the default unit and the operator's configured ones. Every key's usage rows per
/// hour are thus bounded by choices of an admin or the operator, never of a verifier.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountedUnits(std::collections::BTreeSet<String>);

impl CountedUnits {
    /// The operator's units, each well formed, at most [`MAX_COUNTED_UNITS`] of them.
    pub fn new(units: impl IntoIterator<Item = String>) -> crate::error::Result<Self> {
        let units: std::collections::BTreeSet<String> = units.into_iter().filter(|unit| !unit.is_empty()).collect();
        let mut checks = crate::validate::Checks::new();
        if units.len() > MAX_COUNTED_UNITS {
            checks.fail("usage_units", format!("must name at most {MAX_COUNTED_UNITS} units, got {}", units.len()));
        }
        for unit in &units {
            checks.unit("usage_units", unit);
        }
        checks.finish()?;
        Ok(Self(units))
    }

    /// Refuses a cost a key may not be counted under (INVALID_ARGUMENT naming `cost`).
    pub fn admit(&self, usage_limited: bool, costs: &[Credit]) -> crate::error::Result<()> {
        if usage_limited {
            return Ok(());
        }
        let allowed = if self.0.is_empty() {
            "only the default unit \"\"".to_owned()
        } else {
            let mut named: Vec<String> = self.0.iter().take(8).map(|unit| format!("{unit:?}")).collect();
            if self.0.len() > named.len() {
                named.push(format!("{} more", self.0.len() - named.len()));
            }
            format!("only the default unit \"\" and the server's usage units ({})", named.join(", "))
        };
        let mut refused = costs.iter().filter(|cost| !cost.unit.is_empty() && !self.0.contains(&cost.unit));
        let Some(first) = refused.next() else { return Ok(()) };
        // One violation naming one unit: a hundred long units named back would outgrow the
        // headers a client accepts.
        let more = match refused.count() {
            0 => String::new(),
            others => format!(" (and {others} more)"),
        };
        Err(crate::Error::invalid(
            "cost",
            format!(
                "unit {:?}{more} is not counted: the key is not usage-limited, so its cost may name {allowed}",
                first.unit
            ),
        ))
    }
}

/// `balance + delta`, refusing results below zero or above `i64::MAX`.
pub fn apply_delta(unit: &str, balance: i64, delta: i64) -> crate::error::Result<i64> {
    match balance.checked_add(delta) {
        Some(next) if next >= 0 => Ok(next),
        Some(_) => Err(crate::Error::FailedPrecondition {
            reason: "INSUFFICIENT_CREDITS",
            message: format!(
                "unit {unit:?} holds {balance} credits, too few to take away {}; nothing was changed",
                delta.unsigned_abs()
            ),
        }),
        None => Err(crate::Error::invalid(
            "deltas",
            format!("unit {unit:?} would exceed the largest balance ({}); nothing was changed", i64::MAX),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).map(|at| at.with_timezone(&Utc)).unwrap_or_default()
    }

    #[test]
    fn a_fingerprint_covers_key_cost_and_caller() {
        let key = Uuid::now_v7();
        let charge = |key_id, costs: &[(&str, i64)], actor: &str| Charge {
            key_id,
            pool_id: None,
            costs: costs.iter().map(|(unit, amount)| Credit::new(*unit, *amount)).collect(),
            request_id: Some("r".to_owned()),
            actor: actor.to_owned(),
        };
        let first = charge(key, &[("", 1), ("ada", 2)], "key:a").fingerprint();
        assert_eq!(first, charge(key, &[("ada", 2), ("", 1)], "key:a").fingerprint(), "order does not matter");
        for other in [
            charge(Uuid::now_v7(), &[("", 1), ("ada", 2)], "key:a"),
            charge(key, &[("", 1000), ("ada", 2)], "key:a"),
            charge(key, &[("", 1)], "key:a"),
            charge(key, &[("", 1), ("ad", 2)], "key:a"),
            charge(key, &[("", 1), ("ada", 2)], "key:b"),
        ] {
            assert_ne!(first, other.fingerprint(), "{other:?}");
        }
    }

    #[test]
    fn costs_are_bounded_per_unit() {
        assert!(check_costs(&[Credit::new("", MAX_COST), Credit::new("ada", 1)]).is_ok());
        let Err(crate::Error::InvalidArgument(violations)) =
            check_costs(&[Credit::new("", i64::MAX), Credit::new("ada", 1), Credit::new("x", MAX_COST + 1)])
        else {
            panic!("an absurd cost is refused");
        };
        assert_eq!(violations.len(), 2);
        assert!(violations.iter().all(|violation| violation.field == "cost"));
    }

    #[test]
    fn unmetered_costs_name_only_counted_units() {
        let none = CountedUnits::default();
        assert!(none.admit(false, &[Credit::new("", 3)]).is_ok());
        assert!(none.admit(true, &[Credit::new("ada", 3)]).is_ok(), "a metered key's balances bound it");
        let Err(crate::Error::InvalidArgument(violations)) =
            none.admit(false, &[Credit::new("", 1), Credit::new("made-up", 1), Credit::new("other", 1)])
        else {
            panic!("made-up units are refused");
        };
        assert_eq!(violations.len(), 1);
        assert!(violations[0].description.contains("\"made-up\" (and 1 more)"), "{violations:?}");
        let tokens = CountedUnits::new(["tokens".to_owned(), String::new()]).unwrap();
        assert!(tokens.admit(false, &[Credit::new("tokens", 1), Credit::new("", 1)]).is_ok());
        assert!(tokens.admit(false, &[Credit::new("bytes", 1)]).is_err());
        assert!(CountedUnits::new((0..=MAX_COUNTED_UNITS).map(|n| format!("u{n}"))).is_err());
        assert!(CountedUnits::new(["has space".to_owned()]).is_err());
    }

    #[test]
    fn periods_start_at_midnight_utc() {
        let now = at("2026-12-31T23:59:59Z");
        assert_eq!(RefillPeriod::Daily.period_start(now), at("2026-12-31T00:00:00Z"));
        assert_eq!(RefillPeriod::Daily.next_start(now), at("2027-01-01T00:00:00Z"));
        assert_eq!(RefillPeriod::Monthly.period_start(now), at("2026-12-01T00:00:00Z"));
        assert_eq!(RefillPeriod::Monthly.next_start(now), at("2027-01-01T00:00:00Z"));
        assert_eq!(RefillPeriod::Monthly.next_start(at("2026-01-31T10:00:00Z")), at("2026-02-01T00:00:00Z"));
    }

    #[test]
    fn deltas_are_checked() {
        let big = 1_i64 << 62;
        assert_eq!(apply_delta("", big, big - 1).ok(), Some(i64::MAX));
        assert!(matches!(apply_delta("", big, big), Err(crate::Error::InvalidArgument(_))));
        assert!(matches!(apply_delta("", i64::MAX, 1), Err(crate::Error::InvalidArgument(_))));
        assert!(matches!(apply_delta("", 5, -6), Err(crate::Error::FailedPrecondition { .. })));
        assert_eq!(apply_delta("", 5, -5).ok(), Some(0));
    }
}
