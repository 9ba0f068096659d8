//! Per-environment settings: secret prefix, default time to live, live-key quota.

use std::{collections::BTreeMap, fmt, str::FromStr, time::Duration};

/// Settings of one environment such as `production` or `sandbox`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Environment {
    /// Label stored on keys.
    pub name: String,
    /// Secret prefix, e.g. `kw_live`; every key of this environment starts with it and `_`.
    pub key_prefix: String,
    /// Most live keys one owner may hold here.
    pub max_live_keys: i64,
    /// Expiry given to new keys that name none; `None` means they never expire.
    pub default_ttl: Option<Duration>,
}

/// Why an environment spec could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid environment `{spec}`: {problem} (expected name:prefix:max_live_keys[:default_ttl], e.g. production:kw_live:100:90d)"
)]
pub struct EnvironmentSpecError {
    spec: String,
    problem: String,
}

impl FromStr for Environment {
    type Err = EnvironmentSpecError;

    /// Parses `name:prefix:max_live_keys[:default_ttl]`, the TTL in humantime form (`90d`, `12h`).
    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let fail = |problem: &str| EnvironmentSpecError { spec: spec.to_owned(), problem: problem.to_owned() };
        let parts: Vec<&str> = spec.split(':').collect();
        let (name, prefix, max, ttl) = match parts.as_slice() {
            [name, prefix, max] => (*name, *prefix, *max, None),
            [name, prefix, max, ttl] => (*name, *prefix, *max, Some(*ttl)),
            _ => return Err(fail("wrong number of parts")),
        };
        if !is_label(name) {
            return Err(fail("name must be 1-32 characters of a-z, 0-9, - or _"));
        }
        if !is_prefix(prefix) {
            return Err(fail("prefix must be 2-20 characters of a-z and 0-9 in groups joined by _, e.g. kw_live"));
        }
        let max_live_keys: i64 = max.parse().map_err(|_| fail("max_live_keys must be a whole number"))?;
        if max_live_keys < 1 {
            return Err(fail("max_live_keys must be at least 1"));
        }
        let default_ttl = match ttl {
            None | Some("0") | Some("") => None,
            Some(ttl) => {
                Some(humantime::parse_duration(ttl).map_err(|_| fail("default_ttl must look like 30d, 12h or 0"))?)
            }
        };
        Ok(Self { name: name.to_owned(), key_prefix: prefix.to_owned(), max_live_keys, default_ttl })
    }
}

impl fmt::Display for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.name, self.key_prefix, self.max_live_keys)?;
        if let Some(ttl) = self.default_ttl {
            write!(f, ":{}s", ttl.as_secs())?;
        }
        Ok(())
    }
}

fn is_label(text: &str) -> bool {
    (1..=32).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn is_prefix(text: &str) -> bool {
    (2..=20).contains(&text.len())
        && text
            .split('_')
            .all(|group| !group.is_empty() && group.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
}

/// The configured environments and the default one.
#[derive(Debug, Clone)]
pub struct Environments {
    by_name: BTreeMap<String, Environment>,
    default: String,
}

impl Environments {
    /// Builds the set; fails when names or prefixes repeat, or the default is not among them.
    pub fn new(list: Vec<Environment>, default: &str) -> Result<Self, String> {
        let mut by_name = BTreeMap::new();
        for env in list {
            if by_name.values().any(|other: &Environment| other.key_prefix == env.key_prefix) {
                return Err(format!("environment prefix `{}` is used twice", env.key_prefix));
            }
            if let Some(dup) = by_name.insert(env.name.clone(), env) {
                return Err(format!("environment `{}` is defined twice", dup.name));
            }
        }
        if !by_name.contains_key(default) {
            return Err(format!("default environment `{default}` is not among the configured environments"));
        }
        Ok(Self { by_name, default: default.to_owned() })
    }

    /// The environment called `name`, or the default for an empty name.
    pub fn resolve(&self, name: &str) -> Option<&Environment> {
        self.by_name.get(if name.is_empty() { self.default.as_str() } else { name })
    }

    /// Every key prefix, for the offline checksum test.
    pub fn prefixes(&self) -> impl Iterator<Item = &str> {
        self.by_name.values().map(|env| env.key_prefix.as_str())
    }

    /// Names of all environments, for error messages.
    pub fn names(&self) -> Vec<&str> {
        self.by_name.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs_and_refuses_bad_ones() {
        let env: Environment = "production:kw_live:100:90d".parse().unwrap();
        assert_eq!(env.default_ttl, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(env.key_prefix, "kw_live");
        assert!("sandbox:kw_test:5".parse::<Environment>().unwrap().default_ttl.is_none());
        for bad in ["x", "Prod:kw:1", "p:KW:1", "p:kw_:1", "p:kw:0", "p:kw:1:9x", "p:kw:ten"] {
            assert!(bad.parse::<Environment>().is_err(), "{bad} parsed");
        }
    }
}
