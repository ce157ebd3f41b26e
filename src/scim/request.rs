//! Requests the engine makes for one operation, and what came back for each.

use std::borrow::Cow;
use std::time::Duration;

use serde_json::Value;

use super::schema::ERROR_SCHEMA;

/// HTTP method of a sub-operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Create.
    Post,
    /// Replace.
    Put,
    /// Modify.
    Patch,
}

impl Verb {
    /// The method name as it appears in a BulkRequest.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Post => "POST",
            Verb::Put => "PUT",
            Verb::Patch => "PATCH",
        }
    }

    /// The reqwest method.
    pub fn method(self) -> reqwest::Method {
        match self {
            Verb::Post => reqwest::Method::POST,
            Verb::Put => reqwest::Method::PUT,
            Verb::Patch => reqwest::Method::PATCH,
        }
    }
}

/// One SCIM request on behalf of one operation (`key` is the operation's index in the cycle).
#[derive(Debug, Clone, PartialEq)]
pub struct SubOp {
    /// Index of the operation in the cycle.
    pub key: usize,
    /// Method.
    pub verb: Verb,
    /// Path relative to the base URL: `/Users` (borrowed: every create has it) or `/Users/{id}`.
    pub path: Cow<'static, str>,
    /// The resource or PatchOp document.
    pub data: Document,
}

impl SubOp {
    /// The bulkId sent for this sub-operation: unique within the cycle.
    pub fn bulk_id(&self) -> String {
        format!("{BULK_ID_PREFIX}{}", self.key)
    }
}

/// What every bulkId starts with; the operation's key follows.
pub const BULK_ID_PREFIX: &str = "op";

/// A JSON document serialized once, when its sub-operation is built, and copied verbatim into
/// each request body that carries it (bulk or per resource, first send or resend).
#[derive(Clone, PartialEq, Eq)]
pub struct Document(Vec<u8>);

impl Document {
    /// Serializes a JSON value.
    pub fn from_value(value: &Value) -> Self {
        Self(value.to_string().into_bytes())
    }

    /// Wraps bytes that hold one JSON document (callers guarantee it).
    pub(crate) fn from_json_bytes(json: Vec<u8>) -> Self {
        Self(json)
    }

    /// The JSON text, as UTF-8 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The document parsed back into a value (tests and diagnostics, not the send path).
    pub fn to_value(&self) -> Value {
        serde_json::from_slice(&self.0).unwrap_or(Value::Null)
    }
}

impl std::fmt::Debug for Document {
    // The document holds personal data (emails, names): Debug shows its size only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Document({} bytes)", self.0.len())
    }
}

/// The service's answer for one sub-operation.
#[derive(Debug, Clone, PartialEq)]
pub struct SubReply {
    /// HTTP status of the operation.
    pub status: u16,
    /// Location of the resource, absolute or relative.
    pub location: Option<String>,
    /// The response document (resource or SCIM Error), if any.
    pub body: Option<Value>,
}

impl SubReply {
    /// A reply as received. A 2xx whose body is a SCIM Error document takes the Error's status
    /// (or 502 when it has none): some servers answer "200" and put the failure in the body.
    pub fn new(status: u16, location: Option<String>, body: Option<Value>) -> Self {
        let success = (200..300).contains(&status);
        let status = match body.as_ref().filter(|b| is_error_document(b)) {
            Some(error) if success => parse_status(&error["status"])
                .filter(|s| !(200..300).contains(s))
                .unwrap_or(502),
            _ => status,
        };
        Self {
            status,
            location,
            body,
        }
    }

    /// The resource id: from the body's `id`, else the last segment of `location`.
    pub fn resource_id(&self) -> Option<String> {
        if let Some(id) = self.body.as_ref().and_then(|b| b["id"].as_str()) {
            return Some(id.to_string());
        }
        self.location.as_deref().and_then(id_from_location)
    }

    /// `scimType` and `detail` of a SCIM Error body, if any.
    pub fn error(&self) -> (Option<String>, Option<String>) {
        let get = |k: &str| {
            self.body
                .as_ref()
                .and_then(|b| b[k].as_str())
                .map(str::to_string)
        };
        (get("scimType"), get("detail"))
    }
}

/// What became of one sub-operation's request.
#[derive(Debug, Clone, PartialEq)]
pub enum SubResult {
    /// The service answered for this operation.
    Reply(SubReply),
    /// No usable answer (network, timeout, whole-request 429/5xx, unreadable body): retryable.
    Transient {
        /// HTTP status, if any.
        status: Option<u16>,
        /// What happened.
        reason: String,
        /// The server's Retry-After, if any.
        retry_after: Option<Duration>,
    },
    /// Not sent: the budget would be passed.
    Deferred(Duration),
}

fn is_error_document(body: &Value) -> bool {
    body["schemas"]
        .as_array()
        .is_some_and(|schemas| schemas.iter().any(|s| s == ERROR_SCHEMA))
}

/// The last non-empty path segment of an absolute or relative URL.
pub fn id_from_location(location: &str) -> Option<String> {
    let path = location.split(['?', '#']).next().unwrap_or(location);
    path.rsplit('/')
        .find(|s| !s.is_empty())
        .map(|s| s.to_string())
}

/// Parses an operation's `status`: "201", 201, {"code": "201"} or {"code": 201}.
pub fn parse_status(value: &Value) -> Option<u16> {
    match value {
        Value::Number(n) => n.as_u64().and_then(|n| u16::try_from(n).ok()),
        Value::String(s) => {
            let digits: String = s
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            digits.parse().ok()
        }
        Value::Object(o) => o.get("code").and_then(parse_status),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_document_under_a_success_status_is_a_failure() {
        let error = |status: Value| {
            Some(serde_json::json!({"schemas": [ERROR_SCHEMA], "status": status, "detail": "no"}))
        };
        assert_eq!(SubReply::new(200, None, error("409".into())).status, 409);
        assert_eq!(SubReply::new(201, None, error(400.into())).status, 400);
        assert_eq!(SubReply::new(200, None, error(Value::Null)).status, 502);
        assert_eq!(SubReply::new(200, None, error("200".into())).status, 502);
        // A failure status stays as sent; a resource under a success stays a success.
        assert_eq!(SubReply::new(404, None, error("400".into())).status, 404);
        let user = Some(
            serde_json::json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": "a"}),
        );
        assert_eq!(SubReply::new(201, None, user).status, 201);
    }

    #[test]
    fn ids_from_absolute_and_relative_locations() {
        assert_eq!(
            id_from_location("https://t.example/scim/v2/Users/abc").as_deref(),
            Some("abc")
        );
        assert_eq!(id_from_location("/Users/abc/").as_deref(), Some("abc"));
        assert_eq!(id_from_location("Users/abc?x=1").as_deref(), Some("abc"));
        assert_eq!(id_from_location(""), None);
    }
}
