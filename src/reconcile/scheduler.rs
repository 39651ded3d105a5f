//! The running bridge's periodic passes.

use std::sync::Arc;
use std::time::Duration;

use super::pass::{PassOptions, Reconciler};

/// The task running a pass every `interval`; dropping it stops the passes.
pub struct Scheduler {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How long the first pass waits for the required sinks to connect: a pass while they are
/// still connecting would only count failures.
const READY_WAIT: Duration = Duration::from_secs(60);

/// Starts the passes: the first once the sinks are ready (or after 60 s), so a
/// restart after an outage backfills at once; then one every `interval` from the end of the
/// previous one (passes never pile up behind a slow API).
pub fn spawn(reconciler: Arc<Reconciler>, interval: Duration, lookback: Duration) -> Scheduler {
    let task = tokio::spawn(async move {
        let ready_by = tokio::time::Instant::now() + READY_WAIT;
        while !reconciler.sinks_ready() && tokio::time::Instant::now() < ready_by {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        loop {
            reconciler
                .pass(PassOptions {
                    lookback,
                    dry_run: false,
                })
                .await;
            tokio::time::sleep(interval).await;
        }
    });
    Scheduler { task }
}
