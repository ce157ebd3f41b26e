//! Access tokens for the SCIM service: cached, shared by concurrent requests, refreshed before
//! expiry by one refresh at a time, and dropped (with the credentials) after a 401.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::credentials::{Auth, CredentialSource, Credentials, CredentialsError, Secret};
use super::http::{caps, read_capped, size, ReadError};

/// Tokens are refreshed up to this long before they expire (a fifth of their life for short ones).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// The longest a token is kept without asking for a new one, whatever `expires_in` says
/// (a day: a refresh a day costs nothing, and no far-off instant can overflow).
const MAX_TOKEN_LIFE: Duration = Duration::from_secs(24 * 3600);

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
    expires_in: Option<serde_json::Value>,
}

/// A token's life from `expires_in`: seconds as a number or a string of digits (as some
/// identity providers send), fractions allowed, clamped to `0..=MAX_TOKEN_LIFE`. Anything else
/// counts as no expiry given (the token is then replaced when the service answers 401).
fn token_life(expires_in: &serde_json::Value) -> Option<Duration> {
    let seconds = match expires_in {
        serde_json::Value::Number(n) => n.as_f64()?,
        serde_json::Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if seconds.is_nan() {
        return None;
    }
    // Clamped before converting, so that the conversion cannot fail.
    let seconds = seconds.clamp(0.0, MAX_TOKEN_LIFE.as_secs_f64());
    Duration::try_from_secs_f64(seconds).ok()
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
        let body = read_capped(response, caps::TOKEN_ANSWER)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge => AuthError::Unavailable(format!(
                    "its answer is larger than {}, the most read of a token response",
                    size(caps::TOKEN_ANSWER)
                )),
                ReadError::Failed(e) => AuthError::Unavailable(e.without_url().to_string()),
            })?;
        let parsed: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
            AuthError::Unavailable("the answer is not a JSON token response".into())
        })?;
        if parsed.access_token.is_empty() {
            return Err(AuthError::Unavailable("empty access_token".into()));
        }
        let refresh_at = parsed.expires_in.as_ref().and_then(token_life).map(|life| {
            // life <= MAX_TOKEN_LIFE: no overflow; the margin is at most a fifth of it.
            started + (life - REFRESH_MARGIN.min(life / 5))
        });
        Ok((Secret::new(parsed.access_token), refresh_at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::credentials::StaticCredentials;
    use serde_json::{json, Value};

    #[test]
    fn expires_in_as_a_number_or_a_string_clamped() {
        let life = |v: Value| token_life(&v);
        assert_eq!(life(json!(3600)), Some(Duration::from_secs(3600)));
        assert_eq!(life(json!("3600")), Some(Duration::from_secs(3600)));
        assert_eq!(life(json!(" 3600 ")), Some(Duration::from_secs(3600)));
        assert_eq!(life(json!(59.5)), Some(Duration::from_millis(59_500)));
        assert_eq!(life(json!(u64::MAX)), Some(MAX_TOKEN_LIFE));
        assert_eq!(life(json!("1e300")), Some(MAX_TOKEN_LIFE));
        assert_eq!(life(json!("99999999999999999999999")), Some(MAX_TOKEN_LIFE));
        assert_eq!(life(json!(-5)), Some(Duration::ZERO));
        assert_eq!(life(json!("-0")), Some(Duration::ZERO));
        assert_eq!(life(json!(-1e-300)), Some(Duration::ZERO));
        assert_eq!(life(json!("-inf")), Some(Duration::ZERO));
        assert_eq!(life(json!("soon")), None);
        assert_eq!(life(json!("NaN")), None);
        assert_eq!(life(json!(null)), None);
        assert_eq!(life(json!({"s": 1})), None);
    }

    /// A token endpoint answering every POST with `body`; counts the requests.
    async fn token_endpoint(body: String) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = body.clone();
                async move { ([("content-type", "application/json")], body) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, hits)
    }

    fn authenticator(url: &str) -> Authenticator {
        let json = json!({"base_url": url, "auth_type": "oauth_client_credentials",
                          "token_url": format!("{url}/token"), "client_id": "c",
                          "client_secret": "s"});
        let credentials = Credentials::from_json(&json.to_string()).unwrap();
        Authenticator::new(
            Arc::new(StaticCredentials(credentials)),
            reqwest::Client::new(),
        )
    }

    #[tokio::test]
    async fn a_string_or_huge_expires_in_authenticates_and_the_token_is_reused() {
        for expires_in in [json!(u64::MAX), json!("3600"), json!("1e400")] {
            let answer = json!({"access_token": "tok-1", "token_type": "Bearer",
                                "expires_in": expires_in});
            let (url, hits) = token_endpoint(answer.to_string()).await;
            let auth = authenticator(&url);
            let session = auth.session().await.unwrap();
            assert_eq!(session.token.expose(), "tok-1", "{expires_in}");
            auth.session().await.unwrap();
            assert_eq!(
                hits.load(std::sync::atomic::Ordering::SeqCst),
                1,
                "{expires_in}"
            );
        }
    }

    #[tokio::test]
    async fn a_token_answer_past_its_cap_is_an_unavailable_endpoint_naming_the_cap() {
        let padding = "x".repeat(caps::TOKEN_ANSWER);
        let answer = json!({"access_token": "tok-1", "expires_in": 3600, "padding": padding});
        let (url, _) = token_endpoint(answer.to_string()).await;
        match authenticator(&url).session().await {
            Err(e @ AuthError::Unavailable(_)) => {
                assert!(e.is_transient());
                assert!(e.to_string().contains("larger than 64 KiB"), "{e}");
            }
            other => panic!("{:?}", other.map(|s| s.base_url)),
        }
    }
}
