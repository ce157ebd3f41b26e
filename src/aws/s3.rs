//! S3: CSV objects streamed to the (synchronous) CSV reader, the newest object under a prefix,
//! and JSON Lines reports (one PutObject when small, a multipart upload of bounded parts when
//! large, so a report of any size is written with flat memory).

use std::pin::Pin;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use tokio::io::AsyncRead;
use tokio_util::io::SyncIoBridge;

/// A failed S3 call, naming the object and the service's error code, never its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{action} s3://{bucket}/{key} failed: {message}")]
pub struct S3Error {
    /// `GetObject`, `ListObjectsV2`, `PutObject` or a multipart upload call.
    pub action: &'static str,
    /// The bucket.
    pub bucket: String,
    /// The key or prefix.
    pub key: String,
    /// The service's error code, when it answered (`NoSuchKey`, `AccessDenied`, ...).
    pub code: Option<String>,
    /// Code and message, or the transport error.
    pub message: String,
}

impl S3Error {
    fn new<E>(
        action: &'static str,
        bucket: &str,
        key: &str,
        error: &aws_sdk_s3::error::SdkError<E>,
    ) -> Self
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        Self {
            action,
            bucket: bucket.to_string(),
            key: key.to_string(),
            code: super::error_code(error).map(str::to_string),
            message: super::error_text(error),
        }
    }
}

/// Size of a report part: above S3's 5 MiB minimum for every part but the last (lines are
/// far shorter than the 3 MiB between the two); a report writer holds at most about this much.
pub const REPORT_PART_BYTES: usize = 8 * 1024 * 1024;

const REPORT_CONTENT_TYPE: &str = "application/x-ndjson";

/// An object's body as a blocking reader. Read it only on a blocking thread
/// (`tokio::task::spawn_blocking`): each read waits on the runtime for the next chunk.
pub type ObjectReader = SyncIoBridge<Pin<Box<dyn AsyncRead + Send>>>;

/// An object being read.
pub struct OpenedObject {
    /// The object's ETag, to read the same version again (`If-Match`).
    pub etag: Option<String>,
    /// When the object was written (ms since the Unix epoch), if S3 said.
    pub last_modified: Option<u64>,
    /// The body, streamed: never held whole in memory.
    pub reader: ObjectReader,
}

/// S3 operations of the function.
#[derive(Clone)]
pub struct S3Store {
    client: Client,
}

impl S3Store {
    /// A store using `client`.
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    /// Starts reading an object (a given version, if any); `if_match` (an ETag) makes sure it
    /// is the content read before. Must be called within the Tokio runtime.
    pub async fn open(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        if_match: Option<&str>,
    ) -> Result<OpenedObject, S3Error> {
        self.open_range(bucket, key, version_id, if_match, None)
            .await
    }

    /// [`S3Store::open`] for a byte range only (an HTTP `Range`: `bytes=0-99`, `bytes=100-`).
    pub async fn open_range(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        if_match: Option<&str>,
        range: Option<String>,
    ) -> Result<OpenedObject, S3Error> {
        let output = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .set_version_id(version_id.map(str::to_string))
            .set_if_match(if_match.map(str::to_string))
            .set_range(range)
            .send()
            .await
            .map_err(|e| S3Error::new("GetObject", bucket, key, &e))?;
        let etag = output.e_tag().map(str::to_string);
        let last_modified = output
            .last_modified()
            .and_then(|t| u64::try_from(t.to_millis().ok()?).ok());
        let body: Pin<Box<dyn AsyncRead + Send>> = Box::pin(output.body.into_async_read());
        Ok(OpenedObject {
            etag,
            last_modified,
            reader: SyncIoBridge::new(body),
        })
    }

    /// The key of the most recently modified object under `prefix` (folder markers ignored).
    pub async fn newest_object(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Option<String>, S3Error> {
        let mut newest: Option<(aws_sdk_s3::primitives::DateTime, String)> = None;
        let mut token: Option<String> = None;
        loop {
            let page = self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| S3Error::new("ListObjectsV2", bucket, prefix, &e))?;
            for object in page.contents() {
                let (Some(key), Some(modified)) = (object.key(), object.last_modified()) else {
                    continue;
                };
                if key.ends_with('/') {
                    continue;
                }
                // Same second: the later key wins, so the choice does not depend on listing order.
                let newer = newest.as_ref().is_none_or(|(at, k)| {
                    (modified.secs(), modified.subsec_nanos(), key)
                        > (at.secs(), at.subsec_nanos(), k.as_str())
                });
                if newer {
                    newest = Some((*modified, key.to_string()));
                }
            }
            match page.next_continuation_token() {
                Some(next) if page.is_truncated() == Some(true) => token = Some(next.to_string()),
                _ => break,
            }
        }
        Ok(newest.map(|(_, key)| key))
    }

    /// Writes a small JSON document (a run's summary) at `bucket`/`key`, replacing any.
    pub async fn put_json(&self, bucket: &str, key: &str, body: Vec<u8>) -> Result<(), S3Error> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/json")
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| S3Error::new("PutObject", bucket, key, &e))?;
        Ok(())
    }

    /// A writer for a report at `bucket`/`key` that is uploaded as it grows.
    pub fn report_writer(&self, bucket: &str, key: &str) -> ReportUpload {
        ReportUpload {
            client: self.client.clone(),
            bucket: bucket.to_string(),
            key: key.to_string(),
            buffer: Vec::new(),
            upload_id: None,
            parts: Vec::new(),
        }
    }
}

/// A report being written: lines are buffered up to a part's size, then uploaded as a part
/// of a multipart upload; a report smaller than one part is written by one PutObject at
/// [`ReportUpload::finish`]. The object appears only when finished; a failed upload is aborted.
pub struct ReportUpload {
    client: Client,
    bucket: String,
    key: String,
    buffer: Vec<u8>,
    upload_id: Option<String>,
    parts: Vec<CompletedPart>,
}

impl ReportUpload {
    /// Appends `text` (whole lines); uploads a part once a part's worth is buffered. After an
    /// error the upload is aborted and the writer must not be used any more.
    pub async fn write(&mut self, text: &[u8]) -> Result<(), S3Error> {
        // Uploaded before it would pass a part's size, so the buffer stays within one part.
        if !self.buffer.is_empty() && self.buffer.len() + text.len() > REPORT_PART_BYTES {
            if let Err(error) = self.upload_part().await {
                self.abort().await;
                return Err(error);
            }
        }
        self.buffer.extend_from_slice(text);
        Ok(())
    }

    /// Bytes buffered or uploaded so far are written: the object appears. Returns false when
    /// nothing was ever written (no object is created).
    pub async fn finish(mut self) -> Result<bool, S3Error> {
        let Some(upload_id) = self.upload_id.clone() else {
            if self.buffer.is_empty() {
                return Ok(false);
            }
            let body = std::mem::take(&mut self.buffer);
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(&self.key)
                .content_type(REPORT_CONTENT_TYPE)
                .body(ByteStream::from(body))
                .send()
                .await
                .map_err(|e| S3Error::new("PutObject", &self.bucket, &self.key, &e))?;
            return Ok(true);
        };
        let completed = async {
            if !self.buffer.is_empty() {
                self.upload_part().await?;
            }
            let parts = CompletedMultipartUpload::builder()
                .set_parts(Some(std::mem::take(&mut self.parts)))
                .build();
            self.client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(&self.key)
                .upload_id(&upload_id)
                .multipart_upload(parts)
                .send()
                .await
                .map_err(|e| S3Error::new("CompleteMultipartUpload", &self.bucket, &self.key, &e))
        }
        .await;
        match completed {
            Ok(_) => Ok(true),
            Err(error) => {
                self.abort().await;
                Err(error)
            }
        }
    }

    /// Uploads the buffer as the next part, starting the multipart upload if need be.
    async fn upload_part(&mut self) -> Result<(), S3Error> {
        let upload_id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let created = self
                    .client
                    .create_multipart_upload()
                    .bucket(&self.bucket)
                    .key(&self.key)
                    .content_type(REPORT_CONTENT_TYPE)
                    // Declared, so the parts' checksums (the SDK adds CRC32) match the upload's.
                    .checksum_algorithm(ChecksumAlgorithm::Crc32)
                    .send()
                    .await
                    .map_err(|e| {
                        S3Error::new("CreateMultipartUpload", &self.bucket, &self.key, &e)
                    })?;
                let id = created
                    .upload_id()
                    .map(str::to_string)
                    .ok_or_else(|| S3Error {
                        action: "CreateMultipartUpload",
                        bucket: self.bucket.clone(),
                        key: self.key.clone(),
                        code: None,
                        message: "the answer has no upload id".into(),
                    })?;
                self.upload_id = Some(id.clone());
                id
            }
        };
        // S3 numbers parts from 1; at most 10,000 (80 GB of report at 8 MiB a part).
        let number = i32::try_from(self.parts.len() + 1).unwrap_or(i32::MAX);
        let body = std::mem::replace(&mut self.buffer, Vec::with_capacity(REPORT_PART_BYTES));
        let uploaded = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .part_number(number)
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| S3Error::new("UploadPart", &self.bucket, &self.key, &e))?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(uploaded.e_tag().map(str::to_string))
                .set_checksum_crc32(uploaded.checksum_crc32().map(str::to_string))
                .build(),
        );
        Ok(())
    }

    /// Aborts the multipart upload, if one was started, so its parts are not kept (and billed);
    /// a failure to abort is logged (a bucket lifecycle rule cleans such uploads up).
    async fn abort(&mut self) {
        self.buffer = Vec::new();
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        if let Err(e) = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .send()
            .await
        {
            let error = S3Error::new("AbortMultipartUpload", &self.bucket, &self.key, &e);
            tracing::warn!(%error, "an incomplete report upload was left behind");
        }
    }
}
