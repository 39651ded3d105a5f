//! The idempotency ledger: per event id and sink, either a receipt or a publish in flight.
//!
//! It makes retries go only where they are needed: when the sender redelivers a webhook after a
//! partial failure, only the sinks without a receipt publish again; when every sink had acked,
//! the answer is an immediate 200.
//!
//! It also makes sure one event is never being published twice to one sink at the same time:
//! [`Ledger::take`] marks a sink *in flight* for one id, atomically, and that mark is held until
//! the publish's real outcome is known ([`Ledger::settle`]) — not merely until a delivery stops
//! waiting for it. Another delivery of the id meanwhile finds the sink busy and waits for the
//! outcome (until its own deadline) on the entry's [`Notify`]: a receipt means a duplicate, a
//! failure that it may publish itself.
//!
//! Memory is bounded twice: entries expire after `window`, and beyond `max_entries` the oldest
//! idle entries are evicted (an entry with a publish in flight never is). This ledger is per
//! replica; with `idempotency.store: nats-kv`, [`shared`] adds the ledger every replica shares
//! (claims and receipts in a NATS key-value bucket), asked after this one grants a publish.

pub mod settings;
pub mod shared;

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use crate::sinks::Receipt;

/// An event id as 16 bytes (our ids are UUID-formatted digests), so an entry costs no string.
type Key = [u8; 16];

fn key(id: &str) -> Key {
    let mut k = [0u8; 16];
    let hex: Vec<u8> = id.bytes().filter(|b| *b != b'-').collect();
    if hex.len() == 32 && hex::decode_to_slice(&hex, &mut k).is_ok() {
        return k;
    }
    // Not one of our ids (never expected): still a stable, well-spread key.
    k.copy_from_slice(&Sha256::digest(id.as_bytes())[..16]);
    k
}

/// Keys are already uniformly distributed digests: their first 8 bytes are the hash. Saves
/// SipHash on every lookup of the request path.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
        }
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

type KeyMap<V> = HashMap<Key, V, BuildHasherDefault<KeyHasher>>;

pub struct Ledger {
    inner: Mutex<Inner>,
    window: Duration,
    max_entries: usize,
}

#[derive(Default)]
struct Inner {
    map: KeyMap<Entry>,
    /// [`Live`] of the ids that have one; removed with the entry, or when nothing is left in it.
    live: KeyMap<Live>,
    /// Ids in creation order, for expiry and eviction.
    order: VecDeque<(Instant, Key)>,
    /// Entries dropped because their window ended (the intended way out).
    expired: u64,
    /// Entries dropped by the `max_entries` cap while still inside their window: each one is a
    /// redelivery that would now publish again. Non-zero means the cap cannot hold the window at
    /// this rate; the metric and `validate`'s rate check say so.
    evicted_early: u64,
    /// Sink names by number: an entry refers to a sink by its index here (a byte and a bit)
    /// instead of a copy of its name.
    sinks: Vec<Box<str>>,
    /// The names in receipts (topics, exchanges, routing keys, streams) shared between entries:
    /// a few distinct values serve millions of receipts.
    names: HashSet<Arc<str>>,
}

/// Sinks the ledger can tell apart: one bit each in an entry's in-flight mask.
/// `config` refuses more (`sinks`: at most 64).
pub const MAX_SINKS: usize = 64;

/// Up to this cap the ledger's tables are sized at start (see [`Ledger::new`]).
const PRESIZE_MAX: usize = 1 << 20;

/// Distinct receipt names shared; beyond it a name is stored per entry (a template with a
/// per-call variable, e.g. a routing key with `{call_id}`, must not grow this set forever).
const MAX_SHARED_NAMES: usize = 4096;

pub use crate::metrics::LedgerStats;

impl Inner {
    /// The entry of `key`, created (and queued for expiry) if it is new.
    fn entry(&mut self, key: Key, now: Instant) -> &mut Entry {
        let order = &mut self.order;
        self.map.entry(key).or_insert_with(|| {
            order.push_back((now, key));
            Entry::default()
        })
    }

    /// The number of `sink`, registered on first sight (the configured sinks: a handful).
    /// `None` past [`MAX_SINKS`], which `config` refuses: such a sink is simply not
    /// deduplicated (always published), never confused with another one.
    fn sink(&mut self, sink: &str) -> Option<u8> {
        if let Some(i) = self.sinks.iter().position(|s| &**s == sink) {
            return Some(i as u8);
        }
        if self.sinks.len() < MAX_SINKS {
            self.sinks.push(sink.into());
            return Some((self.sinks.len() - 1) as u8);
        }
        None
    }

    fn name(&mut self, name: String) -> Arc<str> {
        if let Some(shared) = self.names.get(name.as_str()) {
            return shared.clone();
        }
        let name: Arc<str> = name.into();
        if self.names.len() < MAX_SHARED_NAMES {
            self.names.insert(name.clone());
        }
        name
    }

    fn store(&mut self, receipt: Receipt) -> Stored {
        match receipt {
            Receipt::File { path, offset } => Stored::File {
                path: self.name(path),
                offset,
            },
            Receipt::Null { stored } => Stored::Null { stored },
            Receipt::Kafka {
                topic,
                partition,
                offset,
            } => Stored::Kafka {
                topic: self.name(topic),
                partition,
                offset,
            },
            Receipt::Rabbitmq {
                exchange,
                routing_key,
            } => Stored::Rabbitmq {
                exchange: self.name(exchange),
                routing_key: self.name(routing_key),
            },
            Receipt::JetStream {
                stream,
                sequence,
                duplicate,
            } => Stored::JetStream {
                stream: self.name(stream),
                sequence,
                duplicate,
            },
            Receipt::NatsCore { subject, persisted } => Stored::NatsCore {
                subject: self.name(subject),
                persisted,
            },
        }
    }
}

/// Everything the ledger keeps about one id, in as few bytes as it can: receipts by sink
/// number with shared names, and the payload's digest (in-flight sinks and the notifier are in
/// [`Live`], for the few ids that have them).
/// (It was ~650 bytes an id with three receipts; the figure is in docs/benchmarks.md.)
#[derive(Default)]
struct Entry {
    /// (sink number, receipt): a few sinks at most, so a slice beats a map.
    acked: Box<[(u8, Stored)]>,
    /// A digest of the first payload seen under this id (0: none yet).
    payload: u64,
}

/// What an id has only while a publish of it is in flight, or once a delivery waited on it:
/// most ids never do, so it lives in a small map beside the entries instead of in every one
/// (16 bytes less per bucket of the big map: ~4 MiB at the default cap).
#[derive(Default)]
struct Live {
    /// Sinks with a publish of this id whose outcome is not known yet, one bit per sink number.
    in_flight: u64,
    /// Woken whenever a publish of this id settles; created by the first delivery that waits,
    /// and kept as long as the entry (a waiter holds a clone and must be the one woken).
    changed: Option<Arc<Notify>>,
}

impl Entry {
    fn receipt(&self, sink: u8) -> Option<&Stored> {
        self.acked.iter().find(|(s, _)| *s == sink).map(|(_, r)| r)
    }
}

/// A [`Receipt`] as the ledger keeps it: the same facts, names shared.
#[derive(Debug, Clone, PartialEq)]
enum Stored {
    File {
        path: Arc<str>,
        offset: u64,
    },
    Null {
        stored: bool,
    },
    Kafka {
        topic: Arc<str>,
        partition: i32,
        offset: i64,
    },
    Rabbitmq {
        exchange: Arc<str>,
        routing_key: Arc<str>,
    },
    JetStream {
        stream: Arc<str>,
        sequence: u64,
        duplicate: bool,
    },
    NatsCore {
        subject: Arc<str>,
        persisted: bool,
    },
}

impl From<&Stored> for Receipt {
    fn from(s: &Stored) -> Receipt {
        match s {
            Stored::File { path, offset } => Receipt::File {
                path: path.to_string(),
                offset: *offset,
            },
            Stored::Null { stored } => Receipt::Null { stored: *stored },
            Stored::Kafka {
                topic,
                partition,
                offset,
            } => Receipt::Kafka {
                topic: topic.to_string(),
                partition: *partition,
                offset: *offset,
            },
            Stored::Rabbitmq {
                exchange,
                routing_key,
            } => Receipt::Rabbitmq {
                exchange: exchange.to_string(),
                routing_key: routing_key.to_string(),
            },
            Stored::JetStream {
                stream,
                sequence,
                duplicate,
            } => Receipt::JetStream {
                stream: stream.to_string(),
                sequence: *sequence,
                duplicate: *duplicate,
            },
            Stored::NatsCore { subject, persisted } => Receipt::NatsCore {
                subject: subject.to_string(),
                persisted: *persisted,
            },
        }
    }
}

/// Why a [`DeliveryRecord`] could not answer (a remote store; the memory ledger always answers).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("the delivery record is unavailable: {0}")]
    Unavailable(String),
}

/// The one question reconciliation asks a ledger: did `sink` confirm the event `id`? Behind a
/// trait so that the shared NATS KV ledger ([`shared::SharedLedger`]) answers it as well as the
/// memory [`Ledger`] ([`Layered`] asks both). Asking never creates an entry and never claims a
/// sink.
///
/// What an answer of `false` means depends on the store: the memory ledger forgets an id after
/// `idempotency.window_secs` (sooner when `max_entries` bites) and knows nothing from before
/// the process started, so there "not confirmed" may be "confirmed, but not remembered" — a
/// backfill then publishes it again with the same id (docs/reconcile.md).
#[async_trait::async_trait]
pub trait DeliveryRecord: Send + Sync {
    async fn confirmed(&self, id: &str, sink: &str) -> Result<bool, LedgerError>;
}

#[async_trait::async_trait]
impl DeliveryRecord for Ledger {
    async fn confirmed(&self, id: &str, sink: &str) -> Result<bool, LedgerError> {
        Ok(self.receipt(id, sink).is_some())
    }
}

/// This process's ledger first (no round trip, and it knows what it just published), then the
/// ledger every replica shares, when configured.
pub struct Layered {
    pub local: Arc<Ledger>,
    pub shared: Option<Arc<shared::SharedLedger>>,
}

#[async_trait::async_trait]
impl DeliveryRecord for Layered {
    async fn confirmed(&self, id: &str, sink: &str) -> Result<bool, LedgerError> {
        if self.local.confirmed(id, sink).await? {
            return Ok(true);
        }
        match &self.shared {
            Some(shared) => shared.confirmed(id, sink).await,
            None => Ok(false),
        }
    }
}

/// What [`Ledger::take`] found for one sink of one event id.
#[derive(Debug, Clone, PartialEq)]
pub enum Take {
    /// Acknowledged before: do not publish again.
    Acked(Receipt),
    /// Now marked in flight for the caller, who must publish and then [`Ledger::settle`].
    Mine,
    /// Another delivery's publish is in flight; its outcome is not known yet.
    Busy,
}

impl Ledger {
    pub fn new(window: Duration, max_entries: usize) -> Ledger {
        let max_entries = max_entries.max(1);
        // Sized once for the cap, so the tables never grow under load. At the cap every new id
        // evicts the oldest: the map fills with tombstones, and hashbrown then rehashes in place
        // only while it is at most half full — sized for 2 x the cap it always is, instead of
        // doubling under load (the old and the new table both resident for a moment; measured
        // as part of the peak RSS in docs/benchmarks.md). Memory a table does not use yet is
        // reserved, not resident. Above PRESIZE_MAX the tables grow as needed.
        let n = max_entries.min(PRESIZE_MAX);
        let inner = Inner {
            map: KeyMap::with_capacity_and_hasher(2 * n, Default::default()),
            order: VecDeque::with_capacity(n),
            ..Inner::default()
        };
        Ledger {
            inner: Mutex::new(inner),
            window,
            max_entries,
        }
    }

    /// For one sink of `id`: its receipt, or the right to publish (marking it in flight), or
    /// `Busy` while another publish of it is in flight. Atomic: of concurrent callers, one gets
    /// `Mine`.
    pub fn take(&self, id: &str, sink: &str) -> Take {
        self.take_at(id, sink, Instant::now())
    }

    /// [`Ledger::take`] at a given instant (tests drive the clock).
    fn take_at(&self, id: &str, sink: &str, now: Instant) -> Take {
        let mut inner = self.lock();
        let k = key(id);
        let incoming = !inner.map.contains_key(&k);
        self.evict(&mut inner, now, incoming);
        let entry_sink = inner.sink(sink);
        let entry = inner.entry(k, now);
        let Some(n) = entry_sink else {
            return Take::Mine;
        };
        if let Some(r) = entry.receipt(n) {
            return Take::Acked(r.into());
        }
        let bit = 1u64 << n;
        let live = inner.live.entry(k).or_default();
        if live.in_flight & bit != 0 {
            return Take::Busy;
        }
        live.in_flight |= bit;
        Take::Mine
    }

    /// The receipt `sink` holds for `id`, if any, without creating an entry or claiming the sink
    /// (expired entries are let go first, as [`Ledger::take`] does).
    pub fn receipt(&self, id: &str, sink: &str) -> Option<Receipt> {
        let mut inner = self.lock();
        self.evict(&mut inner, Instant::now(), false);
        let n = inner.sinks.iter().position(|s| &**s == sink)? as u8;
        inner.map.get(&key(id))?.receipt(n).map(Receipt::from)
    }

    /// Remembers a digest of `id`'s payload the first time; true when a later delivery of the
    /// same id carries a different one. Ids are derived from a few fields (call id, kind,
    /// status, retry), so a sender that reuses them for different content would otherwise be
    /// answered "duplicate" and silently not published: this makes it visible.
    pub fn payload_differs(&self, id: &str, payload: &[u8]) -> bool {
        use std::hash::{BuildHasher, RandomState};
        static STATE: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
        // 0 marks "no digest yet"; a digest that happens to be 0 is counted as 1.
        let digest = STATE.get_or_init(RandomState::new).hash_one(payload).max(1);
        let mut inner = self.lock();
        let entry = inner.entry(key(id), Instant::now());
        match entry.payload {
            0 => {
                entry.payload = digest;
                false
            }
            seen => seen != digest,
        }
    }

    /// The notifier woken when any publish of `id` settles. Register interest (`enable` the
    /// `notified()` future) and then call [`Ledger::take`] again, so no settlement is missed.
    /// Only a delivery that found the sink busy needs it, so entries get one only then.
    pub fn changes(&self, id: &str) -> Arc<Notify> {
        let mut inner = self.lock();
        let k = key(id);
        inner.entry(k, Instant::now());
        inner
            .live
            .entry(k)
            .or_default()
            .changed
            .get_or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// Ends the publish that [`Ledger::take`] granted: with its receipt, or `None` when it
    /// failed (a later delivery may publish again). Wakes the deliveries waiting on `id`.
    pub fn settle(&self, id: &str, sink: &str, receipt: Option<Receipt>) {
        let mut inner = self.lock();
        let n = inner.sink(sink);
        let stored = receipt.filter(|_| n.is_some()).map(|r| inner.store(r));
        let k = key(id);
        let entry = inner.entry(k, Instant::now());
        if let (Some(n), Some(stored)) = (n, stored) {
            let mut acked: Vec<(u8, Stored)> = std::mem::take(&mut entry.acked).into_vec();
            match acked.iter_mut().find(|(s, _)| *s == n) {
                Some((_, r)) => *r = stored,
                None => acked.push((n, stored)),
            }
            entry.acked = acked.into_boxed_slice();
        }
        if let Some(live) = inner.live.get_mut(&k) {
            if let Some(n) = n {
                live.in_flight &= !(1u64 << n);
            }
            if let Some(changed) = &live.changed {
                changed.notify_waiters();
            }
            if live.in_flight == 0 && live.changed.is_none() {
                inner.live.remove(&k);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Counts and the current retention, as of `now`.
    pub fn stats(&self) -> LedgerStats {
        self.stats_at(Instant::now())
    }

    fn stats_at(&self, now: Instant) -> LedgerStats {
        let inner = self.lock();
        // The front of the order queue is the oldest entry (one record per entry).
        let oldest = inner
            .order
            .front()
            .map(|(created, _)| now.saturating_duration_since(*created))
            .unwrap_or_default();
        LedgerStats {
            entries: inner.map.len(),
            expired: inner.expired,
            evicted_early: inner.evicted_early,
            retention: oldest,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts),
        // so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops expired entries, then the oldest idle ones while over capacity (counting the entry
    /// about to be created when `incoming`: looking up a known id makes no room, so it can never
    /// evict that id itself). An entry with a publish in flight is never evicted.
    fn evict(&self, inner: &mut Inner, now: Instant, incoming: bool) {
        let mut skipped = Vec::new();
        while let Some((created, k)) = inner.order.pop_front() {
            let over = inner.map.len() + usize::from(incoming) > self.max_entries;
            let expired = now.duration_since(created) >= self.window;
            if !over && !expired {
                inner.order.push_front((created, k));
                break;
            }
            // Every entry has exactly one order record (pushed when created, popped when
            // removed, pushed back when skipped), so the record in hand is this entry's.
            if !inner.map.contains_key(&k) {
                continue;
            }
            match inner.live.get(&k) {
                Some(l) if l.in_flight != 0 => {
                    skipped.push((created, k));
                    if skipped.len() > 64 {
                        break;
                    }
                }
                _ => {
                    inner.map.remove(&k);
                    inner.live.remove(&k);
                    if expired {
                        inner.expired += 1;
                    } else {
                        inner.evicted_early += 1;
                    }
                }
            }
        }
        for s in skipped.into_iter().rev() {
            inner.order.push_front(s);
        }
    }
}

#[cfg(test)]
mod tests;
