//! Admission: a request is started only when the time left before the cycle's deadline can hold
//! it, so a short deadline defers work (re-enqueued unsent) instead of cutting requests mid-flight.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

/// The least time a request is given: with less left before the deadline it is not started
/// (unless the request timeout is shorter still).
pub const MIN_WINDOW: Duration = Duration::from_secs(5);
/// Answers remembered to estimate how long the tenant takes.
const RECENT: usize = 32;

/// The tenant's recent answer times.
#[derive(Debug, Default)]
pub(crate) struct Latency {
    recent: Mutex<VecDeque<Duration>>,
}

impl Latency {
    /// Notes how long an answer took.
    pub(crate) fn record(&self, took: Duration) {
        // A poisoned lock only means a panic elsewhere; the durations are still valid.
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(took);
    }

    /// The time left a request needs to be started: half again the slowest recent answer, at
    /// least `min(timeout, MIN_WINDOW)`, never more than `timeout` (the request is cut there anyway).
    pub(crate) fn window(&self, timeout: Duration) -> Duration {
        let slowest = self
            .recent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .max()
            .unwrap_or_default();
        (slowest + slowest / 2)
            .max(MIN_WINDOW.min(timeout))
            .min(timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_follows_the_tenants_latency_within_bounds() {
        let latency = Latency::default();
        let timeout = Duration::from_secs(30);
        assert_eq!(latency.window(timeout), MIN_WINDOW, "never the old 2 s");
        assert_eq!(
            latency.window(Duration::from_secs(3)),
            Duration::from_secs(3),
            "a shorter request timeout is the window"
        );
        latency.record(Duration::from_millis(200));
        assert_eq!(
            latency.window(timeout),
            MIN_WINDOW,
            "fast answers: the minimum"
        );
        latency.record(Duration::from_secs(8));
        assert_eq!(latency.window(timeout), Duration::from_secs(12));
        latency.record(Duration::from_secs(40));
        assert_eq!(latency.window(timeout), timeout, "capped at the timeout");
        for _ in 0..RECENT {
            latency.record(Duration::from_millis(100));
        }
        assert_eq!(
            latency.window(timeout),
            MIN_WINDOW,
            "old slow answers age out"
        );
    }
}
