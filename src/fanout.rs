//! Fan-out: claim the event id → publish to every sink that still needs it, concurrently →
//! record the receipts → the verdict.
//!
//! The verdict is `accepted` only when every *required* sink whose `events` filter matches holds
//! a receipt, from this delivery or an earlier one. Each publish runs under the sink's
//! `timeout_ms`, and all of them under the request deadline, so the answer always comes in time.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use futures::FutureExt;
use tracing::Instrument;

use crate::event::Event;
use crate::ledger::shared::{Claim, SharedLedger};
use crate::ledger::{Ledger, Take};
use crate::metrics::Metrics;
use crate::sinks::{OnUnavailable, Outgoing, Receipt, SinkError, SinkHandle};
use crate::spool::Spool;

mod record;

/// The reason code of [`SinkOutcome::InProgress`], in answers, logs and metrics.
pub const IN_PROGRESS: &str = "in_progress";

/// How long, from its start, a publish keeps its sink marked in flight for its event id while
/// its outcome is unknown (no other delivery publishes there meanwhile). Two cases: the publish
/// has not returned yet (every sink's client bounds its own wait well within this: librdkafka's
/// `message.timeout.ms`, the JetStream ack timeout, the AMQP confirm timeout, a file write) —
/// past the limit it is abandoned; or the sink itself gave up waiting for the confirmation
/// (`SinkError::Timeout`: the broker may still have stored it) — the sink stays *in doubt*
/// until the limit. Then the sink is freed and a retry may store a second copy. Below the
/// sender's first retry (1 minute), so that retry publishes again if it has to.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(50);

pub struct Fanout {
    sinks: Vec<SinkHandle>,
    ledger: Arc<Ledger>,
    metrics: Arc<Metrics>,
    settle_limit: Duration,
    /// Where sinks with `on_unavailable: spool` put what they cannot confirm now.
    spool: Option<Arc<Spool>>,
    /// The ledger every replica shares (`idempotency.store: nats-kv`), when configured.
    shared: Option<Arc<SharedLedger>>,
    /// Where every answer is recorded (`record.rs`), when configured.
    deliveries: Option<Arc<crate::delivery::Deliveries>>,
}

/// Of a spooling sink's budget, what is kept back for writing the event to the spool (a
/// commit with an fsync) should the publish fail, so the answer still comes before the deadline.
pub const SPOOL_RESERVE: Duration = Duration::from_millis(1000);

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

impl Fanout {
    pub fn new(sinks: Vec<SinkHandle>, ledger: Ledger, metrics: Arc<Metrics>) -> Fanout {
        Fanout {
            sinks,
            ledger: Arc::new(ledger),
            metrics,
            settle_limit: SETTLE_LIMIT,
            spool: None,
            shared: None,
            deliveries: None,
        }
    }

    /// Claims every publish in the ledger all replicas share as well (see
    /// [`crate::ledger::shared`]). Before [`Fanout::with_spool`], whose replayers claim too.
    pub fn with_shared_ledger(mut self, shared: Arc<SharedLedger>) -> Fanout {
        self.shared = Some(shared);
        self
    }

    /// Gives the sinks with `on_unavailable: spool` the spool, and starts a replayer for every
    /// sink: the spooling ones drain what they spooled, and any sink may get redriven dead
    /// letters (e.g. an event once too large for it).
    pub fn with_spool(mut self, spool: Arc<Spool>) -> Fanout {
        for s in &self.sinks {
            crate::spool::replay::spawn(
                spool.clone(),
                s.clone(),
                self.ledger.clone(),
                self.shared.clone(),
                self.metrics.clone(),
                self.deliveries.clone(),
            );
        }
        self.spool = Some(spool);
        self
    }

    pub fn spool(&self) -> Option<&Arc<Spool>> {
        self.spool.as_ref()
    }

    /// Another [`SETTLE_LIMIT`] (tests).
    pub fn with_settle_limit(mut self, limit: Duration) -> Fanout {
        self.settle_limit = limit;
        self
    }

    pub fn sinks(&self) -> &[SinkHandle] {
        &self.sinks
    }

    /// The idempotency ledger, for reconciliation's "was this delivered" question.
    pub fn ledger(&self) -> Arc<Ledger> {
        self.ledger.clone()
    }

    /// Who answers "was this delivered": this process's ledger, then the shared one when
    /// configured (every replica's receipts, across restarts).
    pub fn delivery_record(&self) -> Arc<dyn crate::ledger::DeliveryRecord> {
        Arc::new(crate::ledger::Layered {
            local: self.ledger.clone(),
            shared: self.shared.clone(),
        })
    }

    /// The idempotency ledger's figures, for the metrics.
    pub fn ledger_stats(&self) -> crate::ledger::LedgerStats {
        self.ledger.stats()
    }

    /// [`Fanout::deliver`] without recording it (record.rs).
    async fn fan_out(&self, event: Event, deadline: tokio::time::Instant) -> Delivery {
        let event_id = event.id.clone();
        let mut reports: Vec<SinkReport> = Vec::with_capacity(self.sinks.len());
        let wanted: Vec<&SinkHandle> = self
            .sinks
            .iter()
            .filter(|s| {
                let wants = s.wants(&event);
                if !wants {
                    self.metrics.sink_outcome(&s.name, "skipped");
                    reports.push(report(s, SinkOutcome::Skipped));
                }
                wants
            })
            .collect();
        // One serialisation of the event, shared by every sink's task.
        let outgoing = Arc::new(Outgoing::new(event));
        // A backfilled event is rebuilt from the call API, so its `data` never matches the
        // webhook's byte for byte: it records no digest (a webhook arriving later records its
        // own) and is not compared, or every late webhook would be reported as a mismatch.
        let backfilled = outgoing.event.origin.is_some();
        if !backfilled && self.ledger.payload_differs(&event_id, &outgoing.data) {
            self.metrics.id_payload_mismatch.inc();
            tracing::warn!(
                event_id = %event_id,
                "an event id seen before arrives with different content: its sinks that already \
                 acknowledged the first one answer duplicate and do not publish this one"
            );
        }
        // An event a required sink can never take is the sender's to fix: publish it nowhere,
        // so the 413 leaves no partial delivery behind.
        let refused: Vec<(&str, SinkError)> = wanted
            .iter()
            .filter(|s| s.required)
            .filter_map(|s| {
                s.sink
                    .check_size(&outgoing)
                    .err()
                    .map(|e| (s.name.as_str(), e))
            })
            .collect();
        if let Some((first, _)) = refused.first() {
            let first = first.to_string();
            let mut refused = refused
                .into_iter()
                .map(|(n, e)| (n.to_string(), e))
                .collect::<Vec<_>>();
            for s in wanted {
                let error = match refused.iter().position(|(n, _)| *n == s.name) {
                    Some(i) => refused.swap_remove(i).1,
                    None => SinkError::TooLarge(format!(
                        "not published: required sink {first} can never take this event"
                    )),
                };
                self.metrics.sink_outcome(&s.name, error.code());
                tracing::warn!(sink = %s.name, reason = error.code(), error = %error.detail(), "event too large, published nowhere");
                if let Some(spool) = &self.spool {
                    dead_letter(spool, &s.name, &outgoing, &error).await;
                }
                reports.push(report(s, SinkOutcome::Failed { error }));
            }
            reports.sort_by_key(|r| self.sinks.iter().position(|s| s.name == r.name));
            return Delivery { event_id, reports };
        }
        let mut required = Vec::new();
        let mut optional = Vec::new();
        for s in wanted {
            let driver = Driver {
                ledger: self.ledger.clone(),
                metrics: self.metrics.clone(),
                sink: s.clone(),
                outgoing: outgoing.clone(),
                deadline,
                settle_limit: self.settle_limit,
                spool: self
                    .spool
                    .clone()
                    .filter(|_| s.on_unavailable == OnUnavailable::Spool),
                dead_letters: self.spool.clone(),
                shared: self.shared.clone(),
            };
            if s.required {
                // In this task: the answer waits for it anyway, and a task per sink per event
                // costs a spawn and a wake-up. A panic in it stays that sink's failure.
                required.push((s, AssertUnwindSafe(driver.run()).catch_unwind()));
            } else {
                // Its own task, in the request's span: an optional sink outlives the answer.
                optional.push((
                    s,
                    tokio::spawn(driver.run().instrument(tracing::Span::current())),
                ));
            }
        }
        let (names, drivers): (Vec<_>, Vec<_>) = required.into_iter().unzip();
        for (s, outcome) in names.into_iter().zip(join_all(drivers).await) {
            let outcome = outcome.unwrap_or_else(|_| SinkOutcome::Failed {
                error: SinkError::Broker {
                    message: "the publish task failed".into(),
                    source: None,
                },
            });
            reports.push(report(s, outcome));
        }
        for (s, task) in optional {
            let outcome = if task.is_finished() {
                joined(task.await)
            } else {
                // Detached: the driver records its outcome itself.
                record::follow(self.deliveries.as_ref(), &outgoing.event, s, task);
                SinkOutcome::Pending
            };
            reports.push(report(s, outcome));
        }
        // Keep the configured order in the answer.
        reports.sort_by_key(|r| self.sinks.iter().position(|s| s.name == r.name));
        Delivery { event_id, reports }
    }

    /// True when every required sink can reach its destination.
    pub fn ready(&self) -> bool {
        self.sinks
            .iter()
            .filter(|s| s.required)
            .all(|s| s.sink.is_ready())
    }

    /// Readiness of each sink, for `/readyz` and the metrics.
    pub fn readiness(&self) -> Vec<(&str, bool, bool)> {
        self.sinks
            .iter()
            .map(|s| (s.name.as_str(), s.required, s.sink.is_ready()))
            .collect()
    }

    pub async fn close(&self) {
        join_all(self.sinks.iter().map(|s| s.sink.close())).await;
    }
}

/// The outcome of a driver task; a panic in one is that sink's failure, not the request's.
fn joined(r: Result<SinkOutcome, tokio::task::JoinError>) -> SinkOutcome {
    r.unwrap_or_else(|e| SinkOutcome::Failed {
        error: SinkError::broker("the publish task failed", e),
    })
}

/// Decides one sink for one delivery: its receipt if it has one; else publishes when no other
/// publish of the id is in flight there, or waits for that one's outcome (until the deadline).
struct Driver {
    ledger: Arc<Ledger>,
    metrics: Arc<Metrics>,
    sink: SinkHandle,
    outgoing: Arc<Outgoing>,
    deadline: tokio::time::Instant,
    settle_limit: Duration,
    /// Set for a sink with `on_unavailable: spool`.
    spool: Option<Arc<Spool>>,
    /// The spool's dead-letter store, for every sink when a spool is configured: where an event
    /// the broker refuses for its size is kept.
    dead_letters: Option<Arc<Spool>>,
    shared: Option<Arc<SharedLedger>>,
}

/// A claim in the shared ledger, to record the publish's outcome at.
type SharedClaim = Option<(Arc<SharedLedger>, u64)>;

/// While another replica holds the claim, how often it is looked at again.
const SHARED_BUSY_POLL: Duration = Duration::from_millis(100);

impl Driver {
    async fn run(self) -> SinkOutcome {
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
async fn dead_letter(spool: &Spool, sink: &str, outgoing: &Outgoing, error: &SinkError) {
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

fn report(s: &SinkHandle, outcome: SinkOutcome) -> SinkReport {
    SinkReport {
        name: s.name.clone(),
        kind: s.kind,
        required: s.required,
        outcome,
    }
}
