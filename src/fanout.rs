//! Fan-out: claim the event id → publish to every sink that still needs it, concurrently →
//! record the receipts → the verdict.
//!
//! The verdict is `accepted` only when every *required* sink whose `events` filter matches holds
//! a receipt, from this delivery or an earlier one. Each publish runs under the sink's
//! `timeout_ms`, and all of them under the request deadline, so the answer always comes in time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;
use tracing::Instrument;

use crate::event::Event;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::sinks::{Outgoing, Receipt, SinkError, SinkHandle};

/// The reason code of [`SinkOutcome::InProgress`], in answers, logs and metrics.
pub const IN_PROGRESS: &str = "in_progress";

pub struct Fanout {
    sinks: Vec<SinkHandle>,
    ledger: Ledger,
    metrics: Arc<Metrics>,
}

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
    /// Another delivery of the same event id held the ledger's claim past this delivery's
    /// deadline: nothing was published, and the sender's retry will find that delivery's receipts.
    InProgress,
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
            SinkOutcome::Failed { .. } | SinkOutcome::InProgress
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
            ledger,
            metrics,
        }
    }

    pub fn sinks(&self) -> &[SinkHandle] {
        &self.sinks
    }

    /// Publishes `event` to every sink that wants it and has not acknowledged it yet.
    pub async fn deliver(&self, event: Event, deadline: tokio::time::Instant) -> Delivery {
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
        if wanted.is_empty() {
            return Delivery { event_id, reports };
        }

        let claim = match self.ledger.claim(&event_id, deadline).await {
            Ok(c) => c,
            Err(_) => {
                for s in wanted {
                    self.metrics.sink_outcome(&s.name, IN_PROGRESS);
                    reports.push(report(s, SinkOutcome::InProgress));
                }
                return Delivery { event_id, reports };
            }
        };

        let mut to_publish = Vec::new();
        for s in wanted {
            match claim.acked.get(&s.name) {
                Some(receipt) => {
                    self.metrics.idempotency_hit(&s.name);
                    reports.push(report(
                        s,
                        SinkOutcome::AlreadyAcked {
                            receipt: receipt.clone(),
                        },
                    ))
                }
                None => to_publish.push(s),
            }
        }
        if to_publish.is_empty() {
            return Delivery { event_id, reports };
        }

        let outgoing = Outgoing::new(event);
        // An event a required sink can never take is the sender's to fix: publish it nowhere,
        // so the 413 leaves no partial delivery behind.
        let refused: Vec<(&str, SinkError)> = to_publish
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
            for s in to_publish {
                let error = match refused.iter().position(|(n, _)| *n == s.name) {
                    Some(i) => refused.swap_remove(i).1,
                    None => SinkError::TooLarge(format!(
                        "not published: required sink {first} can never take this event"
                    )),
                };
                self.metrics.sink_outcome(&s.name, error.code());
                tracing::warn!(sink = %s.name, reason = error.code(), error = %error.detail(), "event too large, published nowhere");
                reports.push(report(s, SinkOutcome::Failed { error }));
            }
            drop(claim);
            reports.sort_by_key(|r| self.sinks.iter().position(|s| s.name == r.name));
            return Delivery { event_id, reports };
        }
        let publishes = to_publish.iter().map(|s| {
            let outgoing = &outgoing;
            let destination = match s.sink.destination(&outgoing.event) {
                d if d.is_empty() => s.name.clone(),
                d => d,
            };
            let span = tracing::info_span!(
                "publish",
                otel.kind = "producer",
                otel.name = %format!("send {destination}"),
                otel.status_code = tracing::field::Empty,
                messaging.system = s.kind,
                messaging.operation.type = "send",
                messaging.destination.name = %destination,
                messaging.message.id = %outgoing.event.id,
                sink = %s.name,
            );
            async move {
                let started = Instant::now();
                let budget = s
                    .timeout
                    .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
                let result = match tokio::time::timeout(budget, s.sink.publish(outgoing)).await {
                    Ok(r) => r,
                    Err(_) => Err(SinkError::Timeout(budget.as_millis() as u64)),
                };
                let latency = started.elapsed();
                self.metrics.publish_latency(&s.name, latency);
                match result {
                    Ok(receipt) => {
                        self.metrics.sink_outcome(&s.name, "acked");
                        SinkOutcome::Acked { receipt, latency }
                    }
                    Err(error) => {
                        tracing::Span::current().record("otel.status_code", "ERROR");
                        self.metrics.sink_outcome(&s.name, error.code());
                        tracing::warn!(sink = %s.name, reason = error.code(), error = %error.detail(), "publish failed");
                        SinkOutcome::Failed { error }
                    }
                }
            }
            .instrument(span)
        });
        let outcomes = join_all(publishes).await;
        for (s, outcome) in to_publish.into_iter().zip(outcomes) {
            if let SinkOutcome::Acked { receipt, .. } = &outcome {
                self.ledger.record(&event_id, &s.name, receipt.clone());
            }
            reports.push(report(s, outcome));
        }
        drop(claim);
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

fn report(s: &SinkHandle, outcome: SinkOutcome) -> SinkReport {
    SinkReport {
        name: s.name.clone(),
        kind: s.kind,
        required: s.required,
        outcome,
    }
}
