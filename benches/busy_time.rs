//! Busy (billed) time under faults: the engine against a naive client, fault-free and faulty.
//!
//! 10,000 new users are provisioned into the embedded tenant (no rate limit, maxOperations 50)
//! twice per client: fault-free, and under a fault profile injected by the tenant (10% of
//! requests answered 429, 5% answered 503, both with `Retry-After: 1`; 5% of the operations of
//! each BulkRequest dropped: neither applied nor answered). Busy time is what Lambda would bill:
//! - the engine: the summed wall time of its cycles (`pipeline::run_cycle`, 500 operations at
//!   most each). Between cycles, retried operations wait in a delay queue that models SQS: an
//!   operation becomes visible after its `DelaySeconds` (scaled by 0.01 to keep the run short:
//!   the waiting is not billed, so the scale changes the wall time, not the busy time), and the
//!   poller gathers a batch for up to a 2 s batching window (scaled alike), as the SQS event
//!   source's `MaximumBatchingWindowInSeconds` does;
//! - a naive client written for this benchmark: BulkRequests of 50 one after another; on 429
//!   or 503 it sleeps (`Retry-After`, doubling on repeated failures of the same request) and
//!   resends; operations missing from a BulkResponse go to the end of its list. Its busy time
//!   is its wall time, sleeps included (real seconds).
//!
//! The engine runs twice: with the default (no rate configured, `adaptive_pacing` off: unpaced)
//! and with `SCIM_ADAPTIVE_PACING=true`, since random 429s make adaptive pacing slow down, and
//! that pacing waits inside the function.
//!
//! Modes:
//! - no `--bench` (as `cargo test --all-targets` runs it): a smoke check of a few seconds on
//!   counts (1,000 users; every user created once, faults met; the naive client's sleeps scaled
//!   down);
//! - `cargo bench --bench busy_time [-- --runs 3] [--users 10000]`: the table.

mod common;

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use common::{arg_value, engine_for, median, runtime, user, TOKEN};
use scim_bulk_provisioner::engine::{Engine, EngineConfig};
use scim_bulk_provisioner::operation::Operation;
use scim_bulk_provisioner::pipeline::{self, Summary};
use scim_bulk_provisioner::queue::memory::DelayQueue;
use scim_bulk_provisioner::tenant::{FaultProfile, Tenant, TenantConfig, TenantStats};

const MAX_OPERATIONS: usize = 50;
/// Operations per cycle at most, and each cycle's deadline.
const BATCH: usize = 500;
const CYCLE: Duration = Duration::from_secs(60);
/// SQS delays and the batching window, scaled down (waiting in the queue is not billed).
const TIME_SCALE: f64 = 0.01;
const BATCHING_WINDOW: Duration = Duration::from_secs(2);
const FAULTS: FaultProfile = FaultProfile {
    throttled: 0.10,
    unavailable: 0.05,
    dropped: 0.05,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Engine,
    EngineAdaptive,
    Naive,
}

impl Client {
    const ALL: [Client; 3] = [Client::Engine, Client::EngineAdaptive, Client::Naive];

    fn name(self) -> &'static str {
        match self {
            Client::Engine => "engine, unpaced (the default)",
            Client::EngineAdaptive => "engine, adaptive pacing (SCIM_ADAPTIVE_PACING=true)",
            Client::Naive => "naive client, sleeps to back off",
        }
    }
}

/// What one provisioning run measured.
#[derive(Debug, Clone, Default)]
struct Run {
    /// Billed time: summed cycle time (engine) or wall time (naive).
    busy: Duration,
    /// Wall time, queue waiting included.
    wall: Duration,
    /// Cycles (engine) or 0.
    cycles: u64,
    /// Of the busy time, spent sleeping to back off (naive) .
    slept: Duration,
    /// Tenant counters.
    stats: TenantStats,
    /// Engine counters (engine only).
    summary: Summary,
}

async fn tenant(faults: Option<FaultProfile>, seed: u64) -> Tenant {
    let config = TenantConfig {
        bearer_token: TOKEN.into(),
        max_operations: MAX_OPERATIONS,
        seed,
        faults: faults.unwrap_or_default(),
        ..TenantConfig::default()
    };
    Tenant::start(config).await.expect("tenant")
}

fn engine(tenant: &Tenant, adaptive: bool) -> Engine {
    let config = EngineConfig {
        adaptive_pacing: adaptive,
        ..EngineConfig::default()
    };
    engine_for(tenant, config)
}

/// The next batch, as the SQS poller hands it over: waits (unbilled) for the first visible
/// operation, then up to the batching window for more, unless the batch is already full.
async fn receive(queue: &DelayQueue, window: Duration) -> Vec<Operation> {
    let mut batch = queue.next_batch(BATCH).await;
    if batch.is_empty() || batch.len() >= BATCH {
        return batch;
    }
    tokio::time::sleep(window).await;
    batch.extend(queue.pop_ready(BATCH - batch.len(), Instant::now()));
    batch
}

async fn run_engine(users: usize, faults: Option<FaultProfile>, seed: u64, adaptive: bool) -> Run {
    let tenant = tenant(faults, seed).await;
    let engine = engine(&tenant, adaptive);
    let queue = DelayQueue::new(TIME_SCALE);
    for i in 0..users {
        queue.push(
            Operation::new(user("busy", i), "bench", None),
            Duration::ZERO,
        );
    }
    let window = queue.scaled(BATCHING_WINDOW);
    let started = Instant::now();
    let mut run = Run::default();
    loop {
        let batch = receive(&queue, window).await;
        if batch.is_empty() {
            break;
        }
        let cycle_started = Instant::now();
        let settled = pipeline::run_cycle(&engine, batch, cycle_started + CYCLE, &queue)
            .await
            .expect("cycle");
        run.busy += cycle_started.elapsed();
        run.cycles += 1;
        run.summary.add(&settled.summary);
    }
    run.wall = started.elapsed();
    run.stats = tenant.stats();
    tenant.shutdown().await;
    run
}

/// The naive client's BulkRequest of POSTs for `batch` (indices into the users).
fn naive_body(batch: &[usize]) -> String {
    let ops: Vec<serde_json::Value> = batch
        .iter()
        .map(|&i| {
            serde_json::json!({
                "method": "POST",
                "bulkId": format!("u{i}"),
                "path": "/Users",
                "data": user("busy", i).to_scim(),
            })
        })
        .collect();
    serde_json::json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
        "Operations": ops,
    })
    .to_string()
}

async fn run_naive(users: usize, faults: Option<FaultProfile>, seed: u64, sleep_scale: f64) -> Run {
    let tenant = tenant(faults, seed).await;
    let client = reqwest::Client::new();
    let url = format!("{}/Bulk", tenant.base_url());
    let mut pending: VecDeque<usize> = (0..users).collect();
    let started = Instant::now();
    let mut slept = Duration::ZERO;
    while !pending.is_empty() {
        let take = pending.len().min(MAX_OPERATIONS);
        let batch: Vec<usize> = pending.drain(..take).collect();
        let body = naive_body(&batch);
        let mut failures = 0u32;
        loop {
            let response = client
                .post(&url)
                .bearer_auth(TOKEN)
                .header("content-type", "application/scim+json")
                .body(body.clone())
                .send()
                .await
                .expect("the tenant answers");
            let status = response.status().as_u16();
            if status == 429 || status >= 500 {
                failures += 1;
                let retry_after = response
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map_or(Duration::from_secs(1), Duration::from_secs);
                let backoff = Duration::from_secs(1) * 2u32.pow(failures.min(5) - 1);
                let pause = retry_after.max(backoff).mul_f64(sleep_scale);
                tokio::time::sleep(pause).await;
                slept += pause;
                continue;
            }
            assert_eq!(status, 200, "the naive client expects 200 to a BulkRequest");
            let bytes = response.bytes().await.expect("a BulkResponse");
            let doc: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
            let answered: HashMap<String, String> = doc["Operations"]
                .as_array()
                .map_or(&[][..], Vec::as_slice)
                .iter()
                .filter_map(|o| {
                    Some((
                        o["bulkId"].as_str()?.to_string(),
                        o["status"].as_str()?.to_string(),
                    ))
                })
                .collect();
            for i in batch {
                match answered.get(&format!("u{i}")).map(String::as_str) {
                    Some("201" | "409") => {}
                    Some(other) => panic!("user {i}: unexpected status {other}"),
                    None => pending.push_back(i),
                }
            }
            break;
        }
    }
    let wall = started.elapsed();
    let run = Run {
        busy: wall,
        wall,
        slept,
        stats: tenant.stats(),
        ..Run::default()
    };
    tenant.shutdown().await;
    run
}

async fn run(
    client: Client,
    users: usize,
    faults: Option<FaultProfile>,
    seed: u64,
    sleep_scale: f64,
) -> Run {
    match client {
        Client::Engine => run_engine(users, faults, seed, false).await,
        Client::EngineAdaptive => run_engine(users, faults, seed, true).await,
        Client::Naive => run_naive(users, faults, seed, sleep_scale).await,
    }
}

/// Counts only: every user created exactly once by every client, faults met.
fn smoke() {
    let started = Instant::now();
    let rt = runtime();
    rt.block_on(async {
        let users = 1_000;
        let free = run(Client::Engine, users, None, 1, 0.01).await;
        assert_eq!(free.stats.created, users as u64, "{free:?}");
        assert_eq!(free.cycles, 2, "{free:?}");
        assert_eq!(free.stats.bulk_requests, 20, "{free:?}");
        for client in Client::ALL {
            let faulty = run(client, users, Some(FAULTS), 7, 0.01).await;
            let stats = &faulty.stats;
            assert_eq!(stats.created, users as u64, "{client:?}: {faulty:?}");
            assert_eq!(stats.conflicts, 0, "{client:?}: nobody created twice");
            assert!(
                stats.throttled > 0 && stats.server_errors > 0 && stats.dropped_operations > 0,
                "{client:?}: faults met: {stats:?}"
            );
            if client != Client::Naive {
                assert_eq!(faulty.summary.created, users as u64, "{client:?}");
                assert_eq!(faulty.summary.failed, 0, "{client:?}");
                assert!(faulty.cycles > 2, "{client:?}: retries need more cycles");
            }
        }
    });
    println!(
        "busy_time smoke check passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn line(client: Client, faulty: bool, r: &Run) -> String {
    format!(
        "{:<46} {:<10} busy {:>8.3} s (slept {:>6.1} s), wall {:>7.2} s, {:>4} cycles, {:>5} requests, {:>3} 429, {:>3} 503, {:>4} ops dropped, created {}",
        client.name(),
        if faulty { "faults" } else { "no faults" },
        r.busy.as_secs_f64(),
        r.slept.as_secs_f64(),
        r.wall.as_secs_f64(),
        r.cycles,
        r.stats.requests,
        r.stats.throttled,
        r.stats.server_errors,
        r.stats.dropped_operations,
        r.stats.created,
    )
}

fn bench(args: &[String]) {
    let runs = arg_value(args, "--runs", 3) as usize;
    let users = arg_value(args, "--users", 10_000) as usize;
    let rt = runtime();
    println!(
        "{users} users, {runs} runs; faults: 10% 429, 5% 503 (Retry-After 1), 5% of bulk operations dropped"
    );
    // results[client] = per-run (fault-free, faulty)
    let mut results: Vec<(Client, Vec<(Run, Run)>)> =
        Client::ALL.iter().map(|c| (*c, Vec::new())).collect();
    for i in 0..runs {
        let seed = 100 + i as u64;
        for (client, runs) in results.iter_mut() {
            let free = rt.block_on(run(*client, users, None, seed, 1.0));
            println!("  run {}: {}", i + 1, line(*client, false, &free));
            let faulty = rt.block_on(run(*client, users, Some(FAULTS), seed, 1.0));
            println!("  run {}: {}", i + 1, line(*client, true, &faulty));
            runs.push((free, faulty));
        }
    }
    let engine_free = {
        let v: Vec<f64> = results[0]
            .1
            .iter()
            .map(|(f, _)| f.busy.as_secs_f64())
            .collect();
        median(&v)
    };
    println!();
    println!("| client | busy, no faults | busy, faults | faults / no faults | faults / engine without faults | cycles (faults) | requests (faults) |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (client, runs) in &results {
        let free: Vec<f64> = runs.iter().map(|(f, _)| f.busy.as_secs_f64()).collect();
        let faulty: Vec<f64> = runs.iter().map(|(_, f)| f.busy.as_secs_f64()).collect();
        let ratio: Vec<f64> = runs
            .iter()
            .map(|(f, x)| x.busy.as_secs_f64() / f.busy.as_secs_f64())
            .collect();
        let cycles: Vec<f64> = runs.iter().map(|(_, x)| x.cycles as f64).collect();
        let requests: Vec<f64> = runs.iter().map(|(_, x)| x.stats.requests as f64).collect();
        let faulty_median = median(&faulty);
        println!(
            "| {} | {:.3} s | {:.3} s | {:.2}x | {:.1}x | {:.0} | {:.0} |",
            client.name(),
            median(&free),
            faulty_median,
            median(&ratio),
            faulty_median / engine_free,
            median(&cycles),
            median(&requests),
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        smoke();
        return;
    }
    bench(&args);
}
