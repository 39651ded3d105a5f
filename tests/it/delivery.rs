//! Delivery semantics: 200 only when every required sink acked, 503 + Retry-After otherwise,
//! retries only where needed, one publish per event id.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use async_trait::async_trait;
use callbridge::event::{normalize, Event};
use callbridge::fanout::{Fanout, SinkOutcome};
use callbridge::ledger::Ledger;
use callbridge::metrics::Metrics;
use callbridge::sinks::{Outgoing, Receipt, Sink, SinkError, SinkHandle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_required_sink_is_503_with_retry_after_well_inside_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let ok_path = dir.path().join("ok.jsonl");
    let app = spawn(&config_with_sinks(&format!(
        "{}  - {{name: full, type: file, path: /dev/full}}\n",
        file_sink("good", &ok_path, "")
    )))
    .await;
    let (a, took) = app
        .post_timed(&status_payload(&unique("full"), "completed"))
        .await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(
        took < Duration::from_millis(3000),
        "answered in {took:?}, deadline is 3 s"
    );
    assert_eq!(a.retry_after.as_deref(), Some("60"));
    assert_eq!(a.body["status"], "failed");
    assert_eq!(a.body["error"]["code"], "not_delivered");
    assert!(a.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("full"));
    assert_eq!(a.body["sinks"]["good"]["ok"], true);
    assert_eq!(a.body["sinks"]["full"]["ok"], false);
    assert_eq!(a.body["sinks"]["full"]["error"]["code"], "io");
    assert_eq!(read_lines(&ok_path).len(), 1);
    let m = app.metrics().await;
    assert!(
        m.contains(r#"callbridge_sink_publish_total{outcome="io",sink="full"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"callbridge_sink_publish_total{outcome="acked",sink="good"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"callbridge_http_requests_total{code="503",route="/callback"} 1"#),
        "{m}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_optional_sink_never_fails_the_request_and_filters_skip() {
    let dir = tempfile::tempdir().unwrap();
    let ok_path = dir.path().join("ok.jsonl");
    let analysis_path = dir.path().join("analysis.jsonl");
    let app = spawn(&config_with_sinks(&format!(
        "{}  - {{name: full, type: file, path: /dev/full, required: false}}\n{}",
        file_sink("good", &ok_path, ""),
        file_sink("analyses", &analysis_path, ", events: [call.analysis]")
    )))
    .await;
    let a = app.post(&status_payload(&unique("opt"), "completed")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["sinks"]["full"]["ok"], false);
    assert_eq!(a.body["sinks"]["full"]["required"], false);
    assert_eq!(a.body["sinks"]["analyses"]["skipped"], true);
    assert!(read_lines(&analysis_path).is_empty());

    let mut analysis = fixture("analysis-callback.payload.json");
    analysis["data"]["call_id"] = unique("opt-an").into();
    let a = app.post(&analysis).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let lines = read_lines(&analysis_path);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["type"], "ai.ringg.call.analysis.v1");
    assert_eq!(read_lines(&ok_path).len(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_webhook_twice_is_one_line_and_the_same_event_id() {
    let (app, path, _dir) = spawn_archive().await;
    let body = status_payload(&unique("twice"), "completed");
    let first = app.post(&body).await;
    let second = app.post(&body).await;
    assert_eq!((first.status, second.status), (200, 200));
    assert_eq!(first.body["event_id"], second.body["event_id"]);
    assert_eq!(second.body["sinks"]["archive"]["duplicate"], true);
    assert_eq!(
        second.body["sinks"]["archive"]["receipt"],
        first.body["sinks"]["archive"]["receipt"]
    );

    // 16 concurrent deliveries of another webhook: still one line
    let body = status_payload(&unique("burst"), "ongoing");
    let answers = futures::future::join_all((0..16).map(|_| app.post(&body))).await;
    assert!(answers.iter().all(|a| a.status == 200));
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 2, "one line per distinct webhook");
    assert_eq!(lines[0]["id"], first.body["event_id"]);
    let m = app.metrics().await;
    assert!(
        m.contains(r#"callbridge_idempotency_hits_total{sink="archive"} 16"#),
        "{m}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_slower_than_the_deadline_gets_503_on_time() {
    let yaml =
        config_with_sinks("  - {name: slow, type: null, latency_ms: 30000, timeout_ms: 9000}\n")
            .replace("deadline_ms: 3000", "deadline_ms: 800");
    let app = spawn(&yaml).await;
    let (a, took) = app
        .post_timed(&status_payload(&unique("slow"), "completed"))
        .await;
    assert_eq!(a.status, 503);
    assert_eq!(a.body["sinks"]["slow"]["error"]["code"], "timeout");
    assert!(
        took >= Duration::from_millis(700),
        "waited for the deadline: {took:?}"
    );
    assert!(
        took < Duration::from_millis(2500),
        "answered near the 800 ms deadline: {took:?}"
    );
    app.stop().await;
}

/// A sink that fails its first `fail_first` publishes, counting every call.
struct Flaky {
    calls: AtomicUsize,
    fail_first: usize,
    delay: Duration,
}

impl Flaky {
    fn new(fail_first: usize, delay: Duration) -> Arc<Flaky> {
        Arc::new(Flaky {
            calls: AtomicUsize::new(0),
            fail_first,
            delay,
        })
    }
}

#[async_trait]
impl Sink for Flaky {
    async fn publish(&self, _event: &Outgoing) -> Result<Receipt, SinkError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        if n < self.fail_first {
            Err(SinkError::NotConnected("drill".into()))
        } else {
            Ok(Receipt::Null { stored: true })
        }
    }
}

fn handle(name: &str, sink: Arc<dyn Sink>) -> SinkHandle {
    SinkHandle {
        name: name.into(),
        kind: "test",
        required: true,
        timeout: Duration::from_secs(2),
        filters: None,
        on_unavailable: Default::default(),
        sink,
    }
}

/// A fan-out over `sinks` with a fresh ledger.
fn fanout(sinks: Vec<SinkHandle>) -> Fanout {
    Fanout::new(
        sinks,
        Ledger::new(Duration::from_secs(60), 100),
        Arc::new(Metrics::new()),
    )
}

fn event(call_id: &str) -> Event {
    normalize(
        &status_payload(call_id, "completed"),
        Default::default(),
        &Default::default(),
        "2026-01-01T00:00:00Z".into(),
    )
    .unwrap()
}

fn deadline() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(5)
}

#[tokio::test]
async fn a_redelivery_after_partial_failure_publishes_only_to_the_sink_that_failed() {
    let steady = Flaky::new(0, Duration::ZERO);
    let flaky = Flaky::new(1, Duration::ZERO);
    let fanout = fanout(vec![
        handle("steady", steady.clone()),
        handle("flaky", flaky.clone()),
    ]);
    let ev = event("partial");
    let first = fanout.deliver(ev.clone(), deadline()).await;
    assert!(!first.accepted());
    assert_eq!(first.failed_required(), vec!["flaky"]);

    let second = fanout.deliver(ev.clone(), deadline()).await;
    assert!(second.accepted());
    assert!(matches!(
        second.reports[0].outcome,
        SinkOutcome::AlreadyAcked { .. }
    ));
    assert!(matches!(
        second.reports[1].outcome,
        SinkOutcome::Acked { .. }
    ));
    assert_eq!(steady.calls.load(Ordering::SeqCst), 1, "steady got it once");
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 2, "flaky got the retry");

    let third = fanout.deliver(ev, deadline()).await;
    assert!(third.accepted());
    assert_eq!(
        steady.calls.load(Ordering::SeqCst) + flaky.calls.load(Ordering::SeqCst),
        3,
        "all acked: nothing republished"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deliveries_of_one_id_never_publish_twice() {
    let slow = Flaky::new(0, Duration::from_millis(200));
    let fanout = Arc::new(fanout(vec![handle("slow", slow.clone())]));
    let ev = event("concurrent");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let f = fanout.clone();
            let ev = ev.clone();
            tokio::spawn(async move { f.deliver(ev, deadline()).await.accepted() })
        })
        .collect();
    for t in tasks {
        assert!(t.await.unwrap());
    }
    assert_eq!(slow.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_waiter_past_its_deadline_fails_instead_of_publishing_concurrently() {
    let slow = Flaky::new(0, Duration::from_millis(500));
    let fanout = Arc::new(fanout(vec![handle("slow", slow.clone())]));
    let ev = event("waiter");
    let f = fanout.clone();
    let ev2 = ev.clone();
    let first = tokio::spawn(async move { f.deliver(ev2, deadline()).await });
    // wait until the first delivery is publishing
    eventually(Duration::from_secs(5), "first publish", || {
        let n = slow.calls.load(Ordering::SeqCst);
        async move { (n == 1).then_some(()) }
    })
    .await;
    let short = tokio::time::Instant::now() + Duration::from_millis(50);
    let second = fanout.deliver(ev, short).await;
    assert!(!second.accepted());
    assert!(matches!(second.reports[0].outcome, SinkOutcome::InProgress));
    assert!(first.await.unwrap().accepted());
    assert_eq!(slow.calls.load(Ordering::SeqCst), 1);
}

/// A sink whose publishes wait until the test lets each one finish, with the outcome it gives.
struct Gate {
    calls: AtomicUsize,
    open: tokio::sync::Semaphore,
    outcomes: std::sync::Mutex<Vec<bool>>,
}

impl Gate {
    fn new() -> Arc<Gate> {
        Arc::new(Gate {
            calls: AtomicUsize::new(0),
            open: tokio::sync::Semaphore::new(0),
            outcomes: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Lets the oldest waiting publish finish: acked or failed.
    fn release(&self, acked: bool) {
        self.outcomes.lock().unwrap().push(acked);
        self.open.add_permits(1);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Sink for Gate {
    async fn publish(&self, _event: &Outgoing) -> Result<Receipt, SinkError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.open
            .acquire()
            .await
            .map_err(|e| SinkError::broker("gate closed", e))?
            .forget();
        let acked = self.outcomes.lock().unwrap().remove(0);
        if acked {
            Ok(Receipt::Null { stored: true })
        } else {
            Err(SinkError::NotConnected("gate".into()))
        }
    }
}

fn gated(name: &str, gate: &Arc<Gate>, required: bool, timeout_ms: u64) -> SinkHandle {
    SinkHandle {
        required,
        timeout: Duration::from_millis(timeout_ms),
        ..handle(name, gate.clone())
    }
}

/// Redelivers until `sink` has decided (neither in progress nor pending) and returns that.
async fn settled(fanout: &Fanout, ev: &Event, sink: &str) -> SinkOutcome {
    eventually(Duration::from_secs(5), "the publish settles", || async {
        let short = tokio::time::Instant::now() + Duration::from_millis(20);
        let d = fanout.deliver(ev.clone(), short).await;
        let r = d.reports.into_iter().find(|r| r.name == sink)?;
        (!matches!(r.outcome, SinkOutcome::InProgress | SinkOutcome::Pending)).then_some(r.outcome)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_publish_holds_the_sink_until_it_lands_then_the_retry_is_a_duplicate() {
    let gate = Gate::new();
    let fanout = fanout(vec![gated("stalled", &gate, true, 100)]);
    let ev = event("in-doubt-acked");
    let first = fanout.deliver(ev.clone(), deadline()).await;
    assert!(!first.accepted(), "no confirmation within the sink timeout");
    assert!(matches!(
        &first.reports[0].outcome,
        SinkOutcome::Failed { error } if error.code() == "timeout"
    ));
    // The publish is still in flight: a redelivery must not publish again.
    let short = tokio::time::Instant::now() + Duration::from_millis(100);
    let second = fanout.deliver(ev.clone(), short).await;
    assert!(matches!(second.reports[0].outcome, SinkOutcome::InProgress));
    assert_eq!(gate.calls(), 1, "not published twice while in doubt");
    // It lands after all: the retry gets the receipt, nothing is published again.
    gate.release(true);
    let outcome = settled(&fanout, &ev, "stalled").await;
    assert!(
        matches!(outcome, SinkOutcome::AlreadyAcked { .. }),
        "{outcome:?}"
    );
    assert_eq!(gate.calls(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_publish_that_really_failed_is_published_again() {
    let gate = Gate::new();
    let fanout = fanout(vec![gated("stalled", &gate, true, 100)]);
    let ev = event("in-doubt-failed");
    assert!(!fanout.deliver(ev.clone(), deadline()).await.accepted());
    gate.release(false);
    gate.release(true);
    let outcome = settled(&fanout, &ev, "stalled").await;
    assert!(matches!(outcome, SinkOutcome::Acked { .. }), "{outcome:?}");
    assert_eq!(gate.calls(), 2, "republished only because the first failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_delivery_takes_over_when_the_publish_in_flight_fails() {
    let gate = Gate::new();
    let fanout = Arc::new(fanout(vec![gated("s", &gate, true, 2000)]));
    let ev = event("take-over");
    let f = fanout.clone();
    let ev2 = ev.clone();
    let first = tokio::spawn(async move { f.deliver(ev2, deadline()).await });
    eventually(Duration::from_secs(5), "first publish", || async {
        (gate.calls() == 1).then_some(())
    })
    .await;
    let f = fanout.clone();
    let ev2 = ev.clone();
    let second = tokio::spawn(async move { f.deliver(ev2, deadline()).await });
    gate.release(false);
    assert!(!first.await.unwrap().accepted());
    gate.release(true);
    let second = second.await.unwrap();
    assert!(second.accepted(), "{second:?}");
    assert_eq!(gate.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_optional_sink_does_not_delay_the_answer_and_still_records_its_outcome() {
    let gate = Gate::new();
    let steady = Flaky::new(0, Duration::ZERO);
    let fanout = fanout(vec![
        handle("steady", steady.clone()),
        gated("optional", &gate, false, 60_000),
    ]);
    let ev = event("optional-stalled");
    let d = fanout.deliver(ev.clone(), deadline()).await;
    assert!(d.accepted(), "{d:?}");
    assert!(
        matches!(d.reports[1].outcome, SinkOutcome::Pending),
        "{d:?}"
    );
    // It finishes in the background; the ledger holds its receipt.
    gate.release(true);
    let outcome = settled(&fanout, &ev, "optional").await;
    assert!(
        matches!(outcome, SinkOutcome::AlreadyAcked { .. }),
        "{outcome:?}"
    );
    assert_eq!((gate.calls(), steady.calls.load(Ordering::SeqCst)), (1, 1));
}

/// A sink that gives up waiting for its confirmation itself (its own timeout): the broker may
/// still store the event.
struct GivesUp {
    calls: AtomicUsize,
}

#[async_trait]
impl Sink for GivesUp {
    async fn publish(&self, _event: &Outgoing) -> Result<Receipt, SinkError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(SinkError::Timeout(10))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_that_timed_out_itself_stays_in_doubt_until_the_settle_limit() {
    let sink = Arc::new(GivesUp {
        calls: AtomicUsize::new(0),
    });
    let fanout =
        fanout(vec![handle("doubt", sink.clone())]).with_settle_limit(Duration::from_millis(400));
    let ev = event("in-doubt-held");
    let first = fanout.deliver(ev.clone(), deadline()).await;
    assert!(matches!(
        &first.reports[0].outcome,
        SinkOutcome::Failed { error } if error.code() == "timeout"
    ));
    let short = tokio::time::Instant::now() + Duration::from_millis(50);
    let second = fanout.deliver(ev.clone(), short).await;
    assert!(
        matches!(second.reports[0].outcome, SinkOutcome::InProgress),
        "in doubt: not published again at once ({second:?})"
    );
    assert_eq!(sink.calls.load(Ordering::SeqCst), 1);
    // After the settle limit the sink is free: the retry publishes again.
    let third = fanout.deliver(ev, deadline()).await;
    assert!(matches!(
        &third.reports[0].outcome,
        SinkOutcome::Failed { error } if error.code() == "timeout"
    ));
    assert_eq!(sink.calls.load(Ordering::SeqCst), 2);
}

/// The cap is honest about itself: when `max_entries` is reached inside the window, the oldest
/// id goes early, the metrics count it as `reason="cap"` and show the retention left, and a
/// redelivery of that id publishes again (which is why `validate` checks the cap against the rate).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cap_reached_inside_the_window_is_counted_and_shortens_retention() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    let yaml = config_with_sinks(&file_sink("archive", &path, ""));
    let app = spawn(&format!("idempotency: {{max_entries: 2}}\n{yaml}")).await;
    let first = status_payload(&unique("cap"), "completed");
    for payload in [
        first.clone(),
        status_payload(&unique("cap"), "completed"),
        status_payload(&unique("cap"), "completed"),
    ] {
        assert_eq!(app.post(&payload).await.status, 200);
    }
    let metrics = app.metrics().await;
    for line in [
        "callbridge_ledger_entries 2",
        "callbridge_ledger_evicted_total{reason=\"cap\"} 1",
        "callbridge_ledger_evicted_total{reason=\"window\"} 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    assert!(metrics.contains("callbridge_ledger_retention_seconds "));
    let again = app.post(&first).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_ne!(
        again.body["sinks"]["archive"]["duplicate"], true,
        "forgotten early"
    );
    assert_eq!(read_lines(&path).len(), 4, "published a second time");
    app.stop().await;
}

/// The same event id with different content (a sender reusing call id, status and retry for a
/// changed payload): still answered by the first delivery's receipts, but counted and logged so
/// the operator can see content that was not published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_id_with_different_content_is_counted() {
    let (app, path, _dir) = spawn_archive().await;
    let first = status_payload(&unique("changed"), "completed");
    let mut changed = first.clone();
    changed["data"]["call_duration"] = serde_json::Value::from(999.0);
    for payload in [&first, &first, &changed] {
        assert_eq!(app.post(payload).await.status, 200);
    }
    let metrics = app.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "callbridge_event_id_payload_mismatch_total 1"),
        "a redelivery is not a mismatch, the changed payload is:\n{metrics}"
    );
    assert_eq!(read_lines(&path).len(), 1);
    app.stop().await;
}

/// An event for `call_id` with `status`.
fn status_event(call_id: &str, status: &str) -> Event {
    normalize(
        &status_payload(call_id, status),
        Default::default(),
        &Default::default(),
        "2026-01-01T00:00:00Z".into(),
    )
    .unwrap()
}

/// A spooling sink whose first publish is in doubt (no confirmation in time): the event is
/// spooled; the call's next event queues behind it instead of overtaking it, even though it
/// could be published; when the in-doubt publish lands after all, the replayer finds its receipt
/// in the ledger and does not publish it twice; then it publishes the queued one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calls_events_queue_behind_its_spooled_ones_and_nothing_is_published_twice() {
    use callbridge::sinks::OnUnavailable;
    let dir = tempfile::tempdir().unwrap();
    let spool = callbridge::spool::Spool::open(&callbridge::config::SpoolSettings {
        path: dir.path().join("spool.redb"),
        max_bytes: 1 << 20,
        max_dead_letters: 10_000,
    })
    .unwrap();
    let gate = Gate::new();
    let sink = SinkHandle {
        on_unavailable: OnUnavailable::Spool,
        ..gated("g", &gate, true, 200)
    };
    let fanout = fanout(vec![sink]).with_spool(spool.clone());

    let first = fanout
        .deliver(status_event("q-1", "ongoing"), deadline())
        .await;
    assert!(first.accepted(), "{:?}", first.reports);
    assert!(
        matches!(
            &first.reports[0].outcome,
            SinkOutcome::Spooled { cause: Some(e), .. } if e.code() == "timeout"
        ),
        "{:?}",
        first.reports
    );

    let second = fanout
        .deliver(status_event("q-1", "completed"), deadline())
        .await;
    assert!(second.accepted());
    assert!(
        matches!(
            &second.reports[0].outcome,
            SinkOutcome::Spooled { cause: None, .. }
        ),
        "queued behind the call's spooled event: {:?}",
        second.reports
    );
    assert_eq!(
        gate.calls(),
        1,
        "the second event was not published ahead of the first"
    );
    assert_eq!(spool.depths(), vec![("g".to_string(), 2)]);

    // The in-doubt publish lands: the replayer drops the first entry (already acked) and then
    // publishes the second, once.
    gate.release(true);
    eventually(
        Duration::from_secs(10),
        "the replayer to publish the queued event",
        || async { (gate.calls() == 2).then_some(()) },
    )
    .await;
    gate.release(true);
    eventually(Duration::from_secs(10), "the spool to drain", || async {
        (spool.bytes() == 0).then_some(())
    })
    .await;
    assert_eq!(gate.calls(), 2, "each event published once");
    let status = spool.status().unwrap();
    assert!(
        status.iter().all(|q| q.depth == 0 && q.dead_letters == 0),
        "{status:?}"
    );
}

/// A replayed event the broker refuses for good (here: rejected) goes to the dead-letter store
/// with its reason, and does not block the events behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanently_refused_spooled_event_is_dead_lettered_and_the_queue_moves_on() {
    use callbridge::sinks::OnUnavailable;
    struct Refuses {
        calls: AtomicUsize,
        /// Set when the operator fixed the topology: `registered` is routable again.
        fixed: std::sync::atomic::AtomicBool,
    }
    #[async_trait]
    impl Sink for Refuses {
        async fn publish(&self, event: &Outgoing) -> Result<Receipt, SinkError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            let fixed = self.fixed.load(Ordering::SeqCst);
            match (n, event.event.data.status.as_deref()) {
                (0, _) => Err(SinkError::NotConnected("down".into())),
                (_, Some("registered")) if !fixed => Err(SinkError::Rejected("unroutable".into())),
                _ => Ok(Receipt::Null { stored: true }),
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let spool = callbridge::spool::Spool::open(&callbridge::config::SpoolSettings {
        path: dir.path().join("spool.redb"),
        max_bytes: 1 << 20,
        max_dead_letters: 10_000,
    })
    .unwrap();
    let sink = Arc::new(Refuses {
        calls: AtomicUsize::new(0),
        fixed: Default::default(),
    });
    let handle = SinkHandle {
        on_unavailable: OnUnavailable::Spool,
        ..handle("r", sink.clone())
    };
    let fanout = fanout(vec![handle]).with_spool(spool.clone());
    // The first publish fails (down): spooled. The call's next one queues behind it.
    let a = fanout
        .deliver(status_event("dl-1", "registered"), deadline())
        .await;
    let b = fanout
        .deliver(status_event("dl-1", "completed"), deadline())
        .await;
    assert!(a.accepted() && b.accepted());
    eventually(Duration::from_secs(10), "the spool to drain", || async {
        (spool.bytes() == 0).then_some(())
    })
    .await;
    let status = spool.status().unwrap();
    assert_eq!(status.len(), 1, "{status:?}");
    assert_eq!(
        (status[0].depth, status[0].dead_letters),
        (0, 1),
        "{status:?}"
    );
    assert_eq!(
        sink.calls.load(Ordering::SeqCst),
        3,
        "down, rejected, then the next one"
    );
    let dead = spool.dead_letters().unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(
        (dead[0].sink.as_str(), dead[0].call_id.as_str()),
        ("r", "dl-1")
    );
    assert!(dead[0].reason.contains("unroutable"), "{dead:?}");
    assert_eq!(dead[0].event_id, a.event_id);

    // The operator fixes the cause and redrives: delivered, the dead-letter store is empty.
    assert_eq!(spool.redrive(Some("other"), None).unwrap(), 0, "per sink");
    sink.fixed.store(true, Ordering::SeqCst);
    assert_eq!(spool.redrive(Some("r"), None).unwrap(), 1);
    eventually(
        Duration::from_secs(10),
        "the redriven event delivered",
        || async { (spool.bytes() == 0 && sink.calls.load(Ordering::SeqCst) == 4).then_some(()) },
    )
    .await;
    assert!(spool.dead_letters().unwrap().is_empty());
    assert_eq!(
        spool.redrive(None, None).unwrap(),
        0,
        "nothing left to redrive"
    );
}

/// With a spool configured, an event a required sink can never take (413, published nowhere)
/// is kept in the dead-letter store for every sink that wanted it; once the limit is raised, a
/// redrive delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_too_large_is_kept_as_a_dead_letter_and_can_be_redriven() {
    struct Limited {
        max: std::sync::atomic::AtomicUsize,
        stored: AtomicUsize,
    }
    #[async_trait]
    impl Sink for Limited {
        async fn publish(&self, event: &Outgoing) -> Result<Receipt, SinkError> {
            self.check_size(event)?;
            self.stored.fetch_add(1, Ordering::SeqCst);
            Ok(Receipt::Null { stored: true })
        }
        fn check_size(&self, event: &Outgoing) -> Result<(), SinkError> {
            let max = self.max.load(Ordering::SeqCst);
            if event.structured.len() > max {
                return Err(SinkError::TooLarge(format!("over {max} bytes")));
            }
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let spool = callbridge::spool::Spool::open(&callbridge::config::SpoolSettings {
        path: dir.path().join("spool.redb"),
        max_bytes: 1 << 20,
        max_dead_letters: 10_000,
    })
    .unwrap();
    let small = Arc::new(Limited {
        max: std::sync::atomic::AtomicUsize::new(100),
        stored: AtomicUsize::new(0),
    });
    let roomy = Arc::new(Limited {
        max: std::sync::atomic::AtomicUsize::new(1 << 20),
        stored: AtomicUsize::new(0),
    });
    let fanout = fanout(vec![
        handle("small", small.clone()),
        handle("roomy", roomy.clone()),
    ])
    .with_spool(spool.clone());
    let d = fanout
        .deliver(status_event("big-1", "completed"), deadline())
        .await;
    assert!(d.too_large(), "{:?}", d.reports);
    assert_eq!(roomy.stored.load(Ordering::SeqCst), 0, "published nowhere");
    let dead = spool.dead_letters().unwrap();
    let sinks: Vec<&str> = dead.iter().map(|x| x.sink.as_str()).collect();
    assert_eq!(sinks, vec!["roomy", "small"], "{dead:?}");
    assert!(dead
        .iter()
        .all(|x| x.event_id == d.event_id && x.call_id == "big-1"));
    assert!(
        dead.iter().any(|x| x.reason.contains("over 100 bytes")),
        "{dead:?}"
    );

    // The operator raises the limit and redrives: each sink gets it once.
    small.max.store(1 << 20, Ordering::SeqCst);
    assert_eq!(spool.redrive(None, None).unwrap(), 2);
    eventually(
        Duration::from_secs(10),
        "both sinks to store it",
        || async {
            (small.stored.load(Ordering::SeqCst) == 1 && roomy.stored.load(Ordering::SeqCst) == 1)
                .then_some(())
        },
    )
    .await;
    eventually(Duration::from_secs(10), "the spool to drain", || async {
        (spool.bytes() == 0).then_some(())
    })
    .await;
    assert!(spool.dead_letters().unwrap().is_empty());
}

/// Issue #28, item 10: what the sender is told names the sinks, their outcomes and error codes,
/// never a file path or the broker's own words (the log has those): a file sink that cannot be
/// written, a NATS sink whose subject no stream captures (the server answers "no responders"),
/// and a file sink that works, whose receipt keeps its offset but not its path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_name_sinks_and_codes_not_paths_or_broker_text() {
    let dir = tempfile::tempdir().unwrap();
    let ok_path = dir.path().join("archive.jsonl");
    let (_, prefix) = crate::nats::names("scrub");
    let app = spawn(&config_with_sinks(&format!(
        "{}  - {{name: full, type: file, path: /dev/full}}\n{}",
        file_sink("archive", &ok_path, ""),
        crate::nats::nats_sink(
            "orphan",
            crate::nats::NATS_URL,
            &format!("{prefix}.{{kind}}"),
            "    timeout_ms: 2000\n"
        )
    )))
    .await;
    let a = app
        .post(&status_payload(&unique("scrub"), "completed"))
        .await;
    assert_eq!(a.status, 503, "{}", a.body);
    let text = a.body.to_string();
    for secret in [
        "/dev/full",
        "No space left",
        "no responders",
        prefix.as_str(),
        &dir.path().display().to_string(),
    ] {
        assert!(!text.contains(secret), "{secret:?} in the answer: {text}");
    }
    let sinks = &a.body["sinks"];
    assert_eq!(sinks["full"]["error"]["code"], "io", "{text}");
    assert_eq!(
        sinks["full"]["error"]["message"],
        "the destination could not be written"
    );
    assert_eq!(sinks["orphan"]["error"]["code"], "rejected", "{text}");
    assert_eq!(
        sinks["orphan"]["error"]["message"],
        "the destination refused the event"
    );
    assert_eq!(sinks["archive"]["ok"], true);
    assert_eq!(sinks["archive"]["receipt"]["offset"], 0, "{text}");
    assert!(sinks["archive"]["receipt"]["path"].is_null(), "{text}");
    let message = a.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("full") && message.contains("orphan"),
        "the failed sinks are named: {message}"
    );
    app.stop().await;
}
