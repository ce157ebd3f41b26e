//! Backoff for retryable operations: full jitter, never below the server's `Retry-After`,
//! never above 900 s (the SQS `DelaySeconds` maximum), and the two limits of patience: attempts
//! (refusals and ambiguous errors) and age (everything else). The engine returns delays; it
//! never sleeps.

use std::time::{Duration, SystemTime};

use rand::Rng;

/// The largest delay SQS accepts for a message (15 minutes).
pub const MAX_DELAY: Duration = Duration::from_secs(900);
/// How long an operation may keep waiting (throttled, deferred, unanswered) by default: a day.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// How retryable operations are spaced out and when they give up.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Backoff base: the first retry waits up to `base * 2`.
    pub base: Duration,
    /// Backoff cap, itself capped at [`MAX_DELAY`].
    pub cap: Duration,
    /// Attempts per operation before it is reported as failed. Only refusals and errors that
    /// may come from the operation or the configuration spend one (see `engine::classify`).
    pub max_attempts: u32,
    /// How long after it was first read an operation may still be sent again; past it, work
    /// that never got through (throttled, unavailable, unanswered) is reported failed.
    pub max_age: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(2),
            cap: MAX_DELAY,
            max_attempts: 8,
            max_age: DEFAULT_MAX_AGE,
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

    /// How far past the age limit an operation first read at `first_seen` (Unix seconds; 0:
    /// unknown, never too old) is at `now`, if it is: None while it may still wait.
    pub fn past_age(&self, first_seen: u64, now: u64) -> Option<Duration> {
        if first_seen == 0 {
            return None;
        }
        let age = Duration::from_secs(now.saturating_sub(first_seen));
        (age >= self.max_age).then_some(age)
    }
}

/// A duration as people write it: `36h`, `90m`, `45s`, `2d` (the largest unit that divides it;
/// whole seconds).
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0 => "0s".into(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Reads a duration written as whole seconds (`86400`) or with a unit suffix: `s`, `m`, `h`,
/// `d` (`86400s`, `1440m`, `24h`, `1d`). None for anything else.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let n: u64 = digits.parse().ok()?;
    let scale = match unit.trim().to_ascii_lowercase().as_str() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(scale).map(Duration::from_secs)
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
            ..RetryPolicy::default()
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
            ..RetryPolicy::default()
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

    #[test]
    fn age_is_bounded_and_an_unknown_first_read_never_ages() {
        let policy = RetryPolicy::default();
        let day = 86_400;
        assert_eq!(policy.past_age(1_000_000, 1_000_000 + day - 1), None);
        assert_eq!(
            policy.past_age(1_000_000, 1_000_000 + day),
            Some(Duration::from_secs(day))
        );
        assert_eq!(policy.past_age(0, u64::MAX), None);
        // A first read in the future (clock skew between containers) is no age at all.
        assert_eq!(policy.past_age(2_000_000, 1_000_000), None);
    }

    #[test]
    fn durations_read_and_written_as_people_do() {
        let secs = Duration::from_secs;
        for (text, expected) in [
            ("86400", Some(secs(86_400))),
            ("86400s", Some(secs(86_400))),
            ("1440m", Some(secs(86_400))),
            ("24h", Some(secs(86_400))),
            (" 2D ", Some(secs(172_800))),
            ("90 m", Some(secs(5400))),
            ("", None),
            ("h", None),
            ("1.5h", None),
            ("-1h", None),
            ("3w", None),
            ("99999999999999999999d", None),
        ] {
            assert_eq!(parse_duration(text), expected, "{text:?}");
        }
        assert_eq!(human_duration(secs(86_400)), "1d");
        assert_eq!(human_duration(secs(36 * 3600)), "36h");
        assert_eq!(human_duration(secs(5400)), "90m");
        assert_eq!(human_duration(secs(61)), "61s");
    }
}
