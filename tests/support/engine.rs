//! Building an engine and running one cycle, for the engine's integration tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use scim_bulk_provisioner::engine::{CycleReport, Engine, EngineConfig};
use scim_bulk_provisioner::operation::Operation;
use scim_bulk_provisioner::scim::credentials::{Credentials, StaticCredentials};

/// Bearer credentials for `base_url`.
pub fn bearer(base_url: &str, token: &str) -> Credentials {
    let json = serde_json::json!({"base_url": base_url, "auth_type": "bearer", "token": token});
    Credentials::from_json(&json.to_string()).expect("credentials")
}

/// An engine with fixed credentials.
pub fn engine_with(credentials: Credentials, config: EngineConfig) -> Engine {
    Engine::new(config, Arc::new(StaticCredentials(credentials))).expect("engine")
}

/// One cycle with a generous deadline.
pub async fn cycle(engine: &Engine, ops: Vec<Operation>) -> CycleReport {
    engine
        .run_cycle(ops, Instant::now() + Duration::from_secs(60))
        .await
        .expect("cycle runs")
}

/// The outcome kinds of a cycle, in operation order.
pub fn kinds(report: &CycleReport) -> Vec<&'static str> {
    report.results.iter().map(|r| r.outcome.kind()).collect()
}
