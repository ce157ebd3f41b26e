//! A run's summary (`reports/runs/<run_id>.json`, the detail of its EventBridge event, the CLI's
//! `status`): the file's rows by final outcome, which add up to its rows.

use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use super::{RowOutcome, RunRecord, RunStatus, Tally};

/// `detail-type` of the event put when a run completes.
pub const COMPLETED_EVENT: &str = "Provisioning Run Completed";
/// `detail-type` of the event put when the guard holds a run.
pub const HELD_EVENT: &str = "Provisioning Run Held";
/// `source` of the events the function puts.
pub const EVENT_SOURCE: &str = "scim-bulk-provisioner";

/// A run summed up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunSummary {
    /// The run's id.
    pub run_id: String,
    /// `s3://bucket/key`.
    pub source: String,
    /// `running`, `held`, `approved`, `completed` or `superseded`.
    pub status: &'static str,
    /// `upsert` or `full`.
    pub mode: super::SyncMode,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339, once completed.
    pub finished_at: Option<String>,
    /// Rows (records) of the file.
    pub rows: u64,
    /// Rows not valid.
    pub invalid: u64,
    /// Rows overtaken by a later row for the same user.
    pub duplicate: u64,
    /// Users created.
    pub created: u64,
    /// Users updated.
    pub updated: u64,
    /// Users that already held the row's values.
    pub unchanged: u64,
    /// Users deactivated (leaver rows).
    pub deactivated: u64,
    /// Rows skipped, with a reason in the report.
    pub skipped: u64,
    /// Rows failed, with a reason in the report.
    pub failed: u64,
    /// Rows not settled yet (held deactivations, or work still queued).
    pub pending: u64,
    /// SCIM requests made for the run.
    pub requests: u64,
    /// Report objects with its invalid, skipped and failed lines.
    pub reports: Vec<String>,
    /// Full sync: managed users absent from the file, by outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub absent: Option<Absent>,
    /// The guard's hold: what waits for approval.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<Held>,
}

/// Absent users (full sync) by outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Absent {
    /// Absent users to deactivate.
    pub total: u64,
    /// Deactivated.
    pub deactivated: u64,
    /// Already inactive.
    pub unchanged: u64,
    /// Skipped (gone from the tenant), with a reason in the report.
    pub skipped: u64,
    /// Failed, with a reason in the report.
    pub failed: u64,
}

/// What a held run waits to send.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Held {
    /// Deactivations held (leavers the tenant has active, plus absent users).
    pub deactivations: u64,
    /// Leaver rows held (counted in `pending`).
    pub rows: u64,
    /// A masked sample of the users.
    pub sample: Vec<String>,
    /// How to approve it.
    pub approve: String,
}

/// RFC 3339 (UTC, milliseconds) of a time in ms since the Unix epoch.
pub fn rfc3339(millis: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(millis)).to_string()
}

impl RunSummary {
    /// The summary of a run as `record` and `tally` have it.
    pub fn of(record: &RunRecord, tally: &Tally) -> RunSummary {
        let plan = &record.plan;
        let count = |o| tally.rows_with(o);
        let settled = tally.rows_settled();
        // While held, the absent users are not counted yet (approval counts them as it sends).
        let counting = !matches!(record.status, RunStatus::Held | RunStatus::Superseded);
        let absent = (plan.mode == super::SyncMode::Full && counting).then(|| {
            let of = |o| tally.absent.get(&o).copied().unwrap_or(0);
            Absent {
                total: record.absent,
                deactivated: of(RowOutcome::Deactivated),
                unchanged: of(RowOutcome::Unchanged),
                skipped: of(RowOutcome::Skipped),
                failed: of(RowOutcome::Failed),
            }
        });
        let held = matches!(record.status, RunStatus::Held | RunStatus::Superseded)
            .then(|| Held {
                deactivations: plan.deactivations,
                rows: plan.parked,
                sample: plan.sample.clone(),
                approve: format!(
                    "scim-bulk-provisioner approve {} (or an EventBridge event with detail {{\"approve_run\": \"{}\"}})",
                    plan.run_id, plan.run_id
                ),
            });
        RunSummary {
            run_id: plan.run_id.clone(),
            source: plan.source.clone(),
            status: record.status.name(),
            mode: plan.mode,
            started_at: rfc3339(plan.started_at),
            finished_at: record.finished_at.map(rfc3339),
            rows: plan.rows,
            invalid: count(RowOutcome::Invalid),
            duplicate: count(RowOutcome::Duplicate),
            created: count(RowOutcome::Created),
            updated: count(RowOutcome::Updated),
            unchanged: count(RowOutcome::Unchanged),
            deactivated: count(RowOutcome::Deactivated),
            skipped: count(RowOutcome::Skipped),
            failed: count(RowOutcome::Failed),
            pending: plan.rows.saturating_sub(settled),
            requests: record.requests,
            reports: record.reports.clone(),
            absent,
            held,
        }
    }

    /// The event's `detail-type` for this summary.
    pub fn detail_type(&self) -> &'static str {
        if self.status == RunStatus::Held.name() {
            HELD_EVENT
        } else {
            COMPLETED_EVENT
        }
    }

    /// The summary as a few lines of text (the CLI's `status` and `demo`).
    pub fn render(&self) -> String {
        let mut out = format!(
            "Run {} — {} ({} sync)
  source   {}
  started  {}
",
            self.run_id,
            self.status,
            match self.mode {
                super::SyncMode::Upsert => "upsert",
                super::SyncMode::Full => "full",
            },
            self.source,
            self.started_at
        );
        if let Some(finished) = &self.finished_at {
            out.push_str(&format!(
                "  finished {finished}
"
            ));
        }
        out.push_str(&format!(
            "  rows {}: created {}, updated {}, unchanged {}, deactivated {}, skipped {}, failed {}, invalid {}, duplicate {}{}
",
            self.rows,
            self.created,
            self.updated,
            self.unchanged,
            self.deactivated,
            self.skipped,
            self.failed,
            self.invalid,
            self.duplicate,
            if self.pending > 0 {
                format!(", pending {}", self.pending)
            } else {
                String::new()
            }
        ));
        if let Some(absent) = &self.absent {
            out.push_str(&format!(
                "  absent from the file: {} managed user(s): deactivated {}, unchanged {}, skipped {}, failed {}
",
                absent.total, absent.deactivated, absent.unchanged, absent.skipped, absent.failed
            ));
        }
        if let Some(held) = &self.held {
            out.push_str(&format!(
                "  HELD: {} deactivation(s) ({} leaver row(s)) wait for approval; e.g. {}
  approve with: {}
",
                held.deactivations,
                held.rows,
                held.sample.join(", "),
                held.approve
            ));
        }
        out.push_str(&format!(
            "  SCIM requests {}
",
            self.requests
        ));
        for report in &self.reports {
            out.push_str(&format!(
                "  report {report}
"
            ));
        }
        out
    }

    /// Where the summary object is written under the report bucket.
    pub fn key(run_id: &str) -> String {
        format!("reports/runs/{run_id}.json")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::{RunPlan, SyncMode};

    #[test]
    fn counts_add_up_to_the_rows() {
        let plan = RunPlan {
            run_id: "r1".into(),
            source: "s3://b/k.csv".into(),
            rows: 5,
            mode: SyncMode::Full,
            started_at: 1_700_000_000_000,
            ..RunPlan::default()
        };
        let mut record = RunRecord::new(plan, false, 1);
        record.status = RunStatus::Completed;
        record.finished_at = Some(1_700_000_060_000);
        let tally = Tally::count([
            ("l2", RowOutcome::Created),
            ("l3", RowOutcome::Invalid),
            ("l4", RowOutcome::Duplicate),
            ("l5", RowOutcome::Unchanged),
            ("l6", RowOutcome::Deactivated),
            ("agone@x", RowOutcome::Deactivated),
        ]);
        let s = RunSummary::of(&record, &tally);
        let sum = s.invalid
            + s.duplicate
            + s.created
            + s.updated
            + s.unchanged
            + s.deactivated
            + s.skipped
            + s.failed;
        assert_eq!(sum, s.rows);
        assert_eq!(s.pending, 0);
        assert_eq!(s.absent.as_ref().map(|a| a.deactivated), Some(1));
        assert_eq!(s.started_at, "2023-11-14T22:13:20.000Z");
        assert_eq!(s.detail_type(), COMPLETED_EVENT);
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["status"], "completed");
        assert!(json.get("held").is_none());
    }
}
