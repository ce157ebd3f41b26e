//! Writing reports: JSON Lines under `reports/<date>/`, one object per source and invocation,
//! streamed to S3 as the lines come.

use crate::runs::{RowId, RowOutcome};
use std::time::SystemTime;

use super::State;
use crate::aws::s3::{ReportUpload, S3Error};
use crate::mask::{mask_email, masked_text, MAX_DETAIL_CHARS};
use crate::report::{to_json_lines, ReportLine};

/// Most characters of a reason logged in place of a report: a service's detail (bounded to
/// MAX_DETAIL_CHARS) with room for what the engine says around it.
const MAX_LOGGED_REASON_CHARS: usize = MAX_DETAIL_CHARS + 200;

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
    write_all(Report::new(state, source, request_id), lines).await
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
    write_all(Report::to_bucket(state, bucket, source, request_id), lines).await
}

async fn write_all(mut report: Report, lines: &[ReportLine]) -> Result<Option<String>, S3Error> {
    for line in lines {
        report.push(line).await;
    }
    report.finish().await
}

/// One source's report, written as its lines come: uploaded in parts of bounded size, so
/// memory stays flat however many lines a file yields. The object appears at
/// [`Report::finish`]; an upload error is kept and returned there.
pub(super) struct Report {
    source: String,
    /// The bucket and key, or None when there is no bucket (lines are logged instead).
    target: Option<(String, String)>,
    upload: Option<ReportUpload>,
    lines: u64,
    error: Option<S3Error>,
    /// With a run: what this invocation settled of it (its lines settle invalid, duplicate,
    /// failed and skipped rows).
    pub(super) tracked: Option<Tracked>,
}

/// What one invocation settled of a run.
#[derive(Debug, Default)]
pub(super) struct Tracked {
    /// The run.
    pub run_id: String,
    /// Rows settled, with their outcome.
    pub rows: Vec<(RowId, RowOutcome)>,
    /// SCIM requests made for it.
    pub requests: u64,
}

impl Report {
    /// A report for `source`, named after the invocation's request id, in `REPORT_BUCKET` or
    /// else the source object's bucket.
    pub(super) fn new(state: &State, source: &str, request_id: &str) -> Self {
        Self::to_bucket(state, bucket_for(state, source), source, request_id)
    }

    /// A report for `source` in `bucket` (None: logged instead).
    pub(super) fn to_bucket(
        state: &State,
        bucket: Option<String>,
        source: &str,
        request_id: &str,
    ) -> Self {
        let target =
            bucket.map(|bucket| (bucket, report_key(source, request_id, SystemTime::now())));
        let upload = target
            .as_ref()
            .map(|(bucket, key)| state.s3.report_writer(bucket, key));
        Self {
            source: source.to_string(),
            target,
            upload,
            lines: 0,
            error: None,
            tracked: None,
        }
    }

    /// Adds a line (after an upload error, lines are dropped: [`Report::finish`] fails).
    pub(super) async fn push(&mut self, line: &ReportLine) {
        self.lines += 1;
        if let (Some(tracked), Some(row)) = (self.tracked.as_mut(), line.row) {
            let outcome = match line.status.as_str() {
                "invalid" => Some(RowOutcome::Invalid),
                "duplicate" => Some(RowOutcome::Duplicate),
                "failed" => Some(RowOutcome::Failed),
                "skipped" => Some(RowOutcome::Skipped),
                _ => None,
            };
            tracked.rows.extend(outcome.map(|o| (RowId::Line(row), o)));
        }
        if self.target.is_none() {
            tracing::warn!(
                source = %self.source,
                user = line.user_name.as_deref().map(mask_email),
                status = %line.status,
                reason = %masked_text(&line.reason, MAX_LOGGED_REASON_CHARS),
                "not written to a report: REPORT_BUCKET is not set"
            );
            return;
        }
        let Some(upload) = self.upload.as_mut() else {
            return;
        };
        let text = to_json_lines(std::slice::from_ref(line));
        if let Err(error) = upload.write(text.as_bytes()).await {
            self.upload = None;
            self.error = Some(error);
        }
    }

    /// Writes what is left; returns the report's `s3://` address, or None when there was
    /// nothing to write or no bucket to write to.
    pub(super) async fn finish(mut self) -> Result<Option<String>, S3Error> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        let (Some(upload), Some((bucket, key))) = (self.upload.take(), self.target.take()) else {
            return Ok(None);
        };
        if !upload.finish().await? {
            return Ok(None);
        }
        let address = format!("s3://{bucket}/{key}");
        tracing::info!(source = %self.source, report = %address, lines = self.lines, "report written");
        Ok(Some(address))
    }
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

    /// Log lines written on this thread, as text.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A function state with no REPORT_BUCKET whose AWS clients point at a closed port.
    fn state_without_bucket() -> State {
        use aws_config::{BehaviorVersion, Region, SdkConfig};
        let sdk = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url("http://127.0.0.1:9")
            .build();
        let config = crate::lambda::config::FunctionConfig::from_lookup(|name| match name {
            "SCIM_SECRET_ID" => Some("scim-credentials".into()),
            "WORK_QUEUE_URL" => Some("http://127.0.0.1:9/000000000000/scim-work".into()),
            _ => None,
        })
        .unwrap();
        State::new(config, &sdk).unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn without_a_bucket_the_logged_reasons_are_masked_and_bounded() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let mut with_address = ReportLine::new(
            "sqs:m-1",
            "failed",
            "the service answered: ada.lovelace@example.com is locked by policy",
        );
        with_address.user_name = Some("ada.lovelace@example.com".into());
        let huge = ReportLine::new("sqs:m-1", "failed", "é".repeat(100_000));
        let state = state_without_bucket();
        let written = write(&state, "sqs:m-1", "req-1", &[with_address, huge]).await;
        assert_eq!(written.unwrap(), None);

        let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(!text.contains("ada.lovelace"), "{text}");
        assert_eq!(
            lines[0]["fields"]["reason"],
            "the service answered: a***@example.com is locked by policy"
        );
        let reason = lines[1]["fields"]["reason"].as_str().unwrap();
        assert_eq!(reason.chars().count(), MAX_LOGGED_REASON_CHARS + 1);
        assert!(text.len() < 10_000, "{} bytes logged", text.len());
    }
}
