//! Backoff for retryable operations: full jitter, never below the server's `Retry-After`,
//! never above 900 s (the SQS `DelaySeconds` maximum). The engine returns delays; it never sleeps.

use std::time::{Duration, SystemTime};

use rand::Rng;

/// The largest delay SQS accepts for a message (15 minutes).
pub const MAX_DELAY: Duration = Duration::from_secs(900);

/// How retryable operations are spaced out and when they give up.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Backoff base: the first retry waits up to `base * 2`.
    pub base: Duration,
    /// Backoff cap, itself capped at [`MAX_DELAY`].
    pub cap: Duration,
    /// Attempts per operation before it is reported as failed.
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(2),
            cap: MAX_DELAY,
            max_attempts: 8,
        }
    }
}

impl RetryPolicy {
    /// Full-jitter delay for the given attempt (0-based):
    /// `uniform(0, min(cap, base * 2^attempt))`, raised to `retry_after`, capped at 900 s.
    pub fn delay<R: Rng + ?Sized>(
        &self,
        attempt: u32,
        retry_after: Option<Duration>,
        rng: &mut R,
    ) -> Duration {
        let cap = self.cap.min(MAX_DELAY);
        let exp = 2u32.saturating_pow(attempt.min(31));
        let ceiling = self.base.saturating_mul(exp).min(cap);
        let jitter = if ceiling.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_millis(rng.random_range(0..=ceiling.as_millis() as u64))
        };
        jitter
            .max(retry_after.unwrap_or(Duration::ZERO))
            .min(MAX_DELAY)
    }

    /// Whether an operation that has made `attempts_made` attempts may be tried again.
    pub fn may_retry(&self, attempts_made: u32) -> bool {
        attempts_made < self.max_attempts
    }
}

/// Parses a `Retry-After` header: delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn delay_stays_within_the_full_jitter_window() {
        let policy = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 0..40 {
            let ceiling =
                (Duration::from_secs(2) * 2u32.saturating_pow(attempt.min(31))).min(MAX_DELAY);
            for _ in 0..50 {
                let d = policy.delay(attempt, None, &mut rng);
                assert!(d <= ceiling, "attempt {attempt}: {d:?} > {ceiling:?}");
            }
        }
    }

    #[test]
    fn delay_is_jittered_not_constant() {
        let policy = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(1);
        let samples: Vec<_> = (0..20).map(|_| policy.delay(5, None, &mut rng)).collect();
        assert!(samples.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn retry_after_is_a_floor_and_900_a_ceiling() {
        let policy = RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(10),
            max_attempts: 3,
        };
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..100 {
            let d = policy.delay(0, Some(Duration::from_secs(30)), &mut rng);
            assert_eq!(d, Duration::from_secs(30));
        }
        let d = policy.delay(0, Some(Duration::from_secs(5000)), &mut rng);
        assert_eq!(d, MAX_DELAY);
    }

    #[test]
    fn cap_above_900_is_clamped() {
        let policy = RetryPolicy {
            base: Duration::from_secs(100),
            cap: Duration::from_secs(10_000),
            max_attempts: 8,
        };
        let mut rng = StdRng::seed_from_u64(9);
        for _ in 0..200 {
            assert!(policy.delay(30, None, &mut rng) <= MAX_DELAY);
        }
    }

    #[test]
    fn same_seed_same_delays() {
        let policy = RetryPolicy::default();
        let a: Vec<_> = {
            let mut rng = StdRng::seed_from_u64(42);
            (0..10).map(|i| policy.delay(i, None, &mut rng)).collect()
        };
        let mut rng = StdRng::seed_from_u64(42);
        let b: Vec<_> = (0..10).map(|i| policy.delay(i, None, &mut rng)).collect();
        assert_eq!(a, b);
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        // 1445412480 is Wed, 21 Oct 2015 07:28:00 GMT.
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }

    #[test]
    fn attempts_are_bounded() {
        let policy = RetryPolicy::default();
        assert!(policy.may_retry(7));
        assert!(!policy.may_retry(8));
    }
}
