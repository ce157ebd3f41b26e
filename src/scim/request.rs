//! Requests the engine makes for one operation, and what came back for each.

use std::time::Duration;

use serde_json::Value;

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
    /// Path relative to the base URL: `/Users` or `/Users/{id}`.
    pub path: String,
    /// The resource or PatchOp document.
    pub data: Value,
}

impl SubOp {
    /// The bulkId sent for this sub-operation: unique within the cycle.
    pub fn bulk_id(&self) -> String {
        format!("op{}", self.key)
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

/// The last non-empty path segment of an absolute or relative URL.
pub fn id_from_location(location: &str) -> Option<String> {
    let path = location.split(['?', '#']).next().unwrap_or(location);
    path.rsplit('/')
        .find(|s| !s.is_empty())
        .map(|s| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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
