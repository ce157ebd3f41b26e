//! The one HTTP client of the process: timeouts, gzip, User-Agent, no redirects (credentials
//! never follow a redirect to another host), bearer auth with one refresh and resend on 401.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use reqwest::header::{HeaderMap, ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use reqwest::Method;

use super::auth::{AuthError, Authenticator};
use super::credentials::CredentialSource;
use crate::retry::parse_retry_after;

pub mod latency;

use latency::{Kind, LatencyModel};

/// The SCIM media type (RFC 7644 §3.1).
pub const SCIM_JSON: &str = "application/scim+json";

/// How much of an answer is read, in bytes after decompression (so a small gzip body that would
/// inflate past its cap is stopped at the cap too). An answer past its cap is not read further:
/// the request counts as unanswered (retryable; a write may have been applied, and an upsert
/// is safe to send again), never as a refusal.
pub mod caps {
    /// Any answer but a BulkResponse's: a userName lookup's ListResponse (one user expected),
    /// a single resource, the ServiceProviderConfig, an error document.
    pub const ANSWER: usize = 4 << 20;
    /// A BulkResponse: at least this much...
    pub const BULK_ANSWER_MIN: usize = 16 << 20;
    /// ...and up to this many times the BulkRequest (results may echo each resource).
    pub const BULK_ANSWER_PER_REQUEST_BYTE: usize = 8;
    /// A token endpoint's answer (a token is a few KiB at most).
    pub const TOKEN_ANSWER: usize = 64 << 10;

    /// The cap on the answer to a BulkRequest of `request_len` bytes.
    pub fn bulk_answer(request_len: usize) -> usize {
        request_len
            .saturating_mul(BULK_ANSWER_PER_REQUEST_BYTE)
            .max(BULK_ANSWER_MIN)
    }
}

/// Timeouts of the HTTP client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a connection.
    pub connect: Duration,
    /// A whole request, body included: the most it is given (the adaptive timeout, see
    /// [`latency`], is usually far shorter).
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            request: Duration::from_secs(30),
        }
    }
}

/// A response from the SCIM service.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Retry-After`, parsed.
    pub retry_after: Option<Duration>,
    /// `Location` header, as sent (absolute or relative).
    pub location: Option<String>,
    /// The body.
    pub body: Bytes,
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No token could be had.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Timed out (connect or whole request).
    #[error("timed out")]
    Timeout,
    /// Connection refused, reset, or the body was cut off.
    #[error("network error: {0}")]
    Network(String),
    /// The answer is larger than its cap; it was not read further.
    #[error("the service's answer (HTTP {status}) to {request} is larger than {}, the most read of such an answer; not read further", size(*cap))]
    TooLarge {
        /// HTTP status of the answer.
        status: u16,
        /// The request answered: method and path (no query: a filter may hold an email).
        request: String,
        /// The cap, in bytes.
        cap: usize,
    },
}

impl SendError {
    /// The HTTP status, when the service did answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            SendError::TooLarge { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A byte count for a message: whole KiB or MiB when exact.
pub fn size(bytes: usize) -> String {
    match bytes {
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// Why a body could not be read whole.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// Past the cap.
    TooLarge,
    /// Timeout, connection cut, bad compression.
    Failed(reqwest::Error),
}

/// Reads a body of at most `cap` bytes (decompressed), chunk by chunk: no more than the cap
/// (plus one chunk) is ever held, whatever the server sends or claims.
pub(crate) async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
) -> Result<Bytes, ReadError> {
    let announced = response.content_length();
    if announced.is_some_and(|n| n > cap as u64) {
        return Err(ReadError::TooLarge);
    }
    let mut body = Vec::with_capacity(announced.map_or(0, |n| n as usize));
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Failed)? {
        if chunk.len() > cap - body.len() {
            return Err(ReadError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

/// Sends authenticated requests to the SCIM service.
pub struct ScimHttp {
    client: reqwest::Client,
    auth: Authenticator,
    latency: LatencyModel,
}

impl ScimHttp {
    /// Builds the process's HTTP client and authenticator, with the adaptive request timeout.
    pub fn new(
        source: Arc<dyn CredentialSource>,
        timeouts: Timeouts,
    ) -> Result<Self, reqwest::Error> {
        Self::with_timeout_mode(source, timeouts, true)
    }

    /// [`ScimHttp::new`]; `adaptive` false gives every request the whole `timeouts.request`.
    pub fn with_timeout_mode(
        source: Arc<dyn CredentialSource>,
        timeouts: Timeouts,
        adaptive: bool,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .user_agent(crate::USER_AGENT)
            .connect_timeout(timeouts.connect)
            .timeout(timeouts.request)
            .redirect(reqwest::redirect::Policy::none())
            .gzip(true)
            .build()?;
        let auth = Authenticator::new(source, client.clone());
        Ok(Self {
            client,
            auth,
            latency: LatencyModel::new(timeouts.request, adaptive),
        })
    }

    /// The SCIM base URL from the current credentials (loading them if needed, by `deadline`).
    pub async fn base_url(&self, deadline: Option<Instant>) -> Result<String, AuthError> {
        Ok(self.auth.session_until(deadline).await?.base_url)
    }

    /// Sends `method path` (relative to the base URL, starting with `/`) with an optional JSON body,
    /// giving up at `deadline` if that comes before the request's timeout (which follows the
    /// tenant's latency for this kind of request, [`latency`]);
    /// on 401 refreshes the token (re-reading the credentials) once and sends again.
    /// Reads at most [`caps::ANSWER`] bytes of the answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Bytes>,
        deadline: Option<Instant>,
    ) -> Result<Reply, SendError> {
        self.send_capped(method, path, query, body, deadline, caps::ANSWER)
            .await
    }

    /// [`ScimHttp::send`], reading at most `cap` bytes of the answer.
    pub async fn send_capped(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Bytes>,
        deadline: Option<Instant>,
        cap: usize,
    ) -> Result<Reply, SendError> {
        let mut refreshed = false;
        loop {
            let session = self.auth.session_until(deadline).await?;
            let mut request = self
                .client
                .request(method.clone(), format!("{}{}", session.base_url, path))
                .header(AUTHORIZATION, format!("Bearer {}", session.token.expose()))
                .header(ACCEPT, SCIM_JSON);
            if !query.is_empty() {
                request = request.query(query);
            }
            if let Some(body) = &body {
                request = request.header(CONTENT_TYPE, SCIM_JSON).body(body.clone());
            }
            let kind = Kind::of(&method, path, query);
            let size = body.as_ref().map_or(0, Bytes::len);
            let timeout = self.latency.timeout(kind, size);
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            // Cut by the deadline rather than by its own timeout: says nothing about the tenant.
            let cut_by_deadline = left.is_some_and(|left| left < timeout);
            let timeout = left.map_or(timeout, |left| {
                left.max(Duration::from_millis(1)).min(timeout)
            });
            request = request.timeout(timeout);
            let started = Instant::now();
            let reply = read_reply(request.send().await, cap).await;
            match &reply {
                Ok(_) => self.latency.answered(kind, size, started.elapsed()),
                Err(ReplyError::Send(SendError::Timeout)) if !cut_by_deadline => {
                    self.latency.timed_out(kind)
                }
                Err(_) => {}
            }
            let reply = reply.map_err(|e| match e {
                ReplyError::TooLarge(status) => SendError::TooLarge {
                    status,
                    request: format!("{method} {path}"),
                    cap,
                },
                ReplyError::Send(e) => e,
            })?;
            if reply.status == 401 && !refreshed {
                self.auth.invalidate(&session.token).await;
                refreshed = true;
                continue;
            }
            return Ok(reply);
        }
    }
}

enum ReplyError {
    /// The answer, with this status, is past the cap.
    TooLarge(u16),
    Send(SendError),
}

async fn read_reply(
    sent: reqwest::Result<reqwest::Response>,
    cap: usize,
) -> Result<Reply, ReplyError> {
    let response = sent.map_err(|e| ReplyError::Send(classify(e)))?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = read_capped(response, cap).await.map_err(|e| match e {
        ReadError::TooLarge => ReplyError::TooLarge(status),
        ReadError::Failed(e) => ReplyError::Send(classify(e)),
    })?;
    Ok(Reply {
        status,
        retry_after: retry_after(&headers, SystemTime::now()),
        location: header(&headers, LOCATION.as_str()),
        body,
    })
}

/// `Retry-After`; without it, the reset of a rate-limit header (`RateLimit-Reset`,
/// `X-RateLimit-Reset`, `X-Rate-Limit-Reset`: seconds from now, or a Unix time) — the rate
/// signature some services send instead.
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(value) = header(headers, RETRY_AFTER.as_str()) {
        return parse_retry_after(&value, now);
    }
    let reset = ["ratelimit-reset", "x-ratelimit-reset", "x-rate-limit-reset"]
        .iter()
        .find_map(|name| header(headers, name))?;
    let secs: u64 = reset.trim().parse().ok()?;
    // Past a billion it is a Unix time (2001 onwards), else a number of seconds.
    if secs >= 1_000_000_000 {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        Some(at.duration_since(now).unwrap_or(Duration::ZERO))
    } else {
        Some(Duration::from_secs(secs))
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name)?.to_str().ok().map(str::to_string)
}

// Errors carry no URL: a filter query holds a userName, which may be an email.
fn classify(error: reqwest::Error) -> SendError {
    if error.is_timeout() {
        SendError::Timeout
    } else {
        let error = error.without_url();
        let mut text = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        SendError::Network(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::credentials::{Credentials, StaticCredentials};
    use std::io::Write;

    /// Gzip of `len` zero bytes, compressed a MiB at a time.
    pub(crate) fn gzip_zeros(len: usize) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let block = vec![0u8; 1 << 20];
        let mut left = len;
        while left > 0 {
            let n = left.min(block.len());
            encoder.write_all(&block[..n]).unwrap();
            left -= n;
        }
        encoder.finish().unwrap()
    }

    /// A server answering `GET /plain/N` with N bytes (Content-Length), `/stream/N` with N
    /// bytes in 64 KiB chunks (no length), `/gzip/N` with N zero bytes gzipped.
    async fn serve() -> String {
        use axum::extract::Path;
        use axum::response::IntoResponse;
        let app = axum::Router::new()
            .route(
                "/plain/{n}",
                axum::routing::get(|Path(n): Path<usize>| async move { vec![b' '; n] }),
            )
            .route(
                "/stream/{n}",
                axum::routing::get(|Path(n): Path<usize>| async move {
                    let chunks = (0..n.div_ceil(65_536)).map(move |i| {
                        let len = (n - i * 65_536).min(65_536);
                        Ok::<_, std::io::Error>(Bytes::from(vec![b' '; len]))
                    });
                    axum::body::Body::from_stream(futures_util::stream::iter(chunks))
                }),
            )
            .route(
                "/gzip/{n}",
                axum::routing::get(|Path(n): Path<usize>| async move {
                    ([("content-encoding", "gzip")], gzip_zeros(n)).into_response()
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    fn http(base_url: &str) -> ScimHttp {
        let json = serde_json::json!({"base_url": base_url, "auth_type": "bearer", "token": "t"});
        let credentials = Credentials::from_json(&json.to_string()).unwrap();
        ScimHttp::new(
            Arc::new(StaticCredentials(credentials)),
            Timeouts::default(),
        )
        .unwrap()
    }

    async fn get(http: &ScimHttp, path: &str, cap: usize) -> Result<Reply, SendError> {
        http.send_capped(Method::GET, path, &[], None, None, cap)
            .await
    }

    #[tokio::test]
    async fn an_answer_past_its_cap_is_not_read_whether_announced_streamed_or_gzipped() {
        let http = http(&serve().await);
        let cap = 1 << 20;
        for path in ["/gzip/8388608", "/plain/1048577", "/stream/3000000"] {
            match get(&http, path, cap).await {
                Err(e @ SendError::TooLarge { .. }) => {
                    assert_eq!(e.status(), Some(200));
                    let message = e.to_string();
                    assert!(message.contains(&format!("GET {path}")), "{message}");
                    assert!(message.contains("larger than 1 MiB"), "{message}");
                }
                other => panic!("{path}: {:?}", other.map(|r| r.body.len())),
            }
        }
        // Up to the cap, decompressed or not, the answer is read whole.
        for path in ["/plain/1048576", "/stream/1048576", "/gzip/1048576"] {
            let reply = get(&http, path, cap).await.unwrap();
            assert_eq!(reply.body.len(), cap, "{path}");
        }
        // `send` applies the cap of an ordinary answer.
        let over = format!("/stream/{}", caps::ANSWER + 1);
        assert!(matches!(
            http.send(Method::GET, &over, &[], None, None).await,
            Err(SendError::TooLarge { cap, .. }) if cap == caps::ANSWER
        ));
    }

    #[test]
    fn retry_after_or_a_rate_limit_reset() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(*name, value.parse().unwrap());
            }
            map
        };
        let secs = |n| Some(Duration::from_secs(n));
        assert_eq!(retry_after(&headers(&[]), now), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "7")]), now), secs(7));
        let both = headers(&[("retry-after", "7"), ("ratelimit-reset", "3")]);
        assert_eq!(retry_after(&both, now), secs(7), "Retry-After first");
        assert_eq!(
            retry_after(&headers(&[("RateLimit-Reset", "3")]), now),
            secs(3)
        );
        let epoch = headers(&[("x-ratelimit-reset", "2000000012")]);
        assert_eq!(retry_after(&epoch, now), secs(12));
        let past = headers(&[("x-rate-limit-reset", "1999999999")]);
        assert_eq!(retry_after(&past, now), secs(0));
        let junk = headers(&[("x-ratelimit-reset", "soon")]);
        assert_eq!(retry_after(&junk, now), None);
    }

    #[test]
    fn the_bulk_cap_grows_with_the_request_from_a_floor() {
        assert_eq!(caps::bulk_answer(0), caps::BULK_ANSWER_MIN);
        assert_eq!(caps::bulk_answer(1 << 20), caps::BULK_ANSWER_MIN);
        assert_eq!(caps::bulk_answer(10 << 20), 80 << 20);
        assert_eq!(caps::bulk_answer(usize::MAX), usize::MAX);
        assert_eq!(size(16 << 20), "16 MiB");
        assert_eq!(size(64 << 10), "64 KiB");
        assert_eq!(size(1000), "1000 bytes");
    }
}
