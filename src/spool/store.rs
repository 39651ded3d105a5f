//! What a spool backend does: keep opaque records under `(sink, seq)` in two tables, durably.
//!
//! Everything else — the byte bound, which calls wait behind their spooled events, sequence
//! numbers, the stored forms (`entry.rs`), waking the replayer, the replayer itself — lives in
//! [`super::Spool`] and `replay.rs`, so a second backend (a replicated JetStream stream, say)
//! implements this trait and nothing in the delivery logic changes.
//!
//! The one ordering rule a backend must keep: writes queued by [`SpoolStore::write`] become
//! durable in the order they were queued. The spool queues a write while it holds its own
//! lock, right after giving it the next sequence number, so "queued earlier" means "lower
//! sequence": the replayer, reading the lowest sequence first, can never see an event of a
//! call before the call's earlier event it was spooled behind.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::SpoolError;

/// The two tables: events waiting for a sink, and events given up on (with their reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Entries,
    Dead,
}

/// One sink's waiting entries and dead letters, counted by the backend.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub depth: u64,
    pub bytes: u64,
    /// The stored bytes of the lowest-sequence waiting entry (for its age).
    pub oldest: Option<Vec<u8>>,
    pub dead: u64,
}

/// What [`SpoolStore::redrive`] should do with one dead letter.
pub enum Redrive {
    /// Leave it dead.
    Skip,
    /// Move it to the waiting entries under this sequence, as these stored bytes.
    Move { seq: u64, entry: Vec<u8> },
    /// Leave it and every later one (no room).
    Stop,
}

/// A write in progress: resolves once durable. (The spool's `Err` keeps the backend's words.)
pub type Pending<T> = BoxFuture<'static, Result<T, SpoolError>>;

/// A storage backend of the spool. The blocking methods are called off the async runtime.
pub trait SpoolStore: Send + Sync {
    /// Calls `each` with every waiting entry (sink, seq, stored bytes) in sequence order per
    /// sink, and returns the highest sequence either table holds (0 when empty), so numbering
    /// continues after a restart. Blocking.
    fn recover(&self, each: &mut dyn FnMut(&str, u64, &[u8])) -> Result<u64, SpoolError>;

    /// Queues `record` under `(sink, seq)` in `table`; the order of writes is fixed when this
    /// returns, and the future resolves once the write is durable (fsynced).
    fn write(&self, table: Table, sink: &str, seq: u64, record: Vec<u8>) -> Pending<()>;

    /// Removes a waiting entry (durably), and with `dead` stores that record under the same key
    /// in the dead table in the same commit. Resolves to the bytes the entry held (0 if absent).
    fn take_out(&self, sink: &str, seq: u64, dead: Option<DeadRecord>) -> Pending<u64>;

    /// Resolves once the backend showed it can still take an event: room for one, and a
    /// durable commit through the same path as every write (queued behind them). Readiness
    /// asks this while a spooling sink's broker is down (`src/health.rs`).
    fn probe(&self) -> Pending<()>;

    /// The lowest-sequence waiting entry of `sink`. Blocking.
    fn oldest(&self, sink: &str) -> Result<Option<(u64, Vec<u8>)>, SpoolError>;

    /// Per sink with anything stored: its counts. Blocking.
    fn tally(&self) -> Result<Vec<(String, Tally)>, SpoolError>;

    /// Calls `each` with every dead letter (sink, seq, stored record), by sink then sequence.
    /// Blocking.
    fn dead(&self, each: &mut dyn FnMut(&str, u64, &[u8])) -> Result<(), SpoolError>;

    /// Calls `each` with the dead letters from `start` on, by sink then sequence, until it
    /// returns `false`. Blocking.
    fn dead_from(
        &self,
        start: std::ops::Bound<(&str, u64)>,
        each: &mut dyn FnMut(&str, u64, &[u8]) -> bool,
    ) -> Result<(), SpoolError>;

    /// Removes, in one durable commit, every dead letter `pick` returns `true` for. Blocking.
    fn purge(&self, pick: &mut dyn FnMut(&str, u64, &[u8]) -> bool) -> Result<(), SpoolError>;

    /// Offers every dead letter to `pick`, in the order of [`SpoolStore::dead`], and applies
    /// the moves it asks for in one durable commit. Blocking.
    fn redrive(&self, pick: &mut dyn FnMut(&str, u64, &[u8]) -> Redrive) -> Result<(), SpoolError>;

    /// The redb database the backend keeps the spool in, for other tables of the bridge's
    /// (the delivery index); None for a backend that is not redb. Ask for it per use: the
    /// handle is replaced after an i/o error.
    fn database(&self) -> Option<Arc<redb::Database>> {
        None
    }
}

/// How a dead-letter record is built from the entry it replaces (inside the backend's commit,
/// where the entry's stored bytes are at hand).
pub type DeadRecord = Box<dyn FnOnce(&[u8]) -> Vec<u8> + Send>;
