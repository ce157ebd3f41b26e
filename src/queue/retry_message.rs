//! The function's own retry message on the work queue — `{"version": 1, "operations":
//! [...]}`, operations with their attempt counts, source, line, time and last error — in one
//! place: its type and version, its packing into SQS messages of bounded size grouped by delay,
//! and its reading back, where nothing in it is trusted (anyone allowed to send to the queue
//! can write a body of that shape).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Requeue;
use crate::operation::Operation;
use crate::retry::MAX_DELAY;

/// The retry message format this build writes and reads.
pub const RETRY_MESSAGE_VERSION: u32 = 1;
/// Operations per retry message at most (one BulkRequest's worth).
pub const MAX_OPERATIONS_PER_MESSAGE: usize = 50;
/// The largest message SQS takes (body and attributes; this function sends no attributes),
/// and the most a queue's `MaximumMessageSize` can be: 1 MiB since August 2025.
pub const SQS_MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// A retry message body stays under this many bytes on a queue that takes 1 MiB messages.
pub const MAX_MESSAGE_BYTES: usize = with_margin(SQS_MAX_MESSAGE_BYTES);
/// The body bytes used of a size limit: 1/64 is kept as a safety margin (16 KiB of 1 MiB).
pub const fn with_margin(limit: usize) -> usize {
    limit - limit / 64
}
/// The function's own message: operations to send again, with their history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryMessage {
    /// Format version ([`RETRY_MESSAGE_VERSION`]).
    pub version: u32,
    /// The operations, attempt counts and last errors included.
    pub operations: Vec<Operation>,
}

/// One message to send: its body, its delay and the items (indices into the input) it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// The retry message's JSON.
    pub body: String,
    /// `DelaySeconds`.
    pub delay_seconds: u32,
    /// Indices of the requeued items in the body.
    pub items: Vec<usize>,
}

/// Whole seconds to delay an item: rounded up (never early), at most 900.
pub fn delay_seconds(delay: Duration) -> u32 {
    let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
    secs.min(MAX_DELAY.as_secs()) as u32
}

/// The retry message's text before its operations (the version written from the constant).
fn head() -> String {
    format!("{{\"version\":{RETRY_MESSAGE_VERSION},\"operations\":[")
}
/// The retry message's text after its operations.
const TAIL: &str = "]}";

/// An item no retry message can carry: which, and how large its message alone would be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooLarge {
    /// Index of the item in the input.
    pub index: usize,
    /// Bytes of a retry message holding only this item (0: it could not be serialized).
    pub bytes: usize,
}

impl TooLarge {
    /// Why the item is not enqueued, for its report line (no personal data).
    pub fn reason(&self, max_bytes: usize) -> String {
        format!(
            "its retry message would be {} bytes, more than the {max_bytes} bytes a message of \
             the work queue may hold, so it cannot be retried or deferred; shorten its longest \
             fields (title, department, display name...) and provision it again",
            self.bytes
        )
    }
}

/// Packs items into retry messages grouped by delay, each with at most
/// [`MAX_OPERATIONS_PER_MESSAGE`] operations and a body of at most `max_bytes`.
/// Returns the messages and the items too large for any message.
pub fn pack(items: &[Requeue], max_bytes: usize) -> (Vec<Packed>, Vec<TooLarge>) {
    let mut by_delay: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        by_delay
            .entry(delay_seconds(item.delay))
            .or_default()
            .push(i);
    }
    let head = head();
    let mut messages = Vec::new();
    let mut too_large = Vec::new();
    for (delay_seconds, indices) in by_delay {
        let mut body = head.clone();
        let mut carried: Vec<usize> = Vec::new();
        for i in indices {
            let Ok(json) = serde_json::to_string(&items[i].operation) else {
                too_large.push(TooLarge { index: i, bytes: 0 });
                continue;
            };
            let alone = head.len() + json.len() + TAIL.len();
            if alone > max_bytes {
                too_large.push(TooLarge {
                    index: i,
                    bytes: alone,
                });
                continue;
            }
            // Never an empty message: an item that fits alone starts a new one.
            let full = !carried.is_empty()
                && (carried.len() == MAX_OPERATIONS_PER_MESSAGE
                    || body.len() + 1 + json.len() + TAIL.len() > max_bytes);
            if full {
                body.push_str(TAIL);
                messages.push(Packed {
                    body: std::mem::replace(&mut body, head.clone()),
                    delay_seconds,
                    items: std::mem::take(&mut carried),
                });
            }
            if !carried.is_empty() {
                body.push(',');
            }
            body.push_str(&json);
            carried.push(i);
        }
        if !carried.is_empty() {
            body.push_str(TAIL);
            messages.push(Packed {
                body,
                delay_seconds,
                items: carried,
            });
        }
    }
    (messages, too_large)
}

/// Why a body shaped like a retry message cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// A version this build does not read.
    #[error("retry message version {0} is not supported (this build reads version {RETRY_MESSAGE_VERSION})")]
    Version(u64),
    /// Not the retry message's shape.
    #[error("the retry message is malformed: expected {{\"version\": {RETRY_MESSAGE_VERSION}, \"operations\": [...]}}")]
    Malformed,
}

/// Whether a JSON body is shaped like a retry message (a `version`, no `users`).
pub fn is_retry_message(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|o| o.contains_key("version") && !o.contains_key("users"))
}

/// Reads a retry message: each operation checked ([`check_operation`]), those that fail given
/// back with why. `max_attempts` bounds the attempt counts it claims.
pub fn read(value: Value, max_attempts: u32) -> Result<Vec<Result<Operation, String>>, ReadError> {
    let version = value
        .get("version")
        .and_then(Value::as_u64)
        .ok_or(ReadError::Malformed)?;
    if version != u64::from(RETRY_MESSAGE_VERSION) {
        return Err(ReadError::Version(version));
    }
    let message: RetryMessage = serde_json::from_value(value).map_err(|_| ReadError::Malformed)?;
    let now = crate::operation::unix_now();
    Ok(message
        .operations
        .into_iter()
        .enumerate()
        .map(|(index, op)| check_operation(op, index, max_attempts, now))
        .collect())
}

/// Longest `source` a retry message's operation may give: `s3://`, a bucket name (63) and an
/// S3 key (1024), or `sqs:` and a message id (100).
const MAX_SOURCE_BYTES: usize = 1100;
/// Characters of a retry message's `last_error` kept (it is quoted in a report line).
const MAX_LAST_ERROR_CHARS: usize = 1000;
/// Longest resource id a retry message may carry (SCIM ids are UUIDs or shorter in practice).
const MAX_RESOURCE_ID_BYTES: usize = 256;
/// Waits a retry message may claim: beyond 31 the backoff is at its cap anyway.
const MAX_WAITS: u32 = 64;

/// Whether a carried resource id can be used as a path segment: not empty, bounded, no
/// whitespace or control characters, not a dot segment (`.`/`..` are not escaped and would
/// name another path).
fn usable_resource_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_RESOURCE_ID_BYTES
        && id != "."
        && id != ".."
        && !id.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// Checks one operation of a retry message as if it came from a producer: anyone allowed to
/// send to the queue can write a body shaped like a retry message. The user is validated like
/// a producer's; `attempt` is capped so that one more attempt is the last (it cannot overflow
/// or buy extra retries); `first_seen` cannot be in the future, and when missing (0) the age
/// limit counts from now; `waits` is bounded; `last_error` is shortened; a `resource_id` that
/// cannot be a path segment is dropped (it is only a hint: the user is looked up instead).
/// An error names the operation by its index and never quotes the user.
pub fn check_operation(
    mut op: Operation,
    index: usize,
    max_attempts: u32,
    now: u64,
) -> Result<Operation, String> {
    let problem = |what: String| format!("operations[{index}]: {what}");
    op.user = crate::sources::message::validate_user(&op.user)
        .map_err(|error| problem(error.to_string()))?;
    let source_ok = (op.source.starts_with("s3://") || op.source.starts_with("sqs:"))
        && op.source.len() <= MAX_SOURCE_BYTES
        && !op.source.chars().any(char::is_control);
    if !source_ok {
        return Err(problem(format!(
            "source is not an s3:// or sqs: origin of at most {MAX_SOURCE_BYTES} bytes without \
             control characters"
        )));
    }
    if op.row == Some(0) {
        return Err(problem("row 0 is not a line number".into()));
    }
    if op
        .run
        .as_deref()
        .is_some_and(|run| !crate::runs::valid_run_id(run))
    {
        return Err(problem(format!(
            "run is not a run id (letters, digits, '-', '_', '.'; at most {} characters)",
            crate::runs::MAX_RUN_ID_CHARS
        )));
    }
    let last_attempt = max_attempts.saturating_sub(1);
    if op.attempt > last_attempt {
        tracing::warn!(
            operation = index,
            attempt = op.attempt,
            max_attempts,
            "a retry message claims more attempts than MAX_ATTEMPTS allows: one more is the last"
        );
        op.attempt = last_attempt;
    }
    op.first_seen = match op.first_seen {
        0 => now,
        seen => seen.min(now),
    };
    op.waits = op.waits.min(MAX_WAITS);
    if op
        .resource_id
        .as_deref()
        .is_some_and(|id| !usable_resource_id(id))
    {
        tracing::warn!(
            operation = index,
            "a retry message carries a resource id that cannot be used: the user is looked up instead"
        );
        op.resource_id = None;
    }
    // A time in the future would let a forged message overrule every later change of the user.
    op.source_time = op.source_time.map(|t| t.min(now.saturating_add(1) * 1000));
    if let Some(error) = &mut op.last_error {
        if let Some((cut, _)) = error.char_indices().nth(MAX_LAST_ERROR_CHARS) {
            error.truncate(cut);
        }
    }
    Ok(op)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(name: &str, delay_ms: u64, padding: usize) -> Requeue {
        let mut user = crate::user::sample(name);
        user.title = (padding > 0).then(|| "x".repeat(padding));
        Requeue {
            operation: Operation::new(user, "test", Some(2)),
            delay: Duration::from_millis(delay_ms),
        }
    }

    #[test]
    fn carried_ids_waits_and_first_reads_are_checked() {
        let now = 1_800_000_000;
        let mut op = Operation::new(crate::user::sample("ada@example.com"), "s3://b/k", Some(2));
        op.first_seen = 0;
        op.waits = u32::MAX;
        op.resource_id = Some("2819c223-7f76-453a-919d-413861904646".into());
        let checked = check_operation(op.clone(), 0, 8, now).unwrap();
        assert_eq!(
            checked.first_seen, now,
            "a missing first read starts the age now"
        );
        assert_eq!(checked.waits, MAX_WAITS);
        assert_eq!(checked.resource_id, op.resource_id, "a usable id is kept");
        for bad in [
            "",
            ".",
            "..",
            "a b",
            "a\nb",
            &"x".repeat(MAX_RESOURCE_ID_BYTES + 1),
        ] {
            op.resource_id = Some(bad.to_string());
            let checked = check_operation(op.clone(), 0, 8, now).expect("still provisioned");
            assert_eq!(checked.resource_id, None, "{bad:?} is dropped");
        }
        // Ids that are unusual but harmless once escaped are kept.
        for odd in ["a/../b", "ü-1", "42", "%2e%2e"] {
            op.resource_id = Some(odd.to_string());
            let checked = check_operation(op.clone(), 0, 8, now).unwrap();
            assert_eq!(checked.resource_id.as_deref(), Some(odd));
        }
    }

    #[test]
    fn delays_round_up_and_stop_at_900() {
        assert_eq!(delay_seconds(Duration::ZERO), 0);
        assert_eq!(delay_seconds(Duration::from_millis(1)), 1);
        assert_eq!(delay_seconds(Duration::from_millis(2000)), 2);
        assert_eq!(delay_seconds(Duration::from_millis(2001)), 3);
        assert_eq!(delay_seconds(Duration::from_secs(5000)), 900);
    }

    #[test]
    fn packs_by_delay_fifty_at_most_and_round_trips() {
        let mut items: Vec<Requeue> = (0..120)
            .map(|i| item(&format!("u{i}@x"), 1500, 0))
            .collect();
        items.push(item("late@x", 60_000, 0));
        let (messages, lost) = pack(&items, MAX_MESSAGE_BYTES);
        assert!(lost.is_empty());
        let sizes: Vec<(u32, usize)> = messages
            .iter()
            .map(|m| (m.delay_seconds, m.items.len()))
            .collect();
        assert_eq!(sizes, vec![(2, 50), (2, 50), (2, 20), (60, 1)]);
        let mut seen: Vec<usize> = Vec::new();
        for m in &messages {
            let parsed: RetryMessage = serde_json::from_str(&m.body).unwrap();
            assert_eq!(parsed.version, RETRY_MESSAGE_VERSION);
            let ops: Vec<Operation> = m
                .items
                .iter()
                .map(|&i| items[i].operation.clone())
                .collect();
            assert_eq!(parsed.operations, ops);
            seen.extend(&m.items);
        }
        seen.sort_unstable();
        assert_eq!(seen, (0..items.len()).collect::<Vec<_>>());
    }

    #[test]
    fn messages_stay_under_the_size_limit_and_huge_items_are_refused() {
        // 40 KB items: six to a 256 KiB message (the old limit allowed four), and one of
        // 300 KB, which only the 1 MiB limit carries.
        let mut items: Vec<Requeue> = (0..12)
            .map(|i| item(&format!("u{i}@x"), 0, 40_000))
            .collect();
        items.push(item("big@x", 0, 300_000));
        items.push(item("huge@x", 0, MAX_MESSAGE_BYTES));
        let (messages, too_large) = pack(&items, MAX_MESSAGE_BYTES);
        assert_eq!(too_large.len(), 1);
        assert_eq!(too_large[0].index, 13);
        assert!(too_large[0].bytes > MAX_MESSAGE_BYTES);
        let reason = too_large[0].reason(MAX_MESSAGE_BYTES);
        assert!(reason.contains(&too_large[0].bytes.to_string()), "{reason}");
        assert!(reason.contains("1032192 bytes"), "{reason}");
        assert!(!reason.contains("huge@x"), "{reason}");
        assert!(messages.iter().all(|m| m.body.len() <= MAX_MESSAGE_BYTES));
        assert_eq!(messages.iter().map(|m| m.items.len()).sum::<usize>(), 13);
        // 12 x 40 KB + 300 KB: one message of 1 MiB holds all of them.
        assert_eq!(messages.len(), 1);

        // On a queue that takes 256 KiB, the 300 KB item cannot go and the others need two.
        let small = with_margin(256 * 1024);
        let (messages, too_large) = pack(&items, small);
        let refused: Vec<usize> = too_large.iter().map(|t| t.index).collect();
        assert_eq!(refused, vec![12, 13]);
        assert!(messages.iter().all(|m| m.body.len() <= small));
        assert_eq!(messages.iter().map(|m| m.items.len()).sum::<usize>(), 12);
        assert_eq!(messages.len(), 2);
    }

    #[test]
    fn an_item_exactly_at_the_limit_goes_alone_and_no_message_is_empty() {
        let items = vec![item("a@x", 0, 0), item("b@x", 0, 0), item("c@x", 0, 0)];
        let alone = |i: usize| {
            head().len() + serde_json::to_string(&items[i].operation).unwrap().len() + TAIL.len()
        };
        // Room for one item exactly, never for two.
        let (messages, too_large) = pack(&items, alone(0));
        assert!(too_large.is_empty());
        assert_eq!(messages.len(), 3);
        assert!(messages.iter().all(|m| m.items.len() == 1));
        for m in &messages {
            let parsed: RetryMessage = serde_json::from_str(&m.body).unwrap();
            assert_eq!(parsed.operations.len(), 1);
        }
        let (messages, too_large) = pack(&items, alone(0) - 1);
        assert!(messages.is_empty());
        assert_eq!(too_large.len(), 3);
    }
}
