//! The phases of a cycle: create, look up what exists, update or deactivate it.

use std::borrow::Cow;

use serde_json::json;

use super::classify::{failure_detail, is_retryable};
use super::cycle::Cycle;
use super::dispatch::LookupResult;
use super::UpdateMethod;
use crate::mask::mask_email;
use crate::operation::{Operation, Outcome};
use crate::scim::request::{Document, SubOp, SubReply, SubResult, Verb};
use crate::scim::resource::Lookup;
use crate::scim::schema::PATCH_OP;

/// What the update phase does for a user found by lookup.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Update {
    Replace,
    Deactivate,
}

impl Cycle<'_> {
    /// Runs the phases; one outcome per operation, in order.
    pub(super) async fn run(&self, ops: &[Operation]) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; ops.len()];
        supersede_duplicates(ops, &mut outcomes);
        let create_inactive = self.engine.config.create_inactive;

        // Phase 1: create active users (and inactive ones if so configured); 409 means "exists".
        let creates: Vec<SubOp> = (0..ops.len())
            .filter(|&k| outcomes[k].is_none() && (ops[k].user.active || create_inactive))
            .map(|k| SubOp {
                key: k,
                verb: Verb::Post,
                path: Cow::Borrowed("/Users"),
                data: ops[k].user.to_document(None),
            })
            .collect();
        let mut to_find: Vec<usize> = (0..ops.len())
            .filter(|&k| outcomes[k].is_none() && !ops[k].user.active && !create_inactive)
            .collect();
        for (key, result) in self.dispatch(creates).await {
            match result {
                SubResult::Reply(r) if (200..300).contains(&r.status) => {
                    outcomes[key] = Some(match r.resource_id() {
                        Some(id) => Outcome::Created { id },
                        // A success naming no resource proves nothing was created; sending it
                        // again is safe (an existing user answers 409 and is updated).
                        None => self.unsuccessful(
                            &ops[key],
                            SubResult::Transient {
                                status: Some(r.status),
                                reason: format!(
                                    "the service answered {} but named no created user (no id or location)",
                                    r.status
                                ),
                                retry_after: None,
                            },
                        ),
                    });
                }
                SubResult::Reply(r) if r.status == 409 => to_find.push(key),
                other => outcomes[key] = Some(self.unsuccessful(&ops[key], other)),
            }
        }

        // Phase 2: look up who exists.
        to_find.sort_unstable();
        let names = to_find
            .iter()
            .map(|&k| (k, ops[k].user.user_name.clone()))
            .collect();
        let mut updates = Vec::new();
        for (key, found) in self.lookups(names).await {
            let op = &ops[key];
            let action = if op.user.active {
                Update::Replace
            } else {
                Update::Deactivate
            };
            match found {
                LookupResult::Answer(Lookup::Found(id)) => {
                    updates.push(self.update_op(key, op, &id, action))
                }
                LookupResult::Answer(Lookup::NotFound)
                    if action == Update::Deactivate && !create_inactive =>
                {
                    outcomes[key] = Some(Outcome::Skipped {
                        reason:
                            "no user with this userName exists, so there is nothing to deactivate"
                                .into(),
                    });
                }
                LookupResult::Answer(Lookup::NotFound) => {
                    outcomes[key] = Some(Outcome::Failed {
                        status: Some(409),
                        scim_type: Some("uniqueness".into()),
                        detail: "the service reported a conflict but has no user with this userName: another unique attribute (email, externalId) belongs to someone else".into(),
                    });
                }
                LookupResult::Answer(Lookup::Ambiguous(n)) => {
                    outcomes[key] = Some(Outcome::Failed {
                        status: Some(409),
                        scim_type: Some("uniqueness".into()),
                        detail: format!("{n} users match this userName case-insensitively; not guessing which to update"),
                    });
                }
                LookupResult::Failed(result) => outcomes[key] = Some(self.unsuccessful(op, result)),
            }
        }

        // Phase 3: update or deactivate the users found.
        for (key, result) in self.dispatch(updates).await {
            let op = &ops[key];
            outcomes[key] = Some(match result {
                SubResult::Reply(r) if (200..300).contains(&r.status) => {
                    let id = r.resource_id().unwrap_or_default();
                    if op.user.active {
                        Outcome::Updated { id }
                    } else {
                        Outcome::Deactivated { id }
                    }
                }
                other => self.unsuccessful(op, other),
            });
        }

        for (op, outcome) in ops.iter().zip(&outcomes) {
            if let Some(o) = outcome {
                tracing::debug!(user = %mask_email(&op.user.user_name), outcome = o.kind(), "operation done");
            }
        }
        outcomes
            .into_iter()
            .enumerate()
            .map(|(k, o)| {
                o.unwrap_or_else(|| {
                    // Every path above sets an outcome; this keeps an operation from vanishing if one is missed.
                    self.retry(
                        &ops[k],
                        None,
                        "no outcome was recorded for this operation",
                        None,
                    )
                })
            })
            .collect()
    }

    fn update_op(&self, key: usize, op: &Operation, id: &str, action: Update) -> SubOp {
        let path = format!("/Users/{id}");
        let (verb, data) = match (action, self.engine.config.update_method) {
            (Update::Deactivate, _) => (
                Verb::Patch,
                Document::from_value(
                    &json!({"schemas": [PATCH_OP], "Operations": [{"op": "replace", "path": "active", "value": false}]}),
                ),
            ),
            (Update::Replace, UpdateMethod::Put) => (Verb::Put, op.user.to_document(Some(id))),
            (Update::Replace, UpdateMethod::Patch) => (
                Verb::Patch,
                Document::from_json_bytes(
                    [
                        format!(
                            r#"{{"schemas":["{PATCH_OP}"],"Operations":[{{"op":"replace","value":"#
                        )
                        .as_bytes(),
                        op.user.attributes_document().as_bytes(),
                        b"}]}",
                    ]
                    .concat(),
                ),
            ),
        };
        SubOp {
            key,
            verb,
            path: Cow::Owned(path),
            data,
        }
    }

    /// The outcome of anything but success: deferred, retry, or a permanent failure.
    fn unsuccessful(&self, op: &Operation, result: SubResult) -> Outcome {
        match result {
            SubResult::Deferred(delay) => Outcome::Deferred {
                reason: "not sent: the cycle's deadline or request rate budget would be passed"
                    .into(),
                delay,
            },
            SubResult::Transient {
                status,
                reason,
                retry_after,
            } => self.retry(op, status, &reason, retry_after),
            SubResult::Reply(r) if is_retryable(r.status) => {
                let reason = failure_detail(&r);
                self.retry(op, Some(r.status), &reason, None)
            }
            SubResult::Reply(r) => permanent(&r),
        }
    }
}

fn permanent(reply: &SubReply) -> Outcome {
    Outcome::Failed {
        status: Some(reply.status),
        scim_type: reply.error().0,
        detail: failure_detail(reply),
    }
}

/// Several operations for one userName (case-insensitively) in a cycle: the last one wins.
fn supersede_duplicates(ops: &[Operation], outcomes: &mut [Option<Outcome>]) {
    let mut last = std::collections::HashMap::new();
    for (k, op) in ops.iter().enumerate() {
        last.insert(op.user.key(), k);
    }
    for (k, op) in ops.iter().enumerate() {
        if last.get(&op.user.key()) != Some(&k) {
            outcomes[k] = Some(Outcome::Skipped {
                reason: "superseded by a later operation for the same userName".into(),
            });
        }
    }
}
