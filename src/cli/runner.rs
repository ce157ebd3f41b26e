//! Drains the in-memory queue through the Lambda's pipeline, one bulk cycle at a time:
//! each cycle takes the operations that are ready, and `pipeline::run_cycle` puts the ones to
//! retry or defer back with their delay. A [`Feed`] tops the queue up to a window of a few
//! cycles as it drains, so a large file is never all in memory. Ctrl-C stops between cycles.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::progress::{Progress, Status};
use crate::engine::{Engine, EngineError};
use crate::operation::{Operation, OperationResult, Outcome};
use crate::pipeline::{self, Summary};
use crate::queue::memory::DelayQueue;
use crate::report::ReportLine;

/// Cycles' worth of operations kept queued while a feed has more, so that every cycle is full.
const WINDOW_CYCLES: usize = 4;
/// Operations kept queued at least while a feed has more.
const MIN_WINDOW: usize = 2_000;

/// Operations not queued yet, queued as the queue drains.
pub trait Feed {
    /// The next operation; None when there are no more.
    fn next_operation(&mut self) -> impl Future<Output = Option<Operation>> + Send;
    /// Operations not taken yet.
    fn remaining(&self) -> u64;
}

/// No feed: every operation is in the queue already.
struct Queued;

impl Feed for Queued {
    async fn next_operation(&mut self) -> Option<Operation> {
        None
    }

    fn remaining(&self) -> u64 {
        0
    }
}

/// How the queue is drained.
#[derive(Debug, Clone, Copy)]
pub struct RunSettings {
    /// Operations per cycle at most.
    pub batch: usize,
    /// Each cycle's deadline, from its start.
    pub cycle: Duration,
}

/// What draining the queue did.
#[derive(Debug, Default)]
pub struct Drained {
    /// Counts over all cycles.
    pub counts: Summary,
    /// Report lines of failed and skipped operations.
    pub report: Vec<ReportLine>,
    /// Every operation's final result (not retry or deferred).
    pub results: Vec<OperationResult>,
    /// Cycles run.
    pub cycles: u64,
    /// Operations left in the queue (interrupted).
    pub unfinished: u64,
}

/// A run that stopped before its work was done: why, and what it had done by then (its
/// report lines, and in `unfinished` the operations it did not get to), so nothing known is lost.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct Stopped {
    /// Why the run stopped.
    pub error: RunError,
    /// What was done and reported until then.
    pub drained: Box<Drained>,
}

/// Why the run stopped early.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A cycle could not run at all.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// Every request so far was refused with 401: retrying for minutes would not help.
    #[error("the SCIM service answers 401 Unauthorized to every request: check the credentials (token, client or access key) and the base_url")]
    Unauthorized,
}

/// Ctrl-C: the first press stops the run after the current cycle, a second one exits at once.
/// Once the run is over (dropped), a press exits at once: the handler cannot be uninstalled.
struct Interrupt {
    pressed: Arc<AtomicBool>,
    running: Arc<AtomicBool>,
    notify: Arc<Notify>,
}

impl Drop for Interrupt {
    fn drop(&mut self) {
        self.running.store(false, Ordering::Relaxed);
    }
}

impl Interrupt {
    fn listen() -> Self {
        let pressed = Arc::new(AtomicBool::new(false));
        let running = Arc::new(AtomicBool::new(true));
        let notify = Arc::new(Notify::new());
        let (flag, alive, wake) = (
            Arc::clone(&pressed),
            Arc::clone(&running),
            Arc::clone(&notify),
        );
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            if !alive.load(Ordering::Relaxed) {
                std::process::exit(130);
            }
            flag.store(true, Ordering::Relaxed);
            wake.notify_one();
            eprintln!(
                "\nInterrupted: finishing the current cycle (press Ctrl-C again to quit at once)"
            );
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        });
        Self {
            pressed,
            running,
            notify,
        }
    }

    fn pressed(&self) -> bool {
        self.pressed.load(Ordering::Relaxed)
    }
}

/// Runs cycles until the queue is empty (or Ctrl-C); `settled` rows were settled before
/// (invalid or superseded) and count towards progress. A run that cannot go on returns what
/// it did until then with the reason.
pub async fn drain(
    engine: &Engine,
    queue: &DelayQueue,
    settings: RunSettings,
    progress: &Progress,
    settled: u64,
) -> Result<Drained, Stopped> {
    drain_fed(
        engine,
        queue,
        settings,
        progress,
        settled,
        &mut Queued,
        true,
    )
    .await
}

/// [`drain`], with operations taken from `feed` whenever fewer than a window of them are
/// queued. Operations still in the feed when the run stops count as unfinished. Without
/// `keep_results`, [`Drained::results`] stays empty (a result per user would grow with the file).
pub async fn drain_fed(
    engine: &Engine,
    queue: &DelayQueue,
    settings: RunSettings,
    progress: &Progress,
    settled: u64,
    feed: &mut impl Feed,
    keep_results: bool,
) -> Result<Drained, Stopped> {
    let interrupt = Interrupt::listen();
    let window = (settings.batch * WINDOW_CYCLES).max(MIN_WINDOW);
    let mut drained = Drained::default();
    let mut status = Status {
        settled,
        ..Status::default()
    };
    while !interrupt.pressed() {
        while queue.len() < window {
            match feed.next_operation().await {
                Some(operation) => queue.push(operation, Duration::ZERO),
                None => break,
            }
        }
        let batch = tokio::select! {
            batch = queue.next_batch(settings.batch) => batch,
            _ = interrupt.notify.notified() => break,
        };
        if batch.is_empty() {
            break;
        }
        let sent = batch.len();
        let deadline = Instant::now() + settings.cycle;
        let cycle = match pipeline::run_cycle(engine, batch, deadline, queue).await {
            Ok(cycle) => cycle,
            Err(error) => {
                // The batch left the queue and was not sent: it is unfinished too.
                drained.unfinished = (queue.len() + sent) as u64 + feed.remaining();
                return Err(Stopped {
                    error: error.into(),
                    drained: Box::new(drained),
                });
            }
        };
        drained.cycles += 1;
        drained.counts.add(&cycle.summary);
        drained.report.extend(cycle.report);
        let all_unauthorized = refused_everything(&cycle.results);
        let (again, done): (Vec<_>, Vec<_>) = cycle
            .results
            .into_iter()
            .partition(|r| r.outcome.needs_requeue());
        if keep_results {
            drained.results.extend(done);
        }
        if all_unauthorized && succeeded(&drained.counts) == 0 {
            drained.unfinished = queue.len() as u64 + feed.remaining();
            return Err(Stopped {
                error: RunError::Unauthorized,
                drained: Box::new(drained),
            });
        }
        status = Status {
            cycle: drained.cycles,
            sent,
            requeued: again.len(),
            settled: status.settled + (sent - again.len()) as u64,
            queued: queue.len() + feed.remaining() as usize,
            counts: drained.counts.clone(),
        };
        progress.cycle(&status);
    }
    drained.unfinished = queue.len() as u64 + feed.remaining();
    Ok(drained)
}

fn succeeded(counts: &Summary) -> u64 {
    counts.created + counts.updated + counts.deactivated
}

/// Whether every operation of a cycle came back for a retry after a 401.
fn refused_everything(results: &[OperationResult]) -> bool {
    !results.is_empty()
        && results.iter().all(|r| {
            matches!(
                r.outcome,
                Outcome::Retry {
                    status: Some(401),
                    ..
                }
            )
        })
}
