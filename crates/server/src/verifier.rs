//! Judging presented secrets: for VerifyApiKey and for authenticating callers, which
//! are the same question with no scopes required.

use chrono::Utc;
use keyward_core::{
    Error,
    environment::Environments,
    error::Result,
    model::ApiKey,
    policy::Caller,
    secret::{self, SecretHasher, Shape},
    verify::{Verdict, judge},
};
use keyward_store::Store;
use tonic::metadata::MetadataMap;

/// Looks secrets up and judges them.
#[derive(Debug, Clone)]
pub(crate) struct Verifier {
    store: Store,
    hasher: SecretHasher,
    environments: Environments,
}

/// The outcome of a verification: the verdict and, when one was found, the key.
#[derive(Debug)]
pub(crate) struct Verification {
    pub(crate) verdict: Verdict,
    pub(crate) key: Option<ApiKey>,
}

impl Verifier {
    pub(crate) fn new(store: Store, hasher: SecretHasher, environments: Environments) -> Self {
        Self { store, hasher, environments }
    }

    pub(crate) fn hasher(&self) -> &SecretHasher {
        &self.hasher
    }

    /// Judges `presented` for a request needing `required_scopes` on `network`.
    /// Malformed strings are refused without touching the database.
    pub(crate) async fn verify(
        &self,
        presented: &str,
        required_scopes: &[String],
        network: &str,
    ) -> Result<Verification> {
        if secret::classify(presented, self.environments.prefixes()) == Shape::Malformed {
            return Ok(Verification { verdict: Verdict::Malformed, key: None });
        }
        let hash = self.hasher.hash(presented);
        let Some(found) = self.store.find_by_secret(&hash).await? else {
            return Ok(Verification { verdict: Verdict::NotFound, key: None });
        };
        let verdict = judge(&found.key, found.secret_expires_at, required_scopes, network, Utc::now());
        Ok(Verification { verdict, key: Some(found.key) })
    }

    /// The caller behind the call's credentials: `authorization: Bearer <key>` or `token: <key>`.
    pub(crate) async fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller> {
        let presented = credential(metadata)?;
        let Verification { verdict, key } = self.verify(presented, &[], "").await?;
        match (verdict.auth_failure(), key) {
            (None, Some(key)) => Ok(Caller::Key(Box::new(key))),
            (Some(detail), _) => Err(Error::Unauthenticated { detail }),
            (None, None) => Err(Error::Unauthenticated { detail: "valid verdict without a key" }),
        }
    }
}

fn credential(metadata: &MetadataMap) -> Result<&str> {
    let unreadable = Error::Unauthenticated { detail: "credential header is not visible ASCII" };
    if let Some(value) = metadata.get("authorization") {
        let value = value.to_str().map_err(|_| unreadable)?;
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(Error::Unauthenticated { detail: "authorization header is not `Bearer <key>`" });
        }
        return Ok(token.trim());
    }
    if let Some(value) = metadata.get("token") {
        return value.to_str().map(str::trim).map_err(|_| unreadable);
    }
    Err(Error::Unauthenticated { detail: "no credentials" })
}
