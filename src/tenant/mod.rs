//! An embedded, in-process SCIM 2.0 tenant that behaves, as far as a SCIM client can observe,
//! like a NICE CXone tenant: bearer auth, ServiceProviderConfig, Users with filters and PatchOp,
//! Bulk, and on request a rate limit (429) and random faults ([`FaultProfile`]: 429s, 503s and
//! operations dropped from BulkResponses). The `demo` command runs against it with no AWS
//! account, and tests and benchmarks use it as a peer.

mod routes;
mod store;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use store::ScimError;

/// How the tenant behaves.
#[derive(Clone)]
pub struct TenantConfig {
    /// The token clients must send as `Authorization: Bearer <token>`.
    pub bearer_token: String,
    /// Operations per BulkRequest (advertised as `bulk.maxOperations`).
    pub max_operations: usize,
    /// Bytes per request body (advertised as `bulk.maxPayloadSize`); larger bodies get 413.
    pub max_payload_size: usize,
    /// Whether `/Bulk` is served; when false it answers 501 and the config says unsupported.
    pub bulk_supported: bool,
    /// Requests per second over all requests; beyond it 429 with `Retry-After`. None, zero or
    /// a negative rate means unlimited.
    pub requests_per_second: Option<f64>,
    /// Random faults injected in front of requests and inside BulkRequests.
    pub faults: FaultProfile,
    /// Ways in which the tenant departs from RFC 7643/7644, as some real servers do.
    pub quirks: Quirks,
    /// Seed of the random ids and of the injected faults, for reproducible runs.
    pub seed: u64,
}

impl Default for TenantConfig {
    fn default() -> Self {
        Self {
            bearer_token: "demo-token".into(),
            max_operations: 50,
            max_payload_size: 1_048_576,
            bulk_supported: true,
            requests_per_second: None,
            faults: FaultProfile::default(),
            quirks: Quirks::default(),
            seed: 0,
        }
    }
}

impl std::fmt::Debug for TenantConfig {
    // The token stays out of logs and panic messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TenantConfig")
            .field("bearer_token", &"***")
            .field("max_operations", &self.max_operations)
            .field("max_payload_size", &self.max_payload_size)
            .field("bulk_supported", &self.bulk_supported)
            .field("requests_per_second", &self.requests_per_second)
            .field("faults", &self.faults)
            .field("quirks", &self.quirks)
            .field("seed", &self.seed)
            .finish()
    }
}

/// Departures from the RFCs that some widely used servers make.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Quirks {
    /// userName uniqueness and `filter=userName eq` compare case-sensitively (RFC 7643 says
    /// caseExact false).
    pub case_exact_user_names: bool,
    /// One PatchOp form this tenant refuses with 400.
    pub refused_patch: Option<PatchForm>,
}

pub use crate::scim::patch::PatchForm;

/// Faults injected at random (seeded by [`TenantConfig::seed`]) on top of the rate limit; each
/// fraction is between 0.0 and 1.0 (outside it, or NaN, counts as 0 or 1).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultProfile {
    /// Fraction of requests answered 429 with `Retry-After: 1`, not applied.
    pub throttled: f64,
    /// Fraction of requests answered 503 with `Retry-After: 1`, not applied.
    pub unavailable: f64,
    /// Fraction of a BulkRequest's operations dropped: neither applied nor in the BulkResponse.
    pub dropped: f64,
}

impl FaultProfile {
    /// Whether any fault is injected.
    pub fn is_active(&self) -> bool {
        [self.throttled, self.unavailable, self.dropped]
            .iter()
            .any(|f| *f > 0.0)
    }
}

/// What the tenant has seen and done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantStats {
    /// HTTP requests received, whatever became of them.
    pub requests: u64,
    /// Requests answered 429 (rate limit); none of them was applied.
    pub throttled: u64,
    /// Requests answered with an injected 503; none of them was applied.
    pub server_errors: u64,
    /// Requests answered 401 (missing or wrong token).
    pub unauthorized: u64,
    /// BulkRequests processed (past throttling, failure injection and auth).
    pub bulk_requests: u64,
    /// Operations processed inside BulkRequests.
    pub bulk_operations: u64,
    /// `GET /Users` requests (filtered lookups and listings).
    pub searches: u64,
    /// Users created by clients (POST, direct or in Bulk); seeded users are not counted.
    pub created: u64,
    /// Users replaced or patched by clients (PUT or PATCH answered 200).
    pub updated: u64,
    /// Users deleted by clients.
    pub deleted: u64,
    /// Writes refused with 409 (userName already taken).
    pub conflicts: u64,
    /// Bulk operations dropped by the [`FaultProfile`] (not applied, not answered).
    pub dropped_operations: u64,
}

/// The live counters behind [`TenantStats`].
#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    throttled: AtomicU64,
    server_errors: AtomicU64,
    unauthorized: AtomicU64,
    bulk_requests: AtomicU64,
    bulk_operations: AtomicU64,
    searches: AtomicU64,
    created: AtomicU64,
    updated: AtomicU64,
    deleted: AtomicU64,
    conflicts: AtomicU64,
    dropped_operations: AtomicU64,
}

impl Counters {
    /// Counts the outcome of one write, direct or inside a BulkRequest.
    fn record(&self, method: &str, status: u16) {
        let counter = match (method, status) {
            ("POST", 201) => &self.created,
            ("PUT" | "PATCH", 200) => &self.updated,
            ("DELETE", 204) => &self.deleted,
            (_, 409) => &self.conflicts,
            _ => return,
        };
        counter.fetch_add(1, Relaxed);
    }

    fn snapshot(&self) -> TenantStats {
        let get = |c: &AtomicU64| c.load(Relaxed);
        TenantStats {
            requests: get(&self.requests),
            throttled: get(&self.throttled),
            server_errors: get(&self.server_errors),
            unauthorized: get(&self.unauthorized),
            bulk_requests: get(&self.bulk_requests),
            bulk_operations: get(&self.bulk_operations),
            searches: get(&self.searches),
            created: get(&self.created),
            updated: get(&self.updated),
            deleted: get(&self.deleted),
            conflicts: get(&self.conflicts),
            dropped_operations: get(&self.dropped_operations),
        }
    }
}

/// A running tenant; it stops on [`Tenant::shutdown`] or when dropped.
pub struct Tenant {
    base_url: String,
    shared: Arc<routes::Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl Tenant {
    /// Binds 127.0.0.1 on a free port and serves the tenant in a tokio task.
    pub async fn start(config: TenantConfig) -> std::io::Result<Tenant> {
        let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
        let base_url = format!("http://{}/scim/v2", listener.local_addr()?);
        let shared = Arc::new(routes::Shared::new(config, &base_url));
        let app = routes::router(Arc::clone(&shared));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let server = axum::serve(listener, app).with_graceful_shutdown(async {
                // A dropped sender stops the server too.
                let _ = stopped.await;
            });
            if let Err(error) = server.await {
                tracing::warn!(%error, "the embedded SCIM tenant stopped");
            }
        });
        tracing::debug!(%base_url, "embedded SCIM tenant started");
        Ok(Tenant {
            base_url,
            shared,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The SCIM base URL, e.g. `http://127.0.0.1:PORT/scim/v2`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The counters so far.
    pub fn stats(&self) -> TenantStats {
        self.shared.stats.snapshot()
    }

    /// Every stored user (with `id` and `meta`), in creation order.
    pub fn users(&self) -> Vec<Value> {
        self.shared.store().snapshot()
    }

    /// Stores a user directly (no HTTP, not counted in the stats), as if it already existed;
    /// returns its id. Fails like `POST /Users` would (missing or duplicate userName).
    pub fn insert_user(&self, user: Value) -> Result<String, ScimError> {
        self.shared.store().insert(&user)
    }

    /// Stops accepting requests and waits (at most 5 s) for open connections to finish.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take() {
            // Idle keep-alive connections close at once; a stuck one must not hang the caller.
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for Tenant {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests;
