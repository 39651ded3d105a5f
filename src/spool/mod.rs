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
//! **Why redb.** An embedded, pure-Rust key-value store with ACID transactions: a commit is
//! durable (fsynced) when it returns, and a crash or SIGKILL mid-write leaves the last committed
//! state (copy-on-write pages with checksums), so a torn tail is never read back as an event.
//! That is the write-ahead log we would otherwise have to write, test and fuzz ourselves
//! (docs/spool.md compares it with the alternatives).
//!
//! **Bounded.** `max_bytes` caps the events held (all sinks together); a full spool makes a
//! spooling sink fail like `on_unavailable: fail` (503), never drop silently.

pub mod replay;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use tokio::sync::Notify;

use crate::config::SpoolSettings;
use crate::sinks::Outgoing;

/// (sink name, sequence) → entry. The sequence is global and only grows, so a sink's entries
/// come back in the order they were written.
const ENTRIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("entries");
/// (sink name, sequence) → dead-letter record: the entry and why it can never be delivered.
const DEAD: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("dead");

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
    #[error("spool {what} failed")]
    Storage {
        what: &'static str,
        /// An I/O error (or redb's "a previous I/O error occurred"): the handle must be
        /// closed and the file opened again ([`Spool::reopen_after`]).
        io: bool,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl SpoolError {
    fn storage(what: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        SpoolError::Storage {
            what,
            io: redb_io(&e),
            source: Box::new(e),
        }
    }

    fn is_io(&self) -> bool {
        matches!(self, SpoolError::Storage { io: true, .. })
    }
}

/// Whether a redb error is an I/O failure: after one, redb answers every later operation on
/// that handle with `PreviousIo` ("close and re-open the database").
fn redb_io(e: &dyn std::any::Any) -> bool {
    use redb::{CommitError, StorageError, TableError, TransactionError};
    let storage = if let Some(s) = e.downcast_ref::<StorageError>() {
        Some(s)
    } else if let Some(TransactionError::Storage(s)) = e.downcast_ref::<TransactionError>() {
        Some(s)
    } else if let Some(CommitError::Storage(s)) = e.downcast_ref::<CommitError>() {
        Some(s)
    } else if let Some(TableError::Storage(s)) = e.downcast_ref::<TableError>() {
        Some(s)
    } else {
        None
    };
    matches!(
        storage,
        Some(StorageError::Io(_) | StorageError::PreviousIo)
    )
}

/// redb's page cache, which is part of the bridge's memory. redb's default is 1 GiB: with it the
/// bridge grew past 300 MiB while spooling an outage (scripts/chaos), above the Helm chart's
/// 256 MiB limit. The spool reads each queue's head and appends at its tail, so a small cache
/// costs little.
const CACHE_BYTES: usize = 16 << 20;

fn open_db(path: &Path) -> Result<Database, redb::DatabaseError> {
    Database::builder().set_cache_size(CACHE_BYTES).create(path)
}

/// The open database, shared by every operation. `None` after a handle was closed because of
/// an I/O error and the file could not be opened again yet (the next operation tries).
type Slot = Arc<RwLock<Option<Arc<Database>>>>;

/// One spooled event, as the replayer gets it back.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    /// When it was spooled (ms since the Unix epoch).
    pub spooled_at_ms: u64,
    pub call_id: String,
    /// The whole event as JSON (CloudEvents structured mode), as it was answered.
    pub event: Vec<u8>,
}

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

/// Depth and age of one sink's queue, for `callbridge spool status`, `/spool` and metrics.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SinkQueue {
    pub sink: String,
    pub depth: u64,
    pub bytes: u64,
    /// Age of the oldest waiting event, in seconds (0 when none waits).
    pub oldest_age_secs: f64,
    pub dead_letters: u64,
}

pub struct Spool {
    db: Slot,
    /// One write transaction at a time on a blocking thread; the others wait here as tasks.
    /// redb runs one writer at a time anyway, and each append waiting inside `spawn_blocking`
    /// held a thread: during an outage at a few hundred events/s that was 130+ threads and
    /// ~250 MiB more resident memory (scripts/chaos, `kafka-two-of-three-down`).
    writer: tokio::sync::Mutex<()>,
    path: PathBuf,
    max_bytes: u64,
    next_seq: AtomicU64,
    state: Mutex<State>,
    /// Woken when an entry is appended for a sink (its replayer sleeps on it).
    appended: Mutex<HashMap<String, Arc<Notify>>>,
}

#[derive(Default)]
struct State {
    /// Bytes held in waiting entries, all sinks.
    bytes: u64,
    /// Per sink: calls with entries waiting, and how many each.
    waiting: HashMap<String, HashMap<String, u32>>,
}

/// The stored form: spooled-at (8 bytes, LE), call id length (2 bytes, LE), call id, event JSON.
fn encode(spooled_at_ms: u64, call_id: &str, event: &[u8]) -> Vec<u8> {
    let id = &call_id.as_bytes()[..call_id.len().min(u16::MAX as usize)];
    let mut v = Vec::with_capacity(10 + id.len() + event.len());
    v.extend_from_slice(&spooled_at_ms.to_le_bytes());
    v.extend_from_slice(&(id.len() as u16).to_le_bytes());
    v.extend_from_slice(id);
    v.extend_from_slice(event);
    v
}

fn decode(seq: u64, raw: &[u8]) -> Option<Entry> {
    let at = u64::from_le_bytes(raw.get(..8)?.try_into().ok()?);
    let len = u16::from_le_bytes(raw.get(8..10)?.try_into().ok()?) as usize;
    let call_id = std::str::from_utf8(raw.get(10..10 + len)?)
        .ok()?
        .to_string();
    Some(Entry {
        seq,
        spooled_at_ms: at,
        call_id,
        event: raw.get(10 + len..)?.to_vec(),
    })
}

/// A dead-letter record as stored: the reason, when, and the entry's stored bytes.
fn dead_record_bytes(reason: &str, raw: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "reason": reason,
        "dead_at_ms": now_ms(),
        "entry": hex::encode(raw),
    }))
    .unwrap_or_default()
}

/// A dead-letter record: (reason, dead at, the entry when it still decodes).
fn dead_record(seq: u64, record: &[u8]) -> (String, u64, Option<Entry>) {
    let v: serde_json::Value = serde_json::from_slice(record).unwrap_or_default();
    let reason = v["reason"].as_str().unwrap_or_default().to_string();
    let at = v["dead_at_ms"].as_u64().unwrap_or(0);
    let entry = v["entry"]
        .as_str()
        .and_then(|h| hex::decode(h).ok())
        .and_then(|raw| decode(seq, &raw));
    (reason, at, entry)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Spool {
    /// Opens (or creates) the spool and rebuilds its bookkeeping from what it holds: after a
    /// restart or a crash, every committed entry is found and replayed.
    pub fn open(settings: &SpoolSettings) -> Result<Arc<Spool>, SpoolError> {
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| SpoolError::Open {
            path: settings.path.clone(),
            source,
        };
        if let Some(dir) = settings.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(Box::new(e)))?;
        }
        // A torn write from a crash is recovered by redb itself (the last commit stands); a file
        // damaged otherwise is refused with an error — redb may panic on some damage, which is
        // turned into that error too — so the bridge never starts over a spool it cannot read
        // (move the file aside to start empty; nothing is silently dropped).
        let created =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| open_db(&settings.path)));
        let db = match created {
            Ok(r) => r.map_err(|e| open_err(Box::new(e)))?,
            Err(_) => {
                return Err(open_err(
                    "the file is damaged (redb could not read it); move it aside to start with an empty spool".into(),
                ))
            }
        };
        let txn = db.begin_write().map_err(|e| open_err(Box::new(e)))?;
        let mut state = State::default();
        let mut last_seq = 0;
        {
            // Created on first use, so readers can always open them.
            let entries = txn.open_table(ENTRIES).map_err(|e| open_err(Box::new(e)))?;
            txn.open_table(DEAD).map_err(|e| open_err(Box::new(e)))?;
            for row in entries.iter().map_err(|e| open_err(Box::new(e)))? {
                let (k, v) = row.map_err(|e| open_err(Box::new(e)))?;
                let (sink, seq) = k.value();
                last_seq = last_seq.max(seq);
                let raw = v.value();
                state.bytes += raw.len() as u64;
                let call_id = decode(seq, raw).map(|e| e.call_id).unwrap_or_default();
                *state
                    .waiting
                    .entry(sink.to_string())
                    .or_default()
                    .entry(call_id)
                    .or_default() += 1;
            }
            let dead = txn.open_table(DEAD).map_err(|e| open_err(Box::new(e)))?;
            let last_dead = dead
                .last()
                .map_err(|e| open_err(Box::new(e)))?
                .map(|row| row.0.value().1);
            last_seq = last_seq.max(last_dead.unwrap_or(0));
        }
        txn.commit().map_err(|e| open_err(Box::new(e)))?;
        Ok(Arc::new(Spool {
            db: Arc::new(RwLock::new(Some(Arc::new(db)))),
            writer: tokio::sync::Mutex::new(()),
            path: settings.path.clone(),
            max_bytes: settings.max_bytes,
            next_seq: AtomicU64::new(last_seq + 1),
            state: Mutex::new(state),
            appended: Mutex::new(HashMap::new()),
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs one storage operation (blocking: call it off the async runtime). After an I/O
    /// error — a full disk, say — redb refuses every later operation on the handle until it is
    /// closed and opened again, which would leave the spool unusable (appends 503, delivered
    /// entries never removed, the queue stuck on its head) until a restart. So the handle that
    /// failed is closed and the file reopened ([`Spool::reopen_after`]); redb recovers the last
    /// committed state, as after a crash.
    fn with_db<T>(
        slot: &Slot,
        path: &Path,
        f: impl FnOnce(&Database) -> Result<T, SpoolError>,
    ) -> Result<T, SpoolError> {
        let current = slot.read().unwrap_or_else(|p| p.into_inner()).clone();
        let db = match current {
            Some(db) => db,
            None => Self::reopen_after(slot, path, None)?,
        };
        let result = f(&db);
        if let Err(e) = &result {
            if e.is_io() {
                let failed = Arc::as_ptr(&db) as usize;
                drop(db);
                if let Err(again) = Self::reopen_after(slot, path, Some(failed)) {
                    tracing::warn!(error = %crate::sinks::error_chain(&again), "cannot reopen the spool yet; the next operation tries again");
                }
            }
        }
        result
    }

    /// Closes the handle `failed` (unless another operation has replaced it already) and opens
    /// the file again. redb refuses a second handle on the same file, so the old one must be
    /// gone first: new operations wait on the lock meanwhile, and the ones still holding it
    /// finish (each is one short transaction) — if they do not within a few seconds, the old
    /// handle is kept and a later failure tries again.
    fn reopen_after(
        slot: &Slot,
        path: &Path,
        failed: Option<usize>,
    ) -> Result<Arc<Database>, SpoolError> {
        let mut guard = slot.write().unwrap_or_else(|p| p.into_inner());
        if let Some(current) = guard.as_ref() {
            if failed != Some(Arc::as_ptr(current) as usize) {
                return Ok(current.clone()); // reopened by another operation already
            }
        }
        if let Some(mut old) = guard.take() {
            let started = std::time::Instant::now();
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(still_shared) if started.elapsed() > Duration::from_secs(5) => {
                        *guard = Some(still_shared.clone());
                        return Ok(still_shared);
                    }
                    Err(still_shared) => {
                        old = still_shared;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            }
        }
        let db = open_db(path).map_err(|e| SpoolError::storage("reopen", e))?;
        let db = Arc::new(db);
        *guard = Some(db.clone());
        tracing::warn!(path = %path.display(), "spool reopened after an i/o error");
        Ok(db)
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
        let call_id = out.event.subject.clone();
        let raw = encode(now_ms(), &call_id, &out.structured);
        let size = raw.len() as u64;
        {
            // Reserve the room first, so concurrent appends cannot overshoot `max_bytes`.
            let mut st = self.state();
            if st.bytes + size > self.max_bytes {
                return Err(SpoolError::Full {
                    held: st.bytes,
                    max: self.max_bytes,
                });
            }
            st.bytes += size;
            // Counted as waiting at once: a later event of the call queues behind this one
            // even while this write is still being committed.
            *st.waiting
                .entry(sink.to_string())
                .or_default()
                .entry(call_id.clone())
                .or_default() += 1;
        }
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let written = self.insert_one(ENTRIES, sink, seq, raw, "write").await;
        if let Err(e) = written {
            self.forget(sink, &call_id, size);
            return Err(e);
        }
        self.appended(sink).notify_one();
        Ok(seq)
    }

    fn forget(&self, sink: &str, call_id: &str, size: u64) {
        let mut st = self.state();
        st.bytes = st.bytes.saturating_sub(size);
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
        let (slot, path) = (self.db.clone(), self.path.clone());
        let sink = sink.to_string();
        tokio::task::spawn_blocking(move || {
            Self::with_db(&slot, &path, |db| -> Result<Option<Entry>, SpoolError> {
                let txn = db
                    .begin_read()
                    .map_err(|e| SpoolError::storage("read", e))?;
                let t = txn
                    .open_table(ENTRIES)
                    .map_err(|e| SpoolError::storage("read", e))?;
                let mut range = t
                    .range((sink.as_str(), 0)..=(sink.as_str(), u64::MAX))
                    .map_err(|e| SpoolError::storage("read", e))?;
                match range.next() {
                    None => Ok(None),
                    Some(row) => {
                        let (k, v) = row.map_err(|e| SpoolError::storage("read", e))?;
                        let seq = k.value().1;
                        // An entry that does not decode is handed over with no call id and its raw
                        // bytes, for the replayer to dead-letter.
                        Ok(Some(decode(seq, v.value()).unwrap_or(Entry {
                            seq,
                            spooled_at_ms: 0,
                            call_id: String::new(),
                            event: v.value().to_vec(),
                        })))
                    }
                }
            })
        })
        .await
        .map_err(|e| SpoolError::storage("read task", e))?
    }

    /// Removes a delivered entry (durably: a restart must not replay it again).
    pub async fn remove(&self, sink: &str, entry: &Entry) -> Result<(), SpoolError> {
        self.take_out(sink, entry, None).await
    }

    /// Moves an entry no retry can deliver to the dead-letter table, with the reason.
    pub async fn dead_letter(
        &self,
        sink: &str,
        entry: &Entry,
        reason: &str,
    ) -> Result<(), SpoolError> {
        self.take_out(sink, entry, Some(reason.to_string())).await
    }

    async fn take_out(
        &self,
        sink: &str,
        entry: &Entry,
        dead_reason: Option<String>,
    ) -> Result<(), SpoolError> {
        let (slot, path) = (self.db.clone(), self.path.clone());
        let key_sink = sink.to_string();
        let seq = entry.seq;
        let _writing = self.writer.lock().await;
        let size = tokio::task::spawn_blocking(move || {
            Self::with_db(&slot, &path, |db| -> Result<u64, SpoolError> {
                let txn = db
                    .begin_write()
                    .map_err(|e| SpoolError::storage("remove", e))?;
                let size;
                {
                    let mut t = txn
                        .open_table(ENTRIES)
                        .map_err(|e| SpoolError::storage("remove", e))?;
                    let removed = t
                        .remove((key_sink.as_str(), seq))
                        .map_err(|e| SpoolError::storage("remove", e))?;
                    let raw = removed.map(|v| v.value().to_vec()).unwrap_or_default();
                    size = raw.len() as u64;
                    if let Some(reason) = dead_reason {
                        let record = dead_record_bytes(&reason, &raw);
                        let mut d = txn
                            .open_table(DEAD)
                            .map_err(|e| SpoolError::storage("dead-letter", e))?;
                        d.insert((key_sink.as_str(), seq), record.as_slice())
                            .map_err(|e| SpoolError::storage("dead-letter", e))?;
                    }
                }
                txn.commit().map_err(|e| SpoolError::storage("commit", e))?;
                Ok(size)
            })
        })
        .await
        .map_err(|e| SpoolError::storage("remove task", e))??;
        self.forget(sink, &entry.call_id, size);
        Ok(())
    }

    /// Depth, bytes, oldest age and dead letters of each of `sinks` (zeros when nothing is
    /// spooled for it), then of any other sink the spool holds entries for.
    pub fn status_of(&self, sinks: &[String]) -> Result<Vec<SinkQueue>, SpoolError> {
        let mut rest = self.status()?;
        let mut out = Vec::with_capacity(sinks.len() + rest.len());
        for sink in sinks {
            out.push(match rest.iter().position(|q| &q.sink == sink) {
                Some(j) => rest.remove(j),
                None => SinkQueue {
                    sink: sink.clone(),
                    depth: 0,
                    bytes: 0,
                    oldest_age_secs: 0.0,
                    dead_letters: 0,
                },
            });
        }
        out.extend(rest);
        Ok(out)
    }

    /// Depth, bytes, oldest age and dead letters of every sink with anything spooled.
    pub fn status(&self) -> Result<Vec<SinkQueue>, SpoolError> {
        Self::with_db(&self.db, &self.path, |db| {
            let txn = db
                .begin_read()
                .map_err(|e| SpoolError::storage("read", e))?;
            let entries = txn
                .open_table(ENTRIES)
                .map_err(|e| SpoolError::storage("read", e))?;
            let dead = txn
                .open_table(DEAD)
                .map_err(|e| SpoolError::storage("read", e))?;
            let now = now_ms();
            let mut out: Vec<SinkQueue> = Vec::new();
            fn slot(out: &mut Vec<SinkQueue>, sink: &str) -> usize {
                match out.iter().position(|q| q.sink == sink) {
                    Some(i) => i,
                    None => {
                        out.push(SinkQueue {
                            sink: sink.to_string(),
                            depth: 0,
                            bytes: 0,
                            oldest_age_secs: 0.0,
                            dead_letters: 0,
                        });
                        out.len() - 1
                    }
                }
            }
            for row in entries.iter().map_err(|e| SpoolError::storage("read", e))? {
                let (k, v) = row.map_err(|e| SpoolError::storage("read", e))?;
                let (sink, seq) = k.value();
                let i = slot(&mut out, sink);
                if out[i].depth == 0 {
                    // The first entry of a sink (lowest sequence) is its oldest.
                    let at = decode(seq, v.value()).map_or(now, |e| e.spooled_at_ms);
                    out[i].oldest_age_secs =
                        Duration::from_millis(now.saturating_sub(at)).as_secs_f64();
                }
                out[i].depth += 1;
                out[i].bytes += v.value().len() as u64;
            }
            for row in dead.iter().map_err(|e| SpoolError::storage("read", e))? {
                let (k, _) = row.map_err(|e| SpoolError::storage("read", e))?;
                let i = slot(&mut out, k.value().0);
                out[i].dead_letters += 1;
            }
            Ok(out)
        })
    }

    /// Events waiting per sink (from memory: no storage read), for the metrics.
    pub fn depths(&self) -> Vec<(String, u64)> {
        self.state()
            .waiting
            .iter()
            .map(|(sink, calls)| (sink.clone(), calls.values().map(|n| u64::from(*n)).sum()))
            .collect()
    }

    /// Keeps an event no sink was given straight in the dead-letter store (an event too large
    /// for a required sink, answered 413): an operator can raise the limit and redrive it.
    pub async fn bury(&self, sink: &str, out: &Outgoing, reason: &str) -> Result<(), SpoolError> {
        let raw = encode(now_ms(), &out.event.subject, &out.structured);
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        self.insert_one(
            DEAD,
            sink,
            seq,
            dead_record_bytes(reason, &raw),
            "dead-letter",
        )
        .await
    }

    /// Inserts one row and commits (durably), off the async runtime.
    async fn insert_one(
        &self,
        table: TableDefinition<'static, (&'static str, u64), &'static [u8]>,
        sink: &str,
        seq: u64,
        value: Vec<u8>,
        what: &'static str,
    ) -> Result<(), SpoolError> {
        let _writing = self.writer.lock().await;
        let (slot, path) = (self.db.clone(), self.path.clone());
        let sink = sink.to_string();
        tokio::task::spawn_blocking(move || {
            Self::with_db(&slot, &path, |db| -> Result<(), SpoolError> {
                let txn = db.begin_write().map_err(|e| SpoolError::storage(what, e))?;
                {
                    let mut t = txn
                        .open_table(table)
                        .map_err(|e| SpoolError::storage(what, e))?;
                    t.insert((sink.as_str(), seq), value.as_slice())
                        .map_err(|e| SpoolError::storage(what, e))?;
                }
                txn.commit().map_err(|e| SpoolError::storage("commit", e))
            })
        })
        .await
        .map_err(|e| SpoolError::storage("spool task", e))?
    }

    /// Every dead letter, oldest first per sink.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, SpoolError> {
        Self::with_db(&self.db, &self.path, |db| {
            let txn = db
                .begin_read()
                .map_err(|e| SpoolError::storage("read", e))?;
            let dead = txn
                .open_table(DEAD)
                .map_err(|e| SpoolError::storage("read", e))?;
            let mut out = Vec::new();
            for row in dead.iter().map_err(|e| SpoolError::storage("read", e))? {
                let (k, v) = row.map_err(|e| SpoolError::storage("read", e))?;
                let (sink, seq) = k.value();
                let (reason, at, entry) = dead_record(seq, v.value());
                let event_id = entry
                    .as_ref()
                    .and_then(|e| serde_json::from_slice::<serde_json::Value>(&e.event).ok())
                    .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_string))
                    .unwrap_or_default();
                out.push(DeadLetter {
                    sink: sink.to_string(),
                    seq,
                    reason,
                    dead_at_ms: at,
                    call_id: entry.map(|e| e.call_id).unwrap_or_default(),
                    event_id,
                });
            }
            Ok(out)
        })
    }

    /// Moves dead letters (of `sink`, or all; one `seq`, or all) back into their sinks' queues,
    /// behind what waits there, once the cause is fixed. Returns how many; stops early, with
    /// [`SpoolError::Full`], when the spool has no room for the next one.
    pub fn redrive(&self, sink: Option<&str>, seq: Option<u64>) -> Result<u64, SpoolError> {
        Self::with_db(&self.db, &self.path, |db| {
            let txn = db
                .begin_write()
                .map_err(|e| SpoolError::storage("redrive", e))?;
            let mut moved: Vec<(String, String, u64)> = Vec::new();
            let mut full = None;
            {
                let mut dead = txn
                    .open_table(DEAD)
                    .map_err(|e| SpoolError::storage("redrive", e))?;
                let mut entries = txn
                    .open_table(ENTRIES)
                    .map_err(|e| SpoolError::storage("redrive", e))?;
                let mut picked: Vec<(String, u64, Vec<u8>)> = Vec::new();
                for row in dead.iter().map_err(|e| SpoolError::storage("redrive", e))? {
                    let (k, v) = row.map_err(|e| SpoolError::storage("redrive", e))?;
                    let (s, q) = k.value();
                    if sink.is_some_and(|want| want != s) || seq.is_some_and(|want| want != q) {
                        continue;
                    }
                    picked.push((s.to_string(), q, v.value().to_vec()));
                }
                let mut held = self.state().bytes;
                for (s, q, record) in picked {
                    let (_, _, entry) = dead_record(q, &record);
                    let Some(entry) = entry else { continue };
                    let raw = encode(now_ms(), &entry.call_id, &entry.event);
                    if held + raw.len() as u64 > self.max_bytes {
                        full = Some(SpoolError::Full {
                            held,
                            max: self.max_bytes,
                        });
                        break;
                    }
                    held += raw.len() as u64;
                    let new_seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
                    entries
                        .insert((s.as_str(), new_seq), raw.as_slice())
                        .map_err(|e| SpoolError::storage("redrive", e))?;
                    dead.remove((s.as_str(), q))
                        .map_err(|e| SpoolError::storage("redrive", e))?;
                    moved.push((s, entry.call_id, raw.len() as u64));
                }
            }
            txn.commit().map_err(|e| SpoolError::storage("commit", e))?;
            {
                let mut st = self.state();
                for (s, call_id, size) in &moved {
                    st.bytes += size;
                    *st.waiting
                        .entry(s.clone())
                        .or_default()
                        .entry(call_id.clone())
                        .or_default() += 1;
                }
            }
            for (s, _, _) in &moved {
                self.appended(s).notify_one();
            }
            match full {
                Some(e) if moved.is_empty() => Err(e),
                _ => Ok(moved.len() as u64),
            }
        })
    }

    /// Bytes held in waiting entries (all sinks).
    pub fn bytes(&self) -> u64 {
        self.state().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_round_trips_and_garbage_does_not_decode() {
        let raw = encode(42, "call-1", b"{\"id\":1}");
        let e = decode(7, &raw).unwrap();
        assert_eq!(
            (
                e.seq,
                e.spooled_at_ms,
                e.call_id.as_str(),
                e.event.as_slice()
            ),
            (7, 42, "call-1", b"{\"id\":1}".as_slice())
        );
        assert!(decode(1, b"short").is_none());
        let mut bad = encode(1, "call", b"x");
        bad[8] = 200; // a call id length past the end
        assert!(decode(1, &bad).is_none());
    }
}
