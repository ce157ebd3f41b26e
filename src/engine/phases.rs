//! The phases of a cycle: decide each operation against what the ledger knows ([`decide`]),
//! create the new users, find or fetch the existing ones (a retry resumes from the id an
//! earlier attempt found), then update (managed attributes only) or deactivate them, and
//! record in the ledger what the tenant now holds.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use serde_json::{json, Value};

use super::classify::{failure_detail, is_retryable, Spend};
use super::cycle::Cycle;
use super::decide::{
    decide, is_same_user, resumes, Decision, Rules, NOTHING_TO_DEACTIVATE, SUPERSEDED,
};
use super::reads::{FetchResult, LookupResult};
use super::UpdateMethod;
use crate::ledger::Confirmed;
use crate::mask::mask_email;
use crate::operation::{Operation, Outcome};
use crate::scim::managed::{merge_into, patch_operations, Managed};
use crate::scim::patch::{deactivation, PatchForm};
use crate::scim::request::{Document, SubOp, SubReply, SubResult, Verb};
use crate::scim::resource::Lookup;
use crate::scim::schema::PATCH_OP;

/// A write of the update phase, and what to fall back to if the server refuses it.
struct Write {
    key: usize,
    id: String,
    /// The tenant's resource, when fetched (the PUT fallback of a refused PATCH needs it).
    resource: Option<Value>,
    deactivate: bool,
}

impl Cycle<'_> {
    /// Runs the phases; one outcome per operation, in order.
    pub(super) async fn run(&self, ops: &[Operation]) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; ops.len()];
        supersede_duplicates(ops, &mut outcomes);
        let limits = self.limits().await;
        let rules = Rules {
            create_inactive: self.engine.config.create_inactive,
            filter_supported: limits.filter,
        };
        let live: Vec<usize> = (0..ops.len()).filter(|&k| outcomes[k].is_none()).collect();
        // The user's id in the tenant as far as this cycle knows (a retry's hint to start
        // with): what a retry or deferral carries to the next attempt.
        let mut ids: HashMap<usize, String> = ops
            .iter()
            .enumerate()
            .filter_map(|(k, op)| Some((k, op.resource_id.clone()?)))
            .collect();
        // The ledger could not be read or written: nothing was sent, every operation retries
        // (spending an attempt: a table that is missing or denied looks the same from here).
        let unreachable = |reason: String, mut outcomes: Vec<Option<Outcome>>| {
            for &k in &live {
                outcomes[k] = Some(self.retry_as(Spend::Attempt, &ops[k], None, &reason, None));
            }
            self.finish(ops, outcomes, &ids)
        };
        let entries = match self.entries(ops, &live).await {
            Ok(entries) => entries,
            Err(reason) => return unreachable(reason, outcomes),
        };
        let mut plan: Vec<(usize, Decision)> = live
            .iter()
            .map(|&k| (k, decide(&ops[k], entries.get(&ops[k].user.key()), rules)))
            .collect();
        let renamed = match self.match_external_ids(ops, &mut plan).await {
            Ok(renamed) => renamed,
            Err(reason) => return unreachable(reason, outcomes),
        };
        let claims = match self.claim(ops, &entries, &mut plan).await {
            Ok(claims) => claims,
            Err(reason) => return unreachable(reason, outcomes),
        };

        let mut confirmed = Vec::new();
        let (mut creates, mut finds, mut fetches, mut writes) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // Fetches by an id a retry carried: checked to be the user's before it is written.
        let mut hinted: HashSet<usize> = HashSet::new();
        for (k, decision) in plan {
            if let Some(id) = resumes(&decision, &ops[k]) {
                hinted.insert(k);
                fetches.push((k, id.to_string()));
                continue;
            }
            match decision {
                Decision::Create => creates.push(k),
                Decision::Find => finds.push(k),
                Decision::Update { id } => fetches.push((k, id)),
                Decision::Deactivate { id } => writes.push(Write {
                    key: k,
                    id,
                    resource: None,
                    deactivate: true,
                }),
                Decision::Skip(reason) => outcomes[k] = Some(skipped(reason)),
                Decision::Superseded => outcomes[k] = Some(skipped(SUPERSEDED)),
                Decision::Wait { delay } => {
                    outcomes[k] = Some(Outcome::Deferred {
                        reason: "an older operation for this user may still be writing: this one waits for it".into(),
                        delay: delay.max(std::time::Duration::from_secs(1)),
                        resource_id: ops[k].resource_id.clone(),
                    })
                }
                Decision::Unchanged { id } => {
                    // Known to the ledger, but not as managed yet: it is now.
                    if entries.get(&ops[k].user.key()).is_some_and(|e| !e.managed) {
                        confirmed.push(confirmation(&ops[k], &id, None));
                    }
                    outcomes[k] = Some(Outcome::Unchanged { id });
                }
            }
        }

        // Phase 1: create; 409 means the user exists after all.
        let posts = creates
            .iter()
            .map(|&k| SubOp {
                key: k,
                verb: Verb::Post,
                path: Cow::Borrowed("/Users"),
                data: ops[k].user.to_document(None),
            })
            .collect();
        for (key, result) in self.dispatch(posts).await {
            match result {
                SubResult::Reply(r) if (200..300).contains(&r.status) => {
                    outcomes[key] = Some(match r.resource_id() {
                        Some(id) => {
                            // The answer's resource, or what was sent when it has none.
                            let created = r.body.clone().unwrap_or_else(|| ops[key].user.to_scim());
                            confirmed.push(confirmation(&ops[key], &id, Some(&created)));
                            ids.insert(key, id.clone());
                            Outcome::Created { id }
                        }
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
                SubResult::Reply(r) if r.status == 409 => finds.push(key),
                other => outcomes[key] = Some(self.unsuccessful(&ops[key], other)),
            }
        }

        // Phase 2: fetch the users whose id is known (the ledger's, or a retry's hint); one
        // gone, or a hint naming another user, is looked up by userName with the others.
        let mut found: Vec<(usize, Value)> = Vec::new();
        let mut gone = Vec::new();
        let mut refound: HashSet<usize> = HashSet::new();
        for (key, result) in self.fetches(fetches).await {
            let hint = hinted.contains(&key);
            match result {
                FetchResult::Found(resource) if !hint || is_same_user(&ops[key], &resource) => {
                    found.push((key, resource))
                }
                FetchResult::Found(_) | FetchResult::Gone => {
                    if !hint {
                        gone.push(ops[key].user.key());
                    }
                    ids.remove(&key);
                    refound.insert(key);
                    finds.push(key);
                }
                FetchResult::Failed(result) => {
                    outcomes[key] = Some(self.unsuccessful(&ops[key], result))
                }
            }
        }
        self.forget(&gone).await;
        finds.sort_unstable();
        if !finds.is_empty() && !limits.filter {
            self.relist().await;
            for k in finds.drain(..) {
                let reason = "the user exists in the tenant but the ledger does not know it and the service cannot filter by userName: the tenant will be listed again";
                outcomes[k] = Some(self.retry(&ops[k], Some(409), reason, None));
            }
        }
        let names = finds
            .iter()
            .map(|&k| (k, ops[k].user.user_name.clone()))
            .collect();
        for (key, result) in self.lookups(names).await {
            let op = &ops[key];
            outcomes[key] = match result {
                LookupResult::Answer(Lookup::Found(resource)) => {
                    if let Some(id) = resource["id"].as_str() {
                        ids.insert(key, id.to_string());
                    }
                    found.push((key, resource));
                    None
                }
                LookupResult::Answer(Lookup::NotFound)
                    if !op.user.active && !rules.create_inactive =>
                {
                    Some(skipped(NOTHING_TO_DEACTIVATE))
                }
                // Its id is gone and nobody has its userName: deleted since; created next time.
                LookupResult::Answer(Lookup::NotFound) if refound.contains(&key) => {
                    let reason = "the user's id found earlier is no longer in the tenant, nor is its userName: it will be created";
                    Some(self.retry_as(Spend::Wait, op, Some(404), reason, None))
                }
                LookupResult::Answer(Lookup::NotFound) => Some(Outcome::Failed {
                    status: Some(409),
                    scim_type: Some("uniqueness".into()),
                    detail: "the service reported a conflict but has no user with this userName: another unique attribute (email, externalId) belongs to someone else".into(),
                }),
                LookupResult::Answer(Lookup::Ambiguous(n)) => Some(Outcome::Failed {
                    status: Some(409),
                    scim_type: Some("uniqueness".into()),
                    detail: format!("{n} users match this userName case-insensitively; not guessing which to update"),
                }),
                LookupResult::Failed(result) => Some(self.unsuccessful(op, result)),
            };
        }

        // Phase 3: what each existing user needs: nothing, an update, or a deactivation.
        for (key, resource) in found {
            let op = &ops[key];
            let Some(id) = resource["id"].as_str().map(str::to_string) else {
                continue; // lookups keep only resources with an id; fetches answer for one
            };
            let current = Managed::of_resource(&resource);
            let unchanged = if op.user.active {
                Managed::of_user(&op.user).differences(&current).is_empty()
            } else {
                !current.active
            };
            if unchanged {
                confirmed.push(confirmation(op, &id, Some(&resource)));
                outcomes[key] = Some(Outcome::Unchanged { id });
            } else {
                writes.push(Write {
                    key,
                    id,
                    deactivate: !op.user.active,
                    resource: Some(resource),
                });
            }
        }

        // Phase 4: the writes; a refused PATCH form is not sent again as is.
        for (write, result) in self.write_all(ops, writes).await {
            let op = &ops[write.key];
            outcomes[write.key] = Some(match result {
                SubResult::Reply(r) if (200..300).contains(&r.status) => {
                    // What the tenant now holds: the merge that was written (its answer may be
                    // partial or absent), or for a deactivation what was found, if anything.
                    let holds = match (&write.resource, write.deactivate) {
                        (Some(resource), false) => Some(merge_into(resource, &op.user)),
                        (resource, _) => resource.clone(),
                    };
                    confirmed.push(confirmation(op, &write.id, holds.as_ref()));
                    // Known by another userName until now: that entry is this user's no more.
                    if let Some(old) = renamed.get(&write.key) {
                        self.forget(std::slice::from_ref(old)).await;
                    }
                    if write.deactivate {
                        Outcome::Deactivated { id: write.id }
                    } else {
                        Outcome::Updated { id: write.id }
                    }
                }
                SubResult::Reply(r) if r.status == 404 && write.deactivate => {
                    self.forget(&[op.user.key()]).await;
                    skipped(NOTHING_TO_DEACTIVATE)
                }
                other => self.unsuccessful(op, other),
            });
        }

        self.settle(claims, confirmed).await;
        self.finish(ops, outcomes, &ids)
    }

    /// Sends the updates and deactivations. A form the server refuses (400, 500, 501) is sent
    /// once more in the other form: a PATCH by explicit paths as a PUT of the merged resource,
    /// a deactivation in the other PATCH form (remembered for the tenant when it works).
    async fn write_all(&self, ops: &[Operation], writes: Vec<Write>) -> Vec<(Write, SubResult)> {
        let form = self.patch_form();
        let mut by_key: HashMap<usize, Write> = HashMap::new();
        let mut subs = Vec::new();
        for write in writes {
            match self.write_op(&ops[write.key], &write, form) {
                Some(sub) => subs.push(sub),
                // PATCH with nothing to change cannot happen (phase 3 found a difference).
                None => continue,
            }
            by_key.insert(write.key, write);
        }
        let mut done = Vec::new();
        let mut again = Vec::new();
        for (key, result) in self.dispatch(subs).await {
            let refused =
                matches!(&result, SubResult::Reply(r) if matches!(r.status, 400 | 500 | 501));
            let Some(write) = by_key.remove(&key) else {
                continue; // one result per sub-operation sent
            };
            let fallback = refused
                .then(|| self.fallback_op(&ops[key], &write, form))
                .flatten();
            match fallback {
                Some(sub) => {
                    again.push(sub);
                    by_key.insert(key, write);
                }
                None => done.push((write, result)),
            }
        }
        let mut switched = false;
        for (key, result) in self.dispatch(again).await {
            let Some(write) = by_key.remove(&key) else {
                continue;
            };
            let worked = matches!(&result, SubResult::Reply(r) if (200..300).contains(&r.status));
            if write.deactivate && worked && !switched {
                switched = true;
                self.set_patch_form(form.other()).await;
            }
            done.push((write, result));
        }
        done
    }

    /// The request of a write in the current forms.
    fn write_op(&self, op: &Operation, write: &Write, form: PatchForm) -> Option<SubOp> {
        let path = user_path(&write.id);
        if write.deactivate {
            return Some(SubOp {
                key: write.key,
                verb: Verb::Patch,
                path: Cow::Owned(path),
                data: deactivation(form),
            });
        }
        let resource = write.resource.as_ref()?;
        let (verb, data) = match self.engine.config.update_method {
            UpdateMethod::Put => (Verb::Put, put_body(resource, op)),
            UpdateMethod::Patch => {
                let operations = patch_operations(resource, &op.user);
                if operations.is_empty() {
                    return None;
                }
                let body = json!({"schemas": [PATCH_OP], "Operations": operations});
                (Verb::Patch, Document::from_value(&body))
            }
        };
        Some(SubOp {
            key: write.key,
            verb,
            path: Cow::Owned(path),
            data,
        })
    }

    /// The other form of a refused write, if there is one.
    fn fallback_op(&self, op: &Operation, write: &Write, form: PatchForm) -> Option<SubOp> {
        let path = Cow::Owned(user_path(&write.id));
        if write.deactivate {
            return Some(SubOp {
                key: write.key,
                verb: Verb::Patch,
                path,
                data: deactivation(form.other()),
            });
        }
        match (self.engine.config.update_method, &write.resource) {
            (UpdateMethod::Patch, Some(resource)) => Some(SubOp {
                key: write.key,
                verb: Verb::Put,
                path,
                data: put_body(resource, op),
            }),
            _ => None,
        }
    }

    /// The outcome of anything but success: deferred, retry, or a permanent failure.
    fn unsuccessful(&self, op: &Operation, result: SubResult) -> Outcome {
        match result {
            SubResult::Deferred(delay) => Outcome::Deferred {
                reason: "not sent: the cycle's deadline or request rate budget would be passed"
                    .into(),
                delay,
                resource_id: op.resource_id.clone(),
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

    /// Every operation's outcome; one left without (a path above missed it) is retried rather
    /// than lost. Work sent again carries the user's id as far as the cycle found it (`ids`).
    fn finish(
        &self,
        ops: &[Operation],
        outcomes: Vec<Option<Outcome>>,
        ids: &HashMap<usize, String>,
    ) -> Vec<Outcome> {
        outcomes
            .into_iter()
            .zip(ops)
            .enumerate()
            .map(|(k, (outcome, op))| {
                let mut outcome = outcome.unwrap_or_else(|| {
                    let reason = "no outcome was recorded for this operation";
                    self.retry_as(Spend::Attempt, op, None, reason, None)
                });
                if let Outcome::Retry { resource_id, .. } | Outcome::Deferred { resource_id, .. } =
                    &mut outcome
                {
                    *resource_id = ids.get(&k).cloned();
                }
                tracing::debug!(user = %mask_email(&op.user.user_name), outcome = outcome.kind(), "operation done");
                outcome
            })
            .collect()
    }
}

fn skipped(reason: &str) -> Outcome {
    Outcome::Skipped {
        reason: reason.into(),
    }
}

/// What the ledger records for `op` once the tenant holds what it asked; `holds` is the user
/// as the tenant now holds it, when known (its fingerprint and userName spelling; unknown, the
/// recorded fingerprint stays, as after a deactivation by id).
fn confirmation(op: &Operation, id: &str, holds: Option<&Value>) -> Confirmed {
    let user = &op.user;
    let tenant_name = holds
        .and_then(|r| r["userName"].as_str())
        .filter(|name| crate::user::user_name_key(name) == user.key());
    Confirmed {
        key: user.key(),
        id: id.to_string(),
        user_name: tenant_name.unwrap_or(&user.user_name).to_string(),
        external_id: user.external_id.clone(),
        fingerprint: holds.map(|r| Managed::of_resource(r).fingerprint()),
        asked: Some(Managed::of_user(user).fingerprint()),
        active: user.active,
    }
}

/// `/Users/<id>` with the id escaped as a path segment.
fn user_path(id: &str) -> String {
    format!("/Users/{}", super::reads::escape_id(id))
}

fn put_body(resource: &Value, op: &Operation) -> Document {
    Document::from_value(&merge_into(resource, &op.user))
}

fn permanent(reply: &SubReply) -> Outcome {
    Outcome::Failed {
        status: Some(reply.status),
        scim_type: reply.error().0,
        detail: failure_detail(reply),
    }
}

/// Several operations for one userName (case-insensitively) in a cycle: the one from the
/// newest source wins (the later one in the batch when their times are equal or unknown).
fn supersede_duplicates(ops: &[Operation], outcomes: &mut [Option<Outcome>]) {
    let mut winner: HashMap<String, usize> = HashMap::new();
    for (k, op) in ops.iter().enumerate() {
        let key = op.user.key();
        let newer = match winner.get(&key) {
            Some(&w) => op.source_time.unwrap_or(0) >= ops[w].source_time.unwrap_or(0),
            None => true,
        };
        if newer {
            winner.insert(key, k);
        }
    }
    for (k, op) in ops.iter().enumerate() {
        if winner.get(&op.user.key()) != Some(&k) {
            outcomes[k] = Some(skipped(
                "superseded by a later operation for the same userName",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user::sample;

    #[test]
    fn the_newest_source_wins_within_a_batch() {
        let op = |name: &str, at: Option<u64>| {
            let op = Operation::new(sample(name), "test", None);
            match at {
                Some(at) => op.with_source_time(at),
                None => op,
            }
        };
        let ops = [
            op("bob@example.com", Some(200)),
            op("BOB@example.com", Some(100)),
            op("ada@example.com", None),
            op("Ada@example.com", None),
        ];
        let mut outcomes = vec![None; ops.len()];
        supersede_duplicates(&ops, &mut outcomes);
        let kept: Vec<bool> = outcomes.iter().map(Option::is_none).collect();
        assert_eq!(kept, [true, false, false, true]);
    }
}
