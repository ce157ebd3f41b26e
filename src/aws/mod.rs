//! AWS adapters: Secrets Manager (credentials), S3 (CSV input, reports), EventBridge (run events),
//! and the SDK set-up
//! they share with the ports' AWS implementations (`queue::sqs`, `ledger::dynamodb`).
//! Thin layers over the SDK; no SCIM logic.

pub(crate) mod dynamodb;
pub mod events;
pub mod s3;
pub mod secrets;

use aws_config::BehaviorVersion;

/// The shared SDK configuration from the environment (region, credentials, and
/// `AWS_ENDPOINT_URL` for a local endpoint such as moto, which aws-config honours itself).
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// An S3 client; `force_path_style` for endpoints without virtual-host buckets (moto).
pub fn s3_client(sdk: &aws_config::SdkConfig, force_path_style: bool) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(force_path_style)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// The SDK error's code and message, e.g. `NoSuchKey: The specified key does not exist.`,
/// or the transport error when there was no answer. Never includes request data.
pub(crate) fn error_text<E>(error: &aws_sdk_s3::error::SdkError<E>) -> String
where
    E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
    match error {
        SdkError::ServiceError(e) => {
            let inner = e.err();
            match (inner.code(), inner.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_string(),
                _ => format!("HTTP {}", e.raw().status().as_u16()),
            }
        }
        other => DisplayErrorContext(other).to_string(),
    }
}

/// The SDK error's code (`NoSuchKey`, `ResourceNotFoundException`, ...), when the service answered.
pub(crate) fn error_code<E>(error: &aws_sdk_s3::error::SdkError<E>) -> Option<&str>
where
    E: aws_sdk_s3::error::ProvideErrorMetadata,
{
    match error {
        aws_sdk_s3::error::SdkError::ServiceError(e) => e.err().code(),
        _ => None,
    }
}
