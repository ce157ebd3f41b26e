//! SQS batches: producer messages (`{"users": [...]}`) and the function's own retry messages
//! (`{"version": 1, "operations": [...]}`), all operations of the batch in one cycle, and a
//! partial batch response naming only the messages whose work was not finished, reported or
//! re-enqueued.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use aws_lambda_events::event::sqs::SqsEvent;
use serde_json::{json, Value};

use super::{continuation, reports, HandlerError, Invocation, State};
use crate::operation::Operation;
use crate::pipeline::{self, Summary};
use crate::queue::retry_message;
use crate::queue::sqs::Redrive;
use crate::report::ReportLine;
use crate::sources::parse_message;

/// A message body that cannot be used at all: the message fails (and reaches the DLQ by redrive).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum BodyError {
    /// The message has no body.
    #[error("the message has no body")]
    Empty,
    /// A producer message that cannot be read.
    #[error(transparent)]
    Producer(#[from] crate::sources::MessageError),
    /// A retry message that cannot be read.
    #[error(transparent)]
    Retry(#[from] retry_message::ReadError),
    /// A continuation message that cannot be used.
    #[error(transparent)]
    Continuation(#[from] super::continuation::ContinuationError),
}

/// What one message asks for: operations, and report lines for its invalid users.
#[derive(Debug, Default)]
pub(super) struct Work {
    pub operations: Vec<Operation>,
    pub invalid: Vec<ReportLine>,
    /// From a producer (its operations take the message's `SentTimestamp` as their time),
    /// not from the function's own retry message (whose operations keep theirs).
    pub from_producer: bool,
}

/// Report status of a message whose body cannot be used (it ends in the dead-letter queue).
pub(super) const POISON: &str = "poison";

/// A message whose body cannot be used: which one, how often delivered, and why.
#[derive(Debug)]
pub(super) struct Poison {
    /// Index of the record in the batch.
    pub index: usize,
    /// `ApproximateReceiveCount`, when the event carries it.
    pub receive_count: Option<u32>,
    /// Why the body cannot be used.
    pub error: BodyError,
}

/// The report line of a poison message on its last delivery (`sqs:<message id>`, status
/// [`POISON`]); the reason never quotes the body.
pub(super) fn poison_line(message_id: &str, poison: &Poison, redrive: Redrive) -> ReportLine {
    let deliveries = poison
        .receive_count
        .map_or_else(|| "an unknown number of".to_string(), |n| n.to_string());
    let fate = match redrive {
        Redrive::AfterReceives(max) => format!(
            "after {deliveries} deliveries (maxReceiveCount {max}) SQS moves it to the dead-letter queue"
        ),
        Redrive::Never => "the work queue has no dead-letter queue: SQS redelivers it until its retention period ends".to_string(),
        Redrive::Unknown => format!(
            "delivered {deliveries} times; it goes to the dead-letter queue once its maxReceiveCount is reached"
        ),
    };
    ReportLine::new(
        format!("sqs:{message_id}"),
        POISON,
        format!("the message cannot be used: {}; {fate}", poison.error),
    )
}

/// Reads a body: a retry message is an object with `version` and without `users`; anything
/// else is read as a producer message. `max_attempts` bounds a retry message's attempt counts.
pub(super) fn parse_body(
    body: Option<&str>,
    message_id: &str,
    max_attempts: u32,
) -> Result<Work, BodyError> {
    let body = body
        .filter(|b| !b.trim().is_empty())
        .ok_or(BodyError::Empty)?;
    let value: Option<Value> = serde_json::from_str(body).ok();
    if let Some(value) = value.filter(retry_message::is_retry_message) {
        let mut work = Work::default();
        for checked in retry_message::read(value, max_attempts)? {
            match checked {
                Ok(op) => work.operations.push(op),
                Err(reason) => work.invalid.push(ReportLine::new(
                    format!("sqs:{message_id}"),
                    "invalid",
                    reason,
                )),
            }
        }
        return Ok(work);
    }
    let source = format!("sqs:{message_id}");
    let mut work = Work {
        from_producer: true,
        ..Work::default()
    };
    for user in parse_message(body)? {
        match user {
            Ok(user) => work
                .operations
                .push(Operation::new(user, source.clone(), None)),
            Err(error) => work.invalid.push(ReportLine::new(
                source.clone(),
                "invalid",
                error.to_string(),
            )),
        }
    }
    Ok(work)
}

/// Writes a `poison` report line for each poison message on its last delivery before the
/// dead-letter queue. A report that cannot be written is logged: the message fails anyway.
async fn report_poison(
    state: &State,
    invocation: &Invocation,
    records: &[aws_lambda_events::event::sqs::SqsMessage],
    ids: &[Option<String>],
    poison: &[Poison],
) {
    let mut redrive = None;
    for p in poison {
        let Some(id) = ids[p.index].as_deref() else {
            continue;
        };
        let queue_redrive = match records[p.index].event_source_arn.as_deref() {
            Some(arn) if !state.queue.is_queue_arn(arn) => Redrive::Unknown,
            _ => match redrive {
                Some(known) => known,
                None => *redrive.insert(state.queue.redrive().await),
            },
        };
        if !queue_redrive.is_last_delivery(p.receive_count) {
            continue;
        }
        let line = poison_line(id, p, queue_redrive);
        let source = line.source.clone();
        if let Err(error) =
            reports::write_for_message(state, &source, &invocation.request_id, &[line]).await
        {
            tracing::error!(message_id = %id, %error, "the poison message's report could not be written; the log line above is its only record");
        }
    }
}

/// Handles an SQS batch; returns `{"batchItemFailures": [{"itemIdentifier": id}, ...]}`.
pub(super) async fn handle(
    state: &State,
    invocation: &Invocation,
    deadline: Instant,
    event: Value,
    summary: &mut Summary,
) -> Result<Value, HandlerError> {
    let event: SqsEvent = serde_json::from_value(event).map_err(|_| {
        HandlerError::BadEvent("not an SQS event: a record has a field of the wrong type".into())
    })?;
    let ids: Vec<Option<String>> = event
        .records
        .iter()
        .map(|r| r.message_id.clone().filter(|id| !id.is_empty()))
        .collect();
    let mut failed: BTreeSet<usize> = BTreeSet::new();
    let mut poison: Vec<Poison> = Vec::new();
    let mut operations = Vec::new();
    let mut owners = Vec::new();
    // Report lines by source, each with the message that must be redelivered if it is not written.
    let mut report: BTreeMap<String, Vec<(ReportLine, usize)>> = BTreeMap::new();
    // Files that an earlier invocation could not finish, by record.
    let mut continuations = Vec::new();
    for (m, record) in event.records.iter().enumerate() {
        let id = ids[m].as_deref().unwrap_or("");
        let _span = tracing::info_span!("message", message_id = %id).entered();
        if id.is_empty() {
            tracing::error!(
                "an SQS record has no messageId: its failures cannot be reported for redelivery"
            );
        }
        let known_bucket = state.config.report_bucket.as_deref();
        let parsed = match continuation::recognise(record.body.as_deref(), known_bucket) {
            Some(Ok(checkpoint)) => {
                continuations.push((m, checkpoint));
                continue;
            }
            Some(Err(error)) => Err(BodyError::from(error)),
            None => parse_body(record.body.as_deref(), id, state.config.retry.max_attempts),
        };
        match parsed {
            Ok(mut work) => {
                if work.from_producer {
                    // When the producer sent it: an older message never overwrites a newer one.
                    let sent = record
                        .attributes
                        .get("SentTimestamp")
                        .and_then(|t| t.parse::<u64>().ok());
                    for op in &mut work.operations {
                        op.source_time = sent;
                    }
                }
                summary.invalid += work.invalid.len() as u64;
                for line in work.invalid {
                    report
                        .entry(line.source.clone())
                        .or_default()
                        .push((line, m));
                }
                owners.extend(std::iter::repeat_n(m, work.operations.len()));
                operations.extend(work.operations);
            }
            Err(error) => {
                let receive_count = record
                    .attributes
                    .get("ApproximateReceiveCount")
                    .and_then(|n| n.parse::<u32>().ok());
                // The id and count as fields of the line itself: spans are left out of the
                // output when the log level is above info.
                tracing::error!(
                    message_id = %id,
                    receive_count,
                    reason = %error,
                    "poison message: its body cannot be used; it fails and goes back to the queue, then to its dead-letter queue"
                );
                failed.insert(m);
                poison.push(Poison {
                    index: m,
                    receive_count,
                    error,
                });
            }
        }
    }
    // Before the cycle, so that a crash during the cycle does not lose the report; written on
    // the last delivery only, not at every redelivery.
    report_poison(state, invocation, &event.records, &ids, &poison).await;
    let settled = pipeline::run_cycle(&state.engine, operations, deadline, &state.queue).await?;
    summary.add(&settled.summary);
    for &i in &settled.unsettled {
        failed.insert(owners[i]);
    }
    // The runs whose lines go into each source's report.
    let mut report_runs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (i, result) in settled.results.iter().enumerate() {
        if let Some(line) = pipeline::report_line(result) {
            if let Some(run) = &result.operation.run {
                report_runs
                    .entry(line.source.clone())
                    .or_default()
                    .insert(run.clone());
            }
            report
                .entry(line.source.clone())
                .or_default()
                .push((line, owners[i]));
        }
    }
    let mut run_reports = BTreeMap::new();
    for (source, entries) in report {
        let lines: Vec<ReportLine> = entries.iter().map(|(line, _)| line.clone()).collect();
        // Never to a bucket named in a message: REPORT_BUCKET, or the log.
        match reports::write_for_message(state, &source, &invocation.request_id, &lines).await {
            Ok(Some(address)) => {
                for run in report_runs.remove(&source).unwrap_or_default() {
                    run_reports.insert(run, address.clone());
                }
            }
            Ok(None) => {}
            Err(error) => {
                tracing::error!(%error, source, "the report could not be written: its messages will be redelivered");
                failed.extend(entries.iter().map(|(_, m)| *m));
            }
        }
    }
    // Rows of runs that settled here are counted for their run; if that fails, their messages
    // come again (settling is idempotent per row).
    let (rows, requests) = super::runs::of_results(&settled.results, settled.summary.requests);
    if let Err(problem) = super::runs::settle(state, rows, &requests, &run_reports).await {
        tracing::error!(%problem, "the runs' progress could not be recorded: their messages will be redelivered");
        for (i, result) in settled.results.iter().enumerate() {
            if result.operation.run.is_some() {
                failed.insert(owners[i]);
            }
        }
    }
    // After the batch's own work: each continues its file with the time left, and leaves
    // another continuation if that is not enough.
    for (m, checkpoint) in continuations {
        let result = super::s3::continue_from(state, invocation, deadline, &checkpoint, summary);
        if let Err(error) = result.await {
            tracing::error!(message_id = ids[m].as_deref().unwrap_or(""), %error, "the file's continuation failed: the message will be redelivered");
            failed.insert(m);
        }
    }
    // Never an empty identifier: SQS would fail the whole batch.
    let failures: Vec<Value> = failed
        .iter()
        .filter_map(|&m| ids[m].as_deref())
        .map(|id| json!({"itemIdentifier": id}))
        .collect();
    if !failures.is_empty() {
        tracing::warn!(
            messages = failures.len(),
            "messages listed in batchItemFailures"
        );
    }
    Ok(json!({ "batchItemFailures": failures }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::retry_message::RetryMessage;

    #[test]
    fn producer_messages_give_operations_and_report_lines() {
        let body = r#"{"users": [{"email": "a@example.com", "first_name": "A", "last_name": "B"}, {"email": "x"}]}"#;
        let work = parse_body(Some(body), "m-1", 8).unwrap();
        assert_eq!(work.operations.len(), 1);
        assert_eq!(work.operations[0].source, "sqs:m-1");
        assert_eq!(work.invalid.len(), 1);
        assert_eq!(work.invalid[0].source, "sqs:m-1");
        assert_eq!(work.invalid[0].status, "invalid");
        assert!(
            work.invalid[0].reason.starts_with("users[1]"),
            "{}",
            work.invalid[0].reason
        );
    }

    #[test]
    fn retry_messages_round_trip_and_other_versions_fail() {
        let producer =
            r#"{"users": [{"email": "a@example.com", "first_name": "A", "last_name": "B"}]}"#;
        let mut op = parse_body(Some(producer), "m", 8)
            .unwrap()
            .operations
            .remove(0);
        op.attempt = 3;
        op.last_error = Some("503: unavailable".into());
        let body = serde_json::to_string(&RetryMessage {
            version: 1,
            operations: vec![op.clone()],
        })
        .unwrap();
        let work = parse_body(Some(&body), "m-2", 8).unwrap();
        assert_eq!(work.operations, vec![op]);
        assert_eq!(
            parse_body(Some(r#"{"version": 2, "operations": []}"#), "m", 8).unwrap_err(),
            BodyError::Retry(retry_message::ReadError::Version(2))
        );
        assert_eq!(
            parse_body(Some(r#"{"version": 1, "operations": [1]}"#), "m", 8).unwrap_err(),
            BodyError::Retry(retry_message::ReadError::Malformed)
        );
        assert_eq!(
            parse_body(Some(r#"{"version": "x"}"#), "m", 8).unwrap_err(),
            BodyError::Retry(retry_message::ReadError::Malformed)
        );
    }

    /// A retry message's body with one operation whose fields `edit` changes.
    fn forged(edit: impl FnOnce(&mut Value)) -> String {
        let mut op = json!({
            "user": {"user_name": "a@example.com", "email": "a@example.com", "first_name": "A",
                     "last_name": "B", "active": true},
            "source": "s3://scim-uploads/incoming/x.csv", "row": 7, "attempt": 2,
        });
        edit(&mut op);
        json!({"version": 1, "operations": [op]}).to_string()
    }

    #[test]
    fn retry_operations_are_validated_like_producer_users() {
        let work = parse_body(Some(&forged(|_| {})), "m", 8).unwrap();
        assert_eq!((work.operations.len(), work.invalid.len()), (1, 0));
        assert_eq!(work.operations[0].attempt, 2);
        assert_eq!(work.operations[0].row, Some(7));

        for (edit, expected) in [
            (
                forged(|op| op["user"]["email"] = json!("secret.person")),
                "operations[0]: email \"s***",
            ),
            (
                forged(|op| op["user"]["last_name"] = json!("  ")),
                "operations[0]: last_name is empty",
            ),
            (
                forged(|op| op["user"]["user_name"] = json!("a@example.com\r\nx")),
                "operations[0]: user_name",
            ),
            (
                forged(|op| op["source"] = json!("/etc/passwd")),
                "operations[0]: source is not",
            ),
            (
                forged(|op| op["source"] = json!(format!("s3://b/{}", "k".repeat(2000)))),
                "operations[0]: source is not",
            ),
            (
                forged(|op| op["source"] = json!("sqs:a\nb")),
                "operations[0]: source is not",
            ),
            (forged(|op| op["row"] = json!(0)), "operations[0]: row 0"),
        ] {
            let work = parse_body(Some(&edit), "m-9", 8).unwrap();
            assert!(work.operations.is_empty(), "{edit}");
            assert_eq!(work.invalid.len(), 1, "{edit}");
            let line = &work.invalid[0];
            assert_eq!(
                (line.source.as_str(), line.status.as_str()),
                ("sqs:m-9", "invalid")
            );
            assert!(line.reason.starts_with(expected), "{}", line.reason);
            assert!(!line.reason.contains("secret.person"), "{}", line.reason);
        }
    }

    #[test]
    fn retry_operation_numbers_are_bounded() {
        let body = forged(|op| {
            op["attempt"] = json!(u32::MAX);
            op["first_seen"] = json!(u64::MAX);
            op["last_error"] = json!("e".repeat(5000));
        });
        let op = parse_body(Some(&body), "m", 8)
            .unwrap()
            .operations
            .remove(0);
        assert_eq!(op.attempt, 7, "one more attempt is the last");
        assert!(op.first_seen <= crate::operation::unix_now());
        assert_eq!(op.last_error.map(|e| e.len()), Some(1000));
        let op = parse_body(Some(&body), "m", 1)
            .unwrap()
            .operations
            .remove(0);
        assert_eq!(op.attempt, 0);
        // Beyond what the field can hold: the message is malformed.
        let body = forged(|op| op["attempt"] = json!(u64::from(u32::MAX) + 1));
        assert_eq!(
            parse_body(Some(&body), "m", 8).unwrap_err(),
            BodyError::Retry(retry_message::ReadError::Malformed)
        );
    }

    #[test]
    fn poison_lines_say_why_and_where_the_message_goes() {
        let error = parse_body(Some("secret@example.com"), "m", 8).unwrap_err();
        let poison = Poison {
            index: 0,
            receive_count: Some(5),
            error,
        };
        let line = poison_line("0f1e", &poison, Redrive::AfterReceives(5));
        assert_eq!(line.source, "sqs:0f1e");
        assert_eq!(line.status, POISON);
        assert_eq!(line.row, None);
        assert_eq!(line.user_name, None);
        assert!(line.reason.contains("not valid JSON"), "{}", line.reason);
        assert!(
            line.reason
                .contains("after 5 deliveries (maxReceiveCount 5)"),
            "{}",
            line.reason
        );
        assert!(!line.reason.contains("secret"), "{}", line.reason);
        let version = Poison {
            index: 0,
            receive_count: None,
            error: parse_body(Some(r#"{"version": 99, "operations": []}"#), "m", 8).unwrap_err(),
        };
        let line = poison_line("x", &version, Redrive::Never);
        assert!(line.reason.contains("version 99"), "{}", line.reason);
        assert!(
            line.reason.contains("no dead-letter queue"),
            "{}",
            line.reason
        );
    }

    #[test]
    fn unusable_bodies_are_errors_that_do_not_echo_the_body() {
        assert_eq!(parse_body(None, "m", 8).unwrap_err(), BodyError::Empty);
        assert_eq!(
            parse_body(Some("  "), "m", 8).unwrap_err(),
            BodyError::Empty
        );
        let err = parse_body(Some("secret@example.com"), "m", 8).unwrap_err();
        assert!(matches!(err, BodyError::Producer(_)));
        assert!(!err.to_string().contains("secret"));
        assert!(matches!(
            parse_body(Some("{}"), "m", 8).unwrap_err(),
            BodyError::Producer(_)
        ));
    }
}
