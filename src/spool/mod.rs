//! The durable spool: where an event waits for a sink with `on_unavailable: spool` that cannot
//! confirm it now, so a broker outage longer than the sender's retries loses nothing.
//!
//! **Taking responsibility.** When such a sink fails transiently (not connected, timeout, ...),
//! the fan-out writes the event here and answers 200 with `"spooled": true` only after the write
//! is committed and fsynced: from then on the event is ours to deliver. [`replay`] drains each
//! sink's queue as soon as the sink takes events again, oldest first, with the same event ids,
//! and removes an entry only after the broker confirmed it (or the ledger shows another delivery
//! already did). A rejection no retry can fix (unroutable, too large) moves the entry to the
//! dead-letter table with its reason instead of blocking the queue forever.
//!
//! **Order per call.** Entries of one sink are replayed strictly in the order they were written,
//! and while a call has entries waiting for a sink, that call's new events for the sink are
//! spooled behind them instead of published directly ([`Spool::has_waiting`]), so a call's
//! statuses never overtake each other through the spool.
//!
//! **Storage.** The spool keeps its bookkeeping here (the byte bound, the calls waiting per
//! sink, sequence numbers, waking the replayer) and leaves storing to a backend behind
//! [`store::SpoolStore`]: today a local redb file with group commit (`redb_store.rs`;
//! docs/spool.md says why redb), later perhaps a replicated JetStream stream, without touching
//! this file's logic or the replayer's. The stored forms are in `entry.rs`; the dead letters
//! and what an operator does with them (list, count, redrive, purge by one filter) in [`dead`].
//!
//! **Bounded.** `max_bytes` caps the events held (all sinks together); a full spool makes a
//! spooling sink fail like `on_unavailable: fail` (503), never drop silently.
//!
//! **Dead letters, bounded too.** One dead letter per (sink, event id): a resent body or a
//! second refusal of the same event adds nothing. `max_dead_letters` caps them (all sinks); at
//! the cap the letters already kept stay and a new one is not kept — it is logged (sink, event
//! and call id, reason) and counted per sink as `discarded`, which `/spool`, `spool status` and
//! the metrics report, so the store never claims to hold what it dropped. An operator makes
//! room with `callbridge dlq redrive` or `callbridge dlq purge`.
//!
//! **Counted, not scanned.** Depth, bytes and dead letters per sink are kept in memory (rebuilt
//! from the file at open), so `/spool` costs one point read per sink (its oldest entry's age),
//! never a scan of the tables.

pub mod dead;
mod entry;
mod layout;
pub mod redb_store;
pub mod replay;
pub mod salvage;
pub mod settings;
pub mod store;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;

use crate::sinks::Outgoing;
use settings::SpoolSettings;

pub use entry::Entry;
use entry::{dead_record, dead_record_head, decode, encode, now_ms};
use store::{SpoolStore, Table};

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("the spool is full ({held} of {max} bytes held); the event is not spooled")]
    Full { held: u64, max: u64 },
    #[error("cannot open the spool at {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `spool.max_dead_letters` reached: the dead letter is not kept (and is counted as
    /// discarded).
    #[error("the dead-letter store is full ({max} dead letters); purge or redrive some")]
    DeadLettersFull { max: u64 },
    #[error("spool {what} failed")]
    Storage {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Depth and age of one sink's queue, for `callbridge spool status`, `/spool` and metrics.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SinkQueue {
    pub sink: String,
    pub depth: u64,
    pub bytes: u64,
    /// Age of the oldest waiting event, in seconds (0 when none waits).
    pub oldest_age_secs: f64,
    pub dead_letters: u64,
    /// Dead letters not kept since the bridge started because `spool.max_dead_letters` was
    /// reached (each one is in the log).
    pub dead_letters_discarded: u64,
}

impl SinkQueue {
    fn empty(sink: &str) -> SinkQueue {
        SinkQueue {
            sink: sink.to_string(),
            depth: 0,
            bytes: 0,
            oldest_age_secs: 0.0,
            dead_letters: 0,
            dead_letters_discarded: 0,
        }
    }
}

pub struct Spool {
    store: Arc<dyn SpoolStore>,
    path: PathBuf,
    max_bytes: u64,
    max_dead_letters: u64,
    next_seq: AtomicU64,
    state: Mutex<State>,
    /// Woken when an entry is appended for a sink (its replayer sleeps on it).
    appended: Mutex<HashMap<String, Arc<Notify>>>,
    /// An append was refused for room, and nothing was taken out since: the next event of that
    /// size is refused too, so readiness counts the spool as full (cleared when room is freed).
    refused_full: AtomicBool,
}

/// Whether the spool can take responsibility for an event now ([`Spool::health`]).
#[derive(Debug, Clone, PartialEq)]
pub enum SpoolHealth {
    /// A write was made durable just now, and there is room.
    Writable { held: u64, max: u64 },
    /// At `max_bytes`, or an append was refused for room since the last entry left.
    Full { held: u64, max: u64 },
    /// The backend could not make a write durable (a full disk, a read-only volume, i/o errors).
    Unwritable { error: String },
}

/// How long [`Spool::health`] waits for its probe write: below a readiness probe's timeout.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Default)]
struct State {
    /// Bytes held in waiting entries, all sinks.
    bytes: u64,
    /// Per sink: calls with entries waiting, and how many each.
    waiting: HashMap<String, HashMap<String, u32>>,
    /// Per sink: waiting entries and their bytes.
    queues: HashMap<String, (u64, u64)>,
    /// Per sink: dead letters kept, and those discarded at the cap since the start.
    dead: HashMap<String, (u64, u64)>,
    /// Dead letters kept, all sinks (against `max_dead_letters`).
    dead_total: u64,
    /// (sink, event id) of every dead letter kept: one per event and sink.
    dead_ids: std::collections::HashSet<(String, String)>,
}

impl State {
    fn add(&mut self, sink: &str, call_id: &str, size: u64) {
        self.bytes += size;
        *self
            .waiting
            .entry(sink.to_string())
            .or_default()
            .entry(call_id.to_string())
            .or_default() += 1;
        let q = self.queues.entry(sink.to_string()).or_default();
        q.0 += 1;
        q.1 += size;
    }

    /// Counts a dead letter of `sink` for `event_id` as kept.
    fn add_dead(&mut self, sink: &str, event_id: &str) {
        self.dead.entry(sink.to_string()).or_default().0 += 1;
        self.dead_total += 1;
        if !event_id.is_empty() {
            self.dead_ids
                .insert((sink.to_string(), event_id.to_string()));
        }
    }

    fn remove_dead(&mut self, sink: &str, event_id: &str) {
        if let Some(d) = self.dead.get_mut(sink) {
            d.0 = d.0.saturating_sub(1);
        }
        self.dead_total = self.dead_total.saturating_sub(1);
        self.dead_ids
            .remove(&(sink.to_string(), event_id.to_string()));
    }

    fn discard_dead(&mut self, sink: &str) {
        self.dead.entry(sink.to_string()).or_default().1 += 1;
    }

    /// Whether a new dead letter of `sink` for `event_id` is to be written: `Ok(false)` when
    /// one is kept already, `Err` at the cap (counted as discarded). When `Ok(true)`, it is
    /// counted as kept from now (undo with [`State::remove_dead`] if the write fails). An
    /// entry without an event id (one that no longer decodes) is never taken for another.
    fn reserve_dead(&mut self, sink: &str, event_id: &str, max: u64) -> Result<bool, SpoolError> {
        if !event_id.is_empty()
            && self
                .dead_ids
                .contains(&(sink.to_string(), event_id.to_string()))
        {
            return Ok(false);
        }
        if self.dead_total >= max {
            self.discard_dead(sink);
            return Err(SpoolError::DeadLettersFull { max });
        }
        self.add_dead(sink, event_id);
        Ok(true)
    }
}

/// The `id` of a stored event (CloudEvents structured JSON); empty when it has none.
fn event_id_of(event: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Id {
        id: String,
    }
    serde_json::from_slice::<Id>(event)
        .map(|i| i.id)
        .unwrap_or_default()
}

fn task_failed(e: tokio::task::JoinError) -> SpoolError {
    SpoolError::Storage {
        what: "spool task",
        source: Box::new(e),
    }
}

impl Spool {
    /// Opens (or creates) the spool file and rebuilds the bookkeeping from what it holds:
    /// after a restart or a crash, every committed entry is found and replayed.
    pub fn open(settings: &SpoolSettings) -> Result<Arc<Spool>, SpoolError> {
        if let Some(dir) = settings.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| SpoolError::Open {
                path: settings.path.clone(),
                source: Box::new(e),
            })?;
        }
        let store = redb_store::RedbStore::open(&settings.path)?;
        Spool::with_store(
            Arc::new(store),
            settings.path.clone(),
            settings.max_bytes,
            settings.max_dead_letters,
        )
    }

    /// The spool over any backend (`path` only names it in logs and errors).
    pub fn with_store(
        store: Arc<dyn SpoolStore>,
        path: PathBuf,
        max_bytes: u64,
        max_dead_letters: u64,
    ) -> Result<Arc<Spool>, SpoolError> {
        let mut state = State::default();
        let last_seq = store.recover(&mut |sink, seq, raw| {
            let call_id = decode(seq, raw).map(|e| e.call_id).unwrap_or_default();
            state.add(sink, &call_id, raw.len() as u64);
        })?;
        // Once at open: the dead letters' counts and ids (a file written before dead letters
        // were deduplicated may hold copies; each is counted, the id once).
        store.dead(&mut |sink, seq, record| {
            state.add_dead(sink, &dead_letter_event_id(seq, record));
        })?;
        Ok(Arc::new(Spool {
            store,
            path,
            max_bytes,
            max_dead_letters,
            next_seq: AtomicU64::new(last_seq + 1),
            state: Mutex::new(state),
            appended: Mutex::new(HashMap::new()),
            refused_full: AtomicBool::new(false),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The spool's redb database, for the delivery index's own table (see
    /// [`store::SpoolStore::database`]).
    pub fn database(&self) -> Option<Arc<redb::Database>> {
        self.store.database()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The notifier a sink's replayer sleeps on.
    pub fn appended(&self, sink: &str) -> Arc<Notify> {
        let mut map = self.appended.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(sink.to_string()).or_default().clone()
    }

    /// Whether `call_id` has events waiting for `sink`: its new events must queue behind them.
    pub fn has_waiting(&self, sink: &str, call_id: &str) -> bool {
        self.state()
            .waiting
            .get(sink)
            .is_some_and(|calls| calls.contains_key(call_id))
    }

    /// Writes the event for `sink` and returns once it is durable (committed and fsynced).
    pub async fn append(&self, sink: &str, out: &Outgoing) -> Result<u64, SpoolError> {
        let call_id = out.event.subject.as_str();
        let raw = encode(now_ms(), call_id, &out.structured);
        let size = raw.len() as u64;
        let (seq, written) = {
            // Under one lock: the room is reserved (concurrent appends cannot overshoot
            // `max_bytes`), the call counts as waiting at once (a later event of the call
            // queues behind this one even while this write is being committed), and the
            // sequence and the write's place in the backend's queue are taken together (so
            // the later event can never be stored under a lower sequence).
            let mut st = self.state();
            if st.bytes + size > self.max_bytes {
                self.refused_full.store(true, Ordering::Relaxed);
                return Err(SpoolError::Full {
                    held: st.bytes,
                    max: self.max_bytes,
                });
            }
            st.add(sink, call_id, size);
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            (seq, self.store.write(Table::Entries, sink, seq, raw))
        };
        if let Err(e) = written.await {
            self.forget(sink, call_id, size);
            return Err(e);
        }
        self.appended(sink).notify_one();
        Ok(seq)
    }

    fn forget(&self, sink: &str, call_id: &str, size: u64) {
        let mut st = self.state();
        st.bytes = st.bytes.saturating_sub(size);
        if size > 0 {
            self.refused_full.store(false, Ordering::Relaxed);
        }
        if let Some(q) = st.queues.get_mut(sink) {
            q.0 = q.0.saturating_sub(1);
            q.1 = q.1.saturating_sub(size);
        }
        if let Some(calls) = st.waiting.get_mut(sink) {
            if let Some(n) = calls.get_mut(call_id) {
                *n -= 1;
                if *n == 0 {
                    calls.remove(call_id);
                }
            }
        }
    }

    /// The oldest entry waiting for `sink`.
    pub async fn oldest(&self, sink: &str) -> Result<Option<Entry>, SpoolError> {
        let store = self.store.clone();
        let sink = sink.to_string();
        let found = tokio::task::spawn_blocking(move || store.oldest(&sink))
            .await
            .map_err(task_failed)??;
        Ok(found.map(|(seq, raw)| Entry::from_stored(seq, &raw)))
    }

    /// Removes a delivered entry (durably: a restart must not replay it again).
    pub async fn remove(&self, sink: &str, entry: &Entry) -> Result<(), SpoolError> {
        let size = self.store.take_out(sink, entry.seq, None).await?;
        self.forget(sink, &entry.call_id, size);
        Ok(())
    }

    /// Depth, bytes, oldest age and dead letters of each of `sinks` (zeros when nothing is
    /// spooled for it), then of any other sink the spool holds entries for. Blocking.
    pub fn status_of(&self, sinks: &[String]) -> Result<Vec<SinkQueue>, SpoolError> {
        let mut rest = self.status()?;
        let mut out = Vec::with_capacity(sinks.len() + rest.len());
        for sink in sinks {
            out.push(match rest.iter().position(|q| &q.sink == sink) {
                Some(j) => rest.remove(j),
                None => SinkQueue::empty(sink),
            });
        }
        out.extend(rest);
        Ok(out)
    }

    /// Depth, bytes, oldest age and dead letters of every sink with anything spooled, from the
    /// counters (one point read per sink with entries waiting, for its oldest one's age).
    /// Blocking.
    pub fn status(&self) -> Result<Vec<SinkQueue>, SpoolError> {
        let mut out: Vec<SinkQueue> = {
            let st = self.state();
            let mut sinks: Vec<&String> = st
                .queues
                .iter()
                .filter(|(_, q)| q.0 > 0)
                .map(|(s, _)| s)
                .chain(
                    st.dead
                        .iter()
                        .filter(|(_, d)| d.0 > 0 || d.1 > 0)
                        .map(|(s, _)| s),
                )
                .collect();
            sinks.sort();
            sinks.dedup();
            sinks
                .into_iter()
                .map(|sink| {
                    let (depth, bytes) = st.queues.get(sink).copied().unwrap_or_default();
                    let (dead, discarded) = st.dead.get(sink).copied().unwrap_or_default();
                    SinkQueue {
                        sink: sink.clone(),
                        depth,
                        bytes,
                        oldest_age_secs: 0.0,
                        dead_letters: dead,
                        dead_letters_discarded: discarded,
                    }
                })
                .collect()
        };
        let now = now_ms();
        for q in out.iter_mut().filter(|q| q.depth > 0) {
            if let Some((seq, raw)) = self.store.oldest(&q.sink)? {
                let at = decode(seq, &raw).map_or(now, |e| e.spooled_at_ms);
                q.oldest_age_secs = Duration::from_millis(now.saturating_sub(at)).as_secs_f64();
            }
        }
        Ok(out)
    }

    /// Events waiting per sink (from memory: no storage read), for the metrics.
    pub fn depths(&self) -> Vec<(String, u64)> {
        self.state()
            .waiting
            .iter()
            .map(|(sink, calls)| (sink.clone(), calls.values().map(|n| u64::from(*n)).sum()))
            .collect()
    }

    /// Bytes held in waiting entries (all sinks).
    pub fn bytes(&self) -> u64 {
        self.state().bytes
    }

    /// The cap on [`Spool::bytes`] (`spool.max_bytes`).
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Whether an event given to the spool now would be made durable: full when at the cap (or
    /// an append was refused for room since the last entry left), else a probe write through
    /// the backend's commit path (within [`PROBE_TIMEOUT`]) says whether it is writable, after
    /// the backend checked there is room on the disk for an event. The probe is one durable
    /// commit, shared with whatever writes are queued with it.
    pub async fn health(&self) -> SpoolHealth {
        let (held, max) = (self.bytes(), self.max_bytes);
        if held >= max || self.refused_full.load(Ordering::Relaxed) {
            return SpoolHealth::Full { held, max };
        }
        match tokio::time::timeout(PROBE_TIMEOUT, self.store.probe()).await {
            Ok(Ok(())) => SpoolHealth::Writable {
                held: self.bytes(),
                max,
            },
            Ok(Err(e)) => SpoolHealth::Unwritable {
                error: crate::sinks::error_chain(&e),
            },
            Err(_) => SpoolHealth::Unwritable {
                error: format!(
                    "a probe write was not durable within {} ms",
                    PROBE_TIMEOUT.as_millis()
                ),
            },
        }
    }
}

/// The event id of a stored dead-letter record: read beside the entry, or (a record written
/// before the id was stored there) decoded from the entry.
fn dead_letter_event_id(seq: u64, record: &[u8]) -> String {
    match dead_record_head(record) {
        (_, Some(id)) => id,
        (_, None) => dead_record(seq, record)
            .2
            .map(|e| event_id_of(&e.event))
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests;
