//! `status` and `approve`: a run's progress and outcome from the ledger table, and the approval
//! of a held run (put on the bus as the event the function acts on).

use std::process::ExitCode;

use serde_json::json;

use super::{ApproveArgs, StatusArgs, UsageError};
use crate::aws::events::EventBus;
use crate::runs::dynamodb::DynamoRuns;
use crate::runs::summary::{RunSummary, EVENT_SOURCE};
use crate::runs::{valid_run_id, RunStatus, RunStore};

/// `detail-type` of the approval event.
pub const APPROVE_EVENT: &str = "Approve Provisioning Run";
/// Runs `status` lists without a run id.
const RECENT: usize = 10;

async fn store(table: &str) -> DynamoRuns {
    let sdk = crate::aws::sdk_config().await;
    DynamoRuns::new(aws_sdk_dynamodb::Client::new(&sdk), table)
}

fn check_id(run_id: &str) -> Result<(), UsageError> {
    if valid_run_id(run_id) {
        Ok(())
    } else {
        Err(UsageError(format!(
            "{run_id:?} is not a run id (letters, digits, '-', '_', '.')"
        )))
    }
}

/// The summary of `run_id` as the table has it now.
async fn summary(store: &DynamoRuns, run_id: &str) -> Result<RunSummary, UsageError> {
    let record = store
        .get(run_id)
        .await
        .map_err(|e| UsageError(e.to_string()))?
        .ok_or_else(|| UsageError(format!("no run {run_id} is recorded in the table")))?;
    let tally = store
        .tally(run_id)
        .await
        .map_err(|e| UsageError(e.to_string()))?;
    Ok(RunSummary::of(&record, &tally))
}

/// Runs `status`: one run's summary, or the most recent runs; exit 0.
pub async fn status(args: StatusArgs) -> Result<ExitCode, UsageError> {
    let store = store(&args.table).await;
    let summaries = match &args.run_id {
        Some(run_id) => {
            check_id(run_id)?;
            vec![summary(&store, run_id).await?]
        }
        None => {
            let mut all = Vec::new();
            for record in store
                .recent(RECENT)
                .await
                .map_err(|e| UsageError(e.to_string()))?
            {
                all.push(summary(&store, &record.plan.run_id).await?);
            }
            all
        }
    };
    if args.json {
        let value = match (&args.run_id, summaries.as_slice()) {
            (Some(_), [one]) => json!(one),
            _ => json!(summaries),
        };
        println!("{value:#}");
    } else if summaries.is_empty() {
        println!("No run is recorded in {}.", args.table);
    } else {
        for summary in &summaries {
            print!("{}", summary.render());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `approve`: puts `{"approve_run": RUN_ID}` on the bus (after checking, with `--table`,
/// that the run is held); exit 0 when the event was put.
pub async fn approve(args: ApproveArgs) -> Result<ExitCode, UsageError> {
    check_id(&args.run_id)?;
    if let Some(table) = &args.table {
        let summary = summary(&store(table).await, &args.run_id).await?;
        if summary.status != RunStatus::Held.name() {
            return Err(UsageError(format!(
                "run {} is {}, not held: there is nothing to approve",
                args.run_id, summary.status
            )));
        }
        print!("{}", summary.render());
    }
    let sdk = crate::aws::sdk_config().await;
    let bus = EventBus::new(aws_sdk_eventbridge::Client::new(&sdk), args.bus.clone());
    bus.put(
        EVENT_SOURCE,
        APPROVE_EVENT,
        &json!({"approve_run": args.run_id}),
    )
    .await
    .map_err(|e| UsageError(e.to_string()))?;
    println!(
        "Approval of {} put on the event bus {}: the function sends the held deactivations, then the run completes (see `status {}`).",
        args.run_id, args.bus, args.run_id
    );
    Ok(ExitCode::SUCCESS)
}
