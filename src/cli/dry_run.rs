//! `provision --dry-run`: what a run would do, as the engine decides it (the tenant listed into
//! the ledger, leavers it does not know looked up); sends only reads.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use super::format::{thousands, Reason};
use super::input::FileCounts;
use super::runner::Feed;
use super::{write_report, ProvisionArgs, UsageError};
use crate::engine::decide::{Decision, NOTHING_TO_DEACTIVATE, SUPERSEDED};
use crate::engine::{Engine, LookupError};
use crate::mask::mask_emails_in;
use crate::operation::Operation;
use crate::report::ReportLine;
use crate::scim::discovery::ProviderLimits;

/// How long the plan's reads (the tenant's listing included) may take.
const PLAN_HORIZON: Duration = Duration::from_secs(3600);

/// Attempts per lookup when the service throttles or fails transiently.
const LOOKUP_ATTEMPTS: u32 = 4;

/// What a run would do, in counts.
#[derive(Debug, Default, Serialize)]
pub struct Plan {
    dry_run: bool,
    rows: u64,
    bulk: bool,
    max_operations: usize,
    max_payload_size: usize,
    create: u64,
    update: u64,
    unchanged: u64,
    deactivate: u64,
    skip: u64,
    invalid: u64,
    /// Users whose lookup failed: the plan cannot say what would happen to them.
    unknown: u64,
    skips: Vec<Reason>,
    invalid_rows: Vec<Reason>,
    unknown_reasons: Vec<Reason>,
}

/// Operations planned together: the engine decides a window at a time (the tenant is listed
/// once, on the first), so a large file is never all in memory.
const PLAN_WINDOW: usize = 5_000;

/// Looks every user of the file up, a window of its operations at a time, and says what a run
/// would do.
pub async fn plan(
    engine: &Engine,
    file: &FileCounts,
    feed: &mut impl Feed,
    limits: ProviderLimits,
) -> Result<Plan, UsageError> {
    // The engine's own decisions; only users it would have to look up are looked up here.
    let deadline = std::time::Instant::now() + PLAN_HORIZON;
    let concurrency = engine.config().concurrency.max(1);
    let mut plan = Plan {
        dry_run: true,
        rows: file.rows,
        bulk: limits.bulk,
        max_operations: limits.max_operations,
        max_payload_size: limits.max_payload_size,
        invalid: file.invalid,
        skip: file.superseded,
        invalid_rows: file.invalid_kinds.clone(),
        ..Plan::default()
    };
    let mut skips: BTreeMap<String, u64> = BTreeMap::new();
    if file.superseded > 0 {
        skips.insert(
            "superseded by a later row for the same userName".into(),
            file.superseded,
        );
    }
    let mut unknown: BTreeMap<String, u64> = BTreeMap::new();
    let mut window = Vec::with_capacity(PLAN_WINDOW);
    loop {
        window.clear();
        while window.len() < PLAN_WINDOW {
            match feed.next_operation().await {
                Some(op) => window.push(op),
                None => break,
            }
        }
        if window.is_empty() {
            break;
        }
        let decisions = engine
            .plan(&window, deadline)
            .await
            .map_err(|e| UsageError(format!("cannot plan the run: {e}")))?;
        let found: Vec<Option<Result<Option<String>, LookupError>>> =
            stream::iter(window.iter().zip(&decisions))
                .map(|(op, decision)| async move {
                    match decision {
                        Decision::Find => Some(lookup(engine, op).await),
                        _ => None,
                    }
                })
                .buffered(concurrency)
                .collect()
                .await;
        for (decision, found) in decisions.iter().zip(found) {
            let mut skip = |reason: String| {
                plan.skip += 1;
                *skips.entry(reason).or_default() += 1;
            };
            match (decision, found) {
                (Decision::Create, _) => plan.create += 1,
                (Decision::Update { .. }, _) => plan.update += 1,
                (Decision::Deactivate { .. }, _) => plan.deactivate += 1,
                (Decision::Unchanged { .. }, _) => plan.unchanged += 1,
                (Decision::Skip(reason), _) => skip(reason.to_string()),
                (Decision::Wait { .. }, _) => plan.unknown += 1,
                (Decision::Superseded, _) => skip(SUPERSEDED.to_string()),
                (Decision::Find, Some(Ok(Some(_)))) => plan.deactivate += 1,
                (Decision::Find, Some(Ok(None)) | None) => skip(NOTHING_TO_DEACTIVATE.to_string()),
                (Decision::Find, Some(Err(e))) => {
                    plan.unknown += 1;
                    *unknown.entry(mask_emails_in(&e.reason)).or_default() += 1;
                }
            }
        }
    }
    plan.skips = grouped(skips);
    plan.unknown_reasons = grouped(unknown);
    Ok(plan)
}

/// Counted reasons, most frequent first (then alphabetically), as `format::group` orders them.
fn grouped(counts: BTreeMap<String, u64>) -> Vec<Reason> {
    let mut grouped: Vec<Reason> = counts
        .into_iter()
        .map(|(reason, count)| Reason { reason, count })
        .collect();
    grouped.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
    grouped
}

/// Writes the report (the file's invalid and superseded rows) and prints the plan; exit 1 if
/// rows are invalid or lookups failed.
pub fn print(
    plan: &Plan,
    source: &str,
    args: &ProvisionArgs,
    report: &[ReportLine],
) -> Result<ExitCode, UsageError> {
    if let Some(path) = &args.output.report {
        write_report(path, report)?;
    }
    if args.output.json {
        // A struct of strings and numbers always serializes.
        println!("{}", serde_json::to_string_pretty(plan).unwrap_or_default());
    } else {
        print!("{}", text(plan, source));
    }
    let clean = plan.invalid == 0 && plan.unknown == 0;
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One lookup, retried while the service throttles or fails transiently.
async fn lookup(engine: &Engine, op: &Operation) -> Result<Option<String>, LookupError> {
    let mut attempt = 0;
    loop {
        match engine.lookup_user(&op.user.user_name).await {
            Err(e) if e.retryable && attempt + 1 < LOOKUP_ATTEMPTS => {
                let backoff = Duration::from_secs(1 << attempt);
                tokio::time::sleep(e.retry_after.unwrap_or(backoff).max(backoff)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn text(plan: &Plan, source: &str) -> String {
    let mut out = String::from("Dry run: nothing was changed.\n");
    out.push_str(&if plan.bulk {
        format!(
            "Service: Bulk supported, up to {} operations and {} bytes per request\n",
            plan.max_operations,
            thousands(plan.max_payload_size as u64)
        )
    } else {
        "Service: no Bulk support; one request per user\n".into()
    });
    out.push_str(&format!(
        "Plan for {} rows of {source}:\n",
        thousands(plan.rows)
    ));
    for (label, n) in [
        ("create", plan.create),
        ("update", plan.update),
        ("unchanged", plan.unchanged),
        ("deactivate", plan.deactivate),
        ("skip", plan.skip),
        ("invalid", plan.invalid),
        ("cannot tell", plan.unknown),
    ] {
        out.push_str(&format!("  {label:<13}{:>9}\n", thousands(n)));
    }
    for (title, reasons) in [
        ("Skipped, by reason", &plan.skips),
        ("Invalid rows, by reason", &plan.invalid_rows),
        ("Lookups that failed, by reason", &plan.unknown_reasons),
    ] {
        if !reasons.is_empty() {
            out.push_str(&format!("{title}:\n"));
            for r in reasons {
                out.push_str(&format!("  {:>7}  {}\n", thousands(r.count), r.reason));
            }
        }
    }
    out
}
