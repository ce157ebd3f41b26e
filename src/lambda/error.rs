//! Why the function cannot start, and why an invocation failed (as Lambda reports it).

use lambda_runtime::Diagnostic;

use super::config::ConfigError;
use crate::aws::s3::S3Error;
use crate::engine::EngineError;

/// Why the function cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The environment is incomplete or wrong.
    #[error("configuration: {0}")]
    Config(#[from] ConfigError),
    /// The engine could not be built.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// Why an invocation failed; Lambda retries the event (S3, EventBridge) or the batch (SQS).
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The event has no shape this function handles.
    #[error("unrecognised event with top-level keys [{}]; expected an SQS batch, an S3 notification or an EventBridge event with detail {{\"bucket\", \"key\" or \"prefix\"}}", .0.join(", "))]
    UnknownEvent(Vec<String>),
    /// The event has a known shape but cannot be used.
    #[error("bad event: {0}")]
    BadEvent(String),
    /// The cycle could not run at all (e.g. unusable credentials); nothing was sent.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// An S3 call failed.
    #[error(transparent)]
    S3(#[from] S3Error),
    /// The function's clients could not be set up; nothing was done.
    #[error("the function could not start: {0}")]
    Startup(String),
    /// Some work was neither done, reported nor re-enqueued: the event must be delivered again.
    #[error("{origin}: {problem}; the event will be retried")]
    Incomplete {
        /// The object or message concerned.
        origin: String,
        /// What could not be done.
        problem: String,
    },
}

impl From<HandlerError> for Diagnostic {
    fn from(error: HandlerError) -> Self {
        let error_type = match &error {
            HandlerError::UnknownEvent(_) => "UnknownEvent",
            HandlerError::BadEvent(_) => "BadEvent",
            HandlerError::Engine(_) => "EngineError",
            HandlerError::S3(_) => "S3Error",
            HandlerError::Incomplete { .. } => "Incomplete",
            HandlerError::Startup(_) => "StartupError",
        };
        Diagnostic {
            error_type: error_type.into(),
            error_message: error.to_string(),
        }
    }
}
