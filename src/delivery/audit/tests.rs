use std::sync::atomic::AtomicU32;

use super::*;
use crate::delivery::index::Query;
use crate::delivery::{Answer, DeliverySettings, EventMeta, Outcome, SinkEntry};

fn kafka(offset: i64) -> Receipt {
    Receipt::Kafka {
        topic: "t".into(),
        partition: 0,
        offset,
    }
}

/// A reader that fails its first `failures` reads, then finds what `verdict` says.
struct Fake {
    failures: u32,
    calls: AtomicU32,
    verdict: fn(&str) -> Finding,
}

#[async_trait]
impl Reader for Fake {
    async fn read(&self, event_id: &str, _: &Receipt, _: Duration) -> Result<Finding, ReadError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n < self.failures {
            return Err(ReadError::Other(format!("down {n}")));
        }
        Ok((self.verdict)(event_id))
    }
}

fn fake(failures: u32, verdict: fn(&str) -> Finding) -> Arc<Fake> {
    Arc::new(Fake {
        failures,
        calls: AtomicU32::new(0),
        verdict,
    })
}

fn settings(sample: u32, queue: usize) -> AuditSettings {
    AuditSettings {
        enabled: true,
        delay_secs: 0,
        sample,
        queue,
    }
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

#[test]
fn sampling_takes_one_in_n_from_the_first() {
    assert!((0..10).all(|n| sampled(n, 1)));
    assert!(
        (0..10).all(|n| sampled(n, 0)),
        "0 is refused by validate; it audits all"
    );
    let taken: Vec<u64> = (0..10).filter(|n| sampled(*n, 3)).collect();
    assert_eq!(taken, [0, 3, 6, 9]);
}

#[test]
fn validate_refuses_a_zero_sample_and_a_zero_queue() {
    assert!(AuditSettings::default().check().is_empty());
    assert_eq!(
        settings(0, 1).check(),
        vec![("audit.sample", "must be at least 1 (1: every 200)")]
    );
    assert_eq!(
        settings(1, 0).check(),
        vec![("audit.queue", "must be greater than 0")]
    );
    let off = AuditSettings {
        enabled: false,
        ..settings(1, 0)
    };
    assert!(
        off.check().is_empty(),
        "a queue of an audit that is off does not matter"
    );
    let d = AuditSettings::default();
    assert_eq!(
        (d.enabled, d.delay_secs, d.sample, d.queue),
        (true, 5, 1, 10_000)
    );
}

#[test]
fn receipts_of_what_stores_nothing_or_cannot_be_read_are_unverifiable() {
    for r in [
        Receipt::Null { stored: false },
        Receipt::NatsCore {
            subject: "a".into(),
            persisted: false,
        },
    ] {
        assert_eq!(
            receipt_finding(&r).map(|f| f.verdict),
            Some(Verdict::Unverifiable),
            "{r:?}"
        );
    }
    assert_eq!(receipt_finding(&kafka(1)), None);
    let amqp = Receipt::Rabbitmq {
        exchange: "x".into(),
        routing_key: "k".into(),
    };
    assert_eq!(
        receipt_finding(&amqp),
        None,
        "read back when the sink has an audit queue"
    );
    assert_eq!(
        receipt_finding(&Receipt::File {
            path: "p".into(),
            offset: 0
        }),
        None
    );
    assert_eq!(
        receipt_finding(&Receipt::JetStream {
            stream: "s".into(),
            sequence: 1,
            duplicate: false
        }),
        None
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_read_is_retried_and_then_unverifiable_never_missing() {
    let flaky = fake(ATTEMPTS - 1, |_| Finding::verified());
    let readers = Readers::default().with("k", flaky.clone());
    assert_eq!(
        readers.judge("k", "e1", &kafka(1), now_ms()).await,
        Finding::verified()
    );
    assert_eq!(flaky.calls.load(Ordering::SeqCst), ATTEMPTS);
    let down = fake(u32::MAX, |_| Finding::verified());
    let readers = Readers::default().with("k", down.clone());
    let started = tokio::time::Instant::now();
    let f = readers.judge("k", "e1", &kafka(1), now_ms()).await;
    assert_eq!(f.verdict, Verdict::Unverifiable);
    assert_eq!(
        f.detail.as_deref(),
        Some("the broker could not be read: down 2")
    );
    assert_eq!(down.calls.load(Ordering::SeqCst), ATTEMPTS);
    // 0.5 s, then 1 s between the three tries; none after the last.
    assert_eq!(started.elapsed(), Duration::from_millis(1500));
}

/// A reader whose read never returns (a broker connection dead without a reset).
struct Hung;

#[async_trait]
impl Reader for Hung {
    async fn read(&self, _: &str, _: &Receipt, _: Duration) -> Result<Finding, ReadError> {
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_read_that_hangs_fails_at_its_deadline_and_the_copy_is_unverifiable() {
    let readers = Readers::default().with("k", Arc::new(Hung));
    let started = tokio::time::Instant::now();
    let f = readers.judge("k", "e1", &kafka(1), now_ms()).await;
    assert_eq!(f.verdict, Verdict::Unverifiable);
    assert_eq!(
        f.detail.as_deref(),
        Some("the broker could not be read: no answer within 10000 ms")
    );
    // Three deadlines, and the 0.5 s and 1 s waits between them.
    assert_eq!(
        started.elapsed(),
        READ_DEADLINE * ATTEMPTS + Duration::from_millis(1500)
    );
}

#[tokio::test]
async fn a_sink_without_reader_and_a_receipt_that_says_it_are_unverifiable() {
    let readers = Readers::default();
    let f = readers.judge("k", "e1", &kafka(1), 0).await;
    assert_eq!(f, Finding::unverifiable("no reader for this sink"));
    let readers = Readers::default().with("k", fake(0, |_| Finding::verified()));
    let f = readers
        .judge("k", "e1", &Receipt::Null { stored: false }, 0)
        .await;
    assert_eq!(f.verdict, Verdict::Unverifiable);
    let amqp = Receipt::Rabbitmq {
        exchange: "x".into(),
        routing_key: "k".into(),
    };
    let f = Readers::default().judge("r", "e1", &amqp, 0).await;
    assert_eq!(
        f,
        Finding::unverifiable(
            "RabbitMQ has no read by receipt, and the sink declares no audit queue"
        )
    );
    let f = Readers::default()
        .with("r", fake(0, |_| Finding::verified()))
        .judge("r", "e1", &amqp, 0)
        .await;
    assert_eq!(f, Finding::verified());
}

fn audited(d: &Deliveries, id: &str, sink: &str) -> Option<Verdict> {
    let q = Query {
        event_id: Some(id.into()),
        limit: 1,
        ..Query::default()
    };
    d.query(&q)
        .deliveries
        .first()
        .and_then(|r| r.sink(sink).cloned())
        .and_then(|e| e.audit)
        .map(|a| a.verdict)
}

async fn until(what: &str, f: impl Fn() -> bool) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{what} within 10 s"));
}

#[tokio::test]
async fn each_200s_stored_copies_are_judged_into_the_index_and_counted() {
    let metrics = Arc::new(DeliveryMetrics::unregistered());
    let readers = Readers::default().with(
        "k",
        fake(0, |id| {
            if id == "lost" {
                Finding::missing("gone")
            } else {
                Finding::verified()
            }
        }),
    );
    let (queue, worker) = channel(&settings(1, 10), readers, metrics.clone());
    let d =
        Arc::new(Deliveries::new(&DeliverySettings::default(), metrics.clone()).with_audit(queue));
    worker.spawn(Arc::downgrade(&d));
    let acked = |o| SinkEntry::new("k", "kafka", true, Outcome::Acked).with_receipt(kafka(o));
    d.answered(&meta("ok"), Answer::Accepted, vec![acked(1)]);
    d.answered(&meta("lost"), Answer::Accepted, vec![acked(2)]);
    // Not a 200: nothing to audit. A copy from an earlier delivery: audited then.
    d.answered(&meta("no"), Answer::NotDelivered, vec![acked(3)]);
    let again = SinkEntry::new("k", "kafka", true, Outcome::AlreadyAcked).with_receipt(kafka(4));
    d.answered(&meta("dup"), Answer::Accepted, vec![again]);
    until("both verdicts", || {
        audited(&d, "ok", "k").is_some() && audited(&d, "lost", "k").is_some()
    })
    .await;
    assert_eq!(audited(&d, "ok", "k"), Some(Verdict::Verified));
    assert_eq!(audited(&d, "lost", "k"), Some(Verdict::Missing));
    // A replay of a spooled copy after its 200 is audited too.
    d.answered(
        &meta("sp"),
        Answer::Accepted,
        vec![SinkEntry::new("k", "kafka", true, Outcome::Spooled)],
    );
    d.sink_update(
        &meta("sp"),
        SinkEntry::new("k", "kafka", true, Outcome::Replayed).with_receipt(kafka(5)),
    );
    until("the replay's verdict", || audited(&d, "sp", "k").is_some()).await;
    assert_eq!(audited(&d, "no", "k"), None);
    assert_eq!(audited(&d, "dup", "k"), None);
    assert_eq!(metrics.verified.with_label_values(&["k"]).get(), 2);
    assert_eq!(metrics.missing.with_label_values(&["k"]).get(), 1);
    assert_eq!(metrics.unverifiable.with_label_values(&["k"]).get(), 0);
    let summary = d.audit_summary(0);
    assert_eq!(
        (
            summary[0].answered,
            summary[0].verified,
            summary[0].missing,
            summary[0].unaudited
        ),
        (4, 2, 1, 1)
    );
}

#[tokio::test]
async fn a_full_queue_skips_and_counts_and_sampling_skips_the_others() {
    let metrics = Arc::new(DeliveryMetrics::unregistered());
    let (queue, worker) = channel(&settings(2, 2), Readers::default(), metrics.clone());
    for i in 0..8 {
        queue.offer(&format!("e{i}"), vec![("k".into(), kafka(i))]);
    }
    let skipped = |r: &str| metrics.skipped.with_label_values(&[r]).get();
    // 8 offered, 1 in 2 sampled: 4 taken, of which the queue of 2 holds 2.
    assert_eq!(skipped("sampled_out"), 4);
    assert_eq!(skipped("queue_full"), 2);
    assert_eq!(worker.rx.len(), 2);
    assert_eq!(
        queue.unaudited.lock().len(),
        2,
        "the skipped are not waited for"
    );
    drop(worker);
    queue.offer("late", vec![("k".into(), kafka(9))]);
    queue.offer("late2", vec![("k".into(), kafka(9))]);
    assert_eq!(skipped("stopped"), 1);
}

#[test]
fn the_oldest_unaudited_age_is_that_of_the_earliest_answer() {
    let u = Unaudited::default();
    assert_eq!(u.oldest_age_secs(10_000), 0.0);
    u.lock().insert(1, 4_000);
    u.lock().insert(2, 2_500);
    u.lock().insert(3, 6_000);
    assert_eq!(u.oldest_age_secs(10_000), 7.5);
    u.lock().remove(&2);
    assert_eq!(u.oldest_age_secs(10_000), 6.0);
    assert_eq!(u.oldest_age_secs(0), 0.0, "never negative");
}

#[tokio::test]
async fn a_retry_answered_from_the_ledger_is_not_audited_again() {
    let metrics = Arc::new(DeliveryMetrics::unregistered());
    let (queue, worker) = channel(&settings(1, 10), Readers::default(), metrics.clone());
    let d = Deliveries::new(&DeliverySettings::default(), metrics).with_audit(queue);
    let acked = SinkEntry::new("k", "kafka", true, Outcome::Acked).with_receipt(kafka(1));
    d.answered(&meta("e"), Answer::Accepted, vec![acked]);
    assert_eq!(worker.rx.len(), 1);
    let again = SinkEntry::new("k", "kafka", true, Outcome::AlreadyAcked).with_receipt(kafka(1));
    d.answered(&meta("e"), Answer::Accepted, vec![again]);
    assert_eq!(
        worker.rx.len(),
        1,
        "the record keeps the acknowledgement; no second read"
    );
    // A background outcome that stored nothing is not audited either.
    d.sink_update(
        &meta("e"),
        SinkEntry::new("o", "kafka", false, Outcome::Failed),
    );
    assert_eq!(worker.rx.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_copy_is_read_back_no_sooner_than_delay_secs_after_its_200() {
    let metrics = Arc::new(DeliveryMetrics::unregistered());
    let reader = fake(0, |_| Finding::verified());
    let readers = Readers::default().with("k", reader.clone());
    let delayed = AuditSettings {
        delay_secs: 5,
        ..settings(1, 10)
    };
    let (queue, worker) = channel(&delayed, readers, metrics);
    let d =
        Arc::new(Deliveries::new(&DeliverySettings::default(), m_unregistered()).with_audit(queue));
    worker.spawn(Arc::downgrade(&d));
    let acked = SinkEntry::new("k", "kafka", true, Outcome::Acked).with_receipt(kafka(1));
    d.answered(&meta("e"), Answer::Accepted, vec![acked]);
    tokio::time::sleep(Duration::from_millis(4_900)).await;
    assert_eq!(
        reader.calls.load(Ordering::SeqCst),
        0,
        "not before the delay"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        reader.calls.load(Ordering::SeqCst),
        1,
        "read once the delay passed"
    );
    assert_eq!(audited(&d, "e", "k"), Some(Verdict::Verified));
}

fn m_unregistered() -> Arc<DeliveryMetrics> {
    Arc::new(DeliveryMetrics::unregistered())
}
