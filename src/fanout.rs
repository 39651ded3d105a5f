//! Fan-out: claim the event id → publish to every sink that still needs it, concurrently →
//! record the receipts → the verdict.
//!
//! The verdict is `accepted` only when every *required* sink whose `events` filter matches holds
//! a receipt, from this delivery or an earlier one. Each publish runs under the sink's
//! `timeout_ms`, and all of them under the request deadline, so the answer always comes in time.
//!
//! ```text
//! fanout.rs     the delivery across the sinks: filter, size, one task per sink, the verdict
//! driver.rs     one sink's task: ledger take, publish or wait, spool, dead letter
//! outcome.rs    what it comes to: SinkOutcome, SinkReport, Delivery
//! record.rs     every answer into the delivery index
//! ```

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use futures::FutureExt;
use tracing::Instrument;

use crate::event::Event;
use crate::ledger::shared::SharedLedger;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::sinks::{OnUnavailable, Outgoing, SinkError, SinkHandle};
use crate::spool::Spool;

mod driver;
mod outcome;
mod record;

pub use driver::{SETTLE_LIMIT, SPOOL_RESERVE};
pub use outcome::{Delivery, SinkOutcome, SinkReport, IN_PROGRESS};

use driver::{dead_letter, Driver};
use outcome::report;

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
