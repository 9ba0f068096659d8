//! People's JWTs: verified against the identity provider's JWKS (a file, an HTTPS URL,
//! or the one its OIDC discovery document names), refreshed on an interval and,
//! rate-limited, when a token names an unknown key. Only asymmetric algorithms are
//! accepted, so neither `none` nor an HS256 token signed with a public key can pass.
//! Cognito's two token kinds carry their audience in different claims (`aud` in an ID
//! token, `client_id` in an access token), so the audience is checked here, after
//! `token_use` says where to look.

use std::{
    collections::{BTreeSet, HashMap},
    path::PathBuf,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use jsonwebtoken::{
    Algorithm, DecodingKey, Validation, decode, decode_header,
    jwk::{Jwk, JwkSet},
};
use keyward_core::{Error, error::Result, policy::Person};
use serde_json::{Map, Value};
use tokio::sync::Mutex;

use crate::config::{JwtConfig, TokenUse};

/// Tokens longer than this are refused unread.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Largest JWKS or discovery document accepted (an identity provider's are a few KiB): a
/// larger one is refused as soon as it is seen to be larger, never read whole.
const MAX_DOCUMENT_BYTES: usize = 1024 * 1024;
/// Longest a JWKS fetch may spend connecting.
const JWKS_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const ALLOWED: [Algorithm; 8] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

/// How JWT callers are checked and mapped.
#[derive(Debug, Clone)]
pub(crate) struct JwtSettings {
    /// A file path or URL; `None` finds it through the issuer's OIDC discovery document.
    pub(crate) jwks: Option<String>,
    pub(crate) issuer: String,
    pub(crate) audiences: BTreeSet<String>,
    /// The `token_use` kinds accepted when a token carries the claim.
    pub(crate) token_uses: BTreeSet<TokenUse>,
    /// Whether a token without `token_use` is refused (Cognito always sets it).
    pub(crate) token_use_required: bool,
    pub(crate) leeway: Duration,
    pub(crate) refresh_interval: Duration,
    pub(crate) unknown_kid_cooldown: Duration,
    /// Longest a JWKS fetch over HTTP may take, body included.
    pub(crate) fetch_timeout: Duration,
    pub(crate) owner_claim: String,
    pub(crate) roles_claim: String,
    pub(crate) organization_id_claim: String,
    pub(crate) organization_name_claim: String,
}

impl JwtSettings {
    /// The settings of JWT callers, or `None` when neither an issuer nor a JWKS is configured.
    pub(crate) fn from_config(config: &JwtConfig) -> anyhow::Result<Option<Self>> {
        let given = |value: &Option<String>| value.clone().filter(|v| !v.is_empty());
        let (jwks, issuer) = match (given(&config.jwt_jwks), given(&config.jwt_issuer)) {
            (None, None) => return Ok(None),
            (Some(_), None) => anyhow::bail!("KEYWARD_JWT_ISSUER is required with KEYWARD_JWT_JWKS"),
            (jwks, Some(issuer)) => (jwks, issuer),
        };
        let audiences: BTreeSet<String> = given(&config.jwt_audience)
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|audience| !audience.is_empty())
            .map(str::to_owned)
            .collect();
        if audiences.is_empty() {
            anyhow::bail!(
                "KEYWARD_JWT_AUDIENCE is required with JWT callers (the app client ids tokens are meant for)"
            );
        }
        let token_uses = config.jwt_token_use.clone().unwrap_or_default();
        if config.jwt_token_use.is_some() && token_uses.is_empty() {
            anyhow::bail!("KEYWARD_JWT_TOKEN_USE names no token kind (id, access)");
        }
        Ok(Some(Self {
            token_use_required: config.jwt_token_use.is_some() || is_cognito_user_pool(&issuer),
            token_uses: if token_uses.is_empty() {
                BTreeSet::from([TokenUse::Id, TokenUse::Access])
            } else {
                token_uses.into_iter().collect()
            },
            jwks,
            issuer,
            audiences,
            leeway: config.jwt_leeway,
            refresh_interval: config.jwt_jwks_refresh,
            unknown_kid_cooldown: config.jwt_kid_refresh_cooldown,
            fetch_timeout: config.jwt_jwks_timeout,
            owner_claim: config.jwt_owner_claim.clone(),
            roles_claim: config.jwt_roles_claim.clone(),
            organization_id_claim: config.jwt_org_id_claim.clone(),
            organization_name_claim: config.jwt_org_name_claim.clone(),
        }))
    }
}

/// Whether `issuer` is an Amazon Cognito user pool, whose tokens always carry `token_use`.
fn is_cognito_user_pool(issuer: &str) -> bool {
    issuer.strip_prefix("https://cognito-idp.").and_then(|rest| rest.split_once('/')).is_some_and(|(host, pool)| {
        (host.ends_with(".amazonaws.com") || host.ends_with(".amazonaws.com.cn")) && !pool.is_empty()
    })
}

#[derive(Debug)]
enum Source {
    File(PathBuf),
    Url(reqwest::Url, reqwest::Client),
    /// The issuer's discovery document, read again on every refresh so a moved
    /// `jwks_uri` is followed.
    Discovery(reqwest::Url, reqwest::Client),
}

/// Verifies JWTs and turns their claims into a [`Person`].
#[derive(Debug)]
pub(crate) struct JwtVerifier {
    settings: JwtSettings,
    source: Source,
    keys: RwLock<Arc<HashMap<String, Jwk>>>,
    /// When the JWKS was last fetched again after start; held while fetching, so
    /// refreshes never overlap.
    refreshed_at: Mutex<Option<Instant>>,
}

/// Whether a bearer credential is shaped like a JWT (three base64url parts, a JSON header).
pub(crate) fn looks_like_jwt(credential: &str) -> bool {
    credential.starts_with("eyJ") && credential.bytes().filter(|b| *b == b'.').count() == 2
}

fn refuse(detail: &'static str) -> Error {
    Error::unauthenticated(detail)
}

impl JwtVerifier {
    /// Loads the JWKS once; a start with an unreadable JWKS fails.
    pub(crate) async fn new(settings: JwtSettings) -> anyhow::Result<Self> {
        let client = || {
            reqwest::Client::builder()
                .connect_timeout(JWKS_CONNECT_TIMEOUT.min(settings.fetch_timeout))
                .timeout(settings.fetch_timeout)
                .build()
        };
        let (source, origin) = match &settings.jwks {
            Some(jwks) if jwks.contains("://") => (
                Source::Url(fetchable(jwks).map_err(|err| anyhow::anyhow!("KEYWARD_JWT_JWKS: {err}"))?, client()?),
                jwks.clone(),
            ),
            Some(path) => (Source::File(PathBuf::from(path)), path.clone()),
            None => {
                let document = format!("{}/.well-known/openid-configuration", settings.issuer.trim_end_matches('/'));
                let url = fetchable(&document).map_err(|err| anyhow::anyhow!("KEYWARD_JWT_ISSUER: {err}"))?;
                (Source::Discovery(url, client()?), document)
            }
        };
        let verifier =
            Self { keys: RwLock::new(Arc::new(HashMap::new())), refreshed_at: Mutex::new(None), source, settings };
        let keys = verifier.fetch().await.map_err(|err| anyhow::anyhow!("{origin}: {err}"))?;
        *verifier.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
        Ok(verifier)
    }

    async fn fetch(&self) -> anyhow::Result<HashMap<String, Jwk>> {
        let body = match &self.source {
            Source::File(path) => read_file(path).await?,
            Source::Url(url, client) => self.download(client, url).await?,
            Source::Discovery(document, client) => {
                let jwks = self.discover(client, document).await?;
                self.download(client, &jwks).await?
            }
        };
        let set: JwkSet = serde_json::from_slice(&body)?;
        Ok(set.keys.into_iter().filter_map(|jwk| jwk.common.key_id.clone().map(|kid| (kid, jwk))).collect())
    }

    /// The `jwks_uri` of the issuer's discovery document, which must name this issuer.
    async fn discover(&self, client: &reqwest::Client, document: &reqwest::Url) -> anyhow::Result<reqwest::Url> {
        #[derive(serde::Deserialize)]
        struct Discovery {
            issuer: String,
            jwks_uri: String,
        }
        let body = self.download(client, document).await?;
        let discovery: Discovery = serde_json::from_slice(&body)
            .map_err(|err| anyhow::anyhow!("the OIDC discovery document is unreadable: {err}"))?;
        if discovery.issuer != self.settings.issuer {
            anyhow::bail!("the OIDC discovery document names another issuer; refused");
        }
        fetchable(&discovery.jwks_uri).map_err(|err| anyhow::anyhow!("the discovery document's jwks_uri: {err}"))
    }

    /// `url`'s body, bounded in size and in time.
    async fn download(&self, client: &reqwest::Client, url: &reqwest::Url) -> anyhow::Result<Vec<u8>> {
        download(client, url).await.map_err(|err| {
            if err.downcast_ref::<reqwest::Error>().is_some_and(reqwest::Error::is_timeout) {
                anyhow::anyhow!(
                    "fetching {url} took longer than KEYWARD_JWT_JWKS_TIMEOUT ({}); refused",
                    humantime::format_duration(self.settings.fetch_timeout)
                )
            } else {
                err
            }
        })
    }

    /// Fetches the JWKS again unless that happened less than `min_age` ago.
    pub(crate) async fn refresh(&self, min_age: Duration) {
        let mut refreshed_at = self.refreshed_at.lock().await;
        if refreshed_at.is_some_and(|at| at.elapsed() < min_age) {
            return;
        }
        *refreshed_at = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                tracing::debug!(keys = keys.len(), "refreshed the JWKS");
                *self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
            }
            Err(err) => tracing::error!(error = %err, "could not refresh the JWKS; keeping the keys it had"),
        }
    }

    /// Refreshes the JWKS on the configured interval, forever.
    pub(crate) async fn refresh_periodically(self: Arc<Self>) {
        loop {
            tokio::time::sleep(self.settings.refresh_interval).await;
            self.refresh(Duration::ZERO).await;
        }
    }

    fn key(&self, kid: &str) -> Option<Jwk> {
        self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner).get(kid).cloned()
    }

    /// The person a token describes, if it is valid.
    pub(crate) async fn authenticate(&self, token: &str) -> Result<Person> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(refuse("token too large"));
        }
        let header = decode_header(token).map_err(|_| refuse("token header unreadable"))?;
        if !ALLOWED.contains(&header.alg) {
            return Err(refuse("token algorithm not accepted"));
        }
        let kid = header.kid.ok_or_else(|| refuse("token names no key (kid)"))?;
        let jwk = match self.key(&kid) {
            Some(jwk) => jwk,
            None => {
                self.refresh(self.settings.unknown_kid_cooldown).await;
                self.key(&kid).ok_or_else(|| refuse("token signed by an unknown key"))?
            }
        };
        // A key published for one algorithm must not verify tokens claiming another.
        if let Some(published) = jwk.common.key_algorithm
            && Algorithm::try_from(published).ok() != Some(header.alg)
        {
            return Err(refuse("token algorithm does not match its key"));
        }
        let key = DecodingKey::from_jwk(&jwk).map_err(|_| refuse("the JWKS key is unusable"))?;
        let mut validation = Validation::new(header.alg);
        validation.leeway = self.settings.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.settings.issuer]);
        validation.validate_aud = false;
        validation.set_required_spec_claims(&["exp", "iss"]);
        let claims =
            decode::<Map<String, Value>>(token, &key, &validation).map_err(|err| refuse(refusal(err.kind())))?.claims;
        self.check_audience(&claims)?;
        self.person(&claims)
    }

    /// The token is meant for one of the accepted audiences, in the claim its kind uses.
    fn check_audience(&self, claims: &Map<String, Value>) -> Result<()> {
        let audience = match claims.get("token_use") {
            None if self.settings.token_use_required => return Err(refuse("token lacks token_use")),
            None => claims.get("aud"),
            Some(kind) => {
                let kind = match kind.as_str() {
                    Some("id") => TokenUse::Id,
                    Some("access") => TokenUse::Access,
                    Some(_) | None => return Err(refuse("token kind (token_use) not accepted")),
                };
                if !self.settings.token_uses.contains(&kind) {
                    return Err(refuse("token kind (token_use) not accepted"));
                }
                match kind {
                    TokenUse::Id => claims.get("aud"),
                    TokenUse::Access => claims.get("client_id"),
                }
            }
        };
        let accepted = |name: &Value| name.as_str().is_some_and(|name| self.settings.audiences.contains(name));
        match audience {
            Some(Value::Array(names)) if names.iter().any(accepted) => Ok(()),
            Some(name @ Value::String(_)) if accepted(name) => Ok(()),
            Some(_) => Err(refuse("token audience not accepted")),
            None => Err(refuse("token lacks a required claim")),
        }
    }

    fn person(&self, claims: &Map<String, Value>) -> Result<Person> {
        let text = |name: &str| claim(claims, name).and_then(Value::as_str).unwrap_or_default().to_owned();
        let subject = text(&self.settings.owner_claim);
        if subject.is_empty() || subject.len() > 200 {
            return Err(refuse("token subject missing or too long"));
        }
        let roles: BTreeSet<String> = match claim(claims, &self.settings.roles_claim) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
            Some(Value::String(list)) => {
                list.split([' ', ',']).filter(|role| !role.is_empty()).map(str::to_owned).collect()
            }
            Some(_) | None => BTreeSet::new(),
        };
        Ok(Person {
            subject,
            organization_id: text(&self.settings.organization_id_claim),
            organization_name: text(&self.settings.organization_name_claim),
            roles,
        })
    }
}

/// The claim called `name`, or else the one at `name` read as a dotted path through nested
/// objects, so both `cognito:groups` and `realm_access.roles` name what they say.
fn claim<'a>(claims: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    claims.get(name).or_else(|| {
        let mut path = name.split('.');
        let first = claims.get(path.next()?)?;
        path.try_fold(first, |value, step| value.as_object()?.get(step))
    })
}

// ErrorKind is non_exhaustive: every other kind is an invalid token too.
#[allow(clippy::wildcard_enum_match_arm)]
fn refusal(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match kind {
        ErrorKind::ExpiredSignature => "token expired",
        ErrorKind::ImmatureSignature => "token not yet valid",
        ErrorKind::InvalidIssuer => "token issuer not accepted",
        ErrorKind::InvalidAudience => "token audience not accepted",
        ErrorKind::InvalidSignature => "token signature invalid",
        ErrorKind::MissingRequiredClaim(_) => "token lacks a required claim",
        _ => "token invalid",
    }
}

fn too_large() -> anyhow::Error {
    anyhow::anyhow!("the document is larger than {} MiB; refused", MAX_DOCUMENT_BYTES / (1024 * 1024))
}

/// The document at `url`, read chunk by chunk and refused once larger than [`MAX_DOCUMENT_BYTES`];
/// the client's timeout bounds the whole exchange, body included.
async fn download(client: &reqwest::Client, url: &reqwest::Url) -> anyhow::Result<Vec<u8>> {
    let mut response = client.get(url.clone()).send().await?.error_for_status()?;
    if response.content_length().is_some_and(|length| length > MAX_DOCUMENT_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The JWKS file, refused when larger than [`MAX_DOCUMENT_BYTES`] without reading it whole.
async fn read_file(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut body = Vec::new();
    tokio::fs::File::open(path).await?.take(MAX_DOCUMENT_BYTES as u64 + 1).read_to_end(&mut body).await?;
    if body.len() > MAX_DOCUMENT_BYTES {
        return Err(too_large());
    }
    Ok(body)
}

/// `url` if keyward may fetch keys from it: HTTPS, or plain HTTP on loopback for tests.
fn fetchable(url: &str) -> anyhow::Result<reqwest::Url> {
    if !url.starts_with("https://") && !is_loopback_http(url) {
        anyhow::bail!("{url:?} is not an https:// URL (http:// only on loopback)");
    }
    Ok(reqwest::Url::parse(url)?)
}

fn is_loopback_http(url: &str) -> bool {
    ["http://127.0.0.1:", "http://127.0.0.1/", "http://localhost:", "http://localhost/", "http://[::1]:"]
        .iter()
        .any(|prefix| url.starts_with(prefix))
}
