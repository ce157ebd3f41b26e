//! The engine's settings: batching, update method, retry policy, pacing and timeouts.

use crate::retry::RetryPolicy;
use crate::scim::http::Timeouts;

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
    /// Without a fixed rate: pace adaptively (unpaced until the first 429 that carries
    /// `Retry-After`, then back off on 429s the pace causes and probe upwards on success;
    /// 429s that slowing down does not reduce are noise, see `rate_limit`) instead of sending
    /// unpaced.
    pub adaptive_pacing: bool,
    /// HTTP timeouts (`timeouts.request` is the most a request is given).
    pub timeouts: Timeouts,
    /// A request timeout that follows the tenant's latency (`scim::http::latency`: four times
    /// the recent p99, between 2 s and `timeouts.request`) instead of `timeouts.request` always.
    pub adaptive_timeout: bool,
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
            adaptive_pacing: true,
            timeouts: Timeouts::default(),
            adaptive_timeout: true,
        }
    }
}
