//! Faults at random (seeded), for runs that measure or soak rather than script: each request
//! the queued rules leave alone may be throttled, refused, reset, answered after being applied
//! as if lost (502), stalled, or — inside a BulkRequest — have single operations refused (503,
//! not applied), dropped from the answer (applied) or reported failed (applied); and tokens the
//! proxy issued stop working after a lifetime.
//!
//! ```ignore
//! proxy.set_random(RandomFaults { throttled: 0.2, stalled: 0.01, ..RandomFaults::seeded(7) });
//! ```

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::Fault;

/// What fraction of requests (or of a BulkRequest's operations) meets each fault.
#[derive(Clone, Debug)]
pub struct RandomFaults {
    /// Seed of the draws: the same seed and the same requests meet the same faults.
    pub seed: u64,
    /// 429 with `Retry-After: 1`, not forwarded.
    pub throttled: f64,
    /// 503 (no Retry-After), not forwarded.
    pub unavailable: f64,
    /// Connection reset before forwarding.
    pub reset: f64,
    /// Forwarded (applied), answered 502: the answer was lost on the way back.
    pub lost: f64,
    /// Forwarded at once (applied), answered after [`RandomFaults::stall`].
    pub stalled: f64,
    /// How long a stalled answer is held.
    pub stall: Duration,
    /// Per BulkRequest operation carrying a bulkId: taken out before forwarding (not applied)
    /// and answered 503 in the BulkResponse.
    pub op_unavailable: f64,
    /// Per operation of a BulkResponse: applied but left out of the answer.
    pub op_missing: f64,
    /// Per operation of a BulkResponse: applied but reported as failed with 500.
    pub op_failed: f64,
    /// Tokens the proxy issued are answered 401 once this old (None: they never expire).
    pub token_lifetime: Option<Duration>,
    /// Every SCIM request (faulty or not) is answered no sooner than this: the network and
    /// processing time of a tenant on the internet, which a loopback peer does not have.
    pub latency: Duration,
}

impl RandomFaults {
    /// No fault at all, with this seed: set the fractions wanted on top.
    pub fn seeded(seed: u64) -> Self {
        Self {
            seed,
            throttled: 0.0,
            unavailable: 0.0,
            reset: 0.0,
            lost: 0.0,
            stalled: 0.0,
            stall: Duration::from_secs(35),
            op_unavailable: 0.0,
            op_missing: 0.0,
            op_failed: 0.0,
            token_lifetime: None,
            latency: Duration::ZERO,
        }
    }
}

/// What the random faults do to one request.
#[derive(Debug, Default)]
pub(super) struct Plan {
    /// Answered by this fault instead (throttled, refused, reset), or altered by it (stall).
    pub(super) fault: Option<Fault>,
    /// Forward, then answer 502.
    pub(super) lost: bool,
    /// The request body to forward instead (operations taken out).
    pub(super) body: Option<Vec<u8>>,
    /// BulkResponse entries to add: the taken-out operations, answered 503.
    pub(super) refused: Vec<Value>,
    /// Wait this long before answering at all.
    pub(super) latency: Duration,
}

/// The random faults of a proxy, with their generator.
pub(super) struct RandomState {
    pub(super) config: RandomFaults,
    rng: StdRng,
}

/// Counts of what the random faults did, for a run's report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RandomCounts {
    pub throttled: u64,
    pub unavailable: u64,
    pub reset: u64,
    pub lost: u64,
    pub stalled: u64,
    pub op_unavailable: u64,
    pub op_missing: u64,
    pub op_failed: u64,
    pub expired: u64,
}

impl RandomState {
    pub(super) fn new(config: RandomFaults) -> Self {
        let rng = StdRng::seed_from_u64(config.seed);
        Self { config, rng }
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random_bool(p.min(1.0))
    }

    /// Whether a token issued at `issued` has expired by `now`.
    pub(super) fn expired(&self, issued: Instant, now: Instant) -> bool {
        self.config
            .token_lifetime
            .is_some_and(|life| now.saturating_duration_since(issued) >= life)
    }

    /// Draws the faults of one request.
    pub(super) fn plan(&mut self, path: &str, body: &[u8], counts: &mut RandomCounts) -> Plan {
        let c = self.config.clone();
        let draw: f64 = self.rng.random();
        let mut edge = 0.0;
        let mut next = |p: f64| {
            edge += p;
            draw < edge
        };
        let mut plan = Plan {
            latency: c.latency,
            ..Plan::default()
        };
        if next(c.throttled) {
            counts.throttled += 1;
            plan.fault = Some(Fault::throttled("1"));
            return plan;
        }
        if next(c.unavailable) {
            counts.unavailable += 1;
            plan.fault = Some(Fault::status(503));
            return plan;
        }
        if next(c.reset) {
            counts.reset += 1;
            plan.fault = Some(Fault::Reset);
            return plan;
        }
        if next(c.lost) {
            counts.lost += 1;
            plan.lost = true;
        } else if next(c.stalled) {
            counts.stalled += 1;
            plan.fault = Some(Fault::Delay(c.stall));
        }
        if path.ends_with("/Bulk") && c.op_unavailable > 0.0 {
            self.take_out(body, &mut plan, counts);
        }
        plan
    }

    /// Takes some operations with a bulkId out of a BulkRequest, to answer them 503.
    fn take_out(&mut self, body: &[u8], plan: &mut Plan, counts: &mut RandomCounts) {
        let Ok(mut doc) = serde_json::from_slice::<Value>(body) else {
            return;
        };
        let Some(ops) = doc.get_mut("Operations").and_then(Value::as_array_mut) else {
            return;
        };
        let p = self.config.op_unavailable;
        let mut kept = Vec::with_capacity(ops.len());
        for op in ops.drain(..) {
            // One operation must stay: an empty BulkRequest is a different request.
            let can = op["bulkId"].is_string() && !kept.is_empty();
            if can && self.chance(p) {
                counts.op_unavailable += 1;
                plan.refused.push(json!({
                    "method": op["method"],
                    "bulkId": op["bulkId"],
                    "status": "503",
                    "response": {
                        "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                        "status": "503",
                        "detail": "fault proxy: this operation was not processed",
                    },
                }));
            } else {
                kept.push(op);
            }
        }
        *ops = kept;
        if !plan.refused.is_empty() {
            plan.body = Some(doc.to_string().into_bytes());
        }
    }

    /// Alters a forwarded BulkResponse: operations dropped or reported failed, refused ones added.
    pub(super) fn alter_bulk(
        &mut self,
        body: &[u8],
        refused: Vec<Value>,
        counts: &mut RandomCounts,
    ) -> Option<Vec<u8>> {
        let (missing, failed) = (self.config.op_missing, self.config.op_failed);
        if missing <= 0.0 && failed <= 0.0 && refused.is_empty() {
            return None;
        }
        let mut doc = serde_json::from_slice::<Value>(body).ok()?;
        let ops = doc.get_mut("Operations")?.as_array_mut()?;
        let mut out = Vec::with_capacity(ops.len() + refused.len());
        for mut op in ops.drain(..) {
            if self.chance(missing) {
                counts.op_missing += 1;
                continue;
            }
            if self.chance(failed) {
                counts.op_failed += 1;
                op["status"] = json!("500");
                op["response"] = json!({
                    "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
                    "status": "500",
                    "detail": "fault proxy: applied, reported as failed",
                });
            }
            out.push(op);
        }
        out.extend(refused);
        *ops = out;
        Some(doc.to_string().into_bytes())
    }
}
