//! The idempotency ledger: per event id, which sinks already acknowledged it.
//!
//! It makes retries go only where they are needed: when the sender redelivers a webhook after a
//! partial failure, only the sinks without a receipt publish again; when every sink had acked,
//! the answer is an immediate 200. Each id also has an async lock, so two concurrent deliveries
//! of one id never publish at the same time: the second waits (bounded by its deadline) and then
//! sees the first one's receipts.
//!
//! Memory is bounded twice: entries expire after `window`, and beyond `max_entries` the oldest
//! idle entries are evicted. The ledger is per replica; across replicas the deterministic event
//! id lets brokers (JetStream) and consumers drop the copies.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::OwnedMutexGuard;

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
}

impl Inner {
    /// The entry of `key`, created (and queued for expiry) if it is new.
    fn entry(&mut self, key: Key, now: Instant) -> &mut Entry {
        let order = &mut self.order;
        self.map.entry(key).or_insert_with(|| {
            order.push_back((now, key));
            Entry {
                created: now,
                acked: Vec::new(),
                lock: Arc::new(tokio::sync::Mutex::new(())),
            }
        })
    }
}

struct Entry {
    created: Instant,
    /// (sink name, receipt): a few sinks at most, so a vector beats a map.
    acked: Vec<(Box<str>, Receipt)>,
    lock: Arc<tokio::sync::Mutex<()>>,
}

/// Exclusive right to publish one event id, with the receipts earlier deliveries collected.
pub struct Claim {
    pub acked: HashMap<String, Receipt>,
    _guard: OwnedMutexGuard<()>,
}

#[derive(Debug, thiserror::Error)]
#[error("another delivery of this event id is still publishing")]
pub struct Busy;

impl Ledger {
    pub fn new(window: Duration, max_entries: usize) -> Ledger {
        Ledger {
            inner: Mutex::new(Inner::default()),
            window,
            max_entries: max_entries.max(1),
        }
    }

    /// Waits (until `deadline`) for exclusive use of `id`.
    pub async fn claim(&self, id: &str, deadline: tokio::time::Instant) -> Result<Claim, Busy> {
        let k = key(id);
        let lock = {
            let mut inner = self.lock();
            let now = Instant::now();
            self.evict(&mut inner, now);
            inner.entry(k, now).lock.clone()
        };
        let guard = tokio::time::timeout_at(deadline, lock.lock_owned())
            .await
            .map_err(|_| Busy)?;
        let acked = self
            .lock()
            .map
            .get(&k)
            .map(|e| {
                e.acked
                    .iter()
                    .map(|(s, r)| (s.to_string(), r.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Claim {
            acked,
            _guard: guard,
        })
    }

    /// Remembers that `sink` acknowledged `id`.
    pub fn record(&self, id: &str, sink: &str, receipt: Receipt) {
        let mut inner = self.lock();
        let entry = inner.entry(key(id), Instant::now());
        match entry.acked.iter_mut().find(|(s, _)| &**s == sink) {
            Some((_, r)) => *r = receipt,
            None => entry.acked.push((sink.into(), receipt)),
        }
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the map inconsistent (single inserts),
        // so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops expired entries, then the oldest idle ones while over capacity. An entry whose
    /// lock is held (a delivery in progress) is never evicted.
    fn evict(&self, inner: &mut Inner, now: Instant) {
        let mut skipped = Vec::new();
        while let Some((created, k)) = inner.order.pop_front() {
            let over = inner.map.len() >= self.max_entries;
            let expired = now.duration_since(created) >= self.window;
            if !over && !expired {
                inner.order.push_front((created, k));
                break;
            }
            match inner.map.get(&k) {
                // A stale order record of an id that was evicted and created again.
                Some(e) if e.created != created => continue,
                None => continue,
                Some(e) if Arc::strong_count(&e.lock) > 1 || e.lock.try_lock().is_err() => {
                    skipped.push((created, k));
                    if skipped.len() > 64 {
                        break;
                    }
                }
                Some(_) => {
                    inner.map.remove(&k);
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

    #[tokio::test]
    async fn records_survive_for_the_next_claim() {
        let l = Ledger::new(Duration::from_secs(60), 10);
        let c = l.claim("a", far()).await.unwrap();
        assert!(c.acked.is_empty());
        l.record("a", "kafka", receipt());
        drop(c);
        let c = l.claim("a", far()).await.unwrap();
        assert_eq!(c.acked.keys().collect::<Vec<_>>(), vec!["kafka"]);
    }

    #[tokio::test]
    async fn second_claim_waits_for_the_first() {
        let l = Arc::new(Ledger::new(Duration::from_secs(60), 10));
        let c = l.claim("a", far()).await.unwrap();
        let short = tokio::time::Instant::now() + Duration::from_millis(50);
        assert!(l.claim("a", short).await.is_err(), "busy until released");
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.claim("a", far()).await.map(|c| c.acked.len()) });
        l.record("a", "s", receipt());
        drop(c);
        assert_eq!(
            waiter.await.unwrap().unwrap(),
            1,
            "waiter sees the first delivery's ack"
        );
    }

    #[tokio::test]
    async fn bounded_by_max_entries_and_window() {
        let l = Ledger::new(Duration::from_secs(60), 3);
        for i in 0..10 {
            let id = format!("id{i}");
            drop(l.claim(&id, far()).await.unwrap());
            l.record(&id, "s", receipt());
        }
        assert!(l.len() <= 3, "len {}", l.len());
        let c = l.claim("id9", far()).await.unwrap();
        assert_eq!(c.acked.len(), 1, "the newest survive");

        let l = Ledger::new(Duration::from_millis(0), 100);
        drop(l.claim("x", far()).await.unwrap());
        l.record("x", "s", receipt());
        let c = l.claim("y", far()).await.unwrap();
        drop(c);
        let c = l.claim("x", far()).await.unwrap();
        assert!(c.acked.is_empty(), "expired");
    }

    #[tokio::test]
    async fn a_busy_entry_is_never_evicted() {
        let l = Ledger::new(Duration::from_secs(60), 1);
        let held = l.claim("busy", far()).await.unwrap();
        drop(l.claim("other", far()).await.unwrap());
        let short = tokio::time::Instant::now() + Duration::from_millis(50);
        assert!(
            l.claim("busy", short).await.is_err(),
            "still locked, not replaced"
        );
        drop(held);
    }
}
