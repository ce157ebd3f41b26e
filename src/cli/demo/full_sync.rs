//! The demo's runs: the summary the function writes for a run (`reports/runs/<run_id>.json`),
//! and with `--full-sync` a truncated export that the deactivation guard holds, then its
//! approval — the same census, guard and decisions as the function, in the terminal.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::super::input::{first_records, Input};
use super::super::progress::Progress;
use super::super::runner::{self, Drained, RunSettings};
use super::super::UsageError;
use crate::engine::Engine;
use crate::operation::OperationResult;
use crate::queue::memory::DelayQueue;
use crate::runs::census::Census;
use crate::runs::guard::{self, GuardLimits};
use crate::runs::plan::{absent_operation, deactivations};
use crate::runs::summary::RunSummary;
use crate::runs::{RowId, RowOutcome, RunPlan, RunRecord, RunStatus, SyncMode, Tally};

/// Share of the sample's rows the truncated export keeps.
const TRUNCATED_PERCENT: usize = 40;

/// The settled outcomes of a file's rows: invalid and replaced rows, and each result.
fn settled(input: &Input, results: &[OperationResult]) -> Vec<(String, RowOutcome)> {
    let mut rows: Vec<(String, RowOutcome)> = input
        .invalid
        .iter()
        .map(|r| (RowId::Line(r.line).encode(), RowOutcome::Invalid))
        .chain(
            input
                .superseded
                .iter()
                .map(|r| (RowId::Line(r.line).encode(), RowOutcome::Duplicate)),
        )
        .collect();
    for result in results {
        if let Some(outcome) = RowOutcome::of(&result.outcome) {
            let id = match result.operation.row {
                Some(line) => RowId::Line(line),
                None => RowId::Absent(result.operation.user.key()),
            };
            rows.push((id.encode(), outcome));
        }
    }
    rows
}

fn tally(rows: &[(String, RowOutcome)]) -> Tally {
    Tally::count(rows.iter().map(|(id, o)| (id.as_str(), *o)))
}

/// The run summary of a demo upload, as the function would write it.
pub fn upload_summary(
    input: &Input,
    drained: &Drained,
    started_at: u64,
    requests: u64,
) -> RunSummary {
    let plan = RunPlan {
        run_id: "demo-upload".into(),
        source: input.source.clone(),
        started_at,
        rows: input.rows,
        ..RunPlan::default()
    };
    let mut record = RunRecord::new(plan, false, 0);
    record.status = RunStatus::Completed;
    record.finished_at = Some(crate::operation::unix_millis());
    record.requests = requests;
    RunSummary::of(&record, &tally(&settled(input, &drained.results)))
}

/// What the full-sync phase found.
pub struct FullSync {
    /// The held run's summary, then the completed one after approval.
    pub held: RunSummary,
    pub completed: RunSummary,
    /// Whether the tenant's inactive users are exactly the absent ones (plus the file's
    /// leavers), and bystanders untouched.
    pub exact: bool,
    /// Users deactivated by the approval.
    pub deactivated: usize,
}

/// Folded userNames of the tenant's inactive users.
fn inactive(users: &[Value]) -> BTreeSet<String> {
    users
        .iter()
        .filter(|u| u["active"] == false)
        .filter_map(|u| u["userName"].as_str().map(str::to_lowercase))
        .collect()
}

/// A truncated export (the first 40% of `text`'s rows) in full-sync mode: the guard holds it,
/// its creates and updates go, nothing is deactivated; then it is approved and exactly the
/// managed users absent from it are deactivated.
pub async fn run(
    engine: &Engine,
    text: &str,
    input: &Input,
    users_before: &[Value],
    users_after: impl Fn() -> Vec<Value>,
    time_scale: f64,
    settings: RunSettings,
) -> Result<FullSync, UsageError> {
    let kept = (input.rows as usize * TRUNCATED_PERCENT / 100).max(1);
    let truncated = first_records(text, kept, input.delimiter);
    let source = format!("{} (first {kept} rows)", input.source);
    let census = Census::of(truncated.as_bytes()).map_err(|e| UsageError(e.to_string()))?;
    let cut = Input::read(truncated.as_bytes(), &source).map_err(|e| UsageError(e.to_string()))?;
    let known = engine
        .known_users(Instant::now() + Duration::from_secs(60))
        .await
        .map_err(|e| UsageError(e.to_string()))?;
    let planned = deactivations(&census, &known, SyncMode::Full);
    let limits = GuardLimits::default();
    let held = limits.holds(planned.count(), planned.known, census.named());
    let plan = RunPlan {
        run_id: "demo-truncated".into(),
        source: source.clone(),
        mode: SyncMode::Full,
        started_at: crate::operation::unix_millis(),
        rows: cut.rows,
        parked: if held {
            cut.operations.iter().filter(|op| !op.user.active).count() as u64
        } else {
            0
        },
        deactivations: planned.count(),
        sample: guard::sample(planned.user_names()),
        ..RunPlan::default()
    };
    let mut record = RunRecord::new(plan, held, planned.absent.len() as u64);
    let inactive_before = inactive(users_before);

    // Creates and updates go; a held run's deactivations wait.
    let queue = DelayQueue::new(time_scale);
    let (sent, parked): (Vec<_>, Vec<_>) = cut
        .operations
        .iter()
        .cloned()
        .partition(|op| op.user.active || !held);
    for op in sent {
        queue.push(op, Duration::ZERO);
    }
    let quiet = Progress::new(0, true);
    let first = runner::drain(engine, &queue, settings, &quiet, 0)
        .await
        .map_err(|e| UsageError(e.to_string()))?;
    let mut rows = settled(&cut, &first.results);
    record.requests = first.counts.requests;
    let held_summary = RunSummary::of(&record, &tally(&rows));
    let unchanged_while_held = inactive(&users_after()) == inactive_before;

    // Approved: the leaver rows and the absent users go.
    record.status = RunStatus::Approved;
    record.absent = planned.absent.len() as u64;
    for op in parked {
        queue.push(op, Duration::ZERO);
    }
    for (_, name) in &planned.absent {
        queue.push(
            absent_operation("demo-truncated", &source, name, None),
            Duration::ZERO,
        );
    }
    let second = runner::drain(engine, &queue, settings, &quiet, 0)
        .await
        .map_err(|e| UsageError(e.to_string()))?;
    rows.extend(settled(&cut, &second.results));
    record.status = RunStatus::Completed;
    record.finished_at = Some(crate::operation::unix_millis());
    record.requests += second.counts.requests;
    let completed = RunSummary::of(&record, &tally(&rows));

    let after = users_after();
    let newly: BTreeSet<String> = inactive(&after)
        .difference(&inactive_before)
        .cloned()
        .collect();
    let expected: BTreeSet<String> = planned
        .absent
        .iter()
        .map(|(key, _)| key.clone())
        .chain(planned.leavers.iter().map(|n| n.to_lowercase()))
        .collect();
    Ok(FullSync {
        held: held_summary,
        completed,
        exact: held && unchanged_while_held && newly == expected,
        deactivated: newly.len(),
    })
}
