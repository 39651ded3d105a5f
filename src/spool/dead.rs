//! Dead letters: what no retry can deliver, kept one per (sink, event id) up to
//! `max_dead_letters`, and what an operator does with them — list (paged, filtered), count,
//! redrive and purge by one filter ([`PurgeFilter`]) that `callbridge dlq`, the admin routes and
//! the console share.

use std::sync::atomic::Ordering;

use serde::Serialize;

use super::entry::{dead_record, dead_record_bytes, dead_record_head, encode, now_ms, Entry};
use super::store::{self, Redrive, Table};
use super::{dead_letter_event_id, event_id_of, Spool, SpoolError};
use crate::sinks::Outgoing;

/// An event the spool gave up on, and why (`callbridge dlq list`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeadLetter {
    pub sink: String,
    pub seq: u64,
    pub reason: String,
    pub dead_at_ms: u64,
    pub call_id: String,
    pub event_id: String,
}

/// One page of dead letters, and where the next one starts (`None`: this was the last).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeadLetterPage {
    pub dead_letters: Vec<DeadLetter>,
    /// The cursor of the next page (`after=`): `<sink>:<seq>` of this page's last letter.
    pub next: Option<String>,
}

/// Where a page of dead letters starts: after this (sink, seq).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadCursor {
    pub sink: String,
    pub seq: u64,
}

impl DeadCursor {
    /// `<sink>:<seq>` (a sink name may hold `:`; the sequence is after the last one).
    pub fn parse(s: &str) -> Option<DeadCursor> {
        let (sink, seq) = s.rsplit_once(':')?;
        Some(DeadCursor {
            sink: sink.to_string(),
            seq: seq.parse().ok()?,
        })
    }
}

impl std::fmt::Display for DeadCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.sink, self.seq)
    }
}

/// Which dead letters `purge`, `redrive_where`, `count_dead` and a filtered page pick: of one
/// sink or all, one sequence or all, only those whose reason says something, only those that
/// died in a time range. Every field given must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PurgeFilter {
    pub sink: Option<String>,
    /// Unix milliseconds: only letters that died strictly before this.
    pub before_ms: Option<u64>,
    /// Unix milliseconds: only letters that died at or after this.
    pub since_ms: Option<u64>,
    /// Only letters whose reason contains this (ASCII case ignored).
    pub reason: Option<String>,
    /// Only the letter of this sequence number.
    pub seq: Option<u64>,
}

/// The filter the console and `callbridge dlq` share (the same type: one set of rules).
pub type DeadFilter = PurgeFilter;

impl PurgeFilter {
    /// Whether the letter `seq` of `sink`, dead at `dead_at_ms` for `reason`, is picked.
    pub fn matches(&self, sink: &str, seq: u64, dead_at_ms: u64, reason: &str) -> bool {
        self.sink.as_deref().is_none_or(|want| want == sink)
            && self.seq.is_none_or(|want| want == seq)
            && self.before_ms.is_none_or(|before| dead_at_ms < before)
            && self.since_ms.is_none_or(|since| dead_at_ms >= since)
            && self.reason.as_deref().is_none_or(|want| {
                reason
                    .to_ascii_lowercase()
                    .contains(&want.to_ascii_lowercase())
            })
    }
}

impl Spool {
    /// Moves an entry no retry can deliver to the dead-letter table, with the reason. When a
    /// dead letter of this event and sink is kept already, the entry is only removed; at
    /// `max_dead_letters` it is removed and not kept (logged with its ids, counted as
    /// discarded): a queue is never blocked by a full dead-letter store.
    pub async fn dead_letter(
        &self,
        sink: &str,
        entry: &Entry,
        reason: &str,
    ) -> Result<(), SpoolError> {
        let event_id = event_id_of(&entry.event);
        let keep = match self
            .state()
            .reserve_dead(sink, &event_id, self.max_dead_letters)
        {
            Ok(keep) => keep,
            Err(_) => {
                tracing::error!(
                    sink,
                    event_id = %event_id,
                    call_id = %entry.call_id,
                    reason,
                    max_dead_letters = self.max_dead_letters,
                    "dead-letter store full: the refused event is not kept (purge or redrive dead letters)"
                );
                false
            }
        };
        let record: Option<store::DeadRecord> = keep.then(|| {
            let (reason, id) = (reason.to_string(), event_id.clone());
            Box::new(move |raw: &[u8]| dead_record_bytes(&reason, &id, raw)) as store::DeadRecord
        });
        match self.store.take_out(sink, entry.seq, record).await {
            Ok(size) => {
                self.forget(sink, &entry.call_id, size);
                Ok(())
            }
            Err(e) => {
                if keep {
                    self.state().remove_dead(sink, &event_id);
                }
                Err(e)
            }
        }
    }

    /// Dead letters kept, and discarded at the cap since the start, per sink (from memory).
    pub fn dead_counts(&self) -> Vec<(String, u64, u64)> {
        self.state()
            .dead
            .iter()
            .map(|(sink, (kept, discarded))| (sink.clone(), *kept, *discarded))
            .collect()
    }

    /// Keeps an event no sink was given straight in the dead-letter store (an event too large
    /// for a required sink, answered 413): an operator can raise the limit and redrive it.
    /// One dead letter per (sink, event id): a resent event already kept is not stored again.
    /// At `max_dead_letters` it is not kept: [`SpoolError::DeadLettersFull`] (counted as
    /// discarded).
    pub async fn bury(&self, sink: &str, out: &Outgoing, reason: &str) -> Result<(), SpoolError> {
        let raw = encode(now_ms(), &out.event.subject, &out.structured);
        let event_id = out.event.id.as_str();
        let written = {
            let mut st = self.state();
            if !st.reserve_dead(sink, event_id, self.max_dead_letters)? {
                return Ok(());
            }
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            self.store.write(
                Table::Dead,
                sink,
                seq,
                dead_record_bytes(reason, event_id, &raw),
            )
        };
        let result = written.await;
        if result.is_err() {
            self.state().remove_dead(sink, event_id);
        }
        result
    }

    /// A page of dead letters, by sink then sequence: at most `limit`, after `after`, of
    /// `sink` only when given. Blocking.
    pub fn dead_letter_page(
        &self,
        sink: Option<&str>,
        after: Option<&DeadCursor>,
        limit: usize,
    ) -> Result<DeadLetterPage, SpoolError> {
        let filter = PurgeFilter {
            sink: sink.map(str::to_string),
            ..PurgeFilter::default()
        };
        self.dead_letter_page_where(&filter, after, limit)
    }

    /// A page of the dead letters `filter` picks, by sink then sequence: at most `limit`,
    /// after `after`. Blocking.
    pub fn dead_letter_page_where(
        &self,
        filter: &PurgeFilter,
        after: Option<&DeadCursor>,
        limit: usize,
    ) -> Result<DeadLetterPage, SpoolError> {
        let sink = filter.sink.as_deref();
        let mut out = Vec::new();
        let mut more = false;
        use std::ops::Bound;
        let start = match (after, sink) {
            (Some(c), Some(s)) if c.sink.as_str() < s => Bound::Included((s, 0)),
            (Some(c), _) => Bound::Excluded((c.sink.as_str(), c.seq)),
            (None, Some(s)) => Bound::Included((s, 0)),
            (None, None) => Bound::Unbounded,
        };
        self.store.dead_from(start, &mut |s, seq, record| {
            if sink.is_some_and(|want| want != s) {
                return false;
            }
            let letter = dead_letter_of(s, seq, record);
            if !filter.matches(s, seq, letter.dead_at_ms, &letter.reason) {
                return true;
            }
            if out.len() == limit {
                more = true;
                return false;
            }
            out.push(letter);
            true
        })?;
        let next = more
            .then(|| out.last())
            .flatten()
            .map(|d| DeadCursor {
                sink: d.sink.clone(),
                seq: d.seq,
            })
            .map(|c| c.to_string());
        Ok(DeadLetterPage {
            dead_letters: out,
            next,
        })
    }

    /// Removes the dead letters `filter` picks, in one durable commit; returns how many, per
    /// sink. Blocking.
    pub fn purge(&self, filter: &PurgeFilter) -> Result<Vec<(String, u64)>, SpoolError> {
        let mut ids: Vec<(String, String)> = Vec::new();
        self.store.purge(&mut |s, seq, record| {
            if filter.sink.as_deref().is_some_and(|want| want != s) {
                return false;
            }
            let (at, _) = dead_record_head(record);
            // The reason is read only when the filter asks for it (the head is cheaper).
            let reason = match filter.reason {
                Some(_) => dead_record(seq, record).0,
                None => String::new(),
            };
            if !filter.matches(s, seq, at, &reason) {
                return false;
            }
            ids.push((s.to_string(), dead_letter_event_id(seq, record)));
            true
        })?;
        let mut per_sink: Vec<(String, u64)> = Vec::new();
        let mut st = self.state();
        for (s, id) in &ids {
            st.remove_dead(s, id);
            match per_sink.iter_mut().find(|(n, _)| n == s) {
                Some((_, n)) => *n += 1,
                None => per_sink.push((s.clone(), 1)),
            }
        }
        Ok(per_sink)
    }

    /// Every dead letter, oldest first per sink. Blocking.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, SpoolError> {
        let mut out = Vec::new();
        self.store.dead(&mut |sink, seq, record| {
            out.push(dead_letter_of(sink, seq, record));
        })?;
        Ok(out)
    }

    /// Moves dead letters (of `sink`, or all; one `seq`, or all) back into their sinks' queues,
    /// behind what waits there, once the cause is fixed. Returns how many; stops early, with
    /// [`SpoolError::Full`], when the spool has no room for the next one. Blocking.
    pub fn redrive(&self, sink: Option<&str>, seq: Option<u64>) -> Result<u64, SpoolError> {
        self.redrive_where(&PurgeFilter {
            sink: sink.map(str::to_string),
            seq,
            ..PurgeFilter::default()
        })
    }

    /// How many dead letters `filter` picks (what a redrive or purge by it would take now).
    /// Blocking.
    pub fn count_dead(&self, filter: &PurgeFilter) -> Result<u64, SpoolError> {
        let mut n = 0;
        self.store.dead(&mut |s, seq, record| {
            let (reason, at, _) = dead_record(seq, record);
            if filter.matches(s, seq, at, &reason) {
                n += 1;
            }
        })?;
        Ok(n)
    }

    /// One dead letter and its event's stored JSON (None when there is no such letter).
    /// Blocking.
    pub fn dead_letter_event(
        &self,
        sink: &str,
        seq: u64,
    ) -> Result<Option<(DeadLetter, Vec<u8>)>, SpoolError> {
        let mut found = None;
        self.store.dead_from(
            std::ops::Bound::Included((sink, seq)),
            &mut |s, q, record| {
                if s == sink && q == seq {
                    let event = dead_record(q, record)
                        .2
                        .map(|e| e.event)
                        .unwrap_or_default();
                    found = Some((dead_letter_of(s, q, record), event));
                }
                false
            },
        )?;
        Ok(found)
    }

    /// [`Spool::redrive`] of the dead letters `filter` picks. Blocking.
    pub fn redrive_where(&self, filter: &PurgeFilter) -> Result<u64, SpoolError> {
        let mut moved: Vec<(String, String, u64, String)> = Vec::new();
        let mut full = None;
        let mut held = self.state().bytes;
        self.store.redrive(&mut |s, q, record| {
            let (reason, at, entry) = dead_record(q, record);
            if !filter.matches(s, q, at, &reason) {
                return Redrive::Skip;
            }
            let Some(entry) = entry else {
                return Redrive::Skip;
            };
            let raw = encode(now_ms(), &entry.call_id, &entry.event);
            if held + raw.len() as u64 > self.max_bytes {
                full = Some(SpoolError::Full {
                    held,
                    max: self.max_bytes,
                });
                return Redrive::Stop;
            }
            held += raw.len() as u64;
            let id = event_id_of(&entry.event);
            moved.push((s.to_string(), entry.call_id, raw.len() as u64, id));
            Redrive::Move {
                seq: self.next_seq.fetch_add(1, Ordering::Relaxed),
                entry: raw,
            }
        })?;
        {
            let mut st = self.state();
            for (s, call_id, size, id) in &moved {
                st.add(s, call_id, *size);
                st.remove_dead(s, id);
            }
        }
        for (s, _, _, _) in &moved {
            self.appended(s).notify_one();
        }
        match full {
            Some(e) if moved.is_empty() => Err(e),
            _ => Ok(moved.len() as u64),
        }
    }
}

/// A stored dead-letter record as listed.
fn dead_letter_of(sink: &str, seq: u64, record: &[u8]) -> DeadLetter {
    let (reason, at, entry) = dead_record(seq, record);
    let event_id = entry
        .as_ref()
        .map(|e| event_id_of(&e.event))
        .unwrap_or_default();
    DeadLetter {
        sink: sink.to_string(),
        seq,
        reason,
        dead_at_ms: at,
        call_id: entry.map(|e| e.call_id).unwrap_or_default(),
        event_id,
    }
}
