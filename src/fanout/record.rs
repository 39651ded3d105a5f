//! The fan-out's one call into the delivery index: every answer, with each sink's outcome and
//! receipt, and the outcome of an optional sink that finishes after the answer.

use std::sync::Arc;

use super::{Delivery, Fanout, SinkOutcome, SinkReport};
use crate::delivery::{Answer, Deliveries, EventMeta, Outcome, SinkEntry};
use crate::event::Event;
use crate::sinks::SinkHandle;

impl Fanout {
    /// Records every delivery in `deliveries` (before [`Fanout::with_spool`], whose replayers
    /// record replays there too).
    pub fn with_deliveries(mut self, deliveries: Arc<Deliveries>) -> Fanout {
        self.deliveries = Some(deliveries);
        self
    }

    pub fn deliveries(&self) -> Option<&Arc<Deliveries>> {
        self.deliveries.as_ref()
    }

    /// Publishes `event` to every sink that wants it and has not acknowledged it yet, and
    /// answers as soon as every *required* sink has decided (acked, failed, timed out, or busy
    /// with another delivery's publish past the deadline). Optional sinks still deciding then are
    /// reported `Pending` and finish in the background; their outcome reaches the ledger, the
    /// metrics, the log and the delivery index. The answer is recorded in the delivery index.
    pub async fn deliver(&self, event: Event, deadline: tokio::time::Instant) -> Delivery {
        let meta = self.deliveries.as_ref().map(|_| EventMeta::of(&event));
        let delivery = self.fan_out(event, deadline).await;
        if let (Some(d), Some(meta)) = (&self.deliveries, meta) {
            d.answered(
                &meta,
                answer(&delivery),
                delivery.reports.iter().map(entry).collect(),
            );
        }
        delivery
    }
}

/// What the sender is answered for `d` (the handler's mapping: 200, 413, else 503).
pub fn answer(d: &Delivery) -> Answer {
    if d.accepted() {
        Answer::Accepted
    } else if d.too_large() {
        Answer::TooLarge
    } else {
        Answer::NotDelivered
    }
}

/// A sink's report as the index keeps it.
pub fn entry(r: &SinkReport) -> SinkEntry {
    outcome_entry(&r.name, r.kind, r.required, &r.outcome)
}

fn outcome_entry(name: &str, kind: &str, required: bool, outcome: &SinkOutcome) -> SinkEntry {
    let e = |o| SinkEntry::new(name, kind, required, o);
    match outcome {
        SinkOutcome::Acked { receipt, .. } => e(Outcome::Acked).with_receipt(receipt.clone()),
        SinkOutcome::AlreadyAcked { receipt } => {
            e(Outcome::AlreadyAcked).with_receipt(receipt.clone())
        }
        SinkOutcome::Skipped => e(Outcome::Skipped),
        SinkOutcome::Spooled { cause, seq } => {
            let s = e(Outcome::Spooled).with_spool_seq(Some(*seq));
            match cause {
                Some(c) => s.with_error(c),
                None => s.with_reason("queued behind the call's spooled events"),
            }
        }
        SinkOutcome::InProgress => e(Outcome::InProgress),
        SinkOutcome::Pending => e(Outcome::Pending),
        SinkOutcome::Failed { error } => e(Outcome::Failed).with_error(error),
    }
}

/// An optional sink's publish that outlives the answer: its outcome goes to the index when it
/// is known. Without an index the task is only detached, as before.
pub(super) fn follow(
    deliveries: Option<&Arc<Deliveries>>,
    event: &Event,
    s: &SinkHandle,
    task: tokio::task::JoinHandle<SinkOutcome>,
) {
    let Some(d) = deliveries.cloned() else {
        return;
    };
    let meta = EventMeta::of(event);
    let (name, kind, required) = (s.name.clone(), s.kind, s.required);
    tokio::spawn(async move {
        let outcome = super::joined(task.await);
        d.sink_update(&meta, outcome_entry(&name, kind, required, &outcome));
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::sinks::{Receipt, SinkError};

    fn report(name: &str, required: bool, outcome: SinkOutcome) -> SinkReport {
        SinkReport {
            name: name.into(),
            kind: "kafka",
            required,
            outcome,
        }
    }

    fn receipt() -> Receipt {
        Receipt::Kafka {
            topic: "t".into(),
            partition: 1,
            offset: 2,
        }
    }

    #[test]
    fn each_outcome_keeps_its_receipt_error_or_spool_sequence() {
        let e = entry(&report(
            "k",
            true,
            SinkOutcome::Acked {
                receipt: receipt(),
                latency: Duration::ZERO,
            },
        ));
        assert_eq!(
            (e.sink.as_str(), e.kind.as_str(), e.required, e.outcome),
            ("k", "kafka", true, Outcome::Acked)
        );
        assert_eq!(e.receipt, Some(receipt()));
        let e = entry(&report(
            "k",
            false,
            SinkOutcome::AlreadyAcked { receipt: receipt() },
        ));
        assert_eq!(
            (e.outcome, e.receipt, e.required),
            (Outcome::AlreadyAcked, Some(receipt()), false)
        );
        let e = entry(&report(
            "k",
            true,
            SinkOutcome::Spooled {
                cause: Some(SinkError::Timeout(7)),
                seq: 42,
            },
        ));
        assert_eq!((e.outcome, e.spool_seq), (Outcome::Spooled, Some(42)));
        assert_eq!(
            e.error.as_deref(),
            Some("timeout: no acknowledgement within 7 ms")
        );
        let e = entry(&report(
            "k",
            true,
            SinkOutcome::Spooled {
                cause: None,
                seq: 3,
            },
        ));
        assert_eq!(
            e.error.as_deref(),
            Some("queued behind the call's spooled events")
        );
        let e = entry(&report(
            "k",
            true,
            SinkOutcome::Failed {
                error: SinkError::Rejected("no route".into()),
            },
        ));
        assert_eq!(e.outcome, Outcome::Failed);
        assert_eq!(
            e.error.as_deref(),
            Some("rejected: the broker refused the event: no route")
        );
        for (o, want) in [
            (SinkOutcome::Skipped, Outcome::Skipped),
            (SinkOutcome::InProgress, Outcome::InProgress),
            (SinkOutcome::Pending, Outcome::Pending),
        ] {
            let e = entry(&report("k", true, o));
            assert_eq!(
                (e.outcome, e.receipt, e.error, e.spool_seq),
                (want, None, None, None)
            );
        }
    }

    #[test]
    fn the_answer_is_what_the_handler_answers() {
        let d = |reports| Delivery {
            event_id: "e".into(),
            reports,
        };
        let ok = || SinkOutcome::AlreadyAcked { receipt: receipt() };
        let failed = |e| SinkOutcome::Failed { error: e };
        assert_eq!(answer(&d(vec![report("a", true, ok())])), Answer::Accepted);
        assert_eq!(
            answer(&d(vec![
                report("a", true, ok()),
                report("b", false, failed(SinkError::Timeout(1)))
            ])),
            Answer::Accepted
        );
        assert_eq!(
            answer(&d(vec![report(
                "a",
                true,
                failed(SinkError::TooLarge("big".into()))
            )])),
            Answer::TooLarge
        );
        assert_eq!(
            answer(&d(vec![report("a", true, failed(SinkError::Timeout(1)))])),
            Answer::NotDelivered
        );
    }
}
