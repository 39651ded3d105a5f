//! The delivery index itself: one record per event id, bounded by count and age, with the
//! lookups the operator's questions need (by event id, by call id, by sink and outcome).
//!
//! Pure data: no clock, no I/O, no locks. The caller passes the time, so every decision here
//! (what merges over what, what is evicted, what a query returns) is a unit test away.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::event::EventKind;
use crate::sinks::Receipt;

/// What the sender was answered for one delivery of the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// 200: every required sink holds the event (or the spool does).
    Accepted,
    /// 503 + Retry-After: a required sink did not confirm; the sender retries.
    NotDelivered,
    /// 413: a required sink can never take the event; published nowhere.
    TooLarge,
}

impl Answer {
    pub fn http_status(self) -> u16 {
        match self {
            Answer::Accepted => 200,
            Answer::NotDelivered => 503,
            Answer::TooLarge => 413,
        }
    }
}

/// One delivery of the event (the first webhook, a sender's retry, a backfill).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub at_ms: u64,
    pub http_status: u16,
    pub answer: Answer,
}

/// What one sink did with the event, as last known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Published and confirmed by this bridge.
    Acked,
    /// Confirmed by an earlier delivery of the same id; not published again.
    AlreadyAcked,
    /// The sink's `events` filter does not want the event.
    Skipped,
    /// Written to the spool; the replayer delivers it.
    Spooled,
    /// Another delivery's publish was still in flight at the deadline.
    InProgress,
    /// An optional sink still deciding when the answer went out.
    Pending,
    Failed,
    /// Delivered from the spool (after a spooling answer or a redrive).
    Replayed,
    /// The spool gave up on it: kept in the dead-letter store.
    DeadLettered,
}

impl Outcome {
    pub const ALL: [Outcome; 9] = [
        Outcome::Acked,
        Outcome::AlreadyAcked,
        Outcome::Skipped,
        Outcome::Spooled,
        Outcome::InProgress,
        Outcome::Pending,
        Outcome::Failed,
        Outcome::Replayed,
        Outcome::DeadLettered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Acked => "acked",
            Outcome::AlreadyAcked => "already_acked",
            Outcome::Skipped => "skipped",
            Outcome::Spooled => "spooled",
            Outcome::InProgress => "in_progress",
            Outcome::Pending => "pending",
            Outcome::Failed => "failed",
            Outcome::Replayed => "replayed",
            Outcome::DeadLettered => "dead_lettered",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// Whether a copy is in the broker by this bridge's account (a receipt exists).
    pub fn stored(self) -> bool {
        matches!(
            self,
            Outcome::Acked | Outcome::AlreadyAcked | Outcome::Replayed
        )
    }
}

/// What the audit found when it read the copy back by its receipt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The broker holds a message at the receipt with this event's id.
    Verified,
    /// The broker does not hold it (or holds another message there), while it should.
    Missing,
    /// The copy cannot be read back: the destination keeps nothing (core NATS, the null sink),
    /// has no read by receipt (RabbitMQ), or its retention may have removed it.
    Unverifiable,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Verified => "verified",
            Verdict::Missing => "missing",
            Verdict::Unverifiable => "unverifiable",
        }
    }

    pub fn parse(s: &str) -> Option<Verdict> {
        [Verdict::Verified, Verdict::Missing, Verdict::Unverifiable]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditResult {
    pub verdict: Verdict,
    pub at_ms: u64,
    /// Why, for anything but verified.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Box<str>>,
}

/// One sink's part of a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SinkEntry {
    pub sink: String,
    pub kind: String,
    pub required: bool,
    pub outcome: Outcome,
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
    /// The failure (`code: detail`), or what a spooling or dead-lettering was caused by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Box<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spool_seq: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditResult>,
}

impl SinkEntry {
    /// Whether `self` (newer) should replace `old` in the record: a publish's settled outcome
    /// is never overwritten by a weaker report of a later delivery — `pending` by anything
    /// settled, and a retry's `already_acked` of the same receipt by the acknowledgement (which
    /// keeps its audit verdict).
    fn replaces(&self, old: &SinkEntry) -> bool {
        if self.outcome == Outcome::Pending && old.outcome != Outcome::Pending {
            return false;
        }
        if self.outcome == Outcome::AlreadyAcked && old.outcome.stored() {
            return self.receipt != old.receipt;
        }
        true
    }
}

/// Everything known about one event's delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Order of first sight: the pagination cursor.
    pub seq: u64,
    pub event_id: String,
    pub call_id: String,
    /// The event's kind (`status`, `analysis`, ...).
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// `reconcile` on an event backfilled from the platform's call API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    pub received_at_ms: u64,
    /// The last answer (absent while only a background outcome is known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
    /// Each delivery of the event, oldest first (at most [`MAX_ATTEMPTS`]: the first and the
    /// latest ones).
    pub attempts: Vec<Attempt>,
    pub sinks: Vec<SinkEntry>,
}

/// Deliveries kept per record; beyond it the oldest retries after the first are dropped.
pub const MAX_ATTEMPTS: usize = 8;

impl Record {
    pub fn sink(&self, name: &str) -> Option<&SinkEntry> {
        self.sinks.iter().find(|s| s.sink == name)
    }

    fn merge_sink(&mut self, entry: SinkEntry) {
        match self.sinks.iter_mut().find(|s| s.sink == entry.sink) {
            Some(old) if entry.replaces(old) => *old = entry,
            Some(_) => {}
            None => self.sinks.push(entry),
        }
    }
}

/// The event's identity, as the fan-out knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventMeta {
    pub event_id: String,
    pub call_id: String,
    pub kind: EventKind,
    pub status: Option<String>,
    pub origin: Option<String>,
}

/// The bounds: count and age (the defaults hold the ledger's window).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    pub max_events: usize,
    pub max_age_ms: u64,
}

/// Filters of `GET /deliveries`; each present one must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    pub call_id: Option<String>,
    pub event_id: Option<String>,
    pub sink: Option<String>,
    pub outcome: Option<OutcomeFilter>,
    /// Received at or after (ms since the epoch).
    pub since_ms: Option<u64>,
    /// Only records after this cursor (a previous page's `next`).
    pub after: Option<u64>,
    pub limit: usize,
}

/// `outcome=`: a sink's outcome, or what its audit found (`unaudited`: a stored copy no audit
/// has judged yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeFilter {
    Outcome(Outcome),
    Audit(Verdict),
    Unaudited,
}

impl OutcomeFilter {
    pub fn parse(s: &str) -> Option<OutcomeFilter> {
        if s == "unaudited" {
            return Some(OutcomeFilter::Unaudited);
        }
        Outcome::parse(s)
            .map(OutcomeFilter::Outcome)
            .or_else(|| Verdict::parse(s).map(OutcomeFilter::Audit))
    }

    fn matches(self, e: &SinkEntry) -> bool {
        match self {
            OutcomeFilter::Outcome(o) => e.outcome == o,
            OutcomeFilter::Audit(v) => e.audit.as_ref().is_some_and(|a| a.verdict == v),
            OutcomeFilter::Unaudited => e.outcome.stored() && e.audit.is_none(),
        }
    }
}

impl Query {
    fn matches(&self, r: &Record) -> bool {
        if self.call_id.as_ref().is_some_and(|c| *c != r.call_id)
            || self.event_id.as_ref().is_some_and(|e| *e != r.event_id)
            || self.since_ms.is_some_and(|t| r.received_at_ms < t)
            || self.after.is_some_and(|a| r.seq <= a)
        {
            return false;
        }
        match (&self.sink, self.outcome) {
            (None, None) => true,
            (Some(name), None) => r.sink(name).is_some(),
            (Some(name), Some(f)) => r.sink(name).is_some_and(|e| f.matches(e)),
            (None, Some(f)) => r.sinks.iter().any(|e| f.matches(e)),
        }
    }
}

/// One page of a query's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Page {
    pub deliveries: Vec<Record>,
    /// The cursor of the next page (`after=`), when there may be more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<u64>,
}

/// Per sink, over the 200s of a time range: what `callbridge audit` prints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkAudit {
    pub sink: String,
    /// 200s for which the sink stored a copy (acked, already acked, replayed).
    pub answered: u64,
    pub verified: u64,
    pub missing: u64,
    pub unverifiable: u64,
    /// Stored copies no audit has judged yet (sampled out, queued, or the audit is off).
    pub unaudited: u64,
    /// The missing ones' event ids (at most [`MAX_MISSING_LISTED`]).
    pub missing_ids: Vec<String>,
}

pub const MAX_MISSING_LISTED: usize = 100;

/// Why a record left the index, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evicted {
    Age,
    Cap,
}

/// The records by their cursor (`seq`, the order of first sight), and two lookups into them.
/// Each record is one allocation, and an event id is held twice (the record's and the lookup's
/// key): at the cap this is what the bridge holds most of (docs/benchmarks-notes.md).
#[derive(Debug)]
pub struct Index {
    bounds: Bounds,
    next_seq: u64,
    records: BTreeMap<u64, Box<Record>>,
    /// Event id → its record's cursor.
    ids: HashMap<String, u64>,
    /// Call id → its events' cursors, in order of first sight.
    calls: HashMap<String, Vec<u64>>,
}

impl Index {
    pub fn new(bounds: Bounds) -> Index {
        Index {
            bounds,
            next_seq: 1,
            records: BTreeMap::new(),
            ids: HashMap::new(),
            calls: HashMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    pub fn get(&self, event_id: &str) -> Option<&Record> {
        self.ids
            .get(event_id)
            .and_then(|seq| self.records.get(seq))
            .map(|r| &**r)
    }

    fn get_mut(&mut self, event_id: &str) -> Option<&mut Record> {
        let seq = self.ids.get(event_id)?;
        self.records.get_mut(seq).map(|r| &mut **r)
    }

    /// Puts back a record read from the durable store (oldest first), keeping its cursor.
    pub fn restore(&mut self, record: Record) {
        self.next_seq = self.next_seq.max(record.seq + 1);
        if self.ids.contains_key(&record.event_id) || self.records.contains_key(&record.seq) {
            return;
        }
        self.insert(record);
    }

    fn insert(&mut self, r: Record) {
        self.ids.insert(r.event_id.clone(), r.seq);
        self.calls.entry(r.call_id.clone()).or_default().push(r.seq);
        self.records.insert(r.seq, Box::new(r));
    }

    /// The record of `meta`'s event, created at `now_ms` when new.
    fn entry(&mut self, meta: &EventMeta, now_ms: u64) -> &mut Record {
        if !self.ids.contains_key(&meta.event_id) {
            let record = Record {
                seq: self.next_seq,
                event_id: meta.event_id.clone(),
                call_id: meta.call_id.clone(),
                kind: meta.kind,
                status: meta.status.clone(),
                origin: meta.origin.clone(),
                received_at_ms: now_ms,
                answer: None,
                // Most events are answered once.
                attempts: Vec::with_capacity(1),
                sinks: Vec::new(),
            };
            self.next_seq += 1;
            self.insert(record);
        }
        self.get_mut(&meta.event_id).expect("inserted above")
    }

    /// One delivery of the event was answered: records the answer and each sink's outcome.
    pub fn answered(
        &mut self,
        meta: &EventMeta,
        answer: Answer,
        sinks: Vec<SinkEntry>,
        now_ms: u64,
    ) -> &Record {
        let r = self.entry(meta, now_ms);
        r.answer = Some(answer);
        if r.attempts.len() >= MAX_ATTEMPTS {
            r.attempts.remove(1);
        }
        r.attempts.push(Attempt {
            at_ms: now_ms,
            http_status: answer.http_status(),
            answer,
        });
        if r.sinks.is_empty() {
            // The first answer's list as it is: no second allocation, no spare room.
            r.sinks = sinks;
        } else {
            for s in sinks {
                r.merge_sink(s);
            }
        }
        r
    }

    /// A sink's outcome known after the answer (an optional sink that finished in the
    /// background, a replay from the spool, a dead letter). Returns the updated record.
    pub fn sink_update(&mut self, meta: &EventMeta, entry: SinkEntry, now_ms: u64) -> &Record {
        let r = self.entry(meta, now_ms);
        // A later outcome of the same sink always wins here: it is the same copy's fate.
        match r.sinks.iter_mut().find(|s| s.sink == entry.sink) {
            Some(old) => *old = entry,
            None => r.sinks.push(entry),
        }
        r
    }

    /// Records what the audit found for `sink`'s copy, if the record still holds that copy
    /// (the receipt it read). False when the record or the copy is gone.
    pub fn audited(
        &mut self,
        event_id: &str,
        sink: &str,
        receipt: &Receipt,
        result: AuditResult,
    ) -> bool {
        let Some(e) = self
            .get_mut(event_id)
            .and_then(|r| r.sinks.iter_mut().find(|s| s.sink == sink))
        else {
            return false;
        };
        if e.receipt.as_ref() != Some(receipt) {
            return false;
        }
        e.audit = Some(result);
        true
    }

    /// Drops what is past the bounds at `now_ms`: the oldest records beyond `max_events`, and
    /// those first seen more than `max_age` ago. Returns the dropped event ids and why.
    pub fn evict(&mut self, now_ms: u64) -> Vec<(String, Evicted)> {
        let mut out = Vec::new();
        while let Some((_, oldest)) = self.records.first_key_value() {
            let why = if self.records.len() > self.bounds.max_events {
                Evicted::Cap
            } else if now_ms.saturating_sub(oldest.received_at_ms) > self.bounds.max_age_ms {
                Evicted::Age
            } else {
                break;
            };
            let (seq, r) = self.records.pop_first().expect("first exists");
            self.ids.remove(&r.event_id);
            if let Some(seqs) = self.calls.get_mut(&r.call_id) {
                seqs.retain(|s| *s != seq);
                if seqs.is_empty() {
                    self.calls.remove(&r.call_id);
                }
            }
            out.push((r.event_id, why));
        }
        out
    }

    /// The records `q` selects, in order of first sight, at most `q.limit`.
    pub fn query(&self, q: &Query) -> Page {
        let limit = q.limit.max(1);
        let from = q.after.map_or(0, |a| a.saturating_add(1));
        let candidates: Box<dyn Iterator<Item = &Record> + '_> = match (&q.event_id, &q.call_id) {
            (Some(id), _) => Box::new(self.get(id).into_iter()),
            (None, Some(call)) => Box::new(
                self.calls
                    .get(call)
                    .into_iter()
                    .flatten()
                    .filter_map(|seq| self.records.get(seq))
                    .map(|r| &**r),
            ),
            (None, None) => Box::new(self.records.range(from..).map(|(_, r)| &**r)),
        };
        let mut deliveries = Vec::new();
        let mut next = None;
        for r in candidates {
            if !q.matches(r) {
                continue;
            }
            if deliveries.len() == limit {
                next = deliveries.last().map(|r: &Record| r.seq);
                break;
            }
            deliveries.push(r.clone());
        }
        Page { deliveries, next }
    }

    /// Per sink, over the accepted events received at or after `since_ms`: how many copies
    /// were stored and what the audit found of them. Sinks in order of first appearance.
    pub fn audit_summary(&self, since_ms: u64) -> Vec<SinkAudit> {
        let mut out: Vec<SinkAudit> = Vec::new();
        for r in self.records.values() {
            if r.received_at_ms < since_ms || r.answer != Some(Answer::Accepted) {
                continue;
            }
            for e in r.sinks.iter().filter(|e| e.outcome.stored()) {
                let i = match out.iter().position(|s| s.sink == e.sink) {
                    Some(i) => i,
                    None => {
                        out.push(SinkAudit {
                            sink: e.sink.clone(),
                            ..SinkAudit::default()
                        });
                        out.len() - 1
                    }
                };
                let s = &mut out[i];
                s.answered += 1;
                match e.audit.as_ref().map(|a| a.verdict) {
                    Some(Verdict::Verified) => s.verified += 1,
                    Some(Verdict::Missing) => {
                        s.missing += 1;
                        if s.missing_ids.len() < MAX_MISSING_LISTED {
                            s.missing_ids.push(r.event_id.clone());
                        }
                    }
                    Some(Verdict::Unverifiable) => s.unverifiable += 1,
                    None => s.unaudited += 1,
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
