//! The spool's bookkeeping against the redb backend in a temporary directory: bytes, waiting
//! calls, the bound, sequences across a restart, dead letters and redrive.

use super::dead::{DeadCursor, DeadLetterPage, PurgeFilter};
use super::store::Redrive;
use super::*;
use crate::event::test_support::sample_event;

fn event(id: &str, call: &str) -> Outgoing {
    let mut ev = sample_event();
    ev.id = id.into();
    ev.subject = call.into();
    Outgoing::new(ev)
}

fn settings(dir: &tempfile::TempDir, max_bytes: u64) -> SpoolSettings {
    SpoolSettings {
        path: dir.path().join("spool.redb"),
        max_bytes,
        max_dead_letters: 10_000,
    }
}

fn open(dir: &tempfile::TempDir, max_bytes: u64) -> Arc<Spool> {
    Spool::open(&settings(dir, max_bytes)).expect("spool opens")
}

/// What one event takes in the spool.
fn size_of(out: &Outgoing) -> u64 {
    encode(0, &out.event.subject, &out.structured).len() as u64
}

#[tokio::test]
async fn an_entry_is_counted_until_removed_and_its_call_waits_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(&dir, 1 << 20);
    let (a, b) = (event("e-a", "call-x"), event("e-b", "call-x"));
    let seq_a = spool.append("s", &a).await.unwrap();
    assert_eq!(spool.bytes(), size_of(&a));
    assert!(spool.has_waiting("s", "call-x"));
    assert!(!spool.has_waiting("s", "call-y"));
    assert!(!spool.has_waiting("other", "call-x"));
    let seq_b = spool.append("s", &b).await.unwrap();
    assert!(seq_b > seq_a);
    assert_eq!(spool.depths(), vec![("s".to_string(), 2)]);
    assert_eq!(spool.bytes(), size_of(&a) + size_of(&b));

    let head = spool.oldest("s").await.unwrap().expect("an entry waits");
    assert_eq!((head.seq, head.call_id.as_str()), (seq_a, "call-x"));
    assert_eq!(head.event, a.structured.to_vec());
    assert!(spool.oldest("other").await.unwrap().is_none());

    spool.remove("s", &head).await.unwrap();
    assert_eq!(spool.bytes(), size_of(&b));
    assert!(
        spool.has_waiting("s", "call-x"),
        "one of the call's events still waits"
    );
    let next = spool.oldest("s").await.unwrap().unwrap();
    assert_eq!(next.seq, seq_b);
    spool.remove("s", &next).await.unwrap();
    assert_eq!(spool.bytes(), 0);
    assert!(!spool.has_waiting("s", "call-x"));
    assert!(spool.oldest("s").await.unwrap().is_none());
    assert_eq!(spool.depths(), vec![("s".to_string(), 0)]);
}

#[tokio::test]
async fn the_bound_is_exact_and_a_refused_event_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let a = event("e-a", "call-a");
    let spool = open(&dir, size_of(&a));
    spool.append("s", &a).await.expect("exactly max_bytes fits");
    let b = event("e-b", "call-b");
    match spool.append("s", &b).await {
        Err(SpoolError::Full { held, max }) => assert_eq!((held, max), (size_of(&a), size_of(&a))),
        other => panic!("expected Full, got {other:?}"),
    }
    assert_eq!(spool.bytes(), size_of(&a));
    assert!(!spool.has_waiting("s", "call-b"));
    assert_eq!(spool.status().unwrap()[0].depth, 1);
}

#[tokio::test]
async fn a_reopened_spool_finds_its_entries_and_numbers_past_its_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        event("e-a", "call-1"),
        event("e-b", "call-2"),
        event("e-c", "call-3"),
    );
    let mut seqs = Vec::new();
    {
        let spool = open(&dir, 1 << 20);
        seqs.push(spool.append("s1", &a).await.unwrap());
        seqs.push(spool.append("s1", &b).await.unwrap());
        seqs.push(spool.append("s2", &c).await.unwrap());
        let head = spool.oldest("s1").await.unwrap().unwrap();
        spool.dead_letter("s1", &head, "refused").await.unwrap();
        spool.bury("s3", &c, "too large").await.unwrap();
    }
    let spool = open(&dir, 1 << 20);
    assert_eq!(spool.bytes(), size_of(&b) + size_of(&c));
    assert!(
        !spool.has_waiting("s1", "call-1"),
        "dead-lettered, not waiting"
    );
    assert!(spool.has_waiting("s1", "call-2"));
    assert!(spool.has_waiting("s2", "call-3"));
    assert_eq!(spool.oldest("s1").await.unwrap().unwrap().seq, seqs[1]);
    let buried = spool
        .dead_letters()
        .unwrap()
        .into_iter()
        .find(|d| d.sink == "s3")
        .unwrap()
        .seq;
    assert!(buried > seqs[2]);
    let next = spool.append("s1", &a).await.unwrap();
    assert!(next > buried, "{next} must follow the buried {buried}");
}

#[tokio::test]
async fn dead_letters_keep_their_reason_and_redrive_puts_them_behind_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(&dir, 1 << 20);
    let (a, b, c) = (
        event("e-a", "call-x"),
        event("e-b", "call-y"),
        event("e-c", "call-z"),
    );
    spool.append("s", &a).await.unwrap();
    let seq_b = spool.append("s", &b).await.unwrap();
    let head = spool.oldest("s").await.unwrap().unwrap();
    spool.dead_letter("s", &head, "unroutable").await.unwrap();
    spool.bury("t", &c, "too large").await.unwrap();
    assert_eq!(spool.bytes(), size_of(&b));
    assert!(!spool.has_waiting("s", "call-x"));

    let dead = spool.dead_letters().unwrap();
    assert_eq!(dead.len(), 2);
    assert_eq!(
        (
            dead[0].sink.as_str(),
            dead[0].seq,
            dead[0].reason.as_str(),
            dead[0].call_id.as_str(),
            dead[0].event_id.as_str()
        ),
        ("s", head.seq, "unroutable", "call-x", "e-a")
    );
    assert_eq!(
        (
            dead[1].sink.as_str(),
            dead[1].reason.as_str(),
            dead[1].event_id.as_str()
        ),
        ("t", "too large", "e-c")
    );
    assert!(dead[0].dead_at_ms > 0);

    let status = spool
        .status_of(&["s".to_string(), "u".to_string()])
        .unwrap();
    let view: Vec<_> = status
        .iter()
        .map(|q| (q.sink.as_str(), q.depth, q.bytes, q.dead_letters))
        .collect();
    assert_eq!(
        view,
        vec![("s", 1, size_of(&b), 1), ("u", 0, 0, 0), ("t", 0, 0, 1)]
    );
    assert!(status[0].oldest_age_secs >= 0.0 && status[0].oldest_age_secs < 60.0);
    assert_eq!(status[1].oldest_age_secs, 0.0);

    // Only the chosen sink's dead letter moves, behind what waits there.
    assert_eq!(spool.redrive(Some("s"), None).unwrap(), 1);
    assert!(spool.has_waiting("s", "call-x"));
    assert_eq!(spool.bytes(), size_of(&b) + size_of(&a));
    let first = spool.oldest("s").await.unwrap().unwrap();
    assert_eq!(first.seq, seq_b, "the redriven event queues behind");
    spool.remove("s", &first).await.unwrap();
    let redriven = spool.oldest("s").await.unwrap().unwrap();
    assert_eq!(
        (redriven.call_id.as_str(), redriven.event.as_slice()),
        ("call-x", a.structured.as_ref())
    );
    assert_eq!(spool.dead_letters().unwrap().len(), 1);

    // A seq that is not there moves nothing; the right one does.
    assert_eq!(spool.redrive(None, Some(dead[1].seq + 1000)).unwrap(), 0);
    assert_eq!(spool.redrive(None, Some(dead[1].seq)).unwrap(), 1);
    assert!(spool.dead_letters().unwrap().is_empty());
    assert!(spool.has_waiting("t", "call-z"));
}

#[tokio::test]
async fn redrive_stops_when_the_spool_is_full_and_moves_nothing_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (event("e-a", "call-a"), event("e-b", "call-b"));
    let spool = open(&dir, size_of(&a).max(size_of(&b)));
    spool.append("s", &a).await.unwrap();
    let head = spool.oldest("s").await.unwrap().unwrap();
    spool.dead_letter("s", &head, "refused").await.unwrap();
    assert_eq!(spool.bytes(), 0);
    spool.append("s", &b).await.unwrap();
    assert!(matches!(
        spool.redrive(None, None),
        Err(SpoolError::Full { .. })
    ));
    assert_eq!(spool.dead_letters().unwrap().len(), 1);
    assert!(!spool.has_waiting("s", "call-a"));
    let waiting = spool.oldest("s").await.unwrap().unwrap();
    spool.remove("s", &waiting).await.unwrap();
    assert_eq!(spool.redrive(None, None).unwrap(), 1);
    assert!(spool.has_waiting("s", "call-a"));
}

#[tokio::test]
async fn concurrent_appends_all_land_each_under_its_own_sequence() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(&dir, 1 << 24);
    let mut tasks = Vec::new();
    for i in 0..200 {
        let spool = spool.clone();
        tasks.push(tokio::spawn(async move {
            let out = event(&format!("e-{i}"), &format!("call-{}", i % 7));
            spool.append("s", &out).await.unwrap()
        }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap());
    }
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 200, "every append got its own sequence");
    drop(spool);
    let spool = open(&dir, 1 << 24);
    assert_eq!(spool.depths(), vec![("s".to_string(), 200)]);
}

#[tokio::test]
async fn an_append_and_a_redrive_wake_the_sinks_replayer() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(&dir, 1 << 20);
    let woken = |spool: &Arc<Spool>| {
        let notify = spool.appended("s");
        async move {
            tokio::time::timeout(std::time::Duration::from_secs(5), notify.notified())
                .await
                .is_ok()
        }
    };
    // Notify::notify_one stores a permit: a replayer that looks after the append still wakes.
    spool.append("s", &event("e-a", "call-a")).await.unwrap();
    assert!(woken(&spool).await, "append wakes the replayer");
    let head = spool.oldest("s").await.unwrap().unwrap();
    spool.dead_letter("s", &head, "refused").await.unwrap();
    assert_eq!(spool.redrive(None, None).unwrap(), 1);
    assert!(woken(&spool).await, "redrive wakes the replayer");
    assert!(
        Arc::ptr_eq(&spool.appended("s"), &spool.appended("s")),
        "one notifier per sink"
    );
}

#[tokio::test]
async fn redrive_moves_what_fits_and_reports_how_many() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (event("e-a", "call-a"), event("e-b", "call-b"));
    assert_eq!(size_of(&a), size_of(&b));
    let spool = open(&dir, size_of(&a));
    for out in [&a, &b] {
        spool.append("s", out).await.unwrap();
        let head = spool.oldest("s").await.unwrap().unwrap();
        spool.dead_letter("s", &head, "refused").await.unwrap();
    }
    assert_eq!(spool.bytes(), 0);
    // Room for one: the first moves, the second stays dead, and the count says so.
    assert_eq!(spool.redrive(None, None).unwrap(), 1);
    assert_eq!(spool.bytes(), size_of(&a));
    assert_eq!(spool.dead_letters().unwrap().len(), 1);
    assert!(spool.has_waiting("s", "call-a"));
    assert!(!spool.has_waiting("s", "call-b"));
}

#[tokio::test]
async fn health_is_full_from_a_refusal_until_room_is_freed_and_writable_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (event("e-a", "call-a"), event("e-b", "call-b"));
    // Room for one event and a half: the second is refused although the spool is not at its cap.
    let max = size_of(&a) * 3 / 2;
    let spool = open(&dir, max);
    assert_eq!(spool.health().await, SpoolHealth::Writable { held: 0, max });
    spool.append("s", &a).await.unwrap();
    let held = size_of(&a);
    assert_eq!(spool.health().await, SpoolHealth::Writable { held, max });
    assert!(matches!(
        spool.append("s", &b).await,
        Err(SpoolError::Full { .. })
    ));
    assert_eq!(spool.health().await, SpoolHealth::Full { held, max });
    let head = spool.oldest("s").await.unwrap().unwrap();
    spool.remove("s", &head).await.unwrap();
    assert_eq!(spool.health().await, SpoolHealth::Writable { held: 0, max });
}

#[tokio::test]
async fn health_at_the_cap_is_full_without_a_refusal() {
    let dir = tempfile::tempdir().unwrap();
    let a = event("e-a", "call-a");
    let spool = open(&dir, size_of(&a));
    spool.append("s", &a).await.unwrap();
    let n = size_of(&a);
    assert_eq!(spool.health().await, SpoolHealth::Full { held: n, max: n });
}

/// A backend whose writes fail, as on a volume gone read-only: the spool's probe says so.
struct Unwritable(redb_store::RedbStore);

impl SpoolStore for Unwritable {
    fn recover(&self, each: &mut dyn FnMut(&str, u64, &[u8])) -> Result<u64, SpoolError> {
        self.0.recover(each)
    }
    fn write(&self, _: Table, _: &str, _: u64, _: Vec<u8>) -> store::Pending<()> {
        Box::pin(async { Err(read_only()) })
    }
    fn take_out(&self, s: &str, q: u64, d: Option<store::DeadRecord>) -> store::Pending<u64> {
        self.0.take_out(s, q, d)
    }
    fn probe(&self) -> store::Pending<()> {
        Box::pin(async { Err(read_only()) })
    }
    fn oldest(&self, sink: &str) -> Result<Option<(u64, Vec<u8>)>, SpoolError> {
        self.0.oldest(sink)
    }
    fn tally(&self) -> Result<Vec<(String, store::Tally)>, SpoolError> {
        self.0.tally()
    }
    fn dead(&self, each: &mut dyn FnMut(&str, u64, &[u8])) -> Result<(), SpoolError> {
        self.0.dead(each)
    }
    fn dead_from(
        &self,
        start: std::ops::Bound<(&str, u64)>,
        each: &mut dyn FnMut(&str, u64, &[u8]) -> bool,
    ) -> Result<(), SpoolError> {
        self.0.dead_from(start, each)
    }
    fn purge(&self, pick: &mut dyn FnMut(&str, u64, &[u8]) -> bool) -> Result<(), SpoolError> {
        self.0.purge(pick)
    }
    fn redrive(&self, pick: &mut dyn FnMut(&str, u64, &[u8]) -> Redrive) -> Result<(), SpoolError> {
        self.0.redrive(pick)
    }
}

fn read_only() -> SpoolError {
    SpoolError::Storage {
        what: "write",
        source: Box::new(std::io::Error::from_raw_os_error(30)),
    }
}

#[tokio::test]
async fn health_is_unwritable_when_the_backend_cannot_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = redb_store::RedbStore::open(&dir.path().join("spool.redb")).unwrap();
    let spool =
        Spool::with_store(Arc::new(Unwritable(store)), dir.path().into(), 1 << 20, 10).unwrap();
    match spool.health().await {
        SpoolHealth::Unwritable { error } => {
            assert!(error.contains("spool write failed"), "{error}")
        }
        other => panic!("expected Unwritable, got {other:?}"),
    }
}

/// The probe goes through the writer's commit path: one more durable commit each time.
#[tokio::test]
async fn the_probe_is_a_durable_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(redb_store::RedbStore::open(&dir.path().join("spool.redb")).unwrap());
    let before = store.commits();
    store.probe().await.unwrap();
    store.probe().await.unwrap();
    assert_eq!(store.commits(), before + 2);
}

fn open_capped(dir: &tempfile::TempDir, max_dead_letters: u64) -> Arc<Spool> {
    Spool::open(&SpoolSettings {
        path: dir.path().join("spool.redb"),
        max_bytes: 1 << 20,
        max_dead_letters,
    })
    .expect("spool opens")
}

/// One dead letter per (sink, event id), whichever way it dies (buried at once, or refused
/// when replayed); at the cap a new one is not kept and is counted as discarded, and a
/// queue is never blocked by it; the counts survive a restart.
#[tokio::test]
async fn dead_letters_are_one_per_event_and_sink_and_capped() {
    let dir = tempfile::tempdir().unwrap();
    {
        let spool = open_capped(&dir, 3);
        let a = event("e-a", "call-a");
        for _ in 0..3 {
            spool.bury("s", &a, "too large").await.unwrap();
        }
        spool.bury("t", &a, "too large").await.unwrap();
        // The same event spooled and then refused on replay: no second letter for `s`.
        spool.append("s", &a).await.unwrap();
        let head = spool.oldest("s").await.unwrap().unwrap();
        spool.dead_letter("s", &head, "unroutable").await.unwrap();
        assert_eq!(spool.bytes(), 0, "the entry left the queue");
        assert_eq!(spool.dead_letters().unwrap().len(), 2);

        spool
            .bury("s", &event("e-b", "call-b"), "too large")
            .await
            .unwrap();
        assert!(matches!(
            spool.bury("s", &event("e-c", "call-c"), "too large").await,
            Err(SpoolError::DeadLettersFull { max: 3 })
        ));
        // Refused on replay at the cap: removed from the queue (never blocking it), not kept.
        let d = event("e-d", "call-d");
        spool.append("t", &d).await.unwrap();
        let head = spool.oldest("t").await.unwrap().unwrap();
        spool.dead_letter("t", &head, "unroutable").await.unwrap();
        assert!(spool.oldest("t").await.unwrap().is_none());
        assert_eq!(spool.dead_letters().unwrap().len(), 3);
        let mut counts = spool.dead_counts();
        counts.sort();
        assert_eq!(
            counts,
            vec![("s".to_string(), 2, 1), ("t".to_string(), 1, 1)]
        );
        let status = spool.status().unwrap();
        assert_eq!(
            status
                .iter()
                .map(|q| (q.sink.as_str(), q.dead_letters, q.dead_letters_discarded))
                .collect::<Vec<_>>(),
            vec![("s", 2, 1), ("t", 1, 1)]
        );
    }
    let spool = open_capped(&dir, 3);
    let mut counts = spool.dead_counts();
    counts.sort();
    assert_eq!(
        counts,
        vec![("s".to_string(), 2, 0), ("t".to_string(), 1, 0)],
        "kept ones counted from the file; discarded ones were this run's"
    );
    // Still deduplicated after the restart.
    spool
        .bury("s", &event("e-a", "call-a"), "again")
        .await
        .unwrap();
    assert_eq!(spool.dead_letters().unwrap().len(), 3);
}

#[tokio::test]
async fn dead_letters_are_listed_page_by_page_and_purged_by_sink_and_age() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(&dir, 1 << 20);
    for (sink, id) in [("a", "1"), ("a", "2"), ("b", "3"), ("b", "4"), ("c", "5")] {
        spool
            .bury(sink, &event(&format!("e-{id}"), "call"), "too large")
            .await
            .unwrap();
    }
    let ids = |p: &DeadLetterPage| {
        p.dead_letters
            .iter()
            .map(|d| d.event_id.clone())
            .collect::<Vec<_>>()
    };
    let p1 = spool.dead_letter_page(None, None, 2).unwrap();
    assert_eq!(ids(&p1), ["e-1", "e-2"]);
    let c1 = DeadCursor::parse(p1.next.as_deref().unwrap()).unwrap();
    let p2 = spool.dead_letter_page(None, Some(&c1), 2).unwrap();
    assert_eq!(ids(&p2), ["e-3", "e-4"]);
    let c2 = DeadCursor::parse(p2.next.as_deref().unwrap()).unwrap();
    let p3 = spool.dead_letter_page(None, Some(&c2), 2).unwrap();
    assert_eq!((ids(&p3), p3.next), (vec!["e-5".to_string()], None));
    let only_b = spool.dead_letter_page(Some("b"), None, 10).unwrap();
    assert_eq!(
        (ids(&only_b), only_b.next),
        (vec!["e-3".into(), "e-4".into()], None)
    );
    let b_after_a = spool.dead_letter_page(Some("b"), Some(&c1), 1).unwrap();
    assert_eq!(
        ids(&b_after_a),
        ["e-3"],
        "a cursor of an earlier sink starts at b's first"
    );
    assert_eq!(
        DeadCursor::parse("sink:with:colons:7"),
        Some(DeadCursor {
            sink: "sink:with:colons".into(),
            seq: 7
        })
    );
    assert_eq!(DeadCursor::parse("no-seq"), None);

    let long_ago = PurgeFilter {
        sink: None,
        before_ms: Some(1),
        ..Default::default()
    };
    assert!(spool.purge(&long_ago).unwrap().is_empty());
    let b = PurgeFilter {
        sink: Some("b".into()),
        before_ms: None,
        ..Default::default()
    };
    assert_eq!(spool.purge(&b).unwrap(), vec![("b".to_string(), 2)]);
    assert_eq!(spool.dead_letters().unwrap().len(), 3);
    // A purged event can be kept again.
    spool
        .bury("b", &event("e-3", "call"), "again")
        .await
        .unwrap();
    let all = PurgeFilter {
        sink: None,
        before_ms: Some(u64::MAX),
        ..Default::default()
    };
    let mut purged = spool.purge(&all).unwrap();
    purged.sort();
    assert_eq!(
        purged,
        vec![
            ("a".to_string(), 2),
            ("b".to_string(), 1),
            ("c".to_string(), 1)
        ]
    );
    assert!(spool.dead_letters().unwrap().is_empty());
    assert!(spool.dead_counts().iter().all(|(_, kept, _)| *kept == 0));
}

/// A dead letter written before the event id was stored beside the entry is still found by
/// its id at open (decoded from the entry), so it is not kept twice.
#[tokio::test]
async fn a_dead_letter_of_the_earlier_form_is_deduplicated_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spool.redb");
    let a = event("e-old", "call-old");
    {
        let store = redb_store::RedbStore::open(&path).unwrap();
        let legacy = serde_json::to_vec(&serde_json::json!({
            "reason": "too large",
            "dead_at_ms": 1,
            "entry": hex::encode(encode(1, "call-old", &a.structured)),
        }))
        .unwrap();
        store.write(Table::Dead, "s", 7, legacy).await.unwrap();
    }
    let spool = open(&dir, 1 << 20);
    assert_eq!(spool.dead_counts(), vec![("s".to_string(), 1, 0)]);
    spool.bury("s", &a, "too large again").await.unwrap();
    let dead = spool.dead_letters().unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!((dead[0].seq, dead[0].event_id.as_str()), (7, "e-old"));
    let purged = spool
        .purge(&PurgeFilter {
            sink: None,
            before_ms: Some(2),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(purged, vec![("s".to_string(), 1)], "died at 1 ms, before 2");
}

#[tokio::test]
async fn a_filter_picks_by_sink_reason_and_time_for_count_page_redrive_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(&dir, 1 << 20);
    for (sink, id, reason) in [
        ("a", "1", "NO_ROUTE: unroutable"),
        ("a", "2", "too large"),
        ("b", "3", "no_route again"),
        ("b", "4", "too large"),
    ] {
        spool
            .bury(sink, &event(&format!("e-{id}"), "call"), reason)
            .await
            .unwrap();
    }
    let no_route = PurgeFilter {
        reason: Some("No_Route".into()),
        ..Default::default()
    };
    assert_eq!(spool.count_dead(&no_route).unwrap(), 2, "reason, any case");
    let page = spool.dead_letter_page_where(&no_route, None, 10).unwrap();
    let ids: Vec<&str> = page
        .dead_letters
        .iter()
        .map(|d| d.event_id.as_str())
        .collect();
    assert_eq!(ids, ["e-1", "e-3"]);
    let one = spool.dead_letter_page_where(&no_route, None, 1).unwrap();
    let next = DeadCursor::parse(one.next.as_deref().unwrap()).unwrap();
    let rest = spool
        .dead_letter_page_where(&no_route, Some(&next), 1)
        .unwrap();
    assert_eq!(rest.dead_letters[0].event_id, "e-3");
    assert_eq!(rest.next, None);

    let future = PurgeFilter {
        since_ms: Some(u64::MAX),
        ..Default::default()
    };
    assert_eq!(
        spool.count_dead(&future).unwrap(),
        0,
        "died at or after: none"
    );
    let b_no_route = PurgeFilter {
        sink: Some("b".into()),
        ..no_route.clone()
    };
    assert_eq!(spool.redrive_where(&b_no_route).unwrap(), 1);
    assert_eq!(spool.count_dead(&no_route).unwrap(), 1, "a's is still dead");
    let (letter, event) = spool
        .dead_letter_event("a", page.dead_letters[0].seq)
        .unwrap()
        .unwrap();
    assert_eq!(letter.reason, "NO_ROUTE: unroutable");
    let v: serde_json::Value = serde_json::from_slice(&event).unwrap();
    assert_eq!(v["id"], "e-1");
    assert!(spool.dead_letter_event("a", 999_999).unwrap().is_none());

    let large = PurgeFilter {
        reason: Some("too large".into()),
        ..Default::default()
    };
    let mut purged = spool.purge(&large).unwrap();
    purged.sort();
    assert_eq!(purged, vec![("a".to_string(), 1), ("b".to_string(), 1)]);
    let left: Vec<String> = spool
        .dead_letters()
        .unwrap()
        .into_iter()
        .map(|d| d.event_id)
        .collect();
    assert_eq!(left, ["e-1"]);
}
