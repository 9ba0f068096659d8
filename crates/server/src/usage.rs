//! Usage gathered in memory per call and flushed to the store on an interval. A crash
//! loses at most one interval of counters and last-use times, never a key change.

use std::sync::{
    Mutex, PoisonError,
    atomic::{AtomicUsize, Ordering},
};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use keyward_core::{Error, credit::Credit, verify::Verdict};
use keyward_store::{Store, UsageBatch};
use uuid::Uuid;

/// Shards of pending usage, one per thread (up to this many), so concurrent calls rarely share a lock.
const SHARDS: usize = 16;

static REFUSED_ROW_LINES: crate::log_lines::LineThrottle = crate::log_lines::LineThrottle::new();

#[derive(Debug, Default)]
pub(crate) struct UsageRecorder {
    shards: [Mutex<UsageBatch>; SHARDS],
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
    /// This thread's shard: two threads counting calls of one key do not wait on one
    /// lock, and the shards are merged on flush.
    fn shard(&self) -> std::sync::MutexGuard<'_, UsageBatch> {
        self.shards[own_shard()].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a verification of key `id`; a valid one is also a use.
    pub(crate) fn verified(&self, id: Uuid, verdict: Verdict, at: DateTime<Utc>) {
        let hour = at.duration_trunc(TimeDelta::hours(1)).unwrap_or(at);
        let mut pending = self.shard();
        let count = pending.counts.entry((id, hour, outcome(verdict))).or_default();
        *count = count.saturating_add(1);
        if verdict == Verdict::Valid {
            pending.last_used.insert(id, at);
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
            let spent = pending.spent.entry((id, hour, cost.unit.clone())).or_default();
            *spent = spent.saturating_add(cost.amount);
        }
    }

    /// Records that key `id` authenticated a call.
    pub(crate) fn used(&self, id: Uuid, at: DateTime<Utc>) {
        self.shard().last_used.insert(id, at);
    }

    /// Writes what was gathered. While the database is unavailable everything is kept
    /// for the next flush; when it refuses the batch otherwise, the rows are written one
    /// by one, so a row it refuses is logged and dropped alone and every other lands.
    pub(crate) async fn flush(&self, store: &Store) {
        let mut batch = UsageBatch::default();
        for shard in &self.shards {
            let taken = std::mem::take(&mut *shard.lock().unwrap_or_else(PoisonError::into_inner));
            merge(&mut batch, taken);
        }
        if batch.is_empty() {
            return;
        }
        match store.flush_usage(&batch).await {
            Ok(()) => {}
            Err(err @ Error::Unavailable(_)) => {
                tracing::warn!(error = %err, "usage flush failed; keeping the counters for the next one");
                self.keep(batch);
            }
            Err(err) => {
                tracing::warn!(error = %err, "usage flush refused; writing its rows one by one");
                let mut rows = batch.into_rows();
                while let Some(row) = rows.next() {
                    match store.flush_usage(&row).await {
                        Ok(()) => {}
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
                        }
                    }
                }
            }
        }
    }

    /// Puts usage that could not be written back, to be written with the next flush.
    fn keep(&self, batch: UsageBatch) {
        merge(&mut self.shard(), batch);
    }
}

/// Adds `more` to `into`: counts and credits add up, the latest use wins.
fn merge(into: &mut UsageBatch, more: UsageBatch) {
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
}
