//! Writing reports: JSON Lines under `reports/<date>/`, one object per source and invocation.

use std::time::SystemTime;

use super::State;
use crate::aws::s3::S3Error;
use crate::mask::mask_email;
use crate::report::{to_json_lines, ReportLine};

/// Longest sanitized source kept in a report key (S3 keys may have 1024 bytes).
const MAX_SOURCE_CHARS: usize = 200;

/// The bucket a source's report goes to: `REPORT_BUCKET`, else the source object's bucket.
pub(super) fn bucket_for(state: &State, source: &str) -> Option<String> {
    state.config.report_bucket.clone().or_else(|| {
        let rest = source.strip_prefix("s3://")?;
        let bucket = rest.split('/').next().filter(|b| !b.is_empty())?;
        Some(bucket.to_string())
    })
}

/// `reports/<YYYY-MM-DD>/<sanitized source>-<request id>.jsonl`.
pub(super) fn report_key(source: &str, request_id: &str, now: SystemTime) -> String {
    let source = source.strip_prefix("s3://").unwrap_or(source);
    let clean = |text: &str, max: usize| -> String {
        text.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .take(max)
            .collect()
    };
    // RFC 3339 starts with the date: YYYY-MM-DD.
    let stamp = humantime::format_rfc3339_seconds(now).to_string();
    let date = stamp.get(..10).unwrap_or("unknown-date");
    format!(
        "reports/{date}/{}-{}.jsonl",
        clean(source, MAX_SOURCE_CHARS),
        clean(request_id, 100)
    )
}

/// Writes one source's lines; returns the report's `s3://` address, or None when there was
/// nothing to write or no bucket to write to (the lines are then logged, emails masked).
pub(super) async fn write(
    state: &State,
    source: &str,
    request_id: &str,
    lines: &[ReportLine],
) -> Result<Option<String>, S3Error> {
    write_to(state, bucket_for(state, source), source, request_id, lines).await
}

/// [`write`] for lines about work that came in an SQS message: to `REPORT_BUCKET` only. A
/// bucket is never taken from a message's `source`: anyone allowed to send to the queue could
/// name any bucket there.
pub(super) async fn write_for_message(
    state: &State,
    source: &str,
    request_id: &str,
    lines: &[ReportLine],
) -> Result<Option<String>, S3Error> {
    let bucket = state.config.report_bucket.clone();
    write_to(state, bucket, source, request_id, lines).await
}

async fn write_to(
    state: &State,
    bucket: Option<String>,
    source: &str,
    request_id: &str,
    lines: &[ReportLine],
) -> Result<Option<String>, S3Error> {
    if lines.is_empty() {
        return Ok(None);
    }
    let Some(bucket) = bucket else {
        for line in lines {
            tracing::warn!(
                source,
                user = line.user_name.as_deref().map(mask_email),
                status = %line.status,
                reason = %line.reason,
                "not written to a report: REPORT_BUCKET is not set"
            );
        }
        return Ok(None);
    };
    let key = report_key(source, request_id, SystemTime::now());
    state
        .s3
        .put_report(&bucket, &key, to_json_lines(lines))
        .await?;
    let address = format!("s3://{bucket}/{key}");
    tracing::info!(source, report = %address, lines = lines.len(), "report written");
    Ok(Some(address))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn keys_are_dated_and_sanitized() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(19_782 * 86_400 + 3600);
        assert_eq!(
            report_key(
                "s3://scim-uploads/incoming/hr export (1).csv",
                "abc-123",
                now
            ),
            "reports/2024-02-29/scim-uploads_incoming_hr_export__1_.csv-abc-123.jsonl"
        );
        assert_eq!(
            report_key("sqs:0f1e-2d", "r/1", now),
            "reports/2024-02-29/sqs_0f1e-2d-r_1.jsonl"
        );
        let long = format!("s3://b/{}", "é".repeat(500));
        assert!(report_key(&long, "r", now).len() < 300);
    }
}
