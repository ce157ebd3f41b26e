//! The work queue on SQS: retry messages ([`super::retry_message`]) sent in batches with a
//! per-message `DelaySeconds`, and what the function reads of the queue (its redrive policy and
//! message size limit).

use std::time::Duration;

use aws_sdk_sqs::types::{QueueAttributeName, SendMessageBatchRequestEntry};
use aws_sdk_sqs::Client;
use futures_util::future::BoxFuture;

use super::retry_message::{pack, with_margin, Packed, SQS_MAX_MESSAGE_BYTES};
use super::{NotEnqueued, Requeue, WorkQueue};

/// Entries per SendMessageBatch call (the SQS limit).
const MAX_BATCH_ENTRIES: usize = 10;
/// Total body bytes per SendMessageBatch call (SQS: 1 MiB for all entries together).
const MAX_BATCH_BYTES: usize = with_margin(SQS_MAX_MESSAGE_BYTES);

/// Retries of entries SQS lists as failed (or of a whole call that failed).
const SEND_RETRIES: u32 = 3;

/// Splits messages into SendMessageBatch calls: at most 10 entries and [`MAX_BATCH_BYTES`] each.
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

/// A queue's `MaximumMessageSize` attribute, within what SQS allows (1 KiB to 1 MiB).
pub fn max_message_size(attribute: Option<&str>) -> Option<usize> {
    let bytes: usize = attribute?.trim().parse().ok()?;
    Some(bytes.clamp(1024, SQS_MAX_MESSAGE_BYTES))
}

/// What the function reads of its work queue's attributes.
#[derive(Debug, Clone, Copy)]
struct QueueAttributes {
    redrive: Redrive,
    /// `MaximumMessageSize`, when set and readable.
    max_message_size: Option<usize>,
}

/// The function's work queue (`WORK_QUEUE_URL`).
pub struct SqsQueue {
    client: Client,
    url: String,
    // Read once per container, when first needed; a failed read is tried again next time.
    attributes: tokio::sync::OnceCell<QueueAttributes>,
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
            attributes: tokio::sync::OnceCell::new(),
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

    /// The queue's redrive policy and message size limit (one GetQueueAttributes call, made
    /// once per container); None when they cannot be read.
    async fn attributes(&self) -> Option<QueueAttributes> {
        let read = self
            .attributes
            .get_or_try_init(|| async {
                let output = self
                    .client
                    .get_queue_attributes()
                    .queue_url(&self.url)
                    .attribute_names(QueueAttributeName::RedrivePolicy)
                    .attribute_names(QueueAttributeName::MaximumMessageSize)
                    .send()
                    .await
                    .map_err(|e| crate::aws::error_text(&e))?;
                let attribute = |name: &QueueAttributeName| {
                    output
                        .attributes()
                        .and_then(|a| a.get(name))
                        .map(String::as_str)
                };
                Ok::<_, String>(QueueAttributes {
                    redrive: Redrive::from_policy(attribute(&QueueAttributeName::RedrivePolicy)),
                    max_message_size: max_message_size(attribute(
                        &QueueAttributeName::MaximumMessageSize,
                    )),
                })
            })
            .await;
        match read {
            Ok(attributes) => Some(*attributes),
            Err(error) => {
                tracing::warn!(%error, queue_url = %self.url, "the work queue's attributes (redrive policy, maximum message size) could not be read");
                None
            }
        }
    }

    /// The queue's redrive policy (GetQueueAttributes, read once per container);
    /// [`Redrive::Unknown`] when it cannot be read.
    pub async fn redrive(&self) -> Redrive {
        self.attributes()
            .await
            .map_or(Redrive::Unknown, |a| a.redrive)
    }

    /// The body bytes a retry message may have on this queue: its `MaximumMessageSize` less a
    /// margin. When that cannot be read, SQS's own maximum: only what no queue could take is
    /// then refused for good, and a message the queue refuses fails its event, to be retried.
    pub async fn max_body_bytes(&self) -> usize {
        let limit = self.attributes().await.and_then(|a| a.max_message_size);
        with_margin(limit.unwrap_or(SQS_MAX_MESSAGE_BYTES))
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
                    tracing::warn!(error = %crate::aws::error_text(&e), attempt, "SendMessageBatch failed");
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
    fn enqueue<'a>(&'a self, items: &'a [Requeue]) -> BoxFuture<'a, NotEnqueued> {
        Box::pin(async move {
            let max_bytes = self.max_body_bytes().await;
            let (messages, too_large) = pack(items, max_bytes);
            let mut not = NotEnqueued::default();
            for item in too_large {
                tracing::error!(
                    user = %crate::mask::mask_email(&items[item.index].operation.user.user_name),
                    bytes = item.bytes,
                    max_bytes,
                    "an operation is too large for an SQS message: it is reported failed"
                );
                not.too_large.push((item.index, item.reason(max_bytes)));
            }
            for batch in batches(&messages) {
                for message in self.send_batch(batch).await {
                    not.failed.extend(&message.items);
                }
            }
            if !not.failed.is_empty() {
                tracing::error!(operations = not.failed.len(), queue_url = %self.url, "operations could not be re-enqueued");
            }
            not.failed.sort_unstable();
            not
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::retry_message::MAX_MESSAGE_BYTES;

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
    fn batches_hold_ten_entries_and_1_mib_at_most() {
        let small: Vec<Packed> = (0..23)
            .map(|i| Packed {
                body: "x".repeat(100),
                delay_seconds: 0,
                items: vec![i],
            })
            .collect();
        let sizes: Vec<usize> = batches(&small).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![10, 10, 3]);
        // 300 KB each: three to a batch (the old 256 KiB batch limit allowed one).
        let big: Vec<Packed> = (0..7)
            .map(|i| Packed {
                body: "x".repeat(300 * 1024),
                delay_seconds: 0,
                items: vec![i],
            })
            .collect();
        let sizes: Vec<usize> = batches(&big).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![3, 3, 1]);
        let full: Vec<Packed> = (0..3)
            .map(|i| Packed {
                body: "x".repeat(MAX_MESSAGE_BYTES),
                delay_seconds: 0,
                items: vec![i],
            })
            .collect();
        let sizes: Vec<usize> = batches(&full).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![1, 1, 1]);
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn the_limits_are_sqs_1_mib_with_a_margin() {
        assert_eq!(SQS_MAX_MESSAGE_BYTES, 1_048_576);
        assert_eq!(MAX_MESSAGE_BYTES, 1_048_576 - 16_384);
        assert_eq!(MAX_BATCH_BYTES, MAX_MESSAGE_BYTES);
        assert_eq!(with_margin(262_144), 262_144 - 4096);
        assert_eq!(max_message_size(Some("262144")), Some(262_144));
        assert_eq!(max_message_size(Some(" 1048576 ")), Some(1_048_576));
        assert_eq!(max_message_size(Some("99999999")), Some(1_048_576));
        assert_eq!(max_message_size(Some("10")), Some(1024));
        assert_eq!(max_message_size(Some("lots")), None);
        assert_eq!(max_message_size(None), None);
    }
}
