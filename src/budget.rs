//! A cycle's budget: its deadline and the request rate limit shared by all cycles of a process.
//! Requests that would pass either are not sent; their operations come back deferred with a delay.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Paces requests to a fixed rate (requests per minute), across cycles of one process.
#[derive(Debug)]
pub struct RateLimiter {
    interval: Duration,
    next_slot: Mutex<Option<Instant>>,
}

/// Whether a request may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Send at this instant (now or later, to keep the rate).
    SendAt(Instant),
    /// Do not send in this cycle; the work may come back after this delay.
    Defer(Duration),
}

impl RateLimiter {
    /// A limiter for `requests_per_minute` (None or 0: unlimited).
    pub fn new(requests_per_minute: Option<u32>) -> Self {
        let interval = match requests_per_minute {
            Some(rpm) if rpm > 0 => Duration::from_secs(60) / rpm,
            _ => Duration::ZERO,
        };
        Self {
            interval,
            next_slot: Mutex::new(None),
        }
    }

    /// The spacing between two requests (zero when unlimited).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Reserves the next request slot if a request started then, lasting at most `longest`,
    /// ends before `deadline`; otherwise reserves nothing and says how long to defer.
    /// `deferred_so_far` spreads successive deferrals over later slots so they come back paced.
    pub fn admit(
        &self,
        now: Instant,
        deadline: Instant,
        longest: Duration,
        deferred_so_far: u32,
    ) -> Admission {
        // A poisoned lock only means another thread panicked mid-update; the Instant is still valid.
        let mut next = self.next_slot.lock().unwrap_or_else(|e| e.into_inner());
        let slot = next.map_or(now, |n| n.max(now));
        if slot + longest <= deadline {
            *next = Some(slot + self.interval);
            return Admission::SendAt(slot);
        }
        let spread = self.interval * deferred_so_far;
        let wait = (slot - now) + spread;
        Admission::Defer(wait.max(Duration::from_secs(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unlimited_sends_now_until_the_deadline() {
        let limiter = RateLimiter::new(None);
        let now = Instant::now();
        let deadline = now + Duration::from_secs(10);
        for _ in 0..100 {
            assert_eq!(
                limiter.admit(now, deadline, Duration::from_secs(5), 0),
                Admission::SendAt(now)
            );
        }
        assert!(matches!(
            limiter.admit(now, deadline, Duration::from_secs(11), 0),
            Admission::Defer(_)
        ));
    }

    #[test]
    fn rate_spaces_requests_and_defers_past_the_deadline() {
        let limiter = RateLimiter::new(Some(60)); // one a second
        let now = Instant::now();
        let deadline = now + Duration::from_secs(5);
        let longest = Duration::from_secs(1);
        let mut sent = Vec::new();
        let mut deferred = Vec::new();
        for _ in 0..10 {
            match limiter.admit(now, deadline, longest, deferred.len() as u32) {
                Admission::SendAt(at) => sent.push(at - now),
                Admission::Defer(d) => deferred.push(d),
            }
        }
        assert_eq!(sent.len(), 5, "slots at 0..=4 s fit a 5 s deadline");
        assert_eq!(sent[4], Duration::from_secs(4));
        assert_eq!(deferred.len(), 5);
        assert!(deferred.windows(2).all(|w| w[0] < w[1]), "{deferred:?}");
        assert_eq!(deferred[0], Duration::from_secs(5));
    }
}
