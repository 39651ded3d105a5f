//! The spool on a local redb file, with group commit.
//!
//! **Group commit.** Every write goes to one writer thread, which takes whatever has queued up
//! (up to [`MAX_BATCH`]) and commits it in one transaction: one fsync for all of them. Under an
//! outage at hundreds of events per second the spooled answers then cost one fsync per batch,
//! not per event; a lone write still commits at once (nothing waits for a batch to fill).
//! A failed commit fails every write of its batch (each caller answers 503); none is half
//! written. One thread also keeps the order of writes the order they were queued in.
//!
//! **A full disk.** After an i/o error (ENOSPC) redb refuses every later operation on that
//! handle ("a previous i/o error occurred"), which would leave the spool unusable — appends
//! 503, delivered entries never removed — until a restart. The handle that failed is closed and
//! the file opened again (`reopen`): redb recovers the last commit, as after a crash, and
//! the spool works as soon as there is room (found by the fault suite, docs/reliability.md).
//!
//! **Crashes.** redb commits copy-on-write with checksummed commit slots: a crash or SIGKILL
//! mid-commit leaves the previous commit, so a torn tail is cut by construction and never read
//! back. A file damaged otherwise is refused at open (see [`RedbStore::open`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase, ReadableTable};

use super::layout::{create, DEAD, ENTRIES};
use super::store::{DeadRecord, Pending, Redrive, SpoolStore, Table, Tally};
use super::SpoolError;

/// The free space [`SpoolStore::probe`] wants on the spool's file system: room for an event of
/// this size (webhook bodies are a few KiB; a transcript can be tens). An empty commit still
/// succeeds on a full disk, and so does a rewritten record (it reuses the pages its previous
/// version freed), so the probe asks the file system.
pub const PROBE_FREE_BYTES: u64 = 64 * 1024;

/// Writes committed together at most: bounds one transaction's size and the wait of the last.
pub const MAX_BATCH: usize = 256;

enum Op {
    Put {
        table: Table,
        sink: String,
        seq: u64,
        record: Vec<u8>,
    },
    TakeOut {
        sink: String,
        seq: u64,
        dead: Option<DeadRecord>,
    },
    /// Changes nothing: commits with its batch (alone, an empty durable commit).
    Probe,
}

struct Write {
    op: Op,
    /// The write's result: bytes removed for a take-out, 0 for a put; a failure as text (the
    /// whole batch shares it).
    done: tokio::sync::oneshot::Sender<Result<u64, String>>,
}

/// The open database, shared by the writer thread and the readers. `None` while a failed
/// handle is being replaced, or when opening the file again failed (the next operation tries).
type Slot = Arc<RwLock<Option<Arc<Database>>>>;

pub struct RedbStore {
    db: Slot,
    path: PathBuf,
    /// `None` only while dropping: closing it stops the writer thread.
    writes: Option<mpsc::Sender<Write>>,
    writer: Option<JoinHandle<()>>,
    /// Transactions committed (open's own included): how well writes are grouped.
    commits: Arc<AtomicU64>,
}

fn storage(what: &'static str, e: impl std::error::Error + Send + Sync + 'static) -> SpoolError {
    SpoolError::Storage {
        what,
        source: Box::new(e),
    }
}

/// A failed operation, and whether it was an i/o failure (the handle must then be reopened).
struct Failure {
    error: SpoolError,
    io: bool,
}

fn failed<E: std::error::Error + Send + Sync + 'static>(what: &'static str, e: E) -> Failure {
    Failure {
        io: is_io(&e),
        error: storage(what, e),
    }
}

/// Whether a redb error is an i/o failure, or redb's refusal after one.
fn is_io(e: &dyn std::any::Any) -> bool {
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

/// Closes the handle `failed` (unless it was replaced already) and opens the file again. redb
/// refuses a second handle on one file, so the old one must be gone first: new operations wait
/// on the lock meanwhile, and those still holding the old handle finish (each is one short
/// transaction); if they do not within a few seconds, the old handle stays and the next
/// failure tries again.
fn reopen(slot: &Slot, path: &Path, failed: Option<usize>) -> Result<Arc<Database>, SpoolError> {
    let mut guard = slot.write().unwrap_or_else(|p| p.into_inner());
    if let Some(current) = guard.as_ref() {
        if failed != Some(Arc::as_ptr(current) as usize) {
            return Ok(current.clone());
        }
    }
    if let Some(mut old) = guard.take() {
        let started = Instant::now();
        loop {
            match Arc::try_unwrap(old) {
                Ok(db) => {
                    drop(db);
                    break;
                }
                Err(still) if started.elapsed() > Duration::from_secs(5) => {
                    *guard = Some(still.clone());
                    return Ok(still);
                }
                Err(still) => {
                    old = still;
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
    let db = Arc::new(create(path).map_err(|e| storage("reopen", e))?);
    *guard = Some(db.clone());
    tracing::warn!(path = %path.display(), "spool reopened after an i/o error");
    Ok(db)
}

/// The current handle, opening the file again if an earlier reopen failed.
fn current(slot: &Slot, path: &Path) -> Result<Arc<Database>, SpoolError> {
    let db = slot.read().unwrap_or_else(|p| p.into_inner()).clone();
    match db {
        Some(db) => Ok(db),
        None => reopen(slot, path, None),
    }
}

impl RedbStore {
    /// Opens (or creates) the file. A torn write from a crash is recovered by redb itself (the
    /// last commit stands). A file damaged otherwise has its damaged tail cut (`salvage.rs`:
    /// what is before it is kept, the damaged file is kept beside it); when no cut helps, the
    /// file is refused with an error — redb may panic on some damage, which is turned into
    /// that error too — so the bridge never starts over a spool it cannot read and nothing is
    /// silently dropped.
    pub fn open(path: &Path) -> Result<RedbStore, SpoolError> {
        let open_err = |source: Box<dyn std::error::Error + Send + Sync>| SpoolError::Open {
            path: path.to_path_buf(),
            source,
        };
        let created = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| create(path)));
        let damaged = match &created {
            Ok(Err(e)) => super::salvage::is_damage(e),
            Ok(Ok(_)) => false,
            Err(_) => true,
        };
        let created = if damaged {
            drop(created);
            match super::salvage::cut_damaged_tail(path) {
                Ok(Some(s)) => {
                    tracing::error!(
                        path = %path.display(),
                        kept_at = %s.kept_at.display(),
                        cut_bytes = s.cut_bytes,
                        entries = s.entries,
                        dead_letters = s.dead_letters,
                        "the spool file was damaged: its damaged tail was cut and the rest kept"
                    );
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| create(path)))
                }
                Ok(None) => return Err(open_err(
                    "the file is damaged and no cut of its tail can be read; move it aside to start with an empty spool".into(),
                )),
                Err(e) => return Err(open_err(Box::new(e))),
            }
        } else {
            created
        };
        let db = match created {
            Ok(r) => r.map_err(|e| open_err(Box::new(e)))?,
            Err(_) => {
                return Err(open_err(
                    "the file is damaged (redb could not read it); move it aside to start with an empty spool".into(),
                ))
            }
        };
        // Both tables exist from the start, so readers can always open them.
        let txn = db.begin_write().map_err(|e| open_err(Box::new(e)))?;
        txn.open_table(ENTRIES).map_err(|e| open_err(Box::new(e)))?;
        txn.open_table(DEAD).map_err(|e| open_err(Box::new(e)))?;
        txn.commit().map_err(|e| open_err(Box::new(e)))?;
        let db: Slot = Arc::new(RwLock::new(Some(Arc::new(db))));
        let commits = Arc::new(AtomicU64::new(1));
        let (tx, rx) = mpsc::channel();
        let writer = {
            let (db, path, commits) = (db.clone(), path.to_path_buf(), commits.clone());
            std::thread::Builder::new()
                .name("spool-writer".into())
                .spawn(move || write_loop(&db, &path, &rx, &commits))
                .map_err(|e| open_err(Box::new(e)))?
        };
        Ok(RedbStore {
            db,
            path: path.to_path_buf(),
            writes: Some(tx),
            writer: Some(writer),
            commits,
        })
    }

    fn queue(&self, op: Op) -> tokio::sync::oneshot::Receiver<Result<u64, String>> {
        let (done, rx) = tokio::sync::oneshot::channel();
        if let Some(writes) = &self.writes {
            // A send fails only when the writer is gone; the dropped `done` then reads as that.
            let _ = writes.send(Write { op, done });
        }
        rx
    }

    /// Transactions committed so far (open's own included).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Runs a read on the current handle; an i/o failure reopens the file (for the next one).
    fn reading<T>(&self, f: impl FnOnce(&Database) -> Result<T, Failure>) -> Result<T, SpoolError> {
        let db = current(&self.db, &self.path)?;
        match f(&db) {
            Ok(v) => Ok(v),
            Err(Failure { error, io }) => {
                if io {
                    let ptr = Arc::as_ptr(&db) as usize;
                    drop(db);
                    if let Err(e) = reopen(&self.db, &self.path, Some(ptr)) {
                        tracing::warn!(error = %crate::sinks::error_chain(&e), "cannot reopen the spool yet; the next operation tries again");
                    }
                }
                Err(error)
            }
        }
    }
}

impl Drop for RedbStore {
    /// Stops the writer (after what is queued) and waits for it, so the file is closed — and
    /// can be opened again — when the store is gone.
    fn drop(&mut self) {
        self.writes.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer thread: batches whatever has queued, commits once, answers each write.
fn write_loop(slot: &Slot, path: &Path, rx: &mpsc::Receiver<Write>, commits: &AtomicU64) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let mut ops = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for w in batch {
            ops.push(w.op);
            replies.push(w.done);
        }
        let outcome = match current(slot, path) {
            Ok(db) => {
                let outcome = commit(&db, ops);
                if let Err(Failure { io: true, .. }) = &outcome {
                    let ptr = Arc::as_ptr(&db) as usize;
                    drop(db);
                    if let Err(e) = reopen(slot, path, Some(ptr)) {
                        tracing::warn!(error = %crate::sinks::error_chain(&e), "cannot reopen the spool yet; the next write tries again");
                    }
                }
                outcome.map_err(|f| f.error)
            }
            Err(e) => Err(e),
        };
        match outcome {
            Ok(results) => {
                commits.fetch_add(1, Ordering::Relaxed);
                for (done, r) in replies.into_iter().zip(results) {
                    let _ = done.send(Ok(r));
                }
            }
            Err(e) => {
                let why = crate::sinks::error_chain(&e);
                for done in replies {
                    let _ = done.send(Err(why.clone()));
                }
            }
        }
    }
}

/// Applies `ops` in one transaction and commits it (durably).
fn commit(db: &Database, ops: Vec<Op>) -> Result<Vec<u64>, Failure> {
    let txn = db.begin_write().map_err(|e| failed("write", e))?;
    let mut results = Vec::with_capacity(ops.len());
    {
        let mut entries = txn.open_table(ENTRIES).map_err(|e| failed("write", e))?;
        let mut dead = txn.open_table(DEAD).map_err(|e| failed("write", e))?;
        for op in ops {
            match op {
                Op::Put {
                    table: t,
                    sink,
                    seq,
                    record,
                } => {
                    let into = if t == Table::Entries {
                        &mut entries
                    } else {
                        &mut dead
                    };
                    into.insert((sink.as_str(), seq), record.as_slice())
                        .map_err(|e| failed("write", e))?;
                    results.push(0);
                }
                Op::TakeOut {
                    sink,
                    seq,
                    dead: record,
                } => {
                    let removed = entries
                        .remove((sink.as_str(), seq))
                        .map_err(|e| failed("remove", e))?
                        .map(|v| v.value().to_vec())
                        .unwrap_or_default();
                    if let Some(record) = record {
                        dead.insert((sink.as_str(), seq), record(&removed).as_slice())
                            .map_err(|e| failed("dead-letter", e))?;
                    }
                    results.push(removed.len() as u64);
                }
                Op::Probe => results.push(0),
            }
        }
    }
    txn.commit().map_err(|e| failed("commit", e))?;
    Ok(results)
}

/// Whether the file system holding `path` has [`PROBE_FREE_BYTES`] free for this process.
fn room_on_disk(path: &Path) -> Result<(), SpoolError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let fs = nix::sys::statvfs::statvfs(dir).map_err(|e| storage("probe", e))?;
    let free = fs.blocks_available().saturating_mul(fs.fragment_size());
    if free < PROBE_FREE_BYTES {
        return Err(storage(
            "probe",
            std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!("No space left on device: {free} bytes free beside the spool"),
            ),
        ));
    }
    Ok(())
}

/// The writer's answer as the spool's result.
async fn finish(
    what: &'static str,
    rx: tokio::sync::oneshot::Receiver<Result<u64, String>>,
) -> Result<u64, SpoolError> {
    match rx.await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(why)) => Err(SpoolError::Storage {
            what,
            source: why.into(),
        }),
        Err(_) => Err(SpoolError::Storage {
            what,
            source: "the spool writer has stopped".into(),
        }),
    }
}

impl SpoolStore for RedbStore {
    fn database(&self) -> Option<Arc<Database>> {
        current(&self.db, &self.path).ok()
    }

    fn recover(&self, each: &mut dyn FnMut(&str, u64, &[u8])) -> Result<u64, SpoolError> {
        self.reading(|db| {
            let txn = db.begin_read().map_err(|e| failed("read", e))?;
            let entries = txn.open_table(ENTRIES).map_err(|e| failed("read", e))?;
            let mut last = 0;
            for row in entries.iter().map_err(|e| failed("read", e))? {
                let (k, v) = row.map_err(|e| failed("read", e))?;
                let (sink, seq) = k.value();
                last = last.max(seq);
                each(sink, seq, v.value());
            }
            let dead = txn.open_table(DEAD).map_err(|e| failed("read", e))?;
            for row in dead.iter().map_err(|e| failed("read", e))? {
                let (k, _) = row.map_err(|e| failed("read", e))?;
                last = last.max(k.value().1);
            }
            Ok(last)
        })
    }

    fn write(&self, table: Table, sink: &str, seq: u64, record: Vec<u8>) -> Pending<()> {
        let rx = self.queue(Op::Put {
            table,
            sink: sink.to_string(),
            seq,
            record,
        });
        Box::pin(async move { finish("write", rx).await.map(|_| ()) })
    }

    fn take_out(&self, sink: &str, seq: u64, dead: Option<DeadRecord>) -> Pending<u64> {
        let rx = self.queue(Op::TakeOut {
            sink: sink.to_string(),
            seq,
            dead,
        });
        Box::pin(finish("remove", rx))
    }

    fn probe(&self) -> Pending<()> {
        if let Err(e) = room_on_disk(&self.path) {
            return Box::pin(async move { Err(e) });
        }
        let rx = self.queue(Op::Probe);
        Box::pin(async move { finish("write", rx).await.map(|_| ()) })
    }

    fn oldest(&self, sink: &str) -> Result<Option<(u64, Vec<u8>)>, SpoolError> {
        self.reading(|db| {
            let txn = db.begin_read().map_err(|e| failed("read", e))?;
            let t = txn.open_table(ENTRIES).map_err(|e| failed("read", e))?;
            let mut range = t
                .range((sink, 0)..=(sink, u64::MAX))
                .map_err(|e| failed("read", e))?;
            match range.next() {
                None => Ok(None),
                Some(row) => {
                    let (k, v) = row.map_err(|e| failed("read", e))?;
                    Ok(Some((k.value().1, v.value().to_vec())))
                }
            }
        })
    }

    fn tally(&self) -> Result<Vec<(String, Tally)>, SpoolError> {
        self.reading(|db| {
            let txn = db.begin_read().map_err(|e| failed("read", e))?;
            let entries = txn.open_table(ENTRIES).map_err(|e| failed("read", e))?;
            let dead = txn.open_table(DEAD).map_err(|e| failed("read", e))?;
            let mut out: Vec<(String, Tally)> = Vec::new();
            fn slot<'a>(out: &'a mut Vec<(String, Tally)>, sink: &str) -> &'a mut Tally {
                let i = match out.iter().position(|(s, _)| s == sink) {
                    Some(i) => i,
                    None => {
                        out.push((sink.to_string(), Tally::default()));
                        out.len() - 1
                    }
                };
                &mut out[i].1
            }
            for row in entries.iter().map_err(|e| failed("read", e))? {
                let (k, v) = row.map_err(|e| failed("read", e))?;
                let t = slot(&mut out, k.value().0);
                if t.oldest.is_none() {
                    t.oldest = Some(v.value().to_vec());
                }
                t.depth += 1;
                t.bytes += v.value().len() as u64;
            }
            for row in dead.iter().map_err(|e| failed("read", e))? {
                let (k, _) = row.map_err(|e| failed("read", e))?;
                slot(&mut out, k.value().0).dead += 1;
            }
            Ok(out)
        })
    }

    fn dead(&self, each: &mut dyn FnMut(&str, u64, &[u8])) -> Result<(), SpoolError> {
        self.reading(|db| {
            let txn = db.begin_read().map_err(|e| failed("read", e))?;
            let dead = txn.open_table(DEAD).map_err(|e| failed("read", e))?;
            for row in dead.iter().map_err(|e| failed("read", e))? {
                let (k, v) = row.map_err(|e| failed("read", e))?;
                let (sink, seq) = k.value();
                each(sink, seq, v.value());
            }
            Ok(())
        })
    }

    fn dead_from(
        &self,
        start: std::ops::Bound<(&str, u64)>,
        each: &mut dyn FnMut(&str, u64, &[u8]) -> bool,
    ) -> Result<(), SpoolError> {
        self.reading(|db| {
            let txn = db.begin_read().map_err(|e| failed("read", e))?;
            let dead = txn.open_table(DEAD).map_err(|e| failed("read", e))?;
            let range = (start, std::ops::Bound::<(&str, u64)>::Unbounded);
            for row in dead.range(range).map_err(|e| failed("read", e))? {
                let (k, v) = row.map_err(|e| failed("read", e))?;
                let (sink, seq) = k.value();
                if !each(sink, seq, v.value()) {
                    break;
                }
            }
            Ok(())
        })
    }

    fn purge(&self, pick: &mut dyn FnMut(&str, u64, &[u8]) -> bool) -> Result<(), SpoolError> {
        self.reading(|db| {
            let txn = db.begin_write().map_err(|e| failed("purge", e))?;
            {
                let mut dead = txn.open_table(DEAD).map_err(|e| failed("purge", e))?;
                let mut gone: Vec<(String, u64)> = Vec::new();
                for row in dead.iter().map_err(|e| failed("purge", e))? {
                    let (k, v) = row.map_err(|e| failed("purge", e))?;
                    let (sink, seq) = k.value();
                    if pick(sink, seq, v.value()) {
                        gone.push((sink.to_string(), seq));
                    }
                }
                for (sink, seq) in gone {
                    dead.remove((sink.as_str(), seq))
                        .map_err(|e| failed("purge", e))?;
                }
            }
            txn.commit().map_err(|e| failed("commit", e))
        })
    }

    fn redrive(&self, pick: &mut dyn FnMut(&str, u64, &[u8]) -> Redrive) -> Result<(), SpoolError> {
        self.reading(|db| {
            let txn = db.begin_write().map_err(|e| failed("redrive", e))?;
            {
                let mut dead = txn.open_table(DEAD).map_err(|e| failed("redrive", e))?;
                let mut entries = txn.open_table(ENTRIES).map_err(|e| failed("redrive", e))?;
                let mut moves: Vec<(String, u64, u64, Vec<u8>)> = Vec::new();
                for row in dead.iter().map_err(|e| failed("redrive", e))? {
                    let (k, v) = row.map_err(|e| failed("redrive", e))?;
                    let (sink, seq) = k.value();
                    match pick(sink, seq, v.value()) {
                        Redrive::Skip => {}
                        Redrive::Move { seq: to, entry } => {
                            moves.push((sink.to_string(), seq, to, entry));
                        }
                        Redrive::Stop => break,
                    }
                }
                for (sink, from, to, entry) in moves {
                    entries
                        .insert((sink.as_str(), to), entry.as_slice())
                        .map_err(|e| failed("redrive", e))?;
                    dead.remove((sink.as_str(), from))
                        .map_err(|e| failed("redrive", e))?;
                }
            }
            txn.commit().map_err(|e| failed("commit", e))
        })
    }
}

#[cfg(test)]
mod tests;
