//! The token endpoints of the stand-in: OAuth client credentials and CXone access keys.

use serde_json::{json, Value};

use super::{Answer, ProxyState, Shared, OAUTH_TOKEN_PATH};

/// How the token endpoints answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenMode {
    Normal,
    /// 200 with an HTML page instead of JSON.
    Html,
    /// 500 with a plain-text body.
    ServerError,
}

/// Credentials the token endpoints expect, and what they answer.
#[derive(Clone, Debug)]
pub struct TokenConfig {
    pub client_id: String,
    pub client_secret: String,
    /// `None`: any scope (or none) is accepted.
    pub scope: Option<String>,
    pub access_key_id: String,
    pub access_key_secret: String,
    pub expires_in: u64,
    pub mode: TokenMode,
}

impl Default for TokenConfig {
    fn default() -> Self {
        TokenConfig {
            client_id: "test-client".into(),
            client_secret: "test-client-secret".into(),
            scope: None,
            access_key_id: "test-access-key-id".into(),
            access_key_secret: "test-access-key-secret".into(),
            expires_in: 3600,
            mode: TokenMode::Normal,
        }
    }
}

pub(super) fn issue(state: &mut ProxyState, url: &str, kind: &str) -> String {
    let port = url.rsplit(':').next().unwrap_or("0");
    let token = format!("issued-{kind}-{port}-{}", state.issued.len() + 1);
    state.issued.push(token.clone());
    state
        .issued_at
        .insert(token.clone(), std::time::Instant::now());
    token
}

/// An answer being built: from the upstream, a token endpoint or a fault.
pub(super) fn token_endpoint(shared: &Shared, path: &str, body: &[u8]) -> Answer {
    let mut state = shared.state();
    let config = state.tokens.clone();
    match config.mode {
        TokenMode::Html => {
            return Answer::new(
                200,
                "text/html",
                "<!DOCTYPE html><html><body>Sign in</body></html>",
            )
        }
        TokenMode::ServerError => return Answer::new(500, "text/plain", "internal server error"),
        TokenMode::Normal => {}
    }
    let kind = if path == OAUTH_TOKEN_PATH {
        let form: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
        let field = |name: &str| {
            form.iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        if field("grant_type") != Some("client_credentials") {
            return Answer::json(400, json!({"error": "unsupported_grant_type"}));
        }
        if field("client_id") != Some(config.client_id.as_str())
            || field("client_secret") != Some(config.client_secret.as_str())
        {
            return Answer::json(401, json!({"error": "invalid_client"}));
        }
        if config
            .scope
            .as_deref()
            .is_some_and(|scope| field("scope") != Some(scope))
        {
            return Answer::json(400, json!({"error": "invalid_scope"}));
        }
        "oauth"
    } else {
        let doc: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        if doc["accessKeyId"] != config.access_key_id.as_str()
            || doc["accessKeySecret"] != config.access_key_secret.as_str()
        {
            return Answer::json(
                401,
                json!({"error": "invalid_grant", "error_description": "bad access key"}),
            );
        }
        "cxone"
    };
    let token = issue(&mut state, &shared.url, kind);
    Answer::json(
        200,
        json!({"access_token": token, "token_type": "Bearer", "expires_in": config.expires_in}),
    )
}
