//! One running cycle: its state and counters, shared by the phases (`phases.rs`) that decide
//! what to send and the dispatch (`dispatch.rs`) that sends it, and what the cycle reports.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::classify::Spend;
use super::Engine;
use crate::operation::{unix_now, Operation, OperationResult, Outcome};
use crate::retry::human_duration;
use crate::scim::discovery::ProviderLimits;

/// Counters of one cycle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CycleStats {
    /// HTTP requests sent to the SCIM service (token requests excluded).
    pub requests: u64,
    /// Of which BulkRequests.
    pub bulk_requests: u64,
    /// Of which userName lookups.
    pub lookups: u64,
    /// Answers 429.
    pub throttled: u64,
    /// Answers 5xx.
    pub server_errors: u64,
    /// BulkRequests split after 413 or a whole-request 400.
    pub splits: u64,
}

/// What a cycle did: one result per operation given, in the same order.
#[derive(Debug, Clone, Default)]
pub struct CycleReport {
    /// Every operation with its outcome.
    pub results: Vec<OperationResult>,
    /// Counters.
    pub stats: CycleStats,
}

/// The live counters behind [`CycleStats`].
#[derive(Default)]
pub(super) struct Stats {
    pub(super) requests: AtomicU64,
    pub(super) bulk_requests: AtomicU64,
    pub(super) lookups: AtomicU64,
    pub(super) throttled: AtomicU64,
    pub(super) server_errors: AtomicU64,
    pub(super) splits: AtomicU64,
}

impl Stats {
    fn snapshot(&self) -> CycleStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CycleStats {
            requests: get(&self.requests),
            bulk_requests: get(&self.bulk_requests),
            lookups: get(&self.lookups),
            throttled: get(&self.throttled),
            server_errors: get(&self.server_errors),
            splits: get(&self.splits),
        }
    }
}

/// State of one running cycle.
pub(super) struct Cycle<'a> {
    pub(super) engine: &'a Engine,
    pub(super) deadline: Instant,
    pub(super) stats: Stats,
    /// Requests not sent in this cycle (rate or deadline), for the warning at its end.
    pub(super) deferred_requests: AtomicU32,
    /// The tenant's id in the engine's ledger, when it has one.
    pub(super) tenant: Option<String>,
}

impl<'a> Cycle<'a> {
    /// A cycle of `engine` that sends nothing after `deadline`.
    pub(super) fn new(engine: &'a Engine, deadline: Instant) -> Self {
        Self {
            engine,
            deadline,
            stats: Stats::default(),
            deferred_requests: AtomicU32::new(0),
            tenant: None,
        }
    }

    /// The cycle with the tenant's id in the ledger (None: no ledger).
    pub(super) fn for_tenant(self, tenant: Option<String>) -> Self {
        Self { tenant, ..self }
    }

    /// The counters so far.
    pub(super) fn stats(&self) -> CycleStats {
        self.stats.snapshot()
    }

    /// The limits in force: discovery's, as updated if /Bulk turned out to be missing.
    pub(super) async fn limits(&self) -> ProviderLimits {
        let current = *self.engine.limits.lock().await;
        current.unwrap_or_else(|| ProviderLimits::without_bulk(self.engine.config.max_operations))
    }

    /// A retryable outcome for `op`, what it costs read from its status ([`Spend::of`]); a
    /// failure once its attempts are used up.
    pub(super) fn retry(
        &self,
        op: &Operation,
        status: Option<u16>,
        reason: &str,
        retry_after: Option<Duration>,
    ) -> Outcome {
        self.retry_as(Spend::of(status), op, status, reason, retry_after)
    }

    /// A retryable outcome for `op` that costs `spend`; a failure once its attempts are used
    /// up. The backoff grows with attempts and waits alike, never below `retry_after`.
    pub(super) fn retry_as(
        &self,
        spend: Spend,
        op: &Operation,
        status: Option<u16>,
        reason: &str,
        retry_after: Option<Duration>,
    ) -> Outcome {
        let policy = &self.engine.config.retry;
        let attempt_spent = spend == Spend::Attempt;
        let attempts = op.attempt + 1;
        if attempt_spent && !policy.may_retry(attempts) {
            return Outcome::Failed {
                status,
                scim_type: None,
                detail: format!("gave up after {attempts} attempts; last error: {reason}"),
            };
        }
        // A poisoned lock only means a panic elsewhere; the RNG state is still usable.
        let mut rng = self.engine.rng.lock().unwrap_or_else(|e| e.into_inner());
        Outcome::Retry {
            status,
            reason: reason.to_string(),
            delay: policy.delay(op.attempt.saturating_add(op.waits), retry_after, &mut **rng),
            attempt_spent,
            resource_id: op.resource_id.clone(),
        }
    }

    /// Every operation deferred unsent: too little time is left in this invocation.
    pub(super) fn all_deferred(&self, ops: &[Operation]) -> Vec<Outcome> {
        ops.iter()
            .map(|op| Outcome::Deferred {
                reason: "not sent: too little time is left before the invocation's deadline".into(),
                delay: super::DEFER_DELAY,
                resource_id: op.resource_id.clone(),
            })
            .collect()
    }

    /// The outcomes, with work that would wait again past `MAX_RETRY_AGE` reported failed:
    /// patience has its limit too, and the report says which and the last error.
    pub(super) fn within_age(&self, ops: &[Operation], outcomes: Vec<Outcome>) -> Vec<Outcome> {
        let policy = &self.engine.config.retry;
        let now = unix_now();
        outcomes
            .into_iter()
            .zip(ops)
            .map(|(outcome, op)| {
                let Some(age) = policy
                    .past_age(op.first_seen, now)
                    .filter(|_| outcome.needs_requeue())
                else {
                    return outcome;
                };
                let (status, last) = match &outcome {
                    Outcome::Retry { status, reason, .. } => (
                        *status,
                        match status {
                            Some(s) => format!("{s}: {reason}"),
                            None => reason.clone(),
                        },
                    ),
                    Outcome::Deferred { reason, .. } => {
                        (None, op.last_error.clone().unwrap_or_else(|| reason.clone()))
                    }
                    _ => return outcome,
                };
                Outcome::Failed {
                    status,
                    scim_type: None,
                    detail: format!(
                        "not provisioned within MAX_RETRY_AGE ({}): first read {:.1} h ago, the age limit is passed; last error: {last}",
                        human_duration(policy.max_age),
                        age.as_secs_f64() / 3600.0,
                    ),
                }
            })
            .collect()
    }

    /// Every operation retried after a failure that came before anything was sent for it (the
    /// credentials, the service's configuration, the tenant's listing): each spends an attempt,
    /// since a wrong configuration looks the same as an outage from here.
    pub(super) fn all_retry(&self, ops: &[Operation], reason: &str) -> Vec<Outcome> {
        ops.iter()
            .map(|op| self.retry_as(Spend::Attempt, op, None, reason, None))
            .collect()
    }
}
