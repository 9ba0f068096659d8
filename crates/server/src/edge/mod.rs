//! The edge adapters' one decision: a proxy's request → the route table's rule → the
//! verification VerifyApiKey runs (`Verifier::verify`: cache, scopes, expiry, rate
//! limits, credits, usage) → core's answer and the headers for the upstream. The
//! adapters (`ext_authz`, `forward`) only read the proxy's request and write its answer.

pub(crate) mod ext_authz;
pub(crate) mod forward;
pub(crate) mod listener;

use std::{
    borrow::Cow,
    sync::{Arc, RwLock},
};

use keyward_core::{
    edge::{self, Answer, KeySource, Presented, RouteTable},
    verify::Verdict,
};

use crate::{
    config::EdgeSettings,
    log_lines::LineThrottle,
    verifier::{Cost, Moment, Verification, Verifier},
};

/// Who the ledger names for a charge made at the edge: the proxy has no identity of its
/// own, the key is the credential.
const ACTOR: &str = "edge";

/// The edge: its routes, where keys are, and the verifier every surface shares.
#[derive(Debug, Clone)]
pub(crate) struct Edge {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    // Swapped whole on a reload; a request keeps the table it started with.
    routes: RwLock<Arc<RouteTable>>,
    keys: KeySource,
    verifier: Verifier,
}

/// A header for the upstream: lower-case name and value.
pub(crate) type Header = (Cow<'static, str>, String);

/// What the edge decided about one request.
#[derive(Debug)]
pub(crate) struct Decision {
    pub(crate) answer: Answer,
    /// On admit: what the upstream is told about the key.
    pub(crate) upstream: Vec<Header>,
    /// On a rate limit: seconds until it resets.
    pub(crate) retry_after: Option<u64>,
}

impl Decision {
    fn refused(answer: Answer) -> Self {
        Self { answer, upstream: Vec::new(), retry_after: None }
    }
}

/// The proxied request as the proxy describes it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Proxied<'a> {
    pub(crate) method: &'a str,
    pub(crate) host: &'a str,
    /// The request target: path and query.
    pub(crate) path: &'a str,
}

impl Edge {
    pub(crate) fn new(settings: EdgeSettings, verifier: Verifier) -> Self {
        let EdgeSettings { routes, keys } = settings;
        Self { inner: Arc::new(Inner { routes: RwLock::new(Arc::new(routes)), keys, verifier }) }
    }

    /// Puts `routes` in force for the requests that start from now on.
    pub(crate) fn replace_routes(&self, routes: RouteTable) {
        *self.inner.routes.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(routes);
    }

    /// Decides `request`, whose headers `header` reads by lower-case name.
    pub(crate) async fn check<'a>(&self, request: Proxied<'a>, header: impl Fn(&str) -> Option<&'a str>) -> Decision {
        let at = Moment::now();
        let routes = Arc::clone(&self.inner.routes.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        let Some(rule) = routes.rule(request.method, request.host, request.path) else {
            return Decision::refused(Answer::NO_ROUTE);
        };
        if rule.public {
            return Decision { answer: Answer::ADMIT, upstream: Vec::new(), retry_after: None };
        }
        let Presented::Key(key) = self.inner.keys.presented(header, request.path) else {
            return Decision::refused(Answer::NO_KEY);
        };
        // The actor is only written with a charge: no allocation on an unmetered route.
        let actor = if rule.cost.is_empty() { String::new() } else { ACTOR.to_owned() };
        let cost = Cost { credits: rule.cost.clone(), request_id: None, actor, rate: rule.rate.clone(), hold: None };
        match self.inner.verifier.verify(key, &rule.scopes, None, "", cost, at).await {
            Ok(verification) if verification.verdict == Verdict::Valid => {
                Decision { answer: Answer::ADMIT, upstream: upstream_headers(&verification), retry_after: None }
            }
            Ok(verification) => {
                let retry_after = (verification.verdict == Verdict::RateLimited).then(|| {
                    let resets = verification.limits.iter().filter_map(|limit| limit.reset_at);
                    edge::retry_after_secs(at.wall.timestamp_millis(), resets.map(|at| at.timestamp_millis()))
                });
                Decision { answer: Answer::of(verification.verdict), upstream: Vec::new(), retry_after }
            }
            Err(err) => {
                let answer = Answer::failed(&err);
                if let Some(suppressed) = FAILURE_LINES.admit() {
                    tracing::error!(error = %err, status = answer.status, suppressed, "an edge check failed");
                }
                Decision::refused(answer)
            }
        }
    }
}

/// Failures of the store reach every request alike; their lines are throttled.
static FAILURE_LINES: LineThrottle = LineThrottle::new();

/// What the upstream learns of an admitted key: `X-Keyward-*`, and the IETF
/// `RateLimit-Policy` / `RateLimit` fields of the limits applied.
fn upstream_headers(verification: &Verification) -> Vec<Header> {
    let Some(key) = verification.key() else { return Vec::new() };
    let scopes = key.effective_scopes.iter().map(String::as_str).collect::<Vec<_>>().join(" ");
    let mut headers: Vec<Header> = vec![
        (Cow::Borrowed("x-keyward-key-id"), key.id.to_string()),
        (Cow::Borrowed("x-keyward-owner"), key.owner.clone()),
        (Cow::Borrowed("x-keyward-organization"), key.organization_id.clone()),
        (Cow::Borrowed("x-keyward-scopes"), scopes),
    ];
    headers.extend(verification.remaining.iter().filter_map(|credit| {
        edge::remaining_header(&credit.unit).map(|name| (Cow::Owned(name), credit.amount.to_string()))
    }));
    if !verification.limits.is_empty() {
        // Structured-field strings: a limit's name may hold `"` or `\`.
        let item = |name: &str| format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""));
        let policy = verification.limits.iter().map(|limit| format!("{};q={}", item(&limit.name), limit.limit));
        let state = verification.limits.iter().map(|limit| format!("{};r={}", item(&limit.name), limit.remaining));
        headers.push((Cow::Borrowed("ratelimit-policy"), policy.collect::<Vec<_>>().join(", ")));
        headers.push((Cow::Borrowed("ratelimit"), state.collect::<Vec<_>>().join(", ")));
    }
    headers
}

/// The JSON body of a refusal.
pub(crate) fn body(answer: Answer) -> String {
    serde_json::json!({ "code": answer.code, "message": answer.message }).to_string()
}
