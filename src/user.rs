//! A validated user as the engine provisions it (its SCIM encoding is in [`crate::scim::user`]).

use serde::{Deserialize, Serialize};

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
    fn debug_masks_the_email() {
        let text = format!("{:?}", sample("ada.lovelace@example.com"));
        assert!(!text.contains("ada.lovelace@example.com"), "{text}");
    }
}
