//! What every example consumer does with an event: dedupe by id, keep the latest status per call.
//!
//! The id is the CloudEvents `id` (deterministic per webhook: a redelivery has the same id). The
//! latest status is decided by the status order of docs/events.md, never by arrival order: a
//! webhook answered 503 is retried by the sender minutes later and can arrive after the call's
//! later statuses.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

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

/// The part of the event's `data` (binary mode: the message body) this consumer needs.
#[derive(Deserialize)]
pub struct CallData {
    pub call_id: String,
    pub kind: String,
    pub status: Option<String>,
    pub retry: Option<u64>,
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
            duplicates: 0,
            events: 0,
            stale: 0,
            calls: BTreeMap::new(),
            seen: HashSet::new(),
        }
    }

    /// Processes one message; false means a duplicate (already processed).
    pub fn handle(&mut self, event_id: &str, data: &CallData) -> bool {
        self.received += 1;
        if !self.seen.insert(event_id.to_owned()) {
            self.duplicates += 1;
            return false;
        }
        self.events = self.seen.len();
        // started, recording and some analyses carry no status
        let Some(status) = &data.status else {
            return true;
        };
        let new = (data.retry.unwrap_or(0), rank(status));
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
