//! Busy (billed) time under sustained throttling and faults (issue 18's profile): the engine, as
//! the function runs it, side by side with a plain client that sleeps nowhere but honours
//! `Retry-After` (`busy_time/baseline.rs`).
//!
//! The tenant is the embedded one with a rate limit of 10 requests/s (429 + `Retry-After`),
//! behind the tests' fault proxy (`tests/support/faults.rs`, random mode) adding 20% random 429s
//! (`Retry-After: 1`), 10% 503s, 3% connection resets, 3% answers lost after the request was
//! applied (502), 1% answers stalled 35 s, inside BulkResponses 5% each of operations refused
//! (503), missing and applied-but-500, and OAuth tokens that expire every 20 s. 1,000 users, 20
//! of them already in the tenant with mixed-case userNames (10 to update, 6 leavers to
//! deactivate, 4 already right); `MAX_ATTEMPTS` 12, backoff 1–8 s. Every request takes at least
//! 100 ms (the proxy waits that long before answering), as a tenant on the internet does: on
//! loopback a client that sends one request per user would otherwise send hundreds a second.
//!
//! Both clients take batches of at most 500 from a delay queue modelling SQS (a message is
//! visible after its delay; a 2 s batching window after the first), so both re-enqueue rather
//! than sleep, and the time in the queue is not billed. Busy time is the summed wall time of
//! the batches (cycles). Requests are counted by the proxy (every SCIM request, whatever became
//! of it; token requests apart), 429s of the rate limit by the tenant.
//!
//! Modes:
//! - no `--bench` (as `cargo test --all-targets` runs it): a smoke check on counts only (100
//!   users, time scaled down: 2.5 s stalls, 2 s tokens, queue delays at 5%): every user right
//!   or reported failed, nobody created twice, the faults met;
//! - `cargo bench --bench busy_time [-- --runs 1] [--users 1000] [--baseline-timeout 30]
//!   [--latency-ms 100] [--only engine|baseline]`.

#[path = "busy_time/baseline.rs"]
mod baseline;
mod common;

#[path = "../tests/support"]
#[allow(dead_code, unused_imports)]
mod support {
    /// The tests' scim2-server handle, which `faults` names; unused here.
    pub struct ScimServer {
        pub base_url: String,
        pub token: String,
    }
    pub mod faults;
}

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{arg_value, median, runtime};
use scim_bulk_provisioner::engine::{Engine, EngineConfig};
use scim_bulk_provisioner::operation::Operation;
use scim_bulk_provisioner::pipeline::{self, Summary};
use scim_bulk_provisioner::queue::memory::DelayQueue;
use scim_bulk_provisioner::retry::RetryPolicy;
use scim_bulk_provisioner::scim::credentials::{Credentials, StaticCredentials};
use scim_bulk_provisioner::tenant::{Tenant, TenantConfig};
use scim_bulk_provisioner::user::User;
use serde_json::{json, Value};
use support::faults::{FaultProxy, RandomCounts, RandomFaults, TokenConfig};

/// Operations per cycle (batch) at most, and each cycle's deadline.
const BATCH: usize = 500;
const CYCLE: Duration = Duration::from_secs(120);
const BATCHING_WINDOW: Duration = Duration::from_secs(2);
const TOKEN: &str = "bench-token";
const RATE_LIMIT: f64 = 10.0;

/// The sizes and times of one run.
#[derive(Debug, Clone, Copy)]
struct Scale {
    users: usize,
    /// Users in the tenant beforehand: to update, leavers, already right.
    stale: usize,
    leavers: usize,
    same: usize,
    stall: Duration,
    token_life: Duration,
    /// Queue delays and the batching window are multiplied by this.
    queue: f64,
    /// The baseline's fixed request timeout.
    baseline_timeout: Duration,
    /// Every request's latency (the proxy's `RandomFaults::latency`).
    latency: Duration,
}

const FULL: Scale = Scale {
    users: 1_000,
    stale: 10,
    leavers: 6,
    same: 4,
    stall: Duration::from_secs(35),
    token_life: Duration::from_secs(20),
    queue: 1.0,
    baseline_timeout: Duration::from_secs(30),
    latency: Duration::from_millis(100),
};

const SMOKE: Scale = Scale {
    users: 100,
    stale: 4,
    leavers: 3,
    same: 2,
    // Longer than the shortest adaptive timeout (2 s), so that a stall is cut.
    stall: Duration::from_millis(2500),
    token_life: Duration::from_secs(2),
    queue: 0.05,
    baseline_timeout: Duration::from_millis(1500),
    latency: Duration::from_millis(5),
};

fn faults(scale: &Scale, seed: u64) -> RandomFaults {
    RandomFaults {
        throttled: 0.20,
        unavailable: 0.10,
        reset: 0.03,
        lost: 0.03,
        stalled: 0.01,
        stall: scale.stall,
        op_unavailable: 0.05,
        op_missing: 0.05,
        op_failed: 0.05,
        token_lifetime: Some(scale.token_life),
        latency: scale.latency,
        ..RandomFaults::seeded(seed)
    }
}

/// User `i` of the file: a leaver for the first `leavers` of the pre-existing ones.
fn file_user(scale: &Scale, i: usize) -> User {
    let mut user = common::user("busy", i);
    if (scale.stale..scale.stale + scale.leavers).contains(&i) {
        user.active = false;
    }
    user
}

/// The tenant, the proxy in front of it, and the users already there.
struct World {
    tenant: Tenant,
    proxy: FaultProxy,
}

async fn world(scale: &Scale, seed: u64) -> World {
    let tenant = Tenant::start(TenantConfig {
        bearer_token: TOKEN.into(),
        requests_per_second: Some(RATE_LIMIT),
        seed,
        ..TenantConfig::default()
    })
    .await
    .expect("tenant");
    for i in 0..scale.stale + scale.leavers + scale.same {
        let mut doc = common::user("busy", i).to_scim();
        // Mixed case: the tenant matches userNames case-insensitively, as RFC 7643 says.
        let name = doc["userName"].as_str().unwrap_or_default().to_string();
        doc["userName"] = json!(format!("{}{}", name[..1].to_uppercase(), &name[1..]));
        if i < scale.stale {
            doc["title"] = json!("Stale Title");
        }
        tenant.insert_user(doc).expect("pre-existing user");
    }
    let proxy = FaultProxy::start(&tenant.base_url(), TOKEN);
    proxy.set_token_config(TokenConfig {
        expires_in: scale.token_life.as_secs().max(1),
        ..TokenConfig::default()
    });
    proxy.set_random(faults(scale, seed));
    World { tenant, proxy }
}

/// What one run of one client measured.
#[derive(Debug, Clone, Default)]
struct Run {
    busy: Duration,
    wall: Duration,
    batches: u64,
    /// SCIM requests the proxy saw (token requests apart), and token requests.
    requests: u64,
    token_requests: u64,
    /// 429s of the tenant's rate limit; the random faults met.
    limit_429: u64,
    random: RandomCounts,
    failed: u64,
    /// Users not as the file says after the run (missing, wrong attributes or state).
    wrong: usize,
    /// Users in the tenant beyond the file's (someone created twice).
    extra: usize,
    timeouts: u64,
    summary: Summary,
}

/// Checks the tenant against the file: users wrong, and users beyond the file's.
fn check(tenant: &Tenant, scale: &Scale) -> (usize, usize) {
    let users: Vec<Value> = tenant.users();
    let by_name: HashMap<String, &Value> = users
        .iter()
        .filter_map(|u| Some((u["userName"].as_str()?.to_lowercase(), u)))
        .collect();
    let mut wrong = 0;
    for i in 0..scale.users {
        let user = file_user(scale, i);
        let ok = by_name.get(&user.user_name).is_some_and(|u| {
            u["active"] == json!(user.active) && (!user.active || u["title"] == json!("Agent"))
        });
        wrong += usize::from(!ok);
    }
    (wrong, users.len().saturating_sub(scale.users))
}

fn finish(world: &World, scale: &Scale, mut run: Run) -> Run {
    let seen = world.proxy.requests();
    run.token_requests = seen.iter().filter(|r| r.path.ends_with("/token")).count() as u64;
    run.requests = seen.len() as u64 - run.token_requests;
    run.limit_429 = world.tenant.stats().throttled;
    run.random = world.proxy.random_counts();
    (run.wrong, run.extra) = check(&world.tenant, scale);
    run
}

async fn run_engine(scale: &Scale, seed: u64) -> Run {
    let world = world(scale, seed).await;
    let token = TokenConfig::default();
    let credentials = json!({
        "base_url": world.proxy.url, "auth_type": "oauth_client_credentials",
        "token_url": world.proxy.oauth_token_url(),
        "client_id": token.client_id, "client_secret": token.client_secret,
    });
    let credentials = Credentials::from_json(&credentials.to_string()).expect("credentials");
    let config = EngineConfig {
        retry: RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(8),
            max_attempts: baseline::MAX_ATTEMPTS,
            ..RetryPolicy::default()
        },
        ..EngineConfig::default()
    };
    let engine = Engine::new(config, Arc::new(StaticCredentials(credentials))).expect("engine");
    let queue = DelayQueue::new(scale.queue);
    for i in 0..scale.users {
        queue.push(
            Operation::new(file_user(scale, i), "bench", None),
            Duration::ZERO,
        );
    }
    let window = queue.scaled(BATCHING_WINDOW);
    let started = Instant::now();
    let mut run = Run::default();
    loop {
        let mut batch = queue.next_batch(BATCH).await;
        if batch.is_empty() {
            break;
        }
        if batch.len() < BATCH {
            tokio::time::sleep(window).await;
            batch.extend(queue.pop_ready(BATCH - batch.len(), Instant::now()));
        }
        let cycle_started = Instant::now();
        let settled = pipeline::run_cycle(&engine, batch, cycle_started + CYCLE, &queue)
            .await
            .expect("cycle");
        run.busy += cycle_started.elapsed();
        run.batches += 1;
        run.summary.add(&settled.summary);
    }
    run.wall = started.elapsed();
    run.failed = run.summary.failed;
    finish(&world, scale, run)
}

async fn run_baseline(scale: &Scale, seed: u64) -> Run {
    let world = world(scale, seed).await;
    let token = TokenConfig::default();
    let plain = baseline::Plain::new(
        world.proxy.url.clone(),
        world.proxy.oauth_token_url(),
        (token.client_id, token.client_secret),
        scale.baseline_timeout,
    );
    let users = (0..scale.users).map(|i| file_user(scale, i)).collect();
    let started = Instant::now();
    let outcome = plain.run(users, BATCH, scale.queue, BATCHING_WINDOW).await;
    let run = Run {
        busy: outcome.busy,
        wall: started.elapsed(),
        batches: outcome.batches,
        failed: outcome.failed,
        timeouts: outcome.timeouts,
        ..Run::default()
    };
    finish(&world, scale, run)
}

fn line(name: &str, users: usize, r: &Run) -> String {
    let f = &r.random;
    format!(
        "{name:<9} busy {:>7.1} s, wall {:>6.1} s, {:>3} batches, {:>5} requests ({:.2}/user), {:>3} token requests, {:>3} 429s of the limit, random: {} 429 {} 503 {} reset {} lost {} stalled, ops {} refused {} missing {} failed-applied, {} expired tokens; failed {}, wrong {}, extra {}, timeouts {}",
        r.busy.as_secs_f64(),
        r.wall.as_secs_f64(),
        r.batches,
        r.requests,
        r.requests as f64 / users as f64,
        r.token_requests,
        r.limit_429,
        f.throttled,
        f.unavailable,
        f.reset,
        f.lost,
        f.stalled,
        f.op_unavailable,
        f.op_missing,
        f.op_failed,
        f.expired,
        r.failed,
        r.wrong,
        r.extra,
        r.timeouts,
    )
}

/// Counts only: every user right or reported failed, nobody twice, every fault met.
fn smoke() {
    let started = Instant::now();
    let rt = runtime();
    rt.block_on(async {
        let scale = SMOKE;
        for (name, run) in [
            ("engine", run_engine(&scale, 3).await),
            ("baseline", run_baseline(&scale, 3).await),
        ] {
            println!("{}", line(name, scale.users, &run));
            assert_eq!(run.extra, 0, "{name}: nobody created twice");
            assert!(
                run.wrong as u64 <= run.failed,
                "{name}: every user right or reported failed: {run:?}"
            );
            let f = run.random;
            assert!(
                f.throttled > 0 && f.unavailable > 0,
                "{name}: faults met: {run:?}"
            );
            if name == "baseline" {
                // One request per user, unpaced: it meets the rate limit.
                assert!(run.limit_429 > 0, "{name}: {run:?}");
            } else {
                assert!(
                    f.op_unavailable + f.op_missing + f.op_failed > 0,
                    "{name}: per-operation faults met: {f:?}"
                );
            }
        }
    });
    println!(
        "busy_time smoke check passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

fn bench(args: &[String]) {
    let runs = arg_value(args, "--runs", 1) as usize;
    let scale = Scale {
        users: arg_value(args, "--users", FULL.users as u64) as usize,
        baseline_timeout: Duration::from_secs(arg_value(args, "--baseline-timeout", 30)),
        latency: Duration::from_millis(arg_value(args, "--latency-ms", 100)),
        ..FULL
    };
    let rt = runtime();
    println!(
        "{} users ({} pre-existing), {runs} run(s); rate limit {RATE_LIMIT}/s; latency {:?}; baseline timeout {:?}",
        scale.users,
        scale.stale + scale.leavers + scale.same,
        scale.latency,
        scale.baseline_timeout
    );
    let mut engine = Vec::new();
    let mut plain = Vec::new();
    // `--only engine` or `--only baseline`: one side (to measure a change to one of them).
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .map(String::as_str);
    for i in 0..runs {
        let seed = 100 + i as u64;
        if only != Some("baseline") {
            let e = rt.block_on(run_engine(&scale, seed));
            println!("  run {}: {}", i + 1, line("engine", scale.users, &e));
            engine.push(e);
        }
        if only != Some("engine") {
            let p = rt.block_on(run_baseline(&scale, seed));
            println!("  run {}: {}", i + 1, line("baseline", scale.users, &p));
            plain.push(p);
        }
    }
    if only.is_some() {
        return;
    }
    let m = |runs: &[Run], f: fn(&Run) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    println!();
    println!("| client | busy (billed) s | 429s of the rate limit | requests per user | failed | users wrong | wall s |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, runs) in [("engine (defaults)", &engine), ("plain client", &plain)] {
        println!(
            "| {name} | {:.1} | {:.0} | {:.2} | {:.0} | {:.0} | {:.0} |",
            m(runs, |r| r.busy.as_secs_f64()),
            m(runs, |r| r.limit_429 as f64),
            m(runs, |r| r.requests as f64) / scale.users as f64,
            m(runs, |r| r.failed as f64),
            m(runs, |r| r.wrong as f64),
            m(runs, |r| r.wall.as_secs_f64()),
        );
    }
    let ratio: Vec<f64> = engine
        .iter()
        .zip(&plain)
        .map(|(e, p)| e.busy.as_secs_f64() / p.busy.as_secs_f64())
        .collect();
    println!(
        "\nengine busy / plain busy: {ratio:.2?} (median {:.2})",
        median(&ratio)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        smoke();
        return;
    }
    bench(&args);
}
