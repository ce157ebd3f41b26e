//! CSV objects (S3 uploads and EventBridge reruns): read twice, streamed (the last row per
//! userName, then the rows); the first rows are provisioned in this invocation, the rest are
//! enqueued to the work queue while reading, deferred at the rate limit, so memory stays flat.

use std::time::{Duration, Instant};

use aws_lambda_events::event::s3::S3Event;
use percent_encoding::percent_decode_str;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::reports::Report;
use super::{HandlerError, Invocation, State};
use crate::aws::s3::ObjectReader;
use crate::operation::Operation;
use crate::pipeline::{self, Requeue, Summary, WorkQueue};
use crate::report::ReportLine;
use crate::retry::MAX_DELAY;
use crate::sources::{
    fate, last_lines_by_user, rows, CsvSource, FileError, LastLines, Row, RowFate,
};

/// Deferred operations enqueued per SendMessageBatch-sized flush (10 messages of 50).
const FLUSH_OPERATIONS: usize = 500;
/// Spacing of deferred requests when the rate is unlimited, so they do not all arrive at once.
const UNLIMITED_SECONDS_PER_REQUEST: f64 = 1.0;
/// Reports are written here; objects under it are never read as input (no report loops).
const REPORTS_PREFIX: &str = "reports/";

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
        match process(state, invocation, deadline, &object, summary).await {
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

/// What the reading thread hands over.
enum Item {
    UnknownColumns(Vec<String>),
    Row(Row),
    Failed(FileError),
}

/// Second pass, on a blocking thread: streams the rows into `tx` until the end or the receiver goes.
fn read_rows(reader: ObjectReader, tx: mpsc::Sender<Item>) {
    let source = match CsvSource::new(reader) {
        Ok(source) => source,
        Err(error) => {
            let _ = tx.blocking_send(Item::Failed(error));
            return;
        }
    };
    if !source.unknown_columns().is_empty()
        && tx
            .blocking_send(Item::UnknownColumns(source.unknown_columns().to_vec()))
            .is_err()
    {
        return;
    }
    for row in source {
        let item = row.map_or_else(Item::Failed, Item::Row);
        if tx.blocking_send(item).is_err() {
            return;
        }
    }
}

/// The rows of a file as they arrive: invalid and superseded ones become report lines,
/// written as they come.
struct Rows<'r> {
    source: String,
    last: LastLines,
    rx: mpsc::Receiver<Item>,
    rows: u64,
    invalid: u64,
    duplicates: u64,
    report: &'r mut Report,
    failure: Option<FileError>,
}

impl Rows<'_> {
    /// The next valid, last-of-its-userName row as an operation; None at the end of the file.
    async fn next_operation(&mut self) -> Option<Operation> {
        while let Some(item) = self.rx.recv().await {
            let row = match item {
                Item::Row(row) => row,
                Item::Failed(error) => {
                    self.failure = Some(error);
                    continue;
                }
                Item::UnknownColumns(columns) => {
                    self.report
                        .push(&rows::ignored_columns_line(&self.source, &columns))
                        .await;
                    continue;
                }
            };
            self.rows += 1;
            let line = row.line;
            let user = match fate(row, &self.last) {
                RowFate::Provision(user) => user,
                RowFate::Invalid(error) => {
                    self.invalid += 1;
                    self.report
                        .push(&rows::invalid_line(&self.source, line, &error))
                        .await;
                    continue;
                }
                RowFate::Superseded { by, user } => {
                    self.duplicates += 1;
                    self.report
                        .push(&rows::duplicate_line(&self.source, line, by, &user))
                        .await;
                    continue;
                }
            };
            return Some(Operation::new(user, self.source.clone(), Some(line)));
        }
        None
    }
}

/// Reads one CSV object and provisions it (partly now, the rest through the work queue).
/// Its report is written even when it fails part-way: what was learnt (invalid and duplicate
/// rows, settled operations) and a `failed` line naming the object; the error returned names
/// the object too (it becomes the record of Lambda's on-failure destination).
pub(super) async fn process(
    state: &State,
    invocation: &Invocation,
    deadline: Instant,
    object: &ObjectRef,
    summary: &mut Summary,
) -> Result<Value, HandlerError> {
    let source = format!("s3://{}/{}", object.bucket, object.key);
    if object.key.starts_with(REPORTS_PREFIX) {
        tracing::warn!(%source, "ignoring an object under reports/: reports are not input");
        return Ok(json!({"source": source, "ignored": "reports are not input"}));
    }
    let span = tracing::info_span!("object", %source);
    async {
        let mut report = Report::new(state, &source, &invocation.request_id);
        let result = process_source(
            state,
            deadline,
            object,
            source.clone(),
            summary,
            &mut report,
        )
        .await;
        finish_report(report, &source, result).await
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

async fn process_source(
    state: &State,
    deadline: Instant,
    object: &ObjectRef,
    source: String,
    summary: &mut Summary,
    report: &mut Report,
) -> Result<Value, HandlerError> {
    let (bucket, key, version) = (&object.bucket, &object.key, object.version_id.as_deref());
    let incomplete = |problem: String| HandlerError::Incomplete {
        origin: source.clone(),
        problem,
    };
    // First pass: the last row of every userName, so earlier ones can be reported as they come.
    let first = state.s3.open(bucket, key, version, None).await?;
    let etag = first.etag;
    let reader = first.reader;
    let last = tokio::task::spawn_blocking(move || last_lines_by_user(reader))
        .await
        .map_err(|e| incomplete(format!("the reading thread failed: {e}")))?;
    let last = match last {
        Ok(last) => last,
        Err(error @ FileError::Read { .. }) => return Err(incomplete(error.to_string())),
        Err(error) => return Ok(reject(source, error, summary, report).await),
    };
    // Second pass, on the version just read: rows stream through a bounded channel.
    let second = state.s3.open(bucket, key, version, etag.as_deref()).await?;
    let (tx, rx) = mpsc::channel(256);
    let reading = tokio::task::spawn_blocking(move || read_rows(second.reader, tx));
    let mut rows = Rows {
        source: source.clone(),
        last,
        rx,
        rows: 0,
        invalid: 0,
        duplicates: 0,
        report,
        failure: None,
    };
    let now_count = state.config.s3_cycle_max_operations;
    let mut operations = Vec::new();
    while operations.len() < now_count {
        match rows.next_operation().await {
            Some(op) => operations.push(op),
            None => break,
        }
    }
    let in_cycle = operations.len();
    // The cycle runs while the rest of the file is read and enqueued.
    let cycle = pipeline::run_cycle(&state.engine, operations, deadline, &state.queue);
    let defer = defer_rest(state, &mut rows, in_cycle);
    let (settled, (deferred, lost, too_large)) = tokio::join!(cycle, defer);
    // Checked after the settled lines are in the report, so a failed reader does not lose them.
    let read = reading.await;
    let settled = settled?;

    summary.add(&settled.summary);
    summary.deferred += deferred as u64;
    summary.failed += too_large;
    summary.invalid += rows.invalid;
    summary.skipped += rows.duplicates;
    // After the file's own lines: the report is streamed, so it is in file order but for these.
    for line in &settled.report {
        rows.report.push(line).await;
    }

    let mut problems = Vec::new();
    if let Err(error) = read {
        problems.push(format!("the reading thread failed: {error}"));
    }
    if let Some(error) = &rows.failure {
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
    if !problems.is_empty() {
        return Err(incomplete(problems.join("; ")));
    }
    Ok(json!({
        "source": source,
        "rows": rows.rows,
        "invalid": rows.invalid,
        "duplicates": rows.duplicates,
        "provisioned_now": in_cycle,
        "deferred_to_queue": deferred,
        "summary": settled.summary,
    }))
}

/// Enqueues every remaining operation, deferred at the rate limit, a flush at a time;
/// returns how many were enqueued, how many could not be, and how many no message can carry
/// (reported failed with their line).
async fn defer_rest(
    state: &State,
    rows: &mut Rows<'_>,
    first_position: usize,
) -> (usize, usize, u64) {
    let (ops_per_request, rpm) = (
        state.config.max_operations,
        state.config.requests_per_minute,
    );
    let mut position = first_position;
    let mut batch: Vec<Requeue> = Vec::with_capacity(FLUSH_OPERATIONS);
    let (mut enqueued, mut lost, mut too_large) = (0, 0, 0);
    loop {
        let next = rows.next_operation().await;
        let end = next.is_none();
        if let Some(operation) = next {
            let delay = deferral_delay(position, ops_per_request, rpm);
            batch.push(Requeue { operation, delay });
            position += 1;
        }
        if batch.len() >= FLUSH_OPERATIONS || (end && !batch.is_empty()) {
            let not_enqueued = state.queue.enqueue(&batch).await;
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
    (enqueued, lost, too_large)
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
