//! The ledger's unit tests: take, settle, wait, expiry and eviction.

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

/// `stats` (what `/metrics` reads) is the ledger as of now: its entries counted.
#[test]
fn stats_are_the_ledger_now() {
    let l = Ledger::new(Duration::from_secs(60), 10);
    assert_eq!(l.stats().entries, 0);
    assert_eq!(l.take("a", "s"), Take::Mine);
    l.settle("a", "s", Some(receipt()));
    assert_eq!(l.take("b", "s"), Take::Mine);
    assert_eq!(l.stats().entries, 2);
}

/// Without a shared ledger, the layered record answers what this process's ledger knows:
/// not confirmed before the receipt, confirmed after it, per sink.
#[tokio::test]
async fn the_layered_record_without_a_shared_ledger_is_the_local_one() {
    let local = Arc::new(Ledger::new(Duration::from_secs(60), 10));
    let layered = Layered {
        local: local.clone(),
        shared: None,
    };
    assert!(!layered.confirmed("a", "s").await.unwrap());
    assert_eq!(local.take("a", "s"), Take::Mine);
    assert!(!layered.confirmed("a", "s").await.unwrap(), "in flight");
    local.settle("a", "s", Some(receipt()));
    assert!(layered.confirmed("a", "s").await.unwrap());
    assert!(!layered.confirmed("a", "other").await.unwrap(), "per sink");
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
