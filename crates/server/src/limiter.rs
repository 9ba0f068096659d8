//! Rate limits on the verification path, answered from memory almost every time.
//!
//! Each replica holds a *slice* of every bucket it serves: tokens leased from the shared
//! bucket row (`keyward_store::Store::lease`). A request spends from the slice; when the
//! slice runs short, one statement gives the slice back and leases a new one. Slices
//! are spent only within their lease window (`KEYWARD_RATE_LIMIT_LEASE`), and a bucket
//! forgets the leases of a window once the next one has ended too, so a replica that
//! died strands its tokens for at most two windows. A bucket found empty refuses in
//! memory until enough of it has refilled.

use std::{
    hash::{Hash, Hasher},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, TimeZone, Utc};
use keyward_core::{
    Error,
    error::Result,
    model::ApiKey,
    rate::{RateLimit, Shape, Subject},
};
use keyward_store::{Granted, Lease, Slice, Store};
use tokio::sync::OwnedMutexGuard;
use uuid::Uuid;

use crate::{config::Clock, metrics::Metrics};

/// Where one limit stands after a verification applied it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LimitState {
    pub(crate) name: String,
    pub(crate) limit: i64,
    pub(crate) remaining: i64,
    pub(crate) reset_at: Option<DateTime<Utc>>,
}

/// The outcome of applying a verification's limits.
#[derive(Debug)]
pub(crate) struct Applied {
    pub(crate) admitted: bool,
    pub(crate) states: Vec<LimitState>,
}

/// A bucket's identity as the replica holds it.
#[derive(Debug, PartialEq, Eq)]
struct BucketId {
    holder: Holder,
    name: Box<str>,
    period_ms: i64,
}

#[derive(Debug, PartialEq, Eq)]
enum Holder {
    Key(Uuid),
    Owner(Box<str>),
}

/// A bucket's identity borrowed from the key being verified: every verification looks
/// its buckets up by it, without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct BucketRef<'a> {
    holder: HolderRef<'a>,
    name: &'a str,
    period_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum HolderRef<'a> {
    Key(Uuid),
    Owner(&'a str),
}

impl BucketId {
    fn as_ref(&self) -> BucketRef<'_> {
        let holder = match &self.holder {
            Holder::Key(id) => HolderRef::Key(*id),
            Holder::Owner(owner) => HolderRef::Owner(owner),
        };
        BucketRef { holder, name: &self.name, period_ms: self.period_ms }
    }
}

// Hashed as its borrowed form, so that a `BucketRef` finds it.
impl Hash for BucketId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl hashbrown::Equivalent<BucketId> for BucketRef<'_> {
    fn equivalent(&self, id: &BucketId) -> bool {
        *self == id.as_ref()
    }
}

impl BucketRef<'_> {
    /// The bucket row's subject: `key:<id>` or `owner:<owner>`.
    fn subject(self) -> String {
        match self.holder {
            HolderRef::Key(id) => format!("key:{id}"),
            HolderRef::Owner(owner) => format!("owner:{owner}"),
        }
    }

    fn to_owned(self) -> BucketId {
        let holder = match self.holder {
            HolderRef::Key(id) => Holder::Key(id),
            HolderRef::Owner(owner) => Holder::Owner(owner.into()),
        };
        BucketId { holder, name: self.name.into(), period_ms: self.period_ms }
    }
}

type Buckets = hashbrown::HashMap<BucketId, Arc<Bucket>, foldhash::fast::RandomState>;

#[derive(Debug, Default)]
struct Held {
    window: i64,
    leased: i64,
    remaining: i64,
    /// Until when (ms) the bucket is known not to hold what the last refused request needed.
    empty_until: i64,
    /// The limit's arithmetic when the slice was leased, to give it back with.
    shape: Option<Shape>,
    /// Whole tokens the shared bucket held after the last lease.
    bucket: i64,
}

impl Held {
    /// What is left to admit as far as this replica knows: its slice, and the bucket as
    /// its last lease found it.
    fn left(&self) -> i64 {
        self.remaining + self.bucket
    }

    /// The slice this replica holds, to give back with its next lease statement.
    fn slice(&self) -> Option<Slice> {
        (self.leased > 0).then_some(Slice { window: self.window, leased: self.leased, unused: self.remaining })
    }
}

/// One bucket as this replica serves it.
#[derive(Debug, Default)]
struct Bucket {
    /// Until when (ms) the bucket is known to admit nothing: read without waiting for a
    /// lease in flight, so that under overload a refusal costs neither the lock nor a
    /// statement. Set when a lease found the bucket empty and this replica's slice
    /// spent; 0 once a lease or a returned cost brings tokens again.
    refused_until: AtomicI64,
    /// When `refused_until` was set: the refill it waits for takes `until - since`.
    refused_since: AtomicI64,
    held: Arc<tokio::sync::Mutex<Held>>,
}

impl Bucket {
    /// Notes that this replica's slice is spent and the bucket cannot pay until
    /// `until_ms`. Only a wait within one lease window is noted: a refusal from the hint
    /// skips the lock, and with it the check that the limit is unchanged, so an admin's
    /// change must not be held back longer than a window.
    fn refuse_until(&self, now_ms: i64, until_ms: i64, window_ms: i64) {
        if until_ms - now_ms <= window_ms {
            self.refused_since.store(now_ms, Ordering::Release);
            self.refused_until.store(until_ms, Ordering::Release);
        }
    }
}

/// A bucket found short is asked again at most this often (ms): under overload each
/// lease statement then brings what refilled meanwhile, not a token at a time, and the
/// statement is back before the next is due, so requests are refused, not queued
/// behind it.
const EMPTY_BUCKET_RECHECK_MS: i64 = 20;

enum Taken {
    Admitted { remaining: i64, window: i64 },
    Refused { reset_ms: i64 },
}

/// The replica's slices of every bucket it has served.
#[derive(Debug)]
pub(crate) struct Limiter {
    store: Store,
    window_ms: i64,
    clock: Clock,
    metrics: Arc<Metrics>,
    held: Mutex<Buckets>,
}

impl Limiter {
    pub(crate) fn new(store: Store, window: Duration, clock: Clock, metrics: Arc<Metrics>) -> Self {
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX).max(10);
        Self { store, window_ms, clock, metrics, held: Mutex::default() }
    }

    /// Spends `cost` under each limit of `key` (its own, or its owner's shared), all or
    /// none: a limit that refuses gives back what the limits before it took.
    pub(crate) async fn apply(&self, key: &ApiKey, limits: &[(Subject, &RateLimit, i64)]) -> Result<Applied> {
        let mut states = Vec::with_capacity(limits.len());
        let mut taken = Vec::with_capacity(limits.len());
        let mut admitted = true;
        for &(subject, limit, cost) in limits {
            let holder = match subject {
                Subject::Key => HolderRef::Key(key.id),
                Subject::Owner => HolderRef::Owner(&key.owner),
            };
            let id = BucketRef { holder, name: &limit.name, period_ms: limit.period_ms };
            let bucket = self.bucket(id);
            let outcome = if admitted { Some(self.take(id, &bucket, limit.shape(), cost).await?) } else { None };
            let (remaining, reset_at) = match outcome {
                Some(Taken::Admitted { remaining, window }) => {
                    taken.push((bucket, cost, window));
                    (remaining, None)
                }
                Some(Taken::Refused { reset_ms }) => {
                    admitted = false;
                    (0, Utc.timestamp_millis_opt(reset_ms).single())
                }
                // Not tried once an earlier limit refused: it stands as it did.
                None => (bucket.held.lock().await.left(), None),
            };
            states.push(LimitState { name: limit.name.clone(), limit: limit.limit, remaining, reset_at });
        }
        if !admitted {
            for (bucket, cost, window) in taken {
                let mut held = bucket.held.lock().await;
                if held.window == window {
                    held.remaining += cost;
                    bucket.refused_until.store(0, Ordering::Release);
                }
            }
        }
        Ok(Applied { admitted, states })
    }

    fn bucket(&self, id: BucketRef<'_>) -> Arc<Bucket> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(bucket) = held.get(&id) {
            return Arc::clone(bucket);
        }
        Arc::clone(held.entry(id.to_owned()).or_default())
    }

    async fn take(&self, id: BucketRef<'_>, bucket: &Bucket, shape: Shape, cost: i64) -> Result<Taken> {
        let refused_until = bucket.refused_until.load(Ordering::Acquire);
        let now_ms = self.clock.now().timestamp_millis();
        if now_ms < refused_until {
            return Ok(Taken::Refused { reset_ms: refused_until });
        }
        let refill_ms = refused_until - bucket.refused_since.load(Ordering::Acquire);
        let mut held = match Arc::clone(&bucket.held).try_lock_owned() {
            Ok(held) => held,
            // The bucket was empty at its last lease, has refilled about one slice since,
            // and another request is leasing that slice: what it brings is spent after
            // it, so under overload the others are refused rather than queued behind the
            // statement. Longer after (a bucket refilled further) they wait their turn.
            Err(_) if refused_until != 0 && now_ms < refused_until.saturating_add(refill_ms) => {
                return Ok(Taken::Refused { reset_ms: refused_until.saturating_add(refill_ms) });
            }
            Err(_) => Arc::clone(&bucket.held).lock_owned().await,
        };
        loop {
            // Read under the lock, right before the spend it decides: a slice is spent only
            // while its window is current by a fresh reading of the clock. Its bucket
            // forgets its lease only a whole window later, so neither a stall between
            // clock and spend nor replicas' clocks apart by less than a window can make a
            // spend outlive its lease.
            let now_ms = self.clock.now().timestamp_millis();
            let window = now_ms / self.window_ms;
            // A slice leased under other numbers (an admin changed the limit) goes back at
            // once rather than being spent under the old ones.
            if held.window == window && held.shape == Some(shape) {
                if held.remaining >= cost {
                    held.remaining -= cost;
                    return Ok(Taken::Admitted { remaining: held.left(), window });
                }
                if now_ms < held.empty_until {
                    if held.remaining == 0 {
                        bucket.refuse_until(now_ms, held.empty_until, self.window_ms);
                    }
                    return Ok(Taken::Refused { reset_ms: held.empty_until });
                }
            }
            // A slice of a twentieth of the burst: few statements per burst, and little
            // held back from other replicas. A fast limit asks for what refills over two
            // rechecks if that is more, so that under overload one statement per recheck
            // brings all that refilled since the last and admission keeps up with the
            // limit.
            let burst = shape.capacity / shape.unit;
            let refill = shape.limit.saturating_mul(2 * EMPTY_BUCKET_RECHECK_MS) / shape.unit;
            let want = cost.max(burst / 20).max(refill.min(burst));
            let (leased, granted) = self.lease(held, id, shape, now_ms, window, want).await?;
            held = leased;
            // A bucket that could not fill the slice is leased from again once what the
            // next request lacks has refilled (the rest of this cost, or a whole cost once
            // the slice is spent), and not sooner than EMPTY_BUCKET_RECHECK_MS.
            if granted.tokens < want {
                let lacking = if granted.tokens < cost { cost - granted.tokens } else { cost };
                held.empty_until = now_ms + shape.wait_ms(granted.level, lacking).max(EMPTY_BUCKET_RECHECK_MS);
            }
            if granted.tokens < cost {
                let reset_ms = held.empty_until;
                if held.remaining == 0 {
                    bucket.refuse_until(now_ms, reset_ms, self.window_ms);
                }
                return Ok(Taken::Refused { reset_ms });
            }
            bucket.refused_until.store(0, Ordering::Release);
            // Spent on the next turn, if the window is still open once the lease is back.
        }
    }

    /// Leases a new slice of `id`'s bucket into `held`, giving the slice it held back.
    ///
    /// The statement runs in a task of its own, which also records the outcome in `held`:
    /// a lease once sent must be recorded even if the request that sent it is cancelled (a
    /// client's deadline, a closed connection). Otherwise a statement that committed but
    /// whose answer was dropped would leave the old slice in place, to be given back a
    /// second time and its tokens counted twice. A statement that failed may have
    /// committed too, so the old slice counts as given back either way: at worst its
    /// tokens stay stranded until its window is forgotten (under-admission, never over).
    async fn lease(
        &self,
        mut held: OwnedMutexGuard<Held>,
        id: BucketRef<'_>,
        shape: Shape,
        now_ms: i64,
        window: i64,
        want: i64,
    ) -> Result<(OwnedMutexGuard<Held>, Granted)> {
        let slice = held.slice();
        let (store, metrics, subject, name) =
            (self.store.clone(), Arc::clone(&self.metrics), id.subject(), id.name.to_owned());
        let statement = tokio::spawn(async move {
            let lease = Lease { subject: &subject, name: &name, shape, now_ms, window, want, slice };
            let granted = store.lease(&lease).await;
            *held = match &granted {
                Ok(granted) => {
                    metrics.rate_leased(slice.map_or(0, |slice| slice.unused), granted.tokens);
                    Held {
                        window,
                        leased: granted.tokens,
                        remaining: granted.tokens,
                        empty_until: 0,
                        shape: Some(shape),
                        bucket: granted.level / shape.unit,
                    }
                }
                Err(_) => Held { window, shape: Some(shape), ..Held::default() },
            };
            (held, granted)
        });
        let (held, granted) = statement.await.map_err(Error::internal)?;
        Ok((held, granted?))
    }

    /// Forgets the slices of buckets not served in the last two windows, so memory follows
    /// the buckets in use rather than every bucket ever served. What such a slice left
    /// unused was forgotten by its bucket with its window (under-admission only).
    pub(crate) fn sweep(&self) {
        let current = self.clock.now().timestamp_millis() / self.window_ms;
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        // A slice in use (locked) is kept; its holder still has it.
        held.retain(|_, bucket| bucket.held.try_lock().map_or(true, |slice| slice.window + 1 >= current));
    }

    /// How often [`Self::sweep`] is worth running.
    pub(crate) fn sweep_interval(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.window_ms).unwrap_or(1_000)) * 10
    }

    /// Gives every slice back, so a replica that stops strands nothing.
    pub(crate) async fn give_back(&self) {
        let held: Vec<_> = self.held.lock().unwrap_or_else(PoisonError::into_inner).drain().collect();
        let now_ms = self.clock.now().timestamp_millis();
        // In an outage every slice fails alike: one line for them all.
        let (mut failed, mut first_error) = (0_u64, None);
        for (id, bucket) in held {
            let held = bucket.held.lock().await;
            let (Some(shape), Some(slice)) = (held.shape, held.slice()) else { continue };
            let subject = id.as_ref().subject();
            let lease = Lease {
                subject: &subject,
                name: &id.name,
                shape,
                now_ms,
                window: now_ms / self.window_ms,
                want: 0,
                slice: Some(slice),
            };
            match self.store.lease(&lease).await {
                Ok(_) => self.metrics.rate_leased(slice.unused, 0),
                Err(err) => {
                    failed += 1;
                    first_error.get_or_insert(err);
                }
            }
        }
        if let Some(err) = first_error {
            tracing::warn!(error = %err, failed, "could not give rate-limit slices back; they return when their lease windows end");
        }
    }
}
