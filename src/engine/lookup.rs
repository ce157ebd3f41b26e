//! Looking a user up by userName outside a cycle (the CLI's dry run), with the same request
//! pacing and filter as the cycle's own lookups.

use std::time::{Duration, Instant};

use super::classify::failure_detail;
use super::cycle::Cycle;
use super::reads::LookupResult;
use super::Engine;
use crate::scim::request::SubResult;
use crate::scim::resource::Lookup;

/// How far ahead a lookup may be paced: lookups have no cycle deadline of their own.
const LOOKUP_HORIZON: Duration = Duration::from_secs(24 * 3600);

/// Why a lookup could not tell whether the user exists.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct LookupError {
    /// HTTP status, when the service answered.
    pub status: Option<u16>,
    /// What went wrong.
    pub reason: String,
    /// Whether asking again later may help (throttling, 5xx, network).
    pub retryable: bool,
    /// The service's Retry-After, if it gave one.
    pub retry_after: Option<Duration>,
}

impl Engine {
    /// Looks a user up by userName (`filter=userName eq "..."`, matched case-insensitively):
    /// the id of the one user with it, or None if there is none. Sends one request.
    pub async fn lookup_user(&self, user_name: &str) -> Result<Option<String>, LookupError> {
        let cycle = Cycle::new(self, Instant::now() + LOOKUP_HORIZON);
        let found = cycle.lookups(vec![(0, user_name.to_string())]).await.pop();
        let failed = |status, reason: String, retryable, retry_after| LookupError {
            status,
            reason,
            retryable,
            retry_after,
        };
        match found.map(|(_, result)| result) {
            Some(LookupResult::Answer(Lookup::Found(resource))) => {
                Ok(resource["id"].as_str().map(str::to_string))
            }
            Some(LookupResult::Answer(Lookup::NotFound)) => Ok(None),
            Some(LookupResult::Answer(Lookup::Ambiguous(n))) => Err(failed(
                Some(200),
                format!("{n} users match this userName case-insensitively"),
                false,
                None,
            )),
            Some(LookupResult::Failed(SubResult::Transient {
                status,
                reason,
                retry_after,
            })) => {
                // A 401 survived a token refresh: asking again will not help.
                let retryable = status != Some(401);
                Err(failed(status, reason, retryable, retry_after))
            }
            Some(LookupResult::Failed(SubResult::Deferred(delay))) => Err(failed(
                None,
                "not sent: the request rate budget would be passed".into(),
                true,
                Some(delay),
            )),
            Some(LookupResult::Failed(SubResult::Reply(reply))) => Err(failed(
                Some(reply.status),
                failure_detail(&reply),
                false,
                None,
            )),
            None => Err(failed(
                None,
                "the lookup returned no result".into(),
                true,
                None,
            )),
        }
    }
}
