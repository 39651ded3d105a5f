//! The spool on a local redb file, with group commit.
//!
//! **Group commit.** Every write goes to one writer thread, which takes whatever has queued up
//! (up to [`MAX_BATCH`]) and commits it in one transaction: one fsync for all of them. Under an
//! outage at hundreds of events per second the spooled answers then cost one fsync per batch,
//! not per event; a lone write still commits at once (nothing waits for a batch to fill).
//! A failed commit fails every write of its batch (each caller answers 503); none is half
//! written. One thread also keeps the order of writes the order they were queued in.
//!
//! **Crashes.** redb commits copy-on-write with checksummed commit slots: a crash or SIGKILL
//! mid-commit leaves the previous commit, so a torn tail is cut by construction and never read
//! back. A file damaged otherwise is refused at open (see [`RedbStore::open`]).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::store::{DeadRecord, Pending, Redrive, SpoolStore, Table, Tally};
use super::SpoolError;

/// (sink name, sequence) → entry. Sequences only grow, so a sink's entries come back in the
/// order they were written.
pub(super) const ENTRIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("entries");
/// (sink name, sequence) → dead-letter record: the entry and why it can never be delivered.
pub(super) const DEAD: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("dead");

/// Writes committed together at most: bounds one transaction's size and the wait of the last.
pub const MAX_BATCH: usize = 256;

/// redb's page cache. Its default (1 GiB) let a bridge holding 64 000 spooled events reach
/// 400 MiB of RSS; a spool is written once and read once, oldest first, so a small cache costs
/// little speed.
pub const CACHE_BYTES: usize = 16 << 20;

/// Opens (or creates) a redb file with the spool's cache size.
pub(super) fn create(path: &Path) -> Result<Database, redb::DatabaseError> {
    Database::builder().set_cache_size(CACHE_BYTES).create(path)
}

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
}

struct Write {
    op: Op,
    /// The write's result: bytes removed for a take-out, 0 for a put; a failure as text (the
    /// whole batch shares it).
    done: tokio::sync::oneshot::Sender<Result<u64, String>>,
}

pub struct RedbStore {
    db: Arc<Database>,
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
        let db = Arc::new(db);
        let commits = Arc::new(AtomicU64::new(1));
        let (tx, rx) = mpsc::channel();
        let writer = {
            let (db, commits) = (db.clone(), commits.clone());
            std::thread::Builder::new()
                .name("spool-writer".into())
                .spawn(move || write_loop(&db, &rx, &commits))
                .map_err(|e| open_err(Box::new(e)))?
        };
        Ok(RedbStore {
            db,
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

    fn read(&self) -> Result<redb::ReadTransaction, SpoolError> {
        self.db.begin_read().map_err(|e| storage("read", e))
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
fn write_loop(db: &Database, rx: &mpsc::Receiver<Write>, commits: &AtomicU64) {
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
        match commit(db, ops) {
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
fn commit(db: &Database, ops: Vec<Op>) -> Result<Vec<u64>, SpoolError> {
    let txn = db.begin_write().map_err(|e| storage("write", e))?;
    let mut results = Vec::with_capacity(ops.len());
    {
        let mut entries = txn.open_table(ENTRIES).map_err(|e| storage("write", e))?;
        let mut dead = txn.open_table(DEAD).map_err(|e| storage("write", e))?;
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
                        .map_err(|e| storage("write", e))?;
                    results.push(0);
                }
                Op::TakeOut {
                    sink,
                    seq,
                    dead: record,
                } => {
                    let removed = entries
                        .remove((sink.as_str(), seq))
                        .map_err(|e| storage("remove", e))?
                        .map(|v| v.value().to_vec())
                        .unwrap_or_default();
                    if let Some(record) = record {
                        dead.insert((sink.as_str(), seq), record(&removed).as_slice())
                            .map_err(|e| storage("dead-letter", e))?;
                    }
                    results.push(removed.len() as u64);
                }
            }
        }
    }
    txn.commit().map_err(|e| storage("commit", e))?;
    Ok(results)
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
    fn recover(&self, each: &mut dyn FnMut(&str, u64, &[u8])) -> Result<u64, SpoolError> {
        let txn = self.read()?;
        let entries = txn.open_table(ENTRIES).map_err(|e| storage("read", e))?;
        let mut last = 0;
        for row in entries.iter().map_err(|e| storage("read", e))? {
            let (k, v) = row.map_err(|e| storage("read", e))?;
            let (sink, seq) = k.value();
            last = last.max(seq);
            each(sink, seq, v.value());
        }
        let dead = txn.open_table(DEAD).map_err(|e| storage("read", e))?;
        for row in dead.iter().map_err(|e| storage("read", e))? {
            let (k, _) = row.map_err(|e| storage("read", e))?;
            last = last.max(k.value().1);
        }
        Ok(last)
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

    fn oldest(&self, sink: &str) -> Result<Option<(u64, Vec<u8>)>, SpoolError> {
        let txn = self.read()?;
        let t = txn.open_table(ENTRIES).map_err(|e| storage("read", e))?;
        let mut range = t
            .range((sink, 0)..=(sink, u64::MAX))
            .map_err(|e| storage("read", e))?;
        match range.next() {
            None => Ok(None),
            Some(row) => {
                let (k, v) = row.map_err(|e| storage("read", e))?;
                Ok(Some((k.value().1, v.value().to_vec())))
            }
        }
    }

    fn tally(&self) -> Result<Vec<(String, Tally)>, SpoolError> {
        let txn = self.read()?;
        let entries = txn.open_table(ENTRIES).map_err(|e| storage("read", e))?;
        let dead = txn.open_table(DEAD).map_err(|e| storage("read", e))?;
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
        for row in entries.iter().map_err(|e| storage("read", e))? {
            let (k, v) = row.map_err(|e| storage("read", e))?;
            let t = slot(&mut out, k.value().0);
            if t.oldest.is_none() {
                t.oldest = Some(v.value().to_vec());
            }
            t.depth += 1;
            t.bytes += v.value().len() as u64;
        }
        for row in dead.iter().map_err(|e| storage("read", e))? {
            let (k, _) = row.map_err(|e| storage("read", e))?;
            slot(&mut out, k.value().0).dead += 1;
        }
        Ok(out)
    }

    fn dead(&self, each: &mut dyn FnMut(&str, u64, &[u8])) -> Result<(), SpoolError> {
        let txn = self.read()?;
        let dead = txn.open_table(DEAD).map_err(|e| storage("read", e))?;
        for row in dead.iter().map_err(|e| storage("read", e))? {
            let (k, v) = row.map_err(|e| storage("read", e))?;
            let (sink, seq) = k.value();
            each(sink, seq, v.value());
        }
        Ok(())
    }

    fn redrive(&self, pick: &mut dyn FnMut(&str, u64, &[u8]) -> Redrive) -> Result<(), SpoolError> {
        let txn = self.db.begin_write().map_err(|e| storage("redrive", e))?;
        {
            let mut dead = txn.open_table(DEAD).map_err(|e| storage("redrive", e))?;
            let mut entries = txn.open_table(ENTRIES).map_err(|e| storage("redrive", e))?;
            let mut moves: Vec<(String, u64, u64, Vec<u8>)> = Vec::new();
            for row in dead.iter().map_err(|e| storage("redrive", e))? {
                let (k, v) = row.map_err(|e| storage("redrive", e))?;
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
                    .map_err(|e| storage("redrive", e))?;
                dead.remove((sink.as_str(), from))
                    .map_err(|e| storage("redrive", e))?;
            }
        }
        txn.commit().map_err(|e| storage("commit", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes queued while a commit is under way go out together in the next one.
    #[tokio::test]
    async fn writes_queued_during_a_commit_share_the_next_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("s.redb")).unwrap();
        // Hold the write lock, as a long commit would: the writer waits for it.
        let blocker = store.db.begin_write().unwrap();
        let pending: Vec<_> = (0..100u64)
            .map(|seq| store.write(Table::Entries, "s", seq, vec![seq as u8; 10]))
            .collect();
        drop(blocker);
        for p in pending {
            p.await.unwrap();
        }
        assert!(
            store.commits() <= 3,
            "100 queued writes took {} commits (open's own commit counts one)",
            store.commits()
        );
        let mut seen = Vec::new();
        store.recover(&mut |_, seq, _| seen.push(seq)).unwrap();
        assert_eq!(seen, (0..100).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_take_out_frees_the_entry_and_can_dead_letter_it_in_the_same_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("s.redb")).unwrap();
        store
            .write(Table::Entries, "s", 1, vec![1; 7])
            .await
            .unwrap();
        store
            .write(Table::Entries, "s", 2, vec![2; 5])
            .await
            .unwrap();
        let freed = store
            .take_out(
                "s",
                1,
                Some(Box::new(|raw: &[u8]| raw.iter().rev().copied().collect())),
            )
            .await
            .unwrap();
        assert_eq!(freed, 7);
        assert_eq!(store.take_out("s", 99, None).await.unwrap(), 0);
        assert_eq!(store.oldest("s").unwrap(), Some((2, vec![2; 5])));
        let mut dead = Vec::new();
        store
            .dead(&mut |s, q, r| dead.push((s.to_string(), q, r.to_vec())))
            .unwrap();
        assert_eq!(dead, vec![("s".to_string(), 1, vec![1; 7])]);
        let tally = store.tally().unwrap();
        assert_eq!(tally.len(), 1);
        assert_eq!(
            (
                tally[0].1.depth,
                tally[0].1.bytes,
                tally[0].1.dead,
                tally[0].1.oldest.clone()
            ),
            (1, 5, 1, Some(vec![2; 5]))
        );
    }
}
