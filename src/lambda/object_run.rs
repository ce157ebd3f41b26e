//! An object's run (with `LEDGER_TABLE`): started by its upload or rerun event — or, when the
//! SCIM service could not answer the census, later from a continuation — its operations tagged
//! with it (a held run's deactivations left out), and what each invocation settled counted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::continuation::{self, Checkpoint};
use super::reports::{Report, Tracked};
use super::runs::Begun;
use super::s3::{leave_continuation, ObjectRef, Start};
use super::{HandlerError, State};
use crate::operation::Operation;
use crate::pipeline::Summary;
use crate::runs::{RunRecord, RunStatus, SyncMode};
use crate::sources::csv::ResumePoint;
use crate::sources::stream::Rows;

/// The run an object's reading belongs to.
pub(super) enum RunFor {
    /// This run (None: no run — no ledger, or a file that cannot be read).
    Run(Option<Box<RunRecord>>),
    /// The run cannot start yet; the answer says why (a continuation starts it later).
    Waiting(Value),
}

/// The run of the object being read from `start`: started for an event, found (or started,
/// after waiting) for a continuation.
pub(super) async fn run_for(
    state: &State,
    object: &ObjectRef,
    start: &Start<'_>,
    deadline: Instant,
    summary: &mut Summary,
) -> Result<RunFor, HandlerError> {
    let source = format!("s3://{}/{}", object.bucket, object.key);
    let incomplete = |problem: String| HandlerError::Incomplete {
        origin: source.clone(),
        problem,
    };
    let begun = match (&state.runs, start) {
        (Some(runs), Start::Event { run: Some(new), .. }) => {
            let begun = super::runs::begin(state, runs, object, &new.id, new.mode, deadline);
            Some((begun.await?, new.id.clone(), new.mode, None))
        }
        (Some(runs), Start::Checkpoint(checkpoint)) => {
            let known = runs
                .store
                .get(&checkpoint.run)
                .await
                .map_err(|e| incomplete(e.to_string()))?;
            match (known, checkpoint.mode) {
                (Some(record), _) => {
                    let mode = record.plan.mode;
                    let run_id = checkpoint.run.clone();
                    Some((Begun::Run(Box::new(record), false), run_id, mode, None))
                }
                // A run that waited for the SCIM service to start.
                (None, Some(mode)) => {
                    let begun =
                        super::runs::begin(state, runs, object, &checkpoint.run, mode, deadline);
                    Some((
                        begun.await?,
                        checkpoint.run.clone(),
                        mode,
                        checkpoint.waiting_since,
                    ))
                }
                (None, None) => None,
            }
        }
        _ => None,
    };
    Ok(match begun {
        Some((Begun::Run(record, started), ..)) => {
            if started && record.status == RunStatus::Held {
                summary.held += 1;
            }
            RunFor::Run(Some(record))
        }
        Some((Begun::Wait { header, reason }, run_id, mode, since)) => {
            let event_time = match &start {
                Start::Checkpoint(c) => c.event_time.clone(),
                Start::Event { event_time, .. } => event_time.clone(),
            };
            let waiting = Waiting {
                run_id,
                mode,
                since,
                header,
                event_time,
                reason,
            };
            RunFor::Waiting(wait_for_service(state, object, waiting, &source).await?)
        }
        Some((Begun::Unreadable, ..)) | None => RunFor::Run(None),
    })
}

/// A run that cannot start yet: the SCIM service (or the ledger) did not answer its census.
struct Waiting {
    run_id: String,
    mode: SyncMode,
    /// Since when it waits (Unix seconds); None: from now.
    since: Option<u64>,
    header: ResumePoint,
    event_time: Option<String>,
    reason: String,
}

/// Puts a run that cannot start yet back on the queue, to start from the file's first row
/// later; after `MAX_RETRY_AGE` of waiting, the object fails with why.
async fn wait_for_service(
    state: &State,
    object: &ObjectRef,
    waiting: Waiting,
    source: &str,
) -> Result<Value, HandlerError> {
    let now = crate::operation::unix_now();
    let since = waiting.since.unwrap_or(now).min(now);
    let max_age = state.config.retry.max_age;
    if Duration::from_secs(now - since) >= max_age {
        return Err(HandlerError::Incomplete {
            origin: source.to_string(),
            problem: format!(
                "the run could not start within MAX_RETRY_AGE ({}): {}; nothing was provisioned",
                humantime::format_duration(max_age),
                waiting.reason
            ),
        });
    }
    let checkpoint = Checkpoint {
        continuation: continuation::CONTINUATION_VERSION,
        bucket: object.bucket.clone(),
        key: object.key.clone(),
        version_id: object.version_id.clone(),
        etag: None,
        run: waiting.run_id.clone(),
        event_time: waiting.event_time,
        header_end: waiting.header.offset,
        header_next_line: waiting.header.line,
        offset: waiting.header.offset,
        line: waiting.header.line,
        mode: Some(waiting.mode),
        waiting_since: Some(since),
    };
    // As a retried operation would wait: RETRY_BASE_SECONDS × 8, within RETRY_MAX_SECONDS.
    let retry = &state.config.retry;
    let delay = (retry.base * 8)
        .max(Duration::from_secs(1))
        .min(retry.cap.max(Duration::from_secs(1)));
    leave_continuation(state, &checkpoint, delay)
        .await
        .map_err(|problem| HandlerError::Incomplete {
            origin: source.to_string(),
            problem: format!("{}; and {problem}", waiting.reason),
        })?;
    tracing::warn!(
        run_id = %waiting.run_id,
        reason = %waiting.reason,
        delay_seconds = delay.as_secs(),
        "the run cannot start yet (its census needs the SCIM service and the ledger): it starts later from the first row"
    );
    Ok(json!({"source": source, "run_id": waiting.run_id, "waiting": waiting.reason}))
}

/// Counts what this invocation settled of the object's run (whether it went through or not:
/// those rows are done); an error recording them fails the object, so the event is retried.
pub(super) async fn settle_run(
    state: &State,
    tracked: Tracked,
    source: &str,
    result: Result<Value, HandlerError>,
) -> Result<Value, HandlerError> {
    let run = tracked.run_id;
    let rows = tracked
        .rows
        .into_iter()
        .map(|(id, o)| (run.clone(), id, o))
        .collect();
    let requests = BTreeMap::from([(run.clone(), tracked.requests)]);
    let mut reports = BTreeMap::new();
    if let Some(address) = result.as_ref().ok().and_then(|v| v["report"].as_str()) {
        reports.insert(run.clone(), address.to_string());
    }
    match super::runs::settle(state, rows, &requests, &reports).await {
        Ok(()) => result,
        Err(problem) => {
            tracing::error!(%problem, "the run's progress could not be recorded");
            result.and(Err(HandlerError::Incomplete {
                origin: source.to_string(),
                problem: format!("the run's progress could not be recorded: {problem}"),
            }))
        }
    }
}

/// The next operation of the file, as part of its run: a held run's deactivations are left
/// out (its approval reads them again).
pub(super) async fn next_operation(
    rows: &mut Rows<'_, Report>,
    run: Option<&RunRecord>,
) -> Option<Operation> {
    loop {
        let mut op = rows.next_operation().await?;
        if super::runs::parks(run, &op) {
            continue;
        }
        op.run = run.map(|r| r.plan.run_id.clone());
        return Some(op);
    }
}
