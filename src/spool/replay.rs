//! The replayer: one task per spooling sink that drains its queue, oldest first, once the sink
//! takes events again.
//!
//! Each entry goes through the idempotency ledger like a webhook delivery: if the sink already
//! holds the event (the publish that failed over to the spool was in doubt and landed after
//! all, or a sender retry delivered it), the entry is dropped without publishing again; while
//! another publish of it is in flight, the replayer waits. The queue head blocks the entries
//! behind it until it is delivered or dead-lettered: that is what keeps a call's statuses in
//! order.

use std::sync::Arc;
use std::time::Duration;

use crate::delivery::{Deliveries, Outcome};
use crate::event::Event;
use crate::ledger::shared::{Claim, SharedLedger};
use crate::ledger::{Ledger, Take};
use crate::metrics::Metrics;
use crate::sinks::throttle::Throttle;
use crate::sinks::{Outgoing, SinkError, SinkHandle};

use super::{Entry, Spool};

/// Waits between attempts while the sink keeps failing: from the first to the last, doubling.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Starts the replayer of `sink`; it runs until the runtime stops.
pub fn spawn(
    spool: Arc<Spool>,
    sink: SinkHandle,
    ledger: Arc<Ledger>,
    shared: Option<Arc<SharedLedger>>,
    metrics: Arc<Metrics>,
    deliveries: Option<Arc<Deliveries>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(spool, sink, ledger, shared, metrics, deliveries))
}

/// What became of the queue's head.
enum Step {
    /// Delivered (or found delivered): the next entry may go at once.
    Done,
    /// Nothing waits: sleep until something is appended.
    Empty,
    /// Not now: try again after the backoff.
    Later,
}

async fn run(
    spool: Arc<Spool>,
    sink: SinkHandle,
    ledger: Arc<Ledger>,
    shared: Option<Arc<SharedLedger>>,
    metrics: Arc<Metrics>,
    deliveries: Option<Arc<Deliveries>>,
) {
    let shared = shared.as_deref();
    // What each replay did goes to the event's record in the delivery index.
    let record = |event: &Event, entry: &Entry, outcome, receipt, reason: Option<&str>| {
        if let Some(d) = &deliveries {
            d.replayed(event, &sink, entry.seq, outcome, receipt, reason);
        }
    };
    let appended = spool.appended(&sink.name);
    let throttle = Throttle::default();
    let mut backoff = BACKOFF_FIRST;
    loop {
        // Registered before looking, so an append in between still wakes us.
        let notified = appended.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        match step(&spool, &sink, &ledger, shared, &metrics, &throttle, &record).await {
            Step::Done => backoff = BACKOFF_FIRST,
            Step::Empty => {
                backoff = BACKOFF_FIRST;
                notified.await;
            }
            Step::Later => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
}

async fn step(
    spool: &Spool,
    sink: &SinkHandle,
    ledger: &Ledger,
    shared: Option<&SharedLedger>,
    metrics: &Metrics,
    throttle: &Throttle,
    record: &impl Fn(&Event, &Entry, Outcome, Option<crate::sinks::Receipt>, Option<&str>),
) -> Step {
    let name = sink.name.as_str();
    let entry = match spool.oldest(name).await {
        Ok(Some(e)) => e,
        Ok(None) => return Step::Empty,
        Err(e) => {
            if let Some(repeats) = throttle.admit("read") {
                tracing::error!(sink = name, error = %crate::sinks::error_chain(&e), repeats, "cannot read the spool");
            }
            return Step::Later;
        }
    };
    let event: Event = match serde_json::from_slice(&entry.event) {
        Ok(e) => e,
        Err(e) => {
            let reason = format!("the spooled entry is not an event: {e}");
            return dead_letter(spool, sink, metrics, &entry, &reason).await;
        }
    };
    let out = Outgoing::new(event);
    let id = out.event.id.clone();
    match ledger.take(&id, name) {
        Take::Acked(receipt) => {
            record(
                &out.event,
                &entry,
                Outcome::AlreadyAcked,
                Some(receipt),
                None,
            );
            metrics.sink_outcome(name, "spool_already_acked");
            return removed(spool, sink, &entry).await;
        }
        Take::Busy => return Step::Later,
        Take::Mine => {}
    }
    // With the shared ledger, the replica claims the pair there too (as a webhook delivery).
    let claim = match shared {
        None => None,
        Some(s) => match s.claim(&id, name).await {
            Ok(Claim::Mine { revision }) => Some((s, revision)),
            Ok(Claim::Acked(receipt)) => {
                record(
                    &out.event,
                    &entry,
                    Outcome::AlreadyAcked,
                    Some(receipt.clone()),
                    None,
                );
                ledger.settle(&id, name, Some(receipt));
                metrics.sink_outcome(name, "spool_already_acked");
                return removed(spool, sink, &entry).await;
            }
            Ok(Claim::Busy) => {
                ledger.settle(&id, name, None);
                return Step::Later;
            }
            Err(e) => {
                ledger.settle(&id, name, None);
                if let Some(repeats) = throttle.admit("shared_ledger") {
                    tracing::warn!(sink = name, error = %crate::sinks::error_chain(&e), repeats, "spool replay waits for the shared ledger");
                }
                return Step::Later;
            }
        },
    };
    let result = match tokio::time::timeout(sink.timeout, sink.sink.publish(&out)).await {
        Ok(r) => r,
        Err(_) => Err(SinkError::Timeout(sink.timeout.as_millis() as u64)),
    };
    if let Some((s, revision)) = claim {
        // In doubt (a timeout), the claim is left to expire: the broker may still store it.
        if !matches!(result, Err(SinkError::Timeout(_))) {
            if let Err(e) = s.record(&id, name, revision, result.as_ref().ok()).await {
                tracing::warn!(sink = name, error = %crate::sinks::error_chain(&e), "cannot record the outcome in the shared ledger; its claim expires instead");
            }
        }
    }
    match result {
        Ok(receipt) => {
            record(
                &out.event,
                &entry,
                Outcome::Replayed,
                Some(receipt.clone()),
                None,
            );
            ledger.settle(&id, name, Some(receipt));
            metrics.sink_outcome(name, "replayed");
            tracing::debug!(sink = name, event_id = %id, "spooled event delivered");
            removed(spool, sink, &entry).await
        }
        Err(e) if !e.is_transient() => {
            record(
                &out.event,
                &entry,
                Outcome::DeadLettered,
                None,
                Some(&e.detail()),
            );
            ledger.settle(&id, name, None);
            dead_letter(spool, sink, metrics, &entry, &e.detail()).await
        }
        Err(e) => {
            ledger.settle(&id, name, None);
            if let Some(repeats) = throttle.admit(e.code()) {
                tracing::warn!(sink = name, reason = e.code(), error = %e.detail(), repeats, "spool replay waits for the sink");
            }
            Step::Later
        }
    }
}

async fn removed(spool: &Spool, sink: &SinkHandle, entry: &Entry) -> Step {
    match spool.remove(&sink.name, entry).await {
        Ok(()) => Step::Done,
        Err(e) => {
            tracing::error!(sink = %sink.name, error = %crate::sinks::error_chain(&e), "cannot remove a delivered entry from the spool; it will be delivered again");
            Step::Later
        }
    }
}

async fn dead_letter(
    spool: &Spool,
    sink: &SinkHandle,
    metrics: &Metrics,
    entry: &Entry,
    reason: &str,
) -> Step {
    tracing::error!(sink = %sink.name, seq = entry.seq, reason, "spooled event can never be delivered; moved to the dead-letter store");
    metrics.sink_outcome(&sink.name, "dead_lettered");
    match spool.dead_letter(&sink.name, entry, reason).await {
        Ok(()) => Step::Done,
        Err(e) => {
            tracing::error!(sink = %sink.name, error = %crate::sinks::error_chain(&e), "cannot dead-letter a spooled entry");
            Step::Later
        }
    }
}
