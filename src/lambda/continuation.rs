//! Files too large for one invocation: when time runs short, the invocation reading a CSV object
//! leaves a continuation message on the work queue naming the object, its version and where to
//! resume (the next unread record); the SQS handler continues from there under its own deadline,
//! leaving another one if it too runs short. The header is read again each time, to map columns.

use crate::runs::SyncMode;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::aws::s3::{S3Error, S3Store};
use crate::sources::csv::{CsvSource, FileError, ResumePoint};
use crate::sources::last_lines::{last_lines_of, LastLines};

/// The continuation message format this build writes and reads.
pub(super) const CONTINUATION_VERSION: u64 = 1;
/// Rows scanned between two looks at the clock in the first pass.
const ROWS_PER_CLOCK_CHECK: u64 = 256;

/// Where the reading of an object resumes: the body of a continuation message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Checkpoint {
    /// Format version ([`CONTINUATION_VERSION`]); its presence marks the message.
    pub continuation: u64,
    /// The object's bucket (accepted only if it is `REPORT_BUCKET`).
    pub bucket: String,
    /// The object's key.
    pub key: String,
    /// The version read, when the bucket is versioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// The ETag read: a replaced object is not continued with another content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The run: the request id of the invocation that first read the object.
    pub run: String,
    /// When the upload event happened, if it came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_time: Option<String>,
    /// Bytes from the start of the object to the end of the header row.
    pub header_end: u64,
    /// The line after the header row.
    pub header_next_line: u64,
    /// Bytes from the start of the object to the next unread record.
    pub offset: u64,
    /// The line of the next unread record.
    pub line: u64,
    /// The run's sync mode, for a run not started yet (waiting for the SCIM service).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SyncMode>,
    /// Since when (Unix seconds) the run has waited to start: `MAX_RETRY_AGE` bounds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting_since: Option<u64>,
}

/// Why a continuation message cannot be used (it never quotes the body).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContinuationError {
    /// A format this build does not read.
    #[error("continuation message version {0} is not supported (this build reads version {CONTINUATION_VERSION})")]
    Version(u64),
    /// Fields missing, of the wrong type, or inconsistent.
    #[error("the continuation message is malformed: {0}")]
    Malformed(&'static str),
    /// The bucket named is not one this function reads from.
    #[error("the continuation message names bucket {named:?}, but only REPORT_BUCKET ({known}) is continued")]
    UnknownBucket {
        /// The bucket the message names (at most 63 characters, as bucket names are).
        named: String,
        /// The configured bucket, or that there is none.
        known: String,
    },
}

/// Whether a continuation for `bucket` would be accepted: only `REPORT_BUCKET` (the upload
/// bucket in the template) is, so a message body never chooses where reports go.
pub(super) fn check_bucket(known: Option<&str>, bucket: &str) -> Result<(), ContinuationError> {
    match known {
        Some(known) if known == bucket => Ok(()),
        _ => Err(ContinuationError::UnknownBucket {
            named: bucket.chars().take(63).collect(),
            known: known.map_or_else(|| "not set".to_string(), str::to_string),
        }),
    }
}

/// Recognises a continuation message (a JSON object with a `continuation` field) and validates
/// it; `None` for any other body.
pub(super) fn recognise(
    body: Option<&str>,
    known_bucket: Option<&str>,
) -> Option<Result<Checkpoint, ContinuationError>> {
    let value: Value = serde_json::from_str(body?).ok()?;
    let version = value.as_object()?.get("continuation")?;
    Some(validate(version, &value, known_bucket))
}

fn validate(
    version: &Value,
    value: &Value,
    known_bucket: Option<&str>,
) -> Result<Checkpoint, ContinuationError> {
    let version = version.as_u64().ok_or(ContinuationError::Malformed(
        "\"continuation\" must be a version number",
    ))?;
    if version != CONTINUATION_VERSION {
        return Err(ContinuationError::Version(version));
    }
    let checkpoint: Checkpoint = serde_json::from_value(value.clone()).map_err(|_| {
        ContinuationError::Malformed(
            "expected {\"continuation\": 1, \"bucket\", \"key\", \"run\", \"header_end\", \"header_next_line\", \"offset\", \"line\"} and optional \"version_id\", \"etag\", \"event_time\", \"mode\", \"waiting_since\"",
        )
    })?;
    if checkpoint.bucket.is_empty() || checkpoint.key.is_empty() {
        return Err(ContinuationError::Malformed(
            "the bucket and key must not be empty",
        ));
    }
    if checkpoint.key.starts_with(super::s3::REPORTS_PREFIX) {
        return Err(ContinuationError::Malformed("reports are not input"));
    }
    if checkpoint.header_end == 0
        || checkpoint.offset < checkpoint.header_end
        || checkpoint.header_next_line < 2
        || checkpoint.line < checkpoint.header_next_line
    {
        return Err(ContinuationError::Malformed(
            "the resume point must lie after the header",
        ));
    }
    check_bucket(known_bucket, &checkpoint.bucket)?;
    Ok(checkpoint)
}

/// Sends continuation messages to the work queue, and remembers how long enqueueing a flush of
/// deferred rows takes, to stop in time for the next invocation.
pub(super) struct ContinuationQueue {
    client: aws_sdk_sqs::Client,
    url: String,
    /// The slowest flush seen by this container, in milliseconds.
    slowest_flush_ms: AtomicU64,
}

impl ContinuationQueue {
    /// Continuations go to the queue at `url`.
    pub(super) fn new(client: aws_sdk_sqs::Client, url: String) -> Self {
        Self {
            client,
            url,
            slowest_flush_ms: AtomicU64::new(0),
        }
    }

    /// Notes how long a flush of deferred rows took.
    pub(super) fn flushed_in(&self, took: Duration) {
        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        self.slowest_flush_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// The slowest flush of deferred rows seen so far (zero before the first).
    pub(super) fn slowest_flush(&self) -> Duration {
        Duration::from_millis(self.slowest_flush_ms.load(Ordering::Relaxed))
    }

    /// Enqueues `checkpoint`, delivered after `delay` (at most 900 s).
    pub(super) async fn send(
        &self,
        checkpoint: &Checkpoint,
        delay: Duration,
    ) -> Result<(), String> {
        let body = serde_json::to_string(checkpoint).map_err(|e| e.to_string())?;
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .delay_seconds(crate::queue::retry_message::delay_seconds(delay) as i32)
            .send()
            .await
            .map_err(|e| crate::aws::error_text(&e))?;
        Ok(())
    }
}

/// How positions read from a segment's stream map to the object: identity for a whole object;
/// for a resumed one, the stream is the header's bytes followed by the object from the resume
/// point, so lines and offsets after the header are shifted.
#[derive(Debug, Clone, Default)]
pub(super) struct Segment {
    resumed: Option<Resumed>,
}

#[derive(Debug, Clone)]
struct Resumed {
    header_end: u64,
    line_shift: u64,
    /// Where the object's bytes after the header start (set once the first byte is read).
    start: Arc<AtomicU64>,
}

impl Segment {
    /// The line in the object of a line of the stream.
    pub(super) fn line(&self, line: u64) -> u64 {
        match &self.resumed {
            Some(r) => line + r.line_shift,
            None => line,
        }
    }

    /// The point in the object of a point of the stream.
    pub(super) fn point(&self, point: ResumePoint) -> ResumePoint {
        match &self.resumed {
            Some(r) if point.offset > r.header_end => ResumePoint {
                offset: point.offset - r.header_end + r.start.load(Ordering::Relaxed),
                line: point.line + r.line_shift,
            },
            _ => point,
        }
    }
}

/// An object opened for reading, whole or from a checkpoint.
pub(super) struct Opened {
    /// The ETag of the content read.
    pub etag: Option<String>,
    /// When the object was written (ms since the Unix epoch): the time of its rows.
    pub last_modified: Option<u64>,
    /// The stream to give [`CsvSource`] (read it on a blocking thread).
    pub reader: Box<dyn Read + Send>,
    /// How its positions map to the object.
    pub segment: Segment,
}

/// Opens `bucket/key` (that version and content) whole, or from `from`: the header's bytes,
/// then the rest of the object from the resume point.
pub(super) async fn open(
    s3: &S3Store,
    bucket: &str,
    key: &str,
    version_id: Option<&str>,
    etag: Option<&str>,
    from: Option<&Checkpoint>,
) -> Result<Opened, S3Error> {
    let Some(from) = from else {
        let object = s3.open(bucket, key, version_id, etag).await?;
        return Ok(Opened {
            etag: object.etag,
            last_modified: object.last_modified,
            reader: Box::new(object.reader),
            segment: Segment::default(),
        });
    };
    let header = s3
        .open_range(
            bucket,
            key,
            version_id,
            etag,
            Some(format!("bytes=0-{}", from.header_end - 1)),
        )
        .await?;
    // One byte early: the one before a record is the previous line break, and if it is a CR
    // the LF of a CRLF may follow; both are dropped, so the rest starts at a record.
    let rest = s3
        .open_range(
            bucket,
            key,
            version_id,
            etag,
            Some(format!("bytes={}-", from.offset - 1)),
        )
        .await?;
    let start = Arc::new(AtomicU64::new(from.offset));
    let rest = AfterBreak {
        inner: rest.reader,
        offset: from.offset,
        start: Arc::clone(&start),
        started: false,
        pending: None,
    };
    Ok(Opened {
        etag: header.etag,
        last_modified: header.last_modified,
        reader: Box::new(header.reader.chain(rest)),
        segment: Segment {
            resumed: Some(Resumed {
                header_end: from.header_end,
                line_shift: from.line - from.header_next_line,
                start,
            }),
        },
    })
}

/// The object from one byte before a record: drops that byte (a line break) and the LF after
/// it if it was a CR, noting where the record really starts.
struct AfterBreak<R> {
    inner: R,
    offset: u64,
    start: Arc<AtomicU64>,
    started: bool,
    pending: Option<u8>,
}

fn read_byte(reader: &mut impl Read) -> io::Result<Option<u8>> {
    let mut byte = [0u8; 1];
    loop {
        match reader.read(&mut byte) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(byte[0])),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

impl<R: Read> Read for AfterBreak<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.started {
            self.started = true;
            if read_byte(&mut self.inner)? == Some(b'\r') {
                match read_byte(&mut self.inner)? {
                    Some(b'\n') => self.start.store(self.offset + 1, Ordering::Relaxed),
                    other => self.pending = other,
                }
            }
        }
        if let (Some(byte), Some(slot)) = (self.pending, buf.first_mut()) {
            *slot = byte;
            self.pending = None;
            return Ok(1);
        }
        self.inner.read(buf)
    }
}

/// What the first pass over a segment found.
#[derive(Debug)]
pub(super) struct Scanned {
    /// The last line of every userName from the segment's start to `end`.
    pub last: LastLines,
    /// Where the header ends.
    pub header: ResumePoint,
    /// Where the scan stopped for lack of time; `None`: it reached the end of the object.
    pub end: Option<ResumePoint>,
}

/// First pass over a segment, on a blocking thread: the last line of every userName, until the
/// end of the object or, checked every few hundred rows, `stop_at`.
pub(super) fn scan(
    reader: impl Read,
    segment: &Segment,
    stop_at: Instant,
) -> Result<Scanned, FileError> {
    let mut source = CsvSource::new(reader)?;
    let header = segment.point(source.resume_point());
    let mut end = None;
    let mut rows = 0u64;
    let scanned = std::iter::from_fn(|| {
        if rows > 0 && rows % ROWS_PER_CLOCK_CHECK == 0 && Instant::now() >= stop_at {
            end = Some(segment.point(source.resume_point()));
            return None;
        }
        rows += 1;
        let row = source.next()?;
        Some(row.map(|mut row| {
            row.line = segment.line(row.line);
            row
        }))
    });
    let last = last_lines_of(scanned)?;
    Ok(Scanned { last, header, end })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> Value {
        serde_json::json!({
            "continuation": 1, "bucket": "uploads", "key": "incoming/a.csv", "run": "r-1",
            "event_time": "2025-03-04T08:15:30Z", "etag": "\"abc\"",
            "header_end": 20, "header_next_line": 2, "offset": 120, "line": 7,
        })
    }

    #[test]
    fn continuation_messages_are_recognised_and_validated() {
        let body = checkpoint().to_string();
        let parsed = recognise(Some(&body), Some("uploads")).unwrap().unwrap();
        assert_eq!(parsed.offset, 120);
        assert_eq!(parsed.line, 7);
        assert_eq!(
            serde_json::to_value(&parsed).unwrap(),
            checkpoint(),
            "written as read"
        );
        // Other messages are not continuations.
        assert!(recognise(Some(r#"{"users": []}"#), Some("uploads")).is_none());
        assert!(recognise(Some(r#"{"version": 1, "operations": []}"#), Some("uploads")).is_none());
        assert!(recognise(Some("not json"), Some("uploads")).is_none());
        assert!(recognise(None, Some("uploads")).is_none());

        let error = |edit: &dyn Fn(&mut Value), known: Option<&str>| {
            let mut body = checkpoint();
            edit(&mut body);
            recognise(Some(&body.to_string()), known)
                .unwrap()
                .unwrap_err()
        };
        assert_eq!(
            error(&|b| b["continuation"] = 2.into(), Some("uploads")),
            ContinuationError::Version(2)
        );
        let other = error(&|b| b["bucket"] = "attacker-bucket".into(), Some("uploads"));
        assert!(matches!(other, ContinuationError::UnknownBucket { .. }));
        assert!(other.to_string().contains("attacker-bucket"), "{other}");
        assert!(matches!(
            error(&|_| {}, None),
            ContinuationError::UnknownBucket { .. }
        ));
        let edits: [&dyn Fn(&mut Value); 7] = [
            &|b| b["offset"] = 10.into(),
            &|b| b["line"] = 1.into(),
            &|b| b["header_end"] = 0.into(),
            &|b| b["key"] = "reports/x.jsonl".into(),
            &|b| b["key"] = "".into(),
            &|b| b["users"] = serde_json::json!([{"email": "secret@example.com"}]),
            &|b| b["offset"] = "ten".into(),
        ];
        for edit in edits {
            let err = error(edit, Some("uploads"));
            assert!(matches!(err, ContinuationError::Malformed(_)), "{err}");
            assert!(!err.to_string().contains("secret"), "{err}");
        }
    }

    /// The rows of `csv` read whole, and read again from every resume point (the header's
    /// bytes followed by the rest, as [`open`] does): the same rows, lines and resume points.
    fn resumes_everywhere(csv: &[u8]) {
        resumes_at(csv, 1);
    }

    /// [`resumes_everywhere`] at every `step`th record only (a large file).
    fn resumes_at(csv: &[u8], step: usize) {
        let whole: Vec<(u64, String, ResumePoint)> = {
            let mut source = CsvSource::new(csv).unwrap();
            let mut rows = Vec::new();
            while let Some(row) = source.next() {
                let row = row.unwrap();
                let name = row.result.map(|u| u.user_name).unwrap_or_default();
                rows.push((row.line, name, source.resume_point()));
            }
            rows
        };
        // A point between a CR and its LF (the LF not read yet) is the point after the LF.
        let canonical = |p: ResumePoint| match csv.get(p.offset as usize - 1..=p.offset as usize) {
            Some(b"\r\n") => ResumePoint {
                offset: p.offset + 1,
                line: p.line,
            },
            _ => p,
        };
        let whole: Vec<_> = whole
            .into_iter()
            .map(|(line, name, p)| (line, name, canonical(p)))
            .collect();
        let header = CsvSource::new(csv).unwrap().resume_point();
        let mut points = vec![(0, header)];
        points.extend(whole.iter().enumerate().map(|(i, (_, _, p))| (i + 1, *p)));
        // Resuming before a CRLF's LF works too.
        let early: Vec<_> = points
            .iter()
            .filter(|(_, p)| csv.get(p.offset as usize - 2..p.offset as usize) == Some(b"\r\n"))
            .map(|&(i, p)| {
                let offset = p.offset - 1;
                (i, ResumePoint { offset, ..p })
            })
            .collect();
        assert!(!early.is_empty() || !csv.windows(2).any(|w| w == b"\r\n"));
        points.extend(early);
        points.retain(|(i, _)| i % step == 0);
        for &(i, from) in &points {
            let from = &from;
            let checkpoint = Checkpoint {
                continuation: 1,
                bucket: "b".into(),
                key: "k".into(),
                version_id: None,
                etag: None,
                run: "r".into(),
                event_time: None,
                header_end: header.offset,
                header_next_line: header.line,
                offset: from.offset,
                line: from.line,
                mode: None,
                waiting_since: None,
            };
            let start = Arc::new(AtomicU64::new(checkpoint.offset));
            let rest = AfterBreak {
                inner: &csv[(checkpoint.offset - 1) as usize..],
                offset: checkpoint.offset,
                start: Arc::clone(&start),
                started: false,
                pending: None,
            };
            let segment = Segment {
                resumed: Some(Resumed {
                    header_end: checkpoint.header_end,
                    line_shift: checkpoint.line - checkpoint.header_next_line,
                    start,
                }),
            };
            let stream = (&csv[..checkpoint.header_end as usize]).chain(rest);
            let mut source = CsvSource::new(stream).unwrap();
            let mut again = Vec::new();
            while let Some(row) = source.next() {
                let row = row.unwrap();
                let name = row.result.map(|u| u.user_name).unwrap_or_default();
                let point = canonical(segment.point(source.resume_point()));
                again.push((segment.line(row.line), name, point));
            }
            let differ = again.iter().zip(&whole[i..]).position(|(a, b)| a != b);
            assert_eq!(
                differ.map(|d| (&again[d], &whole[i + d])),
                None,
                "resumed at {from:?}"
            );
            assert_eq!(again.len(), whole.len() - i, "resumed at {from:?}");
        }
    }

    #[test]
    fn reading_resumes_at_any_record_whatever_the_line_breaks() {
        let rows = "a@x.org,A,One\nb@x.org,\"B\nmulti\",Two\n\nc@x.org,C,Three\n,,\nd@x.org,D,Four";
        for text in [
            format!("email,first_name,last_name\n{rows}\n"),
            format!("email,first_name,last_name\n{rows}"),
            format!("email,first_name,last_name\n{rows}\n").replace('\n', "\r\n"),
            format!("email,first_name,last_name\n{rows}\n").replace('\n', "\r"),
            format!(
                "\u{feff}sep=;\r\nemail;first_name;last_name\r\n{}\r\n",
                rows.replace(',', ";")
            ),
            format!("\n\nemail,first_name,last_name\r\n{rows}\n"),
        ] {
            resumes_everywhere(text.as_bytes());
        }
        // Past the parser's 64 KiB buffer, with CRLFs falling on its edges.
        let mut big = String::from("email,first_name,last_name\r\n");
        for i in 0..3000 {
            big.push_str(&format!(
                "user{i}@x.org,Given{i},Family{}\r\n",
                "x".repeat(i % 7)
            ));
        }
        resumes_at(big.as_bytes(), 97);
    }

    #[test]
    fn a_short_scan_stops_at_a_record_and_says_where() {
        let mut csv = String::from("email,first_name,last_name\n");
        for i in 0..1000 {
            csv.push_str(&format!("u{}@x.org,G,F{i}\n", i % 300));
        }
        let done = scan(
            csv.as_bytes(),
            &Segment::default(),
            Instant::now() + Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(done.end, None);
        assert_eq!(
            done.header,
            ResumePoint {
                offset: 27,
                line: 2
            }
        );
        assert_eq!(done.last.len(), 300);
        let cut = scan(csv.as_bytes(), &Segment::default(), Instant::now()).unwrap();
        let end = cut.end.expect("stopped");
        assert_eq!(end.line, 2 + ROWS_PER_CLOCK_CHECK);
        assert!(csv.as_bytes()[end.offset as usize - 1] == b'\n');
        assert!(csv[end.offset as usize..].starts_with(&format!("u{}@x.org", ROWS_PER_CLOCK_CHECK)));
        assert_eq!(cut.last.len(), ROWS_PER_CLOCK_CHECK as usize);
    }
}
