//! The ledger kept in the process: for the CLI (optionally loaded from and saved to a JSON file
//! with `--ledger FILE`) and for tests that need no DynamoDB.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use futures_util::future::{self, BoxFuture};
use serde::{Deserialize, Serialize};

use super::{Claim, Confirmed, Ledger, LedgerError, Refusal, TenantMeta, UserEntry};

/// One tenant's entries, as kept in memory and in the file.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct TenantState {
    #[serde(default)]
    listed_at: Option<u64>,
    #[serde(default)]
    patch_form: Option<String>,
    #[serde(default)]
    users: BTreeMap<String, StoredUser>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct StoredUser {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    asked: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    active: Option<bool>,
    #[serde(default)]
    managed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    applied_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    held_until: Option<u64>,
}

impl StoredUser {
    fn record(&mut self, c: &Confirmed, managed: bool) {
        self.id = Some(c.id.clone());
        self.user_name = Some(c.user_name.clone());
        self.external_id = c.external_id.clone();
        if let Some(fingerprint) = &c.fingerprint {
            self.fingerprint = Some(fingerprint.clone());
        }
        if let Some(asked) = &c.asked {
            self.asked = Some(asked.clone());
        }
        self.active = Some(c.active);
        self.managed |= managed;
    }

    fn entry(&self, key: &str) -> UserEntry {
        UserEntry {
            key: key.to_string(),
            id: self.id.clone(),
            user_name: self.user_name.clone(),
            external_id: self.external_id.clone(),
            fingerprint: self.fingerprint.clone(),
            asked: self.asked.clone(),
            active: self.active,
            managed: self.managed,
            applied_at: self.applied_at,
            held_until: self.held_until,
        }
    }
}

/// A ledger in memory, optionally backed by a JSON file.
#[derive(Debug, Default)]
pub struct MemoryLedger {
    tenants: Mutex<HashMap<String, TenantState>>,
    file: Option<PathBuf>,
    /// Forget a user once its write is settled (see [`MemoryLedger::for_one_run`]).
    forget_written: bool,
}

impl MemoryLedger {
    /// An empty ledger that lives as long as the process.
    pub fn new() -> Self {
        Self::default()
    }

    /// A ledger for one run that nothing outlives (`provision` without `--ledger`): it keeps
    /// the tenant's listing and the users in flight, and forgets a user once its write is
    /// settled — a file names each user once, so nothing in the run asks about it again —
    /// so that memory follows the tenant's size and the window in flight, not the file's.
    pub fn for_one_run() -> Self {
        Self {
            forget_written: true,
            ..Self::default()
        }
    }

    /// A ledger loaded from `path` (empty if the file does not exist yet), saved there by
    /// [`MemoryLedger::save`].
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let error = |action, reason: String| LedgerError::Store {
            store: path.display().to_string(),
            action,
            reason,
        };
        let tenants = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| error("read", format!("not a ledger file: {e}")))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(error("read", e.to_string())),
        };
        Ok(Self {
            tenants: Mutex::new(tenants),
            file: Some(path.to_path_buf()),
            forget_written: false,
        })
    }

    /// Writes the ledger to its file (a temporary file renamed over it, so a crash leaves the
    /// old or the new one whole); nothing to do without a file.
    pub fn save(&self) -> Result<(), LedgerError> {
        let Some(path) = &self.file else {
            return Ok(());
        };
        let error = |reason: String| LedgerError::Store {
            store: path.display().to_string(),
            action: "written",
            reason,
        };
        let bytes = serde_json::to_vec(&*self.lock()).map_err(|e| error(e.to_string()))?;
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, bytes).map_err(|e| error(e.to_string()))?;
        std::fs::rename(&temporary, path).map_err(|e| error(e.to_string()))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, TenantState>> {
        // Every update below is a few field assignments: a panic cannot leave one half done.
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Ledger for MemoryLedger {
    fn get<'a>(
        &'a self,
        tenant: &'a str,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, UserEntry>, LedgerError>> {
        let tenants = self.lock();
        let found = tenants.get(tenant).map_or_else(HashMap::new, |t| {
            keys.iter()
                .filter_map(|k| t.users.get(k).map(|u| (k.clone(), u.entry(k))))
                .collect()
        });
        Box::pin(future::ready(Ok(found)))
    }

    fn find_external<'a>(
        &'a self,
        tenant: &'a str,
        external_ids: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, UserEntry>, LedgerError>> {
        let tenants = self.lock();
        let mut found = HashMap::new();
        if let Some(t) = tenants.get(tenant) {
            for (key, user) in &t.users {
                match &user.external_id {
                    Some(external) if user.id.is_some() && external_ids.contains(external) => {
                        found.insert(external.clone(), user.entry(key));
                    }
                    _ => {}
                }
            }
        }
        Box::pin(future::ready(Ok(found)))
    }

    fn claim<'a>(
        &'a self,
        tenant: &'a str,
        claims: &'a [Claim],
        now: u64,
        hold_until: u64,
    ) -> BoxFuture<'a, Result<Vec<(String, Refusal)>, LedgerError>> {
        let mut tenants = self.lock();
        let state = tenants.entry(tenant.to_string()).or_default();
        let mut refused = Vec::new();
        for claim in claims {
            let user = state.users.entry(claim.key.clone()).or_default();
            match (user.applied_at, user.held_until) {
                (Some(applied), _) if applied > claim.at => {
                    refused.push((claim.key.clone(), Refusal::Superseded))
                }
                (Some(applied), Some(until)) if applied != claim.at && until > now => {
                    refused.push((claim.key.clone(), Refusal::Busy { until }))
                }
                _ => {
                    user.applied_at = Some(claim.at);
                    user.held_until = Some(hold_until);
                }
            }
        }
        Box::pin(future::ready(Ok(refused)))
    }

    fn settle<'a>(
        &'a self,
        tenant: &'a str,
        settled: &'a [(Claim, Option<Confirmed>)],
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        let mut tenants = self.lock();
        let state = tenants.entry(tenant.to_string()).or_default();
        for (claim, confirmed) in settled {
            let user = state.users.entry(claim.key.clone()).or_default();
            if user.applied_at != Some(claim.at) {
                continue;
            }
            user.held_until = None;
            match confirmed {
                Some(_) if self.forget_written => {
                    state.users.remove(&claim.key);
                }
                Some(c) => user.record(c, true),
                None => {}
            }
        }
        Box::pin(future::ready(Ok(())))
    }

    fn confirm<'a>(
        &'a self,
        tenant: &'a str,
        users: &'a [Confirmed],
        managed: bool,
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        let mut tenants = self.lock();
        let state = tenants.entry(tenant.to_string()).or_default();
        for c in users {
            if managed && self.forget_written {
                state.users.remove(&c.key);
                continue;
            }
            state
                .users
                .entry(c.key.clone())
                .or_default()
                .record(c, managed);
        }
        Box::pin(future::ready(Ok(())))
    }

    fn forget<'a>(
        &'a self,
        tenant: &'a str,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        let mut tenants = self.lock();
        if let Some(state) = tenants.get_mut(tenant) {
            for key in keys {
                if let Some(user) = state.users.get_mut(key) {
                    *user = StoredUser {
                        applied_at: user.applied_at,
                        held_until: user.held_until,
                        ..StoredUser::default()
                    };
                }
            }
        }
        Box::pin(future::ready(Ok(())))
    }

    fn all<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<Vec<UserEntry>, LedgerError>> {
        let tenants = self.lock();
        let all = tenants.get(tenant).map_or_else(Vec::new, |t| {
            t.users.iter().map(|(k, u)| u.entry(k)).collect()
        });
        Box::pin(future::ready(Ok(all)))
    }

    fn meta<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<TenantMeta, LedgerError>> {
        let tenants = self.lock();
        let meta = tenants
            .get(tenant)
            .map_or_else(TenantMeta::default, |t| TenantMeta {
                listed_at: t.listed_at,
                patch_form: t.patch_form.clone(),
            });
        Box::pin(future::ready(Ok(meta)))
    }

    fn set_meta<'a>(
        &'a self,
        tenant: &'a str,
        meta: &'a TenantMeta,
    ) -> BoxFuture<'a, Result<(), LedgerError>> {
        let mut tenants = self.lock();
        let state = tenants.entry(tenant.to_string()).or_default();
        state.listed_at = meta.listed_at;
        state.patch_form = meta.patch_form.clone();
        Box::pin(future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn confirmed(key: &str) -> Confirmed {
        Confirmed {
            key: key.into(),
            id: format!("id-{key}"),
            user_name: key.into(),
            external_id: None,
            fingerprint: None,
            asked: None,
            active: true,
        }
    }

    #[tokio::test]
    async fn a_ledger_for_one_run_forgets_users_once_written_and_keeps_the_listing() {
        let ledger = MemoryLedger::for_one_run();
        let listed = confirmed("listed@x.org");
        ledger
            .confirm("t", std::slice::from_ref(&listed), false)
            .await
            .unwrap();
        let claim = Claim {
            key: "new@x.org".into(),
            at: 5,
        };
        ledger
            .claim("t", std::slice::from_ref(&claim), 1, 10)
            .await
            .unwrap();
        let keys = ["new@x.org".to_string(), "listed@x.org".to_string()];
        assert_eq!(
            ledger.get("t", &keys).await.unwrap().len(),
            2,
            "in flight: kept"
        );
        ledger
            .settle("t", &[(claim, Some(confirmed("new@x.org")))])
            .await
            .unwrap();
        ledger
            .confirm("t", &[confirmed("found@x.org")], true)
            .await
            .unwrap();
        let all: Vec<String> = ledger
            .all("t")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.key)
            .collect();
        assert_eq!(all, ["listed@x.org"]);
    }
}
