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

/// The SCIM media type (RFC 7644 §3.1).
pub const SCIM_JSON: &str = "application/scim+json";

/// Timeouts of the HTTP client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Establishing a connection.
    pub connect: Duration,
    /// A whole request, body included.
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
}

/// Sends authenticated requests to the SCIM service.
pub struct ScimHttp {
    client: reqwest::Client,
    auth: Authenticator,
    timeout: Duration,
}

impl ScimHttp {
    /// Builds the process's HTTP client and authenticator.
    pub fn new(
        source: Arc<dyn CredentialSource>,
        timeouts: Timeouts,
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
            timeout: timeouts.request,
        })
    }

    /// The SCIM base URL from the current credentials (loading them if needed, by `deadline`).
    pub async fn base_url(&self, deadline: Option<Instant>) -> Result<String, AuthError> {
        Ok(self.auth.session_until(deadline).await?.base_url)
    }

    /// Sends `method path` (relative to the base URL, starting with `/`) with an optional JSON body,
    /// giving up at `deadline` if that comes before the client's own timeout;
    /// on 401 refreshes the token (re-reading the credentials) once and sends again.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Bytes>,
        deadline: Option<Instant>,
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
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                request = request.timeout(left.max(Duration::from_millis(1)).min(self.timeout));
            }
            let reply = read_reply(request.send().await).await?;
            if reply.status == 401 && !refreshed {
                self.auth.invalidate(&session.token).await;
                refreshed = true;
                continue;
            }
            return Ok(reply);
        }
    }
}

async fn read_reply(sent: reqwest::Result<reqwest::Response>) -> Result<Reply, SendError> {
    let response = sent.map_err(classify)?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(classify)?;
    Ok(Reply {
        status,
        retry_after: header(&headers, RETRY_AFTER.as_str())
            .and_then(|v| parse_retry_after(&v, SystemTime::now())),
        location: header(&headers, LOCATION.as_str()),
        body,
    })
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
