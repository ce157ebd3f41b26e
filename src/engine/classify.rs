//! Which answers are permanent, which are worth retrying, and which of those spend one of the
//! operation's attempts (README, "Semantics"; docs/reliability.md, "Patience").

use crate::mask::masked_detail;
use crate::scim::request::SubReply;

/// Statuses worth retrying: timeouts, too early, throttling, server errors.
pub fn is_retryable(status: u16) -> bool {
    matches!(status, 408 | 425 | 429) || (500..600).contains(&status)
}

/// What a retryable failure costs the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spend {
    /// Patience would help: throttling (429, and 408/425), unavailability (502, 503, 504), a
    /// stalled request given up on, a reset, an answer lost or left out of a BulkResponse. The
    /// operation waits (backoff, `Retry-After`) without spending an attempt; only its age
    /// (`MAX_RETRY_AGE`) ends it.
    Wait,
    /// A refusal, or an error that may come from the operation itself or the configuration
    /// (500 and other 5xx, 401 after a refresh, an unreadable or oversized answer, the
    /// credentials or ledger out of reach): it spends one of `MAX_ATTEMPTS`.
    Attempt,
}

impl Spend {
    /// The cost of a retryable failure with this status (None: no answer at all).
    pub(crate) fn of(status: Option<u16>) -> Spend {
        match status {
            None | Some(408 | 425 | 429 | 502 | 503 | 504) => Spend::Wait,
            Some(_) => Spend::Attempt,
        }
    }
}

/// What an answer says about the request rate, for adaptive pacing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RateSignal {
    /// 429: too fast.
    Throttled,
    /// Any other answer below 500: the service took the request at this rate.
    Accepted,
    /// 5xx: an outage says nothing about the rate.
    Neutral,
}

/// The rate signal of an HTTP status.
pub(crate) fn rate_signal(status: u16) -> RateSignal {
    match status {
        429 => RateSignal::Throttled,
        s if s >= 500 => RateSignal::Neutral,
        _ => RateSignal::Accepted,
    }
}

/// A failure's words, the same for a Bulk result and a per-resource answer: the server's
/// `detail` (emails masked, length bounded), else what the status means for a user. A
/// retryable status is named in front of the detail (the last attempt's reason may be all that
/// is left of it when the attempts run out).
pub fn failure_detail(reply: &SubReply) -> String {
    let detail = reply
        .error()
        .1
        .filter(|d| !d.trim().is_empty())
        .map(|d| masked_detail(d.trim()));
    match detail {
        Some(detail) if is_retryable(reply.status) => {
            format!("{}: {detail}", status_words(reply.status))
        }
        Some(detail) => detail,
        None => status_words(reply.status),
    }
}

/// What a status means for a user.
fn status_words(status: u16) -> String {
    match status {
        400 => "the service rejected the request as invalid".into(),
        403 => "the credentials are not allowed to do this".into(),
        404 => "the user no longer exists (deleted since the lookup?)".into(),
        409 => "a uniqueness conflict the lookup could not resolve".into(),
        413 => "the operation alone is larger than the service's maxPayloadSize".into(),
        422 => "the service could not process the user's attributes".into(),
        429 => "throttled by the service".into(),
        s if (300..400).contains(&s) => {
            "the service answered with a redirect, which is not followed with credentials".into()
        }
        s => format!("the service answered HTTP {s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_and_permanent_statuses() {
        for s in [408, 425, 429, 500, 502, 503, 504, 599] {
            assert!(is_retryable(s), "{s}");
        }
        for s in [200, 301, 400, 401, 403, 404, 409, 413, 422] {
            assert!(!is_retryable(s), "{s}");
        }
    }

    #[test]
    fn throttling_unavailability_and_silence_wait_other_errors_spend_an_attempt() {
        for status in [
            None,
            Some(408),
            Some(425),
            Some(429),
            Some(502),
            Some(503),
            Some(504),
        ] {
            assert_eq!(Spend::of(status), Spend::Wait, "{status:?}");
        }
        for status in [200, 201, 401, 404, 409, 500, 501, 505, 599] {
            assert_eq!(Spend::of(Some(status)), Spend::Attempt, "{status}");
        }
    }

    #[test]
    fn only_429_slows_down_and_outages_say_nothing() {
        assert_eq!(rate_signal(429), RateSignal::Throttled);
        for s in [200, 201, 400, 401, 404, 409, 413] {
            assert_eq!(rate_signal(s), RateSignal::Accepted, "{s}");
        }
        for s in [500, 502, 503, 504] {
            assert_eq!(rate_signal(s), RateSignal::Neutral, "{s}");
        }
    }

    #[test]
    fn detail_prefers_the_server_words() {
        let with = SubReply {
            status: 400,
            location: None,
            body: Some(serde_json::json!({"detail": "userName is required"})),
        };
        assert_eq!(failure_detail(&with), "userName is required");
        let without = SubReply {
            status: 302,
            location: None,
            body: None,
        };
        assert!(failure_detail(&without).contains("redirect"));
    }

    #[test]
    fn the_server_detail_is_masked_and_bounded() {
        let reply = |status: u16, detail: String| SubReply {
            status,
            location: None,
            body: Some(serde_json::json!({"detail": detail})),
        };
        let address = || "could not sync ada.lovelace@example.com: backend down".to_string();
        assert_eq!(
            failure_detail(&reply(400, address())),
            "could not sync a***@example.com: backend down"
        );
        // Retryable: the status first, then the server's words.
        assert_eq!(
            failure_detail(&reply(503, address())),
            "the service answered HTTP 503: could not sync a***@example.com: backend down"
        );
        assert_eq!(
            failure_detail(&reply(429, "slow down".into())),
            "throttled by the service: slow down"
        );
        let shown = failure_detail(&reply(400, "é".repeat(100_000)));
        assert_eq!(shown.chars().count(), crate::mask::MAX_DETAIL_CHARS + 1);
        // An empty detail says nothing: the status's words instead.
        assert_eq!(
            failure_detail(&reply(500, " ".into())),
            "the service answered HTTP 500"
        );
    }
}
