//! What every example consumer does with an event: dedupe by id, keep the latest status per call.
//!
//! The id is the CloudEvents `id` (deterministic per webhook: a redelivery has the same id). The
//! latest status is decided by the status order of docs/events.md, never by arrival order: a
//! webhook answered 503 is retried by the sender minutes later and can arrive after the call's
//! later statuses.
//!
//! A message is parsed with the typed model generated from the event's JSON Schema (models.rs,
//! `scripts/gen-models`). One that is not an event (no id, or a body the model refuses) is
//! counted as skipped and acknowledged, so that it never blocks the events behind it.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::models::CallData;

/// docs/events.md, "Status order": the rank of a status within one attempt of the call. A status
/// the table does not know (the platform may add some) counts as in progress.
fn rank(status: &str) -> u8 {
    match status {
        "registered" => 0,
        "ongoing" => 1,
        "completed" | "failed" | "error" | "cancelled" | "retry" => 2,
        _ => 1,
    }
}

#[derive(Serialize)]
struct Held {
    status: String,
    retry: u64,
    #[serde(skip)]
    rank: u8,
}

#[derive(Serialize)]
pub struct Calls {
    consumer: &'static str,
    received: u64,
    skipped: u64,
    duplicates: u64,
    events: usize,
    stale: u64,
    calls: BTreeMap<String, Held>,
    #[serde(skip)]
    seen: HashSet<String>, // in production: a table keyed by event id, or an idempotent upsert
}

impl Calls {
    pub fn new(consumer: &'static str) -> Calls {
        Calls {
            consumer,
            received: 0,
            skipped: 0,
            duplicates: 0,
            events: 0,
            stale: 0,
            calls: BTreeMap::new(),
            seen: HashSet::new(),
        }
    }

    /// The message's `data` as the typed model, or `None` when it is not an event: counted as
    /// skipped (with the reason on stderr), never an error that stops the consumer.
    pub fn parse(&mut self, event_id: Option<&str>, body: &[u8], place: &str) -> Option<CallData> {
        self.received += 1;
        let why = match event_id {
            None | Some("") => "no event id".to_owned(),
            Some(_) => match serde_json::from_slice::<CallData>(body) {
                Ok(data) => return Some(data),
                Err(e) => format!("not a call event: {e}"),
            },
        };
        self.skipped += 1;
        eprintln!("skipped {place}: {why}");
        None
    }

    /// Processes one parsed event; false means a duplicate (already processed).
    pub fn handle(&mut self, event_id: &str, data: &CallData) -> bool {
        if !self.seen.insert(event_id.to_owned()) {
            self.duplicates += 1;
            return false;
        }
        self.events = self.seen.len();
        // started, recording and some analyses carry no status
        let Some(status) = &data.status else {
            return true;
        };
        // The schema says `minimum: 0`; the generated model reads any integer.
        let retry = u64::try_from(data.retry.unwrap_or(0)).unwrap_or(0);
        let new = (retry, rank(status));
        match self.calls.get(&data.call_id) {
            Some(held) if new < (held.retry, held.rank) => self.stale += 1, // late: discarded
            Some(held) if new == (held.retry, held.rank) => {}
            _ => {
                self.calls.insert(
                    data.call_id.clone(),
                    Held {
                        status: status.clone(),
                        retry: new.0,
                        rank: new.1,
                    },
                );
            }
        }
        true
    }

    pub fn summary(&self) -> String {
        serde_json::to_string(self).expect("serialisable")
    }
}
