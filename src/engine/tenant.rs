//! The engine's memory of the tenant (the ledger, when it has one): the tenant listed into it on
//! first contact and on reconcile, each cycle's entries, claims in source-time order, what the
//! tenant holds after each write, and the deactivation PATCH form that works for the tenant.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cycle::Cycle;
use super::decide::Decision;
use super::Engine;
use crate::ledger::{Claim, Confirmed, Ledger, LedgerError, Refusal, TenantMeta, UserEntry};
use crate::mask::mask_email;
use crate::operation::{unix_now, Operation};
use crate::scim::managed::Managed;
use crate::scim::patch::PatchForm;
use crate::scim::request::SubResult;
use crate::user::user_name_key;

/// Longest an operation waits for an older one holding its user before it looks again.
const WAIT_AT_MOST: Duration = Duration::from_secs(5);

/// Pages a listing reads at most (a server that never ends its pages must not hold a cycle).
const MAX_PAGES: u64 = 100_000;

/// What a listing of the tenant found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Users listed (with an id and a userName).
    pub users: u64,
    /// userNames held by several users case-insensitively (left out of the ledger).
    pub ambiguous: u64,
    /// Users this deployment manages whose managed attributes were changed in the tenant by
    /// someone else since they were last written (masked userNames).
    pub drift: Vec<String>,
    /// Requests sent.
    pub requests: u64,
}

/// Why the tenant could not be listed.
#[derive(Debug, thiserror::Error)]
#[error("the tenant could not be listed: {0}")]
pub struct ListingError(pub String);

impl Engine {
    /// The engine with a ledger: matching, unchanged users and order as the ledger allows.
    pub fn with_ledger(self, ledger: Arc<dyn Ledger>) -> Self {
        Self {
            ledger: Some(ledger),
            ..self
        }
    }

    /// Whether the engine keeps a ledger.
    pub fn has_ledger(&self) -> bool {
        self.ledger.is_some()
    }

    /// The ledger's tenant id for the current credentials, once the tenant is listed in it
    /// (listing it now on first contact); None without a ledger.
    pub(super) async fn prepare_tenant(
        &self,
        base_url: &str,
        deadline: Instant,
    ) -> Result<Option<String>, String> {
        let Some(ledger) = &self.ledger else {
            return Ok(None);
        };
        let tenant = crate::ledger::tenant_id(base_url);
        let mut ready = self.listed.lock().await;
        if ready.contains(&tenant) {
            return Ok(Some(tenant));
        }
        let meta = ledger.meta(&tenant).await.map_err(|e| e.to_string())?;
        if let Some(form) = meta.patch_form.as_deref().and_then(PatchForm::parse) {
            self.patch_form.store(form.to_u8(), Ordering::Relaxed);
        }
        if meta.listed_at.is_none() {
            let listing = self
                .list_into(ledger.as_ref(), &tenant, deadline)
                .await
                .map_err(|e| e.to_string())?;
            tracing::info!(
                users = listing.users,
                ambiguous = listing.ambiguous,
                requests = listing.requests,
                "listed the tenant into the ledger"
            );
        }
        ready.insert(tenant.clone());
        Ok(Some(tenant))
    }

    /// Lists the tenant into `ledger` and notes when (in its meta).
    async fn list_into(
        &self,
        ledger: &dyn Ledger,
        tenant: &str,
        deadline: Instant,
    ) -> Result<Listing, ListingError> {
        let cycle = Cycle::new(self, deadline).for_tenant(Some(tenant.to_string()));
        let listing = cycle.list_tenant(ledger, tenant).await?;
        update_meta(ledger, tenant, |meta| {
            meta.listed_at = Some(unix_now() * 1000)
        })
        .await
        .map_err(|e| ListingError(e.to_string()))?;
        Ok(listing)
    }

    /// Lists the tenant again into the ledger and reports drift; changes nothing in the
    /// tenant. Needs a ledger.
    pub async fn reconcile(&self, deadline: Instant) -> Result<Listing, ListingError> {
        let Some(ledger) = &self.ledger else {
            return Err(ListingError("reconcile needs a ledger".into()));
        };
        let base_url = self
            .http
            .base_url(Some(deadline))
            .await
            .map_err(|e| ListingError(e.to_string()))?;
        self.discover().await.map_err(ListingError)?;
        let tenant = crate::ledger::tenant_id(&base_url);
        let listing = self.list_into(ledger.as_ref(), &tenant, deadline).await?;
        self.listed.lock().await.insert(tenant);
        Ok(listing)
    }
}

impl Cycle<'_> {
    /// Lists every user of the tenant page by page into `ledger` (not as managed), noting drift
    /// of managed users and leaving out userNames that several users share.
    pub(super) async fn list_tenant(
        &self,
        ledger: &dyn Ledger,
        tenant: &str,
    ) -> Result<Listing, ListingError> {
        let mut listing = Listing::default();
        let mut seen: HashSet<String> = HashSet::new();
        let mut ambiguous: HashSet<String> = HashSet::new();
        let mut start = 1;
        for _ in 0..MAX_PAGES {
            let page = self.list_page(start).await.map_err(|failed| {
                ListingError(match failed {
                    SubResult::Reply(r) => super::classify::failure_detail(&r),
                    SubResult::Transient { reason, .. } => reason,
                    SubResult::Deferred(_) => {
                        "not finished before the deadline or within the request rate".into()
                    }
                })
            })?;
            let mut users = Vec::new();
            for resource in &page.resources {
                let (Some(id), Some(name)) =
                    (resource["id"].as_str(), resource["userName"].as_str())
                else {
                    continue;
                };
                let key = user_name_key(name);
                if !seen.insert(key.clone()) {
                    ambiguous.insert(key);
                    continue;
                }
                users.push(Confirmed {
                    key,
                    id: id.to_string(),
                    user_name: name.to_string(),
                    external_id: resource["externalId"].as_str().map(str::to_string),
                    fingerprint: Some(Managed::of_resource(resource).fingerprint()),
                    asked: None,
                    active: resource["active"].as_bool().unwrap_or(true),
                });
            }
            users.retain(|u| !ambiguous.contains(&u.key));
            let keys: Vec<String> = users.iter().map(|u| u.key.clone()).collect();
            let known = ledger
                .get(tenant, &keys)
                .await
                .map_err(|e| ListingError(e.to_string()))?;
            for user in &mut users {
                let Some(entry) = known.get(&user.key) else {
                    continue;
                };
                let changed = entry.fingerprint.is_some() && entry.fingerprint != user.fingerprint;
                if entry.managed && (changed || entry.active != Some(user.active)) {
                    listing.drift.push(mask_email(&user.user_name).to_string());
                }
                // The tenant no longer holds what was last asked: that no longer says
                // "unchanged" (the next run compares with what the tenant holds now).
                if changed {
                    user.asked = user.fingerprint.clone();
                }
            }
            ledger
                .confirm(tenant, &users, false)
                .await
                .map_err(|e| ListingError(e.to_string()))?;
            listing.users += users.len() as u64;
            match page.next_start(start) {
                Some(next) => start = next,
                None => break,
            }
        }
        // A userName on a later page may have made an earlier one ambiguous.
        let ambiguous: Vec<String> = ambiguous.into_iter().collect();
        if !ambiguous.is_empty() {
            tracing::warn!(
                users = ambiguous.len(),
                "several users of the tenant share a userName case-insensitively: they are left out of the ledger and updated only after a lookup"
            );
            ledger
                .forget(tenant, &ambiguous)
                .await
                .map_err(|e| ListingError(e.to_string()))?;
        }
        listing.ambiguous = ambiguous.len() as u64;
        listing.users -= listing.ambiguous.min(listing.users);
        listing.requests = self.stats().requests;
        Ok(listing)
    }

    /// The ledger's entries for the live operations (none without a ledger).
    pub(super) async fn entries(
        &self,
        ops: &[Operation],
        live: &[usize],
    ) -> Result<HashMap<String, UserEntry>, String> {
        let (Some(ledger), Some(tenant)) = (&self.engine.ledger, &self.tenant) else {
            return Ok(HashMap::new());
        };
        let keys: Vec<String> = live.iter().map(|&k| ops[k].user.key()).collect();
        ledger.get(tenant, &keys).await.map_err(|e| e.to_string())
    }

    /// Operations that would create a user the ledger knows under another userName by its
    /// `externalId` (the person's userName changed) update that user instead; returns the
    /// renamed operations with the userName key they were known by.
    pub(super) async fn match_external_ids(
        &self,
        ops: &[Operation],
        plan: &mut [(usize, Decision)],
    ) -> Result<HashMap<usize, String>, String> {
        let (Some(ledger), Some(tenant)) = (&self.engine.ledger, &self.tenant) else {
            return Ok(HashMap::new());
        };
        let wanted: Vec<String> = plan
            .iter()
            .filter(|(_, d)| matches!(d, Decision::Create))
            .filter_map(|(k, _)| ops[*k].user.external_id.clone())
            .collect();
        if wanted.is_empty() {
            return Ok(HashMap::new());
        }
        let found = ledger
            .find_external(tenant, &wanted)
            .await
            .map_err(|e| e.to_string())?;
        let mut renamed = HashMap::new();
        for (k, decision) in plan.iter_mut() {
            let user = &ops[*k].user;
            let known = user.external_id.as_ref().and_then(|x| found.get(x));
            if let (Decision::Create, Some(entry)) = (&decision, known) {
                if let Some(id) = entry.id.clone().filter(|_| entry.key != user.key()) {
                    renamed.insert(*k, entry.key.clone());
                    *decision = Decision::Update { id };
                }
            }
        }
        Ok(renamed)
    }

    /// Claims the users of the operations that will act, in source-time order, holding them
    /// until the cycle's deadline: an operation whose claim loses to a newer one becomes
    /// [`Decision::Superseded`]; one that finds an older operation still holding its user
    /// becomes [`Decision::Wait`]. Returns the claims granted (to release at the end).
    pub(super) async fn claim(
        &self,
        ops: &[Operation],
        entries: &HashMap<String, UserEntry>,
        plan: &mut [(usize, Decision)],
    ) -> Result<Vec<Claim>, String> {
        let (Some(ledger), Some(tenant)) = (&self.engine.ledger, &self.tenant) else {
            return Ok(Vec::new());
        };
        let mut claims = Vec::new();
        for (k, decision) in plan.iter() {
            let writes = match decision {
                Decision::Skip(_) | Decision::Superseded | Decision::Wait { .. } => continue,
                Decision::Unchanged { .. } => false,
                _ => true,
            };
            let op = &ops[*k];
            let Some(at) = op.source_time else {
                continue;
            };
            let key = op.user.key();
            let applied = entries.get(&key).and_then(|e| e.applied_at);
            // A write holds its user (even against its own earlier attempt's claim); a user
            // left unchanged only records that this newer source saw it.
            if writes || applied.is_none_or(|applied| applied < at) {
                claims.push(Claim { key, at });
            }
        }
        if claims.is_empty() {
            return Ok(claims);
        }
        let now = crate::operation::unix_millis();
        let hold = self.deadline.saturating_duration_since(Instant::now());
        let hold_until = now + u64::try_from(hold.as_millis()).unwrap_or(u64::MAX / 2);
        let refused: HashMap<String, Refusal> = ledger
            .claim(tenant, &claims, now, hold_until)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .collect();
        for (k, decision) in plan.iter_mut() {
            match refused.get(&ops[*k].user.key()) {
                Some(Refusal::Superseded) => *decision = Decision::Superseded,
                // The older operation usually finishes within seconds, long before its hold
                // ends: look again soon (waiting costs no attempt).
                Some(Refusal::Busy { until }) => {
                    let held = Duration::from_millis(until.saturating_sub(now));
                    *decision = Decision::Wait {
                        delay: held.min(WAIT_AT_MOST),
                    }
                }
                None => {}
            }
        }
        claims.retain(|c| !refused.contains_key(&c.key));
        Ok(claims)
    }

    /// Records what the tenant now holds and ends this cycle's holds: the users it claimed
    /// are settled with their claims (recorded only where the claim is still theirs), the
    /// others recorded outright. A failure is logged, not fatal: the writes happened, and the
    /// next run compares with the tenant again.
    pub(super) async fn settle(&self, claims: Vec<Claim>, confirmed: Vec<Confirmed>) {
        let (Some(ledger), Some(tenant)) = (&self.engine.ledger, &self.tenant) else {
            return;
        };
        let mut by_key: HashMap<String, Confirmed> =
            confirmed.into_iter().map(|c| (c.key.clone(), c)).collect();
        let settled: Vec<(Claim, Option<Confirmed>)> = claims
            .into_iter()
            .map(|claim| {
                let confirmed = by_key.remove(&claim.key);
                (claim, confirmed)
            })
            .collect();
        let unclaimed: Vec<Confirmed> = by_key.into_values().collect();
        let (users, holds) = (unclaimed.len() + settled.len(), settled.len());
        let result = match ledger.settle(tenant, &settled).await {
            Ok(()) if unclaimed.is_empty() => Ok(()),
            Ok(()) => ledger.confirm(tenant, &unclaimed, true).await,
            Err(error) => Err(error),
        };
        if let Err(error) = result {
            tracing::warn!(%error, users, holds, "the ledger was not updated after the writes (holds end at the deadline)");
        }
    }

    /// Forgets users the tenant no longer has.
    pub(super) async fn forget(&self, keys: &[String]) {
        let (Some(ledger), Some(tenant)) = (&self.engine.ledger, &self.tenant) else {
            return;
        };
        if keys.is_empty() {
            return;
        }
        if let Err(error) = ledger.forget(tenant, keys).await {
            tracing::warn!(%error, "the ledger could not forget users the tenant no longer has");
        }
    }

    /// Marks the tenant to be listed again (the ledger missed a user it has).
    pub(super) async fn relist(&self) {
        let (Some(ledger), Some(tenant)) = (&self.engine.ledger, &self.tenant) else {
            return;
        };
        self.engine.listed.lock().await.remove(tenant);
        let result = update_meta(ledger.as_ref(), tenant, |meta| meta.listed_at = None).await;
        if let Err(error) = result {
            tracing::warn!(%error, "the tenant could not be marked to be listed again");
        }
    }

    /// The deactivation form to try first.
    pub(super) fn patch_form(&self) -> PatchForm {
        PatchForm::from_u8(self.engine.patch_form.load(Ordering::Relaxed))
    }

    /// Remembers the form that worked, in the process and in the ledger.
    pub(super) async fn set_patch_form(&self, form: PatchForm) {
        self.engine
            .patch_form
            .store(form.to_u8(), Ordering::Relaxed);
        tracing::info!(
            form = form.as_str(),
            "the tenant refuses the other PATCH form for deactivation: using this one"
        );
        let (Some(ledger), Some(tenant)) = (&self.engine.ledger, &self.tenant) else {
            return;
        };
        let name = form.as_str().to_string();
        let result =
            update_meta(ledger.as_ref(), tenant, |meta| meta.patch_form = Some(name)).await;
        if let Err(error) = result {
            tracing::warn!(%error, "the PATCH form that works was not saved in the ledger");
        }
    }
}

/// Reads what the ledger knows of the tenant, changes it, and writes it back.
async fn update_meta(
    ledger: &dyn Ledger,
    tenant: &str,
    change: impl FnOnce(&mut TenantMeta),
) -> Result<(), LedgerError> {
    let mut meta = ledger.meta(tenant).await?;
    change(&mut meta);
    ledger.set_meta(tenant, &meta).await
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

impl Engine {
    /// What a cycle would decide for each operation (listing the tenant into the ledger first,
    /// as a cycle does), without sending anything but reads: `provision --dry-run`.
    pub async fn plan(
        &self,
        operations: &[Operation],
        deadline: Instant,
    ) -> Result<Vec<Decision>, PlanError> {
        let base_url = self
            .http
            .base_url(Some(deadline))
            .await
            .map_err(|e| PlanError(e.to_string()))?;
        let limits = self.discover().await.map_err(PlanError)?;
        let tenant = self
            .prepare_tenant(&base_url, deadline)
            .await
            .map_err(PlanError)?;
        let cycle = Cycle::new(self, deadline).for_tenant(tenant);
        let live: Vec<usize> = (0..operations.len()).collect();
        let entries = cycle.entries(operations, &live).await.map_err(PlanError)?;
        let rules = super::decide::Rules {
            create_inactive: self.config.create_inactive,
            filter_supported: limits.filter,
        };
        Ok(operations
            .iter()
            .map(|op| super::decide::decide(op, entries.get(&op.user.key()), rules))
            .collect())
    }
}

/// Why the tenant's users could not be known before a run.
#[derive(Debug, thiserror::Error)]
pub enum KnownUsersError {
    /// Worth waiting for: the service, its token endpoint or the ledger did not answer now.
    #[error("{0}")]
    Unavailable(String),
    /// Waiting would not help: the credentials are refused, or there is no ledger.
    #[error("{0}")]
    Refused(String),
}

impl Engine {
    /// Every user the ledger knows for the current tenant (listing the tenant into it first, as
    /// a cycle does): what a run's census compares its file with. Needs a ledger.
    pub async fn known_users(&self, deadline: Instant) -> Result<Vec<UserEntry>, KnownUsersError> {
        let Some(ledger) = &self.ledger else {
            return Err(KnownUsersError::Refused(
                "runs need a ledger (LEDGER_TABLE)".into(),
            ));
        };
        let base_url =
            self.http
                .base_url(Some(deadline))
                .await
                .map_err(|e| match e.is_transient() {
                    true => KnownUsersError::Unavailable(e.to_string()),
                    false => KnownUsersError::Refused(e.to_string()),
                })?;
        self.discover_until(Some(deadline))
            .await
            .map_err(KnownUsersError::Unavailable)?;
        let tenant = crate::ledger::tenant_id(&base_url);
        self.prepare_tenant(&base_url, deadline)
            .await
            .map_err(KnownUsersError::Unavailable)?;
        ledger
            .all(&tenant)
            .await
            .map_err(|e| KnownUsersError::Unavailable(e.to_string()))
    }
}
