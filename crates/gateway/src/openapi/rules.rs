//! Field constraints the server enforces, handed to the document by the code that
//! validates (the gateway decides none): each becomes JSON Schema keywords where its field
//! is an input.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

/// One constraint on one field of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRule {
    /// Full name of the message the path starts from: a request (`keyward.v1.VerifyApiKeyRequest`)
    /// for a rule of that request only, or a nested message (`keyward.v1.ApiKey`) for a rule
    /// wherever it is an input.
    pub message: String,
    /// Proto field names from that message, joined by dots; a list or map is crossed to
    /// its elements (`cost.amount` is the amount of every entry of `cost`).
    pub path: String,
    /// What the field must be.
    pub constraint: Constraint,
}

impl FieldRule {
    /// A rule on `path` of `message`.
    pub fn new(message: &str, path: &str, constraint: Constraint) -> Self {
        Self { message: message.to_owned(), path: path.to_owned(), constraint }
    }
}

/// What a field must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Constraint {
    /// Present and not empty, where `google.api.field_behavior` does not say so.
    Required,
    /// A string of `min` to `max` characters (Unicode scalar values).
    Chars { min: usize, max: usize },
    /// A string matching an ECMA-262 regular expression.
    Pattern(String),
    /// A list of `min` to `max` entries.
    Items { min: usize, max: usize },
    /// A list without duplicates.
    Unique,
    /// A map of at most `max` entries.
    Entries { max: usize },
    /// A map's keys: `min` to `max` characters matching `pattern`.
    Keys { min: usize, max: usize, pattern: String },
    /// An integer from `min` (0 or 1) to `max` inclusive.
    Range { min: i64, max: i64 },
    /// A non-zero integer from `-max` to `max`.
    NonZero { max: i64 },
    /// A UUID.
    Uuid,
    /// A key's UUID, or its number in decimal.
    KeyRef,
    /// One of these enum value names (or strings).
    Values(Vec<String>),
    /// The empty string (the field's default: not given), or a string that meets all of these.
    EmptyOr(Vec<Constraint>),
}

/// A UUID's hyphenated form, beside `format: uuid`, which not every tool checks or generates.
const UUID: &str = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// The rules, by message and path.
#[derive(Debug, Clone, Default)]
pub(super) struct Rules(HashMap<String, HashMap<String, Vec<Constraint>>>);

impl Rules {
    pub(super) fn new(rules: &[FieldRule]) -> Self {
        let mut map: HashMap<_, HashMap<_, Vec<Constraint>>> = HashMap::new();
        for rule in rules {
            let paths = map.entry(rule.message.clone()).or_default();
            paths.entry(rule.path.clone()).or_default().push(rule.constraint.clone());
        }
        Self(map)
    }

    /// The constraints on `path` of `message`.
    pub(super) fn on(&self, message: &str, path: &str) -> &[Constraint] {
        self.0.get(message).and_then(|paths| paths.get(path)).map_or(&[], Vec::as_slice)
    }
}

impl Constraint {
    /// Whether the constraint bounds a list or map itself rather than each of its values.
    pub(super) fn on_container(&self) -> bool {
        matches!(self, Self::Required | Self::Items { .. } | Self::Unique | Self::Entries { .. } | Self::Keys { .. })
    }

    /// Adds the constraint's keywords to a field's schema (an int64 takes both its JSON
    /// forms, a number and a decimal string, so a range is both a bound and a pattern).
    pub(super) fn apply(&self, schema: &mut Map<String, Value>) {
        match self {
            Self::Required if schema.contains_key("enum") => {}
            Self::Required => {
                let bound = match schema.get("type").and_then(Value::as_str) {
                    Some("string") => "minLength",
                    Some("array") => "minItems",
                    _ => return,
                };
                let min = schema.get(bound).and_then(Value::as_u64).unwrap_or(0).max(1);
                schema.insert(bound.into(), min.into());
            }
            Self::Chars { min, max } => {
                schema.insert("minLength".into(), (*min).into());
                schema.insert("maxLength".into(), (*max).into());
            }
            Self::Pattern(pattern) => {
                schema.insert("pattern".into(), pattern.as_str().into());
            }
            Self::Items { min, max } => {
                schema.insert("minItems".into(), (*min).into());
                schema.insert("maxItems".into(), (*max).into());
            }
            Self::Unique => {
                schema.insert("uniqueItems".into(), true.into());
            }
            Self::Entries { max } => {
                schema.insert("maxProperties".into(), (*max).into());
            }
            Self::Keys { min, max, pattern } => {
                schema.insert("propertyNames".into(), json!({"minLength": min, "maxLength": max, "pattern": pattern}));
            }
            Self::Range { min, max } => {
                schema.insert("minimum".into(), (*min).into());
                schema.insert("maximum".into(), (*max).into());
                if schema.get("format") == Some(&json!("int64")) {
                    schema.insert("pattern".into(), format!("^{}$", decimal_range(*min, *max)).into());
                }
            }
            Self::NonZero { max } => {
                schema.insert("minimum".into(), (-max).into());
                schema.insert("maximum".into(), (*max).into());
                schema.insert("not".into(), json!({"const": 0}));
                if schema.get("format") == Some(&json!("int64")) {
                    schema.insert("pattern".into(), format!("^-?{}$", decimal_range(1, *max)).into());
                }
            }
            Self::Uuid => {
                schema.insert("format".into(), "uuid".into());
                schema.insert("pattern".into(), UUID.into());
            }
            Self::KeyRef => {
                schema.insert(
                    "anyOf".into(),
                    json!([
                        {"type": "string", "format": "uuid", "pattern": UUID},
                        // As the server reads a number: at most 19 digits, leading zeros allowed.
                        {"type": "string", "maxLength": 19, "pattern": format!("^0*{}$", decimal_range(1, i64::MAX))}
                    ]),
                );
            }
            Self::Values(names) => {
                schema.insert("enum".into(), json!(names));
            }
            Self::EmptyOr(constraints) => {
                let mut given = Map::new();
                constraints.iter().for_each(|constraint| constraint.apply(&mut given));
                given.insert("type".into(), "string".into());
                schema.insert("anyOf".into(), json!([{"type": "string", "maxLength": 0}, given]));
            }
        }
    }
}

/// A regular expression (unanchored, one group) of the decimals from `min` to `max`
/// without leading zeros, for `min` 0 or 1 (the only lower bounds keyward's rules have): what a bounded int64 looks like as a string.
pub fn decimal_range(min: i64, max: i64) -> String {
    let digits: Vec<u8> = max.to_string().bytes().map(|b| b - b'0').collect();
    let mut alternatives = Vec::new();
    if min <= 0 {
        alternatives.push("0".to_owned());
    }
    // Fewer digits than max: any such number.
    if digits.len() > 1 {
        alternatives.push(format!("[1-9][0-9]{{0,{}}}", digits.len() - 2));
    }
    // As many digits as max: a prefix of max, then a smaller digit, then anything.
    for at in 0..digits.len() {
        let low = if at == 0 { 1 } else { 0 };
        if digits[at] > low {
            let prefix: String = digits[..at].iter().map(|d| char::from(b'0' + d)).collect();
            let rest = digits.len() - at - 1;
            let class = if digits[at] - 1 == low { format!("{low}") } else { format!("[{low}-{}]", digits[at] - 1) };
            alternatives.push(if rest == 0 {
                format!("{prefix}{class}")
            } else {
                format!("{prefix}{class}[0-9]{{{rest}}}")
            });
        }
    }
    alternatives.push(max.to_string());
    format!("({})", alternatives.join("|"))
}

#[cfg(test)]
mod tests {
    use super::decimal_range;

    #[test]
    fn decimal_ranges_hold_exactly_their_numbers() {
        for (min, max) in [(1, 1), (0, 9), (1, 10), (1, 1_000_000_000), (0, 305), (1, i64::MAX)] {
            let pattern = format!("^{}$", decimal_range(min, max));
            let matches = |n: i128| regex_lite_match(&pattern, &n.to_string());
            for n in [0, 1, 2, 9, 10, 11, 99, 100, 299, 300, 305, 306, 999_999_999, 1_000_000_000, 1_000_000_001] {
                assert_eq!(matches(n), (i128::from(min)..=i128::from(max)).contains(&n), "{n} in {pattern}");
            }
            assert_eq!(matches(i128::from(i64::MAX)), max == i64::MAX, "{pattern}");
            assert!(!matches(i128::from(i64::MAX) + 1), "{pattern}");
            assert!(!regex_lite_match(&pattern, "007"));
        }
    }

    /// Enough of a regex engine for the patterns above: alternatives of literals, classes and counts.
    fn regex_lite_match(pattern: &str, text: &str) -> bool {
        let inner = pattern.trim_start_matches("^(").trim_end_matches(")$");
        inner.split('|').any(|alternative| alternative_match(alternative.as_bytes(), text.as_bytes()))
    }

    fn alternative_match(pattern: &[u8], text: &[u8]) -> bool {
        // One token: a digit or a [a-b] class, with an optional {n} or {m,n}.
        let Some((&first, rest)) = pattern.split_first() else { return text.is_empty() };
        let (low, high, rest) = if first == b'[' { (rest[0], rest[2], &rest[4..]) } else { (first, first, rest) };
        let (min, max, rest) = if rest.first() == Some(&b'{') {
            let end = rest.iter().position(|&b| b == b'}').unwrap();
            let counts = std::str::from_utf8(&rest[1..end]).unwrap();
            let (min, max) = counts.split_once(',').unwrap_or((counts, counts));
            (min.parse::<usize>().unwrap(), max.parse::<usize>().unwrap(), &rest[end + 1..])
        } else {
            (1, 1, rest)
        };
        (min..=max).any(|count| {
            text.len() >= count
                && text[..count].iter().all(|b| (low..=high).contains(b))
                && alternative_match(rest, &text[count..])
        })
    }
}
