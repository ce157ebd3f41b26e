//! CSV objects (S3 uploads and EventBridge reruns): read twice, streamed (the last row per
//! userName, then the rows, through [`crate::sources::stream`]); the first rows are provisioned in this invocation, the rest are
//! enqueued to the work queue while reading, deferred at the rate limit, so memory stays flat.

use std::time::{Duration, Instant};

use aws_lambda_events::event::s3::S3Event;
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::continuation::{self, Checkpoint, Segment};
use super::object_run;
use super::reports::{Report, Tracked};
use super::{HandlerError, Invocation, State};
use crate::aws::s3::S3Error;
use crate::pipeline::{self, Summary};
use crate::queue::{Requeue, WorkQueue};
use crate::report::ReportLine;
use crate::retry::MAX_DELAY;
use crate::runs::{RunRecord, SyncMode};
use crate::sources::csv::ResumePoint;
use crate::sources::stream::{read_rows, Positions, ReportSink, Rows};
use crate::sources::FileError;

/// Deferred operations enqueued per SendMessageBatch-sized flush (10 messages of 50).
const FLUSH_OPERATIONS: usize = 500;
/// Spacing of deferred requests when the rate is unlimited, so they do not all arrive at once.
const UNLIMITED_SECONDS_PER_REQUEST: f64 = 1.0;
/// Reports are written here; objects under it are never read as input (no report loops).
pub(super) const REPORTS_PREFIX: &str = "reports/";

/// An object to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ObjectRef {
    pub bucket: String,
    pub key: String,
    /// The version named by the event, if the bucket is versioned.
    pub version_id: Option<String>,
}

/// An S3 key from an event notification: `+` is a space, then percent-decoding.
pub(super) fn decode_key(raw: &str) -> String {
    percent_decode_str(&raw.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// When the deferred operation at `position` (among the file's operations) may be sent: one
/// request per `ops_per_request` operations, spaced at the rate limit; at most 900 s.
pub(super) fn deferral_delay(
    position: usize,
    ops_per_request: usize,
    rpm: Option<u32>,
) -> Duration {
    let request = (position / ops_per_request.max(1)) as f64;
    let per_request = match rpm {
        Some(rpm) if rpm > 0 => 60.0 / f64::from(rpm),
        _ => UNLIMITED_SECONDS_PER_REQUEST,
    };
    Duration::from_secs_f64(request * per_request).min(MAX_DELAY)
}

/// Handles an S3 notification: every record's object in turn; the first failure is returned
/// after all were tried, so Lambda retries the event (operations upsert: that is safe).
pub(super) async fn handle(
    state: &State,
    invocation: &Invocation,
    deadline: Instant,
    event: Value,
    summary: &mut Summary,
) -> Result<Value, HandlerError> {
    let event: S3Event = serde_json::from_value(event).map_err(|e| {
        HandlerError::BadEvent(format!("not an S3 notification ({})", json_problem(&e)))
    })?;
    let mut objects = Vec::new();
    let mut first_error = None;
    for record in event.records {
        let name = record.event_name.unwrap_or_default();
        if !name.starts_with("ObjectCreated") {
            tracing::info!(event_name = %name, "ignoring an S3 event that is not ObjectCreated");
            continue;
        }
        let (Some(bucket), Some(raw_key)) = (record.s3.bucket.name, record.s3.object.key) else {
            first_error.get_or_insert(HandlerError::BadEvent(
                "an S3 record has no bucket name or object key".into(),
            ));
            continue;
        };
        let object = ObjectRef {
            bucket,
            key: decode_key(&raw_key),
            version_id: record
                .s3
                .object
                .version_id
                .filter(|v| !v.is_empty() && v != "null"),
        };
        // The same notification delivered twice is the same run; another upload of the key
        // has another sequencer (and version, ETag).
        let run = state.runs.as_ref().map(|runs| NewRun {
            id: super::runs::run_id(&[
                &object.bucket,
                &object.key,
                object.version_id.as_deref().unwrap_or(""),
                record.s3.object.sequencer.as_deref().unwrap_or(""),
                record.s3.object.e_tag.as_deref().unwrap_or(""),
            ]),
            mode: runs.settings.sync_mode,
        });
        let start = Start::Event {
            event_time: Some(record.event_time.to_rfc3339()),
            run,
        };
        match process_from(state, invocation, deadline, &object, start, summary).await {
            Ok(result) => objects.push(result),
            Err(error) => {
                tracing::error!(bucket = %object.bucket, key = %object.key, %error, "the object was not fully processed");
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) => Err(error),
        None => Ok(json!({ "objects": objects })),
    }
}

/// What is wrong with an event that does not deserialize, without quoting it (personal data).
fn json_problem(error: &serde_json::Error) -> &'static str {
    match error.classify() {
        serde_json::error::Category::Data => "a field is missing or has the wrong type",
        _ => "invalid JSON",
    }
}

/// A part of an object read from a checkpoint: its lines and points are shifted.
impl Positions for Segment {
    fn line(&self, line: u64) -> u64 {
        Segment::line(self, line)
    }
    fn point(&self, point: ResumePoint) -> ResumePoint {
        Segment::point(self, point)
    }
}

impl ReportSink for Report {
    async fn push(&mut self, line: &ReportLine) {
        Report::push(self, line).await
    }
}

/// Where reading an object starts: at its beginning (an upload or rerun event), or where an
/// earlier invocation stopped.
pub(super) enum Start<'a> {
    /// The whole object, for an event (its time, if it has one), as a run (with LEDGER_TABLE).
    Event {
        event_time: Option<String>,
        run: Option<NewRun>,
    },
    /// The rest of an object, from a continuation message.
    Checkpoint(&'a Checkpoint),
}

/// A run an event starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NewRun {
    /// Its id (the same for the same event).
    pub id: String,
    /// Upsert or full sync.
    pub mode: SyncMode,
}

/// Reads one CSV object and provisions it (partly now, the rest through the work queue).
pub(super) async fn process(
    state: &State,
    invocation: &Invocation,
    deadline: Instant,
    object: &ObjectRef,
    run: Option<NewRun>,
    summary: &mut Summary,
) -> Result<Value, HandlerError> {
    let start = Start::Event {
        event_time: None,
        run,
    };
    process_from(state, invocation, deadline, object, start, summary).await
}

/// Continues reading an object where a continuation message says.
pub(super) async fn continue_from(
    state: &State,
    invocation: &Invocation,
    deadline: Instant,
    checkpoint: &Checkpoint,
    summary: &mut Summary,
) -> Result<Value, HandlerError> {
    // Too little time to move the file on: it waits for the next invocation, unchanged.
    if Instant::now() + state.engine.admission_window() > deadline {
        leave_continuation(state, checkpoint, Duration::from_secs(1))
            .await
            .map_err(|problem| HandlerError::Incomplete {
                origin: format!("s3://{}/{}", checkpoint.bucket, checkpoint.key),
                problem,
            })?;
        return Ok(json!({"continued_at": {"line": checkpoint.line, "offset": checkpoint.offset}}));
    }
    let object = ObjectRef {
        bucket: checkpoint.bucket.clone(),
        key: checkpoint.key.clone(),
        version_id: checkpoint.version_id.clone(),
    };
    let start = Start::Checkpoint(checkpoint);
    process_from(state, invocation, deadline, &object, start, summary).await
}

/// [`process`] from `start`. Its report is written even when it fails part-way: what was
/// learnt (invalid and duplicate rows, settled operations) and a `failed` line naming the
/// object; the error returned names the object too (it becomes the record of Lambda's
/// on-failure destination).
pub(super) async fn process_from(
    state: &State,
    invocation: &Invocation,
    deadline: Instant,
    object: &ObjectRef,
    start: Start<'_>,
    summary: &mut Summary,
) -> Result<Value, HandlerError> {
    let source = format!("s3://{}/{}", object.bucket, object.key);
    let run = match &start {
        Start::Checkpoint(checkpoint) => checkpoint.run.clone(),
        Start::Event { run: Some(run), .. } => run.id.clone(),
        Start::Event { .. } => invocation.request_id.clone(),
    };
    if object.key.starts_with(REPORTS_PREFIX) {
        tracing::warn!(%source, "ignoring an object under reports/: reports are not input");
        return Ok(json!({"source": source, "ignored": "reports are not input"}));
    }
    let span = tracing::info_span!("object", %source, %run);
    async {
        let mut report = Report::new(state, &source, &invocation.request_id);
        let result = process_source(
            state,
            invocation,
            deadline,
            object,
            start,
            source.clone(),
            summary,
            &mut report,
        )
        .await;
        let tracked = report.tracked.take();
        let result = finish_report(report, &source, result).await;
        match tracked {
            Some(tracked) => object_run::settle_run(state, tracked, &source, result).await,
            None => result,
        }
    }
    .instrument(span)
    .await
}

/// Completes the object's report: on success the result gets its address (a report that
/// cannot be written fails the object); on failure a `failed` line naming the object and the
/// reason is added first, and the error is made to name the object.
async fn finish_report(
    mut report: Report,
    source: &str,
    result: Result<Value, HandlerError>,
) -> Result<Value, HandlerError> {
    match result {
        Ok(mut value) => match report.finish().await {
            Ok(address) => {
                value["report"] = json!(address);
                Ok(value)
            }
            Err(error) => Err(HandlerError::Incomplete {
                origin: source.to_string(),
                problem: format!("the report could not be written: {error}"),
            }),
        },
        Err(error) => {
            let error = match error {
                // The engine's error does not say which object it stopped.
                HandlerError::Engine(error) => HandlerError::Incomplete {
                    origin: source.to_string(),
                    problem: error.to_string(),
                },
                other => other,
            };
            let reason = format!("the object was not fully processed: {error}");
            report
                .push(&ReportLine::new(source, "failed", reason))
                .await;
            if let Err(written) = report.finish().await {
                tracing::error!(error = %written, "the failed object's report could not be written");
            }
            Err(error)
        }
    }
}

#[allow(clippy::too_many_arguments)] // the object's context, each used once; no struct would be clearer
async fn process_source(
    state: &State,
    invocation: &Invocation,
    deadline: Instant,
    object: &ObjectRef,
    start: Start<'_>,
    source: String,
    summary: &mut Summary,
    report: &mut Report,
) -> Result<Value, HandlerError> {
    let (bucket, key, version) = (&object.bucket, &object.key, object.version_id.as_deref());
    let incomplete = |problem: String| HandlerError::Incomplete {
        origin: source.clone(),
        problem,
    };
    let from = match &start {
        Start::Checkpoint(checkpoint) => Some(*checkpoint),
        Start::Event { .. } => None,
    };
    let etag = from.and_then(|c| c.etag.as_deref());
    let run = match object_run::run_for(state, object, &start, deadline, summary).await? {
        object_run::RunFor::Run(run) => run.map(|r| *r),
        object_run::RunFor::Waiting(answer) => return Ok(answer),
    };
    if let Some(record) = &run {
        report.tracked = Some(Tracked {
            run_id: record.plan.run_id.clone(),
            ..Tracked::default()
        });
    }
    let run = run.as_ref();
    // First pass: the last row of every userName, so earlier ones can be reported as they come;
    // it stops halfway to the deadline, and this invocation provisions the part it scanned.
    let first = match continuation::open(&state.s3, bucket, key, version, etag, from).await {
        Ok(first) => first,
        Err(error) if from.is_some() && is_replaced(&error) => {
            return Ok(replaced(source, from, summary, report).await)
        }
        Err(error) => return Err(error.into()),
    };
    let etag = first.etag.or_else(|| etag.map(str::to_string));
    // Without a bucket continuations are accepted for, stopping early would only fail: the
    // file is then read to its end whatever the time, as one invocation.
    let known = state.config.report_bucket.as_deref();
    let can_continue = continuation::check_bucket(known, bucket).is_ok();
    let stop = can_continue.then_some(deadline);
    let stop_at = match stop {
        Some(deadline) => Instant::now() + deadline.saturating_duration_since(Instant::now()) / 2,
        None => far_future(),
    };
    let segment = first.segment;
    let reader = first.reader;
    let scanned =
        tokio::task::spawn_blocking(move || continuation::scan(reader, &segment, stop_at))
            .await
            .map_err(|e| incomplete(format!("the reading thread failed: {e}")))?;
    let scanned = match scanned {
        Ok(scanned) => scanned,
        Err(error @ FileError::Read { .. }) => return Err(incomplete(error.to_string())),
        Err(error) => return Ok(reject(source, error, summary, report).await),
    };
    if let Some(end) = scanned.end {
        tracing::info!(
            line = end.line,
            "the first pass stopped halfway to the deadline: the rest of the file continues in another invocation"
        );
    }
    // Second pass, on the version just read: rows stream through a bounded channel.
    let second = continuation::open(&state.s3, bucket, key, version, etag.as_deref(), from).await?;
    let (tx, rx) = mpsc::channel(256);
    let (segment, end, whole) = (second.segment, scanned.end, from.is_none());
    let reading =
        tokio::task::spawn_blocking(move || read_rows(second.reader, &segment, end, whole, tx));
    let mut rows = Rows {
        source: source.clone(),
        last: scanned.last,
        rx,
        rows: 0,
        invalid: 0,
        duplicates: 0,
        report,
        source_time: second.last_modified,
        failure: None,
        resume: from.map_or(scanned.header, |c| ResumePoint {
            offset: c.offset,
            line: c.line,
        }),
    };
    let now_count = state.config.s3_cycle_max_operations;
    let mut operations = Vec::new();
    while operations.len() < now_count {
        match object_run::next_operation(&mut rows, run).await {
            Some(op) => operations.push(op),
            None => break,
        }
    }
    let in_cycle = operations.len();
    // The cycle runs while the rest of the file is read and enqueued.
    let cycle = pipeline::run_cycle(&state.engine, operations, deadline, &state.queue);
    let defer = defer_rest(state, &mut rows, run, in_cycle, stop);
    let (settled, deferral) = tokio::join!(cycle, defer);
    let (deferred, lost) = (deferral.enqueued, deferral.lost);
    // The reading thread may be ahead of where the enqueueing stopped: let it go. Its end is
    // checked after the settled lines are in the report, so a failed reader does not lose them.
    let Rows {
        rx,
        report,
        rows: row_count,
        invalid,
        duplicates,
        failure,
        resume,
        ..
    } = rows;
    drop(rx);
    let read = reading.await;
    let settled = settled?;
    let next = if deferral.stopped {
        Some(resume)
    } else {
        scanned.end
    };

    summary.add(&settled.summary);
    if let Some(tracked) = report.tracked.as_mut() {
        let (rows, _) = super::runs::of_results(&settled.results, 0);
        tracked
            .rows
            .extend(rows.into_iter().map(|(_, id, o)| (id, o)));
        tracked.requests += settled.summary.requests;
    }
    summary.deferred += deferred as u64;
    summary.failed += deferral.too_large;
    summary.invalid += invalid;
    summary.skipped += duplicates;
    // After the file's own lines: the report is streamed, so it is in file order but for these.
    for line in &settled.report {
        report.push(line).await;
    }

    let mut problems = Vec::new();
    if let Err(error) = read {
        problems.push(format!("the reading thread failed: {error}"));
    }
    if let Some(error) = &failure {
        problems.push(error.to_string());
    }
    if !settled.unsettled.is_empty() {
        problems.push(format!(
            "{} operations could not be re-enqueued",
            settled.unsettled.len()
        ));
    }
    if lost > 0 {
        problems.push(format!("{lost} deferred operations could not be enqueued"));
    }
    let continued = match next {
        Some(next) if failure.is_none() => {
            let checkpoint = Checkpoint {
                continuation: continuation::CONTINUATION_VERSION,
                bucket: bucket.clone(),
                key: key.clone(),
                version_id: object.version_id.clone(),
                etag: etag.clone(),
                run: match (from, run) {
                    (Some(c), _) => c.run.clone(),
                    (None, Some(record)) => record.plan.run_id.clone(),
                    (None, None) => invocation.request_id.clone(),
                },
                event_time: match &start {
                    Start::Checkpoint(c) => c.event_time.clone(),
                    Start::Event { event_time, .. } => event_time.clone(),
                },
                header_end: from.map_or(scanned.header.offset, |c| c.header_end),
                header_next_line: from.map_or(scanned.header.line, |c| c.header_next_line),
                offset: next.offset,
                line: next.line,
                mode: None,
                waiting_since: None,
            };
            // After this file's deferred work, so the tenant sees it at the same pace.
            let delay = deferral_delay(
                in_cycle + deferred,
                state.config.max_operations,
                state.config.requests_per_minute,
            );
            match leave_continuation(state, &checkpoint, delay).await {
                Ok(()) => Some(next),
                Err(problem) => {
                    problems.push(problem);
                    None
                }
            }
        }
        _ => None,
    };
    if !can_continue && Instant::now() > deadline {
        tracing::warn!(
            "the file took longer than the invocation's time and could not be continued in \
             another (continuations are accepted for REPORT_BUCKET only): set REPORT_BUCKET to \
             the upload bucket"
        );
    }
    if !problems.is_empty() {
        return Err(incomplete(problems.join("; ")));
    }
    Ok(json!({
        "source": source,
        "rows": row_count,
        "invalid": invalid,
        "duplicates": duplicates,
        "provisioned_now": in_cycle,
        "deferred_to_queue": deferred,
        "continued_at": continued.map(|p| json!({"line": p.line, "offset": p.offset})),
        "summary": settled.summary,
    }))
}

/// An instant no invocation reaches (a day from now).
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

/// Enqueues the continuation of a file this invocation could not finish.
pub(super) async fn leave_continuation(
    state: &State,
    checkpoint: &Checkpoint,
    delay: Duration,
) -> Result<(), String> {
    let known = state.config.report_bucket.as_deref();
    continuation::check_bucket(known, &checkpoint.bucket).map_err(|error| {
        format!(
            "the file could not be finished in this invocation and cannot be continued in another ({error}); set REPORT_BUCKET to the upload bucket or raise the function timeout"
        )
    })?;
    state
        .continuations
        .send(checkpoint, delay)
        .await
        .map_err(|error| {
            format!(
                "the continuation from line {} could not be enqueued: {error}",
                checkpoint.line
            )
        })?;
    tracing::info!(
        line = checkpoint.line,
        offset = checkpoint.offset,
        "time is short: the rest of the file continues in another invocation (continuation message enqueued)"
    );
    Ok(())
}

/// Whether S3 refused a read because the object is no longer the content being continued.
fn is_replaced(error: &S3Error) -> bool {
    matches!(
        error.code.as_deref(),
        Some("PreconditionFailed" | "NoSuchKey" | "NoSuchVersion")
    )
}

/// A continuation of an object that was replaced or deleted since: its new content comes with
/// its own event; the rest of the old one is reported as not provisioned.
async fn replaced(
    source: String,
    from: Option<&Checkpoint>,
    summary: &mut Summary,
    report: &mut Report,
) -> Value {
    let line = from.map_or(0, |c| c.line);
    tracing::warn!(
        line,
        "the object changed or went away since its reading began: the rest is not provisioned"
    );
    summary.skipped += 1;
    let mut report_line = ReportLine::new(
        source.clone(),
        "skipped",
        format!("the object was replaced or deleted while it was being provisioned: the rows from line {line} on were not provisioned (a new upload is processed on its own)"),
    );
    report_line.row = Some(line);
    report.push(&report_line).await;
    json!({"source": source, "replaced": true})
}

/// How enqueueing the rest of a file went.
struct Deferral {
    enqueued: usize,
    lost: usize,
    /// Operations no message can carry, reported failed with their line.
    too_large: u64,
    /// It stopped for lack of time before the end of the rows.
    stopped: bool,
}

/// Enqueues every remaining operation, deferred at the rate limit, a flush at a time, until
/// the rows end or `deadline` (if any) leaves no time for another flush.
async fn defer_rest(
    state: &State,
    rows: &mut Rows<'_, Report>,
    run: Option<&RunRecord>,
    first_position: usize,
    deadline: Option<Instant>,
) -> Deferral {
    let (ops_per_request, rpm) = (
        state.config.max_operations,
        state.config.requests_per_minute,
    );
    let mut position = first_position;
    let mut batch: Vec<Requeue> = Vec::with_capacity(FLUSH_OPERATIONS);
    let (mut enqueued, mut lost, mut too_large, mut stopped) = (0, 0, 0, false);
    loop {
        // Between flushes: stop where we are if another would end past the deadline (once
        // something was taken, so every invocation moves the file on).
        let progress = position > 0 || enqueued + lost > 0;
        let flush = state.continuations.slowest_flush();
        let late = deadline.is_some_and(|deadline| Instant::now() + flush >= deadline);
        if batch.is_empty() && progress && late {
            stopped = true;
            break;
        }
        let next = object_run::next_operation(rows, run).await;
        let end = next.is_none();
        if let Some(operation) = next {
            let delay = deferral_delay(position, ops_per_request, rpm);
            batch.push(Requeue { operation, delay });
            position += 1;
        }
        if batch.len() >= FLUSH_OPERATIONS || (end && !batch.is_empty()) {
            let started = Instant::now();
            let not_enqueued = state.queue.enqueue(&batch).await;
            state.continuations.flushed_in(started.elapsed());
            enqueued += batch.len() - not_enqueued.len();
            lost += not_enqueued.failed.len();
            for (i, why) in &not_enqueued.too_large {
                let operation = &batch[*i].operation;
                let mut line = ReportLine::new(
                    operation.source.clone(),
                    "failed",
                    format!("not provisioned: {why}"),
                );
                line.row = operation.row;
                line.user_name = Some(operation.user.user_name.clone());
                rows.report.push(&line).await;
                too_large += 1;
            }
            batch.clear();
        }
        if end {
            break;
        }
    }
    if enqueued > 0 {
        tracing::info!(
            operations = enqueued,
            "rows past S3_CYCLE_MAX_OPERATIONS enqueued to the work queue, deferred"
        );
    }
    Deferral {
        enqueued,
        lost,
        too_large,
        stopped,
    }
}

/// A file that cannot be read at all (missing column, not CSV): one report line, nothing sent.
async fn reject(
    source: String,
    error: FileError,
    summary: &mut Summary,
    report: &mut Report,
) -> Value {
    tracing::warn!(%error, "the file is rejected whole; nothing was sent");
    summary.invalid += 1;
    report
        .push(&ReportLine::new(
            source.clone(),
            "rejected",
            error.to_string(),
        ))
        .await;
    json!({"source": source, "rejected": error.to_string()})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_url_decoded() {
        assert_eq!(
            decode_key("incoming/hr+export.csv"),
            "incoming/hr export.csv"
        );
        assert_eq!(decode_key("a%2Bb%20c.csv"), "a+b c.csv");
        assert_eq!(decode_key("caf%C3%A9.csv"), "café.csv");
        assert_eq!(decode_key("plain.csv"), "plain.csv");
    }

    #[test]
    fn deferrals_follow_the_rate_limit() {
        // 60 requests a minute, 50 operations a request: one second per 50 operations.
        assert_eq!(deferral_delay(0, 50, Some(60)), Duration::ZERO);
        assert_eq!(deferral_delay(49, 50, Some(60)), Duration::ZERO);
        assert_eq!(deferral_delay(50, 50, Some(60)), Duration::from_secs(1));
        assert_eq!(deferral_delay(500, 50, Some(6)), Duration::from_secs(100));
        assert_eq!(deferral_delay(1_000_000, 50, Some(6)), MAX_DELAY);
        assert_eq!(deferral_delay(250, 50, None), Duration::from_secs(5));
        assert_eq!(deferral_delay(10, 0, Some(0)), Duration::from_secs(10));
    }
}
