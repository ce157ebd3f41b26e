//! What the function builds once per container ([`State`]: its settings, the engine with its
//! ledger, the queue and S3 clients), and the background set-up that builds it while the
//! runtime waits for the first event.

use std::sync::Arc;

use super::config::FunctionConfig;
use super::continuation;
use super::error::{HandlerError, StartupError};
use crate::aws::events::EventBus;
use crate::aws::s3::S3Store;
use crate::aws::secrets::SecretsManagerSource;
use crate::engine::Engine;
use crate::ledger::dynamodb::DynamoLedger;
use crate::queue::sqs::SqsQueue;
use crate::runs::dynamodb::DynamoRuns;

/// What the function builds once per container and reuses across warm invocations.
pub struct State {
    pub(super) config: FunctionConfig,
    pub(super) engine: Engine,
    pub(super) queue: SqsQueue,
    pub(super) continuations: continuation::ContinuationQueue,
    pub(super) s3: S3Store,
    /// Runs, full sync and the guard: with `LEDGER_TABLE` only.
    pub(super) runs: Option<super::runs::Runs>,
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
        let mut runs = None;
        if let Some(table) = &config.ledger_table {
            let client = aws_sdk_dynamodb::Client::new(sdk);
            engine = engine.with_ledger(Arc::new(DynamoLedger::new(client.clone(), table.clone())));
            let bus = EventBus::new(
                aws_sdk_eventbridge::Client::new(sdk),
                config.runs.event_bus.clone(),
            );
            let store = Arc::new(DynamoRuns::new(client, table.clone()));
            runs = Some(super::runs::Runs::new(store, bus, config.runs.clone()));
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
            runs,
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

    /// The engine's current spacing between requests (zero: unpaced). The engine, and with it
    /// the adaptive pace and the latency behind the request timeouts, lives as long as this
    /// state: a warm container starts its next invocation at the pace it had found.
    pub fn pacing_interval(&self) -> std::time::Duration {
        self.engine.pacing_interval()
    }
}

/// The function's [`State`], built by a background task started with the process.
pub(super) struct DeferredState {
    ready: tokio::sync::OnceCell<Arc<State>>,
    setup: tokio::sync::Mutex<Option<tokio::task::JoinHandle<Result<State, StartupError>>>>,
}

impl DeferredState {
    pub(super) fn spawn(config: FunctionConfig) -> Self {
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
    pub(super) async fn get(&self) -> Result<Arc<State>, HandlerError> {
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
