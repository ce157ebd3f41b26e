//! Runs: each S3 upload or EventBridge rerun of a file, followed until every row has settled —
//! whichever invocation settles it, through however many retries — then summed up once.
//!
//! The port is [`RunStore`] ([`memory::MemoryRuns`] for the CLI and tests, [`dynamodb::DynamoRuns`]
//! in the ledger's table for the Lambda function). A row is settled idempotently (settling it again,
//! after a crash or a redelivered event, changes nothing); [`tally`] reads the outcomes back.

pub mod census;
pub mod dynamodb;
pub mod guard;
pub mod memory;
pub mod plan;
pub mod summary;

use std::collections::{BTreeMap, HashMap};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::operation::Outcome;

/// The final outcome of one row of a file (or of one absent user in a full sync). When a row
/// is settled twice with different outcomes (a redelivered event ran it again), the earlier
/// variant wins: what was done to the tenant outranks "nothing left to do".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowOutcome {
    /// The user was created.
    Created,
    /// The user was updated.
    Updated,
    /// The user was deactivated.
    Deactivated,
    /// The user already held the row's values.
    Unchanged,
    /// Nothing was sent, with a reason in the report.
    Skipped,
    /// Failed for good, with a reason in the report.
    Failed,
    /// A later row of the file names the same user.
    Duplicate,
    /// The row is not valid.
    Invalid,
}

impl RowOutcome {
    /// Every outcome, in precedence order.
    pub const ALL: [RowOutcome; 8] = [
        RowOutcome::Created,
        RowOutcome::Updated,
        RowOutcome::Deactivated,
        RowOutcome::Unchanged,
        RowOutcome::Skipped,
        RowOutcome::Failed,
        RowOutcome::Duplicate,
        RowOutcome::Invalid,
    ];

    /// The name used in stores and summaries.
    pub fn name(self) -> &'static str {
        match self {
            RowOutcome::Created => "created",
            RowOutcome::Updated => "updated",
            RowOutcome::Deactivated => "deactivated",
            RowOutcome::Unchanged => "unchanged",
            RowOutcome::Skipped => "skipped",
            RowOutcome::Failed => "failed",
            RowOutcome::Duplicate => "duplicate",
            RowOutcome::Invalid => "invalid",
        }
    }

    /// The outcome named `name`.
    pub fn from_name(name: &str) -> Option<RowOutcome> {
        RowOutcome::ALL.into_iter().find(|o| o.name() == name)
    }

    /// The row outcome of an operation's outcome; None while it is still to be retried.
    pub fn of(outcome: &Outcome) -> Option<RowOutcome> {
        Some(match outcome {
            Outcome::Created { .. } => RowOutcome::Created,
            Outcome::Updated { .. } => RowOutcome::Updated,
            Outcome::Unchanged { .. } => RowOutcome::Unchanged,
            Outcome::Deactivated { .. } => RowOutcome::Deactivated,
            Outcome::Skipped { .. } => RowOutcome::Skipped,
            Outcome::Failed { .. } => RowOutcome::Failed,
            Outcome::Retry { .. } | Outcome::Deferred { .. } => return None,
        })
    }
}

/// What a settled outcome belongs to: a row of the file (its line) or a user absent from it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RowId {
    /// A row of the file, by the line its record starts on.
    Line(u64),
    /// A managed user absent from the file (full sync), by its folded userName.
    Absent(String),
}

impl RowId {
    /// The id as stored: `l<line>` or `a<key>`.
    pub fn encode(&self) -> String {
        match self {
            RowId::Line(line) => format!("l{line}"),
            RowId::Absent(key) => format!("a{key}"),
        }
    }

    /// The id [`RowId::encode`] wrote.
    pub fn decode(text: &str) -> Option<RowId> {
        match text.split_at_checked(1)? {
            ("l", line) => line.parse().ok().map(RowId::Line),
            ("a", key) => Some(RowId::Absent(key.to_string())),
            _ => None,
        }
    }

    /// The group of rows stored together (one store item per group): a thousand lines, or one of
    /// sixteen buckets of absent users.
    pub fn group(&self) -> String {
        match self {
            RowId::Line(line) => format!("l{}", line / 1000),
            RowId::Absent(key) => {
                let hash = key
                    .bytes()
                    .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
                format!("a{}", hash % 16)
            }
        }
    }
}

/// Longest run id accepted from a message or an event.
pub const MAX_RUN_ID_CHARS: usize = 100;

/// Whether `text` can be a run id (ids come back in messages anyone allowed to send to the
/// queue may write, and name S3 objects).
pub fn valid_run_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= MAX_RUN_ID_CHARS
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !text.starts_with('.')
}

/// Whether a file is the whole staff list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// Users absent from the file are left alone.
    #[default]
    Upsert,
    /// Managed users absent from the file are deactivated.
    Full,
}

impl SyncMode {
    /// The mode named `upsert` or `full` (any case).
    pub fn parse(text: &str) -> Option<SyncMode> {
        match text.trim().to_ascii_lowercase().as_str() {
            "upsert" => Some(SyncMode::Upsert),
            "full" => Some(SyncMode::Full),
            _ => None,
        }
    }
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Rows are being provisioned.
    Running,
    /// The guard holds its deactivations until approved; the rest goes on.
    Held,
    /// Approved after being held: its deactivations are being sent.
    Approved,
    /// Every row settled; the summary was written.
    Completed,
    /// Held, then overtaken by a newer run of the same source: never applied.
    Superseded,
}

impl RunStatus {
    /// The name used in stores and summaries.
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Held => "held",
            RunStatus::Approved => "approved",
            RunStatus::Completed => "completed",
            RunStatus::Superseded => "superseded",
        }
    }

    /// The status named `name`.
    pub fn from_name(name: &str) -> Option<RunStatus> {
        [
            RunStatus::Running,
            RunStatus::Held,
            RunStatus::Approved,
            RunStatus::Completed,
            RunStatus::Superseded,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

/// What is fixed when a run starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct RunPlan {
    /// The run's id.
    pub run_id: String,
    /// `s3://bucket/key`.
    pub source: String,
    /// The object's bucket.
    pub bucket: String,
    /// The object's key.
    pub key: String,
    /// The object version read, if the bucket is versioned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// The object's ETag, so that a held run's approval reads the same content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Upsert or full sync.
    pub mode: SyncMode,
    /// When the run started (ms since the Unix epoch).
    pub started_at: u64,
    /// Rows (records) in the file.
    pub rows: u64,
    /// Rows whose deactivation the guard holds (0 unless held).
    pub parked: u64,
    /// Deactivations the run would send (leavers the tenant has active, plus absent users).
    pub deactivations: u64,
    /// A masked sample of the users it would deactivate.
    #[serde(default)]
    pub sample: Vec<String>,
}

/// A run as stored: its plan and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// What was fixed when it started.
    pub plan: RunPlan,
    /// Where it stands.
    pub status: RunStatus,
    /// Absent users to deactivate (full sync; 0 while held).
    pub absent: u64,
    /// SCIM requests made for it.
    pub requests: u64,
    /// Report objects holding its lines.
    pub reports: Vec<String>,
    /// When it completed (ms since the Unix epoch).
    pub finished_at: Option<u64>,
    /// Whether its `held` summary was written.
    pub held_reported: bool,
}

impl RunRecord {
    /// A new run, running or held.
    pub fn new(plan: RunPlan, held: bool, absent: u64) -> Self {
        Self {
            plan,
            status: if held {
                RunStatus::Held
            } else {
                RunStatus::Running
            },
            absent: if held { 0 } else { absent },
            requests: 0,
            reports: Vec::new(),
            finished_at: None,
            held_reported: false,
        }
    }
}

/// Settled outcomes counted, each row once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// The file's rows, by outcome.
    pub rows: BTreeMap<RowOutcome, u64>,
    /// Absent users (full sync), by outcome.
    pub absent: BTreeMap<RowOutcome, u64>,
}

impl Tally {
    /// Counts settled ids, a row settled under several outcomes counting once, under the
    /// outcome of highest precedence.
    pub fn count<'a>(settled: impl IntoIterator<Item = (&'a str, RowOutcome)>) -> Tally {
        let mut best: HashMap<&str, RowOutcome> = HashMap::new();
        for (id, outcome) in settled {
            best.entry(id)
                .and_modify(|o| *o = (*o).min(outcome))
                .or_insert(outcome);
        }
        let mut tally = Tally::default();
        for (id, outcome) in best {
            let counts = if id.starts_with('a') {
                &mut tally.absent
            } else {
                &mut tally.rows
            };
            *counts.entry(outcome).or_default() += 1;
        }
        tally
    }

    /// File rows settled.
    pub fn rows_settled(&self) -> u64 {
        self.rows.values().sum()
    }

    /// Absent users settled.
    pub fn absent_settled(&self) -> u64 {
        self.absent.values().sum()
    }

    /// File rows with this outcome.
    pub fn rows_with(&self, outcome: RowOutcome) -> u64 {
        self.rows.get(&outcome).copied().unwrap_or(0)
    }
}

/// The summary a run has become due for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Everything but the held deactivations settled: the `held` summary.
    Held,
    /// Everything settled: the final summary.
    Completed,
}

impl Step {
    fn name(self) -> &'static str {
        match self {
            Step::Held => "held",
            Step::Completed => "completed",
        }
    }
}

/// Which summary, if any, a run is due for, given its record and tally.
pub fn due(record: &RunRecord, tally: &Tally) -> Option<Step> {
    let plan = &record.plan;
    match record.status {
        RunStatus::Held if !record.held_reported => {
            (tally.rows_settled() >= plan.rows.saturating_sub(plan.parked)).then_some(Step::Held)
        }
        RunStatus::Running | RunStatus::Approved => (tally.rows_settled() >= plan.rows
            && tally.absent_settled() >= record.absent)
            .then_some(Step::Completed),
        _ => None,
    }
}

/// Why the run store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The store answered with an error or could not be reached.
    #[error("the run store ({store}) could not be {action}: {reason}")]
    Store {
        /// Which store.
        store: String,
        /// What was being done.
        action: &'static str,
        /// What went wrong.
        reason: String,
    },
}

/// Where runs are kept.
pub trait RunStore: Send + Sync {
    /// Records a new run; if the run was started before (the same event again), returns the
    /// record kept then instead, unchanged.
    fn start<'a>(&'a self, record: &'a RunRecord) -> BoxFuture<'a, Result<RunRecord, RunError>>;

    /// The run, if known.
    fn get<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<Option<RunRecord>, RunError>>;

    /// The most recently started runs, newest first.
    fn recent(&self, limit: usize) -> BoxFuture<'_, Result<Vec<RunRecord>, RunError>>;

    /// Makes `run_id` the latest run of `source`; returns the run that was the latest before,
    /// if another.
    fn replace_latest<'a>(
        &'a self,
        source: &'a str,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, RunError>>;

    /// Records outcomes; settling a row again adds nothing.
    fn settle<'a>(
        &'a self,
        run_id: &'a str,
        rows: &'a [(RowId, RowOutcome)],
    ) -> BoxFuture<'a, Result<(), RunError>>;

    /// Adds requests made for the run and the report object that holds some of its lines.
    fn add_usage<'a>(
        &'a self,
        run_id: &'a str,
        requests: u64,
        report: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), RunError>>;

    /// Every settled outcome, counted.
    fn tally<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<Tally, RunError>>;

    /// Moves the run from `from` to `to` (and, when given, sets its absent-user count);
    /// false if it was not in `from`.
    fn transition<'a>(
        &'a self,
        run_id: &'a str,
        from: RunStatus,
        to: RunStatus,
        absent: Option<u64>,
    ) -> BoxFuture<'a, Result<bool, RunError>>;

    /// Takes the writing of a step's summary until `until` (ms): false if it was written, or
    /// another invocation holds it now (`now`, ms).
    fn lease<'a>(
        &'a self,
        run_id: &'a str,
        step: Step,
        now: u64,
        until: u64,
    ) -> BoxFuture<'a, Result<bool, RunError>>;

    /// Gives a lease back (writing the summary failed): the next settling may take it at once.
    fn release<'a>(&'a self, run_id: &'a str, step: Step) -> BoxFuture<'a, Result<(), RunError>>;

    /// Marks a step's summary written (for [`Step::Completed`], the run completed at `at`).
    fn done<'a>(
        &'a self,
        run_id: &'a str,
        step: Step,
        at: u64,
    ) -> BoxFuture<'a, Result<(), RunError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_ids_round_trip_and_group() {
        for id in [
            RowId::Line(2),
            RowId::Line(123_456),
            RowId::Absent("ada@x".into()),
        ] {
            assert_eq!(RowId::decode(&id.encode()), Some(id.clone()));
        }
        assert_eq!(RowId::Line(999).group(), "l0");
        assert_eq!(RowId::Line(1000).group(), "l1");
        assert!(RowId::Absent("ada@x".into()).group().starts_with('a'));
        assert_eq!(RowId::decode("x1"), None);
        assert_eq!(RowId::decode("lnope"), None);
    }

    #[test]
    fn a_row_settled_twice_counts_once_under_the_stronger_outcome() {
        let tally = Tally::count([
            ("l2", RowOutcome::Unchanged),
            ("l2", RowOutcome::Created),
            ("l3", RowOutcome::Invalid),
            ("ab@x", RowOutcome::Deactivated),
        ]);
        assert_eq!(tally.rows_with(RowOutcome::Created), 1);
        assert_eq!(tally.rows_with(RowOutcome::Unchanged), 0);
        assert_eq!(tally.rows_settled(), 2);
        assert_eq!(tally.absent_settled(), 1);
    }

    fn record(status: RunStatus, rows: u64, parked: u64, absent: u64) -> RunRecord {
        RunRecord {
            status,
            absent,
            ..RunRecord::new(
                RunPlan {
                    rows,
                    parked,
                    ..RunPlan::default()
                },
                false,
                0,
            )
        }
    }

    #[test]
    fn runs_are_due_when_their_rows_have_settled() {
        let two = Tally::count([("l2", RowOutcome::Created), ("l3", RowOutcome::Failed)]);
        assert_eq!(due(&record(RunStatus::Running, 3, 0, 0), &two), None);
        assert_eq!(
            due(&record(RunStatus::Running, 2, 0, 0), &two),
            Some(Step::Completed)
        );
        // Absent users count too.
        assert_eq!(due(&record(RunStatus::Running, 2, 0, 1), &two), None);
        // Held: due once all but the parked rows settled; then no more until approved.
        assert_eq!(
            due(&record(RunStatus::Held, 3, 1, 0), &two),
            Some(Step::Held)
        );
        let mut reported = record(RunStatus::Held, 3, 1, 0);
        reported.held_reported = true;
        assert_eq!(due(&reported, &two), None);
        assert_eq!(due(&record(RunStatus::Superseded, 2, 0, 0), &two), None);
        assert_eq!(due(&record(RunStatus::Completed, 2, 0, 0), &two), None);
    }
}
