//! The request rate limiter shared by all cycles of a process, and the admission of each request
//! against it and the cycle's deadline: requests that would pass either come back deferred.
//!
//! The rate is either fixed (configured in requests per minute), unlimited, or adaptive:
//! unpaced until 429s become more than noise, then paced. Adaptive pacing tells a rate limit from
//! random throttling by whether slowing down pays: under a rate limit, a slower pace is answered
//! 429 less often (the tenant accepts about the same number of requests a second, so the share
//! accepted grows as the pace falls); under random throttling the share stays the same and a
//! slower pace only loses throughput. So:
//! - the share of 429s among the latest answers (to requests sent at the current level) is
//!   compared with the noise learnt so far plus a margin; within it, nothing changes;
//! - above it, the pace is lowered, by the share accepted (to about what the tenant accepted)
//!   but at least by [`DECREASE`];
//! - when the next level's share accepted has not risen with the lower pace, the decrease did
//!   not pay: the previous pace comes back and that share of 429s is learnt as noise;
//! - each accepted request raises the pace by a small step while the pace is what holds
//!   requests back, probing back up towards the limit.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A decrease multiplies the rate by at most this (at least a 30% cut)...
pub const DECREASE: f64 = 0.7;
/// ...and by at least this (at most an 80% cut in one step, whatever the share measured).
pub const MIN_FACTOR: f64 = 0.2;
/// Each accepted request raises the adaptive rate by this fraction of the rate at which the last
/// decrease was decided: about 60 accepted requests climb back from a decrease.
pub const INCREASE: f64 = 0.005;
/// The adaptive rate never goes below one request a second.
pub const MIN_RATE: f64 = 1.0;
/// Answers (to requests sent at the current level) the share of 429s is measured over...
pub const WINDOW: usize = 20;
/// ...and how many are needed before it is trusted.
pub const EVALUATE: usize = 10;
/// 429s are caused by the pace when their share exceeds the noise by this much.
pub const MARGIN: f64 = 0.05;
/// Each accepted answer takes this fraction off the noise learnt (half-life about 700).
pub const NOISE_FADE: f64 = 0.001;
/// A decrease is judged (undone if it did not pay) only while the pace is still at least this
/// many times slower than before it.
pub const JUDGED: f64 = 1.25;
/// The most of the 429s taken for noise: above it they are judged again (an undo restores the
/// earlier pace each time, so a noisier tenant makes the pace step, not collapse), and an
/// estimate polluted by 429s of the rate cannot let the pace run far above a limit.
pub const MAX_NOISE: f64 = 0.3;
/// A level whose share accepted is below this fraction of the previous one's got worse, not
/// the same: its 429s are not taken for noise.
pub const WORSE: f64 = 0.7;
/// Admissions remembered while unpaced, to estimate the rate at which 429s began.
const RECENT: usize = 16;

/// The longest an adaptively paced request waits for its slot inside a cycle: a later slot
/// is not waited for (billed) but deferred, the work re-enqueued with the wait as its delay,
/// so that slow pacing costs queue time rather than billed time.
pub const MAX_SLOT_WAIT: Duration = Duration::from_secs(1);

/// Paces requests across cycles of one process: at a fixed rate, unlimited, or adaptively.
#[derive(Debug)]
pub struct RateLimiter {
    adaptive: bool,
    /// A slot further away than this is deferred, not waited for (None: any slot is waited
    /// for if the deadline allows).
    max_wait: Option<Duration>,
    state: Mutex<State>,
}

/// A pace the adaptive limiter left, and what it measured there.
#[derive(Debug, Clone, Copy)]
struct Level {
    /// Requests per second (None: unpaced).
    rate: Option<f64>,
    /// The share of answers that were not 429 at that pace.
    accepted: f64,
}

#[derive(Debug)]
struct State {
    /// The earliest instant the next request may start.
    next_slot: Option<Instant>,
    /// Spacing between requests (zero: unpaced).
    interval: Duration,
    /// Adaptive only: requests per second once paced (None: not paced).
    rate: Option<f64>,
    /// Adaptive only: the additive step, a fraction of the rate at the last decrease.
    step: f64,
    /// Adaptive only: when the current level began (a decrease or a return); answers to
    /// requests sent before it belong to another pace and are not counted.
    level_start: Option<Instant>,
    /// Adaptive only: the latest answers at this level (true: 429).
    answers: VecDeque<bool>,
    /// Adaptive only: the level before the last decrease, to undo it if it did not pay.
    previous: Option<Level>,
    /// Adaptive only: the share of 429s found not to fall with the pace (random throttling).
    noise: f64,
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

    /// An adaptive limiter: unpaced until 429s exceed the noise, then paced (module doc).
    pub fn adaptive() -> Self {
        Self::with(true, Duration::ZERO)
    }

    /// A fixed limiter when `requests_per_minute` is set (non-zero); otherwise adaptive if
    /// `adaptive` (waiting at most [`MAX_SLOT_WAIT`] for a slot), else unlimited.
    pub fn configured(requests_per_minute: Option<u32>, adaptive: bool) -> Self {
        match requests_per_minute {
            Some(rpm) if rpm > 0 => Self::new(Some(rpm)),
            _ if adaptive => Self {
                max_wait: Some(MAX_SLOT_WAIT),
                ..Self::adaptive()
            },
            _ => Self::new(None),
        }
    }

    fn with(adaptive: bool, interval: Duration) -> Self {
        Self {
            adaptive,
            max_wait: None,
            state: Mutex::new(State {
                next_slot: None,
                interval,
                rate: None,
                step: 0.0,
                level_start: None,
                answers: VecDeque::with_capacity(WINDOW),
                previous: None,
                noise: 0.0,
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

    /// The share of 429s adaptive pacing has learnt to be noise (not caused by the pace).
    pub fn noise(&self) -> f64 {
        self.lock().noise
    }

    /// Reserves the next request slot if a request started then, lasting at most `longest`,
    /// ends before `deadline` (and, with a longest wait, if the slot is no further away);
    /// otherwise reserves nothing and says how long to defer.
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
        let near = self.max_wait.is_none_or(|max| slot <= now + max);
        if near && slot + longest <= deadline {
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

    /// The service answered 429 at `now` to a request sent at `sent` (the caller decides which
    /// 429s are a rate signal: see `engine::classify`). Adaptive pacing counts it at the
    /// current level and, when 429s are more than noise, slows down or undoes a decrease that
    /// did not pay.
    pub fn throttled(&self, sent: Instant, now: Instant) {
        if !self.adaptive {
            return;
        }
        let mut state = self.lock();
        if !state.note(sent, true) {
            return;
        }
        let n = state.answers.len();
        let share = state.answers.iter().filter(|t| **t).count() as f64 / n as f64;
        if n < EVALUATE || share <= state.noise + MARGIN {
            return;
        }
        let accepted = 1.0 - share;
        let current = match state.rate {
            Some(rate) => rate,
            None => unpaced_rate(&state.recent, sent, now),
        };
        if let Some(previous) = state.previous {
            // Under a rate limit the tenant accepts about as many requests a second at either
            // pace, so the share accepted grows by the pace's ratio; random 429s leave it flat.
            // Half of that growth (in ratio) is asked for: noise in 10 to 20 answers is large.
            // A pace that probed back up near the previous one (or a previous level that was
            // unpaced, whose share a full tenant bucket flatters) is not judged: too little
            // apart to tell.
            let slower = previous.rate.unwrap_or(current) / current;
            if slower >= JUDGED && n < WINDOW {
                // Judged on a full window only: until then, neither cut again nor undo.
                return;
            }
            // A share accepted that fell well below the previous one means the overload grew
            // (a tenant's burst allowance ran out): not noise, the pace falls further.
            let similar = accepted >= previous.accepted * WORSE;
            if slower >= JUDGED && similar && accepted < previous.accepted * slower.sqrt() {
                // The smaller of the two shares: what persisted at both paces.
                state.noise = share.min(1.0 - previous.accepted).min(MAX_NOISE);
                state.previous = None;
                state.restore(previous.rate, now);
                return;
            }
        }
        let factor = (accepted / (1.0 - state.noise)).clamp(MIN_FACTOR, DECREASE);
        state.previous = Some(Level {
            rate: state.rate,
            accepted,
        });
        state.step = current.max(MIN_RATE) * INCREASE;
        state.recent.clear();
        state.restore(Some((current * factor).max(MIN_RATE)), now);
    }

    /// The service accepted (answered other than 429 and 5xx) a request sent at `sent`:
    /// adaptive pacing counts it and probes upwards by one step, if pacing is what holds
    /// requests back.
    pub fn accepted(&self, sent: Instant) {
        if !self.adaptive {
            return;
        }
        let mut state = self.lock();
        if !state.note(sent, false) {
            return;
        }
        // What was learnt as noise fades unless learnt again: a tenant's random throttling may
        // stop, and an estimate taken when 429s looked worst is on the high side.
        state.noise *= 1.0 - NOISE_FADE;
        let Some(rate) = state.rate else { return };
        // No probing while a decrease waits for its judgement: it would blur the comparison.
        let judging =
            state.previous.is_some_and(|p| p.rate.is_some()) && state.answers.len() < WINDOW;
        if state.binding && !judging {
            let rate = rate + state.step;
            set_rate(&mut state, rate);
        }
    }
}

impl State {
    /// Counts an answer at the current level; false if its request was sent before the level.
    fn note(&mut self, sent: Instant, throttled: bool) -> bool {
        if self.level_start.is_some_and(|at| sent < at) {
            return false;
        }
        if self.answers.len() == WINDOW {
            self.answers.pop_front();
        }
        self.answers.push_back(throttled);
        true
    }

    /// Starts a new level at `rate` (None: unpaced).
    fn restore(&mut self, rate: Option<f64>, now: Instant) {
        self.level_start = Some(now);
        self.answers.clear();
        match rate {
            Some(rate) => set_rate(self, rate),
            None => {
                self.rate = None;
                self.interval = Duration::ZERO;
            }
        }
    }
}

/// The rate the unpaced admissions reached up to `now`.
fn unpaced_rate(recent: &VecDeque<Instant>, sent: Instant, now: Instant) -> f64 {
    let oldest = recent.front().copied().unwrap_or(sent).min(sent);
    let span = now.saturating_duration_since(oldest).as_secs_f64();
    let count = recent.len().max(1) as f64;
    // A span of zero (a 429 at the instant of sending) means "very fast".
    if span > 0.0 {
        count / span
    } else {
        1_000.0
    }
}

fn set_rate(state: &mut State, rate: f64) {
    state.rate = Some(rate);
    // rate >= MIN_RATE > 0, so the interval is finite and at most a second.
    state.interval = Duration::from_secs_f64(1.0 / rate);
}

#[cfg(test)]
mod tests;
