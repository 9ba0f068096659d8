//! The verification cache: secret hash → key id, and key id → the key with its secrets.
//! Splitting the two lets a change evict one entry per key, whatever secrets it has.
//! Owners' shared rate limits live beside them, under the same rules.
//!
//! Staleness is bounded three ways: local changes evict at once; changes on other
//! replicas arrive by notification; and entries live at most `ttl`, in case a
//! notification is missed. When the change listener disconnects (a database outage,
//! say), what the cache holds was kept current until that moment, so it keeps answering
//! for `ttl` after it — no answer is staler than `ttl` — and is bypassed after that
//! until the listener is back and the cache has been emptied.
//!
//! A key still in use when its entry nears the end of its life is read again in the
//! background (refresh-ahead), so steady callers do not meet a miss every `ttl`.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use keyward_core::{rate::RateLimit, secret::SecretHash};
use keyward_store::KeyRecord;
use moka::{Expiry, sync::Cache};
use uuid::Uuid;

#[derive(Debug, Clone, Copy)]
enum HashEntry {
    Known(Uuid),
    /// No key has this secret (a negative answer, kept briefly).
    Unknown,
}

struct HashEntryExpiry {
    known: Duration,
    unknown: Duration,
}

impl HashEntryExpiry {
    fn lifetime(&self, entry: &HashEntry) -> Duration {
        match entry {
            HashEntry::Known(_) => self.known,
            HashEntry::Unknown => self.unknown,
        }
    }
}

impl Expiry<SecretHash, HashEntry> for HashEntryExpiry {
    fn expire_after_create(&self, _: &SecretHash, entry: &HashEntry, _: Instant) -> Option<Duration> {
        Some(self.lifetime(entry))
    }

    /// A fill over a present entry (a refresh) starts its lifetime again; moka would
    /// otherwise keep the old expiry.
    fn expire_after_update(
        &self,
        _: &SecretHash,
        entry: &HashEntry,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(self.lifetime(entry))
    }
}

/// Most refresh-ahead reads in flight at once: refreshes wait for no one, so beyond
/// this a nearly expired entry just expires and is read by its next caller.
const MAX_REFRESHES: usize = 4;

/// A key's entry is refreshed when used after this part of `ttl` (in quarters).
const REFRESH_AFTER_QUARTERS: u32 = 3;

/// A cached key, and when it was read from the database.
#[derive(Debug, Clone)]
struct CachedRecord {
    record: Arc<KeyRecord>,
    read_at: Instant,
}

/// What the cache knows of a secret hash.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// The key and its secrets; `refresh` when the entry nears its end while in use.
    Found { record: Arc<KeyRecord>, refresh: bool },
    /// Known to match no key (recently).
    Absent,
    /// The hash maps to this key, whose record must be loaded.
    KeyMiss(Uuid),
    /// Nothing known; ask the database by hash.
    Miss,
}

/// Sizes and lifetimes of the cache.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CacheSettings {
    pub(crate) capacity: u64,
    pub(crate) ttl: Duration,
    pub(crate) negative_ttl: Duration,
}

/// Proof that no eviction happened between a database read and the cache fill.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Epoch(u64);

pub(crate) struct KeyCache {
    by_hash: Cache<SecretHash, HashEntry>,
    by_id: Cache<Uuid, CachedRecord>,
    by_owner: Cache<String, Arc<[RateLimit]>>,
    /// Keys whose refresh-ahead read is in flight, so each is read once.
    refreshing: Mutex<HashSet<Uuid>>,
    epoch: AtomicU64,
    bypass: AtomicBool,
    ttl: Duration,
    /// Start of the clock `lost_at` counts from.
    origin: Instant,
    /// Milliseconds after `origin` (plus one) when change notifications were lost; 0
    /// while they arrive.
    lost_at: AtomicU64,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("keys", &self.by_id.entry_count())
            .field("bypass", &self.bypass.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl KeyCache {
    /// A cache; `bypass` starts it disabled until the change listener is connected.
    pub(crate) fn new(settings: CacheSettings, bypass: bool) -> Self {
        let expiry = HashEntryExpiry { known: settings.ttl, unknown: settings.negative_ttl.min(settings.ttl) };
        Self {
            by_hash: Cache::builder().max_capacity(settings.capacity).expire_after(expiry).build(),
            by_id: Cache::builder().max_capacity(settings.capacity).time_to_live(settings.ttl).build(),
            by_owner: Cache::builder().max_capacity(settings.capacity).time_to_live(settings.ttl).build(),
            refreshing: Mutex::default(),
            epoch: AtomicU64::new(0),
            bypass: AtomicBool::new(bypass || settings.capacity == 0),
            ttl: settings.ttl,
            origin: Instant::now(),
            lost_at: AtomicU64::new(0),
        }
    }

    pub(crate) fn lookup(&self, hash: &SecretHash) -> Lookup {
        if self.bypass.load(Ordering::Acquire) || self.lost_too_long() {
            return Lookup::Miss;
        }
        match self.by_hash.get(hash) {
            Some(HashEntry::Unknown) => Lookup::Absent,
            Some(HashEntry::Known(id)) => match self.by_id.get(&id) {
                Some(cached) => Lookup::Found {
                    refresh: cached.read_at.elapsed() >= self.ttl * REFRESH_AFTER_QUARTERS / 4,
                    record: cached.record,
                },
                None => Lookup::KeyMiss(id),
            },
            None => Lookup::Miss,
        }
    }

    /// The shared rate limits of `owner`, if known (none is an empty list).
    pub(crate) fn owner_limits(&self, owner: &str) -> Option<Arc<[RateLimit]>> {
        if self.bypass.load(Ordering::Acquire) || self.lost_too_long() {
            return None;
        }
        self.by_owner.get(owner)
    }

    /// Caches the shared limits of `owner` read from the database, under [`Self::fill`]'s rule.
    pub(crate) fn fill_owner(&self, epoch: Epoch, owner: &str, limits: &Arc<[RateLimit]>) {
        if self.bypass.load(Ordering::Acquire) || self.epoch.load(Ordering::Acquire) != epoch.0 {
            return;
        }
        self.by_owner.insert(owner.to_owned(), Arc::clone(limits));
    }

    /// Forgets the shared limits of `owner` (they changed).
    pub(crate) fn evict_owner(&self, owner: &str) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.by_owner.invalidate(owner);
    }

    /// Keys held, for metrics (counted after moka's pending bookkeeping, so it is current).
    pub(crate) fn key_count(&self) -> u64 {
        self.by_id.run_pending_tasks();
        self.by_id.entry_count()
    }

    /// Read before a database lookup; pass to [`Self::fill`] after it.
    pub(crate) fn epoch(&self) -> Epoch {
        Epoch(self.epoch.load(Ordering::Acquire))
    }

    /// Caches a database answer for `hash`, unless an eviction happened since `epoch`
    /// (the answer may predate that change) or the cache is bypassed.
    pub(crate) fn fill(&self, epoch: Epoch, hash: &SecretHash, record: Option<&Arc<KeyRecord>>) {
        if self.bypass.load(Ordering::Acquire) || self.epoch.load(Ordering::Acquire) != epoch.0 {
            return;
        }
        match record {
            Some(record) => {
                self.by_hash.insert(*hash, HashEntry::Known(record.key.id));
                self.by_id.insert(record.key.id, CachedRecord { record: Arc::clone(record), read_at: Instant::now() });
            }
            None => self.by_hash.insert(*hash, HashEntry::Unknown),
        }
    }

    /// Claims the refresh-ahead read of key `id`, unless one is in flight already or too
    /// many are; the claim ends when the returned guard is dropped.
    pub(crate) fn claim_refresh(self: &Arc<Self>, id: Uuid) -> Option<RefreshClaim> {
        let mut refreshing = self.refreshing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if refreshing.len() >= MAX_REFRESHES || !refreshing.insert(id) {
            return None;
        }
        Some(RefreshClaim { cache: Arc::clone(self), id })
    }

    /// Forgets key `id` (it changed).
    pub(crate) fn evict_key(&self, id: Uuid) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.by_id.invalidate(&id);
    }

    /// Forgets what is known of `hash` (a secret was just created).
    pub(crate) fn evict_hash(&self, hash: &SecretHash) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.by_hash.invalidate(hash);
    }

    /// Notes that changes may be missed from now on: the cache answers for `ttl` more.
    pub(crate) fn suspend(&self) {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1;
        // The first loss counts; a second one before a resync changes nothing.
        let _ = self.lost_at.compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Whether notifications were lost longer than `ttl` ago: what the cache holds may
    /// then be staler than `ttl`.
    fn lost_too_long(&self) -> bool {
        match self.lost_at.load(Ordering::Acquire) {
            0 => false,
            lost_at => {
                let since = self.origin.elapsed().saturating_sub(Duration::from_millis(lost_at - 1));
                since > self.ttl
            }
        }
    }

    /// Drops everything (changes may have been missed) and answers from the cache again.
    pub(crate) fn resync(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.by_hash.invalidate_all();
        self.by_id.invalidate_all();
        self.by_owner.invalidate_all();
        self.lost_at.store(0, Ordering::Release);
        self.bypass.store(false, Ordering::Release);
    }
}

/// A refresh-ahead read in flight; see [`KeyCache::claim_refresh`].
#[derive(Debug)]
pub(crate) struct RefreshClaim {
    cache: Arc<KeyCache>,
    id: Uuid,
}

impl Drop for RefreshClaim {
    fn drop(&mut self) {
        self.cache.refreshing.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.id);
    }
}
