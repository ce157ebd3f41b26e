//! Writing reports: JSON Lines under `reports/<date>/`, one object per source and invocation.

use std::time::{SystemTime, UNIX_EPOCH};

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
    let days = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or(0);
    let (y, m, d) = civil_date(days as i64);
    format!(
        "reports/{y:04}-{m:02}-{d:02}/{}-{}.jsonl",
        clean(source, MAX_SOURCE_CHARS),
        clean(request_id, 100)
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_date(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Writes one source's lines; returns the report's `s3://` address, or None when there was
/// nothing to write or no bucket to write to (the lines are then logged, emails masked).
pub(super) async fn write(
    state: &State,
    source: &str,
    request_id: &str,
    lines: &[ReportLine],
) -> Result<Option<String>, S3Error> {
    if lines.is_empty() {
        return Ok(None);
    }
    let Some(bucket) = bucket_for(state, source) else {
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
    fn dates_are_gregorian() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(19_782), (2024, 2, 29));
        assert_eq!(civil_date(20_453), (2025, 12, 31));
    }

    #[test]
    fn keys_are_dated_and_sanitized() {
        let now = UNIX_EPOCH + Duration::from_secs(19_782 * 86_400 + 3600);
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
