//! The edge: a proxy asks whether a request of its own may pass (Envoy's ext_authz, HTTP
//! forward-auth). Here, pure: the route table that says what a request needs, where the
//! key is in it, and what each outcome answers the proxy. The verification itself is
//! VerifyApiKey's; the transports only convert, so they cannot disagree.

use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use crate::{
    Error,
    credit::{self, Credit},
    rate::RateUse,
    validate::{AmountRule, Checks},
    verify::Verdict,
};

/// What a matched route asks of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Scopes the key must hold, all of them.
    pub scopes: Vec<String>,
    /// Credits a request costs a usage-limited key.
    pub cost: Vec<Credit>,
    /// Rate limits a request spends from, besides the key's auto-applied ones.
    pub rate: Vec<RateUse>,
    /// No key needed and nothing checked.
    pub public: bool,
}

/// The rules of a `KEYWARD_EDGE_ROUTES` file, in order: the first route matching a
/// request decides it.
#[derive(Debug, Clone)]
pub struct RouteTable {
    routes: Vec<Route>,
}

#[derive(Debug, Clone)]
struct Route {
    /// Lower case; `None` matches any host.
    host: Option<String>,
    /// Upper case; empty matches any method.
    methods: Vec<String>,
    path: PathPattern,
    rule: Rule,
}

/// A path template: literal segments, `{name}` for one segment, and a last `*` for any
/// rest (none included).
#[derive(Debug, Clone)]
struct PathPattern {
    segments: Vec<Segment>,
    rest: bool,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Any,
}

/// Why a routes file was refused: its line (1-based; 0 when the file as a whole is
/// wrong) and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteError {
    /// Line of the offending text.
    pub line: usize,
    /// What is wrong and what would be right.
    pub reason: String,
}

impl std::fmt::Display for RouteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 { f.write_str(&self.reason) } else { write!(f, "line {}: {}", self.line, self.reason) }
    }
}

impl std::error::Error for RouteError {}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    #[serde(default)]
    routes: Vec<Spanned<RouteSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteSpec {
    path: Spanned<String>,
    methods: Option<Vec<String>>,
    host: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
    #[serde(default)]
    cost: Vec<CostSpec>,
    #[serde(default)]
    rate_limits: Vec<RateSpec>,
    #[serde(default)]
    public: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CostSpec {
    #[serde(default)]
    unit: String,
    amount: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateSpec {
    name: String,
    #[serde(default = "one")]
    cost: i64,
}

fn one() -> i64 {
    1
}

/// The line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&byte| byte == b'\n').count() + 1
}

impl RouteTable {
    /// Parses and checks a routes file; the first problem found is refused with its line.
    pub fn parse(text: &str) -> Result<Self, RouteError> {
        let file: RoutesFile = toml::from_str(text).map_err(|err| RouteError {
            line: err.span().map_or(0, |span| line_of(text, span.start)),
            reason: err.message().to_owned(),
        })?;
        if file.routes.is_empty() {
            return Err(RouteError {
                line: 0,
                reason: "no [[routes]]: every request would be refused; add at least one route".to_owned(),
            });
        }
        let routes = file
            .routes
            .into_iter()
            .map(|spec| {
                let span = spec.span();
                Route::checked(spec.into_inner(), span, text)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { routes })
    }

    /// How many routes there are.
    pub fn count(&self) -> usize {
        self.routes.len()
    }

    /// The rule of the first route matching the request, if any. `path` is the request
    /// target as sent (its query is ignored); a path that is not canonical (dot segments,
    /// empty segments, encoded `/`, `\` or bad escapes) matches nothing, so no spelling
    /// an upstream would normalise can reach a route written for another path. Allocates
    /// nothing.
    pub fn rule(&self, method: &str, host: &str, path: &str) -> Option<&Rule> {
        let path = path.split(['?', '#']).next().unwrap_or_default();
        let segments = path.strip_prefix('/')?;
        if !canonical(segments) {
            return None;
        }
        self.routes.iter().find(|route| route.matches(method, host, segments)).map(|route| &route.rule)
    }
}

impl Route {
    fn checked(spec: RouteSpec, span: Range<usize>, text: &str) -> Result<Self, RouteError> {
        let line = line_of(text, span.start);
        let fail = |reason: String| RouteError { line, reason };
        let path_line = line_of(text, spec.path.span().start);
        let path = PathPattern::parse(spec.path.get_ref()).map_err(|reason| RouteError { line: path_line, reason })?;
        let methods = spec.methods.unwrap_or_default();
        if let Some(method) = methods.iter().find(|method| method.is_empty() || !method.bytes().all(is_token)) {
            return Err(fail(format!("methods: {method:?} is not an HTTP method")));
        }
        let methods = methods.iter().map(|method| method.to_ascii_uppercase()).collect();
        if spec.host.as_deref().is_some_and(|host| host.is_empty() || host.contains(['/', ' ', '*'])) {
            return Err(fail("host: must be a host name, with a port if the requests name one".to_owned()));
        }
        if spec.public && (!spec.scopes.is_empty() || !spec.cost.is_empty() || !spec.rate_limits.is_empty()) {
            return Err(fail("a public route checks nothing: it cannot have scopes, cost or rate_limits".to_owned()));
        }
        let mut checks = Checks::new();
        checks.labels("scopes", &spec.scopes);
        let cost: Vec<Credit> = spec.cost.into_iter().map(|cost| Credit::new(cost.unit, cost.amount)).collect();
        let cost = checks.credits("cost", &cost, AmountRule::Positive);
        let rate: Vec<RateUse> =
            spec.rate_limits.into_iter().map(|used| RateUse { name: used.name, cost: used.cost }).collect();
        checks.rate_uses("rate_limits", &rate);
        let checked = checks.finish().and_then(|()| credit::check_costs(&cost));
        if let Err(err) = checked {
            return Err(fail(err.to_string()));
        }
        Ok(Self {
            host: spec.host.map(|host| host.to_ascii_lowercase()),
            methods,
            path,
            rule: Rule { scopes: spec.scopes, cost, rate, public: spec.public },
        })
    }

    fn matches(&self, method: &str, host: &str, segments: &str) -> bool {
        (self.methods.is_empty() || self.methods.iter().any(|allowed| allowed == method))
            && self.host.as_deref().is_none_or(|wanted| host_matches(wanted, host))
            && self.path.matches(segments)
    }
}

/// A request's host matches a route's with or without its port, unless the route names one.
fn host_matches(wanted: &str, host: &str) -> bool {
    if host.eq_ignore_ascii_case(wanted) {
        return true;
    }
    let without_port = match host.rsplit_once(':') {
        // An IPv6 literal's colons are inside its brackets.
        Some((name, port)) if !port.contains(']') && port.bytes().all(|byte| byte.is_ascii_digit()) => name,
        _ => return false,
    };
    !wanted.contains(':') && without_port.eq_ignore_ascii_case(wanted)
}

/// RFC 9110 `tchar`: what a method (and a header name) may be made of.
fn is_token(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

impl PathPattern {
    fn parse(template: &str) -> Result<Self, String> {
        let Some(rest) = template.strip_prefix('/') else {
            return Err(format!("path: {template:?} must start with /"));
        };
        let (rest, any_rest) = match rest.strip_suffix('*') {
            Some(before) if before.is_empty() || before.ends_with('/') => (before.trim_end_matches('/'), true),
            _ => (rest, false),
        };
        let segments =
            if rest.is_empty() && (any_rest || template == "/") { Vec::new() } else { rest.split('/').collect() };
        let segments = segments
            .into_iter()
            .map(|segment| {
                if segment.starts_with('{') && segment.ends_with('}') && segment.len() > 2 {
                    return Ok(Segment::Any);
                }
                if segment.is_empty() || segment == "." || segment == ".." || segment.contains(['{', '}', '*', '?', '#', '%', '\\']) {
                    return Err(format!(
                        "path: {template:?}: segment {segment:?} must be text, a {{name}} or a last * (as in /v1/items/{{id}} or /v1/items/*)"
                    ));
                }
                Ok(Segment::Literal(segment.to_owned()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { segments, rest: any_rest })
    }

    /// Whether the path after its leading `/` matches.
    fn matches(&self, path: &str) -> bool {
        let mut parts = path.split('/');
        if path.is_empty() {
            // "/" has no segment at all.
            return self.segments.is_empty();
        }
        for segment in &self.segments {
            let Some(part) = parts.next() else { return false };
            let fits = match segment {
                Segment::Any => !part.is_empty(),
                Segment::Literal(literal) => decoded(part).eq(literal.bytes()),
            };
            if !fits {
                return false;
            }
        }
        match parts.next() {
            None => true,
            // A trailing slash names the same resource to most upstreams.
            Some("") if parts.next().is_none() => true,
            Some(_) => self.rest,
        }
    }
}

/// Whether a path (after its leading `/`) has only segments every upstream reads alike.
fn canonical(path: &str) -> bool {
    let mut parts = path.split('/').peekable();
    while let Some(part) = parts.next() {
        let last = parts.peek().is_none();
        if part.is_empty() && !last && !path.is_empty() {
            return false;
        }
        if part.contains('\\') || !valid_escapes(part) {
            return false;
        }
        let mut bytes = decoded(part);
        let dots = matches!(
            (bytes.next(), bytes.next(), bytes.next()),
            (Some(b'.'), None, _) | (Some(b'.'), Some(b'.'), None)
        );
        if dots || decoded(part).any(|byte| byte == b'/' || byte == b'\\' || byte == 0) {
            return false;
        }
    }
    true
}

fn valid_escapes(part: &str) -> bool {
    let bytes = part.as_bytes();
    bytes.iter().enumerate().filter(|(_, byte)| **byte == b'%').all(|(at, _)| {
        bytes.get(at + 1).is_some_and(u8::is_ascii_hexdigit) && bytes.get(at + 2).is_some_and(u8::is_ascii_hexdigit)
    })
}

/// The bytes of a segment with its percent escapes decoded (escapes checked beforehand).
fn decoded(part: &str) -> impl Iterator<Item = u8> + '_ {
    let mut bytes = part.bytes();
    std::iter::from_fn(move || {
        let byte = bytes.next()?;
        if byte != b'%' {
            return Some(byte);
        }
        let high = bytes.next().and_then(|digit| (digit as char).to_digit(16))?;
        let low = bytes.next().and_then(|digit| (digit as char).to_digit(16))?;
        u8::try_from(high * 16 + low).ok()
    })
}

/// Where a request carries its key: `Authorization: Bearer …`, or a header of its own
/// (`X-API-Key` unless configured), or a query parameter when one is configured.
#[derive(Debug, Clone)]
pub struct KeySource {
    header: String,
    query: Option<String>,
}

/// The key found in a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presented<'a> {
    /// This string, to be verified.
    Key(&'a str),
    /// None sent.
    Missing,
}

impl KeySource {
    /// The default header of a key sent on its own.
    pub const DEFAULT_HEADER: &'static str = "x-api-key";

    /// Keys in `Authorization: Bearer`, in `header`, and in the query parameter `query`.
    pub fn new(header: &str, query: Option<&str>) -> Result<Self, String> {
        if header.is_empty() || !header.bytes().all(is_token) {
            return Err(format!("{header:?} is not a header name"));
        }
        if query.is_some_and(str::is_empty) {
            return Err("the query parameter must have a name".to_owned());
        }
        Ok(Self { header: header.to_ascii_lowercase(), query: query.map(str::to_owned) })
    }

    /// The header a key may come in besides `Authorization`, lower case.
    pub fn header(&self) -> &str {
        &self.header
    }

    /// The key of a request whose headers `header` reads by lower-case name, and whose
    /// target is `path`. A Bearer credential wins; an `Authorization` of another scheme
    /// is left to the upstream. Allocates nothing.
    pub fn presented<'a>(&self, header: impl Fn(&str) -> Option<&'a str>, path: &'a str) -> Presented<'a> {
        if let Some(value) = header("authorization")
            && let Some((scheme, token)) = value.trim().split_once(' ')
            && scheme.eq_ignore_ascii_case("bearer")
        {
            return Presented::Key(token.trim());
        }
        if let Some(value) = header(&self.header) {
            return Presented::Key(value.trim());
        }
        let query = path.split_once('?').map(|(_, query)| query.split('#').next().unwrap_or_default());
        if let (Some(name), Some(query)) = (&self.query, query)
            && let Some(value) = query.split('&').find_map(|pair| pair.strip_prefix(name.as_str())?.strip_prefix('='))
        {
            return Presented::Key(value);
        }
        Presented::Missing
    }
}

/// What the edge answers the proxy: an HTTP status and the code and message of the JSON
/// body (`{"code", "message"}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status: 200 admits.
    pub status: u16,
    /// The verification code, or what else refused the request.
    pub code: &'static str,
    /// For the client, in words.
    pub message: &'static str,
}

impl Answer {
    /// Admitted.
    pub const ADMIT: Self = Self { status: 200, code: "VALID", message: "the key is valid for the request" };
    /// No route matches the request (or its path is not canonical).
    pub const NO_ROUTE: Self =
        Self { status: 403, code: "NO_ROUTE", message: "no route of the edge allows this request" };
    /// The request carries no key.
    pub const NO_KEY: Self = Self {
        status: 401,
        code: "MISSING",
        message: "an API key is required: send it as `Authorization: Bearer <key>`",
    };

    /// Whether the proxy should let the request pass.
    pub fn admits(self) -> bool {
        self.status == 200
    }

    /// The answer to a verification's verdict.
    pub fn of(verdict: Verdict) -> Self {
        let (status, code, message) = match verdict {
            Verdict::Valid => return Self::ADMIT,
            Verdict::Malformed => (401, "MALFORMED", "the API key is malformed"),
            Verdict::NotFound => (401, "NOT_FOUND", "the API key is not valid"),
            Verdict::Inactive => (401, "INACTIVE", "the API key is disabled"),
            Verdict::Revoked => (401, "REVOKED", "the API key was revoked"),
            Verdict::Expired => (401, "EXPIRED", "the API key has expired"),
            Verdict::InsufficientScope => (403, "INSUFFICIENT_SCOPE", "the API key lacks a scope this route needs"),
            Verdict::NetworkNotAllowed => (403, "NETWORK_NOT_ALLOWED", "the API key is not allowed on this network"),
            Verdict::UsageExceeded => (402, "USAGE_EXCEEDED", "the API key has too few credits for this request"),
            Verdict::RateLimited => (429, "RATE_LIMITED", "a rate limit of the API key is exhausted; retry later"),
        };
        Self { status, code, message }
    }

    /// The answer when the verification itself failed.
    pub fn failed(err: &Error) -> Self {
        match err {
            Error::Unavailable(_) => {
                Self { status: 503, code: "DATABASE_UNAVAILABLE", message: "the key could not be checked; retry later" }
            }
            Error::InvalidArgument(_)
            | Error::Unauthenticated { .. }
            | Error::PermissionDenied { .. }
            | Error::NotFound { .. }
            | Error::AlreadyExists { .. }
            | Error::FailedPrecondition { .. }
            | Error::ResourceExhausted { .. }
            | Error::Aborted { .. }
            | Error::DataLoss { .. }
            | Error::Internal(_) => Self { status: 500, code: "INTERNAL", message: "internal error" },
        }
    }
}

/// Seconds a client refused by a rate limit should wait: until the soonest reset of an
/// exhausted limit, rounded up, at least one.
pub fn retry_after_secs(now_ms: i64, exhausted_resets_ms: impl Iterator<Item = i64>) -> u64 {
    let wait_ms = exhausted_resets_ms.map(|reset| reset.saturating_sub(now_ms)).min().unwrap_or(1000);
    u64::try_from(wait_ms.max(1).saturating_add(999) / 1000).unwrap_or(1)
}

/// The name of the upstream header of a unit's remaining credits, if the unit can be one
/// (`X-Keyward-Remaining` for the default unit).
pub fn remaining_header(unit: &str) -> Option<String> {
    if unit.is_empty() {
        return Some("x-keyward-remaining".to_owned());
    }
    unit.bytes().all(is_token).then(|| format!("x-keyward-remaining-{}", unit.to_ascii_lowercase()))
}

/// Whether a request header is one the edge sets upstream, and so must never pass from a
/// client: `X-Keyward-*`, `RateLimit` and `RateLimit-Policy` (lower-case name).
pub fn is_upstream_header(name: impl AsRef<[u8]>) -> bool {
    let name = name.as_ref();
    name.starts_with(b"x-keyward-") || name == b"ratelimit" || name == b"ratelimit-policy"
}

#[cfg(test)]
mod tests;
