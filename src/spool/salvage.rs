//! A spool file redb refuses as damaged: cut the damaged tail, keep everything before it.
//!
//! A crash mid-commit needs nothing from here — redb falls back to the previous commit by
//! itself. What redb refuses is a file damaged from outside: a length that no longer matches
//! its layout (a filesystem that grew the file after a power loss but never wrote the new
//! pages, a copy cut short, bytes appended) or unreadable pages. A write-ahead log would cut
//! such a tail and go on with the records before it; this does the same for the spool: it
//! tries copies of the file cut shorter page by page (at most [`MAX_CUT`] from the end) until
//! one opens, reads every entry and dead letter it can (stopping at the first damaged page),
//! and writes them into a fresh file. Every record kept passed redb's checksums, so nothing is
//! replayed as garbage; the damaged file is kept beside it for an operator, never deleted.

use std::path::{Path, PathBuf};

use redb::{DatabaseError, ReadableDatabase, ReadableTable, StorageError};

use super::layout::{DEAD, ENTRIES};

/// redb's page size: a cut is tried at every page boundary.
const PAGE: u64 = 4096;
/// How far from the end a cut is tried (a damaged tail longer than this is refused).
pub const MAX_CUT: u64 = 1 << 20;

/// What a salvage kept and where the damaged file went.
#[derive(Debug)]
pub struct Salvaged {
    pub kept_at: PathBuf,
    pub cut_bytes: u64,
    pub entries: u64,
    pub dead_letters: u64,
}

/// Whether redb refused the file because of its content (as opposed to a lock, a permission, a
/// full disk, ...): only then is cutting it the right answer.
pub fn is_damage(e: &DatabaseError) -> bool {
    matches!(e, DatabaseError::Storage(StorageError::Corrupted(_)))
}

/// A table's rows as read before the first damaged page.
type Rows = Vec<(String, u64, Vec<u8>)>;

/// Reads what a (possibly damaged) database holds, stopping at the first unreadable row; `None`
/// when the file does not open. redb may panic on damaged pages: a panic ends the read.
fn read_all(path: &Path) -> Option<(Rows, Rows)> {
    let guarded = std::panic::catch_unwind(|| -> Option<(Rows, Rows)> {
        let db = super::layout::create(path).ok()?;
        let txn = db.begin_read().ok()?;
        let mut tables = Vec::new();
        for def in [ENTRIES, DEAD] {
            let mut rows = Vec::new();
            if let Ok(t) = txn.open_table(def) {
                if let Ok(iter) = t.iter() {
                    for row in iter {
                        let Ok((k, v)) = row else { break };
                        let (sink, seq) = k.value();
                        rows.push((sink.to_string(), seq, v.value().to_vec()));
                    }
                }
            }
            tables.push(rows);
        }
        let dead = tables.pop().unwrap_or_default();
        let entries = tables.pop().unwrap_or_default();
        Some((entries, dead))
    });
    guarded.ok().flatten()
}

/// Cuts the damaged tail of the spool file at `path` (see the module doc). `Ok(None)` when no
/// cut within [`MAX_CUT`] opens: the file is left exactly as it was.
pub fn cut_damaged_tail(path: &Path) -> std::io::Result<Option<Salvaged>> {
    let len = std::fs::metadata(path)?.len();
    let trial = with_suffix(path, "cut");
    std::fs::copy(path, &trial)?;
    let file = std::fs::OpenOptions::new().write(true).open(&trial)?;
    let mut cut = if len % PAGE == 0 {
        len
    } else {
        len - len % PAGE
    };
    let mut found = None;
    while len - cut <= MAX_CUT && cut > 0 {
        file.set_len(cut)?;
        file.sync_all()?;
        if let Some(rows) = read_all(&trial) {
            found = Some(rows);
            break;
        }
        cut -= PAGE;
    }
    drop(file);
    let _ = std::fs::remove_file(&trial);
    let Some((entries, dead)) = found else {
        return Ok(None);
    };
    // The rows go into a fresh file, which replaces the damaged one only once it is complete.
    let fresh = with_suffix(path, "salvaged");
    let _ = std::fs::remove_file(&fresh);
    write_fresh(&fresh, &entries, &dead).map_err(std::io::Error::other)?;
    let kept_at = with_suffix(path, &format!("damaged-{}", super::entry::now_ms()));
    std::fs::rename(path, &kept_at)?;
    std::fs::rename(&fresh, path)?;
    Ok(Some(Salvaged {
        kept_at,
        cut_bytes: len - cut,
        entries: entries.len() as u64,
        dead_letters: dead.len() as u64,
    }))
}

fn write_fresh(path: &Path, entries: &Rows, dead: &Rows) -> Result<(), redb::Error> {
    let db = super::layout::create(path)?;
    let txn = db.begin_write()?;
    for (def, rows) in [(ENTRIES, entries), (DEAD, dead)] {
        let mut t = txn.open_table(def)?;
        for (sink, seq, value) in rows {
            t.insert((sink.as_str(), *seq), value.as_slice())?;
        }
    }
    txn.commit()?;
    Ok(())
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::super::redb_store::RedbStore;
    use super::super::store::{SpoolStore, Table};

    const VALUE: [u8; 3000] = [7; 3000];

    /// A spool file with 50 entries and one dead letter, closed cleanly; its bytes.
    async fn written(path: &std::path::Path) -> Vec<u8> {
        let store = RedbStore::open(path).unwrap();
        for seq in 0..50u64 {
            store
                .write(Table::Entries, "s", seq, VALUE.to_vec())
                .await
                .unwrap();
        }
        store
            .write(Table::Dead, "s", 50, b"dead".to_vec())
            .await
            .unwrap();
        drop(store);
        std::fs::read(path).unwrap()
    }

    fn siblings(dir: &std::path::Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn garbage_after_the_last_page_is_cut_and_every_entry_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.redb");
        let mut bytes = written(&path).await;
        let original_len = bytes.len();
        bytes.extend_from_slice(&[0xAB; 5000]);
        std::fs::write(&path, &bytes).unwrap();

        let store = RedbStore::open(&path).expect("the damaged tail is cut");
        let mut seqs = Vec::new();
        let last = store
            .recover(&mut |_, seq, v| {
                assert_eq!(v, VALUE.as_slice(), "no garbage comes back");
                seqs.push(seq);
            })
            .unwrap();
        assert_eq!(seqs, (0..50).collect::<Vec<_>>());
        assert_eq!(last, 50, "the dead letter is kept too");
        let mut dead = Vec::new();
        store
            .dead(&mut |_, q, r| dead.push((q, r.to_vec())))
            .unwrap();
        assert_eq!(dead, vec![(50, b"dead".to_vec())]);
        // New writes go on in the salvaged file.
        store
            .write(Table::Entries, "s", 51, VALUE.to_vec())
            .await
            .unwrap();
        drop(store);

        let names = siblings(dir.path());
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names[1].starts_with("spool.redb.damaged-"), "{names:?}");
        let kept = std::fs::read(dir.path().join(&names[1])).unwrap();
        assert_eq!(
            kept.len(),
            original_len + 5000,
            "the damaged file is kept as it was"
        );
    }

    #[tokio::test]
    async fn a_file_cut_short_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.redb");
        let mut bytes = written(&path).await;
        bytes.truncate(bytes.len() - 4096);
        std::fs::write(&path, &bytes).unwrap();

        let err = match RedbStore::open(&path) {
            Err(e) => crate::sinks::error_chain(&e),
            Ok(_) => panic!("a file missing its last page must not open"),
        };
        assert!(err.contains("damaged"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "left untouched");
        assert_eq!(siblings(dir.path()), vec!["spool.redb".to_string()]);
    }

    #[tokio::test]
    async fn a_zeroed_last_page_never_comes_back_as_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool.redb");
        let mut bytes = written(&path).await;
        let n = bytes.len();
        bytes[n - 4096..].fill(0);
        std::fs::write(&path, &bytes).unwrap();

        // Either refused, or opened with only intact entries: never a damaged one.
        if let Ok(store) = RedbStore::open(&path) {
            store
                .recover(&mut |_, _, v| assert_eq!(v, VALUE.as_slice()))
                .unwrap();
        }
    }
}
