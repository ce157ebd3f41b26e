//! Access tokens for the SCIM service: cached, shared by concurrent requests, refreshed before
//! expiry by one refresh at a time, and dropped (with the credentials) after a 401.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::credentials::{Auth, CredentialSource, Credentials, CredentialsError, Secret};

/// Tokens are refreshed up to this long before they expire (a fifth of their life for short ones).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// What a request needs: where to send it and the bearer token to send.
#[derive(Debug, Clone)]
pub struct Session {
    /// SCIM base URL without a trailing slash.
    pub base_url: String,
    /// Bearer token.
    pub token: Secret,
}

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The credentials are unusable: fix the secret.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The token endpoint refused the client's credentials (4xx).
    #[error("the token endpoint refused the credentials (HTTP {status}); check the secret's client id and secret")]
    Rejected {
        /// HTTP status from the token endpoint.
        status: u16,
    },
    /// The token endpoint failed or answered something that is not a token (5xx, HTML, network).
    #[error("the token endpoint is unavailable: {0}")]
    Unavailable(String),
    /// No token (or credentials) could be had before the invocation's deadline: nothing was sent.
    #[error("no token could be had before the invocation's deadline")]
    Deadline,
}

impl AuthError {
    /// Whether trying again later could help.
    pub fn is_transient(&self) -> bool {
        matches!(self, AuthError::Unavailable(_) | AuthError::Deadline)
            || matches!(
                self,
                AuthError::Credentials(CredentialsError::Unavailable(_))
            )
    }
}

#[derive(Default)]
struct State {
    credentials: Option<Credentials>,
    token: Option<(Secret, Option<Instant>)>,
    stale: bool,
}

/// Hands out sessions; one per process, shared by all requests.
pub struct Authenticator {
    source: Arc<dyn CredentialSource>,
    http: reqwest::Client,
    // An async mutex: the holder may be fetching a token, and others must wait for that one refresh.
    state: tokio::sync::Mutex<State>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

impl Authenticator {
    /// An authenticator reading credentials from `source`, fetching tokens with `http`.
    pub fn new(source: Arc<dyn CredentialSource>, http: reqwest::Client) -> Self {
        Self {
            source,
            http,
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    /// A valid session, as [`Authenticator::session`], given up at `deadline`: the secret read
    /// and the token request (whose own timeout may be longer) never outlast the invocation.
    pub async fn session_until(&self, deadline: Option<Instant>) -> Result<Session, AuthError> {
        let Some(deadline) = deadline else {
            return self.session().await;
        };
        // Dropping the future at the deadline cancels the read or request and frees the lock.
        tokio::time::timeout_at(deadline.into(), self.session())
            .await
            .unwrap_or(Err(AuthError::Deadline))
    }

    /// A valid session, fetching credentials and a token if needed.
    pub async fn session(&self) -> Result<Session, AuthError> {
        let mut state = self.state.lock().await;
        let mut fresh = false;
        let credentials = match &state.credentials {
            Some(c) if !state.stale => c.clone(),
            _ => {
                fresh = state.stale;
                self.reload(&mut state, fresh).await?
            }
        };
        if let Some((token, refresh_at)) = &state.token {
            if refresh_at.is_none_or(|at| Instant::now() < at) {
                return Ok(Session {
                    base_url: credentials.base_url,
                    token: token.clone(),
                });
            }
        }
        let (credentials, token) = match self.fetch_token(&credentials.auth).await {
            // The secret may have been rotated since it was cached: re-read it once.
            Err(AuthError::Rejected { .. }) if !fresh => {
                let credentials = self.reload(&mut state, true).await?;
                let token = self.fetch_token(&credentials.auth).await?;
                (credentials, token)
            }
            other => (credentials, other?),
        };
        let session = Session {
            base_url: credentials.base_url,
            token: token.0.clone(),
        };
        state.token = Some(token);
        Ok(session)
    }

    async fn reload(&self, state: &mut State, fresh: bool) -> Result<Credentials, AuthError> {
        let credentials = self.source.load(fresh).await?;
        state.credentials = Some(credentials.clone());
        state.token = None;
        state.stale = false;
        Ok(credentials)
    }

    /// Drops a token the service answered 401 to (and re-reads the credentials on next use),
    /// unless another request already replaced it.
    pub async fn invalidate(&self, used: &Secret) {
        let mut state = self.state.lock().await;
        if state.token.as_ref().is_some_and(|(t, _)| t == used) {
            state.token = None;
            state.stale = true;
        }
    }

    async fn fetch_token(&self, auth: &Auth) -> Result<(Secret, Option<Instant>), AuthError> {
        let request = match auth {
            Auth::Bearer { token } => return Ok((token.clone(), None)),
            Auth::OAuthClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
            } => {
                let mut form = vec![
                    ("grant_type", "client_credentials"),
                    ("client_id", client_id.as_str()),
                    ("client_secret", client_secret.expose()),
                ];
                if let Some(scope) = scope {
                    form.push(("scope", scope.as_str()));
                }
                self.http.post(token_url).form(&form)
            }
            Auth::CxoneAccessKey {
                token_url,
                access_key_id,
                access_key_secret,
            } => {
                let body = serde_json::json!({
                    "accessKeyId": access_key_id,
                    "accessKeySecret": access_key_secret.expose(),
                });
                self.http
                    .post(token_url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body.to_string())
            }
        };
        let started = Instant::now();
        let response = request
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| AuthError::Unavailable(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        if (400..500).contains(&status) && status != 408 && status != 429 {
            return Err(AuthError::Rejected { status });
        }
        if status != 200 {
            return Err(AuthError::Unavailable(format!("HTTP {status}")));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| AuthError::Unavailable(e.without_url().to_string()))?;
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
            AuthError::Unavailable("the answer is not a JSON token response".into())
        })?;
        if parsed.access_token.is_empty() {
            return Err(AuthError::Unavailable("empty access_token".into()));
        }
        let refresh_at = parsed.expires_in.map(|secs| {
            let life = Duration::from_secs(secs);
            started + life - REFRESH_MARGIN.min(life / 5)
        });
        Ok((Secret::new(parsed.access_token), refresh_at))
    }
}
