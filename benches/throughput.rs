//! Throughput at the tenant's rate limit, with the limit known and found by adaptive pacing.
//!
//! The embedded tenant allows 10 requests/s (a token bucket of one second, answering 429 with
//! `Retry-After` beyond it) and 50 operations per BulkRequest: the ceiling is 500 operations/s.
//! The engine provisions new users through `pipeline::run_cycle`, one cycle of 500 operations
//! after another, retried and deferred operations going back to the in-memory delay queue
//! (`DelayQueue`, real time), as the CLI does. Two pacings, interleaved run by run:
//! - `known`: the engine is told the limit (`requests_per_minute` 600);
//! - `adaptive`: no rate is configured; the engine's adaptive pacing (unpaced until the first
//!   429, then AIMD) finds it.
//!
//! Operations/s are counted by the tenant (users created) over the run after a warm-up; 429s
//! and requests are counted by the tenant over the whole run (warm-up included).
//!
//! Modes:
//! - no `--bench` (as `cargo test --all-targets` runs it): a smoke check of a few seconds on
//!   counts only (every user created; no 429 with the known limit; the adaptive engine met
//!   429s and paces);
//! - `cargo bench --bench throughput [-- --runs 3] [--seconds 45] [--warmup 10]`: the table.

mod common;

use std::time::{Duration, Instant};

use common::{arg_value, engine_for, median, runtime, user, TOKEN};
use scim_bulk_provisioner::engine::{Engine, EngineConfig};
use scim_bulk_provisioner::operation::Operation;
use scim_bulk_provisioner::pipeline::{self, Summary};
use scim_bulk_provisioner::queue::memory::DelayQueue;
use scim_bulk_provisioner::tenant::{Tenant, TenantConfig, TenantStats};

const RATE: f64 = 10.0;
const MAX_OPERATIONS: usize = 50;
const CEILING: f64 = RATE * MAX_OPERATIONS as f64;
/// Operations per cycle (the S3 handler's flush size) and each cycle's deadline.
const BATCH: usize = 500;
const CYCLE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pacing {
    Known,
    Adaptive,
}

impl Pacing {
    fn name(self) -> &'static str {
        match self {
            Pacing::Known => "known limit (600/min)",
            Pacing::Adaptive => "adaptive (limit unknown)",
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
struct Run {
    /// Users created per second after the warm-up.
    ops_per_sec: f64,
    /// Tenant counters at the end.
    stats: TenantStats,
    /// Tenant counters at the end of the warm-up.
    at_warmup: TenantStats,
    /// Engine counters over all cycles.
    summary: Summary,
    /// The engine's request spacing at the end.
    interval: Duration,
}

async fn start(pacing: Pacing) -> (Tenant, Engine) {
    let tenant = Tenant::start(TenantConfig {
        bearer_token: TOKEN.into(),
        max_operations: MAX_OPERATIONS,
        requests_per_second: Some(RATE),
        ..TenantConfig::default()
    })
    .await
    .expect("tenant");
    let config = EngineConfig {
        requests_per_minute: match pacing {
            Pacing::Known => Some((RATE * 60.0) as u32),
            Pacing::Adaptive => None,
        },
        adaptive_pacing: true,
        ..EngineConfig::default()
    };
    let engine = engine_for(&tenant, config);
    (tenant, engine)
}

/// Runs cycles until the queue is empty or `until`.
async fn drive(engine: &Engine, queue: &DelayQueue, until: Instant) -> Summary {
    let mut summary = Summary::default();
    while Instant::now() < until {
        let batch = tokio::select! {
            batch = queue.next_batch(BATCH) => batch,
            _ = tokio::time::sleep_until(until.into()) => break,
        };
        if batch.is_empty() {
            break;
        }
        let settled = pipeline::run_cycle(engine, batch, Instant::now() + CYCLE, queue)
            .await
            .expect("cycle");
        summary.add(&settled.summary);
    }
    summary
}

async fn run(pacing: Pacing, users: usize, run_for: Duration, warmup: Duration, scale: f64) -> Run {
    let (tenant, engine) = start(pacing).await;
    let queue = DelayQueue::new(scale);
    for i in 0..users {
        queue.push(
            Operation::new(user("bench", i), "bench", None),
            Duration::ZERO,
        );
    }
    let started = Instant::now();
    let until = started + run_for;
    let driving = drive(&engine, &queue, until);
    tokio::pin!(driving);
    let mut at_warmup = None;
    let summary = loop {
        tokio::select! {
            summary = &mut driving => break summary,
            _ = tokio::time::sleep_until((started + warmup).into()), if at_warmup.is_none() => {
                at_warmup = Some((Instant::now(), tenant.stats()));
            }
        }
    };
    let (t1, c1) = (Instant::now(), tenant.stats().created);
    let (t0, warm) = at_warmup.unwrap_or((started, TenantStats::default()));
    let run = Run {
        ops_per_sec: (c1 - warm.created) as f64 / (t1 - t0).as_secs_f64(),
        stats: tenant.stats(),
        at_warmup: warm,
        summary,
        interval: engine.pacing_interval(),
    };
    tenant.shutdown().await;
    run
}

/// Counts only: every user created, no 429 with the known limit, 429s met and pacing learnt
/// without it.
fn smoke() {
    let started = Instant::now();
    let rt = runtime();
    rt.block_on(async {
        let long = Duration::from_secs(60);
        // Known limit: 600 users, 12 requests at 10/s.
        let known = run(Pacing::Known, 600, long, Duration::ZERO, 1.0).await;
        assert_eq!(known.stats.created, 600, "{known:?}");
        assert_eq!(known.stats.throttled, 0, "{known:?}");
        assert_eq!(known.stats.bulk_requests, 12, "{known:?}");
        assert_eq!(known.summary.created, 600);
        // Unknown limit: 1,000 users; the first burst meets 429s, then pacing sets in.
        let adaptive = run(Pacing::Adaptive, 1_000, long, Duration::ZERO, 0.2).await;
        assert_eq!(adaptive.stats.created, 1_000, "{adaptive:?}");
        assert_eq!(adaptive.summary.created, 1_000);
        assert!(adaptive.stats.throttled >= 1, "{adaptive:?}");
        assert_eq!(adaptive.summary.throttled, adaptive.stats.throttled);
        assert!(adaptive.interval > Duration::ZERO, "{adaptive:?}");
    });
    println!(
        "throughput smoke check passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

struct Options {
    runs: usize,
    seconds: u64,
    warmup: u64,
}

fn options(args: &[String]) -> Options {
    let value = |name: &str, default: u64| arg_value(args, name, default);
    Options {
        runs: value("--runs", 3) as usize,
        seconds: value("--seconds", 45),
        warmup: value("--warmup", 10),
    }
}

fn bench(options: &Options) {
    let rt = runtime();
    let run_for = Duration::from_secs(options.seconds);
    let warmup = Duration::from_secs(options.warmup);
    // More users than the run can create at the ceiling.
    let users = (CEILING * options.seconds as f64 * 1.2) as usize;
    println!(
        "Tenant: {RATE} requests/s, maxOperations {MAX_OPERATIONS}: ceiling {CEILING} operations/s. \
         {} runs of {} s each (operations/s counted after {} s), interleaved.",
        options.runs, options.seconds, options.warmup
    );
    let mut all: Vec<(Pacing, Run)> = Vec::new();
    for i in 0..options.runs {
        for pacing in [Pacing::Known, Pacing::Adaptive] {
            let r = rt.block_on(run(pacing, users, run_for, warmup, 1.0));
            println!(
                "  run {}: {:<25} {:>6.1} ops/s ({:>5.1}% of ceiling), {} requests, {} answered 429 ({:.2}%), final spacing {:.1} ms",
                i + 1,
                pacing.name(),
                r.ops_per_sec,
                100.0 * r.ops_per_sec / CEILING,
                r.stats.requests,
                r.stats.throttled,
                100.0 * r.stats.throttled as f64 / r.stats.requests.max(1) as f64,
                r.interval.as_secs_f64() * 1e3,
            );
            all.push((pacing, r));
        }
    }
    println!();
    println!(
        "| pacing | operations/s after warm-up | % of ceiling | requests | 429s | % of requests 429 | % 429 after warm-up |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for pacing in [Pacing::Known, Pacing::Adaptive] {
        let runs: Vec<&Run> = all
            .iter()
            .filter(|(p, _)| *p == pacing)
            .map(|(_, r)| r)
            .collect();
        let ops: Vec<f64> = runs.iter().map(|r| r.ops_per_sec).collect();
        let requests: Vec<f64> = runs.iter().map(|r| r.stats.requests as f64).collect();
        let throttled: Vec<f64> = runs.iter().map(|r| r.stats.throttled as f64).collect();
        let share: Vec<f64> = runs
            .iter()
            .map(|r| 100.0 * r.stats.throttled as f64 / r.stats.requests.max(1) as f64)
            .collect();
        let steady: Vec<f64> = runs
            .iter()
            .map(|r| {
                let requests = r.stats.requests - r.at_warmup.requests;
                let throttled = r.stats.throttled - r.at_warmup.throttled;
                100.0 * throttled as f64 / requests.max(1) as f64
            })
            .collect();
        let ops = median(&ops);
        println!(
            "| {} | {:.1} | {:.1}% | {:.0} | {:.0} | {:.2}% | {:.2}% |",
            pacing.name(),
            ops,
            100.0 * ops / CEILING,
            median(&requests),
            median(&throttled),
            median(&share),
            median(&steady),
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        smoke();
        return;
    }
    bench(&options(&args));
}
