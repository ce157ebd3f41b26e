//! `demo`: the bundled HR export into an embedded SCIM tenant, through the Lambda's pipeline,
//! with scaled-down time; then a check of the tenant against the file.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

mod full_sync;

use super::format::thousands;
use super::input::{first_records, Input};
use super::progress::Progress;
use super::runner::{self, RunSettings};
use super::seed::{seed, Seeded};
use super::summary::RunSummary;
use super::verify::{verify, Verification};
use super::{read_file, write_report, DemoArgs, PatchFormArg, UsageError};
use crate::engine::{Engine, EngineConfig};
use crate::ledger::memory::MemoryLedger;
use crate::queue::memory::DelayQueue;
use crate::scim::credentials::{Auth, Credentials, Secret, StaticCredentials};
use crate::scim::http::Timeouts;
use crate::sources::CsvSource;
use crate::tenant::{FaultProfile, PatchForm, Quirks, Tenant, TenantConfig, TenantStats};

/// The sample HR export, built into the binary so the demo runs from any directory.
const SAMPLE: &str = include_str!("../../examples/hr-export.csv");
const SAMPLE_NAME: &str = "examples/hr-export.csv";

/// The tenant's bulk payload limit: small enough that some 50-operation requests must be split.
const MAX_PAYLOAD: usize = 24 * 1024;
/// The tool paces its requests this much faster than the tenant allows, so the run meets
/// (and recovers from) some 429s, as it would on a tenant shared with other clients.
const OVERSEND: f64 = 1.2;
/// Operations per cycle and each cycle's deadline: several cycles, as SQS batches would be.
const BATCH: usize = 250;
const CYCLE: Duration = Duration::from_secs(8);
/// Request timeout: a cycle only sends what can finish before its deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// The JSON form of the demo's result.
#[derive(Debug, Serialize)]
struct DemoJson<'a> {
    #[serde(flatten)]
    summary: &'a RunSummary,
    tenant: TenantJson,
    verification: &'a Verification,
    nothing_lost: bool,
    /// The run's summary as the function writes it (`reports/runs/<run_id>.json`).
    run: &'a crate::runs::summary::RunSummary,
    /// `--full-sync`: the truncated export held, then approved.
    #[serde(skip_serializing_if = "Option::is_none")]
    full_sync: Option<FullSyncJson<'a>>,
}

/// The JSON form of the full-sync phase.
#[derive(Debug, Serialize)]
struct FullSyncJson<'a> {
    held: &'a crate::runs::summary::RunSummary,
    approved: &'a crate::runs::summary::RunSummary,
    exactly_the_absent_users_deactivated: bool,
}

/// What the tenant saw.
#[derive(Debug, Serialize)]
struct TenantJson {
    base_url: String,
    existing_users: usize,
    requests: u64,
    throttled: u64,
    server_errors: u64,
}

/// Runs the demo; exit 0 when the tenant holds exactly what the file asked for.
pub async fn run(args: DemoArgs) -> Result<ExitCode, UsageError> {
    check(&args)?;
    let (text, source) = match &args.csv {
        Some(path) => {
            let bytes = read_file(path)?;
            let text = String::from_utf8(bytes)
                .map_err(|_| UsageError(format!("{}: not UTF-8 text", path.display())))?;
            (text, path.display().to_string())
        }
        None => (SAMPLE.to_string(), SAMPLE_NAME.to_string()),
    };
    let text = match args.rows {
        Some(rows) => {
            let delimiter = CsvSource::new(text.as_bytes())
                .map_err(|e| UsageError(format!("{source}: {e}")))?
                .delimiter();
            first_records(&text, rows, delimiter).to_string()
        }
        None => text,
    };
    let input =
        Input::read(text.as_bytes(), &source).map_err(|e| UsageError(format!("{source}: {e}")))?;

    let token = format!("demo-{:016x}", StdRng::from_os_rng().random::<u64>());
    let tenant = Tenant::start(tenant_config(&args, &token))
        .await
        .map_err(|e| UsageError(format!("cannot start the embedded tenant: {e}")))?;
    let seeded = seed(&tenant, &input)
        .map_err(|e| UsageError(format!("cannot seed the embedded tenant: {}", e.detail)))?;
    let engine = engine(&args, &tenant, &token)?;
    let existing = tenant.users().len();
    if !args.output.quiet {
        eprintln!("{}", intro(&args, &tenant, &input, existing));
    }

    let started = Instant::now();
    let started_at = crate::operation::unix_millis();
    let queue = DelayQueue::new(args.time_scale);
    for operation in &input.operations {
        queue.push(operation.clone(), Duration::ZERO);
    }
    let progress = Progress::new(input.rows, args.output.quiet);
    let pre_settled = (input.invalid.len() + input.superseded.len()) as u64;
    let settings = RunSettings {
        batch: BATCH,
        cycle: CYCLE,
    };
    let drained = runner::drain(&engine, &queue, settings, &progress, pre_settled).await;
    progress.finish();
    let drained = drained.map_err(|e| UsageError(e.to_string()))?;
    let summary = RunSummary::of(&input, &drained, started.elapsed());

    let stats = tenant.stats();
    let users = tenant.users();
    let verification = if drained.unfinished > 0 {
        Verification::interrupted(drained.unfinished)
    } else {
        verify(
            &input,
            &seeded,
            &users,
            &drained.results,
            stats.created,
            summary.counts.created,
        )
    };
    let run = full_sync::upload_summary(&input, &drained, started_at, drained.counts.requests);
    let synced = match (args.full_sync, drained.unfinished) {
        (true, 0) => {
            if !args.output.quiet {
                eprintln!(
                    "Full sync: a truncated export (the first 40% of the rows) arrives as the whole staff list..."
                );
            }
            Some(
                full_sync::run(
                    &engine,
                    &text,
                    &input,
                    &users,
                    || tenant.users(),
                    args.time_scale,
                    settings,
                )
                .await?,
            )
        }
        _ => None,
    };
    if let Some(path) = &args.output.report {
        let mut report = input.report_lines();
        report.extend(drained.report);
        write_report(path, &report)?;
    }
    if args.output.json {
        let json = DemoJson {
            summary: &summary,
            tenant: tenant_json(&tenant, existing, stats),
            verification: &verification,
            nothing_lost: verification.ok(),
            run: &run,
            full_sync: synced.as_ref().map(|s| FullSyncJson {
                held: &s.held,
                approved: &s.completed,
                exactly_the_absent_users_deactivated: s.exact,
            }),
        };
        // A struct of strings and numbers always serializes.
        println!(
            "{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
    } else {
        print!("{}", summary.table());
        println!("{}", tenant_line(&stats));
        print!("{}", verdict(&verification, &input, &seeded));
        println!("\nThe run's summary, as the function writes it to reports/runs/<run_id>.json:");
        print!("{}", run.render());
        if let Some(synced) = &synced {
            print!("{}", full_sync_text(synced));
        }
    }
    tenant.shutdown().await;
    let synced_ok = synced.as_ref().is_none_or(|s| s.exact);
    Ok(if verification.ok() && synced_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn check(args: &DemoArgs) -> Result<(), UsageError> {
    if !(0.0..=1.0).contains(&args.error_rate) {
        return Err(UsageError("--error-rate must be between 0 and 1".into()));
    }
    if !(args.rate_limit.is_finite() && args.rate_limit >= 1.0) {
        return Err(UsageError(
            "--rate-limit must be at least 1 (requests per second)".into(),
        ));
    }
    if !(args.time_scale.is_finite() && args.time_scale >= 0.0) {
        return Err(UsageError("--time-scale must be 0 or more".into()));
    }
    Ok(())
}

fn tenant_config(args: &DemoArgs, token: &str) -> TenantConfig {
    TenantConfig {
        bearer_token: token.to_string(),
        max_operations: 50,
        max_payload_size: MAX_PAYLOAD,
        bulk_supported: true,
        requests_per_second: Some(args.rate_limit),
        faults: FaultProfile {
            unavailable: args.error_rate,
            ..FaultProfile::default()
        },
        quirks: Quirks {
            case_exact_user_names: args.case_sensitive,
            refused_patch: args.refuse_patch_form.map(|form| match form {
                PatchFormArg::Path => PatchForm::Path,
                PatchFormArg::Value => PatchForm::Value,
            }),
        },
        seed: args.seed,
    }
}

fn engine(args: &DemoArgs, tenant: &Tenant, token: &str) -> Result<Engine, UsageError> {
    let credentials = Credentials {
        base_url: tenant.base_url(),
        auth: Auth::Bearer {
            token: Secret::new(token),
        },
    };
    let config = EngineConfig {
        requests_per_minute: Some((args.rate_limit * 60.0 * OVERSEND).round() as u32),
        timeouts: Timeouts {
            request: REQUEST_TIMEOUT,
            connect: Duration::from_secs(1),
        },
        ..EngineConfig::default()
    };
    let engine = Engine::new(config, Arc::new(StaticCredentials(credentials)))
        .map_err(|e| UsageError(e.to_string()))?;
    // Seeded jitter: the same seed gives the same backoff delays. The ledger lives in memory:
    // the tenant is listed once, and matched, compared and ordered through it.
    Ok(engine
        .with_rng(StdRng::seed_from_u64(args.seed))
        .with_ledger(Arc::new(MemoryLedger::new())))
}

fn intro(args: &DemoArgs, tenant: &Tenant, input: &Input, existing: usize) -> String {
    format!(
        "Embedded SCIM tenant at {url}\n  \
         Bulk maxOperations 50, maxPayloadSize {payload} bytes; {rate} requests/s, then 429 + Retry-After; \
         {errors}% random 503; bearer token required\n  \
         {existing} users already exist in it\n\
         Provisioning {rows} rows of {source}: one bulk cycle at a time ({batch} operations at most, {cycle} s deadline), \
         failed and deferred operations re-queued with their jittered delay\n  \
         time scale {scale}: a 30 s backoff waits {scaled:.2} s",
        url = tenant.base_url(),
        payload = thousands(MAX_PAYLOAD as u64),
        rate = args.rate_limit,
        errors = args.error_rate * 100.0,
        rows = thousands(input.rows),
        source = input.source,
        batch = BATCH,
        cycle = CYCLE.as_secs(),
        scale = args.time_scale,
        scaled = 30.0 * args.time_scale,
    )
}

fn tenant_json(tenant: &Tenant, existing: usize, stats: TenantStats) -> TenantJson {
    TenantJson {
        base_url: tenant.base_url(),
        existing_users: existing,
        requests: stats.requests,
        throttled: stats.throttled,
        server_errors: stats.server_errors,
    }
}

fn tenant_line(stats: &TenantStats) -> String {
    format!(
        "The tenant saw {} requests: {} answered 429, {} answered 503, {} users created, {} updated.",
        thousands(stats.requests),
        thousands(stats.throttled),
        thousands(stats.server_errors),
        thousands(stats.created),
        thousands(stats.updated),
    )
}

/// The full-sync phase in words.
fn full_sync_text(synced: &full_sync::FullSync) -> String {
    let mut out = String::from(
        "\nFull sync: the truncated export would deactivate more users than MAX_DEACTIVATIONS (50) or \
         MAX_DEACTIVATION_PERCENT (10) allow, so the guard holds it: its creates and updates went, \
         no one was deactivated.\n",
    );
    out.push_str(&synced.held.render());
    out.push_str("Approved (as `scim-bulk-provisioner approve demo-truncated` would):\n");
    out.push_str(&synced.completed.render());
    out.push_str(&if synced.exact {
        format!(
            "Exactly the {} users absent from the truncated export (and its leavers) were deactivated; \
             users the tool never provisioned were not touched.\n",
            thousands(synced.deactivated as u64)
        )
    } else {
        format!(
            "PROBLEM: the guard did not hold the run, or the users deactivated ({}) are not exactly the absent ones.\n",
            synced.deactivated
        )
    });
    out
}

/// The last words: nothing lost, or exactly what is wrong.
fn verdict(verification: &Verification, input: &Input, seeded: &Seeded) -> String {
    const SHOWN: usize = 20;
    if verification.ok() {
        return format!(
            "Nothing lost: {} users checked\n  every active user exists once with the file's name, email and title; \
             the {} leavers who had an account are inactive, the others absent; \
             {} invalid and {} replaced rows reached nobody; {} users the file does not mention are untouched\n",
            thousands(verification.checked as u64),
            input.operations.iter().filter(|op| !op.user.active && seeded.existed(&op.user.key())).count(),
            input.invalid.len(),
            input.superseded.len(),
            seeded.bystanders.len(),
        );
    }
    let mut out = format!(
        "PROBLEMS: the tenant does not hold what the file asks for ({} problem(s), {} users checked):\n",
        verification.problems.len(),
        thousands(verification.checked as u64)
    );
    for problem in verification.problems.iter().take(SHOWN) {
        out.push_str(&format!("  {problem}\n"));
    }
    if verification.problems.len() > SHOWN {
        out.push_str(&format!(
            "  ... and {} more\n",
            verification.problems.len() - SHOWN
        ));
    }
    out
}
