//! Where `provision` gets its credentials: a file or `SCIM_CREDENTIALS` holding the secret's
//! JSON (README, "Credentials secret"), or Secrets Manager. Errors name the field, never a value.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::UsageError;
use crate::aws::secrets::SecretsManagerSource;
use crate::scim::credentials::{CredentialSource, Credentials, StaticCredentials};

/// How long a secret read from Secrets Manager is used before it is read again.
const SECRET_TTL: Duration = Duration::from_secs(300);

/// The credential options of a command, as given.
#[derive(Debug, Clone, Default)]
pub struct CredentialOptions {
    /// `--credentials FILE`.
    pub file: Option<PathBuf>,
    /// `--secret-id ID`.
    pub secret_id: Option<String>,
    /// `SCIM_CREDENTIALS` (JSON text).
    pub env_json: Option<String>,
}

impl CredentialOptions {
    /// The options of `args`, with `SCIM_CREDENTIALS` from the environment.
    pub fn of(args: &super::CredentialArgs) -> Self {
        Self {
            file: args.credentials.clone(),
            secret_id: args.secret_id.clone(),
            env_json: std::env::var("SCIM_CREDENTIALS")
                .ok()
                .filter(|v| !v.trim().is_empty()),
        }
    }
}

/// Resolves the options to a credential source: a file first, then a secret id, then the
/// environment variable.
pub async fn credential_source(
    options: &CredentialOptions,
) -> Result<Arc<dyn CredentialSource>, UsageError> {
    if let Some(path) = &options.file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            UsageError(format!(
                "cannot read the credentials file {}: {e}",
                path.display()
            ))
        })?;
        return parse(&text, &format!("credentials file {}", path.display()));
    }
    if let Some(id) = &options.secret_id {
        return secrets_manager(id).await;
    }
    if let Some(text) = &options.env_json {
        return parse(text, "SCIM_CREDENTIALS");
    }
    Err(UsageError(
        "no credentials: give --credentials FILE, --secret-id ID, or set SCIM_CREDENTIALS to the secret's JSON".into(),
    ))
}

fn parse(text: &str, origin: &str) -> Result<Arc<dyn CredentialSource>, UsageError> {
    // CredentialsError's messages name fields only, so they are safe to show.
    let credentials =
        Credentials::from_json(text).map_err(|e| UsageError(format!("{origin}: {e}")))?;
    Ok(Arc::new(StaticCredentials(credentials)))
}

async fn secrets_manager(id: &str) -> Result<Arc<dyn CredentialSource>, UsageError> {
    let sdk = crate::aws::sdk_config().await;
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    let source = SecretsManagerSource::new(client, id, SECRET_TTL);
    // Read it now: an unreadable or malformed secret is a configuration error, found before any work.
    source
        .load(false)
        .await
        .map_err(|e| UsageError(format!("--secret-id: {e}")))?;
    Ok(Arc::new(source))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_name_the_origin_and_field_not_the_value() {
        let options = CredentialOptions {
            env_json: Some(r#"{"base_url": "https://x.example", "auth_type": "bearer", "token": 42, "x": "hunter2"}"#.into()),
            ..CredentialOptions::default()
        };
        let err = credential_source(&options).await.err().unwrap().0;
        assert!(err.contains("SCIM_CREDENTIALS"), "{err}");
        assert!(err.contains("`token`"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[tokio::test]
    async fn a_file_wins_over_the_environment() {
        let options = CredentialOptions {
            file: Some("/nonexistent/creds.json".into()),
            env_json: Some("{}".into()),
            ..CredentialOptions::default()
        };
        let err = credential_source(&options).await.err().unwrap().0;
        assert!(err.contains("/nonexistent/creds.json"), "{err}");
        let none = credential_source(&CredentialOptions::default())
            .await
            .err()
            .unwrap()
            .0;
        assert!(none.contains("--credentials"), "{none}");
    }
}
