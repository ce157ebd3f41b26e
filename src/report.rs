//! Report lines: every invalid row and every permanently failed or exhausted operation,
//! written as JSON Lines (README, "Results": `source`, `row`, `user_name`, `status`, `reason`).

use serde::{Deserialize, Serialize};

/// One line of a JSON Lines report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportLine {
    /// Where the record came from (`s3://bucket/key`, a file path, `sqs:<message id>`).
    pub source: String,
    /// Line number of the record in the CSV (header is line 1), when from a CSV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row: Option<u64>,
    /// The userName concerned, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// `invalid`, `duplicate`, `rejected`, `failed`, `skipped`, `ignored` or `poison`.
    pub status: String,
    /// Why, in words an administrator can act on.
    pub reason: String,
    /// HTTP status from the SCIM service, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    /// SCIM `scimType`, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scim_type: Option<String>,
}

impl ReportLine {
    /// A line with only the required fields set.
    pub fn new(source: impl Into<String>, status: &str, reason: impl Into<String>) -> Self {
        Self {
            source: source.into(),
            row: None,
            user_name: None,
            status: status.into(),
            reason: reason.into(),
            http_status: None,
            scim_type: None,
        }
    }
}

/// Serializes report lines as JSON Lines (one object per line, trailing newline).
pub fn to_json_lines(lines: &[ReportLine]) -> String {
    let mut out = String::new();
    for line in lines {
        // Serializing a struct of strings and integers cannot fail.
        out.push_str(&serde_json::to_string(line).unwrap_or_default());
        out.push('\n');
    }
    out
}
