//! Runs kept in the process: for the CLI's demo and for tests that need no DynamoDB.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use futures_util::future::{self, BoxFuture};

use super::{RowId, RowOutcome, RunError, RunRecord, RunStatus, RunStore, Step, Tally};

#[derive(Debug, Default)]
struct Kept {
    record: Option<RunRecord>,
    settled: HashMap<String, HashSet<RowOutcome>>,
    leases: HashMap<&'static str, u64>,
    done: HashSet<&'static str>,
}

/// Runs in memory.
#[derive(Debug, Default)]
pub struct MemoryRuns {
    runs: Mutex<BTreeMap<String, Kept>>,
    latest: Mutex<HashMap<String, String>>,
}

impl MemoryRuns {
    /// No runs yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn runs(&self) -> MutexGuard<'_, BTreeMap<String, Kept>> {
        // A panic while holding the lock leaves plain data behind: still usable.
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn ready<'a, T: Send + 'a>(value: T) -> BoxFuture<'a, Result<T, RunError>> {
    Box::pin(future::ready(Ok(value)))
}

impl RunStore for MemoryRuns {
    fn start<'a>(&'a self, record: &'a RunRecord) -> BoxFuture<'a, Result<RunRecord, RunError>> {
        let mut runs = self.runs();
        let kept = runs.entry(record.plan.run_id.clone()).or_default();
        let stored = kept.record.get_or_insert_with(|| record.clone()).clone();
        ready(stored)
    }

    fn get<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<Option<RunRecord>, RunError>> {
        ready(self.runs().get(run_id).and_then(|k| k.record.clone()))
    }

    fn recent(&self, limit: usize) -> BoxFuture<'_, Result<Vec<RunRecord>, RunError>> {
        let mut records: Vec<RunRecord> = self
            .runs()
            .values()
            .filter_map(|k| k.record.clone())
            .collect();
        records.sort_by_key(|r| std::cmp::Reverse(r.plan.started_at));
        records.truncate(limit);
        ready(records)
    }

    fn replace_latest<'a>(
        &'a self,
        source: &'a str,
        run_id: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, RunError>> {
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        let before = latest.insert(source.to_string(), run_id.to_string());
        ready(before.filter(|b| b != run_id))
    }

    fn settle<'a>(
        &'a self,
        run_id: &'a str,
        rows: &'a [(RowId, RowOutcome)],
    ) -> BoxFuture<'a, Result<(), RunError>> {
        let mut runs = self.runs();
        let kept = runs.entry(run_id.to_string()).or_default();
        for (id, outcome) in rows {
            kept.settled
                .entry(id.encode())
                .or_default()
                .insert(*outcome);
        }
        ready(())
    }

    fn add_usage<'a>(
        &'a self,
        run_id: &'a str,
        requests: u64,
        report: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), RunError>> {
        if let Some(record) = self.runs().get_mut(run_id).and_then(|k| k.record.as_mut()) {
            record.requests += requests;
            if let Some(report) = report {
                if !record.reports.iter().any(|r| r == report) {
                    record.reports.push(report.to_string());
                }
            }
        }
        ready(())
    }

    fn tally<'a>(&'a self, run_id: &'a str) -> BoxFuture<'a, Result<Tally, RunError>> {
        let runs = self.runs();
        let tally = runs.get(run_id).map_or_else(Tally::default, |kept| {
            Tally::count(
                kept.settled
                    .iter()
                    .flat_map(|(id, outcomes)| outcomes.iter().map(|o| (id.as_str(), *o))),
            )
        });
        ready(tally)
    }

    fn transition<'a>(
        &'a self,
        run_id: &'a str,
        from: RunStatus,
        to: RunStatus,
        absent: Option<u64>,
    ) -> BoxFuture<'a, Result<bool, RunError>> {
        let mut runs = self.runs();
        let Some(record) = runs.get_mut(run_id).and_then(|k| k.record.as_mut()) else {
            return ready(false);
        };
        if record.status != from {
            return ready(false);
        }
        record.status = to;
        if let Some(absent) = absent {
            record.absent = absent;
        }
        ready(true)
    }

    fn lease<'a>(
        &'a self,
        run_id: &'a str,
        step: Step,
        now: u64,
        until: u64,
    ) -> BoxFuture<'a, Result<bool, RunError>> {
        let mut runs = self.runs();
        let Some(kept) = runs.get_mut(run_id) else {
            return ready(false);
        };
        let name = step.name();
        let free = !kept.done.contains(name) && kept.leases.get(name).is_none_or(|&t| t < now);
        if free {
            kept.leases.insert(name, until);
        }
        ready(free)
    }

    fn release<'a>(&'a self, run_id: &'a str, step: Step) -> BoxFuture<'a, Result<(), RunError>> {
        if let Some(kept) = self.runs().get_mut(run_id) {
            kept.leases.remove(step.name());
        }
        ready(())
    }

    fn done<'a>(
        &'a self,
        run_id: &'a str,
        step: Step,
        at: u64,
    ) -> BoxFuture<'a, Result<(), RunError>> {
        let mut runs = self.runs();
        if let Some(kept) = runs.get_mut(run_id) {
            kept.done.insert(step.name());
            if let Some(record) = kept.record.as_mut() {
                match step {
                    Step::Held => record.held_reported = true,
                    Step::Completed => {
                        record.status = RunStatus::Completed;
                        record.finished_at = Some(at);
                    }
                }
            }
        }
        ready(())
    }
}
