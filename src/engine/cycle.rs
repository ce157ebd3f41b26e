//! One running cycle: its state and counters, shared by the phases (`phases.rs`) that decide
//! what to send and the dispatch (`dispatch.rs`) that sends it, and what the cycle reports.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Engine;
use crate::operation::{Operation, OperationResult, Outcome};
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

    /// A retryable outcome for `op`, or a failure once its attempts are used up.
    pub(super) fn retry(
        &self,
        op: &Operation,
        status: Option<u16>,
        reason: &str,
        retry_after: Option<Duration>,
    ) -> Outcome {
        let policy = &self.engine.config.retry;
        let attempts = op.attempt + 1;
        if !policy.may_retry(attempts) {
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
            delay: policy.delay(op.attempt, retry_after, &mut **rng),
        }
    }

    /// Every operation deferred unsent: too little time is left in this invocation.
    pub(super) fn all_deferred(&self, ops: &[Operation]) -> Vec<Outcome> {
        ops.iter()
            .map(|_| Outcome::Deferred {
                reason: "not sent: too little time is left before the invocation's deadline".into(),
                delay: super::DEFER_DELAY,
            })
            .collect()
    }

    pub(super) fn all_retry(
        &self,
        ops: &[Operation],
        status: Option<u16>,
        reason: &str,
        retry_after: Option<Duration>,
    ) -> Vec<Outcome> {
        ops.iter()
            .map(|op| self.retry(op, status, reason, retry_after))
            .collect()
    }
}
