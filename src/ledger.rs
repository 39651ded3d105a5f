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
//! idle entries are evicted (an entry with a publish in flight never is). The ledger is per
//! replica; across replicas the deterministic event id lets brokers (JetStream) and consumers
//! drop the copies.

use std::collections::{HashMap, VecDeque};
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
    /// Ids in creation order, for expiry and eviction.
    order: VecDeque<(Instant, Key)>,
    /// Entries dropped because their window ended (the intended way out).
    expired: u64,
    /// Entries dropped by the `max_entries` cap while still inside their window: each one is a
    /// redelivery that would now publish again. Non-zero means the cap cannot hold the window at
    /// this rate; the metric and `validate`'s rate check say so.
    evicted_early: u64,
}

/// What the ledger holds and has let go of, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerStats {
    pub entries: usize,
    pub expired: u64,
    pub evicted_early: u64,
    /// Age of the oldest entry: how far back a redelivery is still recognised right now
    /// (the window when the cap is large enough, less when it is not).
    pub retention: Duration,
}

impl Inner {
    /// The entry of `key`, created (and queued for expiry) if it is new.
    fn entry(&mut self, key: Key, now: Instant) -> &mut Entry {
        let order = &mut self.order;
        self.map.entry(key).or_insert_with(|| {
            order.push_back((now, key));
            Entry {
                acked: Vec::new(),
                in_flight: Vec::new(),
                changed: Arc::new(Notify::new()),
                payload: None,
            }
        })
    }
}

struct Entry {
    /// (sink name, receipt): a few sinks at most, so a vector beats a map.
    acked: Vec<(Box<str>, Receipt)>,
    /// Sinks with a publish of this id whose outcome is not known yet.
    in_flight: Vec<Box<str>>,
    /// Woken whenever a publish of this id settles.
    changed: Arc<Notify>,
    /// A digest of the first payload seen under this id.
    payload: Option<u64>,
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
        Ledger {
            inner: Mutex::new(Inner::default()),
            window,
            max_entries: max_entries.max(1),
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
        let entry = inner.entry(k, now);
        if let Some((_, r)) = entry.acked.iter().find(|(s, _)| &**s == sink) {
            return Take::Acked(r.clone());
        }
        if entry.in_flight.iter().any(|s| &**s == sink) {
            return Take::Busy;
        }
        entry.in_flight.push(sink.into());
        Take::Mine
    }

    /// Remembers a digest of `id`'s payload the first time; true when a later delivery of the
    /// same id carries a different one. Ids are derived from a few fields (call id, kind,
    /// status, retry), so a sender that reuses them for different content would otherwise be
    /// answered "duplicate" and silently not published: this makes it visible.
    pub fn payload_differs(&self, id: &str, payload: &[u8]) -> bool {
        use std::hash::{BuildHasher, RandomState};
        static STATE: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
        let digest = STATE.get_or_init(RandomState::new).hash_one(payload);
        let mut inner = self.lock();
        let entry = inner.entry(key(id), Instant::now());
        match entry.payload {
            Some(seen) => seen != digest,
            None => {
                entry.payload = Some(digest);
                false
            }
        }
    }

    /// The notifier woken when any publish of `id` settles. Register interest (`enable` the
    /// `notified()` future) before calling [`Ledger::take`], so no settlement is missed.
    pub fn changes(&self, id: &str) -> Arc<Notify> {
        let mut inner = self.lock();
        inner.entry(key(id), Instant::now()).changed.clone()
    }

    /// Ends the publish that [`Ledger::take`] granted: with its receipt, or `None` when it
    /// failed (a later delivery may publish again). Wakes the deliveries waiting on `id`.
    pub fn settle(&self, id: &str, sink: &str, receipt: Option<Receipt>) {
        let mut inner = self.lock();
        let entry = inner.entry(key(id), Instant::now());
        entry.in_flight.retain(|s| &**s != sink);
        if let Some(receipt) = receipt {
            match entry.acked.iter_mut().find(|(s, _)| &**s == sink) {
                Some((_, r)) => *r = receipt,
                None => entry.acked.push((sink.into(), receipt)),
            }
        }
        entry.changed.notify_waiters();
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
            match inner.map.get(&k) {
                None => continue,
                Some(e) if !e.in_flight.is_empty() => {
                    skipped.push((created, k));
                    if skipped.len() > 64 {
                        break;
                    }
                }
                Some(_) => {
                    inner.map.remove(&k);
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
