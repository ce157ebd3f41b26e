//! What every front end (Lambda triggers, CLI, demo) does around a bulk cycle: run it, count the
//! outcomes, turn failures into report lines, and put retryable and deferred work back on a queue.

use std::time::Instant;

use serde::Serialize;

use crate::engine::{CycleReport, Engine, EngineError};
use crate::operation::{Operation, OperationResult, Outcome};
use crate::queue::{NotEnqueued, Requeue, WorkQueue};
use crate::report::ReportLine;

/// Counts over one or more cycles, as printed in summaries and logged per invocation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Users created.
    pub created: u64,
    /// Existing users updated.
    pub updated: u64,
    /// Users that already held the file's values: nothing was written.
    pub unchanged: u64,
    /// Users deactivated.
    pub deactivated: u64,
    /// Operations skipped, with a reason in the report.
    pub skipped: u64,
    /// Operations failed permanently or after their last attempt, with a reason in the report.
    pub failed: u64,
    /// Operations re-enqueued after a retryable error.
    pub retried: u64,
    /// Operations re-enqueued unsent (deadline or rate budget).
    pub deferred: u64,
    /// Answers 429 met.
    pub throttled: u64,
    /// Invalid input rows or users, reported and not sent.
    pub invalid: u64,
    /// Requests sent to the SCIM service.
    pub requests: u64,
    /// Runs held by the deactivation guard in this invocation.
    pub held: u64,
}

impl Summary {
    /// Adds another summary's counts to this one.
    pub fn add(&mut self, other: &Summary) {
        self.created += other.created;
        self.updated += other.updated;
        self.unchanged += other.unchanged;
        self.deactivated += other.deactivated;
        self.skipped += other.skipped;
        self.failed += other.failed;
        self.retried += other.retried;
        self.deferred += other.deferred;
        self.throttled += other.throttled;
        self.invalid += other.invalid;
        self.requests += other.requests;
        self.held += other.held;
    }

    fn count(&mut self, outcome: &Outcome) {
        let slot = match outcome {
            Outcome::Created { .. } => &mut self.created,
            Outcome::Updated { .. } => &mut self.updated,
            Outcome::Unchanged { .. } => &mut self.unchanged,
            Outcome::Deactivated { .. } => &mut self.deactivated,
            Outcome::Skipped { .. } => &mut self.skipped,
            Outcome::Failed { .. } => &mut self.failed,
            Outcome::Retry { .. } => &mut self.retried,
            Outcome::Deferred { .. } => &mut self.deferred,
        };
        *slot += 1;
    }
}

/// The report line for an outcome that needs explaining (failed or skipped), if any.
pub fn report_line(result: &OperationResult) -> Option<ReportLine> {
    let op = &result.operation;
    let mut line = match &result.outcome {
        Outcome::Failed {
            status,
            scim_type,
            detail,
        } => {
            let mut line = ReportLine::new(op.source.clone(), "failed", detail.clone());
            line.http_status = *status;
            line.scim_type = scim_type.clone();
            line
        }
        Outcome::Skipped { reason } => {
            ReportLine::new(op.source.clone(), "skipped", reason.clone())
        }
        _ => return None,
    };
    line.row = op.row;
    line.user_name = Some(op.user.user_name.clone());
    Some(line)
}

/// What a cycle left to do for its caller.
#[derive(Debug, Default)]
pub struct Settled {
    /// Every operation with its outcome, in input order.
    pub results: Vec<OperationResult>,
    /// Counts.
    pub summary: Summary,
    /// Lines to write to the report (failed and skipped operations).
    pub report: Vec<ReportLine>,
    /// Indices (into the cycle's operations) that need re-enqueueing but could not be enqueued:
    /// their origin must be redelivered.
    pub unsettled: Vec<usize>,
}

/// Runs one cycle and re-enqueues what must be sent again.
pub async fn run_cycle(
    engine: &Engine,
    operations: Vec<Operation>,
    deadline: Instant,
    queue: &dyn WorkQueue,
) -> Result<Settled, EngineError> {
    let CycleReport { mut results, stats } = engine.run_cycle(operations, deadline).await?;
    let mut requeue = Vec::new();
    let mut requeue_index = Vec::new();
    for (i, result) in results.iter().enumerate() {
        if let (Some(operation), Some(delay)) = (result.requeued(), result.outcome.delay()) {
            requeue.push(Requeue { operation, delay });
            requeue_index.push(i);
        }
    }
    let not_enqueued = if requeue.is_empty() {
        NotEnqueued::default()
    } else {
        queue.enqueue(&requeue).await
    };
    // Work no message can carry fails for good here, with its reason, rather than failing its
    // event again at every delivery.
    for (j, why) in not_enqueued.too_large {
        let Some(result) = requeue_index.get(j).and_then(|&i| results.get_mut(i)) else {
            continue;
        };
        let (status, before) = match &result.outcome {
            Outcome::Retry { status, reason, .. } => (*status, reason.clone()),
            Outcome::Deferred { reason, .. } => (None, reason.clone()),
            _ => continue,
        };
        result.outcome = Outcome::Failed {
            status,
            scim_type: None,
            detail: format!("not sent again ({before}): {why}"),
        };
    }
    let unsettled = not_enqueued
        .failed
        .into_iter()
        .filter_map(|j| requeue_index.get(j).copied())
        .collect();
    let mut summary = Summary {
        throttled: stats.throttled,
        requests: stats.requests,
        ..Summary::default()
    };
    let mut report = Vec::new();
    for result in &results {
        summary.count(&result.outcome);
        report.extend(report_line(result));
    }
    Ok(Settled {
        results,
        summary,
        report,
        unsettled,
    })
}
