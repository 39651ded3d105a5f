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
mod tests {
    use super::*;

    fn far() -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(5)
    }

    fn receipt() -> Receipt {
        Receipt::Null { stored: false }
    }

    #[test]
    fn our_ids_become_their_own_16_bytes() {
        let a = crate::event::id::derive(&["x", "1"]);
        let b = crate::event::id::derive(&["x", "2"]);
        assert_eq!(hex::encode(key(&a)), a.replace('-', ""));
        assert_ne!(key(&a), key(&b));
        assert_ne!(key("not-an-id"), key("not-an-id2"));
    }

    /// The map's hasher folds a key's 8-byte words with rotate-and-xor: keys that differ in
    /// either half hash apart (a constant or lossy hash would turn the map into a list).
    #[test]
    fn key_hashes_fold_both_halves_of_the_key() {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let hash = |k: Key| BuildHasherDefault::<KeyHasher>::default().hash_one(k);
        // Bits that overlap the rotated state, so xor and or (or and) fold differently.
        let mut a = [0u8; 16];
        a[0] = 0b1010;
        a[1] = 0b10;
        a[8] = 0b0110;
        a[9] = 0b1000_0000;
        // [u8; 16] hashes as its length (one word), then its bytes (two words); by hand:
        let w1 = u64::from_le_bytes(a[..8].try_into().unwrap());
        let w2 = u64::from_le_bytes(a[8..].try_into().unwrap());
        let fold = |h: u64, w: u64| h.rotate_left(5) ^ w;
        assert_eq!(hash(a), fold(fold(fold(0, 16), w1), w2));
        let mut b = a;
        b[15] = 1;
        let mut c = a;
        c[3] = 1;
        assert_ne!(hash(a), hash(b), "second half");
        assert_ne!(hash(a), hash(c), "first half");
    }

    #[tokio::test]
    async fn confirmed_peeks_without_claiming_or_creating() {
        let l = Ledger::new(Duration::from_secs(60), 10);
        assert!(!l.confirmed("a", "s").await.unwrap());
        assert!(l.is_empty(), "asking creates no entry");
        assert_eq!(l.take("a", "s"), Take::Mine);
        assert!(
            !l.confirmed("a", "s").await.unwrap(),
            "in flight is not confirmed"
        );
        assert_eq!(
            l.take("a", "s"),
            Take::Busy,
            "asking did not free the claim"
        );
        l.settle("a", "s", Some(receipt()));
        assert!(l.confirmed("a", "s").await.unwrap());
        assert!(!l.confirmed("a", "other").await.unwrap(), "per sink");
        assert_eq!(l.receipt("a", "s"), Some(receipt()));
        let l = Ledger::new(Duration::from_millis(0), 10);
        assert_eq!(l.take("x", "s"), Take::Mine);
        l.settle("x", "s", Some(receipt()));
        assert!(
            !l.confirmed("x", "s").await.unwrap(),
            "past the window: forgotten"
        );
    }

    #[test]
    fn len_and_is_empty_count_entries() {
        let l = Ledger::new(Duration::from_secs(60), 10);
        assert!(l.is_empty());
        assert_eq!(l.len(), 0);
        assert_eq!(l.take("a", "s"), Take::Mine);
        assert_eq!(l.take("b", "s"), Take::Mine);
        assert!(!l.is_empty());
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn a_receipt_survives_for_the_next_delivery() {
        let l = Ledger::new(Duration::from_secs(60), 10);
        assert_eq!(l.take("a", "kafka"), Take::Mine);
        l.settle("a", "kafka", Some(receipt()));
        assert_eq!(l.take("a", "kafka"), Take::Acked(receipt()));
        assert_eq!(l.take("a", "nats"), Take::Mine, "per sink");
    }

    #[test]
    fn in_flight_until_settled_whatever_the_waiters_do() {
        let l = Ledger::new(Duration::from_secs(60), 10);
        assert_eq!(l.take("a", "s"), Take::Mine);
        assert_eq!(
            l.take("a", "s"),
            Take::Busy,
            "no second publish while in flight"
        );
        assert_eq!(l.take("a", "s"), Take::Busy, "still, however often asked");
        assert_eq!(l.take("b", "s"), Take::Mine, "per id");
        l.settle("a", "s", None);
        assert_eq!(l.take("a", "s"), Take::Mine, "a failure frees the sink");
        l.settle("a", "s", Some(receipt()));
        assert_eq!(l.take("a", "s"), Take::Acked(receipt()));
    }

    #[tokio::test]
    async fn settle_wakes_a_registered_waiter() {
        let l = Arc::new(Ledger::new(Duration::from_secs(60), 10));
        assert_eq!(l.take("a", "s"), Take::Mine);
        let changes = l.changes("a");
        let notified = changes.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        assert_eq!(l.take("a", "s"), Take::Busy);
        let l2 = l.clone();
        tokio::spawn(async move { l2.settle("a", "s", Some(Receipt::Null { stored: false })) });
        tokio::time::timeout_at(far(), notified)
            .await
            .expect("woken by settle");
        assert_eq!(l.take("a", "s"), Take::Acked(receipt()));
    }

    #[test]
    fn bounded_by_max_entries_and_window() {
        let l = Ledger::new(Duration::from_secs(60), 3);
        for i in 0..10 {
            let id = format!("id{i}");
            assert_eq!(l.take(&id, "s"), Take::Mine);
            l.settle(&id, "s", Some(receipt()));
        }
        assert!(l.len() <= 3, "len {}", l.len());
        assert_eq!(
            l.take("id9", "s"),
            Take::Acked(receipt()),
            "the newest survive"
        );

        let l = Ledger::new(Duration::from_millis(0), 100);
        assert_eq!(l.take("x", "s"), Take::Mine);
        l.settle("x", "s", Some(receipt()));
        assert_eq!(l.take("y", "s"), Take::Mine);
        l.settle("y", "s", None);
        assert_eq!(l.take("x", "s"), Take::Mine, "expired");
    }

    /// The window and the cap at their exact edges, and what each eviction is counted as.
    #[test]
    fn expiry_and_the_cap_at_their_edges_are_counted_apart() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let l = Ledger::new(Duration::from_millis(100), 3);
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            assert_eq!(l.take_at(id, "s", at(i as u64)), Take::Mine);
            l.settle(id, "s", Some(receipt()));
        }
        // Just inside the window, under the cap: nothing goes.
        assert_eq!(l.take_at("a", "s", at(99)), Take::Acked(receipt()));
        assert_eq!(l.stats_at(at(99)).entries, 3);
        assert_eq!(l.stats_at(at(99)).retention, Duration::from_millis(99));
        // A fourth id at the cap: the oldest goes, inside its window: evicted early.
        assert_eq!(l.take_at("d", "s", at(99)), Take::Mine);
        l.settle("d", "s", Some(receipt()));
        let st = l.stats_at(at(99));
        assert_eq!((st.entries, st.expired, st.evicted_early), (3, 0, 1));
        assert_eq!(
            st.retention,
            Duration::from_millis(98),
            "b is now the oldest"
        );
        assert_eq!(l.take_at("b", "s", at(100)), Take::Acked(receipt()));
        // Exactly at the end of its window an entry expires (b: created at 1 ms).
        assert_eq!(l.take_at("zz", "s", at(101)), Take::Mine);
        l.settle("zz", "s", None);
        let st = l.stats_at(at(101));
        assert_eq!(st.expired, 1, "{st:?}");
        assert_eq!(st.evicted_early, 1, "{st:?}");
        // Looking up a known id at the cap makes no room: nothing is evicted for it.
        assert_eq!(
            l.take_at("c", "s", at(101)),
            Take::Acked(receipt()),
            "c: 99 ms old"
        );
        assert_eq!(l.stats_at(at(101)).evicted_early, 1);
        // b expired, so it is new again, and at the cap it pushes out the oldest (c), early.
        assert_eq!(l.take_at("b", "s", at(101)), Take::Mine);
        let st = l.stats_at(at(101));
        assert_eq!(
            (st.entries, st.expired, st.evicted_early),
            (3, 1, 2),
            "{st:?}"
        );
        assert_eq!(l.take_at("d", "s", at(101)), Take::Acked(receipt()));
    }

    #[test]
    fn a_second_payload_under_one_id_is_told_apart() {
        let l = Ledger::new(Duration::from_secs(60), 10);
        assert!(!l.payload_differs("a", b"one"), "first seen");
        assert!(!l.payload_differs("a", b"one"), "a true redelivery");
        assert!(l.payload_differs("a", b"two"), "same id, other content");
        assert!(
            !l.payload_differs("a", b"one"),
            "the first one stays the reference"
        );
        assert!(!l.payload_differs("b", b"two"), "per id");
    }

    /// Entries in flight are skipped, not evicted, and the skip is bounded: up to 64 of them at
    /// the front still let an expired entry behind them go; more stop this pass (the next pass
    /// tries again), so one eviction never walks an unbounded queue under the lock.
    #[test]
    fn eviction_skips_at_most_64_entries_in_flight() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        for (busy, expect_evicted) in [(1, true), (64, true), (65, false)] {
            let l = Ledger::new(Duration::from_millis(100), 1_000);
            for i in 0..busy {
                assert_eq!(l.take_at(&format!("busy{i}"), "s", at(0)), Take::Mine);
            }
            assert_eq!(l.take_at("done", "s", at(1)), Take::Mine);
            l.settle("done", "s", Some(receipt()));
            assert_eq!(l.take_at("trigger", "s", at(500)), Take::Mine);
            let st = l.stats_at(at(500));
            assert_eq!(
                st.expired,
                u64::from(expect_evicted),
                "{busy} in flight: {st:?}"
            );
            assert_eq!(st.entries, busy + 2 - usize::from(expect_evicted));
        }
    }

    /// Receipts of many ids share their names (one topic string, not one per id), and the set
    /// of shared names is bounded, so a per-call name cannot grow it forever.
    #[test]
    fn receipt_names_are_shared_and_the_shared_set_is_bounded() {
        let l = Ledger::new(Duration::from_secs(60), 10_000);
        let kafka = |i: i64| Receipt::Kafka {
            topic: "calls.status".into(),
            partition: 0,
            offset: i,
        };
        for id in ["a", "b"] {
            assert_eq!(l.take(id, "bus"), Take::Mine);
        }
        l.settle("a", "bus", Some(kafka(1)));
        l.settle("b", "bus", Some(kafka(2)));
        let topic = |id: &str| {
            let inner = l.lock();
            match &inner.map[&key(id)].acked[0].1 {
                Stored::Kafka { topic, .. } => topic.clone(),
                other => panic!("{other:?}"),
            }
        };
        assert!(Arc::ptr_eq(&topic("a"), &topic("b")), "one shared string");
        assert_eq!(l.take("b", "bus"), Take::Acked(kafka(2)), "facts kept");

        for i in 0..MAX_SHARED_NAMES + 10 {
            let id = format!("n{i}");
            assert_eq!(l.take(&id, "amqp"), Take::Mine);
            let r = Receipt::Rabbitmq {
                exchange: "x".into(),
                routing_key: format!("calls.status.{i}"),
            };
            l.settle(&id, "amqp", Some(r.clone()));
            assert_eq!(l.take(&id, "amqp"), Take::Acked(r));
        }
        assert_eq!(l.lock().names.len(), MAX_SHARED_NAMES);
    }

    /// Every receipt kind comes back as it went in.
    #[test]
    fn every_receipt_kind_round_trips() {
        let l = Ledger::new(Duration::from_secs(60), 10);
        let receipts = [
            Receipt::File {
                path: "/x".into(),
                offset: 7,
            },
            Receipt::Null { stored: true },
            Receipt::Kafka {
                topic: "t".into(),
                partition: 3,
                offset: -1,
            },
            Receipt::Rabbitmq {
                exchange: "e".into(),
                routing_key: "k".into(),
            },
            Receipt::JetStream {
                stream: "S".into(),
                sequence: 9,
                duplicate: true,
            },
            Receipt::NatsCore {
                subject: "s".into(),
                persisted: false,
            },
        ];
        for (i, r) in receipts.iter().enumerate() {
            let sink = format!("s{i}");
            assert_eq!(l.take("id", &sink), Take::Mine);
            l.settle("id", &sink, Some(r.clone()));
        }
        for (i, r) in receipts.iter().enumerate() {
            assert_eq!(l.take("id", &format!("s{i}")), Take::Acked(r.clone()));
        }
        // A second receipt for a sink replaces its first.
        assert_eq!(l.lock().map[&key("id")].acked.len(), receipts.len());
        l.settle("id", "s1", Some(Receipt::Null { stored: false }));
        assert_eq!(
            l.take("id", "s1"),
            Take::Acked(Receipt::Null { stored: false })
        );
        assert_eq!(l.lock().map[&key("id")].acked.len(), receipts.len());
    }

    /// Only an id a delivery waits on gets a notifier.
    #[test]
    fn an_entry_gets_a_notifier_only_when_someone_waits() {
        let l = Ledger::new(Duration::from_secs(60), 10);
        assert_eq!(l.take("a", "s"), Take::Mine);
        l.settle("a", "s", Some(receipt()));
        assert!(
            l.lock().live.is_empty(),
            "nothing in flight, nobody waited: nothing beside the entry"
        );
        let n = l.changes("a");
        assert!(Arc::ptr_eq(&n, &l.changes("a")), "one per entry");
    }

    /// A delivery that took the notifier before a publish settled with nothing left in flight
    /// is still woken by the next publish's settlement: the notifier lives as long as the entry.
    #[tokio::test]
    async fn a_waiter_is_woken_by_a_publish_that_started_after_it_looked() {
        let l = Ledger::new(Duration::from_secs(60), 10);
        assert_eq!(l.take("a", "s"), Take::Mine);
        let changes = l.changes("a");
        l.settle("a", "s", None);
        assert_eq!(l.take("a", "s"), Take::Mine, "a second publish");
        let notified = changes.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        assert_eq!(l.take("a", "s"), Take::Busy);
        l.settle("a", "s", Some(receipt()));
        tokio::time::timeout(Duration::from_secs(5), notified)
            .await
            .expect("the waiter is woken by the second publish's settlement");
        assert_eq!(l.take("a", "s"), Take::Acked(receipt()));
    }

    /// What an id keeps beside its entry goes with it: evicted, an id leaves nothing behind.
    #[test]
    fn an_evicted_id_leaves_nothing_beside_the_map() {
        let l = Ledger::new(Duration::from_secs(60), 1);
        assert_eq!(l.take("a", "s"), Take::Mine);
        let _waiting = l.changes("a");
        l.settle("a", "s", Some(receipt()));
        assert_eq!(l.lock().live.len(), 1, "a waiter's notifier is kept");
        assert_eq!(l.take("b", "s"), Take::Mine, "b evicts a (cap 1)");
        let inner = l.lock();
        assert!(!inner.map.contains_key(&key("a")));
        assert!(
            !inner.live.contains_key(&key("a")),
            "a's notifier went with it"
        );
        assert_eq!(inner.live.len(), 1, "only b, in flight");
    }

    /// Sinks are told apart by number, up to MAX_SINKS; one more (which config refuses) is
    /// never deduplicated, and never confused with another sink.
    #[test]
    fn sinks_beyond_the_bit_mask_are_never_confused() {
        let l = Ledger::new(Duration::from_secs(60), 10);
        for i in 0..MAX_SINKS {
            let sink = format!("s{i}");
            assert_eq!(l.take("a", &sink), Take::Mine, "{sink}");
            assert_eq!(l.take("a", &sink), Take::Busy, "{sink}");
        }
        assert_eq!(l.take("a", "extra"), Take::Mine);
        assert_eq!(l.take("a", "extra"), Take::Mine, "not marked in flight");
        l.settle("a", "extra", Some(receipt()));
        assert_eq!(l.take("a", "extra"), Take::Mine, "no receipt kept for it");
        for i in 0..MAX_SINKS {
            let sink = format!("s{i}");
            assert_eq!(l.take("a", &sink), Take::Busy, "{sink} untouched");
            l.settle("a", &sink, None);
            assert_eq!(l.take("a", &sink), Take::Mine, "{sink}");
        }
    }

    #[test]
    fn stats_of_an_empty_ledger() {
        let l = Ledger::new(Duration::from_secs(1), 1);
        let st = l.stats();
        assert_eq!((st.entries, st.expired, st.evicted_early), (0, 0, 0));
        assert_eq!(st.retention, Duration::ZERO);
    }

    #[test]
    fn an_entry_in_flight_is_never_evicted() {
        let l = Ledger::new(Duration::from_secs(60), 1);
        assert_eq!(l.take("busy", "s"), Take::Mine);
        assert_eq!(l.take("other", "s"), Take::Mine);
        l.settle("other", "s", None);
        assert_eq!(
            l.take("busy", "s"),
            Take::Busy,
            "still in flight, not replaced"
        );
        let l = Ledger::new(Duration::from_millis(0), 100);
        assert_eq!(l.take("busy", "s"), Take::Mine);
        assert_eq!(l.take("other", "s"), Take::Mine);
        assert_eq!(
            l.take("busy", "s"),
            Take::Busy,
            "not expired while in flight"
        );
    }
}
