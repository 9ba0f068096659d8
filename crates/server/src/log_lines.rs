//! Lines that a failure can repeat once per call or per batch (an outage, a full disk, a
//! stranger spraying keys) are written at most once a second per kind, each with the
//! count of those held back since the last: an outage costs a few lines, not megabytes.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

/// Lets one line a second through, counting the ones it holds back.
pub(crate) struct LineThrottle {
    /// The second (plus one, so that 0 means never) of the last line written.
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl LineThrottle {
    pub(crate) const fn new() -> Self {
        Self { last: AtomicU64::new(0), suppressed: AtomicU64::new(0) }
    }

    /// Whether a line may be written now: if so, how many were held back since the last one.
    pub(crate) fn admit(&self) -> Option<u64> {
        self.admit_at(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| since.as_secs()))
    }

    fn admit_at(&self, now: u64) -> Option<u64> {
        let last = self.last.load(Ordering::Acquire);
        if last > now || self.last.compare_exchange(last, now + 1, Ordering::AcqRel, Ordering::Acquire).is_err() {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::LineThrottle;

    #[test]
    fn one_line_a_second_reports_the_lines_held_back() {
        let throttle = LineThrottle::new();
        assert_eq!(throttle.admit_at(100), Some(0));
        assert_eq!(throttle.admit_at(100), None);
        assert_eq!(throttle.admit_at(100), None);
        assert_eq!(throttle.admit_at(101), Some(2));
        assert_eq!(throttle.admit_at(101), None);
        // A clock stepped back holds lines back until it passes the last one again.
        assert_eq!(throttle.admit_at(50), None);
        assert_eq!(throttle.admit_at(105), Some(2));
    }
}
