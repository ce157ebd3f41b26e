//! A validated user as the engine provisions it, and its SCIM 2.0 representation (RFC 7643 §4.1).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::scim::request::Document;

/// SCIM core User schema URN.
pub const USER_SCHEMA: &str = "urn:ietf:params:scim:schemas:core:2.0:User";
/// SCIM enterprise User extension URN (employeeNumber, department).
pub const ENTERPRISE_SCHEMA: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// One person to provision; field names are the contract's CSV column names.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// SCIM userName (defaults to the email); unique case-insensitively.
    pub user_name: String,
    /// Work email address.
    pub email: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Whether the account should be active; false means deactivate.
    pub active: bool,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Identifier of the user in the HR system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// Job title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Department (enterprise extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department: Option<String>,
    /// Employee number (enterprise extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub employee_number: Option<String>,
    /// Work phone number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

impl std::fmt::Debug for User {
    // Emails and userNames are personal data: Debug output masks them like the logs do.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("user_name", &crate::mask::mask_email(&self.user_name))
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl User {
    /// The userName folded for case-insensitive comparison (RFC 7643: caseExact false).
    pub fn key(&self) -> String {
        user_name_key(&self.user_name)
    }

    /// The full SCIM User resource, for POST and PUT (`id` set for PUT).
    pub fn to_document(&self, id: Option<&str>) -> Document {
        Document::from_json_bytes(self.scim_json(id, true))
    }

    /// The user's attributes without `schemas`: the value of a PATCH `replace` operation.
    pub fn attributes_document(&self) -> Document {
        Document::from_json_bytes(self.scim_json(None, false))
    }

    /// The full SCIM User resource as a JSON value (seeding, tests).
    pub fn to_scim(&self) -> Value {
        self.to_document(None).to_value()
    }

    fn scim_json(&self, id: Option<&str>, with_schemas: bool) -> Vec<u8> {
        let enterprise =
            (self.employee_number.is_some() || self.department.is_some()).then_some(Enterprise {
                employee_number: self.employee_number.as_deref(),
                department: self.department.as_deref(),
            });
        let schemas: &[&str] = match (with_schemas, enterprise.is_some()) {
            (false, _) => &[],
            (true, false) => &[USER_SCHEMA],
            (true, true) => &[USER_SCHEMA, ENTERPRISE_SCHEMA],
        };
        let doc = ScimUser {
            schemas,
            id,
            user_name: &self.user_name,
            name: Name {
                given_name: &self.first_name,
                family_name: &self.last_name,
            },
            emails: [Email {
                value: &self.email,
                kind: "work",
                primary: true,
            }],
            active: self.active,
            display_name: self.display_name.as_deref(),
            external_id: self.external_id.as_deref(),
            title: self.title.as_deref(),
            phone_numbers: self.phone.as_deref().map(|value| {
                [Phone {
                    value,
                    kind: "work",
                }]
            }),
            enterprise,
        };
        // Sized once for the fixed text (schemas, keys) plus the values, so it never regrows.
        let values = [
            &self.user_name,
            &self.email,
            &self.first_name,
            &self.last_name,
        ]
        .iter()
        .map(|v| v.len())
        .chain(
            [
                &self.display_name,
                &self.external_id,
                &self.title,
                &self.department,
                &self.employee_number,
                &self.phone,
            ]
            .iter()
            .map(|v| v.as_ref().map_or(0, String::len)),
        )
        .sum::<usize>();
        let mut out = Vec::with_capacity(448 + id.map_or(0, str::len) + values + values / 8);
        // Impossible to fail: the document holds only strings and booleans, no maps with
        // non-string keys and no custom Serialize impl that could return an error.
        serde_json::to_writer(&mut out, &doc).expect("a SCIM user always serializes");
        out
    }
}

/// The SCIM User document, borrowed from a [`User`] and serialized in one pass (no JSON tree).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ScimUser<'a> {
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    schemas: &'a [&'a str],
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    user_name: &'a str,
    name: Name<'a>,
    emails: [Email<'a>; 1],
    active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    display_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    external_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone_numbers: Option<[Phone<'a>; 1]>,
    #[serde(
        rename = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        skip_serializing_if = "Option::is_none"
    )]
    enterprise: Option<Enterprise<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Name<'a> {
    given_name: &'a str,
    family_name: &'a str,
}

#[derive(Serialize)]
struct Email<'a> {
    value: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    primary: bool,
}

#[derive(Serialize)]
struct Phone<'a> {
    value: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Enterprise<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    employee_number: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    department: Option<&'a str>,
}

/// Folds a userName for case-insensitive comparison and de-duplication.
pub fn user_name_key(user_name: &str) -> String {
    user_name.trim().to_lowercase()
}

#[cfg(test)]
pub(crate) fn sample(user_name: &str) -> User {
    User {
        user_name: user_name.into(),
        email: user_name.into(),
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        active: true,
        display_name: None,
        external_id: None,
        title: None,
        department: None,
        employee_number: None,
        phone: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scim_representation_maps_every_field() {
        let mut u = sample("ada@example.com");
        u.department = Some("Ops".into());
        u.employee_number = Some("E1".into());
        u.phone = Some("+1 555".into());
        u.title = Some("Agent".into());
        let v = u.to_scim();
        assert_eq!(v["userName"], "ada@example.com");
        assert_eq!(v["name"]["familyName"], "Lovelace");
        assert_eq!(v["emails"][0]["primary"], true);
        assert_eq!(v["phoneNumbers"][0]["type"], "work");
        assert_eq!(v[ENTERPRISE_SCHEMA]["department"], "Ops");
        assert_eq!(v["schemas"][1], ENTERPRISE_SCHEMA);
        assert!(v.get("displayName").is_none());
    }

    #[test]
    fn documents_for_post_put_and_patch() {
        let mut u = sample("Ada@Example.com");
        u.display_name = Some("Ada \"Countess\" L.".into());
        u.employee_number = Some("E1".into());
        let post = u.to_document(None).to_value();
        assert_eq!(
            post,
            serde_json::json!({
                "schemas": [USER_SCHEMA, ENTERPRISE_SCHEMA],
                "userName": "Ada@Example.com",
                "name": {"givenName": "Ada", "familyName": "Lovelace"},
                "emails": [{"value": "Ada@Example.com", "type": "work", "primary": true}],
                "active": true,
                "displayName": "Ada \"Countess\" L.",
                ENTERPRISE_SCHEMA: {"employeeNumber": "E1"},
            })
        );
        let put = u.to_document(Some("id-1")).to_value();
        assert_eq!(put["id"], "id-1");
        let attributes = u.attributes_document().to_value();
        assert!(attributes.get("schemas").is_none(), "{attributes}");
        assert_eq!(attributes["userName"], "Ada@Example.com");
        assert_eq!(
            sample("x@example.com").to_scim()["schemas"],
            serde_json::json!([USER_SCHEMA])
        );
    }

    #[test]
    fn debug_masks_the_email() {
        let text = format!("{:?}", sample("ada.lovelace@example.com"));
        assert!(!text.contains("ada.lovelace@example.com"), "{text}");
    }
}
