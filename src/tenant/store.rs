//! The tenant's users and their SCIM semantics (RFC 7643/7644): create, replace, patch, delete,
//! filtered listing and Bulk. Plain Rust without HTTP; `routes` maps requests onto these calls.

mod attrs;
mod bulk;
mod filter;

use std::collections::HashMap;
use std::time::SystemTime;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};

use attrs::{apply_patch, finish, normalize};
use filter::Filter;

use super::{PatchForm, Quirks};

pub use crate::scim::schema::{
    BULK_RESPONSE_SCHEMA, ENTERPRISE_SCHEMA, ERROR_SCHEMA, LIST_SCHEMA, USER_SCHEMA,
};
/// Most resources one list request returns (advertised as `filter.maxResults`).
pub const MAX_RESULTS: usize = 200;

/// A SCIM Error (RFC 7644 §3.12): HTTP status, optional `scimType`, human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScimError {
    /// HTTP status code.
    pub status: u16,
    /// The SCIM detail error keyword (`uniqueness`, `invalidFilter`, ...).
    pub scim_type: Option<&'static str>,
    /// Human-readable explanation.
    pub detail: String,
}

impl ScimError {
    /// An error with the given status, keyword and detail.
    pub fn new(status: u16, scim_type: Option<&'static str>, detail: impl Into<String>) -> Self {
        Self {
            status,
            scim_type,
            detail: detail.into(),
        }
    }

    /// 404: no user with this id.
    pub fn not_found(id: &str) -> Self {
        Self::new(404, None, format!("Resource {id} not found"))
    }

    /// 400 `invalidValue`.
    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::new(400, Some("invalidValue"), detail)
    }

    /// 400 `invalidSyntax`.
    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        Self::new(400, Some("invalidSyntax"), detail)
    }

    /// 400 `invalidFilter`.
    pub fn invalid_filter(detail: impl Into<String>) -> Self {
        Self::new(400, Some("invalidFilter"), detail)
    }

    /// 400 `invalidPath`.
    pub fn invalid_path(detail: impl Into<String>) -> Self {
        Self::new(400, Some("invalidPath"), detail)
    }

    /// The SCIM Error document; `status` is a string, as RFC 7644 §3.12 shows it.
    pub fn to_json(&self) -> Value {
        let mut doc = json!({
            "schemas": [ERROR_SCHEMA],
            "status": self.status.to_string(),
            "detail": self.detail,
        });
        if let Some(t) = self.scim_type {
            doc["scimType"] = json!(t);
        }
        doc
    }
}

impl std::fmt::Display for ScimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.detail)
    }
}

impl std::error::Error for ScimError {}

/// One stored user: its attributes without `id` and `meta`, which are rendered on read.
#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    version: u64,
    created: String,
    modified: String,
    attrs: Map<String, Value>,
}

/// The users of the tenant, indexed by id and by folded userName.
#[derive(Debug)]
pub struct Store {
    base_url: String,
    quirks: Quirks,
    users: HashMap<String, Entry>,
    by_name: HashMap<String, String>,
    next_seq: u64,
    ids: StdRng,
}

impl Store {
    /// An empty store whose locations start with `base_url`; `seed` makes ids reproducible.
    pub fn new(base_url: impl Into<String>, seed: u64) -> Self {
        Self {
            base_url: base_url.into(),
            quirks: Quirks::default(),
            users: HashMap::new(),
            by_name: HashMap::new(),
            next_seq: 0,
            ids: StdRng::seed_from_u64(seed),
        }
    }

    /// The store departing from the RFCs as `quirks` says.
    pub fn with_quirks(self, quirks: Quirks) -> Self {
        Self { quirks, ..self }
    }

    /// A userName as compared for uniqueness: folded (caseExact false) unless the quirk says.
    fn name_key(&self, user_name: &str) -> String {
        if self.quirks.case_exact_user_names {
            user_name.to_string()
        } else {
            fold(user_name)
        }
    }

    /// The absolute URL of a user.
    pub fn location(&self, id: &str) -> String {
        format!("{}/Users/{}", self.base_url, id)
    }

    /// Creates a user; the stored resource comes back with `id` and `meta`.
    pub fn create(&mut self, doc: &Value) -> Result<Value, ScimError> {
        let id = self.insert(doc)?;
        self.get(&id)
    }

    /// Creates a user and returns its id.
    pub fn insert(&mut self, doc: &Value) -> Result<String, ScimError> {
        let attrs = normalize(doc)?;
        let key = self.name_key(user_name(&attrs));
        if self.by_name.contains_key(&key) {
            return Err(uniqueness());
        }
        let id = self.new_id();
        let now = rfc3339(SystemTime::now());
        self.next_seq += 1;
        let entry = Entry {
            seq: self.next_seq,
            version: 1,
            created: now.clone(),
            modified: now,
            attrs,
        };
        self.by_name.insert(key, id.clone());
        self.users.insert(id.clone(), entry);
        Ok(id)
    }

    /// The user with this id.
    pub fn get(&self, id: &str) -> Result<Value, ScimError> {
        let entry = self.users.get(id).ok_or_else(|| ScimError::not_found(id))?;
        Ok(self.render(id, entry))
    }

    /// Replaces a user's attributes (PUT); `id` and `meta.created` are kept.
    pub fn replace(&mut self, id: &str, doc: &Value) -> Result<Value, ScimError> {
        if !self.users.contains_key(id) {
            return Err(ScimError::not_found(id));
        }
        let attrs = normalize(doc)?;
        self.commit(id, attrs)
    }

    /// Applies a PatchOp (RFC 7644 §3.5.2): all operations or none.
    pub fn patch(&mut self, id: &str, patch: &Value) -> Result<Value, ScimError> {
        let entry = self.users.get(id).ok_or_else(|| ScimError::not_found(id))?;
        let ops = patch
            .get("Operations")
            .and_then(Value::as_array)
            .filter(|ops| !ops.is_empty())
            .ok_or_else(|| {
                ScimError::invalid_syntax("A PatchOp needs a non-empty Operations array")
            })?;
        let refused = |op: &Value| match self.quirks.refused_patch {
            Some(PatchForm::Path) => op.get("path").is_some_and(|p| !p.is_null()),
            Some(PatchForm::Value) => op.get("path").is_none_or(Value::is_null),
            None => false,
        };
        if ops.iter().any(refused) {
            let detail = "This form of PATCH operation is not supported by this service";
            return Err(ScimError::invalid_syntax(detail));
        }
        // Work on a copy so that a failing operation leaves the user untouched.
        let mut attrs = entry.attrs.clone();
        for op in ops {
            apply_patch(&mut attrs, op)?;
        }
        finish(&mut attrs)?;
        self.commit(id, attrs)
    }

    /// Deletes a user.
    pub fn delete(&mut self, id: &str) -> Result<(), ScimError> {
        let entry = self
            .users
            .remove(id)
            .ok_or_else(|| ScimError::not_found(id))?;
        let key = self.name_key(user_name(&entry.attrs));
        self.by_name.remove(&key);
        Ok(())
    }

    /// A ListResponse of the users matching `filter`, in creation order, from the 1-based
    /// `start_index`, at most `count` (itself at most [`MAX_RESULTS`]).
    pub fn list(
        &self,
        filter: Option<&str>,
        start_index: usize,
        count: usize,
    ) -> Result<Value, ScimError> {
        let filter = match filter.map(str::trim).filter(|f| !f.is_empty()) {
            Some(text) => Some(Filter::parse(text)?),
            None => None,
        };
        // A lookup by userName reads the index rather than every user (a tenant of a million
        // users answers it at once, as a real one does).
        let named = filter.as_ref().and_then(Filter::user_name).map(|name| {
            let id = self.by_name.get(&self.name_key(name));
            id.and_then(|id| self.users.get_key_value(id))
        });
        let mut matching: Vec<(&String, &Entry)> = match named {
            Some(found) => found.into_iter().collect(),
            None => self.users.iter().collect(),
        };
        matching.retain(|(id, e)| {
            filter
                .as_ref()
                .is_none_or(|f| f.matches(id, &e.attrs, self.quirks.case_exact_user_names))
        });
        matching.sort_by_key(|(_, e)| e.seq);
        let start = start_index.max(1);
        let page: Vec<Value> = matching
            .iter()
            .skip(start - 1)
            .take(count.min(MAX_RESULTS))
            .map(|(id, e)| self.render(id, e))
            .collect();
        Ok(json!({
            "schemas": [LIST_SCHEMA],
            "totalResults": matching.len(),
            "startIndex": start,
            "itemsPerPage": page.len(),
            "Resources": page,
        }))
    }

    /// Every user, in creation order.
    pub fn snapshot(&self) -> Vec<Value> {
        let mut entries: Vec<(&String, &Entry)> = self.users.iter().collect();
        entries.sort_by_key(|(_, e)| e.seq);
        entries.iter().map(|(id, e)| self.render(id, e)).collect()
    }

    /// Stores new attributes for an existing user, keeping userName unique.
    fn commit(&mut self, id: &str, attrs: Map<String, Value>) -> Result<Value, ScimError> {
        let key = self.name_key(user_name(&attrs));
        if self.by_name.get(&key).is_some_and(|owner| owner != id) {
            return Err(uniqueness());
        }
        let entry = self
            .users
            .get_mut(id)
            .ok_or_else(|| ScimError::not_found(id))?;
        let old_key = if self.quirks.case_exact_user_names {
            user_name(&entry.attrs).to_string()
        } else {
            fold(user_name(&entry.attrs))
        };
        entry.attrs = attrs;
        entry.version += 1;
        entry.modified = rfc3339(SystemTime::now());
        self.by_name.remove(&old_key);
        self.by_name.insert(key, id.to_string());
        self.get(id)
    }

    fn render(&self, id: &str, entry: &Entry) -> Value {
        let mut doc = entry.attrs.clone();
        doc.insert("id".into(), json!(id));
        doc.insert(
            "meta".into(),
            json!({
                "resourceType": "User",
                "created": entry.created,
                "lastModified": entry.modified,
                "location": self.location(id),
                "version": format!("W/\"{}\"", entry.version),
            }),
        );
        Value::Object(doc)
    }

    /// A random (version 4) UUID not yet in use, as tenants assign.
    fn new_id(&mut self) -> String {
        loop {
            let bits: u128 = self.ids.random();
            let bits = (bits & !(0xf << 76)) | (0x4 << 76);
            let bits = (bits & !(0x3 << 62)) | (0x2 << 62);
            let hex = format!("{bits:032x}");
            let id = format!(
                "{}-{}-{}-{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[12..16],
                &hex[16..20],
                &hex[20..]
            );
            if !self.users.contains_key(&id) {
                return id;
            }
        }
    }
}

fn uniqueness() -> ScimError {
    ScimError::new(
        409,
        Some("uniqueness"),
        "A user with this userName already exists",
    )
}

/// userName of validated attributes (always present after [`finish`]).
fn user_name(attrs: &Map<String, Value>) -> &str {
    attrs
        .get("userName")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// userName is `caseExact: false` (RFC 7643 §4.1.1): compare lower-cased.
fn fold(user_name: &str) -> String {
    user_name.to_lowercase()
}

/// A UTC timestamp as RFC 3339 (`2024-05-01T12:00:00Z`), the form of `meta.created`.
fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

#[cfg(test)]
mod tests;
