//! Credentials for the SCIM service, parsed from the secret's JSON (README, "Credentials secret"), and where they come from.

use std::fmt;

use futures_util::future::BoxFuture;
use serde_json::Value;

/// A secret string: never shown by `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How the tool authenticates to the SCIM service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// A static bearer token.
    Bearer {
        /// The token.
        token: Secret,
    },
    /// OAuth 2.0 client credentials grant (form POST).
    OAuthClientCredentials {
        /// Token endpoint.
        token_url: String,
        /// Client id.
        client_id: String,
        /// Client secret.
        client_secret: Secret,
        /// Requested scope, if any.
        scope: Option<String>,
    },
    /// NICE CXone access key (JSON POST).
    CxoneAccessKey {
        /// Token endpoint.
        token_url: String,
        /// Access key id.
        access_key_id: String,
        /// Access key secret.
        access_key_secret: Secret,
    },
}

/// The SCIM base URL and how to authenticate to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// SCIM base URL without a trailing slash, e.g. `https://tenant.example/scim/v2`.
    pub base_url: String,
    /// Authentication scheme and its secrets.
    pub auth: Auth,
}

/// Why a credentials secret cannot be used. Names the field, never its value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CredentialsError {
    /// The secret is not a JSON object.
    #[error("the credentials secret is not a JSON object")]
    NotJson,
    /// A required field is missing or empty.
    #[error("the credentials secret has no `{0}` (required for this auth_type)")]
    Missing(&'static str),
    /// A field is present but not a string.
    #[error("the credentials secret's `{0}` must be a string")]
    NotString(&'static str),
    /// `auth_type` names no known scheme.
    #[error("the credentials secret's `auth_type` is not one of bearer, oauth_client_credentials, cxone_access_key")]
    UnknownAuthType,
    /// A URL field is not an absolute http(s) URL, or is plain http to a host that is not loopback.
    #[error("the credentials secret's `{0}` must be an https URL (plain http only for 127.0.0.1/localhost)")]
    InsecureUrl(&'static str),
    /// The secret could not be fetched.
    #[error("the credentials could not be read: {0}")]
    Unavailable(String),
}

impl Credentials {
    /// Parses the secret's JSON text.
    pub fn from_json(text: &str) -> Result<Self, CredentialsError> {
        let value: Value = serde_json::from_str(text).map_err(|_| CredentialsError::NotJson)?;
        let obj = value.as_object().ok_or(CredentialsError::NotJson)?;
        let field = |name: &'static str| -> Result<Option<String>, CredentialsError> {
            match obj.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
                Some(_) => Err(CredentialsError::NotString(name)),
            }
        };
        let required = |name: &'static str| field(name)?.ok_or(CredentialsError::Missing(name));
        let base_url = checked_url(&required("base_url")?, "base_url")?;
        let auth = match required("auth_type")?.as_str() {
            "bearer" => Auth::Bearer {
                token: Secret::new(required("token")?),
            },
            "oauth_client_credentials" => Auth::OAuthClientCredentials {
                token_url: checked_url(&required("token_url")?, "token_url")?,
                client_id: required("client_id")?,
                client_secret: Secret::new(required("client_secret")?),
                scope: field("scope")?,
            },
            "cxone_access_key" => Auth::CxoneAccessKey {
                token_url: checked_url(&required("token_url")?, "token_url")?,
                access_key_id: required("access_key_id")?,
                access_key_secret: Secret::new(required("access_key_secret")?),
            },
            _ => return Err(CredentialsError::UnknownAuthType),
        };
        Ok(Self { base_url, auth })
    }
}

/// Accepts https URLs, and http only to loopback (tests and the local run).
fn checked_url(url: &str, name: &'static str) -> Result<String, CredentialsError> {
    let parsed = reqwest::Url::parse(url).map_err(|_| CredentialsError::InsecureUrl(name))?;
    let loopback = match parsed.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => return Err(CredentialsError::InsecureUrl(name)),
    };
    match parsed.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => return Err(CredentialsError::InsecureUrl(name)),
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Where credentials come from; `fresh` asks to bypass any cache (after a 401, the secret may have rotated).
pub trait CredentialSource: Send + Sync {
    /// Loads the credentials.
    fn load(&self, fresh: bool) -> BoxFuture<'_, Result<Credentials, CredentialsError>>;
}

/// Credentials known up front (CLI, demo, tests).
#[derive(Debug, Clone)]
pub struct StaticCredentials(pub Credentials);

impl CredentialSource for StaticCredentials {
    fn load(&self, _fresh: bool) -> BoxFuture<'_, Result<Credentials, CredentialsError>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_auth_type() {
        let b = Credentials::from_json(
            r#"{"base_url": "https://t.example/scim/v2/", "auth_type": "bearer", "token": "tok"}"#,
        )
        .unwrap();
        assert_eq!(b.base_url, "https://t.example/scim/v2");
        assert!(matches!(b.auth, Auth::Bearer { .. }));
        let o = Credentials::from_json(
            r#"{"base_url": "https://t.example", "auth_type": "oauth_client_credentials", "token_url": "https://id.example/token", "client_id": "c", "client_secret": "s"}"#,
        )
        .unwrap();
        assert!(matches!(
            o.auth,
            Auth::OAuthClientCredentials { scope: None, .. }
        ));
        let c = Credentials::from_json(
            r#"{"base_url": "https://t.example", "auth_type": "cxone_access_key", "token_url": "https://na1.example/token", "access_key_id": "k", "access_key_secret": "s"}"#,
        )
        .unwrap();
        assert!(matches!(c.auth, Auth::CxoneAccessKey { .. }));
    }

    #[test]
    fn errors_name_the_field_never_the_value() {
        let cases = [
            ("not json", CredentialsError::NotJson),
            ("[1]", CredentialsError::NotJson),
            (
                r#"{"auth_type": "bearer", "token": "sekrit"}"#,
                CredentialsError::Missing("base_url"),
            ),
            (
                r#"{"base_url": "https://x", "token": "sekrit"}"#,
                CredentialsError::Missing("auth_type"),
            ),
            (
                r#"{"base_url": "https://x", "auth_type": "bearer"}"#,
                CredentialsError::Missing("token"),
            ),
            (
                r#"{"base_url": "https://x", "auth_type": "bearer", "token": 5}"#,
                CredentialsError::NotString("token"),
            ),
            (
                r#"{"base_url": "https://x", "auth_type": "basic", "token": "sekrit"}"#,
                CredentialsError::UnknownAuthType,
            ),
            (
                r#"{"base_url": "https://x", "auth_type": "oauth_client_credentials", "token_url": "https://t", "client_id": "c"}"#,
                CredentialsError::Missing("client_secret"),
            ),
            (
                r#"{"base_url": "http://tenant.example", "auth_type": "bearer", "token": "sekrit"}"#,
                CredentialsError::InsecureUrl("base_url"),
            ),
            (
                r#"{"base_url": "https://x", "auth_type": "cxone_access_key", "token_url": "ftp://t", "access_key_id": "k", "access_key_secret": "sekrit"}"#,
                CredentialsError::InsecureUrl("token_url"),
            ),
        ];
        for (text, expected) in cases {
            let err = Credentials::from_json(text).unwrap_err();
            assert_eq!(err, expected, "{text}");
            assert!(!err.to_string().contains("sekrit"));
        }
    }

    #[test]
    fn http_is_allowed_to_loopback_only() {
        for url in [
            "http://127.0.0.1:8080/scim",
            "http://localhost:1",
            "http://[::1]:9/x",
        ] {
            let text = format!(r#"{{"base_url": "{url}", "auth_type": "bearer", "token": "t"}}"#);
            assert!(Credentials::from_json(&text).is_ok(), "{url}");
        }
    }

    #[test]
    fn debug_redacts_secrets() {
        let c = Credentials::from_json(
            r#"{"base_url": "https://t.example", "auth_type": "oauth_client_credentials", "token_url": "https://id.example/token", "client_id": "c", "client_secret": "hunter2"}"#,
        )
        .unwrap();
        let text = format!("{c:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("***"));
    }
}
