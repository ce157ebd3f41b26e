//! SQS batches: producer messages (`{"users": [...]}`) and the function's own retry messages
//! (`{"version": 1, "operations": [...]}`), all operations of the batch in one cycle, and a
//! partial batch response naming only the messages whose work was not finished, reported or
//! re-enqueued.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use aws_lambda_events::event::sqs::SqsEvent;
use serde_json::{json, Value};

use super::{reports, HandlerError, Invocation, State};
use crate::aws::sqs::{RetryMessage, RETRY_MESSAGE_VERSION};
use crate::operation::Operation;
use crate::pipeline::{self, Summary};
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
    /// A retry message of a version this build does not read.
    #[error("retry message version {0} is not supported (this build reads version {RETRY_MESSAGE_VERSION})")]
    Version(u64),
    /// A retry message whose operations are malformed.
    #[error("the retry message is malformed: expected {{\"version\": 1, \"operations\": [...]}}")]
    Malformed,
}

/// What one message asks for: operations, and report lines for its invalid users.
#[derive(Debug, Default)]
pub(super) struct Work {
    pub operations: Vec<Operation>,
    pub invalid: Vec<ReportLine>,
}

/// Reads a body: a retry message is an object with `version` and without `users`; anything
/// else is read as a producer message.
pub(super) fn parse_body(body: Option<&str>, message_id: &str) -> Result<Work, BodyError> {
    let body = body
        .filter(|b| !b.trim().is_empty())
        .ok_or(BodyError::Empty)?;
    let value: Option<Value> = serde_json::from_str(body).ok();
    let retry = value
        .as_ref()
        .and_then(Value::as_object)
        .filter(|o| o.contains_key("version") && !o.contains_key("users"));
    if let Some(object) = retry {
        let version = object
            .get("version")
            .and_then(Value::as_u64)
            .ok_or(BodyError::Malformed)?;
        if version != u64::from(RETRY_MESSAGE_VERSION) {
            return Err(BodyError::Version(version));
        }
        let message: RetryMessage = value
            .and_then(|v| serde_json::from_value(v).ok())
            .ok_or(BodyError::Malformed)?;
        return Ok(Work {
            operations: message.operations,
            invalid: Vec::new(),
        });
    }
    let source = format!("sqs:{message_id}");
    let mut work = Work::default();
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
    let mut operations = Vec::new();
    let mut owners = Vec::new();
    // Report lines by source, each with the message that must be redelivered if it is not written.
    let mut report: BTreeMap<String, Vec<(ReportLine, usize)>> = BTreeMap::new();
    for (m, record) in event.records.iter().enumerate() {
        let id = ids[m].as_deref().unwrap_or("");
        let _span = tracing::info_span!("message", message_id = %id).entered();
        if id.is_empty() {
            tracing::error!(
                "an SQS record has no messageId: its failures cannot be reported for redelivery"
            );
        }
        match parse_body(record.body.as_deref(), id) {
            Ok(work) => {
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
                tracing::error!(%error, "unusable message: it fails and goes back to the queue (then its DLQ)");
                failed.insert(m);
            }
        }
    }
    let settled = pipeline::run_cycle(&state.engine, operations, deadline, &state.queue).await?;
    summary.add(&settled.summary);
    for &i in &settled.unsettled {
        failed.insert(owners[i]);
    }
    for (i, result) in settled.results.iter().enumerate() {
        if let Some(line) = pipeline::report_line(result) {
            report
                .entry(line.source.clone())
                .or_default()
                .push((line, owners[i]));
        }
    }
    for (source, entries) in report {
        let lines: Vec<ReportLine> = entries.iter().map(|(line, _)| line.clone()).collect();
        if let Err(error) = reports::write(state, &source, &invocation.request_id, &lines).await {
            tracing::error!(%error, source, "the report could not be written: its messages will be redelivered");
            failed.extend(entries.iter().map(|(_, m)| *m));
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

    #[test]
    fn producer_messages_give_operations_and_report_lines() {
        let body = r#"{"users": [{"email": "a@example.com", "first_name": "A", "last_name": "B"}, {"email": "x"}]}"#;
        let work = parse_body(Some(body), "m-1").unwrap();
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
        let mut op = parse_body(Some(producer), "m")
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
        let work = parse_body(Some(&body), "m-2").unwrap();
        assert_eq!(work.operations, vec![op]);
        assert_eq!(
            parse_body(Some(r#"{"version": 2, "operations": []}"#), "m").unwrap_err(),
            BodyError::Version(2)
        );
        assert_eq!(
            parse_body(Some(r#"{"version": 1, "operations": [1]}"#), "m").unwrap_err(),
            BodyError::Malformed
        );
        assert_eq!(
            parse_body(Some(r#"{"version": "x"}"#), "m").unwrap_err(),
            BodyError::Malformed
        );
    }

    #[test]
    fn unusable_bodies_are_errors_that_do_not_echo_the_body() {
        assert_eq!(parse_body(None, "m").unwrap_err(), BodyError::Empty);
        assert_eq!(parse_body(Some("  "), "m").unwrap_err(), BodyError::Empty);
        let err = parse_body(Some("secret@example.com"), "m").unwrap_err();
        assert!(matches!(err, BodyError::Producer(_)));
        assert!(!err.to_string().contains("secret"));
        assert!(matches!(
            parse_body(Some("{}"), "m").unwrap_err(),
            BodyError::Producer(_)
        ));
    }
}
