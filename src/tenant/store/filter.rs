//! Filters (RFC 7644 §3.4.2.2): the `attribute eq "value"` form clients use for lookups.

use serde_json::{Map, Value};

use super::attrs::split_schema;
use super::{fold, user_name, ScimError, USER_SCHEMA};

/// The attributes a filter may test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FilterAttribute {
    UserName,
    ExternalId,
    Id,
    Email,
}

/// A parsed `attribute eq "value"` filter: the form SCIM clients use to look users up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Filter {
    attribute: FilterAttribute,
    value: String,
}

impl Filter {
    /// Parses `userName eq "..."` (also externalId, id, emails.value); the value is a JSON
    /// string, so `\"`, `\\` and `\uXXXX` escapes are decoded. Anything else is `invalidFilter`.
    pub(super) fn parse(text: &str) -> Result<Self, ScimError> {
        let malformed = || ScimError::invalid_filter(format!("Cannot parse the filter: {text}"));
        let (attr, rest) = text
            .trim()
            .split_once(char::is_whitespace)
            .ok_or_else(malformed)?;
        let (op, literal) = rest
            .trim_start()
            .split_once(char::is_whitespace)
            .ok_or_else(malformed)?;
        let (schema, name) = split_schema(attr);
        let attribute = match name.to_ascii_lowercase().as_str() {
            _ if schema.is_some_and(|s| !s.eq_ignore_ascii_case(USER_SCHEMA)) => None,
            "username" => Some(FilterAttribute::UserName),
            "externalid" => Some(FilterAttribute::ExternalId),
            "id" => Some(FilterAttribute::Id),
            "emails" | "emails.value" => Some(FilterAttribute::Email),
            _ => None,
        }
        .ok_or_else(|| {
            ScimError::invalid_filter(format!("Filtering on {attr} is not supported"))
        })?;
        if !op.eq_ignore_ascii_case("eq") {
            let detail = format!("Operator {op} is not supported; only eq is");
            return Err(ScimError::invalid_filter(detail));
        }
        let literal = literal.trim();
        if !literal.starts_with('"') {
            return Err(malformed());
        }
        // A JSON string decoder accepts exactly SCIM's quoted strings and rejects trailing text
        // (such as `and ...`, which this tenant does not support).
        let value: String = serde_json::from_str(literal).map_err(|_| malformed())?;
        Ok(Self { attribute, value })
    }

    /// The userName a `userName eq` filter asks for (the store looks it up in its index).
    pub(super) fn user_name(&self) -> Option<&str> {
        (self.attribute == FilterAttribute::UserName).then_some(self.value.as_str())
    }

    /// Whether a user matches; `case_exact` compares userNames as they are written.
    pub(super) fn matches(&self, id: &str, attrs: &Map<String, Value>, case_exact: bool) -> bool {
        let wanted = fold(&self.value);
        match self.attribute {
            FilterAttribute::UserName if case_exact => user_name(attrs) == self.value,
            FilterAttribute::UserName => fold(user_name(attrs)) == wanted,
            // externalId and id are caseExact (RFC 7643 §3.1).
            FilterAttribute::ExternalId => {
                attrs.get("externalId").and_then(Value::as_str) == Some(self.value.as_str())
            }
            FilterAttribute::Id => id == self.value,
            FilterAttribute::Email => {
                attrs
                    .get("emails")
                    .and_then(Value::as_array)
                    .is_some_and(|emails| {
                        emails
                            .iter()
                            .any(|e| e["value"].as_str().is_some_and(|v| fold(v) == wanted))
                    })
            }
        }
    }
}
