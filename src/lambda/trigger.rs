//! Which trigger sent an event, told from its shape: an SQS batch, an S3 notification (or S3's
//! test event) or an EventBridge event.

use serde_json::Value;

use super::error::HandlerError;

/// Which trigger sent an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trigger {
    Sqs,
    S3,
    S3Test,
    EventBridge,
}

/// Recognises the event's shape from its top-level keys (and the records' `eventSource`).
pub(super) fn trigger(event: &Value) -> Result<Trigger, HandlerError> {
    let Some(object) = event.as_object() else {
        return Err(HandlerError::BadEvent(
            "the event is not a JSON object".into(),
        ));
    };
    if let Some(records) = object.get("Records").and_then(Value::as_array) {
        let source = records
            .first()
            .and_then(|r| r.get("eventSource"))
            .and_then(Value::as_str);
        match source {
            Some("aws:sqs") => return Ok(Trigger::Sqs),
            Some("aws:s3") => return Ok(Trigger::S3),
            _ => {}
        }
    }
    if object.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Trigger::S3Test);
    }
    if object.contains_key("detail-type") && object.get("detail").is_some_and(Value::is_object) {
        return Ok(Trigger::EventBridge);
    }
    // Keys only: values may hold personal data.
    let mut keys: Vec<String> = object.keys().cloned().collect();
    keys.sort();
    Err(HandlerError::UnknownEvent(keys))
}

#[cfg(test)]
mod tests {
    use super::super::{eventbridge, s3, sqs};
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_recognised_by_shape() {
        let sqs = json!({"Records": [{"messageId": "1", "eventSource": "aws:sqs", "body": "{}"}]});
        assert_eq!(trigger(&sqs).unwrap(), Trigger::Sqs);
        let s3 = json!({"Records": [{"eventSource": "aws:s3", "s3": {}}]});
        assert_eq!(trigger(&s3).unwrap(), Trigger::S3);
        let test = json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"});
        assert_eq!(trigger(&test).unwrap(), Trigger::S3Test);
        let eb = json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {"bucket": "b", "key": "k"}});
        assert_eq!(trigger(&eb).unwrap(), Trigger::EventBridge);
    }

    #[test]
    fn the_sample_events_are_real_shaped() {
        let sample = |text: &str| -> Value { serde_json::from_str(text).unwrap() };
        let s3 = sample(include_str!("../../events/s3-put.json"));
        assert_eq!(trigger(&s3).unwrap(), Trigger::S3);
        let parsed: aws_lambda_events::event::s3::S3Event = serde_json::from_value(s3).unwrap();
        let key = parsed.records[0].s3.object.key.as_deref().unwrap();
        assert_eq!(s3::decode_key(key), "incoming/hr export.csv");
        for (text, users, invalid) in [
            (include_str!("../../events/sqs-producer-batch.json"), 3, 1),
            (include_str!("../../events/sqs-retry-batch.json"), 2, 0),
        ] {
            let event = sample(text);
            assert_eq!(trigger(&event).unwrap(), Trigger::Sqs);
            let parsed: aws_lambda_events::event::sqs::SqsEvent =
                serde_json::from_value(event).unwrap();
            let (mut ops, mut bad) = (0, 0);
            for record in &parsed.records {
                let work = sqs::parse_body(record.body.as_deref(), "id", 8).unwrap();
                ops += work.operations.len();
                bad += work.invalid.len();
            }
            assert_eq!((ops, bad), (users, invalid));
        }
        for text in [
            include_str!("../../events/eventbridge-rerun.json"),
            include_str!("../../events/eventbridge-rerun-prefix.json"),
        ] {
            let event = sample(text);
            assert_eq!(trigger(&event).unwrap(), Trigger::EventBridge);
            assert!(eventbridge::target(&event["detail"]).is_ok());
        }
    }

    #[test]
    fn unknown_events_name_their_keys_only() {
        let err = trigger(&json!({"hello": "secret@example.com", "Records": []})).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("[Records, hello]"), "{text}");
        assert!(!text.contains("secret"), "{text}");
        assert!(matches!(
            trigger(&json!([1])),
            Err(HandlerError::BadEvent(_))
        ));
    }
}
