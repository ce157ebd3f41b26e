//! The attributes this tool manages (the ones the CSV maps), read from a [`User`] or from a SCIM
//! resource, compared by fingerprint, and written into a resource without touching the rest:
//! other emails and phone numbers, roles, groups, `nickName`, extension attributes, the
//! tenant's spelling of the userName.

use serde_json::{json, Map, Value};

use super::schema::{ENTERPRISE_SCHEMA, USER_SCHEMA};
use crate::user::{user_name_key, User};

/// The managed attributes of one user, as comparable values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Managed {
    /// userName folded (a change of case alone is no change).
    pub user_name: String,
    /// `name.givenName`.
    pub given_name: Option<String>,
    /// `name.familyName`.
    pub family_name: Option<String>,
    /// The work email (`emails[type eq "work"]`, else the primary one), folded.
    pub email: Option<String>,
    /// `displayName`.
    pub display_name: Option<String>,
    /// `externalId`.
    pub external_id: Option<String>,
    /// `active` (absent reads as true).
    pub active: bool,
    /// `title`.
    pub title: Option<String>,
    /// The work phone number.
    pub phone: Option<String>,
    /// Enterprise `employeeNumber`.
    pub employee_number: Option<String>,
    /// Enterprise `department`.
    pub department: Option<String>,
}

impl Managed {
    /// What `user` asks the tenant to hold.
    pub fn of_user(user: &User) -> Self {
        let text = |v: &str| Some(v.trim().to_string()).filter(|v| !v.is_empty());
        let opt = |v: &Option<String>| v.as_deref().and_then(text);
        Self {
            user_name: user.key(),
            given_name: text(&user.first_name),
            family_name: text(&user.last_name),
            email: text(&user.email).map(|e| e.to_lowercase()),
            display_name: opt(&user.display_name),
            external_id: opt(&user.external_id),
            active: user.active,
            title: opt(&user.title),
            phone: opt(&user.phone),
            employee_number: opt(&user.employee_number),
            department: opt(&user.department),
        }
    }

    /// What a SCIM User resource holds of the managed attributes.
    pub fn of_resource(resource: &Value) -> Self {
        let text = |v: &Value| {
            v.as_str()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let enterprise = &resource[ENTERPRISE_SCHEMA];
        Self {
            user_name: resource["userName"]
                .as_str()
                .map(user_name_key)
                .unwrap_or_default(),
            given_name: text(&resource["name"]["givenName"]),
            family_name: text(&resource["name"]["familyName"]),
            email: work_entry(&resource["emails"])
                .and_then(|e| text(&e["value"]))
                .map(|e| e.to_lowercase()),
            display_name: text(&resource["displayName"]),
            external_id: text(&resource["externalId"]),
            active: resource["active"].as_bool().unwrap_or(true),
            title: text(&resource["title"]),
            phone: work_entry(&resource["phoneNumbers"]).and_then(|e| text(&e["value"])),
            employee_number: text(&enterprise["employeeNumber"]),
            department: text(&enterprise["department"]),
        }
    }

    /// A stable 128-bit fingerprint (FNV-1a) of the attributes but `active` (kept beside it), as
    /// 32 hex digits: what the ledger keeps instead of the personal data itself. Stable across
    /// builds and versions.
    pub fn fingerprint(&self) -> String {
        const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
        const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
        let mut hash = OFFSET;
        let mut feed = |bytes: &[u8]| {
            for b in bytes {
                hash ^= u128::from(*b);
                hash = hash.wrapping_mul(PRIME);
            }
        };
        feed(self.user_name.as_bytes());
        for field in [
            &self.given_name,
            &self.family_name,
            &self.email,
            &self.display_name,
            &self.external_id,
            &self.title,
            &self.phone,
            &self.employee_number,
            &self.department,
        ] {
            // A separator that cannot occur in text, and another for an absent value.
            match field {
                Some(v) => {
                    feed(&[0x1f]);
                    feed(v.as_bytes());
                }
                None => feed(&[0x1e]),
            }
        }
        format!("{hash:032x}")
    }

    /// The managed attributes that differ between `self` (wanted) and `current`, by SCIM
    /// attribute name; a value the user does not give (None) is not managed for it.
    pub fn differences(&self, current: &Managed) -> Vec<&'static str> {
        let mut out = Vec::new();
        let mut check = |name, wanted: &Option<String>, have: &Option<String>| {
            if wanted.is_some() && wanted != have {
                out.push(name);
            }
        };
        check("name.givenName", &self.given_name, &current.given_name);
        check("name.familyName", &self.family_name, &current.family_name);
        check("emails", &self.email, &current.email);
        check("displayName", &self.display_name, &current.display_name);
        check("externalId", &self.external_id, &current.external_id);
        check("title", &self.title, &current.title);
        check("phoneNumbers", &self.phone, &current.phone);
        check(
            "employeeNumber",
            &self.employee_number,
            &current.employee_number,
        );
        check("department", &self.department, &current.department);
        if self.user_name != current.user_name {
            out.push("userName");
        }
        if self.active != current.active {
            out.push("active");
        }
        out
    }
}

/// The entry of a multi-valued attribute that holds the work value: `type` "work", else the
/// primary one, else the only one.
fn work_entry(values: &Value) -> Option<&Value> {
    let items = values.as_array()?;
    items
        .iter()
        .find(|e| {
            e["type"]
                .as_str()
                .is_some_and(|t| t.eq_ignore_ascii_case("work"))
        })
        .or_else(|| items.iter().find(|e| e["primary"] == Value::Bool(true)))
        .or_else(|| (items.len() == 1).then(|| &items[0]))
}

/// `current` (a fetched User resource) with `user`'s managed attributes written in and every
/// other attribute kept: the body of an ownership-preserving PUT. The tenant's userName
/// spelling is kept when it differs from the file's in case only; read-only `meta` is dropped.
pub fn merge_into(current: &Value, user: &User) -> Value {
    let mut doc = match current {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    doc.remove("meta");
    let same_name = doc
        .get("userName")
        .and_then(Value::as_str)
        .is_some_and(|name| user_name_key(name) == user.key());
    if !same_name {
        doc.insert("userName".into(), json!(user.user_name));
    }
    let name = doc.entry("name").or_insert_with(|| json!({}));
    if let Value::Object(name) = name {
        name.insert("givenName".into(), json!(user.first_name));
        name.insert("familyName".into(), json!(user.last_name));
    } else {
        *name = json!({"givenName": user.first_name, "familyName": user.last_name});
    }
    set_work_value(&mut doc, "emails", &user.email, true);
    if let Some(phone) = &user.phone {
        set_work_value(&mut doc, "phoneNumbers", phone, false);
    }
    for (key, value) in [
        ("displayName", &user.display_name),
        ("externalId", &user.external_id),
        ("title", &user.title),
    ] {
        if let Some(value) = value {
            doc.insert(key.into(), json!(value));
        }
    }
    doc.insert("active".into(), json!(user.active));
    if user.employee_number.is_some() || user.department.is_some() {
        let ext = doc.entry(ENTERPRISE_SCHEMA).or_insert_with(|| json!({}));
        if !ext.is_object() {
            *ext = json!({});
        }
        for (key, value) in [
            ("employeeNumber", &user.employee_number),
            ("department", &user.department),
        ] {
            if let (Some(value), Value::Object(ext)) = (value, &mut *ext) {
                ext.insert(key.into(), json!(value));
            }
        }
        add_schema(&mut doc, ENTERPRISE_SCHEMA);
    }
    add_schema(&mut doc, USER_SCHEMA);
    Value::Object(doc)
}

/// Sets the work entry's value of a multi-valued attribute, adding a work entry if there is
/// none; the other entries are kept as they are.
fn set_work_value(doc: &mut Map<String, Value>, attribute: &str, value: &str, primary: bool) {
    let entries = doc.entry(attribute).or_insert_with(|| json!([]));
    if !entries.is_array() {
        *entries = json!([]);
    }
    let Value::Array(items) = entries else {
        return; // made an array just above
    };
    let work = items.iter().position(|e| {
        e["type"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("work"))
    });
    match work {
        Some(i) => items[i]["value"] = json!(value),
        None => {
            let has_primary = items.iter().any(|e| e["primary"] == Value::Bool(true));
            let mut entry = json!({"value": value, "type": "work"});
            if primary && !has_primary {
                entry["primary"] = json!(true);
            }
            items.push(entry);
        }
    }
}

fn add_schema(doc: &mut Map<String, Value>, urn: &str) {
    let schemas = doc.entry("schemas").or_insert_with(|| json!([]));
    if let Value::Array(list) = schemas {
        if !list.iter().any(|s| s.as_str() == Some(urn)) {
            list.push(json!(urn));
        }
    } else {
        *schemas = json!([urn]);
    }
}

/// PatchOp operations that set `user`'s managed attributes in `current` (a fetched resource)
/// with explicit paths, only where they differ; multi-valued attributes are replaced by their
/// merged lists (the other entries kept). Empty: nothing to change.
pub fn patch_operations(current: &Value, user: &User) -> Vec<Value> {
    let merged = merge_into(current, user);
    let wanted = Managed::of_user(user);
    let have = Managed::of_resource(current);
    let mut ops = Vec::new();
    for attribute in wanted.differences(&have) {
        let (path, value) = match attribute {
            "name.givenName" => (attribute.to_string(), json!(user.first_name)),
            "name.familyName" => (attribute.to_string(), json!(user.last_name)),
            "employeeNumber" | "department" => (
                format!("{ENTERPRISE_SCHEMA}:{attribute}"),
                merged[ENTERPRISE_SCHEMA][attribute].clone(),
            ),
            other => (other.to_string(), merged[other].clone()),
        };
        ops.push(json!({"op": "replace", "path": path, "value": value}));
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user::sample;

    fn admin_owned() -> Value {
        json!({
            "schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA],
            "id": "id-1",
            "userName": "Ada@Example.com",
            "nickName": "Countess",
            "name": {"givenName": "Ada", "familyName": "Byron", "middleName": "King"},
            "emails": [
                {"value": "ada@home.example", "type": "home"},
                {"value": "ada@example.com", "type": "work", "primary": true}
            ],
            "phoneNumbers": [{"value": "+44 7700 900000", "type": "mobile"}],
            "roles": [{"value": "supervisor"}],
            "active": true,
            ENTERPRISE_SCHEMA: {"manager": {"value": "boss-id"}, "costCenter": "CC1"},
            "meta": {"resourceType": "User", "lastModified": "2026-01-01T00:00:00Z"}
        })
    }

    #[test]
    fn a_merge_keeps_what_the_file_does_not_map() {
        let mut user = sample("ada@example.com");
        user.last_name = "Lovelace".into();
        user.phone = Some("+44 20 7946 0000".into());
        user.department = Some("Analytics".into());
        let merged = merge_into(&admin_owned(), &user);
        assert_eq!(
            merged["userName"], "Ada@Example.com",
            "tenant spelling kept"
        );
        assert_eq!(merged["nickName"], "Countess");
        assert_eq!(merged["roles"], json!([{"value": "supervisor"}]));
        assert_eq!(merged["name"]["middleName"], "King");
        assert_eq!(merged["name"]["familyName"], "Lovelace");
        assert_eq!(merged["emails"][0]["value"], "ada@home.example");
        assert_eq!(merged["emails"].as_array().unwrap().len(), 2);
        assert_eq!(merged["phoneNumbers"][0]["type"], "mobile");
        assert_eq!(merged["phoneNumbers"][1]["value"], "+44 20 7946 0000");
        assert_eq!(merged[ENTERPRISE_SCHEMA]["manager"]["value"], "boss-id");
        assert_eq!(merged[ENTERPRISE_SCHEMA]["costCenter"], "CC1");
        assert_eq!(merged[ENTERPRISE_SCHEMA]["department"], "Analytics");
        assert!(merged.get("meta").is_none());
        assert_eq!(Managed::of_resource(&merged), {
            let mut m = Managed::of_user(&user);
            m.user_name = "ada@example.com".into();
            m
        });
    }

    #[test]
    fn a_new_user_name_beyond_case_is_written() {
        let user = sample("ada.lovelace@example.com");
        let merged = merge_into(&admin_owned(), &user);
        assert_eq!(merged["userName"], "ada.lovelace@example.com");
    }

    #[test]
    fn fingerprints_ignore_case_of_user_name_and_email_only() {
        let user = sample("ada@example.com");
        let mut upper = sample("ADA@Example.com");
        upper.email = "Ada@EXAMPLE.com".into();
        let a = Managed::of_user(&user).fingerprint();
        assert_eq!(a, Managed::of_user(&upper).fingerprint());
        let mut other = user.clone();
        other.title = Some("Agent".into());
        assert_ne!(a, Managed::of_user(&other).fingerprint());
        // `active` is kept beside the fingerprint, not in it: a deactivation leaves it as it was.
        other.title = None;
        other.active = false;
        assert_eq!(a, Managed::of_user(&other).fingerprint());
        // A value moved from one field to the next is a change.
        let mut moved = user.clone();
        moved.first_name = "AdaLovelace".into();
        moved.last_name = String::new();
        assert_ne!(a, Managed::of_user(&moved).fingerprint());
        assert_eq!(a.len(), 32);
    }

    #[test]
    fn a_resource_written_from_a_user_reads_back_the_same() {
        let mut user = sample("ada@example.com");
        user.title = Some("Agent".into());
        user.employee_number = Some("E1".into());
        user.phone = Some("+1 555".into());
        let resource = user.to_scim();
        assert_eq!(
            Managed::of_resource(&resource).fingerprint(),
            Managed::of_user(&user).fingerprint()
        );
    }

    #[test]
    fn patch_operations_name_each_changed_attribute_by_path() {
        let mut user = sample("ada@example.com");
        user.last_name = "Lovelace".into();
        user.department = Some("Analytics".into());
        let ops = patch_operations(&admin_owned(), &user);
        let paths: Vec<&str> = ops.iter().map(|o| o["path"].as_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "name.familyName".to_string(),
                format!("{ENTERPRISE_SCHEMA}:department")
            ]
        );
        assert_eq!(ops[0]["value"], "Lovelace");
        assert_eq!(ops[1]["value"], "Analytics");
        // Nothing to change: no operation.
        let mut same = sample("ada@example.com");
        same.last_name = "Byron".into();
        assert!(patch_operations(&admin_owned(), &same).is_empty());
    }

    #[test]
    fn a_changed_work_email_replaces_the_merged_list() {
        let mut user = sample("ada@example.com");
        user.last_name = "Byron".into();
        user.email = "ada@new.example".into();
        let ops = patch_operations(&admin_owned(), &user);
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0]["path"], "emails");
        let emails = ops[0]["value"].as_array().unwrap();
        assert_eq!(emails.len(), 2);
        assert_eq!(emails[0]["value"], "ada@home.example");
        assert_eq!(emails[1]["value"], "ada@new.example");
    }
}
