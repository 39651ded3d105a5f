//! The delivery index and its audit: where each event went, and proof that each copy answered
//! 200 is still where its receipt says.
//!
//! **The index** ([`index`]) keeps, per event id, the call, the kind and status, when it was
//! received, every answer given for it, and per sink the outcome with its receipt (Kafka
//! partition and offset, JetStream stream and sequence, RabbitMQ exchange and routing key,
//! file offset) or the error, the spool sequence, the dead letter. The fan-out records every
//! answer here (one call, `fanout/record.rs`), the spool's replayer every replay and dead
//! letter, so a redrive updates the same record. Bounded by count and age (`deliveries`).
//!
//! **The audit** ([`audit`]) reads each acknowledged copy back from its broker
//! `audit.delay_secs` after the 200, by its receipt, and records *verified*, *missing* or
//! *unverifiable* per sink. Its queue is bounded and fed with `try_send`: a full queue skips
//! (counted), it never slows an answer.
//!
//! **Lookup** ([`routes`], [`cli`]): `GET /deliveries`, `GET /deliveries/audit`,
//! `callbridge deliveries CALL_ID`, `callbridge audit --since 1h`.
//!
//! Dependencies: this module knows sinks' receipts, the event and the metrics, nothing of the
//! fan-out, the spool or the configuration (they call in; `config` assembles the settings).

pub mod audit;
pub mod cli;
pub mod index;
pub mod metrics;
pub mod routes;
pub mod store;

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::event::Event;
use crate::sinks::{Receipt, SinkError};

use self::metrics::DeliveryMetrics;
pub use index::{Answer, AuditResult, EventMeta, Outcome, Record, SinkEntry, Verdict};
use index::{Bounds, Index, Page, Query, SinkAudit};

/// `deliveries`: how much of the delivery history is kept.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeliverySettings {
    /// On by default: every answer is recorded (the lookup on the admin plane, the audit).
    /// `false` keeps no record and reads nothing back (`audit` is then off too); the lookup
    /// answers 404.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// Most events kept (the oldest go first). The default, like `idempotency.max_entries`,
    /// holds the ledger's 30-minute window at about 55 events per second; `validate` warns
    /// when it cannot hold `max_age_secs` at `idempotency.expected_rate_per_sec`.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
    /// Events first received longer ago than this are dropped (default: the ledger's window,
    /// 30 minutes).
    #[serde(default = "default_max_age_secs")]
    pub max_age_secs: u64,
}

fn default_enabled() -> bool {
    true
}
fn default_max_events() -> usize {
    100_000
}
fn default_max_age_secs() -> u64 {
    1800
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            enabled: default_enabled(),
            max_events: default_max_events(),
            max_age_secs: default_max_age_secs(),
        }
    }
}

/// Measured memory per indexed event with three broker sinks' receipts and audit verdicts, in
/// the steady state at the cap (benches/delivery_index.rs: 1303–1333 bytes): what sizing
/// `deliveries.max_events` costs.
pub const BYTES_PER_EVENT: u64 = 1350;

impl DeliverySettings {
    /// `validate`: the bounds make sense, and hold `max_age_secs` at the expected rate.
    pub fn check(&self, expected_rate_per_sec: Option<u64>) -> Vec<(&'static str, String, bool)> {
        let mut out = Vec::new();
        if self.max_events == 0 {
            out.push((
                "deliveries.max_events",
                "must be greater than 0".to_string(),
                true,
            ));
        }
        if self.max_age_secs == 0 {
            out.push((
                "deliveries.max_age_secs",
                "must be greater than 0".to_string(),
                true,
            ));
        }
        if let Some(rate) = expected_rate_per_sec.filter(|r| *r > 0) {
            let needed = self.max_age_secs.saturating_mul(rate);
            if (self.max_events as u64) < needed {
                out.push((
                    "deliveries.max_events",
                    format!(
                        "at {rate} events/s the cap of {} events holds {} s, not max_age_secs {} s: \
                         set max_events to at least {needed} (about {} MiB at ~{BYTES_PER_EVENT} \
                         bytes per event)",
                        self.max_events,
                        self.max_events as u64 / rate,
                        self.max_age_secs,
                        needed.saturating_mul(BYTES_PER_EVENT) >> 20,
                    ),
                    false,
                ));
            }
        }
        out
    }

    fn bounds(&self) -> Bounds {
        Bounds {
            max_events: self.max_events,
            max_age_ms: self.max_age_secs.saturating_mul(1000),
        }
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl EventMeta {
    pub fn of(event: &Event) -> EventMeta {
        EventMeta {
            event_id: event.id.clone(),
            call_id: event.subject.clone(),
            kind: event.data.kind,
            status: event.data.status.clone(),
            origin: event.origin.clone(),
        }
    }
}

impl SinkEntry {
    /// A sink's entry at `now`: its outcome, and what goes with it.
    pub fn new(sink: &str, kind: &str, required: bool, outcome: Outcome) -> SinkEntry {
        SinkEntry {
            sink: sink.to_string(),
            kind: kind.to_string(),
            required,
            outcome,
            at_ms: now_ms(),
            receipt: None,
            error: None,
            spool_seq: None,
            audit: None,
        }
    }

    pub fn with_receipt(mut self, receipt: Receipt) -> SinkEntry {
        self.receipt = Some(receipt);
        self
    }

    pub fn with_error(mut self, error: &SinkError) -> SinkEntry {
        self.error = Some(format!("{}: {}", error.code(), error.detail()).into());
        self
    }

    pub fn with_reason(mut self, reason: &str) -> SinkEntry {
        self.error = Some(reason.into());
        self
    }

    pub fn with_spool_seq(mut self, seq: Option<u64>) -> SinkEntry {
        self.spool_seq = seq;
        self
    }
}

/// The sink and receipt of each of `entries` that `stored` selects.
fn copies(entries: &[SinkEntry], stored: impl Fn(&SinkEntry) -> bool) -> Vec<(String, Receipt)> {
    entries
        .iter()
        .filter(|e| stored(e))
        .filter_map(|e| e.receipt.clone().map(|r| (e.sink.clone(), r)))
        .collect()
}

/// The index, its durable copy and the audit's queue: what the fan-out, the replayer and the
/// routes share.
pub struct Deliveries {
    index: Mutex<Index>,
    store: Arc<dyn store::Store>,
    audit: Option<audit::Queue>,
    metrics: Arc<DeliveryMetrics>,
}

impl Deliveries {
    /// An index in memory, without audit.
    pub fn new(settings: &DeliverySettings, metrics: Arc<DeliveryMetrics>) -> Deliveries {
        Deliveries {
            index: Mutex::new(Index::new(settings.bounds())),
            store: Arc::new(store::Memory),
            audit: None,
            metrics,
        }
    }

    /// Keeps the index in `store` too, and fills it with what the store holds (oldest first).
    pub fn with_store(self, store: Arc<dyn store::Store>) -> Result<Deliveries, store::StoreError> {
        let records = store.load()?;
        {
            let mut index = self.lock();
            for r in records {
                index.restore(r);
            }
            index.evict(now_ms());
        }
        Ok(Deliveries { store, ..self })
    }

    /// Audits every 200 (as `settings` samples) through `queue`.
    pub fn with_audit(mut self, queue: audit::Queue) -> Deliveries {
        self.audit = Some(queue);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One delivery of `meta`'s event was answered `answer`, each sink as `sinks` says.
    pub fn answered(&self, meta: &EventMeta, answer: Answer, sinks: Vec<SinkEntry>) {
        // The copies this delivery stored (a retry's `already_acked` was audited before).
        let copies = copies(&sinks, |e| e.outcome == Outcome::Acked);
        self.update(&meta.event_id, copies, |index, now| {
            index.answered(meta, answer, sinks, now).answer
        });
    }

    /// A sink's outcome learnt after the answer: a background publish, a replay, a dead letter.
    pub fn sink_update(&self, meta: &EventMeta, entry: SinkEntry) {
        let copies = copies(std::slice::from_ref(&entry), |e| e.outcome.stored());
        self.update(&meta.event_id, copies, |index, now| {
            index.sink_update(meta, entry, now).answer
        });
    }

    /// What the spool's replayer did with `event`'s entry `seq` for `sink` (also after a
    /// redrive): the same record, the sink's entry replaced.
    pub fn replayed(
        &self,
        event: &Event,
        sink: &crate::sinks::SinkHandle,
        seq: u64,
        outcome: Outcome,
        receipt: Option<Receipt>,
        reason: Option<&str>,
    ) {
        let mut entry =
            SinkEntry::new(&sink.name, sink.kind, sink.required, outcome).with_spool_seq(Some(seq));
        entry.receipt = receipt;
        if let Some(r) = reason {
            entry = entry.with_reason(r);
        }
        self.sink_update(&EventMeta::of(event), entry);
    }

    /// Applies `change` to the index (it returns the event's answer), evicts what is past the
    /// bounds, hands the record to the store (under the lock, so the store sees the updates in
    /// order; the memory store does nothing, the redb one queues a copy), then offers `copies`
    /// to the audit when the event was answered 200.
    fn update(
        &self,
        event_id: &str,
        copies: Vec<(String, Receipt)>,
        change: impl FnOnce(&mut Index, u64) -> Option<Answer>,
    ) {
        let now = now_ms();
        let (answer, evicted) = {
            let mut index = self.lock();
            let answer = change(&mut index, now);
            let evicted = index.evict(now);
            let removed: Vec<String> = evicted.iter().map(|(id, _)| id.clone()).collect();
            match index.get(event_id) {
                Some(r) => self.store.save(r, &removed),
                None => self.store.remove(&removed),
            }
            (answer, evicted)
        };
        for (_, why) in &evicted {
            let why = match why {
                index::Evicted::Age => "age",
                index::Evicted::Cap => "cap",
            };
            self.metrics.evicted.with_label_values(&[why]).inc();
        }
        if let Some(queue) = &self.audit {
            if answer == Some(Answer::Accepted) && !copies.is_empty() {
                queue.offer(event_id, copies);
            }
        }
    }

    /// What the audit found, into the record of `event_id`.
    pub fn audited(&self, event_id: &str, sink: &str, receipt: &Receipt, result: AuditResult) {
        let mut index = self.lock();
        if index.audited(event_id, sink, receipt, result) {
            if let Some(r) = index.get(event_id) {
                self.store.save(r, &[]);
            }
        }
    }

    pub fn query(&self, q: &Query) -> Page {
        self.lock().query(q)
    }

    pub fn audit_summary(&self, since_ms: u64) -> Vec<SinkAudit> {
        self.lock().audit_summary(since_ms)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn metrics(&self) -> &Arc<DeliveryMetrics> {
        &self.metrics
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Writes what the store has not written yet (at shutdown).
    pub fn flush(&self) {
        self.store.flush();
    }
}

#[cfg(test)]
mod tests;
