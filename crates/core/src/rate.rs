//! Rate limits: token buckets of a key, which of them a verification applies, and the
//! integer arithmetic of a bucket shared by every replica.
//!
//! A bucket's level is kept in *units*: one token is `period_ms` units and the bucket
//! refills `limit` units per millisecond, so refill is exact integer arithmetic and never
//! drifts. A full bucket holds `burst × period_ms` units, below 2^62 at the largest
//! limits allowed here.

use std::collections::BTreeSet;

use crate::validate::Checks;

/// Largest `limit`, `burst` and cost.
pub const MAX_AMOUNT: i64 = 1_000_000_000;
/// Shortest period.
pub const MIN_PERIOD_MS: i64 = 1_000;
/// Longest period: 30 days.
pub const MAX_PERIOD_MS: i64 = 30 * 24 * 3_600_000;
/// Most limits on one key.
pub const MAX_LIMITS: usize = 20;

/// A token bucket: `limit` per `period_ms`, bursts up to `burst`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RateLimit {
    /// Unique on its key; a label.
    pub name: String,
    /// Cost admitted per period.
    pub limit: i64,
    /// The period in milliseconds.
    pub period_ms: i64,
    /// Largest cost admitted at once.
    pub burst: i64,
    /// Applied to every verification, not only those naming it.
    pub auto_apply: bool,
}

impl RateLimit {
    /// The bucket arithmetic of this limit.
    pub fn shape(&self) -> Shape {
        Shape { limit: self.limit, unit: self.period_ms, capacity: self.burst * self.period_ms }
    }
}

/// A limit as a request states it, before its checks: `burst` and `period_ms` unset when
/// absent or not a whole number of milliseconds.
#[derive(Debug, Clone)]
pub struct RateLimitInput {
    /// The name.
    pub name: String,
    /// The limit.
    pub limit: i64,
    /// The period, if it is a whole, non-negative number of milliseconds.
    pub period_ms: Option<i64>,
    /// The burst, if given.
    pub burst: Option<i64>,
    /// Whether it applies to every verification.
    pub auto_apply: bool,
}

/// A limit a verification names, and its cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateUse {
    /// The limit's name.
    pub name: String,
    /// Cost under it.
    pub cost: i64,
}

/// The integer arithmetic of one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// Units added per millisecond.
    pub limit: i64,
    /// Units per token (the period in milliseconds).
    pub unit: i64,
    /// Units in a full bucket.
    pub capacity: i64,
}

impl Shape {
    /// The longest elapsed time worth refilling: enough to fill an empty bucket. Capping
    /// elapsed time by it keeps `elapsed × limit` far from overflow.
    pub fn max_elapsed_ms(self) -> i64 {
        (self.capacity + self.limit - 1) / self.limit
    }

    /// Milliseconds until a bucket at `level` units holds `tokens` tokens.
    pub fn wait_ms(self, level: i64, tokens: i64) -> i64 {
        let missing = (tokens.saturating_mul(self.unit) - level).max(0);
        (missing + self.limit - 1) / self.limit
    }
}

impl Checks {
    /// A key's rate limits: at most [`MAX_LIMITS`], names unique labels, `limit` and
    /// `burst` 1 to [`MAX_AMOUNT`] (burst defaults to limit), periods whole milliseconds
    /// from 1 s to 30 days.
    pub fn rate_limits(&mut self, field: &str, inputs: &[RateLimitInput]) -> Vec<RateLimit> {
        if inputs.len() > MAX_LIMITS {
            self.fail(field, format!("must hold at most {MAX_LIMITS} limits, got {}", inputs.len()));
            return Vec::new();
        }
        let mut names = BTreeSet::new();
        let mut limits = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.iter().enumerate() {
            let at = |name: &str| format!("{field}[{index}].{name}");
            self.label(&at("name"), &input.name);
            if !names.insert(input.name.as_str()) {
                self.fail(at("name"), format!("names limit {:?} a second time", input.name));
            }
            if !(1..=MAX_AMOUNT).contains(&input.limit) {
                self.fail(at("limit"), format!("must be 1 to {MAX_AMOUNT}"));
            }
            let burst = input.burst.unwrap_or(input.limit);
            if !(1..=MAX_AMOUNT).contains(&burst) {
                self.fail(at("burst"), format!("must be 1 to {MAX_AMOUNT} (unset: the limit)"));
            }
            let period_ms = input.period_ms.filter(|ms| (MIN_PERIOD_MS..=MAX_PERIOD_MS).contains(ms));
            if period_ms.is_none() {
                self.fail(at("period"), "must be whole milliseconds from 1s to 30 days");
            }
            limits.push(RateLimit {
                name: input.name.clone(),
                limit: input.limit,
                period_ms: period_ms.unwrap_or(MIN_PERIOD_MS),
                burst,
                auto_apply: input.auto_apply,
            });
        }
        limits
    }

    /// The limits a verification names: each once, a label, cost 1 to [`MAX_AMOUNT`].
    pub fn rate_uses(&mut self, field: &str, uses: &[RateUse]) {
        if uses.len() > MAX_LIMITS {
            self.fail(field, format!("must name at most {MAX_LIMITS} limits, got {}", uses.len()));
            return;
        }
        let mut names = BTreeSet::new();
        for (index, used) in uses.iter().enumerate() {
            self.label(&format!("{field}[{index}].name"), &used.name);
            if !names.insert(used.name.as_str()) {
                self.fail(format!("{field}[{index}].name"), format!("names limit {:?} a second time", used.name));
            }
            if !(1..=MAX_AMOUNT).contains(&used.cost) {
                self.fail(format!("{field}[{index}].cost"), format!("must be 1 to {MAX_AMOUNT} (unset: 1)"));
            }
        }
    }
}

/// Whose bucket a limit draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// The key's own.
    Key,
    /// The one every key of the owner shares.
    Owner,
}

/// The limits a verification applies, with their costs and buckets: of the key's own
/// limits and its owner's (a key's own limit hides the owner's of the same name), every
/// `auto_apply` one (cost 1 unless named) and every one `uses` names. A name neither
/// has a limit of applies nothing.
pub fn applicable<'a>(
    key: &'a [RateLimit],
    owner: &'a [RateLimit],
    uses: &[RateUse],
) -> Vec<(Subject, &'a RateLimit, i64)> {
    let owners = owner.iter().filter(|limit| !key.iter().any(|own| own.name == limit.name));
    key.iter()
        .map(|limit| (Subject::Key, limit))
        .chain(owners.map(|limit| (Subject::Owner, limit)))
        .filter_map(|(subject, limit)| {
            let named = uses.iter().find(|used| used.name == limit.name).map(|used| used.cost);
            match (named, limit.auto_apply) {
                (Some(cost), _) => Some((subject, limit, cost)),
                (None, true) => Some((subject, limit, 1)),
                (None, false) => None,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(name: &str, limit: i64, period_ms: Option<i64>, burst: Option<i64>) -> RateLimitInput {
        RateLimitInput { name: name.into(), limit, period_ms, burst, auto_apply: true }
    }

    fn violations(inputs: &[RateLimitInput]) -> Vec<String> {
        let mut checks = Checks::new();
        checks.rate_limits("rate_limits", inputs);
        match checks.finish() {
            Ok(()) => Vec::new(),
            Err(crate::Error::InvalidArgument(violations)) => violations.into_iter().map(|v| v.field).collect(),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn limits_in_range_pass_and_burst_defaults_to_the_limit() {
        let mut checks = Checks::new();
        let limits = checks.rate_limits("f", &[input("api", 100, Some(60_000), None)]);
        assert!(checks.finish().is_ok());
        assert_eq!(limits[0].burst, 100);
        assert!(violations(&[input("a", MAX_AMOUNT, Some(MAX_PERIOD_MS), Some(MAX_AMOUNT))]).is_empty());
    }

    #[test]
    fn out_of_range_fields_are_named() {
        assert_eq!(violations(&[input("a", 0, Some(1_000), None)]), ["rate_limits[0].limit", "rate_limits[0].burst"]);
        assert_eq!(violations(&[input("a", 1, Some(999), None)]), ["rate_limits[0].period"]);
        assert_eq!(violations(&[input("a", 1, Some(MAX_PERIOD_MS + 1), None)]), ["rate_limits[0].period"]);
        assert_eq!(violations(&[input("a", 1, None, Some(0))]), ["rate_limits[0].burst", "rate_limits[0].period"]);
        assert_eq!(violations(&[input("a b", 1, Some(1_000), None)]), ["rate_limits[0].name"]);
        let twice = [input("a", 1, Some(1_000), None), input("a", 2, Some(1_000), None)];
        assert_eq!(violations(&twice), ["rate_limits[1].name"]);
        let many: Vec<_> = (0..=MAX_LIMITS).map(|i| input(&format!("l{i}"), 1, Some(1_000), None)).collect();
        assert_eq!(violations(&many), ["rate_limits"]);
    }

    #[test]
    fn the_largest_bucket_refills_without_overflow() {
        let shape = input("a", MAX_AMOUNT, Some(MAX_PERIOD_MS), Some(MAX_AMOUNT));
        let mut checks = Checks::new();
        let shape = checks.rate_limits("f", &[shape])[0].shape();
        assert!(shape.capacity.checked_add(shape.max_elapsed_ms() * shape.limit).is_some());
    }

    #[test]
    fn wait_is_the_time_to_refill_the_missing_units() {
        let shape = Shape { limit: 100, unit: 60_000, capacity: 6_000_000 };
        assert_eq!(shape.wait_ms(0, 1), 600);
        assert_eq!(shape.wait_ms(59_999, 1), 1);
        assert_eq!(shape.wait_ms(60_000, 1), 0);
    }

    #[test]
    fn auto_limits_apply_and_named_ones_take_their_cost() {
        let auto = RateLimit { name: "auto".into(), limit: 1, period_ms: 1_000, burst: 1, auto_apply: true };
        let named = RateLimit { auto_apply: false, name: "named".into(), ..auto.clone() };
        let limits = [auto, named];
        let names = |applied: Vec<(Subject, &RateLimit, i64)>| {
            applied.into_iter().map(|(s, l, c)| (s, l.name.clone(), c)).collect::<Vec<_>>()
        };
        assert_eq!(names(applicable(&limits, &[], &[])), [(Subject::Key, "auto".into(), 1)]);
        let uses = [RateUse { name: "named".into(), cost: 3 }, RateUse { name: "unknown".into(), cost: 1 }];
        assert_eq!(
            names(applicable(&limits, &[], &uses)),
            [(Subject::Key, "auto".into(), 1), (Subject::Key, "named".into(), 3)]
        );
    }

    #[test]
    fn a_keys_own_limit_hides_its_owners_of_the_same_name() {
        let own = RateLimit { name: "api".into(), limit: 1, period_ms: 1_000, burst: 1, auto_apply: true };
        let shared = [RateLimit { limit: 100, ..own.clone() }, RateLimit { name: "day".into(), ..own.clone() }];
        let applied = applicable(std::slice::from_ref(&own), &shared, &[]);
        let seen: Vec<_> = applied.iter().map(|(s, l, _)| (*s, l.name.as_str(), l.limit)).collect();
        assert_eq!(seen, [(Subject::Key, "api", 1), (Subject::Owner, "day", 1)]);
    }
}
