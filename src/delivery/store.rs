//! Where the index is kept besides memory: nowhere ([`Memory`], the default), or its own table
//! in the spool's redb database when a spool is configured ([`redb`](self::Redb)), so a restart
//! keeps the history (and the audit's verdicts) of the window.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::Record;

/// event id → the record as JSON.
pub const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("deliveries");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read the delivery index from the spool's database")]
    Read(#[source] Box<dyn std::error::Error + Send + Sync>),
}

pub trait Store: Send + Sync {
    /// Every stored record, oldest first.
    fn load(&self) -> Result<Vec<Record>, StoreError>;
    /// `record` as it is now, and the records evicted meanwhile. Never blocks the caller on i/o.
    fn save(&self, record: &Record, removed: &[String]);
    /// Only the records evicted.
    fn remove(&self, removed: &[String]);
    /// Writes everything saved so far (at shutdown).
    fn flush(&self) {}
}

/// Memory only: nothing survives a restart.
pub struct Memory;

impl Store for Memory {
    fn load(&self) -> Result<Vec<Record>, StoreError> {
        Ok(Vec::new())
    }
    fn save(&self, _: &Record, _: &[String]) {}
    fn remove(&self, _: &[String]) {}
}

enum Op {
    Put(String, Vec<u8>),
    Remove(String),
    Flush(mpsc::Sender<()>),
}

/// Writes queued at most; beyond it a save is dropped (counted in the log) rather than
/// holding memory without bound while the disk is slow.
const QUEUE: usize = 65_536;

/// How often the writer commits what queued up: the records of the last interval are what a
/// crash can lose (a clean shutdown flushes).
const COMMIT_EVERY: Duration = Duration::from_millis(200);

/// The database, asked for per use (its owner may replace the handle after an i/o error).
pub type Db = Arc<dyn Fn() -> Option<Arc<Database>> + Send + Sync>;

/// The index in the `deliveries` table of the spool's database. One writer thread commits
/// what queued up every `COMMIT_EVERY`, so an answer never waits for the disk.
pub struct Redb {
    db: Db,
    /// `None` only while dropping: closing it stops the writer.
    tx: Option<mpsc::SyncSender<Op>>,
    writer: Option<JoinHandle<()>>,
}

/// Stops the writer after what it was given (its handle on the database goes with it, so the
/// spool can be opened again at once).
impl Drop for Redb {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Redb {
    pub fn new(db: Db) -> Redb {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let writer_db = db.clone();
        let writer = std::thread::Builder::new()
            .name("deliveries-store".into())
            .spawn(move || write_loop(&writer_db, &rx))
            .expect("spawn the delivery index's writer thread");
        Redb {
            db,
            tx: Some(tx),
            writer: Some(writer),
        }
    }
}

fn write_loop(db: &Db, rx: &mpsc::Receiver<Op>) {
    loop {
        let first = match rx.recv() {
            Ok(op) => op,
            Err(_) => return,
        };
        std::thread::sleep(COMMIT_EVERY);
        let mut ops = vec![first];
        ops.extend(rx.try_iter());
        let mut waiting = Vec::new();
        let result = (|| -> Result<(), Box<dyn std::error::Error>> {
            let db = db().ok_or("the spool's database is not open")?;
            let txn = db.begin_write()?;
            {
                let mut table = txn.open_table(TABLE)?;
                for op in ops {
                    match op {
                        Op::Put(id, json) => {
                            table.insert(id.as_str(), json.as_slice())?;
                        }
                        Op::Remove(id) => {
                            table.remove(id.as_str())?;
                        }
                        Op::Flush(done) => waiting.push(done),
                    }
                }
            }
            txn.commit()?;
            Ok(())
        })();
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot write the delivery index to the spool's database");
        }
        for done in waiting {
            let _ = done.send(());
        }
    }
}

impl Store for Redb {
    fn load(&self) -> Result<Vec<Record>, StoreError> {
        let read = |e: Box<dyn std::error::Error + Send + Sync>| StoreError::Read(e);
        let db = (self.db)().ok_or_else(|| read("the spool's database is not open".into()))?;
        let txn = db.begin_read().map_err(|e| read(e.into()))?;
        let table = match txn.open_table(TABLE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(read(e.into())),
        };
        let mut out = Vec::new();
        for row in table.iter().map_err(|e| read(e.into()))? {
            let (_, v) = row.map_err(|e| read(e.into()))?;
            match serde_json::from_slice::<Record>(v.value()) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(error = %e, "an unreadable delivery record skipped"),
            }
        }
        out.sort_by_key(|r| r.seq);
        Ok(out)
    }

    fn save(&self, record: &Record, removed: &[String]) {
        let json = match serde_json::to_vec(record) {
            Ok(j) => j,
            Err(_) => return,
        };
        let ops = removed
            .iter()
            .map(|id| Op::Remove(id.clone()))
            .chain(std::iter::once(Op::Put(record.event_id.clone(), json)));
        self.queue(ops);
    }

    fn remove(&self, removed: &[String]) {
        self.queue(removed.iter().map(|id| Op::Remove(id.clone())));
    }

    fn flush(&self) {
        let (done, wait) = mpsc::channel();
        let Some(tx) = &self.tx else { return };
        if tx.send(Op::Flush(done)).is_ok() {
            let _ = wait.recv_timeout(Duration::from_secs(5));
        }
    }
}

impl Redb {
    /// Queues `ops` for the writer; when it is this far behind, the rest is dropped (and said).
    fn queue(&self, ops: impl Iterator<Item = Op>) {
        let Some(tx) = &self.tx else { return };
        for op in ops {
            if tx.try_send(op).is_err() {
                tracing::warn!("the delivery index's writer is behind; a record is not stored");
                return;
            }
        }
    }
}
