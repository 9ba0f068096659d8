//! Timestamps as the compatible surfaces print them: RFC 3339, UTC, milliseconds.

use chrono::{DateTime, SecondsFormat, Utc};

/// `2025-10-30T23:19:00.112Z`.
pub(crate) fn rfc3339(at: Option<&prost_types::Timestamp>) -> Option<String> {
    let at = at?;
    let nanos = u32::try_from(at.nanos).ok()?;
    DateTime::<Utc>::from_timestamp(at.seconds, nanos).map(|at| at.to_rfc3339_opts(SecondsFormat::Millis, true))
}

#[cfg(test)]
mod tests {
    #[test]
    fn milliseconds_in_utc() {
        let at = prost_types::Timestamp { seconds: 1_761_866_340, nanos: 112_345_678 };
        assert_eq!(super::rfc3339(Some(&at)).unwrap(), "2025-10-30T23:19:00.112Z");
    }
}
