//! The two PatchOp forms of a deactivation (RFC 7644 §3.5.2.3); servers accept one, the other
//! or both, and what works is remembered per tenant.

use serde_json::json;

use super::request::Document;
use super::schema::PATCH_OP;

/// The two ways of deactivating with PATCH; servers accept one or the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchForm {
    /// `{"op":"replace","path":"active","value":false}`.
    Path,
    /// `{"op":"replace","value":{"active":false}}`.
    Value,
}

impl PatchForm {
    /// The form to try when this one is refused.
    pub fn other(self) -> Self {
        match self {
            PatchForm::Path => PatchForm::Value,
            PatchForm::Value => PatchForm::Path,
        }
    }

    /// Its name in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            PatchForm::Path => "path",
            PatchForm::Value => "value",
        }
    }

    /// The form named `text` in the ledger.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "path" => Some(PatchForm::Path),
            "value" => Some(PatchForm::Value),
            _ => None,
        }
    }

    /// As a number, for an atomic.
    pub fn to_u8(self) -> u8 {
        match self {
            PatchForm::Path => 0,
            PatchForm::Value => 1,
        }
    }

    /// From [`PatchForm::to_u8`].
    pub fn from_u8(n: u8) -> Self {
        if n == 1 {
            PatchForm::Value
        } else {
            PatchForm::Path
        }
    }
}

/// The PatchOp body deactivating a user in `form`.
pub fn deactivation(form: PatchForm) -> Document {
    let operation = match form {
        PatchForm::Path => json!({"op": "replace", "path": "active", "value": false}),
        PatchForm::Value => json!({"op": "replace", "value": {"active": false}}),
    };
    Document::from_value(&json!({"schemas": [PATCH_OP], "Operations": [operation]}))
}
