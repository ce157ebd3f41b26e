//! `provision`: a CSV file into a real SCIM service, in real time, until nothing is left to do.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::credentials::{credential_source, CredentialOptions};
use super::input::{open_file, FileCounts, Findings, Pending};
use super::progress::Progress;
use super::runner::{self, RunSettings};
use super::summary::RunSummary;
use super::{dry_run, write_report, ProvisionArgs, UpdateMethodArg, UsageError};
use crate::engine::{Engine, EngineConfig, UpdateMethod};
use crate::ledger::memory::MemoryLedger;
use crate::queue::memory::DelayQueue;
use crate::retry::RetryPolicy;
use crate::scim::credentials::CredentialSource;
use crate::scim::discovery::ProviderLimits;
use crate::scim::http::Timeouts;
use crate::sources::check::{check_file, FileCheck, Parallel};

/// Longest a single request may take; shorter when the cycle is short, so requests still fit.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs `provision` (or its dry run). The file is streamed: checked in one pass (counts,
/// invalid rows, the last row of each userName), then its operations are read as the run
/// takes them, a window at a time.
pub async fn run(args: ProvisionArgs) -> Result<ExitCode, UsageError> {
    let credentials = credential_source(&CredentialOptions::of(&args.credentials)).await?;
    let name = args.csv.display().to_string();
    let check = check(&args.csv, &name).await?;
    let counts = FileCounts::of_check(&check);
    // The file's time orders its operations against those of other files (with --ledger).
    let written = modified_millis(&args.csv);
    let cycle = cycle_length(args.cycle_seconds)?;
    let ledger = Arc::new(match &args.ledger {
        Some(path) => MemoryLedger::open(path).map_err(|e| UsageError(e.to_string()))?,
        None => MemoryLedger::for_one_run(),
    });
    let engine = engine(&args, cycle, credentials)?.with_ledger(ledger.clone());
    let limits = preflight(&engine).await?;
    let mut findings = Findings::default();
    let mut pending = Pending::open(&args.csv, &name, check.last, written, &mut findings)?;
    if args.dry_run {
        let plan = dry_run::plan(&engine, &counts, &mut pending, limits).await;
        let unread = pending.finish().await;
        let plan = plan?;
        if let Some(error) = unread {
            return Err(UsageError(format!("{name}: {error}")));
        }
        return dry_run::print(&plan, &name, &args, &findings.into_lines());
    }

    let started = Instant::now();
    let queue = DelayQueue::new(1.0);
    let progress = Progress::new(counts.rows, args.output.quiet);
    let settings = RunSettings {
        batch: args.batch.max(1),
        cycle,
    };
    let pre_settled = counts.invalid + counts.superseded;
    let drained = runner::drain_fed(
        &engine,
        &queue,
        settings,
        &progress,
        pre_settled,
        &mut pending,
        false,
    )
    .await;
    progress.finish();
    // The rest of the file is read for its report lines whatever happened.
    let unread = pending.finish().await;
    // A run that stopped midway still reports everything known, and why it stopped.
    let (drained, stopped) = match drained {
        Ok(drained) => (drained, None),
        Err(stopped) => (*stopped.drained, Some(stopped.error.to_string())),
    };
    let stopped =
        stopped.or_else(|| unread.map(|e| format!("{name} could not be read to its end: {e}")));

    ledger.save().map_err(|e| UsageError(e.to_string()))?;
    let summary =
        RunSummary::of_file(&counts, &drained, started.elapsed()).with_stop(stopped.as_deref());
    let mut report = findings.into_lines();
    report.extend(drained.report);
    report.extend(summary.stop_line(&name));
    if let Some(path) = &args.output.report {
        write_report(path, &report)?;
    }
    if args.output.json {
        // A struct of strings and numbers always serializes.
        println!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        );
    } else {
        print!("{}", summary.table());
        match (&args.output.report, report.is_empty()) {
            (Some(path), _) => println!("Report: {} line(s) in {}", report.len(), path.display()),
            (None, false) => println!("Add --report FILE to get every skipped, failed or invalid row with its line and reason."),
            (None, true) => {}
        }
    }
    if let Some(why) = stopped {
        let known = match &args.output.report {
            Some(path) => format!("; what was done until then is in {}", path.display()),
            None => String::new(),
        };
        return Err(UsageError(format!("{why}{known}")));
    }
    Ok(if summary.all_done() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The first pass over the file, on blocking threads: a file that cannot be used is a usage
/// error, as before anything is sent.
async fn check(path: &std::path::Path, name: &str) -> Result<FileCheck, UsageError> {
    let file = open_file(path)?;
    let checked = tokio::task::spawn_blocking(move || check_file(file, Parallel::default()))
        .await
        .map_err(|e| UsageError(format!("{name}: the file could not be checked: {e}")))?;
    checked.map_err(|e| UsageError(format!("{name}: {e}")))
}

/// When a file was last written, in ms since the Unix epoch.
fn modified_millis(path: &std::path::Path) -> Option<u64> {
    let modified = std::fs::metadata(path).ok()?.modified().ok()?;
    let since = modified.duration_since(std::time::UNIX_EPOCH).ok()?;
    u64::try_from(since.as_millis()).ok()
}

/// The cycle deadline, which must leave room for a request (the engine's admission minimum).
fn cycle_length(seconds: u64) -> Result<Duration, UsageError> {
    let least = crate::engine::MIN_WINDOW.as_secs();
    if seconds < least {
        return Err(UsageError(format!(
            "--cycle-seconds must be at least {least}: a request is started only with that long left"
        )));
    }
    Ok(Duration::from_secs(seconds))
}

fn engine(
    args: &ProvisionArgs,
    cycle: Duration,
    credentials: Arc<dyn CredentialSource>,
) -> Result<Engine, UsageError> {
    if args.max_attempts == 0 {
        return Err(UsageError("--max-attempts must be at least 1".into()));
    }
    let config = EngineConfig {
        update_method: match args.update_method {
            UpdateMethodArg::Put => UpdateMethod::Put,
            UpdateMethodArg::Patch => UpdateMethod::Patch,
        },
        create_inactive: args.create_inactive,
        retry: RetryPolicy {
            max_attempts: args.max_attempts,
            ..RetryPolicy::default()
        },
        concurrency: args.concurrency.max(1),
        requests_per_minute: args.requests_per_minute.filter(|n| *n > 0),
        // The engine sends nothing that could end after the cycle's deadline.
        timeouts: Timeouts {
            request: REQUEST_TIMEOUT.min(cycle / 2),
            ..Timeouts::default()
        },
        ..EngineConfig::default()
    };
    Engine::new(config, credentials).map_err(|e| UsageError(e.to_string()))
}

/// Discovers the service's limits before any work, trying three times: a service that cannot
/// answer this cannot be provisioned, and failing early beats retrying every row for minutes.
pub async fn preflight(engine: &Engine) -> Result<ProviderLimits, UsageError> {
    let mut last = String::new();
    for wait in [1, 2, 0] {
        match engine.discover().await {
            Ok(limits) => return Ok(limits),
            Err(reason) => last = reason,
        }
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
    let hint = if last.contains("401") {
        " (the credentials were refused: check the token, client or access key)"
    } else {
        ""
    };
    Err(UsageError(format!(
        "cannot use the SCIM service: {last}{hint}"
    )))
}
