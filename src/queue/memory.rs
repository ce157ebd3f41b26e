//! An in-memory delay queue: the CLI's stand-in for SQS. Work put back with a delay becomes
//! ready only once that delay (multiplied by the time scale) has passed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::{NotEnqueued, Requeue, WorkQueue};
use crate::operation::Operation;

/// One queued operation; ordered by due time, then by arrival so equal delays keep their order.
struct Entry {
    due: Instant,
    seq: u64,
    operation: Operation,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// A queue of operations, each ready after its (scaled) delay.
pub struct DelayQueue {
    heap: Mutex<BinaryHeap<Reverse<Entry>>>,
    scale: f64,
    seq: AtomicU64,
}

impl DelayQueue {
    /// A queue whose delays are multiplied by `time_scale` (1.0: real time; 0.01: 100 times faster).
    pub fn new(time_scale: f64) -> Self {
        // A negative or NaN scale would make `mul_f64` panic; treat it as "no waiting".
        let scale = if time_scale.is_finite() && time_scale > 0.0 {
            time_scale
        } else {
            0.0
        };
        Self {
            heap: Mutex::new(BinaryHeap::new()),
            scale,
            seq: AtomicU64::new(0),
        }
    }

    /// The real time a delay of `delay` takes in this queue.
    pub fn scaled(&self, delay: Duration) -> Duration {
        delay.mul_f64(self.scale)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BinaryHeap<Reverse<Entry>>> {
        // Nothing panics while holding the lock; a poisoned heap is still consistent.
        self.heap.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds an operation, ready after `delay` (scaled).
    pub fn push(&self, operation: Operation, delay: Duration) {
        let entry = Entry {
            due: Instant::now() + self.scaled(delay),
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
            operation,
        };
        self.lock().push(Reverse(entry));
    }

    /// Operations waiting, ready or not.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Removes up to `max` operations that are ready at `now`, earliest first.
    pub fn pop_ready(&self, max: usize, now: Instant) -> Vec<Operation> {
        let mut heap = self.lock();
        let mut ready = Vec::new();
        while ready.len() < max {
            match heap.peek() {
                Some(Reverse(entry)) if entry.due <= now => {}
                _ => break,
            }
            if let Some(Reverse(entry)) = heap.pop() {
                ready.push(entry.operation);
            }
        }
        ready
    }

    /// When the earliest operation becomes ready, if any is waiting.
    pub fn next_due(&self) -> Option<Instant> {
        self.lock().peek().map(|Reverse(entry)| entry.due)
    }

    /// Waits until at least one operation is ready and takes up to `max` of them;
    /// empty only when the queue is empty.
    pub async fn next_batch(&self, max: usize) -> Vec<Operation> {
        while let Some(due) = self.next_due() {
            tokio::time::sleep_until(due.into()).await;
            let batch = self.pop_ready(max.max(1), Instant::now());
            if !batch.is_empty() {
                return batch;
            }
        }
        Vec::new()
    }
}

impl WorkQueue for DelayQueue {
    fn enqueue<'a>(&'a self, items: &'a [Requeue]) -> BoxFuture<'a, NotEnqueued> {
        for item in items {
            self.push(item.operation.clone(), item.delay);
        }
        // Memory never refuses an item.
        Box::pin(async { NotEnqueued::default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(name: &str) -> Operation {
        Operation::new(crate::user::sample(name), "test", None)
    }

    fn names(ops: &[Operation]) -> Vec<&str> {
        ops.iter().map(|o| o.user.user_name.as_str()).collect()
    }

    #[tokio::test]
    async fn delays_are_honoured_in_order() {
        let queue = DelayQueue::new(1.0);
        queue.push(op("c"), Duration::from_millis(90));
        queue.push(op("a"), Duration::from_millis(30));
        queue.push(op("b"), Duration::from_millis(60));
        queue.push(op("now"), Duration::ZERO);
        let start = Instant::now();
        assert_eq!(names(&queue.pop_ready(10, start)), ["now"]);
        let mut order = Vec::new();
        while !queue.is_empty() {
            let batch = queue.next_batch(10).await;
            let elapsed = start.elapsed();
            for o in &batch {
                let wanted = match o.user.user_name.as_str() {
                    "a" => 30,
                    "b" => 60,
                    _ => 90,
                };
                assert!(elapsed >= Duration::from_millis(wanted), "{elapsed:?}");
            }
            order.extend(batch.into_iter().map(|o| o.user.user_name));
        }
        assert_eq!(order, ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn time_scale_shortens_delays() {
        let queue = DelayQueue::new(0.001);
        assert_eq!(
            queue.scaled(Duration::from_secs(30)),
            Duration::from_millis(30)
        );
        queue.push(op("x"), Duration::from_secs(30));
        assert!(
            queue.pop_ready(1, Instant::now()).is_empty(),
            "not ready at once"
        );
        let start = Instant::now();
        let batch = queue.next_batch(1).await;
        assert_eq!(names(&batch), ["x"]);
        let waited = start.elapsed();
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert!(queue.next_batch(1).await.is_empty());
    }

    #[tokio::test]
    async fn batches_are_bounded_and_keep_arrival_order() {
        let queue = DelayQueue::new(0.0);
        for name in ["1", "2", "3", "4", "5"] {
            queue.push(op(name), Duration::from_secs(60));
        }
        assert_eq!(names(&queue.next_batch(2).await), ["1", "2"]);
        assert_eq!(names(&queue.next_batch(10).await), ["3", "4", "5"]);
    }

    #[tokio::test]
    async fn enqueue_accepts_everything() {
        let queue = DelayQueue::new(-1.0);
        let items = vec![
            Requeue {
                operation: op("a"),
                delay: Duration::from_secs(5),
            },
            Requeue {
                operation: op("b"),
                delay: Duration::ZERO,
            },
        ];
        assert!(queue.enqueue(&items).await.is_empty());
        assert_eq!(queue.len(), 2);
        // A negative scale is treated as zero: everything is ready.
        assert_eq!(queue.pop_ready(10, Instant::now()).len(), 2);
    }
}
