//! Sending sub-operations within a cycle's budget: as BulkRequests (chunked, split on 413 or a
//! whole-request 400) or, on servers without Bulk, one request per resource; the admission and
//! counting of every request (reads included, `reads.rs`).

use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::Bytes;
use futures_util::stream::{self, StreamExt};
use reqwest::Method;

use super::classify::{failure_detail, is_retryable, rate_signal, RateSignal};
use super::cycle::Cycle;
use crate::rate_limit::Admission;
use crate::scim::auth::AuthError;
use crate::scim::bulk;
use crate::scim::http::{caps, Reply, SendError};
use crate::scim::request::{SubOp, SubReply, SubResult};
use crate::scim::resource::read_reply;

enum BulkOutcome {
    Done(Vec<(usize, SubResult)>),
    Split(Vec<SubOp>, Vec<SubOp>),
    NoBulk(Vec<SubOp>),
}

impl Cycle<'_> {
    /// Waits for a request slot and returns it (the instant the request is sent), or says how
    /// long to defer.
    pub(super) async fn admit(&self) -> Result<Instant, SubResult> {
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
    /// Only a 429 with a rate signature (`Retry-After`, or a rate-limit reset header, which
    /// `scim::http` reads as one) slows the pace: a bare 429 is a refusal of the moment that
    /// the queue's delay answers.
    pub(super) fn count(&self, sent: Instant, reply: &Reply) {
        let status = reply.status;
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
            RateSignal::Throttled if reply.retry_after.is_some() => {
                limiter.throttled(sent, Instant::now())
            }
            RateSignal::Throttled => {}
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
        let cap = caps::bulk_answer(body.len());
        let reply = match self
            .engine
            .http
            .send_capped(
                Method::POST,
                "/Bulk",
                &[],
                Some(body),
                Some(self.deadline),
                cap,
            )
            .await
        {
            Ok(reply) => reply,
            Err(e) => return BulkOutcome::Done(all(&chunk, transient_from(e))),
        };
        self.count(sent, &reply);
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
                self.count(sent, &reply);
                reply_result(&reply)
            }
            Err(e) => transient_from(e),
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

/// A whole answer as the result of its sub-operation(s): retryable statuses become transient,
/// in the same words as a Bulk result's (the server's detail, masked and bounded).
pub(super) fn reply_result(reply: &Reply) -> SubResult {
    if is_retryable(reply.status) {
        let reason = match read_reply(reply) {
            SubResult::Reply(r) => failure_detail(&r),
            _ => failure_detail(&SubReply::new(reply.status, None, None)),
        };
        return SubResult::Transient {
            status: Some(reply.status),
            reason,
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

/// No usable answer: retryable. An answer too large to read is one (the request may have
/// been applied: it is not a refusal).
pub(super) fn transient_from(error: SendError) -> SubResult {
    // No token before the deadline: nothing was sent, the work waits for the next invocation.
    if matches!(error, SendError::Auth(AuthError::Deadline)) {
        return SubResult::Deferred(super::DEFER_DELAY);
    }
    // Credentials refused while the cycle ran (a refreshed token refused, a re-read secret
    // unusable) are a refusal: a 401, which spends an attempt; no answer at all only waits.
    let status = match &error {
        SendError::Auth(e) if !e.is_transient() => Some(401),
        _ => error.status(),
    };
    SubResult::Transient {
        status,
        reason: error.to_string(),
        retry_after: None,
    }
}
