//! The request rate limiter shared by all cycles of a process, and the admission of each request
//! against it and the cycle's deadline: requests that would pass either come back deferred.
//!
//! The rate is either fixed (configured in requests per minute), unlimited, or adaptive: unpaced
//! until the service first answers 429, then AIMD — the rate is multiplied by [`DECREASE`] on a
//! 429 and raised by a fixed step on every accepted request, probing back up towards the limit.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// On a 429 the adaptive rate is multiplied by this.
pub const DECREASE: f64 = 0.7;
/// Each accepted request raises the adaptive rate by this fraction of the rate at which the last
/// 429 was met: about 60 accepted requests climb back from a decrease, so a steady tenant limit
/// costs one or two 429s per climb (about 2% of requests).
pub const INCREASE: f64 = 0.005;
/// The adaptive rate never goes below one request a second.
pub const MIN_RATE: f64 = 1.0;
/// Admissions remembered while unpaced, to estimate the rate at which the first 429 was met.
const RECENT: usize = 16;

/// Paces requests across cycles of one process: at a fixed rate, unlimited, or adaptively.
#[derive(Debug)]
pub struct RateLimiter {
    adaptive: bool,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    /// The earliest instant the next request may start.
    next_slot: Option<Instant>,
    /// Spacing between requests (zero: unpaced).
    interval: Duration,
    /// Adaptive only: requests per second once paced (None: not paced yet).
    rate: Option<f64>,
    /// Adaptive only: the additive step, a fraction of the rate at the last decrease.
    step: f64,
    /// Adaptive only: when the rate was last decreased; 429s of requests sent before it are the
    /// same overload seen again and do not decrease it twice.
    last_decrease: Option<Instant>,
    /// Whether the last admission had to wait for its slot: the rate only probes upwards while
    /// it is what holds requests back, so an idle or latency-bound client does not inflate it.
    binding: bool,
    /// Adaptive and unpaced: the latest admissions.
    recent: VecDeque<Instant>,
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
    /// A limiter for a fixed `requests_per_minute` (None or 0: unlimited); 429s do not change it.
    pub fn new(requests_per_minute: Option<u32>) -> Self {
        let interval = match requests_per_minute {
            Some(rpm) if rpm > 0 => Duration::from_secs(60) / rpm,
            _ => Duration::ZERO,
        };
        Self::with(false, interval)
    }

    /// An adaptive limiter: unpaced until the first 429, then AIMD.
    pub fn adaptive() -> Self {
        Self::with(true, Duration::ZERO)
    }

    /// A fixed limiter when `requests_per_minute` is set (non-zero); otherwise adaptive if
    /// `adaptive`, else unlimited.
    pub fn configured(requests_per_minute: Option<u32>, adaptive: bool) -> Self {
        match requests_per_minute {
            Some(rpm) if rpm > 0 => Self::new(Some(rpm)),
            _ if adaptive => Self::adaptive(),
            _ => Self::new(None),
        }
    }

    fn with(adaptive: bool, interval: Duration) -> Self {
        Self {
            adaptive,
            state: Mutex::new(State {
                next_slot: None,
                interval,
                rate: None,
                step: 0.0,
                last_decrease: None,
                binding: false,
                recent: VecDeque::with_capacity(RECENT),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means another thread panicked mid-update; the state is plain
        // numbers and instants, each always valid on its own.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The current spacing between two requests (zero when unpaced).
    pub fn interval(&self) -> Duration {
        self.lock().interval
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
        let mut state = self.lock();
        let slot = state.next_slot.map_or(now, |n| n.max(now));
        if slot + longest <= deadline {
            state.next_slot = Some(slot + state.interval);
            state.binding = slot > now;
            if self.adaptive && state.rate.is_none() {
                if state.recent.len() == RECENT {
                    state.recent.pop_front();
                }
                state.recent.push_back(slot);
            }
            return Admission::SendAt(slot);
        }
        let spread = state.interval * deferred_so_far;
        let wait = (slot - now) + spread;
        Admission::Defer(wait.max(Duration::from_secs(1)))
    }

    /// The service answered 429 at `now` to a request sent at `sent`: adaptive pacing slows
    /// down, once per overload (a 429 to a request sent before the last decrease is ignored).
    pub fn throttled(&self, sent: Instant, now: Instant) {
        if !self.adaptive {
            return;
        }
        let mut state = self.lock();
        if state.last_decrease.is_some_and(|at| sent < at) {
            return;
        }
        let current = match state.rate {
            Some(rate) => rate,
            // First 429: the rate the unpaced admissions reached, up to now.
            None => {
                let oldest = state.recent.front().copied().unwrap_or(sent).min(sent);
                let span = now.saturating_duration_since(oldest).as_secs_f64();
                let count = state.recent.len().max(1) as f64;
                // A span of zero (a 429 at the instant of sending) means "very fast".
                if span > 0.0 {
                    count / span
                } else {
                    1_000.0
                }
            }
        };
        let rate = (current * DECREASE).max(MIN_RATE);
        state.step = current.max(MIN_RATE) * INCREASE;
        state.last_decrease = Some(now);
        state.recent.clear();
        set_rate(&mut state, rate);
    }

    /// The service accepted (answered other than 429) a request sent at `sent`: adaptive
    /// pacing probes upwards by one step, if pacing is what holds requests back.
    pub fn accepted(&self, sent: Instant) {
        if !self.adaptive {
            return;
        }
        let mut state = self.lock();
        let Some(rate) = state.rate else { return };
        if !state.binding || state.last_decrease.is_some_and(|at| sent < at) {
            return;
        }
        let rate = rate + state.step;
        set_rate(&mut state, rate);
    }
}

fn set_rate(state: &mut State, rate: f64) {
    state.rate = Some(rate);
    // rate >= MIN_RATE > 0, so the interval is finite and at most a second.
    state.interval = Duration::from_secs_f64(1.0 / rate);
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

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

    #[test]
    fn a_fixed_rate_ignores_feedback() {
        let limiter = RateLimiter::configured(Some(600), true);
        assert!(!limiter.adaptive);
        let now = Instant::now();
        limiter.throttled(now, now + MS);
        limiter.accepted(now);
        assert_eq!(limiter.interval(), Duration::from_millis(100));
        let unlimited = RateLimiter::configured(None, false);
        unlimited.throttled(now, now + MS);
        assert_eq!(unlimited.interval(), Duration::ZERO);
    }

    /// Admits `n` requests `spacing` apart from `start`; returns the slots.
    fn admit_n(limiter: &RateLimiter, start: Instant, spacing: Duration, n: u32) -> Vec<Instant> {
        let deadline = start + Duration::from_secs(3600);
        (0..n)
            .map(|i| {
                match limiter.admit(start + spacing * i, deadline, Duration::from_secs(1), 0) {
                    Admission::SendAt(at) => at,
                    Admission::Defer(d) => panic!("deferred {d:?}"),
                }
            })
            .collect()
    }

    #[test]
    fn adaptive_is_unpaced_until_the_first_429_then_paces_below_the_rate_met() {
        let limiter = RateLimiter::configured(None, true);
        assert!(limiter.adaptive);
        let t0 = Instant::now();
        // Ten requests 10 ms apart: 100 a second, all sent at once.
        let slots = admit_n(&limiter, t0, 10 * MS, 10);
        assert_eq!(slots[9], t0 + 90 * MS);
        assert_eq!(limiter.interval(), Duration::ZERO);
        limiter.throttled(slots[9], t0 + 100 * MS);
        // 10 requests in 100 ms, times 0.7: 70 a second.
        let interval = limiter.interval().as_secs_f64();
        assert!((interval - 1.0 / 70.0).abs() < 1e-6, "{interval}");
        // From now on, requests are spaced.
        let now = t0 + 100 * MS;
        let deadline = now + Duration::from_secs(10);
        let a = limiter.admit(now, deadline, MS, 0);
        let b = limiter.admit(now, deadline, MS, 0);
        assert_eq!(a, Admission::SendAt(now));
        assert_eq!(b, Admission::SendAt(now + limiter.interval()));
    }

    #[test]
    fn one_decrease_per_overload() {
        let limiter = RateLimiter::adaptive();
        let t0 = Instant::now();
        let slots = admit_n(&limiter, t0, 10 * MS, 10);
        limiter.throttled(slots[9], t0 + 100 * MS);
        let after_first = limiter.interval();
        // Requests sent before that decrease meet the same overload: ignored.
        limiter.throttled(slots[8], t0 + 101 * MS);
        limiter.throttled(slots[9], t0 + 102 * MS);
        assert_eq!(limiter.interval(), after_first);
        // One sent after it is news: the rate is multiplied by 0.7 again.
        limiter.throttled(t0 + 150 * MS, t0 + 160 * MS);
        let ratio = limiter.interval().as_secs_f64() / after_first.as_secs_f64();
        assert!((ratio - 1.0 / DECREASE).abs() < 1e-6, "{ratio}");
    }

    #[test]
    fn accepted_requests_probe_upwards_additively_while_pacing_binds() {
        let limiter = RateLimiter::adaptive();
        let t0 = Instant::now();
        // Ten requests in a second, then a 429: 10/s met, paced at 7/s, step 0.05/s.
        let slots = admit_n(&limiter, t0, 100 * MS, 10);
        let t1 = t0 + Duration::from_secs(1);
        limiter.throttled(slots[9], t1);
        let rate = |l: &RateLimiter| 1.0 / l.interval().as_secs_f64();
        assert!((rate(&limiter) - 7.0).abs() < 1e-6);
        // Pacing binds: requests asked for at once wait for their slots.
        let deadline = t1 + Duration::from_secs(3600);
        let mut sent = Vec::new();
        for _ in 0..20 {
            match limiter.admit(t1, deadline, MS, 0) {
                Admission::SendAt(at) => sent.push(at),
                Admission::Defer(d) => panic!("deferred {d:?}"),
            }
            limiter.accepted(*sent.last().unwrap_or(&t1));
        }
        // The first admission did not wait (slot = now): 19 steps of 0.05.
        assert!(
            (rate(&limiter) - (7.0 + 19.0 * 0.05)).abs() < 1e-6,
            "{}",
            rate(&limiter)
        );
        // A success of a request sent before the decrease does not count.
        let before = rate(&limiter);
        limiter.accepted(slots[0]);
        assert_eq!(rate(&limiter), before);
        // Pacing that does not bind (requests come slower than the rate) does not probe.
        let idle = t1 + Duration::from_secs(100);
        assert_eq!(
            limiter.admit(idle, deadline, MS, 0),
            Admission::SendAt(idle)
        );
        limiter.accepted(idle);
        assert_eq!(rate(&limiter), before);
    }

    #[test]
    fn the_rate_never_falls_below_the_floor() {
        let limiter = RateLimiter::adaptive();
        let t0 = Instant::now();
        for i in 0..50u32 {
            let at = t0 + Duration::from_secs(u64::from(i));
            limiter.throttled(at, at + MS);
        }
        assert_eq!(limiter.interval(), Duration::from_secs(1));
    }

    /// A tenant's token bucket, as the embedded tenant keeps it (one second of requests).
    struct Bucket {
        rate: f64,
        tokens: f64,
        last: Instant,
    }

    impl Bucket {
        fn take(&mut self, now: Instant) -> bool {
            let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
            self.last = now;
            let ok = self.tokens >= 1.0;
            if ok {
                self.tokens -= 1.0;
            }
            ok
        }
    }

    /// Simulated time: two requests in flight against a 10/s token bucket, 5 ms each.
    #[test]
    fn adaptive_pacing_settles_near_an_unknown_limit_with_few_429s() {
        let limiter = RateLimiter::adaptive();
        let t0 = Instant::now();
        let mut bucket = Bucket {
            rate: 10.0,
            tokens: 10.0,
            last: t0,
        };
        let deadline = t0 + Duration::from_secs(3600);
        let latency = 5 * MS;
        let end = t0 + Duration::from_secs(120);
        let warm = t0 + Duration::from_secs(20);
        // Each worker: the instant it asks for a slot next.
        let mut workers = [t0, t0];
        let (mut requests, mut throttled, mut accepted_after_warmup) = (0u32, 0u32, 0u32);
        loop {
            let (w, &asks) = workers
                .iter()
                .enumerate()
                .min_by_key(|(_, t)| **t)
                .unwrap_or((0, &t0));
            if asks >= end {
                break;
            }
            let Admission::SendAt(sent) = limiter.admit(asks, deadline, latency, 0) else {
                panic!("no deadline in sight");
            };
            let done = sent + latency;
            requests += 1;
            if bucket.take(sent) {
                limiter.accepted(sent);
                if sent >= warm {
                    accepted_after_warmup += 1;
                }
            } else {
                throttled += 1;
                limiter.throttled(sent, done);
            }
            workers[w] = done;
        }
        let sustained = f64::from(accepted_after_warmup) / 100.0;
        let share_429 = f64::from(throttled) / f64::from(requests);
        assert!(sustained >= 8.0, "{sustained} requests/s of 10");
        assert!(share_429 <= 0.05, "{throttled} of {requests} answered 429");
    }
}
