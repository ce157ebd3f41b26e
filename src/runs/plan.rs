//! What a run would deactivate — leavers the tenant has active and (full sync) the managed
//! users its file does not name — and the operations that do it.

use std::collections::HashMap;

use super::census::Census;
use super::SyncMode;
use crate::ledger::UserEntry;
use crate::operation::Operation;
use crate::user::{user_name_key, User};

/// The deactivations a file would send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deactivations {
    /// Leavers (last row of their userName) the tenant has active.
    pub leavers: Vec<String>,
    /// Full sync: managed, active users the file does not name, as (folded userName, the
    /// tenant's spelling).
    pub absent: Vec<(String, String)>,
    /// Users the ledger knows in the tenant.
    pub known: u64,
}

impl Deactivations {
    /// Leavers and absent users together.
    pub fn count(&self) -> u64 {
        (self.leavers.len() + self.absent.len()) as u64
    }

    /// Their userNames, leavers first.
    pub fn user_names(&self) -> impl Iterator<Item = &str> {
        self.leavers
            .iter()
            .map(String::as_str)
            .chain(self.absent.iter().map(|(_, name)| name.as_str()))
    }
}

/// The deactivations `census`'s file would send to a tenant the ledger knows as `known`. Users
/// the deployment never created or updated (only listed) are never absent: they are not its own.
pub fn deactivations(census: &Census, known: &[UserEntry], mode: SyncMode) -> Deactivations {
    let active = |e: &UserEntry| e.id.is_some() && e.active != Some(false);
    let by_key: HashMap<&str, &UserEntry> = known.iter().map(|e| (e.key.as_str(), e)).collect();
    let leavers = census
        .leavers()
        .filter(|name| {
            by_key
                .get(user_name_key(name).as_str())
                .is_some_and(|e| active(e))
        })
        .map(str::to_string)
        .collect();
    let absent = match mode {
        SyncMode::Upsert => Vec::new(),
        SyncMode::Full => known
            .iter()
            .filter(|e| e.managed && active(e) && !census.names(&e.key))
            .map(|e| {
                let name = e.user_name.clone().unwrap_or_else(|| e.key.clone());
                (e.key.clone(), name)
            })
            .collect(),
    };
    Deactivations {
        leavers,
        absent,
        known: known.iter().filter(|e| e.id.is_some()).count() as u64,
    }
}

/// The deactivation of an absent user for run `run_id` of `source`: only its userName is used.
pub fn absent_operation(
    run_id: &str,
    source: &str,
    user_name: &str,
    source_time: Option<u64>,
) -> Operation {
    // Retry messages validate users like a producer's, so the required fields hold
    // placeholders that no write uses (a deactivation sends `active` only).
    let user = User {
        user_name: user_name.to_string(),
        email: "absent-user@example.invalid".into(),
        first_name: "-".into(),
        last_name: "-".into(),
        active: false,
        display_name: None,
        external_id: None,
        title: None,
        department: None,
        employee_number: None,
        phone: None,
    };
    let mut op = Operation::new(user, source, None);
    op.source_time = source_time;
    op.run = Some(run_id.to_string());
    op
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, managed: bool, active: bool) -> UserEntry {
        UserEntry {
            key: key.into(),
            id: Some(format!("id-{key}")),
            user_name: Some(key.to_uppercase()),
            active: Some(active),
            managed,
            ..UserEntry::default()
        }
    }

    #[test]
    fn deactivations_count_active_leavers_and_managed_absent_users() {
        let csv = "email,first_name,last_name,status\n\
                   a@x.org,A,A,active\nb@x.org,B,B,leaver\nc@x.org,C,C,leaver\nn@x.org,N,N,leaver\n";
        let census = Census::of(csv.as_bytes()).unwrap();
        let known = [
            entry("a@x.org", true, true),
            entry("b@x.org", true, true),     // leaver, active: counts
            entry("c@x.org", true, false),    // leaver, already inactive: does not
            entry("gone@x.org", true, true),  // managed, absent: counts in full sync
            entry("seen@x.org", false, true), // only listed: never touched
            entry("old@x.org", true, false),  // absent but inactive already
        ];
        let upsert = deactivations(&census, &known, SyncMode::Upsert);
        assert_eq!(upsert.leavers, vec!["b@x.org".to_string()]);
        assert!(upsert.absent.is_empty());
        let full = deactivations(&census, &known, SyncMode::Full);
        assert_eq!(
            full.absent,
            vec![("gone@x.org".to_string(), "GONE@X.ORG".to_string())]
        );
        assert_eq!(full.count(), 2);
        assert_eq!(full.known, 6);
        assert_eq!(
            full.user_names().collect::<Vec<_>>(),
            ["b@x.org", "GONE@X.ORG"]
        );
    }

    #[test]
    fn absent_operations_pass_the_retry_message_checks() {
        let op = absent_operation("run-1", "s3://b/k.csv", "Agent 7", Some(5));
        assert!(!op.user.active && op.row.is_none());
        assert_eq!(op.run.as_deref(), Some("run-1"));
        let checked = crate::queue::retry_message::check_operation(op, 0, 8, 10);
        assert!(checked.is_ok(), "{checked:?}");
    }
}
