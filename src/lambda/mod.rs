//! The Lambda function: one handler for SQS batches, S3 uploads and EventBridge reruns, each
//! turned into one bulk cycle ([`crate::pipeline::run_cycle`]) within the invocation's time.

pub mod config;
mod continuation;
mod error;
mod eventbridge;
mod invocation;
mod object_run;
mod reports;
mod runs;
mod s3;
mod sqs;
mod state;
mod trigger;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::{json, Value};
use tracing::Instrument;

use crate::pipeline::Summary;
use config::FunctionConfig;
use state::DeferredState;
use trigger::{trigger, Trigger};

pub use error::{HandlerError, StartupError};
pub use invocation::Invocation;
pub use state::State;

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
        let started = Instant::now();
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
        crate::metrics::emit(
            &state.config.metrics,
            &trigger_name(kind),
            &summary,
            started.elapsed(),
        );
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

/// The trigger as the summary line and the metrics name it.
fn trigger_name(trigger: Option<Trigger>) -> String {
    trigger
        .map(|t| format!("{t:?}"))
        .unwrap_or_else(|| "unknown".into())
}

fn log_summary(trigger: Option<Trigger>, s: &Summary, result: &Result<Value, HandlerError>) {
    let trigger = trigger_name(trigger);
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
