//! The one decision table: what to do with an operation, given what the ledger (or the
//! tenant's listing) knows of its user. The cycle and `provision --dry-run` both use it.

use serde_json::Value;

use crate::ledger::UserEntry;
use crate::operation::Operation;
use crate::scim::managed::Managed;
use crate::user::user_name_key;

/// What to do with one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Not known in the tenant: create it (a 409 falls back to a lookup and an update).
    Create,
    /// In the tenant with other values for the managed attributes: update them.
    Update {
        /// The user's SCIM id.
        id: String,
    },
    /// In the tenant and active, while the file says it left: deactivate it.
    Deactivate {
        /// The user's SCIM id.
        id: String,
    },
    /// Not known in the tenant and inactive in the file: look it up by userName, deactivate
    /// it if found.
    Find,
    /// Nothing to send, for this reason.
    Skip(&'static str),
    /// The tenant already holds what the file says.
    Unchanged {
        /// The user's SCIM id.
        id: String,
    },
    /// A newer operation for this user was applied: this one is skipped.
    Superseded,
    /// An older operation for this user may still be writing (its claim holds the user):
    /// this one waits, so that it lands after it.
    Wait {
        /// How long the older one may hold the user at most.
        delay: std::time::Duration,
    },
}

/// Why an inactive user not in the tenant is not sent.
pub const NOTHING_TO_DEACTIVATE: &str =
    "no user with this userName exists, so there is nothing to deactivate";

/// Why an operation older than the last applied one is not sent.
pub const SUPERSEDED: &str = "superseded by newer data";

/// What the tenant can be asked, beyond the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Create users that arrive inactive (default: skip them).
    pub create_inactive: bool,
    /// Whether `filter=userName eq` can find a user the ledger does not know.
    pub filter_supported: bool,
}

/// The decision for `op`, given the ledger's `entry` for its user (None: not known).
pub fn decide(op: &Operation, entry: Option<&UserEntry>, rules: Rules) -> Decision {
    if let (Some(applied), Some(at)) = (entry.and_then(|e| e.applied_at), op.source_time) {
        if applied > at {
            return Decision::Superseded;
        }
    }
    let user = &op.user;
    let known = entry.and_then(|e| e.id.as_deref().map(|id| (e, id)));
    match known {
        Some((e, id)) => {
            let id = id.to_string();
            let wanted = Some(Managed::of_user(user).fingerprint());
            // What the tenant holds, or what was last asked of it (an empty cell leaves the
            // tenant's value, so it may hold more than was asked).
            let same = e.fingerprint == wanted || e.asked == wanted;
            match (user.active, e.active) {
                (true, Some(true)) if same => Decision::Unchanged { id },
                (true, _) => Decision::Update { id },
                (false, Some(false)) => Decision::Unchanged { id },
                (false, _) => Decision::Deactivate { id },
            }
        }
        None if user.active || rules.create_inactive => Decision::Create,
        // Looked up already for this source (a rerun of the same file): still nobody.
        None if entry.is_some_and(|e| looked_up_for(e, op)) => {
            Decision::Skip(NOTHING_TO_DEACTIVATE)
        }
        None if rules.filter_supported => Decision::Find,
        None => Decision::Skip(NOTHING_TO_DEACTIVATE),
    }
}

/// The id a retry resumes from: an operation that would be created or looked up but carries
/// the id an earlier attempt found (the lookup after a `409`) fetches that user instead, so an
/// update is retried as an update. The ledger's own knowledge (update, deactivate, unchanged,
/// skip) comes first. A hint only: the resource it names must be the user's ([`is_same_user`]).
pub fn resumes<'a>(decision: &Decision, op: &'a Operation) -> Option<&'a str> {
    match decision {
        Decision::Create | Decision::Find => op.resource_id.as_deref(),
        _ => None,
    }
}

/// Whether a resource fetched by a carried id is the operation's user: the same userName
/// (case-insensitively) or the same externalId. Anything else (a recycled id, a forged
/// message) is not written: the user is looked up by userName instead.
pub fn is_same_user(op: &Operation, resource: &Value) -> bool {
    let same_name = resource["userName"]
        .as_str()
        .is_some_and(|name| user_name_key(name) == op.user.key());
    let same_external = match (resource["externalId"].as_str(), &op.user.external_id) {
        (Some(theirs), Some(ours)) => !ours.is_empty() && theirs == ours,
        _ => false,
    };
    same_name || same_external
}

/// Whether an operation of this source time already went through the user's entry (which
/// has no id: the tenant had no such user then).
fn looked_up_for(entry: &UserEntry, op: &Operation) -> bool {
    matches!((entry.applied_at, op.source_time), (Some(applied), Some(at)) if applied >= at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user::sample;

    const RULES: Rules = Rules {
        create_inactive: false,
        filter_supported: true,
    };

    fn op(active: bool, at: Option<u64>) -> Operation {
        let mut user = sample("ada@example.com");
        user.active = active;
        let op = Operation::new(user, "test", None);
        match at {
            Some(at) => op.with_source_time(at),
            None => op,
        }
    }

    fn known(op: &Operation, same: bool, active: bool, applied_at: Option<u64>) -> UserEntry {
        let mut user = op.user.clone();
        if !same {
            user.title = Some("Old title".into());
        }
        user.active = active;
        UserEntry {
            key: user.key(),
            id: Some("id-1".into()),
            fingerprint: Some(Managed::of_user(&user).fingerprint()),
            active: Some(active),
            applied_at,
            ..UserEntry::default()
        }
    }

    #[test]
    fn the_table() {
        let id = || "id-1".to_string();
        let active = op(true, Some(100));
        let leaver = op(false, Some(100));
        let cases: Vec<(&Operation, Option<UserEntry>, Rules, Decision)> = vec![
            (&active, None, RULES, Decision::Create),
            (
                &active,
                Some(known(&active, true, true, Some(50))),
                RULES,
                Decision::Unchanged { id: id() },
            ),
            (
                &active,
                Some(known(&active, false, true, None)),
                RULES,
                Decision::Update { id: id() },
            ),
            // Inactive in the tenant, active in the file: reactivated by an update.
            (
                &active,
                Some(known(&active, true, false, None)),
                RULES,
                Decision::Update { id: id() },
            ),
            (
                &active,
                Some(known(&active, true, true, Some(101))),
                RULES,
                Decision::Superseded,
            ),
            // The same time is the same operation retried (or the same file rerun): not older.
            (
                &active,
                Some(known(&active, false, true, Some(100))),
                RULES,
                Decision::Update { id: id() },
            ),
            (
                &leaver,
                Some(known(&leaver, false, true, None)),
                RULES,
                Decision::Deactivate { id: id() },
            ),
            (
                &leaver,
                Some(known(&leaver, false, false, None)),
                RULES,
                Decision::Unchanged { id: id() },
            ),
            (&leaver, None, RULES, Decision::Find),
            (
                &leaver,
                None,
                Rules {
                    filter_supported: false,
                    ..RULES
                },
                Decision::Skip(NOTHING_TO_DEACTIVATE),
            ),
            (
                &leaver,
                None,
                Rules {
                    create_inactive: true,
                    ..RULES
                },
                Decision::Create,
            ),
            // The tenant holds more than the file asks (an empty cell keeps its value), and the
            // same was asked last time: unchanged.
            (
                &active,
                Some(UserEntry {
                    fingerprint: Some("the tenant's own, with more".into()),
                    asked: Some(Managed::of_user(&active.user).fingerprint()),
                    ..known(&active, true, true, None)
                }),
                RULES,
                Decision::Unchanged { id: id() },
            ),
            (
                &active,
                Some(UserEntry {
                    fingerprint: Some("the tenant's own, with more".into()),
                    asked: None,
                    ..known(&active, true, true, None)
                }),
                RULES,
                Decision::Update { id: id() },
            ),
            // A claim without an id (an operation that never got through) is not a user.
            (
                &active,
                Some(UserEntry {
                    applied_at: Some(90),
                    ..UserEntry::default()
                }),
                RULES,
                Decision::Create,
            ),
        ];
        for (k, (op, entry, rules, expected)) in cases.into_iter().enumerate() {
            // Without a carried id, nothing resumes.
            assert_eq!(resumes(&expected, op), None, "case {k}");
            assert_eq!(decide(op, entry.as_ref(), rules), expected, "case {k}");
        }
        // Without a source time there is no order to keep.
        let untimed = op(true, None);
        let entry = known(&untimed, false, true, Some(500));
        assert_eq!(
            decide(&untimed, Some(&entry), RULES),
            Decision::Update { id: id() }
        );
    }

    #[test]
    fn a_retry_carrying_an_id_resumes_from_it_unless_the_ledger_knows_better() {
        let mut op = op(true, Some(100));
        op.resource_id = Some("id-9".into());
        assert_eq!(resumes(&Decision::Create, &op), Some("id-9"));
        assert_eq!(resumes(&Decision::Find, &op), Some("id-9"));
        for decision in [
            Decision::Update { id: "id-1".into() },
            Decision::Deactivate { id: "id-1".into() },
            Decision::Unchanged { id: "id-1".into() },
            Decision::Skip(NOTHING_TO_DEACTIVATE),
            Decision::Superseded,
        ] {
            assert_eq!(resumes(&decision, &op), None, "{decision:?}");
        }
    }

    #[test]
    fn a_carried_id_must_name_the_same_user() {
        let mut op = op(true, None);
        let resource = |name: &str, external: Option<&str>| serde_json::json!({"id": "id-9", "userName": name, "externalId": external});
        assert!(is_same_user(&op, &resource("ADA@Example.com", None)));
        assert!(!is_same_user(&op, &resource("bob@example.com", None)));
        assert!(!is_same_user(&op, &serde_json::json!({"id": "id-9"})));
        // Renamed in the file (same externalId): still the user.
        op.user.external_id = Some("E-1".into());
        assert!(is_same_user(
            &op,
            &resource("old-name@example.com", Some("E-1"))
        ));
        assert!(!is_same_user(
            &op,
            &resource("old-name@example.com", Some("E-2"))
        ));
        op.user.external_id = Some(String::new());
        assert!(!is_same_user(&op, &resource("x@example.com", Some(""))));
    }
}
