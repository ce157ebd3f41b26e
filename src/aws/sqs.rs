//! The work queue on SQS: retryable and deferred operations go back as retry messages
//! `{"version": 1, "operations": [...]}` with a per-message `DelaySeconds`.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::operation::Operation;
use crate::pipeline::{Requeue, WorkQueue};
use crate::retry::MAX_DELAY;

/// The retry message format this build writes and reads.
pub const RETRY_MESSAGE_VERSION: u32 = 1;
/// Operations per retry message at most (one BulkRequest's worth).
pub const MAX_OPERATIONS_PER_MESSAGE: usize = 50;
/// A retry message body stays under this many bytes (SQS allows 256 KiB; headroom kept).
pub const MAX_MESSAGE_BYTES: usize = 200 * 1024;
/// Entries per SendMessageBatch call (the SQS limit).
const MAX_BATCH_ENTRIES: usize = 10;
/// Total body bytes per SendMessageBatch call (the classic SQS limit).
const MAX_BATCH_BYTES: usize = 256 * 1024;
/// Retries of entries SQS lists as failed (or of a whole call that failed).
const SEND_RETRIES: u32 = 3;

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

/// Packs items into retry messages grouped by delay, each with at most
/// [`MAX_OPERATIONS_PER_MESSAGE`] operations and under [`MAX_MESSAGE_BYTES`].
/// Returns the messages and the indices of items too large for any message.
pub fn pack(items: &[Requeue]) -> (Vec<Packed>, Vec<usize>) {
    const HEAD: &str = "{\"version\":1,\"operations\":[";
    const TAIL: &str = "]}";
    let mut by_delay: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        by_delay
            .entry(delay_seconds(item.delay))
            .or_default()
            .push(i);
    }
    let mut messages = Vec::new();
    let mut too_large = Vec::new();
    for (delay_seconds, indices) in by_delay {
        let mut body = String::from(HEAD);
        let mut carried: Vec<usize> = Vec::new();
        for i in indices {
            let Ok(json) = serde_json::to_string(&items[i].operation) else {
                too_large.push(i);
                continue;
            };
            if HEAD.len() + json.len() + TAIL.len() >= MAX_MESSAGE_BYTES {
                too_large.push(i);
                continue;
            }
            let full = carried.len() == MAX_OPERATIONS_PER_MESSAGE
                || body.len() + 1 + json.len() + TAIL.len() >= MAX_MESSAGE_BYTES;
            if full {
                body.push_str(TAIL);
                messages.push(Packed {
                    body: std::mem::replace(&mut body, String::from(HEAD)),
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

/// Splits messages into SendMessageBatch calls: at most 10 entries and 256 KiB each.
fn batches(messages: &[Packed]) -> Vec<&[Packed]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, message) in messages.iter().enumerate() {
        if i > start
            && (i - start == MAX_BATCH_ENTRIES || bytes + message.body.len() > MAX_BATCH_BYTES)
        {
            out.push(&messages[start..i]);
            (start, bytes) = (i, 0);
        }
        bytes += message.body.len();
    }
    if start < messages.len() {
        out.push(&messages[start..]);
    }
    out
}

/// What the queue does with a message that keeps failing (its `RedrivePolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redrive {
    /// Moved to the dead-letter queue after this many deliveries (`maxReceiveCount`).
    AfterReceives(u32),
    /// No redrive policy: redelivered until the retention period ends.
    Never,
    /// The policy could not be read.
    Unknown,
}

impl Redrive {
    /// Reads a `RedrivePolicy` attribute (`maxReceiveCount` as a number or a string).
    pub fn from_policy(policy: Option<&str>) -> Self {
        let Some(policy) = policy.filter(|p| !p.trim().is_empty()) else {
            return Redrive::Never;
        };
        let value: serde_json::Value = match serde_json::from_str(policy) {
            Ok(value) => value,
            Err(_) => return Redrive::Unknown,
        };
        let count = &value["maxReceiveCount"];
        let count = count
            .as_u64()
            .or_else(|| count.as_str().and_then(|s| s.trim().parse().ok()));
        match count.and_then(|c| u32::try_from(c).ok()) {
            Some(count) if count > 0 => Redrive::AfterReceives(count),
            _ => Redrive::Unknown,
        }
    }

    /// Whether a message delivered for the `receive_count`th time (`ApproximateReceiveCount`)
    /// is on its last delivery before the DLQ (with [`Redrive::Never`]: its first delivery;
    /// when either is unknown: every delivery, as once too often beats never).
    pub fn is_last_delivery(self, receive_count: Option<u32>) -> bool {
        match (self, receive_count) {
            (Redrive::AfterReceives(max), Some(count)) => count >= max,
            (Redrive::Never, Some(count)) => count <= 1,
            _ => true,
        }
    }
}

/// The function's work queue (`WORK_QUEUE_URL`).
pub struct SqsQueue {
    client: Client,
    url: String,
    // Read once per container, when first needed; a failed read is tried again next time.
    redrive: tokio::sync::OnceCell<Redrive>,
}

impl SqsQueue {
    /// A queue at `url`; warns when it is FIFO, which ignores per-message delays.
    pub fn new(client: Client, url: impl Into<String>) -> Self {
        let url = url.into();
        if url.ends_with(".fifo") {
            tracing::warn!(
                queue_url = %url,
                "WORK_QUEUE_URL is a FIFO queue: SQS does not support per-message DelaySeconds on FIFO \
                 queues, so retries and deferred work would fail to enqueue; use a standard queue"
            );
        }
        Self {
            client,
            url,
            redrive: tokio::sync::OnceCell::new(),
        }
    }

    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether `arn` (an SQS event record's `eventSourceARN`) names this queue.
    pub fn is_queue_arn(&self, arn: &str) -> bool {
        let name = self.url.trim_end_matches('/').rsplit('/').next();
        arn.rsplit(':').next() == name
    }

    /// The queue's redrive policy (GetQueueAttributes, read once per container);
    /// [`Redrive::Unknown`] when it cannot be read.
    pub async fn redrive(&self) -> Redrive {
        let read = self
            .redrive
            .get_or_try_init(|| async {
                let output = self
                    .client
                    .get_queue_attributes()
                    .queue_url(&self.url)
                    .attribute_names(QueueAttributeName::RedrivePolicy)
                    .send()
                    .await
                    .map_err(|e| super::error_text(&e))?;
                let policy = output
                    .attributes()
                    .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy));
                Ok::<_, String>(Redrive::from_policy(policy.map(String::as_str)))
            })
            .await;
        match read {
            Ok(redrive) => *redrive,
            Err(error) => {
                tracing::warn!(%error, queue_url = %self.url, "the work queue's redrive policy could not be read");
                Redrive::Unknown
            }
        }
    }

    /// Sends one batch, retrying failed entries; returns the messages finally not sent.
    async fn send_batch<'m>(&self, batch: &'m [Packed]) -> Vec<&'m Packed> {
        let mut pending: Vec<usize> = (0..batch.len()).collect();
        let mut given_up = Vec::new();
        for attempt in 0..=SEND_RETRIES {
            if pending.is_empty() {
                break;
            }
            if attempt > 0 {
                // A short pause before resending what SQS refused; not a backoff of SCIM work.
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
            let entries = pending.iter().filter_map(|&i| {
                SendMessageBatchRequestEntry::builder()
                    .id(format!("m{i}")) // unique within the call: the message's index in the batch
                    .message_body(&batch[i].body)
                    .delay_seconds(batch[i].delay_seconds as i32)
                    .build()
                    .ok() // id and body are set: building cannot fail
            });
            let result = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries.collect()))
                .send()
                .await;
            let output = match result {
                Ok(output) => output,
                Err(e) => {
                    tracing::warn!(error = %super::error_text(&e), attempt, "SendMessageBatch failed");
                    continue;
                }
            };
            let mut still = Vec::new();
            for failed in output.failed() {
                let index = failed
                    .id()
                    .strip_prefix('m')
                    .and_then(|n| n.parse::<usize>().ok());
                let Some(i) = index.filter(|i| pending.contains(i)) else {
                    continue;
                };
                tracing::warn!(
                    code = failed.code(),
                    sender_fault = failed.sender_fault(),
                    attempt,
                    "SQS refused a retry message"
                );
                // A sender fault is a wrong request: sending it again cannot succeed.
                if failed.sender_fault() {
                    given_up.push(i);
                } else {
                    still.push(i);
                }
            }
            pending = still;
        }
        given_up.extend(pending);
        given_up.into_iter().map(|i| &batch[i]).collect()
    }
}

impl WorkQueue for SqsQueue {
    fn enqueue<'a>(&'a self, items: &'a [Requeue]) -> BoxFuture<'a, Vec<usize>> {
        Box::pin(async move {
            let (messages, mut lost) = pack(items);
            for &i in &lost {
                tracing::error!(
                    user = %crate::mask::mask_email(&items[i].operation.user.user_name),
                    "an operation is too large for an SQS message and cannot be re-enqueued"
                );
            }
            for batch in batches(&messages) {
                for message in self.send_batch(batch).await {
                    lost.extend(&message.items);
                }
            }
            if !lost.is_empty() {
                tracing::error!(operations = lost.len(), queue_url = %self.url, "operations could not be re-enqueued");
            }
            lost.sort_unstable();
            lost
        })
    }
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
    fn redrive_policies_tell_the_last_delivery() {
        let five = Redrive::from_policy(Some(
            r#"{"deadLetterTargetArn": "arn:x", "maxReceiveCount": 5}"#,
        ));
        assert_eq!(five, Redrive::AfterReceives(5));
        assert_eq!(
            Redrive::from_policy(Some(
                r#"{"deadLetterTargetArn": "arn:x", "maxReceiveCount": "3"}"#
            )),
            Redrive::AfterReceives(3)
        );
        assert_eq!(Redrive::from_policy(None), Redrive::Never);
        assert_eq!(Redrive::from_policy(Some("")), Redrive::Never);
        assert_eq!(Redrive::from_policy(Some("{")), Redrive::Unknown);
        assert_eq!(
            Redrive::from_policy(Some(r#"{"maxReceiveCount": 0}"#)),
            Redrive::Unknown
        );
        assert!(!five.is_last_delivery(Some(1)));
        assert!(!five.is_last_delivery(Some(4)));
        assert!(five.is_last_delivery(Some(5)));
        assert!(five.is_last_delivery(Some(6)));
        assert!(five.is_last_delivery(None));
        assert!(Redrive::Never.is_last_delivery(Some(1)));
        assert!(!Redrive::Never.is_last_delivery(Some(2)));
        assert!(Redrive::Unknown.is_last_delivery(Some(2)));
    }

    #[test]
    fn queue_arns_are_matched_by_name() {
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let queue = SqsQueue::new(
            Client::new(&sdk),
            "https://sqs.us-east-1.amazonaws.com/123456789012/scim-work",
        );
        assert!(queue.is_queue_arn("arn:aws:sqs:us-east-1:123456789012:scim-work"));
        assert!(!queue.is_queue_arn("arn:aws:sqs:us-east-1:123456789012:scim-work-dlq"));
        assert!(!queue.is_queue_arn(""));
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
        let (messages, lost) = pack(&items);
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
    fn messages_stay_under_the_size_limit_and_huge_items_are_lost() {
        let mut items: Vec<Requeue> = (0..12)
            .map(|i| item(&format!("u{i}@x"), 0, 40_000))
            .collect();
        items.push(item("huge@x", 0, MAX_MESSAGE_BYTES));
        let (messages, lost) = pack(&items);
        assert_eq!(lost, vec![12]);
        assert!(messages.iter().all(|m| m.body.len() < MAX_MESSAGE_BYTES));
        assert_eq!(messages.iter().map(|m| m.items.len()).sum::<usize>(), 12);
        assert!(messages.len() >= 3);
    }

    #[test]
    fn batches_hold_ten_entries_and_256_kib_at_most() {
        let small: Vec<Packed> = (0..23)
            .map(|i| Packed {
                body: "x".repeat(100),
                delay_seconds: 0,
                items: vec![i],
            })
            .collect();
        let sizes: Vec<usize> = batches(&small).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![10, 10, 3]);
        let big: Vec<Packed> = (0..5)
            .map(|i| Packed {
                body: "x".repeat(150 * 1024),
                delay_seconds: 0,
                items: vec![i],
            })
            .collect();
        let sizes: Vec<usize> = batches(&big).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![1, 1, 1, 1, 1]);
        assert!(batches(&[]).is_empty());
    }
}
