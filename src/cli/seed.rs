//! The demo tenant's existing users: chosen deterministically from the input so a run meets
//! every case (users to update, leavers to deactivate, a userName stored in another case,
//! a disabled account to reactivate), plus a few users the file never mentions.

use std::collections::HashMap;

use serde_json::Value;

use super::input::Input;
use crate::tenant::{ScimError, Tenant};
use crate::user::{user_name_key, User};

/// Users in the tenant before the run that the file does not mention; they must stay as they are.
const BYSTANDERS: [(&str, &str, &str); 3] = [
    ("svc.integration@example.com", "Service", "Integration"),
    ("reception.desk@example.com", "Reception", "Desk"),
    ("auditor@partner.example.net", "External", "Auditor"),
];

/// What was in the tenant before the run.
#[derive(Debug, Default)]
pub struct Seeded {
    /// Folded userNames of the input's users that existed (as stored, possibly stale).
    pub existing: HashMap<String, User>,
    /// The users the file does not mention, as the tenant stored them.
    pub bystanders: Vec<Value>,
}

impl Seeded {
    /// Whether the user with this folded userName existed before the run.
    pub fn existed(&self, key: &str) -> bool {
        self.existing.contains_key(key)
    }
}

/// The stale copy of the `index`-th leaver or active user that the tenant holds before the run,
/// if it is one of those chosen.
fn stale_copy(index: usize, user: &User) -> Option<User> {
    let mut old = user.clone();
    if !user.active {
        // Two leavers in three still have an (active) account to deactivate; the third never had one.
        return (index % 3 != 0).then(|| {
            old.active = true;
            old
        });
    }
    if index % 7 != 3 {
        return None;
    }
    match (index / 7) % 5 {
        // Stored in another case: found by the case-insensitive lookup, renamed by the update.
        0 => old.user_name = user.user_name.to_uppercase(),
        // A disabled account of a rehire: the update reactivates it.
        1 => old.active = false,
        _ => {}
    }
    old.title = Some("Trainee".into());
    old.department = Some("Onboarding".into());
    Some(old)
}

/// Stores the chosen users in the tenant, as if they had been there all along.
pub fn seed(tenant: &Tenant, input: &Input) -> Result<Seeded, ScimError> {
    let mut seeded = Seeded::default();
    // Leavers and active users are counted apart, so each gets its share whatever the mix.
    let (mut leavers, mut actives) = (0, 0);
    for op in &input.operations {
        let counter = if op.user.active {
            &mut actives
        } else {
            &mut leavers
        };
        let index = *counter;
        *counter += 1;
        if let Some(old) = stale_copy(index, &op.user) {
            tenant.insert_user(old.to_scim())?;
            seeded.existing.insert(op.user.key(), old);
        }
    }
    let mut keys = Vec::new();
    for (user_name, first, last) in BYSTANDERS {
        let key = user_name_key(user_name);
        if input.operations.iter().any(|op| op.user.key() == key) {
            continue;
        }
        keys.push(key);
        let user = User {
            user_name: user_name.into(),
            email: user_name.into(),
            first_name: first.into(),
            last_name: last.into(),
            active: true,
            display_name: None,
            external_id: None,
            title: None,
            department: None,
            employee_number: None,
            phone: None,
        };
        tenant.insert_user(user.to_scim())?;
    }
    seeded.bystanders = tenant
        .users()
        .into_iter()
        .filter(|doc| {
            doc["userName"]
                .as_str()
                .is_some_and(|u| keys.contains(&user_name_key(u)))
        })
        .collect();
    Ok(seeded)
}
