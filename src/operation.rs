//! Operations (one user to provision, with its retry history) and what became of them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::user::User;

/// One user to provision, carried across invocations in retry messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    /// The user as validated from the input.
    pub user: User,
    /// Attempts already made (0 for a fresh operation).
    #[serde(default)]
    pub attempt: u32,
    /// Where the operation came from: `s3://bucket/key`, a file path, or `sqs`.
    pub source: String,
    /// The CSV line of the record (header is line 1), when it came from a CSV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
    /// Unix time (seconds) when the operation was first read.
    #[serde(default)]
    pub first_seen: u64,
    /// The last retryable error, carried so an exhausted operation can say why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// When its source was written (ms since the Unix epoch: the S3 object's event time, the
    /// producer message's `SentTimestamp`); an older operation never overwrites a newer one.
    /// None: unknown (no ordering).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_time: Option<u64>,
    /// The run (an S3 upload or EventBridge rerun of a file) the operation's row belongs to, so
    /// that its final outcome is counted for that run whichever invocation settles it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Retries that waited without spending an attempt (throttling, unavailability, a stall,
    /// a lost answer): with `attempt`, they lengthen the backoff; `first_seen` bounds them.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub waits: u32,
    /// The user's id in the tenant, as an earlier attempt found it (the lookup after a `409`,
    /// a fetch, the ledger): the retry fetches and updates it instead of creating it again. A
    /// hint only: a `404` on it, or a resource of another user, falls back to a lookup by
    /// userName.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_id: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Operation {
    /// A fresh operation for `user` read from `source` now.
    pub fn new(user: User, source: impl Into<String>, row: Option<u64>) -> Self {
        Self {
            user,
            attempt: 0,
            source: source.into(),
            row,
            first_seen: unix_now(),
            last_error: None,
            source_time: None,
            run: None,
            waits: 0,
            resource_id: None,
        }
    }

    /// The operation with its source's time (ms since the Unix epoch).
    pub fn with_source_time(mut self, millis: u64) -> Self {
        self.source_time = Some(millis);
        self
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What became of one operation in a cycle.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The user did not exist and was created.
    Created {
        /// Server-assigned id.
        id: String,
    },
    /// The user existed (409 on create) and was updated.
    Updated {
        /// Server-assigned id.
        id: String,
    },
    /// The user already held what the operation asked: nothing was written.
    Unchanged {
        /// Server-assigned id.
        id: String,
    },
    /// The user existed and was deactivated (PATCH active false).
    Deactivated {
        /// Server-assigned id.
        id: String,
    },
    /// Nothing was sent, for a stated reason (e.g. deactivating a user that does not exist).
    Skipped {
        /// Why nothing was done.
        reason: String,
    },
    /// A permanent failure: retrying would not help.
    Failed {
        /// HTTP status, when the server answered.
        status: Option<u16>,
        /// SCIM `scimType`, when given.
        scim_type: Option<String>,
        /// What went wrong.
        detail: String,
    },
    /// A transient failure: send again after `delay`.
    Retry {
        /// HTTP status, when the server answered.
        status: Option<u16>,
        /// What went wrong.
        reason: String,
        /// Jittered backoff, never below the server's Retry-After.
        delay: Duration,
        /// Whether this failure spends an attempt (a refusal or an ambiguous error) or only
        /// waits (throttling, unavailability, a stall, a lost answer).
        attempt_spent: bool,
        /// The user's id in the tenant the next attempt starts from (None: look it up).
        resource_id: Option<String>,
    },
    /// Not sent because the cycle's deadline or rate budget would be passed; send after `delay`.
    Deferred {
        /// Why it was not sent.
        reason: String,
        /// When the rate budget allows it again.
        delay: Duration,
        /// The user's id in the tenant the next attempt starts from (None: look it up).
        resource_id: Option<String>,
    },
}

impl Outcome {
    /// Short name used in summaries and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Created { .. } => "created",
            Outcome::Updated { .. } => "updated",
            Outcome::Unchanged { .. } => "unchanged",
            Outcome::Deactivated { .. } => "deactivated",
            Outcome::Skipped { .. } => "skipped",
            Outcome::Failed { .. } => "failed",
            Outcome::Retry { .. } => "retry",
            Outcome::Deferred { .. } => "deferred",
        }
    }

    /// Whether the operation must be sent again (retry or deferred).
    pub fn needs_requeue(&self) -> bool {
        matches!(self, Outcome::Retry { .. } | Outcome::Deferred { .. })
    }

    /// The delay before the operation may be sent again, for retry and deferred outcomes.
    pub fn delay(&self) -> Option<Duration> {
        match self {
            Outcome::Retry { delay, .. } | Outcome::Deferred { delay, .. } => Some(*delay),
            _ => None,
        }
    }
}

/// One operation and its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationResult {
    /// The operation as it was given to the cycle.
    pub operation: Operation,
    /// What became of it.
    pub outcome: Outcome,
}

impl OperationResult {
    /// The operation to enqueue again for a retry or deferred outcome: the attempt count goes up
    /// only for failures that spend one, the waits for the others; the user's id found travels
    /// with it.
    pub fn requeued(&self) -> Option<Operation> {
        let mut op = self.operation.clone();
        match &self.outcome {
            Outcome::Retry {
                status,
                reason,
                attempt_spent,
                resource_id,
                ..
            } => {
                if *attempt_spent {
                    op.attempt = op.attempt.saturating_add(1);
                } else {
                    op.waits = op.waits.saturating_add(1);
                }
                op.last_error = Some(match status {
                    Some(s) => format!("{s}: {reason}"),
                    None => reason.clone(),
                });
                op.resource_id = resource_id.clone();
                Some(op)
            }
            Outcome::Deferred { resource_id, .. } => {
                op.resource_id = resource_id.clone();
                Some(op)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: Outcome) -> OperationResult {
        let mut operation = Operation::new(crate::user::sample("ada@example.com"), "test", None);
        operation.resource_id = Some("old".into());
        OperationResult { operation, outcome }
    }

    #[test]
    fn waiting_spends_no_attempt_and_the_id_found_travels() {
        let retry = |attempt_spent, resource_id: Option<&str>| Outcome::Retry {
            status: Some(503),
            reason: "unavailable".into(),
            delay: Duration::from_secs(1),
            attempt_spent,
            resource_id: resource_id.map(str::to_string),
        };
        let waited = result(retry(false, Some("id-7"))).requeued().unwrap();
        assert_eq!((waited.attempt, waited.waits), (0, 1));
        assert_eq!(waited.resource_id.as_deref(), Some("id-7"));
        assert_eq!(waited.last_error.as_deref(), Some("503: unavailable"));
        let spent = result(retry(true, None)).requeued().unwrap();
        assert_eq!((spent.attempt, spent.waits), (1, 0));
        assert_eq!(spent.resource_id, None, "a hint found wrong is dropped");
        let deferred = result(Outcome::Deferred {
            reason: "later".into(),
            delay: Duration::from_secs(1),
            resource_id: Some("old".into()),
        })
        .requeued()
        .unwrap();
        assert_eq!((deferred.attempt, deferred.waits), (0, 0));
        assert_eq!(deferred.resource_id.as_deref(), Some("old"));
        assert!(result(Outcome::Unchanged { id: "x".into() })
            .requeued()
            .is_none());
    }

    #[test]
    fn a_version_1_message_without_the_new_fields_reads_and_they_are_left_out_when_unset() {
        let old = serde_json::json!({
            "user": crate::user::sample("ada@example.com"),
            "attempt": 2, "source": "s3://b/k", "first_seen": 1_700_000_000u64,
        });
        let op: Operation = serde_json::from_value(old).unwrap();
        assert_eq!((op.waits, op.resource_id.clone()), (0, None));
        let text = serde_json::to_string(&op).unwrap();
        assert!(
            !text.contains("waits") && !text.contains("resource_id"),
            "{text}"
        );
        let mut op = op;
        op.waits = 3;
        op.resource_id = Some("id-1".into());
        let back: Operation = serde_json::from_str(&serde_json::to_string(&op).unwrap()).unwrap();
        assert_eq!(back, op);
    }
}
