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
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OwnedMutexGuard;

use crate::sinks::Receipt;

pub struct Ledger {
    inner: Mutex<Inner>,
    window: Duration,
    max_entries: usize,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    /// Ids in creation order, for expiry and eviction.
    order: VecDeque<(Instant, String)>,
}

impl Inner {
    /// The entry of `id`, created (and queued for expiry) if it is new.
    fn entry(&mut self, id: &str, now: Instant) -> &mut Entry {
        if !self.map.contains_key(id) {
            self.order.push_back((now, id.to_string()));
        }
        self.map.entry(id.to_string()).or_insert_with(|| Entry {
            created: now,
            acked: HashMap::new(),
            lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }
}

struct Entry {
    created: Instant,
    acked: HashMap<String, Receipt>,
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
        let lock = {
            let mut inner = self.lock();
            let now = Instant::now();
            self.evict(&mut inner, now);
            inner.entry(id, now).lock.clone()
        };
        let guard = tokio::time::timeout_at(deadline, lock.lock_owned())
            .await
            .map_err(|_| Busy)?;
        let acked = self
            .lock()
            .map
            .get(id)
            .map(|e| e.acked.clone())
            .unwrap_or_default();
        Ok(Claim {
            acked,
            _guard: guard,
        })
    }

    /// Remembers that `sink` acknowledged `id`.
    pub fn record(&self, id: &str, sink: &str, receipt: Receipt) {
        let mut inner = self.lock();
        inner
            .entry(id, Instant::now())
            .acked
            .insert(sink.to_string(), receipt);
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
        while let Some((created, id)) = inner.order.pop_front() {
            let over = inner.map.len() >= self.max_entries;
            let expired = now.duration_since(created) >= self.window;
            if !over && !expired {
                inner.order.push_front((created, id));
                break;
            }
            match inner.map.get(&id) {
                // A stale order record of an id that was evicted and created again.
                Some(e) if e.created != created => continue,
                None => continue,
                Some(e) if Arc::strong_count(&e.lock) > 1 || e.lock.try_lock().is_err() => {
                    skipped.push((created, id));
                    if skipped.len() > 64 {
                        break;
                    }
                }
                Some(_) => {
                    inner.map.remove(&id);
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
