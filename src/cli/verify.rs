//! The demo's final check: the tenant's users against the input, so the summary can be trusted.
//! Problems name lines, masked userNames and attribute names, never personal values.

use std::collections::{HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use super::input::Input;
use super::seed::Seeded;
use crate::mask::mask_email;
use crate::operation::{OperationResult, Outcome};
use crate::scim::managed::Managed;
use crate::user::{user_name_key, User};

/// The outcome of the check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Verification {
    /// userNames of the input checked.
    pub checked: usize,
    /// What is wrong; empty when nothing was lost.
    pub problems: Vec<String>,
}

impl Verification {
    /// No check: the run was interrupted with work still queued.
    pub fn interrupted(unfinished: u64) -> Self {
        Self {
            checked: 0,
            problems: vec![format!(
                "interrupted with {unfinished} operation(s) still queued: the tenant was not checked"
            )],
        }
    }

    /// Whether the tenant holds exactly what the input asked for.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// What the tenant holds now, by folded userName.
struct TenantView<'a> {
    by_key: HashMap<String, Vec<&'a Value>>,
}

impl<'a> TenantView<'a> {
    fn new(users: &'a [Value]) -> Self {
        let mut by_key: HashMap<String, Vec<&Value>> = HashMap::new();
        for doc in users {
            let key = user_name_key(doc["userName"].as_str().unwrap_or_default());
            by_key.entry(key).or_default().push(doc);
        }
        Self { by_key }
    }

    fn get(&self, key: &str) -> &[&'a Value] {
        self.by_key.get(key).map_or(&[], Vec::as_slice)
    }
}

/// The managed attributes of a stored user that differ from what `user` asks (names only): all
/// of them for an active user, only `active` for a leaver (a deactivation changes nothing else).
fn differences(doc: &Value, user: &User) -> Vec<&'static str> {
    let have = Managed::of_resource(doc);
    if user.active {
        Managed::of_user(user).differences(&have)
    } else if have.active {
        vec!["active"]
    } else {
        Vec::new()
    }
}

/// Checks every user of the input, the users nobody asked for, and the summary's creations.
pub fn verify(
    input: &Input,
    seeded: &Seeded,
    tenant_users: &[Value],
    results: &[OperationResult],
    created_by_tenant: u64,
    created_in_summary: u64,
) -> Verification {
    let tenant = TenantView::new(tenant_users);
    let outcomes: HashMap<String, &Outcome> = results
        .iter()
        .map(|r| (r.operation.user.key(), &r.outcome))
        .collect();
    let mut problems = Vec::new();
    for op in &input.operations {
        let user = &op.user;
        let key = user.key();
        let at = format!(
            "line {} ({})",
            op.row.unwrap_or_default(),
            mask_email(&user.user_name)
        );
        let found = tenant.get(&key);
        let should_exist = user.active || seeded.existed(&key);
        match (found, should_exist) {
            ([], true) => problems.push(format!("{at}: missing from the tenant")),
            ([doc], true) => {
                let wrong = differences(doc, user);
                if !wrong.is_empty() {
                    let verb = if wrong.len() == 1 {
                        "differs"
                    } else {
                        "differ"
                    };
                    problems.push(format!("{at}: {} {verb} from the file", wrong.join(", ")));
                }
            }
            ([], false) => {
                if !matches!(outcomes.get(&key), Some(Outcome::Skipped { .. })) {
                    problems.push(format!(
                        "{at}: a leaver who never existed was not reported skipped"
                    ));
                }
            }
            ([_], false) => problems.push(format!("{at}: a leaver who never existed was created")),
            (many, _) => problems.push(format!("{at}: exists {} times", many.len())),
        }
        if let (Some(Outcome::Failed { .. }), Some(last)) =
            (outcomes.get(&key), problems.last_mut())
        {
            if last.starts_with(&at) {
                last.push_str(" (its operation failed: see \"Failed, by reason\")");
            }
        }
    }
    let expected: HashSet<String> = input.operations.iter().map(|op| op.user.key()).collect();
    let bystanders: HashSet<&str> = seeded
        .bystanders
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    for doc in tenant_users {
        let name = doc["userName"].as_str().unwrap_or_default();
        let known = expected.contains(&user_name_key(name))
            || doc["id"].as_str().is_some_and(|id| bystanders.contains(id));
        if !known {
            problems.push(format!(
                "{} is in the tenant but in no valid row of the file (from an invalid or replaced row?)",
                mask_email(name)
            ));
        }
    }
    for before in &seeded.bystanders {
        let now = tenant_users.iter().find(|d| d["id"] == before["id"]);
        if now != Some(before) {
            let name = mask_email(before["userName"].as_str().unwrap_or_default());
            problems.push(format!(
                "{name}, whom the file does not mention, was changed or removed"
            ));
        }
    }
    if created_by_tenant != created_in_summary {
        problems.push(format!(
            "the summary counts {created_in_summary} users created but the tenant created {created_by_tenant}"
        ));
    }
    Verification {
        checked: input.operations.len(),
        problems,
    }
}
