//! Judging presented secrets: for VerifyApiKey and for authenticating callers, which
//! are the same question with no scopes required. The hot path: checksum (no I/O) →
//! keyed hash → cache → on a miss one indexed read (shared with concurrent misses) → checks
//! in memory.
//!
//! The store's futures are awaited boxed (`Box::pin`): they are kilobytes, and awaited
//! inline they would make the futures of every cached call as large, moved on each call.

use std::{collections::HashMap, sync::Arc, time::Instant};

use chrono::{DateTime, Utc};
use keyward_core::{
    Error,
    credit::{Charge, ChargeOutcome, Credit},
    environment::Environments,
    error::Result,
    hold::HoldOutcome,
    model::ApiKey,
    policy::Caller,
    rate::{self, RateUse},
    scope_query::Query,
    secret::{self, SecretHash, SecretHasher, Shape},
    verify::{Verdict, judge, missing_scopes},
};
use keyward_store::{HoldRequest, KeyRecord, Store};
use tonic::metadata::MetadataMap;
use uuid::Uuid;

use crate::{
    batcher::Batcher,
    cache::{KeyCache, Lookup},
    jwt::{JwtVerifier, looks_like_jwt},
    limiter::{LimitState, Limiter},
    metrics::{CacheResult, Metrics},
    miss_reads::MissReads,
    queries::Queries,
    usage::UsageRecorder,
};

/// How long a key whose refresh failed waits before another refresh is tried.
const REFRESH_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a refresh reader, started by the first key of a crowd coming due, waits for
/// the rest before its first statement: calls arriving together reach the queue one after
/// another, and read at once the first would go alone. An entry being refreshed still has
/// a quarter of its lifetime, so the wait costs nothing a caller sees.
const REFRESH_GATHER: std::time::Duration = std::time::Duration::from_millis(10);

/// Looks secrets up and judges them.
#[derive(Debug, Clone)]
pub(crate) struct Verifier {
    store: Store,
    hasher: SecretHasher,
    environments: Environments,
    cache: Arc<KeyCache>,
    usage: Arc<UsageRecorder>,
    jwt: Option<Arc<JwtVerifier>>,
    metrics: Arc<Metrics>,
    charger: Batcher<Charge>,
    holder: Batcher<HoldRequest>,
    limiter: Arc<Limiter>,
    queries: Arc<Queries>,
    misses: Arc<MissReads>,
}

/// The outcome of a verification: the verdict and, when one was found, the key's record.
#[derive(Debug)]
pub(crate) struct Verification {
    pub(crate) verdict: Verdict,
    pub(crate) record: Option<Arc<KeyRecord>>,
    /// After a charge, the balances of the charged units.
    pub(crate) remaining: Vec<Credit>,
    /// Every rate limit applied, and where it stands.
    pub(crate) limits: Vec<LimitState>,
    /// For an insufficient scope: the fewest scopes that would have satisfied the request.
    pub(crate) missing: Vec<String>,
    /// After a hold: its id.
    pub(crate) hold_id: Option<Uuid>,
}

/// What a verified request costs, and who asks.
#[derive(Debug, Default)]
pub(crate) struct Cost {
    pub(crate) credits: Vec<Credit>,
    pub(crate) request_id: Option<String>,
    pub(crate) actor: String,
    /// Limits named by the request, besides the key's auto-applied ones.
    pub(crate) rate: Vec<RateUse>,
    /// Credits to reserve instead of charging, and for how long.
    pub(crate) hold: Option<(Vec<Credit>, chrono::TimeDelta)>,
}

/// The moment a call is judged at: both clocks, read once when it arrives, so the caller's
/// authentication and the key's checks agree on it, and a call that waits on a cache miss
/// is still judged as of its arrival. (Reading them once measured as no faster: callgrind
/// counts the same instructions per call.)
#[derive(Debug, Clone, Copy)]
pub(crate) struct Moment {
    /// For expiry and usage: what keys and records are dated by.
    pub(crate) wall: DateTime<Utc>,
    /// For the cache's deadlines, which the wall clock's steps must not move.
    pub(crate) instant: Instant,
}

impl Moment {
    pub(crate) fn now() -> Self {
        Self { wall: Utc::now(), instant: Instant::now() }
    }
}

impl Verification {
    /// The key found, if any.
    pub(crate) fn key(&self) -> Option<&Arc<ApiKey>> {
        self.record.as_ref().map(|record| &record.key)
    }
}

impl Verifier {
    #[allow(clippy::too_many_arguments)] // each is a collaborator of its own, shared with other parts
    pub(crate) fn new(
        store: Store,
        hasher: SecretHasher,
        environments: Environments,
        cache: Arc<KeyCache>,
        usage: Arc<UsageRecorder>,
        jwt: Option<Arc<JwtVerifier>>,
        metrics: Arc<Metrics>,
        charger: Batcher<Charge>,
        holder: Batcher<HoldRequest>,
        limiter: Arc<Limiter>,
    ) -> Self {
        Self {
            misses: MissReads::new(store.clone(), Arc::clone(&metrics)),
            store,
            hasher,
            environments,
            cache,
            usage,
            jwt,
            metrics,
            charger,
            holder,
            limiter,
            queries: Arc::new(Queries::new()),
        }
    }

    pub(crate) fn hasher(&self) -> &SecretHasher {
        &self.hasher
    }

    /// The scope query `text` parsed (once per distinct text), `None` for none.
    pub(crate) fn query(&self, text: &str) -> Result<Option<Arc<Query>>> {
        self.queries.parse(text)
    }

    /// The shared rate limits of `owner`, from the cache or, on a miss, the database.
    async fn owner_limits(&self, owner: &str, at: Instant) -> Result<Arc<[rate::RateLimit]>> {
        if let Some(limits) = self.cache.owner_limits(owner, at) {
            return Ok(limits);
        }
        let epoch = self.cache.epoch();
        let limits: Arc<[rate::RateLimit]> = Box::pin(self.store.owner_rate_limits(owner)).await?.into();
        self.cache.fill_owner(epoch, owner, &limits);
        Ok(limits)
    }

    /// Forgets the cached shared limits of `owner` after a local change.
    pub(crate) fn owner_limits_changed(&self, owner: &str) {
        self.cache.evict_owner(owner);
    }

    /// Forgets cached state of key `id` after a local change.
    pub(crate) fn key_changed(&self, id: Uuid) {
        self.cache.evict_key(id);
    }

    /// Forgets a cached "no such key" for a secret that now exists.
    pub(crate) fn secret_created(&self, hash: &SecretHash) {
        self.cache.evict_hash(hash);
    }

    /// Judges `presented` for a request needing `required_scopes` and `query` on `network`, charges
    /// a valid usage-limited key the `cost`, and counts the outcome against the key, as
    /// of `at`.
    pub(crate) async fn verify(
        &self,
        presented: &str,
        required_scopes: &[String],
        query: Option<&Query>,
        network: &str,
        cost: Cost,
        at: Moment,
    ) -> Result<Verification> {
        // Bounded before anything is judged, charged or counted, metered key or not.
        keyward_core::credit::check_costs(&cost.credits)?;
        let now = at.wall;
        let mut verification = self.verdict(presented, required_scopes, query, network, at).await?;
        // Before rate limits, so a refused cost spends no tokens.
        if let (Verdict::Valid, Some(key)) = (verification.verdict, verification.key()) {
            self.usage.admit(key.usage_limited, &cost.credits)?;
        }
        // Limits after the key's own checks and before the charge: a request they refuse
        // is never charged.
        if let (Verdict::Valid, Some(key)) = (verification.verdict, verification.key()) {
            let shared = self.owner_limits(&key.owner, at.instant).await?;
            let applicable = rate::applicable(&key.rate_limits, &shared, &cost.rate);
            if !applicable.is_empty() {
                let applied = self.limiter.apply(key, &applicable).await?;
                if !applied.admitted {
                    verification.verdict = Verdict::RateLimited;
                }
                verification.limits = applied.states;
            }
        }
        if let (Verdict::Valid, Some(key), Some((amounts, ttl))) =
            (verification.verdict, verification.key(), &cost.hold)
        {
            if !key.usage_limited {
                return Err(Error::invalid(
                    "hold",
                    "the key is not usage-limited, so it has no credits to hold: charge with cost instead",
                ));
            }
            let request = HoldRequest {
                key_id: key.id,
                pool_id: key.pool(),
                amounts: amounts.clone(),
                request_id: cost.request_id.clone(),
                actor: cost.actor.clone(),
                placed_at: now,
                expires_at: now + *ttl,
            };
            match Box::pin(self.holder.apply(request)).await? {
                HoldOutcome::Held(id) => verification.hold_id = Some(id),
                HoldOutcome::Exceeded => verification.verdict = Verdict::UsageExceeded,
                HoldOutcome::RequestIdReused => {
                    return Err(Error::invalid(
                        "request_id",
                        "was already used for another hold of this key (another amount or caller); nothing was \
                         reserved: use a fresh request_id for a new request",
                    ));
                }
            }
        }
        if let (Verdict::Valid, Some(key)) = (verification.verdict, verification.key())
            && key.usage_limited
            && !cost.credits.is_empty()
        {
            let charge = Charge {
                key_id: key.id,
                pool_id: key.pool(),
                costs: cost.credits.clone(),
                request_id: cost.request_id,
                actor: cost.actor,
            };
            match Box::pin(self.charger.apply(charge)).await? {
                ChargeOutcome::Charged(remaining) => {
                    self.metrics.charged(&cost.credits);
                    verification.remaining = remaining;
                }
                ChargeOutcome::Exceeded => verification.verdict = Verdict::UsageExceeded,
                ChargeOutcome::RequestIdReused => {
                    return Err(Error::invalid(
                        "request_id",
                        "was already used for another charge (another key, cost or caller); nothing was charged: \
                         use a fresh request_id for a new request",
                    ));
                }
            }
        }
        self.metrics.verified(verification.verdict);
        if let Some(key) = verification.key() {
            self.usage.verified(key.id, verification.verdict, now);
            if verification.verdict == Verdict::Valid {
                self.usage.spent(key.id, &cost.credits, now);
            }
        }
        Ok(verification)
    }

    async fn verdict(
        &self,
        presented: &str,
        required_scopes: &[String],
        query: Option<&Query>,
        network: &str,
        at: Moment,
    ) -> Result<Verification> {
        if secret::classify(presented, self.environments.prefixes()) == Shape::Malformed {
            return Ok(Verification {
                verdict: Verdict::Malformed,
                record: None,
                remaining: Vec::new(),
                limits: Vec::new(),
                missing: Vec::new(),
                hold_id: None,
            });
        }
        let hash = self.hasher.hash(presented);
        let Some(record) = self.record(&hash, at.instant).await? else {
            return Ok(Verification {
                verdict: Verdict::NotFound,
                record: None,
                remaining: Vec::new(),
                limits: Vec::new(),
                missing: Vec::new(),
                hold_id: None,
            });
        };
        // A secret removed by a rotation without grace no longer finds its key.
        let Some(secret) = record.secret(&hash) else {
            return Ok(Verification {
                verdict: Verdict::NotFound,
                record: None,
                remaining: Vec::new(),
                limits: Vec::new(),
                missing: Vec::new(),
                hold_id: None,
            });
        };
        let verdict = judge(&record.key, secret.expires_at, required_scopes, query, network, at.wall);
        let missing = if verdict == Verdict::InsufficientScope {
            missing_scopes(&record.key.effective_scopes, required_scopes, query)
        } else {
            Vec::new()
        };
        Ok(Verification {
            verdict,
            record: Some(record),
            remaining: Vec::new(),
            limits: Vec::new(),
            missing,
            hold_id: None,
        })
    }

    async fn record(&self, hash: &SecretHash, at: Instant) -> Result<Option<Arc<KeyRecord>>> {
        match self.cache.lookup(hash, at) {
            Lookup::Found { record, refresh } => {
                self.metrics.cache_lookup(CacheResult::Hit);
                if refresh {
                    self.refresh_ahead(*hash, record.key.id);
                }
                Ok(Some(record))
            }
            Lookup::Absent => {
                self.metrics.cache_lookup(CacheResult::NegativeHit);
                Ok(None)
            }
            Lookup::KeyMiss(id) => {
                self.metrics.cache_lookup(CacheResult::Miss);
                let epoch = self.cache.epoch();
                let record = Box::pin(self.store.find_record_by_id(id)).await?.map(Arc::new);
                self.cache.fill(epoch, hash, record.as_ref());
                Ok(record)
            }
            Lookup::Miss => {
                self.metrics.cache_lookup(CacheResult::Miss);
                let epoch = self.cache.epoch();
                let record = self.misses.read(*hash).await?;
                self.cache.fill(epoch, hash, record.as_ref());
                Ok(record)
            }
        }
    }

    /// Reads a key in use again in the background, before its entry expires, so its
    /// callers keep hitting the cache. Keys coming due together are read together, a
    /// batch per statement. A failed read changes nothing: the entries expire as they
    /// would have, and their next callers read the keys.
    fn refresh_ahead(&self, hash: SecretHash, id: Uuid) {
        if !self.cache.queue_refresh(id, hash) {
            return;
        }
        let (store, cache, metrics) = (self.store.clone(), Arc::clone(&self.cache), Arc::clone(&self.metrics));
        tokio::spawn(async move {
            tokio::time::sleep(REFRESH_GATHER).await;
            loop {
                let batch = cache.next_refreshes();
                if batch.is_empty() {
                    return;
                }
                let epoch = cache.epoch();
                let hashes: Vec<SecretHash> = batch.iter().map(|(_, hash)| *hash).collect();
                match store.find_records_by_secrets(&hashes).await {
                    Ok(records) => {
                        let by_id: HashMap<Uuid, Arc<KeyRecord>> =
                            records.into_iter().map(|record| (record.key.id, Arc::new(record))).collect();
                        for (id, hash) in &batch {
                            // A key that lost this secret (or is gone) no longer answers it.
                            let record = by_id.get(id).filter(|record| record.secret(hash).is_some());
                            cache.fill(epoch, hash, record);
                            metrics.cache_refreshed();
                        }
                        cache.refreshed(&batch);
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, keys = batch.len(), "refreshing cached keys failed; they expire as usual");
                        // Held a while, so that while the database is away every hit does
                        // not start another read bound to fail.
                        tokio::time::sleep(REFRESH_RETRY_PAUSE).await;
                        cache.refreshed(&batch);
                    }
                }
            }
        });
    }

    /// The caller behind the call's credentials: `authorization: Bearer <key or JWT>` or `token: <key>`.
    pub(crate) async fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller> {
        self.authenticate_at(metadata, Moment::now()).await
    }

    /// [`Self::authenticate`] as of `at`, for a call that reads the clocks once.
    pub(crate) async fn authenticate_at(&self, metadata: &MetadataMap, at: Moment) -> Result<Caller> {
        let (presented, bearer) = credential(metadata)?;
        if bearer && looks_like_jwt(presented) {
            let jwt = self.jwt.as_ref().ok_or_else(|| Error::unauthenticated("JWT callers are not configured"))?;
            return Ok(Caller::Person(Arc::new(Box::pin(jwt.authenticate(presented)).await?)));
        }
        let verification = self.verdict(presented, &[], None, "", at).await?;
        let (verdict, key) = (verification.verdict, verification.key().cloned());
        match (verdict.auth_failure(), key) {
            (None, Some(key)) => {
                self.usage.used(key.id, at.wall);
                Ok(Caller::Key(key))
            }
            (Some(detail), _) => Err(Error::Unauthenticated { detail, key: verdict.unusable() }),
            (None, None) => Err(Error::unauthenticated("valid verdict without a key")),
        }
    }
}

/// The presented credential, and whether it came as a bearer token (the only place a JWT may).
fn credential(metadata: &MetadataMap) -> Result<(&str, bool)> {
    let unreadable = Error::unauthenticated("credential header is not visible ASCII");
    if let Some(value) = metadata.get("authorization") {
        let value = value.to_str().map_err(|_| unreadable)?;
        let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
            return Err(Error::unauthenticated("authorization header is not `Bearer <key>`"));
        }
        return Ok((token.trim(), true));
    }
    if let Some(value) = metadata.get("token") {
        return value.to_str().map(|key| (key.trim(), false)).map_err(|_| unreadable);
    }
    Err(Error::unauthenticated("no credentials"))
}
