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
use quick_cache::{UnitWeighter, sync::DefaultLifecycle};
use uuid::Uuid;

/// A bounded concurrent map whose reads take no lock for writing and touch no shared
/// queue: every verification reads it twice per secret it judges. Entries carry their
/// own deadline, checked on read against one clock reading.
type Map<K, V> = quick_cache::sync::Cache<K, V, UnitWeighter, foldhash::fast::RandomState>;

/// Entries sized up front at most; the map grows past this up to its capacity.
const PREALLOCATED_ENTRIES: u64 = 16_384;

fn map<K: Eq + std::hash::Hash, V: Clone>(capacity: u64) -> Map<K, V> {
    let capacity = capacity.max(1);
    Map::with(
        usize::try_from(capacity.min(PREALLOCATED_ENTRIES)).unwrap_or(1),
        capacity,
        UnitWeighter,
        foldhash::fast::RandomState::default(),
        DefaultLifecycle::default(),
    )
}

#[derive(Debug, Clone, Copy)]
enum HashEntry {
    Known(Uuid),
    /// No key has this secret (a negative answer, kept briefly).
    Unknown,
}

/// What the cache knows of a secret hash, until `expires_at`.
#[derive(Debug, Clone, Copy)]
struct HashSlot {
    entry: HashEntry,
    expires_at: Instant,
}

/// Longest lifetime an entry is given: deadlines are clock readings plus a lifetime, and
/// a longer one (a TTL of years, say) would overflow them without caching any better.
const LONGEST_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// Most keys waiting for or in a refresh-ahead read at once: refreshes wait for no one,
/// so beyond this a nearly expired entry just expires and is read by its next caller.
const MAX_REFRESHES: usize = 8192;

/// Most keys one refresh-ahead statement reads. Keys come due in crowds (those first
/// read together, at start-up, come due together), and one statement for many of them
/// costs the database and the server little more than one for one key.
const REFRESH_BATCH: usize = 512;

/// A key's entry is refreshed when used after this part of `ttl` (in quarters).
const REFRESH_AFTER_QUARTERS: u32 = 3;

/// A cached key, and when it was read from the database.
#[derive(Debug, Clone)]
struct CachedRecord {
    record: Arc<KeyRecord>,
    read_at: Instant,
}

/// An owner's shared rate limits, and when they were read from the database.
#[derive(Debug, Clone)]
struct CachedLimits {
    limits: Arc<[RateLimit]>,
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
    by_hash: Map<SecretHash, HashSlot>,
    by_id: Map<Uuid, CachedRecord>,
    by_owner: Map<String, CachedLimits>,
    /// Keys whose refresh-ahead read is queued or in flight, so each is read once.
    refreshing: Mutex<Refreshes>,
    epoch: AtomicU64,
    bypass: AtomicBool,
    ttl: Duration,
    negative_ttl: Duration,
    /// Start of the clock `lost_at` counts from.
    origin: Instant,
    /// Milliseconds after `origin` (plus one) when change notifications were lost; 0
    /// while they arrive.
    lost_at: AtomicU64,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("keys", &self.by_id.len())
            .field("bypass", &self.bypass.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl KeyCache {
    /// A cache; `bypass` starts it disabled until the change listener is connected.
    pub(crate) fn new(settings: CacheSettings, bypass: bool) -> Self {
        Self {
            by_hash: map(settings.capacity),
            by_id: map(settings.capacity),
            by_owner: map(settings.capacity),
            refreshing: Mutex::default(),
            epoch: AtomicU64::new(0),
            bypass: AtomicBool::new(bypass || settings.capacity == 0),
            ttl: settings.ttl.min(LONGEST_LIFETIME),
            negative_ttl: settings.negative_ttl.min(settings.ttl).min(LONGEST_LIFETIME),
            origin: Instant::now(),
            lost_at: AtomicU64::new(0),
        }
    }

    /// What is known of `hash` at `now`.
    pub(crate) fn lookup(&self, hash: &SecretHash, now: Instant) -> Lookup {
        if self.bypass.load(Ordering::Acquire) || self.lost_too_long() {
            return Lookup::Miss;
        }
        match self.by_hash.get(hash) {
            Some(HashSlot { entry: HashEntry::Unknown, expires_at }) if now < expires_at => Lookup::Absent,
            Some(HashSlot { entry: HashEntry::Known(id), expires_at }) if now < expires_at => {
                match self.by_id.get(&id) {
                    Some(cached) if self.fresh(cached.read_at, now) => Lookup::Found {
                        refresh: now.saturating_duration_since(cached.read_at) >= self.ttl * REFRESH_AFTER_QUARTERS / 4,
                        record: cached.record,
                    },
                    Some(_) | None => Lookup::KeyMiss(id),
                }
            }
            Some(_) | None => Lookup::Miss,
        }
    }

    /// Whether something read from the database at `read_at` may still be answered from.
    fn fresh(&self, read_at: Instant, now: Instant) -> bool {
        now.saturating_duration_since(read_at) < self.ttl
    }

    /// The shared rate limits of `owner`, if known at `now` (none is an empty list).
    pub(crate) fn owner_limits(&self, owner: &str, now: Instant) -> Option<Arc<[RateLimit]>> {
        if self.bypass.load(Ordering::Acquire) || self.lost_too_long() {
            return None;
        }
        let cached = self.by_owner.get(owner)?;
        self.fresh(cached.read_at, now).then_some(cached.limits)
    }

    /// Caches the shared limits of `owner` read from the database, under [`Self::fill`]'s rule.
    pub(crate) fn fill_owner(&self, epoch: Epoch, owner: &str, limits: &Arc<[RateLimit]>) {
        if self.bypass.load(Ordering::Acquire) || self.epoch.load(Ordering::Acquire) != epoch.0 {
            return;
        }
        self.by_owner.insert(owner.to_owned(), CachedLimits { limits: Arc::clone(limits), read_at: Instant::now() });
    }

    /// Forgets the shared limits of `owner` (they changed).
    pub(crate) fn evict_owner(&self, owner: &str) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.by_owner.remove(owner);
    }

    /// Keys held, for metrics (expired ones included until they are replaced or evicted).
    pub(crate) fn key_count(&self) -> u64 {
        u64::try_from(self.by_id.len()).unwrap_or(u64::MAX)
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
        let now = Instant::now();
        match record {
            Some(record) => {
                let id = record.key.id;
                self.by_hash.insert(*hash, HashSlot { entry: HashEntry::Known(id), expires_at: now + self.ttl });
                self.by_id.insert(id, CachedRecord { record: Arc::clone(record), read_at: now });
            }
            None => {
                self.by_hash.insert(*hash, HashSlot { entry: HashEntry::Unknown, expires_at: now + self.negative_ttl });
            }
        }
    }

    /// Queues the refresh-ahead read of key `id`, found by `hash`, unless it is queued or
    /// in flight already or too many are. True when no reader is running: the caller
    /// starts one, which takes the queue in batches ([`Self::next_refreshes`]).
    pub(crate) fn queue_refresh(&self, id: Uuid, hash: SecretHash) -> bool {
        let mut refreshes = self.refreshes();
        if refreshes.claimed.len() >= MAX_REFRESHES || !refreshes.claimed.insert(id) {
            return false;
        }
        refreshes.queued.push((id, hash));
        !std::mem::replace(&mut refreshes.reading, true)
    }

    /// The next batch of queued refreshes, at most [`REFRESH_BATCH`]; none when the queue
    /// is empty, and the reader stops then (the next queued refresh starts another).
    pub(crate) fn next_refreshes(&self) -> Vec<(Uuid, SecretHash)> {
        let mut refreshes = self.refreshes();
        let count = refreshes.queued.len().min(REFRESH_BATCH);
        let batch: Vec<_> = refreshes.queued.drain(..count).collect();
        if batch.is_empty() {
            refreshes.reading = false;
        }
        batch
    }

    /// Ends the refreshes of `batch`: their keys may be queued again.
    pub(crate) fn refreshed(&self, batch: &[(Uuid, SecretHash)]) {
        let mut refreshes = self.refreshes();
        for (id, _) in batch {
            refreshes.claimed.remove(id);
        }
    }

    fn refreshes(&self) -> std::sync::MutexGuard<'_, Refreshes> {
        // Each change is one push, split or removal: a panic cannot leave it half-made.
        self.refreshing.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets key `id` (it changed).
    pub(crate) fn evict_key(&self, id: Uuid) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.by_id.remove(&id);
    }

    /// Forgets what is known of `hash` (a secret was just created).
    pub(crate) fn evict_hash(&self, hash: &SecretHash) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.by_hash.remove(hash);
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
        self.by_hash.clear();
        self.by_id.clear();
        self.by_owner.clear();
        self.lost_at.store(0, Ordering::Release);
        self.bypass.store(false, Ordering::Release);
    }
}

/// Keys due for a refresh-ahead read.
#[derive(Debug, Default)]
struct Refreshes {
    /// Keys queued or being read.
    claimed: HashSet<Uuid>,
    /// Keys waiting for a read, with the hash each was found by.
    queued: Vec<(Uuid, SecretHash)>,
    /// Whether a reader is taking the queue.
    reading: bool,
}
