//! The work queue port: where retryable and deferred operations go back, each with its delay.
//! [`sqs::SqsQueue`] on AWS (carrying [`retry_message`]s), [`memory::DelayQueue`] in the CLI,
//! the demo and the benches.

pub mod memory;
pub mod retry_message;
pub mod sqs;

use std::time::Duration;

use futures_util::future::BoxFuture;

use crate::operation::Operation;

/// Work to send again after a delay.
#[derive(Debug, Clone, PartialEq)]
pub struct Requeue {
    /// The operation, its attempt count and last error updated.
    pub operation: Operation,
    /// How long to wait (SQS `DelaySeconds`).
    pub delay: Duration,
}

/// What a queue did not take of the items given to [`WorkQueue::enqueue`] (indices into them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NotEnqueued {
    /// Items that could not be enqueued this time: their origin must be delivered again.
    pub failed: Vec<usize>,
    /// Items no message of the queue can carry, with why: sending again cannot help, so they
    /// are reported failed.
    pub too_large: Vec<(usize, String)>,
}

impl NotEnqueued {
    /// How many items were not enqueued.
    pub fn len(&self) -> usize {
        self.failed.len() + self.too_large.len()
    }

    /// Whether every item was enqueued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A queue that accepts work back with a per-item delay (SQS, or in memory for the demo).
pub trait WorkQueue: Send + Sync {
    /// Enqueues every item; says which items were not enqueued.
    fn enqueue<'a>(&'a self, items: &'a [Requeue]) -> BoxFuture<'a, NotEnqueued>;
}
