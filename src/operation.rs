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
        }
    }

    /// The operation with its source's time (ms since the Unix epoch).
    pub fn with_source_time(mut self, millis: u64) -> Self {
        self.source_time = Some(millis);
        self
    }
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
    },
    /// Not sent because the cycle's deadline or rate budget would be passed; send after `delay`.
    Deferred {
        /// Why it was not sent.
        reason: String,
        /// When the rate budget allows it again.
        delay: Duration,
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
    /// only for operations that were actually sent.
    pub fn requeued(&self) -> Option<Operation> {
        let mut op = self.operation.clone();
        match &self.outcome {
            Outcome::Retry { status, reason, .. } => {
                op.attempt += 1;
                op.last_error = Some(match status {
                    Some(s) => format!("{s}: {reason}"),
                    None => reason.clone(),
                });
                Some(op)
            }
            Outcome::Deferred { .. } => Some(op),
            _ => None,
        }
    }
}
