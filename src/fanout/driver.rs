//! One sink's task for one delivery: its receipt if the ledger has one; else it publishes when no
//! other publish of the id is in flight there (or waits for that one's outcome), spools what a
//! spooling sink cannot confirm, and dead-letters what the broker can never take.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::ledger::shared::{Claim, SharedLedger};
use crate::ledger::{Ledger, Take};
use crate::metrics::Metrics;
use crate::sinks::{Outgoing, Receipt, SinkError, SinkHandle};
use crate::spool::Spool;

use super::outcome::{SinkOutcome, IN_PROGRESS};

/// How long, from its start, a publish keeps its sink marked in flight for its event id while
/// its outcome is unknown (no other delivery publishes there meanwhile). Two cases: the publish
/// has not returned yet (every sink's client bounds its own wait well within this: librdkafka's
/// `message.timeout.ms`, the JetStream ack timeout, the AMQP confirm timeout, a file write) —
/// past the limit it is abandoned; or the sink itself gave up waiting for the confirmation
/// (`SinkError::Timeout`: the broker may still have stored it) — the sink stays *in doubt*
/// until the limit. Then the sink is freed and a retry may store a second copy. Below the
/// sender's first retry (1 minute), so that retry publishes again if it has to.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(50);

/// Of a spooling sink's budget, what is kept back for writing the event to the spool (a
/// commit with an fsync) should the publish fail, so the answer still comes before the deadline.
pub const SPOOL_RESERVE: Duration = Duration::from_millis(1000);

/// Decides one sink for one delivery: its receipt if it has one; else publishes when no other
/// publish of the id is in flight there, or waits for that one's outcome (until the deadline).
pub(super) struct Driver {
    pub(super) ledger: Arc<Ledger>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) sink: SinkHandle,
    pub(super) outgoing: Arc<Outgoing>,
    pub(super) deadline: tokio::time::Instant,
    pub(super) settle_limit: Duration,
    /// Set for a sink with `on_unavailable: spool`.
    pub(super) spool: Option<Arc<Spool>>,
    /// The spool's dead-letter store, for every sink when a spool is configured: where an event
    /// the broker refuses for its size is kept.
    pub(super) dead_letters: Option<Arc<Spool>>,
    pub(super) shared: Option<Arc<SharedLedger>>,
}

/// A claim in the shared ledger, to record the publish's outcome at.
type SharedClaim = Option<(Arc<SharedLedger>, u64)>;

/// While another replica holds the claim, how often it is looked at again.
const SHARED_BUSY_POLL: Duration = Duration::from_millis(100);

impl Driver {
    pub(super) async fn run(self) -> SinkOutcome {
        let id = self.outgoing.event.id.clone();
        // First look without a notifier: most deliveries never wait, and the ledger creates an
        // entry's notifier only for those that do.
        match self.ledger.take(&id, &self.sink.name) {
            Take::Acked(receipt) => return self.already_acked(receipt),
            Take::Mine => return self.claimed(id).await,
            Take::Busy => {}
        }
        let changes = self.ledger.changes(&id);
        loop {
            let notified = changes.notified();
            tokio::pin!(notified);
            // Registered before looking, so a settlement in between still wakes us.
            notified.as_mut().enable();
            match self.ledger.take(&id, &self.sink.name) {
                Take::Acked(receipt) => return self.already_acked(receipt),
                Take::Mine => return self.claimed(id).await,
                Take::Busy => {
                    if tokio::time::timeout_at(self.deadline, notified)
                        .await
                        .is_err()
                    {
                        self.metrics.sink_outcome(&self.sink.name, IN_PROGRESS);
                        return SinkOutcome::InProgress;
                    }
                }
            }
        }
    }

    /// The local ledger granted the publish. One look at the spool decides, once, whether the
    /// event queues behind the call's spooled events (unpublished: the replay publishes it, with
    /// its own claim) or is published now — with the shared ledger, under a claim there: another
    /// replica's receipt makes this a duplicate, its live claim is waited for (until the
    /// deadline), and an unreachable bucket fails closed (503, or the spool). Deciding twice
    /// would let a replay that drains in between send the event to a publish without a claim.
    async fn claimed(self, id: String) -> SinkOutcome {
        if let Some(spool) = &self.spool {
            if spool.has_waiting(&self.sink.name, &self.outgoing.event.subject) {
                self.ledger.settle(&id, &self.sink.name, None);
                return spool_it(spool, &self.metrics, &self.sink.name, &self.outgoing, None).await;
            }
        }
        let Some(shared) = self.shared.clone() else {
            return self.publish_or_spool(id, None).await;
        };
        let name = self.sink.name.clone();
        loop {
            match shared.claim(&id, &name).await {
                Ok(Claim::Mine { revision }) => {
                    return self.publish_or_spool(id, Some((shared, revision))).await
                }
                Ok(Claim::Acked(receipt)) => {
                    self.ledger.settle(&id, &name, Some(receipt.clone()));
                    return self.already_acked(receipt);
                }
                Ok(Claim::Busy) => {
                    if tokio::time::Instant::now() + SHARED_BUSY_POLL >= self.deadline {
                        self.ledger.settle(&id, &name, None);
                        self.metrics.sink_outcome(&name, IN_PROGRESS);
                        return SinkOutcome::InProgress;
                    }
                    tokio::time::sleep(SHARED_BUSY_POLL).await;
                }
                Err(e) => {
                    self.ledger.settle(&id, &name, None);
                    tracing::warn!(sink = %name, error = %crate::sinks::error_chain(&e), "shared ledger unavailable; not publishing");
                    let error = SinkError::NotConnected(format!(
                        "the shared idempotency ledger: {}",
                        crate::sinks::error_chain(&e)
                    ));
                    self.metrics.sink_outcome(&name, "ledger_unavailable");
                    return match &self.spool {
                        Some(spool) => {
                            spool_it(spool, &self.metrics, &name, &self.outgoing, Some(error)).await
                        }
                        None => SinkOutcome::Failed { error },
                    };
                }
            }
        }
    }

    /// [`Driver::publish_or_queue`], and an event the broker refused for its size (a topic's
    /// `max.message.bytes` below the producer's, a server's own limit) kept in the dead-letter
    /// store like one the size check refused before publishing: answered 413 either way, and
    /// never kept nowhere.
    async fn publish_or_spool(self, id: String, claim: SharedClaim) -> SinkOutcome {
        let dead_letters = self.dead_letters.clone();
        let (name, outgoing) = (self.sink.name.clone(), self.outgoing.clone());
        let outcome = self.publish_or_queue(id, claim).await;
        if let (
            SinkOutcome::Failed {
                error: error @ SinkError::TooLarge(_),
            },
            Some(spool),
        ) = (&outcome, &dead_letters)
        {
            dead_letter(spool, &name, &outgoing, error).await;
        }
        outcome
    }

    /// [`Driver::publish`], with the spool behind it for a spooling sink: a transient failure
    /// is spooled instead of failing the webhook. (Whether the event queues behind the call's
    /// spooled ones was decided before: [`Driver::claimed`].)
    async fn publish_or_queue(self, id: String, claim: SharedClaim) -> SinkOutcome {
        let Some(spool) = self.spool.clone() else {
            return self.publish(id, claim).await;
        };
        let (name, outgoing, metrics) = (
            self.sink.name.clone(),
            self.outgoing.clone(),
            self.metrics.clone(),
        );
        match self.publish(id, claim).await {
            SinkOutcome::Failed { error } if error.is_transient() => {
                spool_it(&spool, &metrics, &name, &outgoing, Some(error)).await
            }
            other => other,
        }
    }

    fn already_acked(&self, receipt: Receipt) -> SinkOutcome {
        self.metrics.idempotency_hit(&self.sink.name);
        SinkOutcome::AlreadyAcked { receipt }
    }

    /// Publishes (the sink is in flight for us). The publish runs as its own task until its
    /// real outcome is known (at most [`SETTLE_LIMIT`]) and settles the ledger then; we wait
    /// for it only until the sink's timeout or the deadline.
    async fn publish(self, id: String, claim: SharedClaim) -> SinkOutcome {
        let s = &self.sink;
        let span = tracing::info_span!(
            "publish",
            otel.kind = "producer",
            otel.name = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            messaging.system = s.kind,
            messaging.operation.type = "send",
            messaging.destination.name = tracing::field::Empty,
            messaging.message.id = %id,
            sink = %s.name,
        );
        // The destination is rendered for a recorded span only: a template per sink per event.
        if !span.is_disabled() {
            let destination = match s.sink.destination(&self.outgoing.event) {
                d if d.is_empty() => s.name.clone(),
                d => d,
            };
            span.record("otel.name", format!("send {destination}"));
            span.record("messaging.destination.name", destination);
        }
        let started = Instant::now();
        let settle_by = tokio::time::Instant::now() + self.settle_limit;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let settle = {
            let (ledger, metrics, sink, outgoing) = (
                self.ledger.clone(),
                self.metrics.clone(),
                s.clone(),
                self.outgoing.clone(),
            );
            async move {
                let limit_ms = settle_by.saturating_duration_since(tokio::time::Instant::now()).as_millis() as u64;
                let result = match tokio::time::timeout_at(settle_by, sink.sink.publish(&outgoing)).await {
                    Ok(r) => r,
                    Err(_) => {
                        metrics.sink_outcome(&sink.name, "in_doubt_abandoned");
                        tracing::warn!(sink = %sink.name, limit_ms, "publish outcome unknown past the settle limit; the sink is free again and a retry may store a second copy");
                        Err(SinkError::Timeout(limit_ms))
                    }
                };
                let latency = started.elapsed();
                metrics.publish_latency(&sink.name, latency);
                let receipt = result.as_ref().ok().cloned();
                let in_doubt = matches!(result, Err(SinkError::Timeout(_)));
                if let Some((shared, revision)) = &claim {
                    // Before the answer, so a retry on another replica finds the receipt. In
                    // doubt, the claim is left to expire: the broker may still store it.
                    if !in_doubt {
                        if let Err(e) = shared.record(&outgoing.event.id, &sink.name, *revision, receipt.as_ref()).await {
                            tracing::warn!(sink = %sink.name, error = %crate::sinks::error_chain(&e), "cannot record the outcome in the shared ledger; its claim expires instead");
                        }
                    }
                }
                match &result {
                    Ok(_) => metrics.sink_outcome(&sink.name, "acked"),
                    Err(error) => {
                        tracing::Span::current().record("otel.status_code", "ERROR");
                        metrics.sink_outcome(&sink.name, error.code());
                        tracing::warn!(sink = %sink.name, reason = error.code(), error = %error.detail(), "publish failed");
                    }
                }
                let _ = tx.send((result, latency));
                if in_doubt {
                    // The sink stopped waiting for its confirmation: the broker may still
                    // store the event. Hold the sink until the settle limit rather than let a
                    // retry publish a second copy at once.
                    tokio::time::sleep_until(settle_by).await;
                }
                ledger.settle(&outgoing.event.id, &sink.name, receipt);
            }
            .instrument(span)
        };
        tokio::spawn(settle);
        let mut left = self
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        if self.spool.is_some() {
            left = left.saturating_sub(SPOOL_RESERVE);
        }
        let budget = s.timeout.min(left);
        match tokio::time::timeout(budget, rx).await {
            Ok(Ok((Ok(receipt), latency))) => SinkOutcome::Acked { receipt, latency },
            Ok(Ok((Err(error), _))) => SinkOutcome::Failed { error },
            Ok(Err(_)) => SinkOutcome::Failed {
                error: SinkError::Broker {
                    message: "the publish task ended without an outcome".into(),
                    source: None,
                },
            },
            Err(_) => {
                // Still in flight: the sink stays marked until the outcome is known.
                self.metrics.sink_outcome(&s.name, "in_doubt");
                tracing::warn!(sink = %s.name, budget_ms = budget.as_millis() as u64, "no confirmation in time; the publish stays in flight and is settled when its outcome is known");
                SinkOutcome::Failed {
                    error: SinkError::Timeout(budget.as_millis() as u64),
                }
            }
        }
    }
}

/// Keeps an event `sink` can never take (`error` says why) in the spool's dead-letter store,
/// for the operator, who may raise the limit and redrive it. A failure to keep it is logged:
/// the answer (413) is the same either way.
pub(super) async fn dead_letter(spool: &Spool, sink: &str, outgoing: &Outgoing, error: &SinkError) {
    match spool.bury(sink, outgoing, &error.detail()).await {
        Ok(()) => {
            tracing::info!(sink, event_id = %outgoing.event.id, reason = error.code(), "event kept as a dead letter")
        }
        Err(e) => {
            tracing::warn!(sink, error = %crate::sinks::error_chain(&e), "cannot keep the refused event in the dead-letter store")
        }
    }
}

/// Writes the event to the spool for `sink`: `Spooled` once it is durable, else the failure
/// (with the publish's own error, when there was one, first).
async fn spool_it(
    spool: &Spool,
    metrics: &Metrics,
    sink: &str,
    outgoing: &Outgoing,
    cause: Option<SinkError>,
) -> SinkOutcome {
    match spool.append(sink, outgoing).await {
        Ok(seq) => {
            metrics.sink_outcome(sink, "spooled");
            tracing::info!(sink, seq, event_id = %outgoing.event.id, cause = cause.as_ref().map(|c| c.code()).unwrap_or("queued_behind_call"), "event spooled");
            SinkOutcome::Spooled { cause, seq }
        }
        Err(e) => {
            let why = match &cause {
                Some(c) => format!("{}; not spooled either", c.detail()),
                None => "waiting behind this call's spooled events, but not spooled".into(),
            };
            metrics.sink_outcome(sink, "spool_failed");
            tracing::warn!(sink, error = %crate::sinks::error_chain(&e), "cannot spool the event");
            SinkOutcome::Failed {
                error: SinkError::NotSpooled {
                    message: why,
                    source: Box::new(e),
                },
            }
        }
    }
}
