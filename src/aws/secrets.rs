//! The SCIM credentials from Secrets Manager: read on first use, cached for a while, re-read on
//! demand (after a 401 the secret may have been rotated).

use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::Client;
use futures_util::future::BoxFuture;

use crate::scim::credentials::{CredentialSource, Credentials, CredentialsError};

/// A [`CredentialSource`] reading one secret's `SecretString` (JSON, README "Credentials secret").
pub struct SecretsManagerSource {
    client: Client,
    secret_id: String,
    ttl: Duration,
    // Held across the fetch: concurrent loads wait for one GetSecretValue instead of racing.
    cache: tokio::sync::Mutex<Option<(Instant, Credentials)>>,
}

impl SecretsManagerSource {
    /// A source for `secret_id` (name or ARN), caching it for `ttl`.
    pub fn new(client: Client, secret_id: impl Into<String>, ttl: Duration) -> Self {
        Self {
            client,
            secret_id: secret_id.into(),
            ttl,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    async fn fetch(&self) -> Result<Credentials, CredentialsError> {
        let id = &self.secret_id;
        let output = self
            .client
            .get_secret_value()
            .secret_id(id)
            .send()
            .await
            .map_err(|e| {
                let problem = match super::error_code(&e) {
                    Some("ResourceNotFoundException") => {
                        format!("the secret {id:?} does not exist (ResourceNotFoundException); check SCIM_SECRET_ID")
                    }
                    _ => format!("GetSecretValue of {id:?} failed: {}", super::error_text(&e)),
                };
                CredentialsError::Unavailable(problem)
            })?;
        let text = output.secret_string().ok_or_else(|| {
            CredentialsError::Unavailable(format!(
                "the secret {id:?} has no SecretString (binary secrets are not supported; store the JSON as text)"
            ))
        })?;
        Credentials::from_json(text)
    }
}

impl CredentialSource for SecretsManagerSource {
    fn load(&self, fresh: bool) -> BoxFuture<'_, Result<Credentials, CredentialsError>> {
        Box::pin(async move {
            let mut cache = self.cache.lock().await;
            if let Some((at, credentials)) = cache.as_ref() {
                if !fresh && at.elapsed() < self.ttl {
                    return Ok(credentials.clone());
                }
            }
            match self.fetch().await {
                Ok(credentials) => {
                    *cache = Some((Instant::now(), credentials.clone()));
                    Ok(credentials)
                }
                Err(error) => {
                    // A broken secret must not keep being served from the cache.
                    *cache = None;
                    tracing::error!(secret_id = %self.secret_id, %error, "cannot use the SCIM credentials secret");
                    Err(error)
                }
            }
        })
    }
}
