//! What a delivery comes to: per sink its outcome ([`SinkOutcome`]) and report, and across
//! the sinks the [`Delivery`] the answer is made of.

use std::time::Duration;

use crate::sinks::{Receipt, SinkError, SinkHandle};

/// The reason code of [`SinkOutcome::InProgress`], in answers, logs and metrics.
pub const IN_PROGRESS: &str = "in_progress";

/// What happened at one sink for one delivery.
#[derive(Debug)]
pub enum SinkOutcome {
    /// Published and confirmed now.
    Acked {
        receipt: Receipt,
        latency: Duration,
    },
    /// Confirmed by an earlier delivery of the same event id; not published again.
    AlreadyAcked {
        receipt: Receipt,
    },
    /// The sink's `events` filter does not want this event.
    Skipped,
    /// Not confirmed by the sink now, but written durably to the spool: the bridge delivers it
    /// when the sink recovers. Counts as stored for the answer.
    Spooled {
        cause: Option<SinkError>,
        /// Its sequence in the spool.
        seq: u64,
    },
    /// Another delivery's publish of the same event id to this sink was still in flight at
    /// this delivery's deadline: nothing was published, and the sender's retry will find its
    /// outcome (a receipt, or a failure it then publishes again).
    InProgress,
    /// An optional sink still deciding when every required sink had: it finishes in the
    /// background (ledger, metrics, log).
    Pending,
    Failed {
        error: SinkError,
    },
}

#[derive(Debug)]
pub struct SinkReport {
    pub name: String,
    pub kind: &'static str,
    pub required: bool,
    pub outcome: SinkOutcome,
}

impl SinkReport {
    pub fn is_ok(&self) -> bool {
        !matches!(
            self.outcome,
            SinkOutcome::Failed { .. } | SinkOutcome::InProgress | SinkOutcome::Pending
        )
    }
}

/// The outcome of one delivery across all sinks.
#[derive(Debug)]
pub struct Delivery {
    pub event_id: String,
    pub reports: Vec<SinkReport>,
}

impl Delivery {
    /// True when every required sink that wanted the event holds it.
    pub fn accepted(&self) -> bool {
        self.reports.iter().all(|r| r.is_ok() || !r.required)
    }

    /// True when the event failed only because a required sink can never take it (its size):
    /// the sender's to fix (413), not a retry.
    pub fn too_large(&self) -> bool {
        let mut failed = self.reports.iter().filter(|r| r.required && !r.is_ok());
        let mut any = false;
        let all = failed.all(|r| {
            any = true;
            matches!(
                r.outcome,
                SinkOutcome::Failed {
                    error: SinkError::TooLarge(_)
                }
            )
        });
        any && all
    }

    /// Names of the required sinks that failed, for the answer and the log line.
    pub fn failed_required(&self) -> Vec<&str> {
        self.reports
            .iter()
            .filter(|r| r.required && !r.is_ok())
            .map(|r| r.name.as_str())
            .collect()
    }
}

pub(super) fn report(s: &SinkHandle, outcome: SinkOutcome) -> SinkReport {
    SinkReport {
        name: s.name.clone(),
        kind: s.kind,
        required: s.required,
        outcome,
    }
}
