//! The end-of-run summary: counts over all cycles, reasons grouped, as a table or JSON.
//! Reasons are grouped without userNames or addresses: those go to the report file only.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::format::{group, group_report, thousands, Reason};
use super::input::{FileCounts, Input};
use super::runner::Drained;
use crate::mask::mask_emails_in;
use crate::pipeline::Summary;
use crate::report::ReportLine;

/// What a whole run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunSummary {
    /// Data rows read from the file.
    pub rows: u64,
    /// The pipeline's counts, summed over cycles (plus the file's invalid and superseded rows).
    #[serde(flatten)]
    pub counts: Summary,
    /// Bulk cycles run.
    pub cycles: u64,
    /// Operations still queued when the run stopped (interrupted or stopped runs only).
    pub unfinished: u64,
    /// Why the run stopped before its work was done (e.g. the credentials stopped working).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    /// Wall-clock time of the run, in seconds.
    pub wall_time_seconds: f64,
    /// Permanent failures, grouped by reason.
    pub failures: Vec<Reason>,
    /// Skips, grouped by reason.
    pub skips: Vec<Reason>,
    /// Invalid rows, grouped by kind of error.
    pub invalid_rows: Vec<Reason>,
}

impl RunSummary {
    /// The summary of a run over `input`: the pipeline's counts plus the file's invalid and
    /// superseded rows.
    pub fn of(input: &Input, drained: &Drained, elapsed: Duration) -> Self {
        Self::of_file(&FileCounts::of_input(input), drained, elapsed)
    }

    /// [`RunSummary::of`] a file known by its counts (streamed).
    pub fn of_file(file: &FileCounts, drained: &Drained, elapsed: Duration) -> Self {
        let mut counts = drained.counts.clone();
        counts.invalid += file.invalid;
        counts.skipped += file.superseded;
        let superseded = (0..file.superseded)
            .map(|_| "superseded by a later row for the same userName".to_string());
        let skipped = drained
            .report
            .iter()
            .filter(|l| l.status == "skipped")
            .map(|l| mask_emails_in(&l.reason));
        RunSummary {
            rows: file.rows,
            counts,
            cycles: drained.cycles,
            unfinished: drained.unfinished,
            stopped: None,
            wall_time_seconds: 0.0,
            failures: group_report(&drained.report, "failed"),
            skips: group(skipped.chain(superseded)),
            invalid_rows: file.invalid_kinds.clone(),
        }
        .with_wall_time(elapsed)
    }

    /// Sets the wall time.
    pub fn with_wall_time(mut self, elapsed: Duration) -> Self {
        self.wall_time_seconds = (elapsed.as_secs_f64() * 10.0).round() / 10.0;
        self
    }

    /// Records why the run stopped early (addresses masked).
    pub fn with_stop(mut self, reason: Option<&str>) -> Self {
        self.stopped = reason.map(mask_emails_in);
        self
    }

    /// Whether every row was provisioned or deliberately skipped: nothing failed, nothing invalid.
    pub fn all_done(&self) -> bool {
        self.counts.failed == 0
            && self.counts.invalid == 0
            && self.unfinished == 0
            && self.stopped.is_none()
    }

    /// The report line of a run that ended before its work was done (stopped or interrupted):
    /// why, and how many operations were not done; None for a finished run.
    pub fn stop_line(&self, source: &str) -> Option<ReportLine> {
        let not_done = format!(
            "{} operation(s) were not done: run the same file again (updates are idempotent)",
            self.unfinished
        );
        let reason = match &self.stopped {
            Some(why) => {
                format!("the run stopped before the end: {why}; {not_done} once this is fixed")
            }
            None if self.unfinished > 0 => format!("the run was interrupted; {not_done}"),
            None => return None,
        };
        Some(ReportLine::new(source, "stopped", reason))
    }

    /// The summary as an aligned table, one count per line, reasons indented below.
    pub fn table(&self) -> String {
        let c = &self.counts;
        let mut out = String::from("Summary\n");
        let mut row = |label: &str, value: String, note: &str| {
            let _ = write!(out, "  {label:<15}{value:>9}");
            if !note.is_empty() {
                let _ = write!(out, "   {note}");
            }
            out.push('\n');
        };
        row("rows read", thousands(self.rows), "");
        row("created", thousands(c.created), "");
        row("updated", thousands(c.updated), "");
        row("unchanged", thousands(c.unchanged), "");
        row("deactivated", thousands(c.deactivated), "");
        row("skipped", thousands(c.skipped), "");
        row("failed", thousands(c.failed), "");
        row("invalid rows", thousands(c.invalid), "");
        if self.unfinished > 0 || self.stopped.is_some() {
            let note = if self.stopped.is_some() {
                "stopped (see below): run the same file again once fixed"
            } else {
                "interrupted: run the same file again (updates are idempotent)"
            };
            row("not done", thousands(self.unfinished), note);
        }
        row(
            "retries",
            thousands(c.retried),
            "re-queued after 429/5xx/timeouts, with jittered backoff",
        );
        row(
            "deferred",
            thousands(c.deferred),
            "re-queued unsent: cycle deadline or request rate",
        );
        row("429s met", thousands(c.throttled), "");
        row("requests sent", thousands(c.requests), "");
        row("cycles", thousands(self.cycles), "");
        row("wall time", format!("{:.1} s", self.wall_time_seconds), "");
        if let Some(why) = &self.stopped {
            let _ = writeln!(out, "Stopped before the end: {why}");
        }
        for (title, reasons) in [
            ("Failed", &self.failures),
            ("Skipped", &self.skips),
            ("Invalid rows", &self.invalid_rows),
        ] {
            if reasons.is_empty() {
                continue;
            }
            let _ = writeln!(out, "{title}, by reason:");
            for r in reasons {
                let _ = writeln!(out, "  {:>7}  {}", thousands(r.count), r.reason);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RunSummary {
        RunSummary {
            rows: 1040,
            counts: Summary {
                created: 812,
                updated: 131,
                unchanged: 0,
                deactivated: 41,
                skipped: 27,
                failed: 2,
                retried: 95,
                deferred: 130,
                throttled: 77,
                invalid: 24,
                requests: 402,
                held: 0,
            },
            cycles: 14,
            unfinished: 0,
            stopped: None,
            wall_time_seconds: 0.0,
            failures: group(["HTTP 400: bad".to_string(), "HTTP 400: bad".to_string()]),
            skips: vec![],
            invalid_rows: group(["status word not recognised".to_string()]),
        }
        .with_wall_time(Duration::from_millis(14_239))
    }

    #[test]
    fn grouping_counts_and_orders() {
        let g = group(["b", "a", "b", "c", "a", "b"].map(String::from));
        let flat: Vec<_> = g.iter().map(|r| (r.reason.as_str(), r.count)).collect();
        assert_eq!(flat, [("b", 3), ("a", 2), ("c", 1)]);
        let mut line = ReportLine::new("f", "failed", "no");
        line.http_status = Some(400);
        let lines = [line, ReportLine::new("f", "skipped", "x")];
        assert_eq!(group_report(&lines, "failed")[0].reason, "HTTP 400: no");
    }

    #[test]
    fn table_lists_every_count_and_the_reasons() {
        let text = sample().table();
        for expected in [
            "  rows read          1,040\n",
            "  created              812\n",
            "  deactivated           41\n",
            "  failed                 2\n",
            "  invalid rows          24\n",
            "  429s met              77\n",
            "  requests sent        402\n",
            "  wall time         14.2 s\n",
            "Failed, by reason:\n        2  HTTP 400: bad\n",
            "Invalid rows, by reason:\n        1  status word not recognised\n",
        ] {
            assert!(text.contains(expected), "{expected:?} not in\n{text}");
        }
        assert!(!text.contains("Skipped, by reason"));
        assert!(!text.contains("not done"));
    }

    #[test]
    fn a_stopped_run_says_why_in_the_table_the_json_and_a_report_line() {
        assert_eq!(sample().stop_line("staff.csv"), None);
        assert!(serde_json::to_value(sample())
            .unwrap()
            .get("stopped")
            .is_none());
        let mut stopped = sample().with_stop(Some("the token for ada@example.com was refused"));
        stopped.unfinished = 1_200;
        assert!(!stopped.all_done());
        let text = stopped.table();
        assert!(
            text.contains("  not done           1,200   stopped"),
            "{text}"
        );
        assert!(
            text.contains("Stopped before the end: the token for a***@example.com was refused\n"),
            "{text}"
        );
        let value = serde_json::to_value(&stopped).unwrap();
        assert_eq!(
            value["stopped"],
            "the token for a***@example.com was refused"
        );
        let line = stopped.stop_line("staff.csv").unwrap();
        assert_eq!(
            (line.source.as_str(), line.status.as_str()),
            ("staff.csv", "stopped")
        );
        assert!(
            line.reason
                .starts_with("the run stopped before the end: the token for a***@")
                && line.reason.contains("1200 operation(s) were not done"),
            "{}",
            line.reason
        );
        let mut interrupted = sample();
        interrupted.unfinished = 3;
        let line = interrupted.stop_line("staff.csv").unwrap();
        assert!(
            line.reason
                .starts_with("the run was interrupted; 3 operation(s)"),
            "{}",
            line.reason
        );
    }

    #[test]
    fn json_has_flat_counts() {
        let value = serde_json::to_value(sample()).unwrap();
        assert_eq!(value["created"], 812);
        assert_eq!(value["throttled"], 77);
        assert_eq!(value["wall_time_seconds"], 14.2);
        assert_eq!(value["failures"][0]["count"], 2);
        assert!(!sample().all_done());
    }
}
