//! People's JWTs: verified against the identity provider's JWKS (a file or an HTTPS
//! URL), refreshed on an interval and, rate-limited, when a token names an unknown key.
//! Only asymmetric algorithms are accepted, so neither `none` nor an HS256 token signed
//! with a public key can pass.

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
use serde_json::Value;
use tokio::sync::Mutex;

/// Tokens longer than this are refused unread.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Largest JWKS accepted (an identity provider's holds a few keys, a few KiB): a larger
/// one is refused as soon as it is seen to be larger, never read whole.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
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
    pub(crate) jwks: String,
    pub(crate) issuer: String,
    pub(crate) audience: String,
    pub(crate) leeway: Duration,
    pub(crate) refresh_interval: Duration,
    pub(crate) unknown_kid_cooldown: Duration,
    /// Longest a JWKS fetch over HTTP may take, body included.
    pub(crate) fetch_timeout: Duration,
    pub(crate) roles_claim: String,
    pub(crate) organization_id_claim: String,
    pub(crate) organization_name_claim: String,
}

#[derive(Debug)]
enum Source {
    File(PathBuf),
    Url(reqwest::Url, reqwest::Client),
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
    Error::Unauthenticated { detail }
}

impl JwtVerifier {
    /// Loads the JWKS once; a start with an unreadable JWKS fails.
    pub(crate) async fn new(settings: JwtSettings) -> anyhow::Result<Self> {
        let source = if settings.jwks.starts_with("https://") || is_loopback_http(&settings.jwks) {
            let url = reqwest::Url::parse(&settings.jwks).map_err(|err| anyhow::anyhow!("KEYWARD_JWT_JWKS: {err}"))?;
            let client = reqwest::Client::builder()
                .connect_timeout(JWKS_CONNECT_TIMEOUT.min(settings.fetch_timeout))
                .timeout(settings.fetch_timeout)
                .build()?;
            Source::Url(url, client)
        } else if settings.jwks.contains("://") {
            anyhow::bail!("KEYWARD_JWT_JWKS must be a file path or an https:// URL (http:// only on loopback)");
        } else {
            Source::File(PathBuf::from(&settings.jwks))
        };
        let verifier =
            Self { keys: RwLock::new(Arc::new(HashMap::new())), refreshed_at: Mutex::new(None), source, settings };
        let keys = verifier
            .fetch()
            .await
            .map_err(|err| anyhow::anyhow!("KEYWARD_JWT_JWKS {}: {err}", verifier.settings.jwks))?;
        *verifier.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
        Ok(verifier)
    }

    async fn fetch(&self) -> anyhow::Result<HashMap<String, Jwk>> {
        let body = match &self.source {
            Source::File(path) => read_file(path).await?,
            Source::Url(url, client) => download(client, url).await.map_err(|err| {
                if err.downcast_ref::<reqwest::Error>().is_some_and(reqwest::Error::is_timeout) {
                    anyhow::anyhow!(
                        "the JWKS fetch took longer than KEYWARD_JWT_JWKS_TIMEOUT ({}); refused",
                        humantime::format_duration(self.settings.fetch_timeout)
                    )
                } else {
                    err
                }
            })?,
        };
        let set: JwkSet = serde_json::from_slice(&body)?;
        Ok(set.keys.into_iter().filter_map(|jwk| jwk.common.key_id.clone().map(|kid| (kid, jwk))).collect())
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
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        let claims = decode::<HashMap<String, Value>>(token, &key, &validation)
            .map_err(|err| refuse(refusal(err.kind())))?
            .claims;
        self.person(&claims)
    }

    fn person(&self, claims: &HashMap<String, Value>) -> Result<Person> {
        let text = |name: &str| claims.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
        let subject = text("sub");
        if subject.is_empty() || subject.len() > 200 {
            return Err(refuse("token subject missing or too long"));
        }
        let roles: BTreeSet<String> = match claims.get(&self.settings.roles_claim) {
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
    anyhow::anyhow!("the JWKS is larger than {} MiB; refused", MAX_JWKS_BYTES / (1024 * 1024))
}

/// The JWKS at `url`, read chunk by chunk and refused once larger than [`MAX_JWKS_BYTES`];
/// the client's timeout bounds the whole exchange, body included.
async fn download(client: &reqwest::Client, url: &reqwest::Url) -> anyhow::Result<Vec<u8>> {
    let mut response = client.get(url.clone()).send().await?.error_for_status()?;
    if response.content_length().is_some_and(|length| length > MAX_JWKS_BYTES as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_JWKS_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The JWKS file, refused when larger than [`MAX_JWKS_BYTES`] without reading it whole.
async fn read_file(path: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut body = Vec::new();
    tokio::fs::File::open(path).await?.take(MAX_JWKS_BYTES as u64 + 1).read_to_end(&mut body).await?;
    if body.len() > MAX_JWKS_BYTES {
        return Err(too_large());
    }
    Ok(body)
}

fn is_loopback_http(url: &str) -> bool {
    ["http://127.0.0.1:", "http://127.0.0.1/", "http://localhost:", "http://localhost/", "http://[::1]:"]
        .iter()
        .any(|prefix| url.starts_with(prefix))
}
