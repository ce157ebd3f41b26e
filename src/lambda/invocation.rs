//! One invocation's identity and time limit, read from the Lambda context.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// One invocation's identity and time limit.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The Lambda request id (names the reports written).
    pub request_id: String,
    /// When Lambda stops the invocation (the safety margin is taken off by [`handle`]).
    pub deadline: Instant,
}

impl Invocation {
    /// An invocation with `remaining` time left (tests, local runs).
    pub fn new(request_id: impl Into<String>, remaining: Duration) -> Self {
        Self {
            request_id: request_id.into(),
            deadline: Instant::now() + remaining,
        }
    }

    /// The invocation described by the Lambda context (its deadline is in ms since the epoch).
    pub fn from_context(context: &lambda_runtime::Context) -> Self {
        let remaining = remaining_time(context.deadline, SystemTime::now());
        Self::new(context.request_id.clone(), remaining)
    }
}

/// Time left before `deadline_ms`. Lambda sends Unix time in milliseconds; a value too small to
/// be one (before 2001) is read as milliseconds from now, as `cargo lambda watch` sends
/// `600000` for its 10-minute limit.
fn remaining_time(deadline_ms: u64, now: SystemTime) -> Duration {
    const UNIX_2001_MS: u64 = 1_000_000_000_000;
    if deadline_ms < UNIX_2001_MS {
        return Duration::from_millis(deadline_ms);
    }
    let deadline = UNIX_EPOCH + Duration::from_millis(deadline_ms);
    deadline.duration_since(now).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_unix_milliseconds_or_a_duration() {
        let now = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        let in_a_minute = 1_750_000_060_000;
        assert_eq!(remaining_time(in_a_minute, now), Duration::from_secs(60));
        assert_eq!(remaining_time(1_749_999_000_000, now), Duration::ZERO);
        assert_eq!(remaining_time(600_000, now), Duration::from_secs(600));
    }
}
