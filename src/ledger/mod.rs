//! The ledger: what this deployment knows of the tenant — each user's id, the tenant's spelling
//! of the userName, a fingerprint of the managed attributes last confirmed, whether this
//! deployment manages the user, and the source time of the last operation applied — so that
//! users are matched case-insensitively whatever the server does, unchanged users get no
//! write, and an older operation never overwrites a newer one.
//!
//! The port is [`Ledger`]; [`memory::MemoryLedger`] keeps it in the process (the CLI, optionally
//! saved to a file) and [`dynamodb::DynamoLedger`] in a DynamoDB table (the Lambda function).

pub mod dynamodb;
pub mod memory;

use std::collections::HashMap;

use futures_util::future::BoxFuture;

/// What the ledger knows of one user of one tenant.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserEntry {
    /// The userName folded (`crate::user::user_name_key`): the key.
    pub key: String,
    /// The SCIM id; None while only claimed by an operation not yet applied.
    pub id: Option<String>,
    /// The tenant's spelling of the userName.
    pub user_name: Option<String>,
    /// `externalId`, a secondary key.
    pub external_id: Option<String>,
    /// Fingerprint of the managed attributes the tenant holds, as last confirmed or listed
    /// (`crate::scim::managed::Managed::fingerprint`): drift is judged against it.
    pub fingerprint: Option<String>,
    /// Fingerprint of what the last operation applied asked for (an empty cell leaves the
    /// tenant's value, so the tenant may hold more): an operation asking the same is unchanged.
    pub asked: Option<String>,
    /// Whether the user is active in the tenant, as last confirmed.
    pub active: Option<bool>,
    /// Whether this deployment created or updated the user (full sync only touches these).
    pub managed: bool,
    /// Source time (ms since the Unix epoch) of the newest operation applied or claimed.
    pub applied_at: Option<u64>,
    /// Until when (ms since the Unix epoch) that operation holds the user, its write possibly
    /// in flight; None once released.
    pub held_until: Option<u64>,
}

/// A claim: this user, for an operation of this source time (ms since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The userName folded.
    pub key: String,
    /// The operation's source time.
    pub at: u64,
}

/// Why a claim was not granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// An operation with a newer source time was applied or claimed: this one is stale.
    Superseded,
    /// An older operation holds the user until this time (ms since the Unix epoch): its write
    /// may still be in flight, and this one must not overtake it.
    Busy {
        /// When its hold ends at the latest.
        until: u64,
    },
}

/// What the ledger knows of the tenant as a whole.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TenantMeta {
    /// When the tenant was last listed in full (ms since the Unix epoch); None: never.
    pub listed_at: Option<u64>,
    /// The deactivation PATCH form that worked last ("path" or "value").
    pub patch_form: Option<String>,
}

/// A user's state as confirmed by the tenant (after a write, or seen in a listing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confirmed {
    /// The userName folded.
    pub key: String,
    /// The SCIM id.
    pub id: String,
    /// The tenant's spelling of the userName.
    pub user_name: String,
    /// `externalId`, when known.
    pub external_id: Option<String>,
    /// Fingerprint of the managed attributes the tenant now holds (None: not known, the
    /// recorded one stays: a deactivation changes only `active`).
    pub fingerprint: Option<String>,
    /// Fingerprint of what the operation asked for (None: the recorded one stays).
    pub asked: Option<String>,
    /// Whether the user is active.
    pub active: bool,
}

/// Why the ledger could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The store answered with an error or could not be reached.
    #[error("the ledger ({store}) could not be {action}: {reason}")]
    Store {
        /// Which store (table name, file path).
        store: String,
        /// What was being done ("read", "written").
        action: &'static str,
        /// What went wrong, without item contents.
        reason: String,
    },
}

/// Where the tool keeps its memory of the tenant. Every method takes the tenant's id
/// ([`tenant_id`]) so that one store can serve several tenants.
pub trait Ledger: Send + Sync {
    /// The entries of these keys that exist.
    fn get<'a>(
        &'a self,
        tenant: &'a str,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, UserEntry>, LedgerError>>;

    /// The entries of the users with these `externalId`s (a secondary key: a user whose
    /// userName changed is found by it), by externalId.
    fn find_external<'a>(
        &'a self,
        tenant: &'a str,
        external_ids: &'a [String],
    ) -> BoxFuture<'a, Result<HashMap<String, UserEntry>, LedgerError>>;

    /// Claims each user for its operation, atomically per user, holding it until `hold_until`
    /// (ms since the Unix epoch; the clock reads `now`). A claim is granted when no newer
    /// operation was applied or claimed and no older one holds the user (a claim of the same
    /// time is the same operation again and is granted). Returns the claims refused, and why.
    fn claim<'a>(
        &'a self,
        tenant: &'a str,
        claims: &'a [Claim],
        now: u64,
        hold_until: u64,
    ) -> BoxFuture<'a, Result<Vec<(String, Refusal)>, LedgerError>>;

    /// Ends the holds of these claims (their writes are done or given up) and records, as
    /// managed, what the tenant now holds for those that got through — where the claim is
    /// still theirs (a newer one took over after the hold ended: its record stands).
    fn settle<'a>(
        &'a self,
        tenant: &'a str,
        settled: &'a [(Claim, Option<Confirmed>)],
    ) -> BoxFuture<'a, Result<(), LedgerError>>;

    /// Records users as the tenant now holds them; `managed` marks them as provisioned by
    /// this deployment (a listing passes false, which leaves an earlier true as it is).
    fn confirm<'a>(
        &'a self,
        tenant: &'a str,
        users: &'a [Confirmed],
        managed: bool,
    ) -> BoxFuture<'a, Result<(), LedgerError>>;

    /// Forgets what is known of these users' ids and attributes (the tenant no longer has
    /// them), keeping the time of the last operation applied.
    fn forget<'a>(
        &'a self,
        tenant: &'a str,
        keys: &'a [String],
    ) -> BoxFuture<'a, Result<(), LedgerError>>;

    /// Every user entry of the tenant.
    fn all<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<Vec<UserEntry>, LedgerError>>;

    /// What is known of the tenant.
    fn meta<'a>(&'a self, tenant: &'a str) -> BoxFuture<'a, Result<TenantMeta, LedgerError>>;

    /// Replaces what is known of the tenant.
    fn set_meta<'a>(
        &'a self,
        tenant: &'a str,
        meta: &'a TenantMeta,
    ) -> BoxFuture<'a, Result<(), LedgerError>>;
}

/// The id under which a tenant's entries are kept: its SCIM base URL, lowercased, without a
/// trailing slash (the same tenant reached by two spellings of its URL is one tenant).
pub fn tenant_id(base_url: &str) -> String {
    base_url.trim().trim_end_matches('/').to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_ignore_case_and_trailing_slashes() {
        assert_eq!(
            tenant_id("https://Tenant.example/scim/v2/"),
            tenant_id("https://tenant.example/scim/v2")
        );
    }
}
