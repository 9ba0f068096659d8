//! Usage gathered in memory per call and flushed to the store on an interval. A crash
//! loses what was gathered since the last flush that landed (one interval while the
//! database takes the flushes), never a key change.

use std::{
    collections::hash_map::Entry,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use keyward_core::{
    Error,
    credit::{CountedUnits, Credit},
    verify::Verdict,
};
use keyward_store::{Store, UsageBatch};
use uuid::Uuid;

use crate::metrics::Metrics;

/// Shards of pending usage, one per thread (up to this many), so concurrent calls rarely share a lock.
const SHARDS: usize = 16;

static REFUSED_ROW_LINES: crate::log_lines::LineThrottle = crate::log_lines::LineThrottle::new();

/// Most distinct pending entries (counters, credits spent, last-use times) across the
/// shards. While flushes fail the pile only grows; past this (about 20 MiB, more with long
/// unit names) a new entry is dropped and counted in `keyward_usage_dropped_total`, and
/// entries already pending keep counting.
pub(crate) const MAX_PENDING: usize = 200_000;

#[derive(Debug)]
pub(crate) struct UsageRecorder {
    shards: [Mutex<UsageBatch>; SHARDS],
    /// Distinct entries pending in the shards and in a flush under way: a flush's entries
    /// count until they are written, dropped or merged back.
    pending: AtomicUsize,
    units: CountedUnits,
    metrics: Arc<Metrics>,
}

/// The outcome label of a verdict, as counters and metrics name it.
pub(crate) fn outcome(verdict: Verdict) -> &'static str {
    match verdict {
        Verdict::Valid => "VALID",
        Verdict::Malformed => "MALFORMED",
        Verdict::NotFound => "NOT_FOUND",
        Verdict::Inactive => "INACTIVE",
        Verdict::Revoked => "REVOKED",
        Verdict::Expired => "EXPIRED",
        Verdict::InsufficientScope => "INSUFFICIENT_SCOPE",
        Verdict::NetworkNotAllowed => "NETWORK_NOT_ALLOWED",
        Verdict::UsageExceeded => "USAGE_EXCEEDED",
        Verdict::RateLimited => "RATE_LIMITED",
    }
}

/// Shard index of this thread.
fn own_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|shard| *shard)
}

impl UsageRecorder {
    pub(crate) fn new(units: CountedUnits, metrics: Arc<Metrics>) -> Self {
        Self { shards: Default::default(), pending: AtomicUsize::new(0), units, metrics }
    }

    /// Refuses a cost key `usage_limited` may not be counted under (see [`CountedUnits`]).
    pub(crate) fn admit(&self, usage_limited: bool, costs: &[Credit]) -> keyward_core::error::Result<()> {
        self.units.admit(usage_limited, costs)
    }

    /// Takes a place for one new entry, or counts it dropped when the pile is full.
    fn reserve(&self) -> bool {
        let taken = self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |pending| {
                (pending < MAX_PENDING).then_some(pending + 1)
            })
            .is_ok();
        if !taken {
            self.metrics.usage_dropped(1);
        }
        taken
    }

    /// Gives back the places of `entries` that left the pile.
    fn release(&self, entries: usize) {
        self.pending.fetch_sub(entries, Ordering::Relaxed);
    }

    /// This thread's shard: two threads counting calls of one key do not wait on one
    /// lock, and the shards are merged on flush.
    fn shard(&self) -> std::sync::MutexGuard<'_, UsageBatch> {
        self.shards[own_shard()].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a verification of key `id`; a valid one is also a use.
    pub(crate) fn verified(&self, id: Uuid, verdict: Verdict, at: DateTime<Utc>) {
        let hour = at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at);
        let mut pending = self.shard();
        match pending.counts.entry((id, hour, outcome(verdict))) {
            Entry::Occupied(mut count) => *count.get_mut() = count.get().saturating_add(1),
            Entry::Vacant(place) => {
                if self.reserve() {
                    place.insert(1);
                }
            }
        }
        if verdict == Verdict::Valid {
            self.use_at(&mut pending, id, at);
        }
    }

    fn use_at(&self, pending: &mut UsageBatch, id: Uuid, at: DateTime<Utc>) {
        match pending.last_used.entry(id) {
            Entry::Occupied(mut latest) => *latest.get_mut() = (*latest.get()).max(at),
            Entry::Vacant(place) => {
                if self.reserve() {
                    place.insert(at);
                }
            }
        }
    }

    /// Counts credits a valid verification of key `id` presented as its cost.
    pub(crate) fn spent(&self, id: Uuid, costs: &[Credit], at: DateTime<Utc>) {
        if costs.is_empty() {
            return;
        }
        let hour = at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at);
        let mut pending = self.shard();
        for cost in costs {
            match pending.spent.entry((id, hour, cost.unit.clone())) {
                Entry::Occupied(mut spent) => *spent.get_mut() = spent.get().saturating_add(cost.amount),
                Entry::Vacant(place) => {
                    if self.reserve() {
                        place.insert(cost.amount);
                    }
                }
            }
        }
    }

    /// Records that key `id` authenticated a call.
    pub(crate) fn used(&self, id: Uuid, at: DateTime<Utc>) {
        self.use_at(&mut self.shard(), id, at);
    }

    /// Writes what was gathered. While the database is unavailable everything is kept
    /// for the next flush; when it refuses the batch otherwise, the rows are written one
    /// by one, so a row it refuses is logged and dropped alone and every other lands.
    pub(crate) async fn flush(&self, store: &Store) {
        let mut batch = UsageBatch::default();
        for shard in &self.shards {
            let taken = std::mem::take(&mut *shard.lock().unwrap_or_else(PoisonError::into_inner));
            let folded = merge(&mut batch, taken);
            self.release(folded);
        }
        if batch.is_empty() {
            return;
        }
        let entries = len(&batch);
        match store.flush_usage(&batch).await {
            Ok(()) => self.release(entries),
            Err(err @ Error::Unavailable(_)) => {
                tracing::warn!(error = %err, "usage flush failed; keeping the counters for the next one");
                self.keep(batch);
            }
            Err(err) => {
                tracing::warn!(error = %err, "usage flush refused; writing its rows one by one");
                let mut rows = batch.into_rows();
                while let Some(row) = rows.next() {
                    match store.flush_usage(&row).await {
                        Ok(()) => self.release(1),
                        Err(err @ Error::Unavailable(_)) => {
                            tracing::warn!(error = %err, "usage flush failed; keeping the counters for the next one");
                            self.keep(row);
                            rows.for_each(|rest| self.keep(rest));
                            return;
                        }
                        Err(err) => {
                            if let Some(suppressed) = REFUSED_ROW_LINES.admit() {
                                tracing::error!(error = %err, ?row, suppressed, "usage row refused by the database; dropped");
                            }
                            self.release(1);
                        }
                    }
                }
            }
        }
    }

    /// Puts usage that could not be written back, to be written with the next flush. Its
    /// entries kept their places in the pile; those folded into entries counted meanwhile
    /// give theirs back.
    fn keep(&self, batch: UsageBatch) {
        let folded = merge(&mut self.shard(), batch);
        self.release(folded);
    }
}

/// Distinct entries of a batch.
fn len(batch: &UsageBatch) -> usize {
    batch.counts.len() + batch.spent.len() + batch.last_used.len()
}

/// Adds `more` to `into`: counts and credits add up, the latest use wins. Returns how many
/// entries of `more` were folded into entries `into` already held.
fn merge(into: &mut UsageBatch, more: UsageBatch) -> usize {
    let before = len(into) + len(&more);
    for (key, count) in more.counts {
        let kept = into.counts.entry(key).or_default();
        *kept = kept.saturating_add(count);
    }
    for (key, amount) in more.spent {
        let spent = into.spent.entry(key).or_default();
        *spent = spent.saturating_add(amount);
    }
    for (id, at) in more.last_used {
        let latest = into.last_used.entry(id).or_insert(at);
        *latest = (*latest).max(at);
    }
    before - len(into)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder() -> UsageRecorder {
        UsageRecorder::new(CountedUnits::default(), Arc::new(Metrics::new()))
    }

    fn pending(recorder: &UsageRecorder) -> usize {
        recorder.shards.iter().map(|shard| len(&shard.lock().unwrap())).sum()
    }

    #[test]
    fn the_pile_stops_at_its_bound_and_keeps_counting_what_it_holds() {
        let recorder = recorder();
        let at = Utc::now();
        let ids: Vec<Uuid> = (0..MAX_PENDING + 10).map(|_| Uuid::new_v4()).collect();
        for id in &ids {
            recorder.verified(*id, Verdict::Inactive, at);
        }
        assert_eq!(pending(&recorder), MAX_PENDING);
        assert_eq!(recorder.pending.load(Ordering::Relaxed), MAX_PENDING);
        // An entry already held still counts; a new one is dropped.
        recorder.verified(ids[0], Verdict::Inactive, at);
        recorder.verified(ids[MAX_PENDING + 5], Verdict::Inactive, at);
        let held: i64 = recorder
            .shards
            .iter()
            .flat_map(|shard| shard.lock().unwrap().counts.values().copied().collect::<Vec<_>>())
            .sum();
        assert_eq!(held, i64::try_from(MAX_PENDING).unwrap() + 1);
    }

    #[test]
    fn usage_merged_back_gives_back_the_places_it_shares() {
        let recorder = recorder();
        let at = Utc::now();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        recorder.verified(a, Verdict::Valid, at);
        // As a failed flush does: take everything, count meanwhile, put it back.
        let taken = std::mem::take(&mut *recorder.shard());
        recorder.verified(a, Verdict::Valid, at);
        recorder.verified(b, Verdict::Valid, at);
        recorder.keep(taken);
        assert_eq!(pending(&recorder), 4, "a's count and last use, b's count and last use");
        assert_eq!(recorder.pending.load(Ordering::Relaxed), 4);
    }
}
