//! S3: CSV objects streamed to the (synchronous) CSV reader, the newest object under a prefix,
//! and JSON Lines reports.

use std::pin::Pin;

use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use tokio::io::AsyncRead;
use tokio_util::io::SyncIoBridge;

/// A failed S3 call, naming the object and the service's error code, never its content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{action} s3://{bucket}/{key} failed: {message}")]
pub struct S3Error {
    /// `GetObject`, `ListObjectsV2` or `PutObject`.
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

/// An object's body as a blocking reader. Read it only on a blocking thread
/// (`tokio::task::spawn_blocking`): each read waits on the runtime for the next chunk.
pub type ObjectReader = SyncIoBridge<Pin<Box<dyn AsyncRead + Send>>>;

/// An object being read.
pub struct OpenedObject {
    /// The object's ETag, to read the same version again (`If-Match`).
    pub etag: Option<String>,
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
        let body: Pin<Box<dyn AsyncRead + Send>> = Box::pin(output.body.into_async_read());
        Ok(OpenedObject {
            etag,
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

    /// Writes a JSON Lines report.
    pub async fn put_report(&self, bucket: &str, key: &str, body: String) -> Result<(), S3Error> {
        self.client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/x-ndjson")
            .body(ByteStream::from(body.into_bytes()))
            .send()
            .await
            .map_err(|e| S3Error::new("PutObject", bucket, key, &e))?;
        Ok(())
    }
}
