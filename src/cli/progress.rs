//! Progress while provisioning, on stderr: a progress bar on a terminal, one plain line per
//! cycle otherwise (CI logs, pipes), so stdout keeps only the summary.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::format::thousands;
use crate::pipeline::Summary;

/// Where a run stands after a cycle.
#[derive(Debug, Clone, Default)]
pub struct Status {
    /// Cycles run so far.
    pub cycle: u64,
    /// Operations the cycle was given.
    pub sent: usize,
    /// Of which re-queued (retry or deferred).
    pub requeued: usize,
    /// Rows settled so far (done, skipped, failed or invalid).
    pub settled: u64,
    /// Operations waiting in the queue.
    pub queued: usize,
    /// Counts so far.
    pub counts: Summary,
}

/// Reports progress in the form that suits stderr.
pub struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    plain: bool,
}

impl Progress {
    /// Progress over `total` rows: a bar if stderr is a terminal, plain lines otherwise,
    /// nothing at all if `quiet`.
    pub fn new(total: u64, quiet: bool) -> Self {
        if quiet {
            return Self {
                bar: None,
                total,
                plain: false,
            };
        }
        if !std::io::stderr().is_terminal() {
            return Self {
                bar: None,
                total,
                plain: true,
            };
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        // The template is a constant; should it ever be rejected, the default style still works.
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} {elapsed:>4} [{bar:25}] {pos}/{len} rows  {wide_msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.enable_steady_tick(Duration::from_millis(120));
        Self {
            bar: Some(bar),
            total,
            plain: false,
        }
    }

    /// Records a finished cycle.
    pub fn cycle(&self, status: &Status) {
        let c = &status.counts;
        if let Some(bar) = &self.bar {
            bar.set_position(status.settled);
            bar.set_message(format!(
                "created {} · updated {} · deactivated {} · retries {} · 429s {} · queued {}",
                c.created, c.updated, c.deactivated, c.retried, c.throttled, status.queued
            ));
        } else if self.plain {
            eprintln!("{}", plain_line(status, self.total));
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// One line per cycle for logs.
pub fn plain_line(status: &Status, total: u64) -> String {
    let c = &status.counts;
    format!(
        "cycle {}: {} operation(s), {} re-queued | {}/{} rows settled, {} queued | created {}, updated {}, deactivated {}, retries {}, 429s {}",
        status.cycle,
        status.sent,
        status.requeued,
        thousands(status.settled),
        thousands(total),
        status.queued,
        c.created,
        c.updated,
        c.deactivated,
        c.retried,
        c.throttled,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_line_says_where_the_run_stands() {
        let status = Status {
            cycle: 3,
            sent: 250,
            requeued: 70,
            settled: 1630,
            queued: 410,
            counts: Summary {
                created: 500,
                throttled: 9,
                ..Summary::default()
            },
        };
        let line = plain_line(&status, 2040);
        assert!(
            line.starts_with(
                "cycle 3: 250 operation(s), 70 re-queued | 1,630/2,040 rows settled, 410 queued"
            ),
            "{line}"
        );
        assert!(line.contains("created 500"), "{line}");
        assert!(line.contains("429s 9"), "{line}");
    }
}
