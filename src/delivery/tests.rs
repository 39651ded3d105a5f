use std::sync::Mutex as StdMutex;

use super::index::Query;
use super::store::{Store, StoreError};
use super::*;

fn m() -> Arc<DeliveryMetrics> {
    Arc::new(DeliveryMetrics::unregistered())
}

fn meta(id: &str) -> EventMeta {
    EventMeta {
        event_id: id.into(),
        call_id: "c".into(),
        kind: crate::event::EventKind::Status,
        status: None,
        origin: None,
    }
}

/// A store that remembers what it was asked.
#[derive(Default)]
struct Recording {
    saved: StdMutex<Vec<(String, Vec<String>)>>,
    held: Vec<Record>,
}

impl Store for Recording {
    fn load(&self) -> Result<Vec<Record>, StoreError> {
        Ok(self.held.clone())
    }
    fn save(&self, record: &Record, removed: &[String]) {
        self.saved
            .lock()
            .expect("lock")
            .push((record.event_id.clone(), removed.to_vec()));
    }
    fn remove(&self, removed: &[String]) {
        self.saved
            .lock()
            .expect("lock")
            .push((String::new(), removed.to_vec()));
    }
}

#[test]
fn the_default_bounds_hold_the_ledgers_window() {
    let d = DeliverySettings::default();
    assert_eq!((d.max_events, d.max_age_secs), (100_000, 1800));
    assert!(d.check(None).is_empty());
    assert!(
        d.check(Some(55)).is_empty(),
        "55/s × 1800 s = 99 000 ≤ 100 000"
    );
    let w = d.check(Some(56));
    assert_eq!(w.len(), 1);
    let (path, message, error) = &w[0];
    assert_eq!((*path, *error), ("deliveries.max_events", false));
    assert!(
        message.contains("holds 1785 s, not max_age_secs 1800 s"),
        "{message}"
    );
    assert!(message.contains("at least 100800"), "{message}");
    assert!(d.check(Some(0)).is_empty(), "no rate to judge");
    let zero = DeliverySettings {
        max_events: 0,
        max_age_secs: 0,
        ..DeliverySettings::default()
    };
    let errors: Vec<_> = zero
        .check(None)
        .into_iter()
        .map(|(p, _, e)| (p, e))
        .collect();
    assert_eq!(
        errors,
        [
            ("deliveries.max_events", true),
            ("deliveries.max_age_secs", true)
        ]
    );
    assert_eq!(
        d.bounds(),
        Bounds {
            max_events: 100_000,
            max_age_ms: 1_800_000
        }
    );
}

#[test]
fn every_update_goes_to_the_store_with_what_was_evicted() {
    let store = Arc::new(Recording::default());
    let settings = DeliverySettings {
        max_events: 1,
        max_age_secs: 60,
        ..DeliverySettings::default()
    };
    let d = Deliveries::new(&settings, m())
        .with_store(store.clone())
        .expect("loads");
    d.answered(&meta("e1"), Answer::Accepted, vec![]);
    d.answered(&meta("e2"), Answer::Accepted, vec![]);
    let receipt = crate::sinks::Receipt::Null { stored: false };
    d.sink_update(
        &meta("e2"),
        SinkEntry::new("n", "null", true, Outcome::Acked).with_receipt(receipt.clone()),
    );
    let verdict = AuditResult {
        verdict: Verdict::Verified,
        at_ms: 0,
        detail: None,
    };
    d.audited("e2", "n", &receipt, verdict.clone());
    // Unknown copies write nothing.
    d.audited("e2", "other", &receipt, verdict);
    let saved = store.saved.lock().expect("lock").clone();
    assert_eq!(
        saved,
        vec![
            ("e1".to_string(), vec![]),
            ("e2".to_string(), vec!["e1".to_string()]),
            ("e2".to_string(), vec![]),
            ("e2".to_string(), vec![]),
        ]
    );
    assert_eq!(d.len(), 1);
    assert!(!d.is_empty());
    assert_eq!(d.metrics().evicted.with_label_values(&["cap"]).get(), 1);
}

#[test]
fn a_restart_finds_the_stored_records_within_the_bounds() {
    let mut old = index::Index::new(Bounds {
        max_events: 10,
        max_age_ms: u64::MAX,
    });
    let now = now_ms();
    let a = old
        .answered(&meta("a"), Answer::Accepted, vec![], now - 120_000)
        .clone();
    let b = old
        .answered(&meta("b"), Answer::Accepted, vec![], now - 1_000)
        .clone();
    let store = Arc::new(Recording {
        held: vec![a, b],
        ..Recording::default()
    });
    let settings = DeliverySettings {
        max_events: 10,
        max_age_secs: 60,
        ..DeliverySettings::default()
    };
    let d = Deliveries::new(&settings, m())
        .with_store(store)
        .expect("loads");
    let found: Vec<String> = d
        .query(&Query {
            limit: 10,
            ..Query::default()
        })
        .deliveries
        .into_iter()
        .map(|r| r.event_id)
        .collect();
    assert_eq!(found, ["b"], "the one past max_age is dropped");
    d.answered(&meta("n"), Answer::Accepted, vec![]);
    let n = d.query(&Query {
        event_id: Some("n".into()),
        limit: 1,
        ..Query::default()
    });
    assert_eq!(n.deliveries[0].seq, 3, "after the restored cursors");
}

#[test]
fn a_replay_updates_the_events_record() {
    let d = Deliveries::new(&DeliverySettings::default(), m());
    let event = crate::event::test_support::sample_event();
    struct Nothing;
    #[async_trait::async_trait]
    impl crate::sinks::Sink for Nothing {
        async fn publish(
            &self,
            _: &crate::sinks::Outgoing,
        ) -> Result<Receipt, crate::sinks::SinkError> {
            Ok(Receipt::Null { stored: false })
        }
    }
    let sink = crate::sinks::SinkHandle {
        name: "k".into(),
        kind: "kafka",
        required: true,
        timeout: std::time::Duration::from_secs(1),
        filters: None,
        on_unavailable: crate::sinks::OnUnavailable::Spool,
        sink: Arc::new(Nothing),
    };
    let receipt = Receipt::Kafka {
        topic: "t".into(),
        partition: 0,
        offset: 7,
    };
    d.replayed(
        &event,
        &sink,
        5,
        Outcome::DeadLettered,
        None,
        Some("rejected: no route"),
    );
    d.replayed(
        &event,
        &sink,
        6,
        Outcome::Replayed,
        Some(receipt.clone()),
        None,
    );
    let r = d.query(&Query {
        call_id: Some(event.subject.clone()),
        limit: 10,
        ..Query::default()
    });
    assert_eq!(r.deliveries.len(), 1);
    let e = r.deliveries[0].sink("k").expect("the sink's entry");
    assert_eq!(
        (e.outcome, e.spool_seq, e.receipt.clone(), e.error.clone()),
        (Outcome::Replayed, Some(6), Some(receipt), None)
    );
    assert_eq!(r.deliveries[0].event_id, event.id);
    assert_eq!(r.deliveries[0].status, event.data.status);
}

#[test]
fn the_index_survives_in_the_spools_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("spool.redb");
    let db = Arc::new(redb::Database::create(&path).expect("db"));
    let provider = {
        let db = db.clone();
        move || Some(db.clone())
    };
    let settings = DeliverySettings {
        max_events: 2,
        max_age_secs: 3600,
        ..DeliverySettings::default()
    };
    {
        let d = Deliveries::new(&settings, m())
            .with_store(Arc::new(store::Redb::new(Arc::new(provider.clone()))))
            .expect("empty");
        assert!(d.is_empty());
        for id in ["a", "b", "c"] {
            d.answered(
                &meta(id),
                Answer::Accepted,
                vec![SinkEntry::new("k", "kafka", true, Outcome::Failed).with_reason("down")],
            );
        }
        d.flush();
    }
    let d = Deliveries::new(&settings, m())
        .with_store(Arc::new(store::Redb::new(Arc::new(provider))))
        .expect("loads");
    let found: Vec<(String, u64)> = d
        .query(&Query {
            limit: 10,
            ..Query::default()
        })
        .deliveries
        .into_iter()
        .map(|r| (r.event_id, r.seq))
        .collect();
    assert_eq!(
        found,
        [("b".to_string(), 2), ("c".to_string(), 3)],
        "the evicted one is gone from the table too"
    );
    let none = store::Redb::new(Arc::new(|| None));
    assert!(none.load().is_err(), "no database is an error at start");
}

#[test]
fn an_update_of_a_record_past_its_age_only_removes_it() {
    let mut old = index::Index::new(Bounds {
        max_events: 10,
        max_age_ms: u64::MAX,
    });
    let r = old
        .answered(&meta("a"), Answer::Accepted, vec![], now_ms() - 59_990)
        .clone();
    let store = Arc::new(Recording {
        held: vec![r],
        ..Recording::default()
    });
    let settings = DeliverySettings {
        max_events: 10,
        max_age_secs: 60,
        ..DeliverySettings::default()
    };
    let d = Deliveries::new(&settings, m())
        .with_store(store.clone())
        .expect("loads");
    assert_eq!(d.len(), 1);
    std::thread::sleep(std::time::Duration::from_millis(20));
    d.sink_update(
        &meta("a"),
        SinkEntry::new("k", "kafka", true, Outcome::Replayed),
    );
    assert!(d.is_empty());
    let saved = store.saved.lock().expect("lock").clone();
    assert_eq!(saved, vec![(String::new(), vec!["a".to_string()])]);
    assert_eq!(d.metrics().evicted.with_label_values(&["age"]).get(), 1);
}
