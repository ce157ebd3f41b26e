//! The Lambda function: one handler for SQS batches, S3 uploads and EventBridge reruns, each
//! turned into one bulk cycle ([`crate::pipeline::run_cycle`]) within the invocation's time.

mod continuation;
mod eventbridge;
mod reports;
mod s3;
mod sqs;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use lambda_runtime::{service_fn, Diagnostic, LambdaEvent};
use serde_json::{json, Value};
use tracing::Instrument;

use crate::aws::s3::{S3Error, S3Store};
use crate::aws::secrets::SecretsManagerSource;
use crate::config::{ConfigError, FunctionConfig};
use crate::engine::{Engine, EngineError};
use crate::ledger::dynamodb::DynamoLedger;
use crate::pipeline::Summary;
use crate::queue::sqs::SqsQueue;

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

/// What the function builds once per container and reuses across warm invocations.
pub struct State {
    config: FunctionConfig,
    engine: Engine,
    queue: SqsQueue,
    continuations: continuation::ContinuationQueue,
    s3: S3Store,
}

impl State {
    /// Builds the clients from `config` and an SDK configuration (tests point it at moto).
    pub fn new(config: FunctionConfig, sdk: &aws_config::SdkConfig) -> Result<Self, StartupError> {
        let secrets = SecretsManagerSource::new(
            aws_sdk_secretsmanager::Client::new(sdk),
            config.secret_id.clone(),
            config.secret_cache,
        );
        let mut engine = Engine::new(config.engine_config(), Arc::new(secrets))?;
        if let Some(table) = &config.ledger_table {
            let client = aws_sdk_dynamodb::Client::new(sdk);
            engine = engine.with_ledger(Arc::new(DynamoLedger::new(client, table.clone())));
        }
        let sqs = aws_sdk_sqs::Client::new(sdk);
        let continuations =
            continuation::ContinuationQueue::new(sqs.clone(), config.queue_url.clone());
        let queue = SqsQueue::new(sqs, config.queue_url.clone());
        let s3 = S3Store::new(crate::aws::s3_client(sdk, config.s3_force_path_style));
        Ok(Self {
            config,
            engine,
            queue,
            continuations,
            s3,
        })
    }

    /// Builds the state from the process environment.
    pub async fn from_env() -> Result<Self, StartupError> {
        let config = FunctionConfig::from_env()?;
        let sdk = crate::aws::sdk_config().await;
        Self::new(config, &sdk)
    }

    /// The function's settings.
    pub fn config(&self) -> &FunctionConfig {
        &self.config
    }
}

/// One invocation's identity and time limit.
#[derive(Debug, Clone)]
pub struct Invocation {
    /// The Lambda request id (names the reports written).
    pub request_id: String,
    /// When Lambda stops the invocation (the safety margin is taken off by [`handle`]).
    pub deadline: Instant,
}

impl Invocation {
    /// An invocation with `remaining` time left (tests, local runs).
    pub fn new(request_id: impl Into<String>, remaining: Duration) -> Self {
        Self {
            request_id: request_id.into(),
            deadline: Instant::now() + remaining,
        }
    }

    /// The invocation described by the Lambda context (its deadline is in ms since the epoch).
    pub fn from_context(context: &lambda_runtime::Context) -> Self {
        let remaining = remaining_time(context.deadline, SystemTime::now());
        Self::new(context.request_id.clone(), remaining)
    }
}

/// Time left before `deadline_ms`. Lambda sends Unix time in milliseconds; a value too small to
/// be one (before 2001) is read as milliseconds from now, as `cargo lambda watch` sends
/// `600000` for its 10-minute limit.
fn remaining_time(deadline_ms: u64, now: SystemTime) -> Duration {
    const UNIX_2001_MS: u64 = 1_000_000_000_000;
    if deadline_ms < UNIX_2001_MS {
        return Duration::from_millis(deadline_ms);
    }
    let deadline = UNIX_EPOCH + Duration::from_millis(deadline_ms);
    deadline.duration_since(now).unwrap_or(Duration::ZERO)
}

/// Runs the function under the Lambda runtime until the runtime stops it.
pub async fn run() -> ExitCode {
    crate::logging::init_lambda();
    // Configuration errors stop the container at once; they need a redeploy, not a retry.
    let config = match FunctionConfig::from_env() {
        Ok(config) => config,
        Err(error) => {
            tracing::error!(error = %StartupError::from(error), "the function cannot start");
            return ExitCode::FAILURE;
        }
    };
    // The AWS SDK and HTTP clients (TLS set-up included) are built while the runtime waits for
    // the first event rather than before its first poll, so the cold start is not billed for them.
    let state = Arc::new(DeferredState::spawn(config));
    let handler = service_fn(move |event: LambdaEvent<Value>| {
        let state = Arc::clone(&state);
        async move {
            let invocation = Invocation::from_context(&event.context);
            let state = match state.get().await {
                Ok(state) => state,
                Err(error) => {
                    tracing::error!(%error, "the function cannot start");
                    return Err(error);
                }
            };
            // Boxed: the handler's future is deep, and main's future would otherwise nest it whole.
            Box::pin(handle(&state, event.payload, &invocation)).await
        }
    });
    match Box::pin(lambda_runtime::run(handler)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "the Lambda runtime stopped");
            ExitCode::FAILURE
        }
    }
}

/// The function's [`State`], built by a background task started with the process.
struct DeferredState {
    ready: tokio::sync::OnceCell<Arc<State>>,
    setup: tokio::sync::Mutex<Option<tokio::task::JoinHandle<Result<State, StartupError>>>>,
}

impl DeferredState {
    fn spawn(config: FunctionConfig) -> Self {
        let setup = tokio::spawn(async move {
            let sdk = crate::aws::sdk_config().await;
            State::new(config, &sdk)
        });
        Self {
            ready: tokio::sync::OnceCell::new(),
            setup: tokio::sync::Mutex::new(Some(setup)),
        }
    }

    /// The state, waiting for its set-up the first time; a failed set-up fails every invocation
    /// with its reason (it depends on the configuration only, so retrying it would not help).
    async fn get(&self) -> Result<Arc<State>, HandlerError> {
        let state = self
            .ready
            .get_or_try_init(|| async {
                let setup = self.setup.lock().await.take();
                let Some(setup) = setup else {
                    return Err(HandlerError::Startup(
                        "the set-up failed in an earlier invocation (see its error)".into(),
                    ));
                };
                match setup.await {
                    Ok(Ok(state)) => Ok(Arc::new(state)),
                    Ok(Err(error)) => Err(HandlerError::Startup(error.to_string())),
                    Err(error) => Err(HandlerError::Startup(format!(
                        "the set-up task failed: {error}"
                    ))),
                }
            })
            .await?;
        Ok(Arc::clone(state))
    }
}

/// Which trigger sent an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Sqs,
    S3,
    S3Test,
    EventBridge,
}

/// Recognises the event's shape from its top-level keys (and the records' `eventSource`).
fn trigger(event: &Value) -> Result<Trigger, HandlerError> {
    let Some(object) = event.as_object() else {
        return Err(HandlerError::BadEvent(
            "the event is not a JSON object".into(),
        ));
    };
    if let Some(records) = object.get("Records").and_then(Value::as_array) {
        let source = records
            .first()
            .and_then(|r| r.get("eventSource"))
            .and_then(Value::as_str);
        match source {
            Some("aws:sqs") => return Ok(Trigger::Sqs),
            Some("aws:s3") => return Ok(Trigger::S3),
            _ => {}
        }
    }
    if object.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(Trigger::S3Test);
    }
    if object.contains_key("detail-type") && object.get("detail").is_some_and(Value::is_object) {
        return Ok(Trigger::EventBridge);
    }
    // Keys only: values may hold personal data.
    let mut keys: Vec<String> = object.keys().cloned().collect();
    keys.sort();
    Err(HandlerError::UnknownEvent(keys))
}

/// Handles one event: dispatches on its shape, logs one summary line, returns the response
/// (`{"batchItemFailures": [...]}` for SQS, a small summary otherwise).
pub async fn handle(
    state: &State,
    event: Value,
    invocation: &Invocation,
) -> Result<Value, HandlerError> {
    handle_counted(state, event, invocation).await.0
}

/// [`handle`], with the invocation's counts (the summary it logs).
pub async fn handle_counted(
    state: &State,
    event: Value,
    invocation: &Invocation,
) -> (Result<Value, HandlerError>, Summary) {
    let span = tracing::info_span!("invocation", request_id = %invocation.request_id);
    async move {
        let deadline = invocation
            .deadline
            .checked_sub(state.config.deadline_margin)
            .unwrap_or_else(Instant::now);
        warn_if_no_time(deadline, state.engine.admission_window());
        let mut summary = Summary::default();
        let trigger = trigger(&event);
        let kind = trigger.as_ref().ok().copied();
        let result = match trigger {
            Err(error) => Err(error),
            Ok(Trigger::S3Test) => {
                tracing::info!(
                    "ignoring the s3:TestEvent S3 sends when notifications are configured"
                );
                Ok(json!({"ignored": "s3:TestEvent"}))
            }
            Ok(Trigger::Sqs) => sqs::handle(state, invocation, deadline, event, &mut summary).await,
            Ok(Trigger::S3) => s3::handle(state, invocation, deadline, event, &mut summary).await,
            Ok(Trigger::EventBridge) => {
                eventbridge::handle(state, invocation, deadline, event, &mut summary).await
            }
        };
        log_summary(kind, &summary, &result);
        (result, summary)
    }
    .instrument(span)
    .await
}

/// The engine starts a request only with its admission window left before the deadline (and
/// cuts its timeout to the time left): with less, everything is deferred, invocation after invocation.
fn warn_if_no_time(deadline: Instant, window: Duration) {
    let budget = deadline.saturating_duration_since(Instant::now());
    if budget < window {
        tracing::warn!(
            budget_seconds = budget.as_secs(),
            "almost no time is left before the deadline: nothing can be sent and the work is \
             deferred; raise the function timeout or lower DEADLINE_MARGIN_SECONDS"
        );
    }
}

fn log_summary(trigger: Option<Trigger>, s: &Summary, result: &Result<Value, HandlerError>) {
    let trigger = trigger
        .map(|t| format!("{t:?}"))
        .unwrap_or_else(|| "unknown".into());
    let outcome = match result {
        Ok(_) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    tracing::info!(
        trigger,
        created = s.created,
        updated = s.updated,
        unchanged = s.unchanged,
        deactivated = s.deactivated,
        skipped = s.skipped,
        failed = s.failed,
        retried = s.retried,
        deferred = s.deferred,
        throttled = s.throttled,
        invalid = s.invalid,
        requests = s.requests,
        outcome,
        "invocation summary"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_recognised_by_shape() {
        let sqs = json!({"Records": [{"messageId": "1", "eventSource": "aws:sqs", "body": "{}"}]});
        assert_eq!(trigger(&sqs).unwrap(), Trigger::Sqs);
        let s3 = json!({"Records": [{"eventSource": "aws:s3", "s3": {}}]});
        assert_eq!(trigger(&s3).unwrap(), Trigger::S3);
        let test = json!({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "b"});
        assert_eq!(trigger(&test).unwrap(), Trigger::S3Test);
        let eb = json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {"bucket": "b", "key": "k"}});
        assert_eq!(trigger(&eb).unwrap(), Trigger::EventBridge);
    }

    #[test]
    fn the_sample_events_are_real_shaped() {
        let sample = |text: &str| -> Value { serde_json::from_str(text).unwrap() };
        let s3 = sample(include_str!("../../events/s3-put.json"));
        assert_eq!(trigger(&s3).unwrap(), Trigger::S3);
        let parsed: aws_lambda_events::event::s3::S3Event = serde_json::from_value(s3).unwrap();
        let key = parsed.records[0].s3.object.key.as_deref().unwrap();
        assert_eq!(s3::decode_key(key), "incoming/hr export.csv");
        for (text, users, invalid) in [
            (include_str!("../../events/sqs-producer-batch.json"), 3, 1),
            (include_str!("../../events/sqs-retry-batch.json"), 2, 0),
        ] {
            let event = sample(text);
            assert_eq!(trigger(&event).unwrap(), Trigger::Sqs);
            let parsed: aws_lambda_events::event::sqs::SqsEvent =
                serde_json::from_value(event).unwrap();
            let (mut ops, mut bad) = (0, 0);
            for record in &parsed.records {
                let work = sqs::parse_body(record.body.as_deref(), "id", 8).unwrap();
                ops += work.operations.len();
                bad += work.invalid.len();
            }
            assert_eq!((ops, bad), (users, invalid));
        }
        for text in [
            include_str!("../../events/eventbridge-rerun.json"),
            include_str!("../../events/eventbridge-rerun-prefix.json"),
        ] {
            let event = sample(text);
            assert_eq!(trigger(&event).unwrap(), Trigger::EventBridge);
            assert!(eventbridge::target(&event["detail"]).is_ok());
        }
    }

    #[test]
    fn deadlines_are_unix_milliseconds_or_a_duration() {
        let now = UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        let in_a_minute = 1_750_000_060_000;
        assert_eq!(remaining_time(in_a_minute, now), Duration::from_secs(60));
        assert_eq!(remaining_time(1_749_999_000_000, now), Duration::ZERO);
        assert_eq!(remaining_time(600_000, now), Duration::from_secs(600));
    }

    #[test]
    fn unknown_events_name_their_keys_only() {
        let err = trigger(&json!({"hello": "secret@example.com", "Records": []})).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("[Records, hello]"), "{text}");
        assert!(!text.contains("secret"), "{text}");
        assert!(matches!(
            trigger(&json!([1])),
            Err(HandlerError::BadEvent(_))
        ));
    }
}
