//! The bulk cycle: given operations, provision them against a SCIM 2.0 service within a budget
//! and say, for every operation, what became of it. Plain Rust, no AWS types.

mod admission;
mod classify;
mod config;
mod cycle;
pub mod decide;
mod dispatch;
mod lookup;
mod phases;
mod reads;
pub mod tenant;

use std::collections::HashSet;
use std::sync::atomic::AtomicU8;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde_json::Value;

use crate::ledger::Ledger;
use crate::operation::{Operation, OperationResult};
use crate::rate_limit::RateLimiter;
use crate::scim::auth::AuthError;
use crate::scim::credentials::CredentialSource;
use crate::scim::discovery::ProviderLimits;
use crate::scim::http::ScimHttp;

use cycle::Cycle;

pub use admission::MIN_WINDOW;
pub use classify::is_retryable;
pub use config::{EngineConfig, UpdateMethod};
pub use cycle::{CycleReport, CycleStats};
pub use lookup::LookupError;
pub use tenant::KnownUsersError;

/// How long work deferred for lack of time waits before it comes back (in a new invocation).
const DEFER_DELAY: Duration = Duration::from_secs(1);

/// Why a cycle could not run at all (nothing was sent).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The credentials are unusable (bad secret, token endpoint refusing them).
    #[error("cannot authenticate to the SCIM service: {0}")]
    Auth(#[from] AuthError),
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// The provisioning engine; one per process, shared by all cycles.
pub struct Engine {
    config: EngineConfig,
    http: ScimHttp,
    limits: tokio::sync::Mutex<Option<ProviderLimits>>,
    limiter: RateLimiter,
    latency: admission::Latency,
    rng: Mutex<Box<dyn RngCore + Send>>,
    /// The memory of the tenant, when there is one.
    ledger: Option<Arc<dyn Ledger>>,
    /// Tenants known to be listed in the ledger (checked once per process).
    listed: tokio::sync::Mutex<HashSet<String>>,
    /// The deactivation PATCH form to try first ([`crate::scim::patch::PatchForm`]).
    patch_form: AtomicU8,
}

impl Engine {
    /// An engine reading its credentials from `credentials`.
    pub fn new(
        config: EngineConfig,
        credentials: Arc<dyn CredentialSource>,
    ) -> Result<Self, EngineError> {
        let http =
            ScimHttp::with_timeout_mode(credentials, config.timeouts, config.adaptive_timeout)
                .map_err(|e| EngineError::Client(e.without_url().to_string()))?;
        Ok(Self {
            limiter: RateLimiter::configured(config.requests_per_minute, config.adaptive_pacing),
            config,
            http,
            limits: tokio::sync::Mutex::new(None),
            latency: admission::Latency::default(),
            rng: Mutex::new(Box::new(StdRng::from_os_rng())),
            ledger: None,
            listed: tokio::sync::Mutex::new(HashSet::new()),
            patch_form: AtomicU8::new(0),
        })
    }

    /// Replaces the random source of backoff jitter (deterministic tests).
    pub fn with_rng(self, rng: impl RngCore + Send + 'static) -> Self {
        Self {
            rng: Mutex::new(Box::new(rng)),
            ..self
        }
    }

    /// The engine's settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The current spacing between requests (zero: unpaced); adaptive pacing changes it.
    pub fn pacing_interval(&self) -> Duration {
        self.limiter.interval()
    }

    /// The time left before a deadline that a request needs to be started: the tenant's recent
    /// latency, at least `min(request timeout, MIN_WINDOW)`. The one admission rule, used by
    /// every request of a cycle and by the Lambda function's warning.
    pub fn admission_window(&self) -> Duration {
        self.latency.window(self.config.timeouts.request)
    }

    /// Whether a request started at `now` fits before `deadline`.
    fn admits(&self, now: Instant, deadline: Instant) -> bool {
        now + self.admission_window() <= deadline
    }

    /// The service's limits, discovered once per process (`GET /ServiceProviderConfig`).
    pub async fn discover(&self) -> Result<ProviderLimits, String> {
        self.discover_until(None).await
    }

    /// [`Engine::discover`], giving up at `deadline`.
    async fn discover_until(&self, deadline: Option<Instant>) -> Result<ProviderLimits, String> {
        let mut cached = self.limits.lock().await;
        if let Some(limits) = *cached {
            return Ok(limits);
        }
        let reply = self
            .http
            .send(
                reqwest::Method::GET,
                "/ServiceProviderConfig",
                &[],
                None,
                deadline,
            )
            .await
            .map_err(|e| format!("ServiceProviderConfig: {e}"))?;
        let limits = match reply.status {
            200 => match serde_json::from_slice::<Value>(&reply.body) {
                Ok(doc) => ProviderLimits::from_config(&doc, self.config.max_operations),
                Err(_) => return Err("ServiceProviderConfig: the answer is not JSON".into()),
            },
            404 | 501 => ProviderLimits::without_bulk(self.config.max_operations),
            s => return Err(format!("ServiceProviderConfig: HTTP {s}")),
        };
        tracing::info!(
            bulk = limits.bulk,
            max_operations = limits.max_operations,
            max_payload_size = limits.max_payload_size,
            "discovered the SCIM service's limits"
        );
        *cached = Some(limits);
        Ok(limits)
    }

    async fn bulk_unavailable(&self) {
        let mut cached = self.limits.lock().await;
        if let Some(limits) = cached.as_mut() {
            if limits.bulk {
                tracing::warn!(
                    "the SCIM service answered 404/501 to /Bulk: sending one request per user"
                );
            }
            limits.bulk = false;
        }
    }

    /// Runs one bulk cycle over `operations`, sending nothing that would finish after `deadline`.
    /// Every operation comes back with an outcome; an error means nothing was sent.
    pub async fn run_cycle(
        &self,
        operations: Vec<Operation>,
        deadline: Instant,
    ) -> Result<CycleReport, EngineError> {
        let mut cycle = Cycle::new(self, deadline);
        if operations.is_empty() {
            return Ok(CycleReport::default());
        }
        // Too little time for any request: defer everything before even reading the secret.
        let outcomes = if !self.admits(Instant::now(), deadline) {
            cycle.all_deferred(&operations)
        } else {
            match self.http.base_url(Some(deadline)).await {
                Err(AuthError::Deadline) => cycle.all_deferred(&operations),
                Err(e) if !e.is_transient() => return Err(e.into()),
                Err(e) => cycle.all_retry(&operations, &e.to_string()),
                Ok(base_url) => match self.discover_until(Some(deadline)).await {
                    Err(reason) => cycle.all_retry(&operations, &reason),
                    Ok(_) => match self.prepare_tenant(&base_url, deadline).await {
                        Err(reason) => cycle.all_retry(&operations, &reason),
                        Ok(tenant) => {
                            cycle = cycle.for_tenant(tenant);
                            cycle.run(&operations).await
                        }
                    },
                },
            }
        };
        let outcomes = cycle.within_age(&operations, outcomes);
        let results = operations
            .into_iter()
            .zip(outcomes)
            .map(|(operation, outcome)| OperationResult { operation, outcome })
            .collect();
        Ok(CycleReport {
            results,
            stats: cycle.stats(),
        })
    }
}
