//! Sending sub-operations within a cycle's budget: as BulkRequests (chunked, split on 413 or a
//! whole-request 400) or, on servers without Bulk, one request per resource; and userName lookups.

use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use reqwest::Method;

use super::classify::{is_retryable, rate_signal, RateSignal};
use super::Cycle;
use crate::budget::Admission;
use crate::scim::auth::AuthError;
use crate::scim::bulk;
use crate::scim::filter::user_name_eq;
use crate::scim::http::{Reply, SendError};
use crate::scim::request::{SubOp, SubResult};
use crate::scim::resource::{read_lookup, read_reply, Lookup};

/// What a lookup found, or why it could not tell.
#[derive(Debug, Clone)]
pub(crate) enum LookupResult {
    Answer(Lookup),
    Failed(SubResult),
}

enum BulkOutcome {
    Done(Vec<(usize, SubResult)>),
    Split(Vec<SubOp>, Vec<SubOp>),
    NoBulk(Vec<SubOp>),
}

impl Cycle<'_> {
    /// Waits for a request slot and returns it (the instant the request is sent), or says how
    /// long to defer.
    async fn admit(&self) -> Result<Instant, SubResult> {
        let engine = self.engine;
        let deferred = self.deferred_requests.load(Ordering::Relaxed);
        // A request is sent only if the time left can hold it (its timeout is still cut to
        // the time left): a short deadline defers work instead of cutting it mid-flight.
        let window = engine.admission_window();
        match engine
            .limiter
            .admit(Instant::now(), self.deadline, window, deferred)
        {
            Admission::SendAt(at) => {
                tokio::time::sleep_until(at.into()).await;
                self.stats.requests.fetch_add(1, Ordering::Relaxed);
                Ok(at)
            }
            Admission::Defer(delay) => {
                self.deferred_requests.fetch_add(1, Ordering::Relaxed);
                Err(SubResult::Deferred(delay))
            }
        }
    }

    /// Counts an answer to a request sent at `sent`, and tells the rate limiter how it went.
    fn count(&self, sent: Instant, status: u16) {
        self.engine
            .latency
            .record(Instant::now().saturating_duration_since(sent));
        if status == 429 {
            self.stats.throttled.fetch_add(1, Ordering::Relaxed);
        } else if (500..600).contains(&status) {
            self.stats.server_errors.fetch_add(1, Ordering::Relaxed);
        }
        let limiter = &self.engine.limiter;
        match rate_signal(status) {
            RateSignal::Throttled => limiter.throttled(sent, Instant::now()),
            RateSignal::Accepted => limiter.accepted(sent),
            RateSignal::Neutral => {}
        }
    }

    /// Sends every sub-operation and returns one result per sub-operation.
    pub(crate) async fn dispatch(&self, ops: Vec<SubOp>) -> Vec<(usize, SubResult)> {
        let limits = self.limits().await;
        if !limits.bulk {
            return self.dispatch_each(ops).await;
        }
        let mut out = Vec::with_capacity(ops.len());
        let mut pending: Vec<Vec<SubOp>> = split_into_chunks(ops, &limits);
        while !pending.is_empty() {
            let wave = std::mem::take(&mut pending);
            let done: Vec<BulkOutcome> = stream::iter(wave)
                .map(|chunk| self.send_bulk(chunk))
                .buffer_unordered(self.engine.config.concurrency.max(1))
                .collect()
                .await;
            for outcome in done {
                match outcome {
                    BulkOutcome::Done(results) => out.extend(results),
                    BulkOutcome::Split(a, b) => {
                        self.stats.splits.fetch_add(1, Ordering::Relaxed);
                        pending.push(a);
                        pending.push(b);
                    }
                    BulkOutcome::NoBulk(ops) => {
                        self.engine.bulk_unavailable().await;
                        out.extend(self.dispatch_each(ops).await);
                    }
                }
            }
        }
        out
    }

    async fn send_bulk(&self, chunk: Vec<SubOp>) -> BulkOutcome {
        let sent = match self.admit().await {
            Ok(sent) => sent,
            Err(deferred) => {
                return BulkOutcome::Done(
                    chunk.iter().map(|op| (op.key, deferred.clone())).collect(),
                )
            }
        };
        self.stats.bulk_requests.fetch_add(1, Ordering::Relaxed);
        let refs: Vec<&SubOp> = chunk.iter().collect();
        let body = Bytes::from(bulk::encode(&refs));
        let reply = match self
            .engine
            .http
            .send(Method::POST, "/Bulk", &[], Some(body), Some(self.deadline))
            .await
        {
            Ok(reply) => reply,
            Err(e) => return BulkOutcome::Done(all(&chunk, transient_from(e))),
        };
        self.count(sent, reply.status);
        let whole = |result: SubResult| BulkOutcome::Done(all(&chunk, result));
        match reply.status {
            200..=299 => match bulk::parse_response(&reply.body, &refs, reply.retry_after) {
                Ok(results) => BulkOutcome::Done(results),
                Err(e) => whole(SubResult::Transient {
                    status: Some(reply.status),
                    reason: e.to_string(),
                    retry_after: reply.retry_after,
                }),
            },
            // Too large, or one bad operation spoiling the request: halve until it is isolated.
            400 | 413 if chunk.len() > 1 => {
                let mut first = chunk;
                let second = first.split_off(first.len() / 2);
                BulkOutcome::Split(first, second)
            }
            404 | 501 => BulkOutcome::NoBulk(chunk),
            _ => whole(reply_result(&reply)),
        }
    }

    /// One request per sub-operation, `concurrency` at a time.
    async fn dispatch_each(&self, ops: Vec<SubOp>) -> Vec<(usize, SubResult)> {
        stream::iter(ops)
            .map(|op| async move {
                let result = self.send_one(&op).await;
                (op.key, result)
            })
            .buffer_unordered(self.engine.config.concurrency.max(1))
            .collect()
            .await
    }

    async fn send_one(&self, op: &SubOp) -> SubResult {
        let sent = match self.admit().await {
            Ok(sent) => sent,
            Err(deferred) => return deferred,
        };
        let body = Bytes::copy_from_slice(op.data.as_bytes());
        match self
            .engine
            .http
            .send(
                op.verb.method(),
                &op.path,
                &[],
                Some(body),
                Some(self.deadline),
            )
            .await
        {
            Ok(reply) => {
                self.count(sent, reply.status);
                reply_result(&reply)
            }
            Err(e) => transient_from(e),
        }
    }

    /// Looks up users by userName, `concurrency` at a time; `names` pairs keys with userNames.
    pub(crate) async fn lookups(&self, names: Vec<(usize, String)>) -> Vec<(usize, LookupResult)> {
        stream::iter(names)
            .map(|(key, name)| async move { (key, self.lookup(&name).await) })
            .buffer_unordered(self.engine.config.concurrency.max(1))
            .collect()
            .await
    }

    async fn lookup(&self, user_name: &str) -> LookupResult {
        let sent_at = match self.admit().await {
            Ok(at) => at,
            Err(deferred) => return LookupResult::Failed(deferred),
        };
        self.stats.lookups.fetch_add(1, Ordering::Relaxed);
        let filter = user_name_eq(user_name);
        let sent = self
            .engine
            .http
            .send(
                Method::GET,
                "/Users",
                &[("filter", filter.as_str())],
                None,
                Some(self.deadline),
            )
            .await;
        let reply = match sent {
            Ok(reply) => reply,
            Err(e) => return LookupResult::Failed(transient_from(e)),
        };
        self.count(sent_at, reply.status);
        if reply.status != 200 {
            return LookupResult::Failed(reply_result(&reply));
        }
        match read_lookup(&reply.body, user_name) {
            Some(found) => LookupResult::Answer(found),
            None => LookupResult::Failed(SubResult::Transient {
                status: Some(200),
                reason: "the userName lookup's answer is not a SCIM ListResponse".into(),
                retry_after: reply.retry_after,
            }),
        }
    }
}

fn split_into_chunks(
    ops: Vec<SubOp>,
    limits: &crate::scim::discovery::ProviderLimits,
) -> Vec<Vec<SubOp>> {
    let plan = bulk::chunk(&ops, limits);
    let mut slots: Vec<Option<SubOp>> = ops.into_iter().map(Some).collect();
    plan.into_iter()
        .map(|idx| idx.into_iter().filter_map(|i| slots[i].take()).collect())
        .collect()
}

fn all(chunk: &[SubOp], result: SubResult) -> Vec<(usize, SubResult)> {
    chunk.iter().map(|op| (op.key, result.clone())).collect()
}

/// A whole answer as the result of its sub-operation(s): retryable statuses become transient.
fn reply_result(reply: &Reply) -> SubResult {
    if is_retryable(reply.status) {
        return SubResult::Transient {
            status: Some(reply.status),
            reason: match reply.status {
                429 => "throttled by the service".into(),
                s => format!("the service answered HTTP {s}"),
            },
            retry_after: reply.retry_after,
        };
    }
    if reply.status == 401 {
        return SubResult::Transient {
            status: Some(401),
            reason: "unauthorized even after refreshing the token and re-reading the credentials"
                .into(),
            retry_after: None,
        };
    }
    read_reply(reply)
}

fn transient_from(error: SendError) -> SubResult {
    // No token before the deadline: nothing was sent, the work waits for the next invocation.
    if matches!(error, SendError::Auth(AuthError::Deadline)) {
        return SubResult::Deferred(super::DEFER_DELAY);
    }
    SubResult::Transient {
        status: None,
        reason: error.to_string(),
        retry_after: None,
    }
}
