//! The spool file's layout: its tables and how it is opened. The store (`redb_store.rs`) and
//! the salvage of a damaged file (`salvage.rs`) both read it; neither needs the other for it.

use std::path::Path;

use redb::{Database, TableDefinition};

/// (sink name, sequence) → entry. Sequences only grow, so a sink's entries come back in the
/// order they were written.
pub(super) const ENTRIES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("entries");
/// (sink name, sequence) → dead-letter record: the entry and why it can never be delivered.
pub(super) const DEAD: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("dead");

/// redb's page cache. Its default (1 GiB) let a bridge holding 64 000 spooled events reach
/// 400 MiB of RSS; a spool is written once and read once, oldest first, so a small cache costs
/// little speed.
pub const CACHE_BYTES: usize = 16 << 20;

/// Opens (or creates) a redb file with the spool's cache size.
pub(super) fn create(path: &Path) -> Result<Database, redb::DatabaseError> {
    Database::builder().set_cache_size(CACHE_BYTES).create(path)
}
