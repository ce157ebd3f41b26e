//! Runs in the function (README, "Runs and their summary"): an S3 upload or EventBridge rerun
//! starts one (its census decides the deactivation guard up front); every invocation that
//! finishes rows of it settles them; the one that settles the last writes the summary to
//! `reports/runs/<run_id>.json` and puts the event. An approval event releases a held run.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::config::RunSettings;
use super::continuation;
use super::s3::ObjectRef;
use super::{reports, HandlerError, State};
use crate::aws::events::EventBus;
use crate::engine::KnownUsersError;
use crate::operation::{Operation, OperationResult};
use crate::queue::{Requeue, WorkQueue};
use crate::runs::census::Census;
use crate::runs::guard;
use crate::runs::plan::{absent_operation, deactivations};
use crate::runs::summary::{RunSummary, EVENT_SOURCE};
use crate::runs::{
    due, valid_run_id, RowId, RowOutcome, RunPlan, RunRecord, RunStatus, RunStore, Step, SyncMode,
};
use crate::sources::csv::ResumePoint;
use crate::sources::{fate, last_lines_by_user, CsvSource, RowFate};

/// How long one invocation holds the writing of a summary before another may take it over.
const LEASE: Duration = Duration::from_secs(60);

/// What the function needs for runs (present with `LEDGER_TABLE`).
pub struct Runs {
    pub(super) store: Arc<dyn RunStore>,
    pub(super) bus: EventBus,
    pub(super) settings: RunSettings,
}

impl Runs {
    /// Runs kept in `store`, events put on `bus`.
    pub fn new(store: Arc<dyn RunStore>, bus: EventBus, settings: RunSettings) -> Self {
        Self {
            store,
            bus,
            settings,
        }
    }
}

/// Settled outcomes, each with its run.
pub(super) type RunRows = Vec<(String, RowId, RowOutcome)>;

/// A run id from what identifies its event: the same event delivered twice gives the same id.
pub(super) fn run_id(parts: &[&str]) -> String {
    // FNV-1a, 64 bits, twice with different offsets: ids are names, not secrets.
    let hash = |offset: u64| {
        parts.iter().fold(offset, |h, part| {
            part.bytes()
                .chain([0])
                .fold(h, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
        })
    };
    format!(
        "run-{:016x}{:08x}",
        hash(0xcbf2_9ce4_8422_2325),
        hash(0x8422_2325_cbf2_9ce4) >> 32
    )
}

/// What an operation's outcome is counted under: its line, or (an absent user) its userName.
pub(super) fn row_id(op: &Operation) -> RowId {
    match op.row {
        Some(line) => RowId::Line(line),
        None => RowId::Absent(op.user.key()),
    }
}

/// Whether the run holds this operation back: a held run sends no deactivation.
pub(super) fn parks(record: Option<&RunRecord>, op: &Operation) -> bool {
    record.is_some_and(|r| r.status == RunStatus::Held) && !op.user.active
}

fn store_failed(origin: &str, error: impl std::fmt::Display) -> HandlerError {
    HandlerError::Incomplete {
        origin: origin.to_string(),
        problem: error.to_string(),
    }
}

/// Reads the whole object once (on a blocking thread).
async fn census_of(
    state: &State,
    object: &ObjectRef,
    etag: Option<&str>,
) -> Result<(Census, Option<String>, Option<u64>), HandlerError> {
    let source = format!("s3://{}/{}", object.bucket, object.key);
    let opened = continuation::open(
        &state.s3,
        &object.bucket,
        &object.key,
        object.version_id.as_deref(),
        etag,
        None,
    )
    .await?;
    let reader = opened.reader;
    let census = tokio::task::spawn_blocking(move || Census::of(reader))
        .await
        .map_err(|e| store_failed(&source, format!("the reading thread failed: {e}")))?;
    // A file that cannot be read is rejected by the provisioning pass, with its report line.
    let census = census.unwrap_or_default();
    Ok((census, opened.etag, opened.last_modified))
}

/// How starting a run went.
pub(super) enum Begun {
    /// Started now (true) or before, by the same event (false).
    Run(Box<RunRecord>, bool),
    /// Not yet: the SCIM service or the ledger did not answer (`reason`); the file's reading
    /// starts again from the end of its header when they do.
    Wait { header: ResumePoint, reason: String },
    /// The file cannot be read at all: no run (the file is rejected with its report line).
    Unreadable,
}

/// Starts the run of `object` (or finds it, for the same event again): the census, the guard's
/// decision, a held earlier run of the same source superseded, and (full sync, not held) the
/// absent users' deactivations enqueued.
pub(super) async fn begin(
    state: &State,
    runs: &Runs,
    object: &ObjectRef,
    run_id: &str,
    mode: SyncMode,
    deadline: Instant,
) -> Result<Begun, HandlerError> {
    let source = format!("s3://{}/{}", object.bucket, object.key);
    let failed = |e: crate::runs::RunError| store_failed(&source, e);
    if let Some(record) = runs.store.get(run_id).await.map_err(failed)? {
        tracing::info!(
            run_id,
            status = record.status.name(),
            "the run was started before: continuing it"
        );
        return Ok(Begun::Run(Box::new(record), false));
    }
    let (census, etag, last_modified) = census_of(state, object, None).await?;
    let Some(header) = census.header else {
        return Ok(Begun::Unreadable);
    };
    let known = match state.engine.known_users(deadline).await {
        Ok(known) => known,
        Err(KnownUsersError::Unavailable(reason)) => return Ok(Begun::Wait { header, reason }),
        Err(refused) => return Err(store_failed(&source, refused)),
    };
    let planned = deactivations(&census, &known, mode);
    let count = planned.count();
    let held = runs
        .settings
        .guard
        .holds(count, planned.known, census.named());
    let plan = RunPlan {
        run_id: run_id.to_string(),
        source: source.clone(),
        bucket: object.bucket.clone(),
        key: object.key.clone(),
        version_id: object.version_id.clone(),
        etag,
        mode,
        started_at: crate::operation::unix_millis(),
        rows: census.rows,
        parked: if held {
            census.leavers().count() as u64
        } else {
            0
        },
        deactivations: count,
        sample: if held {
            guard::sample(planned.user_names())
        } else {
            Vec::new()
        },
    };
    let record = RunRecord::new(plan.clone(), held, planned.absent.len() as u64);
    let stored = runs.store.start(&record).await.map_err(failed)?;
    if stored.plan != plan {
        return Ok(Begun::Run(Box::new(stored), false)); // the same event, started first elsewhere
    }
    if let Some(before) = runs
        .store
        .replace_latest(&source, run_id)
        .await
        .map_err(failed)?
    {
        supersede(state, runs, &before).await;
    }
    if held {
        tracing::warn!(
            run_id,
            deactivations = count,
            max = runs.settings.guard.max,
            percent = runs.settings.guard.percent,
            "the run is held: its deactivations exceed MAX_DEACTIVATIONS or MAX_DEACTIVATION_PERCENT and wait for approval; creates and updates go on"
        );
    } else {
        enqueue_absent(state, &record, &planned.absent, last_modified)
            .await
            .map_err(|p| store_failed(&source, p))?;
    }
    tracing::info!(run_id, rows = census.rows, held, mode = ?mode, absent = planned.absent.len(), "run started");
    Ok(Begun::Run(Box::new(stored), true))
}

/// Closes a held run overtaken by a newer one of the same source: never applied late.
async fn supersede(state: &State, runs: &Runs, run_id: &str) {
    match runs
        .store
        .transition(run_id, RunStatus::Held, RunStatus::Superseded, None)
        .await
    {
        Ok(true) => {
            tracing::warn!(run_id, "a held run was superseded by a newer run of its file: its deactivations will never be sent");
            if let Ok(Some(record)) = runs.store.get(run_id).await {
                if let Ok(tally) = runs.store.tally(run_id).await {
                    let summary = RunSummary::of(&record, &tally);
                    if let Err(error) = write_summary(state, &record, &summary).await {
                        tracing::error!(run_id, %error, "the superseded run's summary could not be written");
                    }
                }
            }
        }
        Ok(false) => {}
        Err(error) => {
            tracing::error!(run_id, %error, "an earlier run of the file could not be checked")
        }
    }
}

async fn enqueue(state: &State, operations: Vec<Operation>) -> Result<(), String> {
    if operations.is_empty() {
        return Ok(());
    }
    let per_request = state.config.max_operations;
    let rpm = state.config.requests_per_minute;
    let items: Vec<Requeue> = operations
        .into_iter()
        .enumerate()
        .map(|(i, operation)| Requeue {
            operation,
            delay: super::s3::deferral_delay(i, per_request, rpm),
        })
        .collect();
    let not = state.queue.enqueue(&items).await;
    if not.failed.is_empty() && not.too_large.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} deactivations could not be enqueued",
            not.failed.len() + not.too_large.len(),
            items.len()
        ))
    }
}

async fn enqueue_absent(
    state: &State,
    record: &RunRecord,
    absent: &[(String, String)],
    source_time: Option<u64>,
) -> Result<(), String> {
    let ops = absent
        .iter()
        .map(|(_, name)| {
            absent_operation(&record.plan.run_id, &record.plan.source, name, source_time)
        })
        .collect();
    enqueue(state, ops).await
}

/// Counts finished operations (and rows settled without one: invalid, duplicate) for their
/// runs, adds the requests and report made for them, then writes the summaries that became due.
/// An error means some outcomes were not recorded: the caller has the work redelivered.
pub(super) async fn settle(
    state: &State,
    rows: RunRows,
    requests: &BTreeMap<String, u64>,
    reports: &BTreeMap<String, String>,
) -> Result<(), String> {
    let Some(runs) = &state.runs else {
        return Ok(());
    };
    let mut by_run: BTreeMap<String, Vec<(RowId, RowOutcome)>> = BTreeMap::new();
    for (run, id, outcome) in rows {
        by_run.entry(run).or_default().push((id, outcome));
    }
    let touched: HashSet<&String> = by_run
        .keys()
        .chain(requests.keys())
        .chain(reports.keys())
        .collect();
    for run in touched {
        let failed = |e: crate::runs::RunError| format!("run {run}: {e}");
        if let Some(rows) = by_run.get(run) {
            runs.store.settle(run, rows).await.map_err(failed)?;
        }
        let used = requests.get(run).copied().unwrap_or(0);
        let report = reports.get(run).map(String::as_str);
        if used > 0 || report.is_some() {
            runs.store
                .add_usage(run, used, report)
                .await
                .map_err(failed)?;
        }
        check(state, runs, run).await.map_err(failed)?;
    }
    Ok(())
}

/// Writes a run's summary and puts its event if the run is due for one and no other
/// invocation is writing it.
async fn check(state: &State, runs: &Runs, run_id: &str) -> Result<(), crate::runs::RunError> {
    let Some(mut record) = runs.store.get(run_id).await? else {
        return Ok(());
    };
    let tally = runs.store.tally(run_id).await?;
    let Some(step) = due(&record, &tally) else {
        return Ok(());
    };
    let now = crate::operation::unix_millis();
    let until = now + u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX);
    if !runs.store.lease(run_id, step, now, until).await? {
        return Ok(());
    }
    if step == Step::Completed {
        record.status = RunStatus::Completed;
        record.finished_at = Some(now);
    }
    let summary = RunSummary::of(&record, &tally);
    // Not marked done if either fails: the lease is given back and the error has the work
    // delivered again, whose settling tries again (the summary object is simply rewritten).
    let published = match write_summary(state, &record, &summary).await {
        Ok(()) => runs
            .bus
            .put(EVENT_SOURCE, summary.detail_type(), &summary)
            .await
            .map_err(|e| e.to_string()),
        Err(error) => Err(format!("the summary could not be written: {error}")),
    };
    if let Err(problem) = published {
        runs.store.release(run_id, step).await?;
        return Err(crate::runs::RunError::Store {
            store: "the run's summary or event".into(),
            action: "written",
            reason: problem,
        });
    }
    runs.store.done(run_id, step, now).await?;
    tracing::info!(
        run_id,
        status = summary.status,
        rows = summary.rows,
        created = summary.created,
        updated = summary.updated,
        unchanged = summary.unchanged,
        deactivated = summary.deactivated,
        invalid = summary.invalid,
        failed = summary.failed,
        "run summary written"
    );
    Ok(())
}

async fn write_summary(
    state: &State,
    record: &RunRecord,
    summary: &RunSummary,
) -> Result<(), String> {
    let Some(bucket) = reports::bucket_for(state, &record.plan.source) else {
        return Err("no bucket for the summary (set REPORT_BUCKET)".into());
    };
    let body = serde_json::to_vec_pretty(summary).map_err(|e| e.to_string())?;
    state
        .s3
        .put_json(&bucket, &RunSummary::key(&record.plan.run_id), body)
        .await
        .map_err(|e| e.to_string())
}

/// Approves a held run (EventBridge detail `{"approve_run": "<run_id>"}`): its leaver rows are
/// read again from the same content and, with the absent users (full sync, as the ledger has
/// them now), enqueued for deactivation; the run then completes as usual.
pub(super) async fn approve(
    state: &State,
    run_id: &str,
    deadline: Instant,
) -> Result<Value, HandlerError> {
    let Some(runs) = &state.runs else {
        return Err(HandlerError::BadEvent(
            "approving a run needs LEDGER_TABLE (runs are kept in the ledger)".into(),
        ));
    };
    if !valid_run_id(run_id) {
        return Err(HandlerError::BadEvent(
            "approve_run is not a run id (letters, digits, '-', '_', '.'; at most 100)".into(),
        ));
    }
    let origin = format!("approve {run_id}");
    let record = runs
        .store
        .get(run_id)
        .await
        .map_err(|e| store_failed(&origin, e))?
        .ok_or_else(|| HandlerError::BadEvent(format!("no run {run_id} is known")))?;
    match record.status {
        // Approved before: enqueued again, in case that invocation stopped before it enqueued
        // them (settling is idempotent; users already deactivated come out unchanged).
        RunStatus::Held | RunStatus::Approved => {}
        other => {
            tracing::warn!(
                run_id,
                status = other.name(),
                "only a held run can be approved"
            );
            return Ok(json!({"run_id": run_id, "status": other.name(), "approved": false}));
        }
    }
    let plan = &record.plan;
    let object = ObjectRef {
        bucket: plan.bucket.clone(),
        key: plan.key.clone(),
        version_id: plan.version_id.clone(),
    };
    let (leavers, last_modified) = leaver_operations(state, &record, &object).await?;
    let mut absent = Vec::new();
    if plan.mode == SyncMode::Full {
        let (census, _, _) = census_of(state, &object, plan.etag.as_deref()).await?;
        let known = state
            .engine
            .known_users(deadline)
            .await
            .map_err(|e| store_failed(&origin, e))?;
        absent = deactivations(&census, &known, SyncMode::Full).absent;
    }
    if record.status == RunStatus::Held {
        let approved = runs
            .store
            .transition(
                run_id,
                RunStatus::Held,
                RunStatus::Approved,
                Some(absent.len() as u64),
            )
            .await
            .map_err(|e| store_failed(&origin, e))?;
        if !approved {
            return Ok(
                json!({"run_id": run_id, "approved": false, "why": "the run is no longer held"}),
            );
        }
    }
    let mut operations = leavers;
    operations.extend(
        absent
            .iter()
            .map(|(_, name)| absent_operation(&plan.run_id, &plan.source, name, last_modified)),
    );
    let count = operations.len();
    enqueue(state, operations)
        .await
        .map_err(|p| store_failed(&origin, p))?;
    tracing::info!(
        run_id,
        deactivations = count,
        "held run approved: its deactivations are enqueued"
    );
    // With nothing to send, the run completes now.
    check(state, runs, run_id)
        .await
        .map_err(|e| store_failed(&origin, e))?;
    Ok(json!({"run_id": run_id, "approved": true, "deactivations_enqueued": count}))
}

/// The file's leaver rows (last of their userName), read again from the content the run read.
async fn leaver_operations(
    state: &State,
    record: &RunRecord,
    object: &ObjectRef,
) -> Result<(Vec<Operation>, Option<u64>), HandlerError> {
    let plan = &record.plan;
    let open = || {
        continuation::open(
            &state.s3,
            &object.bucket,
            &object.key,
            object.version_id.as_deref(),
            plan.etag.as_deref(),
            None,
        )
    };
    let first = open().await?;
    let second = open().await?;
    let last_modified = second.last_modified;
    let (source, run_id) = (plan.source.clone(), plan.run_id.clone());
    let reading = tokio::task::spawn_blocking(move || {
        let last = last_lines_by_user(first.reader)?;
        let mut ops = Vec::new();
        for row in CsvSource::new(second.reader)? {
            let row = row?;
            let line = row.line;
            if let RowFate::Provision(user) = fate(row, &last) {
                if !user.active {
                    let mut op = Operation::new(user, source.clone(), Some(line));
                    op.source_time = last_modified;
                    op.run = Some(run_id.clone());
                    ops.push(op);
                }
            }
        }
        Ok::<_, crate::sources::FileError>(ops)
    });
    let origin = plan.source.clone();
    let ops = reading
        .await
        .map_err(|e| store_failed(&origin, format!("the reading thread failed: {e}")))?
        .map_err(|e| store_failed(&origin, e))?;
    Ok((ops, last_modified))
}

/// Outcomes of a cycle's results that belong to runs, and the requests made, split between
/// runs by their share of the operations.
pub(super) fn of_results(
    results: &[OperationResult],
    requests: u64,
) -> (RunRows, BTreeMap<String, u64>) {
    let mut rows = Vec::new();
    let mut share: BTreeMap<String, u64> = BTreeMap::new();
    for result in results {
        let Some(run) = &result.operation.run else {
            continue;
        };
        *share.entry(run.clone()).or_default() += 1;
        if let Some(outcome) = RowOutcome::of(&result.outcome) {
            rows.push((run.clone(), row_id(&result.operation), outcome));
        }
    }
    let total = results.len().max(1) as u64;
    let requests = share
        .into_iter()
        .map(|(run, n)| (run, requests * n / total))
        .collect();
    (rows, requests)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_stable_and_distinct() {
        let a = run_id(&["b", "k.csv", "seq1"]);
        assert_eq!(a, run_id(&["b", "k.csv", "seq1"]));
        assert_ne!(a, run_id(&["b", "k.csv", "seq2"]));
        assert_ne!(run_id(&["ab", "c"]), run_id(&["a", "bc"]));
        assert!(valid_run_id(&a));
        assert!(!valid_run_id("../x") && !valid_run_id("") && !valid_run_id(&"a".repeat(101)));
    }
}
