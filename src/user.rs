//! A validated user as the engine provisions it, and its SCIM 2.0 representation (RFC 7643 §4.1).

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

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

    /// The full SCIM User resource, for POST and PUT.
    pub fn to_scim(&self) -> Value {
        let mut schemas = vec![json!(USER_SCHEMA)];
        let mut doc = Map::new();
        doc.insert("userName".into(), json!(self.user_name));
        doc.insert(
            "name".into(),
            json!({"givenName": self.first_name, "familyName": self.last_name}),
        );
        doc.insert(
            "emails".into(),
            json!([{"value": self.email, "type": "work", "primary": true}]),
        );
        doc.insert("active".into(), json!(self.active));
        let optional = [
            ("displayName", &self.display_name),
            ("externalId", &self.external_id),
            ("title", &self.title),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                doc.insert(name.into(), json!(v));
            }
        }
        if let Some(phone) = &self.phone {
            doc.insert(
                "phoneNumbers".into(),
                json!([{"value": phone, "type": "work"}]),
            );
        }
        let mut enterprise = Map::new();
        if let Some(v) = &self.employee_number {
            enterprise.insert("employeeNumber".into(), json!(v));
        }
        if let Some(v) = &self.department {
            enterprise.insert("department".into(), json!(v));
        }
        if !enterprise.is_empty() {
            schemas.push(json!(ENTERPRISE_SCHEMA));
            doc.insert(ENTERPRISE_SCHEMA.into(), Value::Object(enterprise));
        }
        doc.insert("schemas".into(), Value::Array(schemas));
        Value::Object(doc)
    }
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
    fn debug_masks_the_email() {
        let text = format!("{:?}", sample("ada.lovelace@example.com"));
        assert!(!text.contains("ada.lovelace@example.com"), "{text}");
    }
}
