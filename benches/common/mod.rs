//! Helpers shared by the bench binaries (each says `mod common;`).
#![allow(dead_code)] // every bench compiles this module and uses a part of it

/// The median of some measurements (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    assert!(n > 0, "the median of no measurement");
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// The number after `name` in the arguments, or `default`; `1_000` style is accepted.
pub fn arg_value(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| {
            v.replace('_', "").parse().expect("a whole number")
        })
}

/// Test user `i` of a bench (`<tag>.user000042@example.com`), with a title, a department and
/// an employee number like an HR export's.
pub fn user(tag: &str, i: usize) -> scim_bulk_provisioner::user::User {
    // Through serde, so that optional fields added to User later keep their defaults.
    let doc = serde_json::json!({
        "user_name": format!("{tag}.user{i:06}@example.com"),
        "email": format!("{tag}.user{i:06}@example.com"),
        "first_name": "Bench",
        "last_name": format!("User {i}"),
        "active": true,
        "title": "Agent",
        "department": "Customer Care",
        "employee_number": format!("E{i:06}"),
    });
    serde_json::from_value(doc).expect("a valid user")
}

/// The bearer token of the benches' embedded tenants.
pub const TOKEN: &str = "bench-token";

/// An engine with `config` that provisions into `tenant` (bearer [`TOKEN`]).
pub fn engine_for(
    tenant: &scim_bulk_provisioner::tenant::Tenant,
    config: scim_bulk_provisioner::engine::EngineConfig,
) -> scim_bulk_provisioner::engine::Engine {
    use scim_bulk_provisioner::scim::credentials::{Credentials, StaticCredentials};
    let json =
        serde_json::json!({"base_url": tenant.base_url(), "auth_type": "bearer", "token": TOKEN});
    let credentials = Credentials::from_json(&json.to_string()).expect("credentials");
    scim_bulk_provisioner::engine::Engine::new(
        config,
        std::sync::Arc::new(StaticCredentials(credentials)),
    )
    .expect("engine")
}

/// A two-worker tokio runtime for a bench's async work.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
