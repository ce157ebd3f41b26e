//! The credentials secret from Secrets Manager (moto): cached, re-read on demand, and errors
//! that name the problem, never the value.

mod support;

use std::time::Duration;

use scim_bulk_provisioner::aws::secrets::SecretsManagerSource;
use scim_bulk_provisioner::scim::credentials::{Auth, CredentialSource, CredentialsError};
use support::aws::{create_secret, sdk_config};

fn bearer(token: &str) -> String {
    support::aws::bearer_secret("https://tenant.example/scim/v2", token)
}

fn token(auth: &Auth) -> &str {
    match auth {
        Auth::Bearer { token } => token.expose(),
        other => panic!("not bearer: {other:?}"),
    }
}

#[tokio::test]
async fn the_secret_is_cached_and_re_read_when_asked_or_expired() {
    let moto = support::start_moto().await;
    let sdk = sdk_config(&moto).await;
    create_secret(&sdk, "scim", &bearer("first")).await;
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    let cached = SecretsManagerSource::new(client.clone(), "scim", Duration::from_secs(300));
    let uncached = SecretsManagerSource::new(client.clone(), "scim", Duration::ZERO);
    assert_eq!(token(&cached.load(false).await.unwrap().auth), "first");

    client
        .put_secret_value()
        .secret_id("scim")
        .secret_string(bearer("rotated"))
        .send()
        .await
        .expect("rotate");
    assert_eq!(
        token(&cached.load(false).await.unwrap().auth),
        "first",
        "served from the cache"
    );
    assert_eq!(
        token(&cached.load(true).await.unwrap().auth),
        "rotated",
        "fresh bypasses the cache"
    );
    assert_eq!(
        token(&uncached.load(false).await.unwrap().auth),
        "rotated",
        "expired entries are re-read"
    );
}

#[tokio::test]
async fn errors_name_the_problem_never_the_value() {
    let moto = support::start_moto().await;
    let sdk = sdk_config(&moto).await;
    let client = aws_sdk_secretsmanager::Client::new(&sdk);
    let source = |id: &str| SecretsManagerSource::new(client.clone(), id, Duration::from_secs(300));

    let missing = source("nope").load(false).await.unwrap_err();
    assert!(
        matches!(missing, CredentialsError::Unavailable(_)),
        "{missing}"
    );
    assert!(
        missing.to_string().contains("ResourceNotFoundException"),
        "{missing}"
    );

    create_secret(&sdk, "garbage", "hunter2 is not json").await;
    let not_json = source("garbage").load(false).await.unwrap_err();
    assert_eq!(not_json, CredentialsError::NotJson);

    create_secret(
        &sdk,
        "no-token",
        r#"{"base_url": "https://t.example", "auth_type": "bearer", "x": "hunter2"}"#,
    )
    .await;
    let no_token = source("no-token").load(false).await.unwrap_err();
    assert_eq!(no_token, CredentialsError::Missing("token"));

    client
        .create_secret()
        .name("binary")
        .secret_binary(aws_sdk_secretsmanager::primitives::Blob::new(
            b"hunter2".to_vec(),
        ))
        .send()
        .await
        .expect("binary secret");
    let binary = source("binary").load(false).await.unwrap_err();
    assert!(binary.to_string().contains("no SecretString"), "{binary}");

    for error in [missing, not_json, no_token, binary] {
        assert!(!error.to_string().contains("hunter2"), "{error}");
    }
}
