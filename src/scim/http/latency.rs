//! The request timeout that follows the tenant's observed latency: four times the recent p99
//! of answers of the same kind, scaled to the request's size, between a floor and the
//! configured maximum; a stalled answer then costs seconds instead of the whole maximum.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::Method;

/// The timeout is this many times the recent p99.
pub const FACTOR: u32 = 4;
/// The shortest adaptive timeout (the configured maximum wins if it is shorter).
pub const FLOOR: Duration = Duration::from_secs(2);
/// The timeout before [`MIN_SAMPLES`] answers of a kind were seen (at least four times the
/// slowest of them): short enough that an early stall does not cost the whole maximum, long
/// enough for a slow but healthy first BulkRequest.
pub const START: Duration = Duration::from_secs(10);
/// Answers of a kind needed before the p99 is trusted.
pub const MIN_SAMPLES: usize = 5;
/// Answers remembered per kind.
const RECENT: usize = 100;
/// At most this many doublings after timeouts in a row (2^6 = 64 times: the maximum anyway).
const MAX_STRETCH: u32 = 6;

/// Requests whose answers take comparable time: BulkRequests grow with their body, listings
/// carry pages of users, everything else is one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `POST /Bulk`.
    Bulk,
    /// `GET /Users` without a filter: a page of a listing.
    List,
    /// Any other request: a lookup, one resource read or written, the configuration.
    Single,
}

impl Kind {
    /// The kind of `method path?query`.
    pub fn of(method: &Method, path: &str, query: &[(&str, &str)]) -> Self {
        if *method == Method::POST && path.ends_with("/Bulk") {
            Kind::Bulk
        } else if *method == Method::GET
            && path.ends_with("/Users")
            && !query.iter().any(|(k, _)| k.eq_ignore_ascii_case("filter"))
        {
            Kind::List
        } else {
            Kind::Single
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One answer: how long it took and how large the request was (bytes of body, at least 1).
#[derive(Debug, Clone, Copy)]
struct Sample {
    took: Duration,
    size: u64,
}

#[derive(Debug, Default)]
struct Track {
    recent: VecDeque<Sample>,
    /// Timeouts in a row since the last answer: each doubles the next timeout.
    stretch: u32,
}

/// Recent answer times per [`Kind`], and the timeout they give a new request.
#[derive(Debug)]
pub struct LatencyModel {
    /// The configured request timeout: the maximum, and the only value when not adaptive.
    max: Duration,
    adaptive: bool,
    tracks: Mutex<[Track; 3]>,
}

impl LatencyModel {
    /// A model capped at `max`; `adaptive` false always gives `max`.
    pub fn new(max: Duration, adaptive: bool) -> Self {
        Self {
            max,
            adaptive,
            tracks: Mutex::new(Default::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, [Track; 3]> {
        // A poisoned lock only means a panic elsewhere; the samples are still valid.
        self.tracks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The timeout for a request of `kind` with a body of `size` bytes.
    pub fn timeout(&self, kind: Kind, size: usize) -> Duration {
        if !self.adaptive {
            return self.max;
        }
        let size = (size as u64).max(1);
        let tracks = self.lock();
        let track = &tracks[kind.index()];
        // Each answer scaled up (never down) to this request's size: an answer to a BulkRequest
        // of 10 operations predicts five times its time for one of 50, so that a healthy large
        // request is not cut by the times of small ones.
        let mut scaled: Vec<Duration> = track
            .recent
            .iter()
            .map(|s| {
                let ratio = (size as f64 / s.size as f64).max(1.0);
                s.took.mul_f64(ratio.min(1e6))
            })
            .collect();
        scaled.sort_unstable();
        let base = if scaled.len() < MIN_SAMPLES {
            let slowest = scaled.last().copied().unwrap_or_default();
            START.max(slowest * FACTOR)
        } else {
            // The nearest-rank p99: with 100 answers the second slowest.
            let rank = (scaled.len() * 99).div_ceil(100);
            scaled[rank - 1] * FACTOR
        };
        let stretched = base.saturating_mul(1 << track.stretch.min(MAX_STRETCH));
        stretched.max(FLOOR).min(self.max)
    }

    /// Notes an answer of `kind` to a request of `size` bytes that took `took`.
    pub fn answered(&self, kind: Kind, size: usize, took: Duration) {
        let mut tracks = self.lock();
        let track = &mut tracks[kind.index()];
        if track.recent.len() == RECENT {
            track.recent.pop_front();
        }
        track.recent.push_back(Sample {
            took,
            size: (size as u64).max(1),
        });
        track.stretch = 0;
    }

    /// Notes that a request of `kind` was cut by its own timeout (not by a deadline): the next
    /// one gets twice as long, so that a tenant that became slower is followed, not cut forever.
    pub fn timed_out(&self, kind: Kind) {
        let mut tracks = self.lock();
        let track = &mut tracks[kind.index()];
        track.stretch = (track.stretch + 1).min(MAX_STRETCH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(30);
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn kinds_of_requests() {
        assert_eq!(Kind::of(&Method::POST, "/Bulk", &[]), Kind::Bulk);
        assert_eq!(
            Kind::of(&Method::GET, "/Users", &[("startIndex", "1")]),
            Kind::List
        );
        let filter = [("filter", "userName eq \"a\"")];
        assert_eq!(Kind::of(&Method::GET, "/Users", &filter), Kind::Single);
        assert_eq!(Kind::of(&Method::PUT, "/Users/1", &[]), Kind::Single);
        assert_eq!(Kind::of(&Method::POST, "/Users", &[]), Kind::Single);
        assert_eq!(
            Kind::of(&Method::GET, "/ServiceProviderConfig", &[]),
            Kind::Single
        );
    }

    #[test]
    fn a_fixed_timeout_ignores_what_it_sees() {
        let model = LatencyModel::new(MAX, false);
        for _ in 0..10 {
            model.answered(Kind::Bulk, 100, MS);
        }
        assert_eq!(model.timeout(Kind::Bulk, 100), MAX);
    }

    #[test]
    fn the_start_before_enough_answers_then_four_times_the_p99_within_bounds() {
        let model = LatencyModel::new(MAX, true);
        assert_eq!(model.timeout(Kind::Bulk, 1000), START);
        // Few answers: the start, or four times the slowest if that is longer.
        model.answered(Kind::Bulk, 1000, Duration::from_secs(3));
        assert_eq!(model.timeout(Kind::Bulk, 1000), Duration::from_secs(12));
        for _ in 0..MIN_SAMPLES {
            model.answered(Kind::Bulk, 1000, 100 * MS);
        }
        // Six answers: the nearest-rank p99 is the slowest (3 s).
        assert_eq!(model.timeout(Kind::Bulk, 1000), Duration::from_secs(12));
        for _ in 0..RECENT {
            model.answered(Kind::Bulk, 1000, 100 * MS);
        }
        // The slow one aged out: 4 x 100 ms is under the floor.
        assert_eq!(model.timeout(Kind::Bulk, 1000), FLOOR);
        for _ in 0..RECENT {
            model.answered(Kind::Bulk, 1000, Duration::from_secs(2));
        }
        assert_eq!(model.timeout(Kind::Bulk, 1000), Duration::from_secs(8));
        for _ in 0..RECENT {
            model.answered(Kind::Bulk, 1000, Duration::from_secs(20));
        }
        assert_eq!(
            model.timeout(Kind::Bulk, 1000),
            MAX,
            "capped at the maximum"
        );
        // A maximum below the floor wins.
        let short = LatencyModel::new(Duration::from_secs(1), true);
        assert_eq!(short.timeout(Kind::Single, 0), Duration::from_secs(1));
    }

    #[test]
    fn the_p99_ignores_one_outlier_in_a_hundred() {
        let model = LatencyModel::new(MAX, true);
        model.answered(Kind::Single, 1, Duration::from_secs(7));
        for _ in 1..RECENT {
            model.answered(Kind::Single, 1, Duration::from_secs(1));
        }
        // Nearest-rank p99 of 100 answers is the 99th: 1 s, not the 7 s outlier.
        assert_eq!(model.timeout(Kind::Single, 1), Duration::from_secs(4));
    }

    #[test]
    fn kinds_are_tracked_apart_and_a_larger_bulk_gets_proportionally_longer() {
        let model = LatencyModel::new(MAX, true);
        for _ in 0..MIN_SAMPLES {
            model.answered(Kind::Single, 500, 10 * MS);
            model.answered(Kind::Bulk, 5_000, Duration::from_secs(1));
        }
        assert_eq!(model.timeout(Kind::Single, 500), FLOOR);
        assert_eq!(model.timeout(Kind::List, 0), START, "no listing seen yet");
        assert_eq!(model.timeout(Kind::Bulk, 5_000), Duration::from_secs(4));
        // Five times the body: five times the time, never less than what was seen.
        assert_eq!(model.timeout(Kind::Bulk, 25_000), Duration::from_secs(20));
        assert_eq!(model.timeout(Kind::Bulk, 500), Duration::from_secs(4));
    }

    #[test]
    fn timeouts_in_a_row_double_the_next_until_an_answer_comes() {
        let model = LatencyModel::new(MAX, true);
        for _ in 0..MIN_SAMPLES {
            model.answered(Kind::Bulk, 1, Duration::from_secs(1));
        }
        assert_eq!(model.timeout(Kind::Bulk, 1), Duration::from_secs(4));
        model.timed_out(Kind::Bulk);
        assert_eq!(model.timeout(Kind::Bulk, 1), Duration::from_secs(8));
        model.timed_out(Kind::Bulk);
        assert_eq!(model.timeout(Kind::Bulk, 1), Duration::from_secs(16));
        for _ in 0..10 {
            model.timed_out(Kind::Bulk);
        }
        assert_eq!(model.timeout(Kind::Bulk, 1), MAX);
        assert_eq!(
            model.timeout(Kind::Single, 1),
            START,
            "other kinds unaffected"
        );
        model.answered(Kind::Bulk, 1, Duration::from_secs(1));
        assert_eq!(model.timeout(Kind::Bulk, 1), Duration::from_secs(4));
    }
}
