//! The bulk cycle: given operations, provision them against a SCIM 2.0 service within a budget
//! and say, for every operation, what became of it. Plain Rust, no AWS types.

mod admission;
mod classify;
mod dispatch;
mod lookup;
mod phases;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde_json::Value;

use crate::budget::RateLimiter;
use crate::operation::{Operation, OperationResult, Outcome};
use crate::retry::RetryPolicy;
use crate::scim::auth::AuthError;
use crate::scim::credentials::CredentialSource;
use crate::scim::discovery::ProviderLimits;
use crate::scim::http::{ScimHttp, Timeouts};

pub use admission::MIN_WINDOW;
pub use classify::is_retryable;
pub use lookup::LookupError;

/// How long work deferred for lack of time waits before it comes back (in a new invocation).
const DEFER_DELAY: Duration = Duration::from_secs(1);

/// How an existing user is updated after a 409 on create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpdateMethod {
    /// Replace the resource (PUT).
    #[default]
    Put,
    /// Replace the provisioned attributes (PATCH).
    Patch,
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Operations per BulkRequest at most (CXone allows 50); caps the server's own limit.
    pub max_operations: usize,
    /// PUT or PATCH to update an existing user.
    pub update_method: UpdateMethod,
    /// Create users that arrive inactive and do not exist yet (default: skip them).
    pub create_inactive: bool,
    /// Backoff and attempt limit.
    pub retry: RetryPolicy,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Requests per minute to the service (None: unlimited, or adaptive with `adaptive_pacing`).
    pub requests_per_minute: Option<u32>,
    /// Without a fixed rate: pace adaptively (unpaced until the first 429, then back off on
    /// 429 and probe upwards on success) instead of sending unpaced.
    pub adaptive_pacing: bool,
    /// HTTP timeouts.
    pub timeouts: Timeouts,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_operations: 50,
            update_method: UpdateMethod::Put,
            create_inactive: false,
            retry: RetryPolicy::default(),
            concurrency: 2,
            requests_per_minute: None,
            adaptive_pacing: false,
            timeouts: Timeouts::default(),
        }
    }
}

/// Counters of one cycle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CycleStats {
    /// HTTP requests sent to the SCIM service (token requests excluded).
    pub requests: u64,
    /// Of which BulkRequests.
    pub bulk_requests: u64,
    /// Of which userName lookups.
    pub lookups: u64,
    /// Answers 429.
    pub throttled: u64,
    /// Answers 5xx.
    pub server_errors: u64,
    /// BulkRequests split after 413 or a whole-request 400.
    pub splits: u64,
}

/// What a cycle did: one result per operation given, in the same order.
#[derive(Debug, Clone, Default)]
pub struct CycleReport {
    /// Every operation with its outcome.
    pub results: Vec<OperationResult>,
    /// Counters.
    pub stats: CycleStats,
}

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
}

impl Engine {
    /// An engine reading its credentials from `credentials`.
    pub fn new(
        config: EngineConfig,
        credentials: Arc<dyn CredentialSource>,
    ) -> Result<Self, EngineError> {
        let http = ScimHttp::new(credentials, config.timeouts)
            .map_err(|e| EngineError::Client(e.without_url().to_string()))?;
        Ok(Self {
            limiter: RateLimiter::configured(config.requests_per_minute, config.adaptive_pacing),
            config,
            http,
            limits: tokio::sync::Mutex::new(None),
            latency: admission::Latency::default(),
            rng: Mutex::new(Box::new(StdRng::from_os_rng())),
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
        let cycle = Cycle {
            engine: self,
            deadline,
            stats: Stats::default(),
            deferred_requests: AtomicU32::new(0),
        };
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
                Err(e) => cycle.all_retry(&operations, None, &e.to_string(), None),
                Ok(_) => match self.discover_until(Some(deadline)).await {
                    Err(reason) => cycle.all_retry(&operations, None, &reason, None),
                    Ok(_) => cycle.run(&operations).await,
                },
            }
        };
        let results = operations
            .into_iter()
            .zip(outcomes)
            .map(|(operation, outcome)| OperationResult { operation, outcome })
            .collect();
        Ok(CycleReport {
            results,
            stats: cycle.stats.snapshot(),
        })
    }
}

#[derive(Default)]
struct Stats {
    requests: AtomicU64,
    bulk_requests: AtomicU64,
    lookups: AtomicU64,
    throttled: AtomicU64,
    server_errors: AtomicU64,
    splits: AtomicU64,
}

impl Stats {
    fn snapshot(&self) -> CycleStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CycleStats {
            requests: get(&self.requests),
            bulk_requests: get(&self.bulk_requests),
            lookups: get(&self.lookups),
            throttled: get(&self.throttled),
            server_errors: get(&self.server_errors),
            splits: get(&self.splits),
        }
    }
}

/// State of one running cycle.
struct Cycle<'a> {
    engine: &'a Engine,
    deadline: Instant,
    stats: Stats,
    deferred_requests: AtomicU32,
}

impl Cycle<'_> {
    /// The limits in force: discovery's, as updated if /Bulk turned out to be missing.
    async fn limits(&self) -> ProviderLimits {
        let current = *self.engine.limits.lock().await;
        current.unwrap_or_else(|| ProviderLimits::without_bulk(self.engine.config.max_operations))
    }

    /// A retryable outcome for `op`, or a failure once its attempts are used up.
    fn retry(
        &self,
        op: &Operation,
        status: Option<u16>,
        reason: &str,
        retry_after: Option<Duration>,
    ) -> Outcome {
        let policy = &self.engine.config.retry;
        let attempts = op.attempt + 1;
        if !policy.may_retry(attempts) {
            return Outcome::Failed {
                status,
                scim_type: None,
                detail: format!("gave up after {attempts} attempts; last error: {reason}"),
            };
        }
        // A poisoned lock only means a panic elsewhere; the RNG state is still usable.
        let mut rng = self.engine.rng.lock().unwrap_or_else(|e| e.into_inner());
        Outcome::Retry {
            status,
            reason: reason.to_string(),
            delay: policy.delay(op.attempt, retry_after, &mut **rng),
        }
    }

    /// Every operation deferred unsent: too little time is left in this invocation.
    fn all_deferred(&self, ops: &[Operation]) -> Vec<Outcome> {
        ops.iter()
            .map(|_| Outcome::Deferred {
                reason: "not sent: too little time is left before the invocation's deadline".into(),
                delay: DEFER_DELAY,
            })
            .collect()
    }

    fn all_retry(
        &self,
        ops: &[Operation],
        status: Option<u16>,
        reason: &str,
        retry_after: Option<Duration>,
    ) -> Vec<Outcome> {
        ops.iter()
            .map(|op| self.retry(op, status, reason, retry_after))
            .collect()
    }
}
