use super::*;
use crate::ledger::Ledger;
use crate::reconcile::client::{ApiError, HistoryPage};
use crate::sinks::{OnUnavailable, Outgoing, Receipt, Sink, SinkError, SinkHandle};
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// A sink that keeps what it was given, or fails while `down`.
#[derive(Default)]
struct Recorder(Mutex<Vec<Event>>, std::sync::atomic::AtomicBool);

#[async_trait::async_trait]
impl Sink for Recorder {
    async fn publish(&self, event: &Outgoing) -> Result<Receipt, SinkError> {
        if self.1.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(SinkError::Broker {
                message: "down".into(),
                source: None,
            });
        }
        self.0.lock().unwrap().push(event.event.clone());
        Ok(Receipt::Null { stored: true })
    }
}

impl Setup {
    fn down(&self, down: bool) {
        self.recorder
            .1
            .store(down, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A call as the fake platform holds it: its history row and its details.
type FakeCall = (Map<String, Value>, Map<String, Value>);

/// The platform: calls by id (row, details), and which calls' details fail.
#[derive(Default)]
struct Fake {
    calls: Mutex<Vec<FakeCall>>,
    failing: Mutex<HashSet<String>>,
    listing_fails: Mutex<bool>,
    /// (call id, send_analysis) of every details request.
    asked: Mutex<Vec<(String, bool)>>,
    /// The agent filter of every history request.
    agents_asked: Mutex<Vec<Option<String>>>,
}

#[async_trait::async_trait]
impl CallSource for Fake {
    async fn history(&self, window: &Window, offset: u64) -> Result<HistoryPage, ApiError> {
        self.agents_asked
            .lock()
            .unwrap()
            .push(window.agent_id.clone());
        if *self.listing_fails.lock().unwrap() {
            return Err(ApiError::Status {
                status: 503,
                retry_after: None,
            });
        }
        let matching: Vec<Value> = self
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _)| {
                window
                    .agent_id
                    .as_ref()
                    .is_none_or(|a| r["agent"]["id"] == a.as_str())
            })
            .map(|(r, _)| Value::Object(r.clone()))
            .collect();
        let total = matching.len();
        let rows: Vec<Value> = matching.into_iter().skip(offset as usize).take(2).collect();
        super::super::client::parse_history(&json!({"calls": rows, "total": total}))
    }
    async fn details(&self, id: &str, analysis: bool) -> Result<Map<String, Value>, ApiError> {
        self.asked.lock().unwrap().push((id.to_string(), analysis));
        if self.failing.lock().unwrap().contains(id) {
            return Err(ApiError::Status {
                status: 500,
                retry_after: None,
            });
        }
        let calls = self.calls.lock().unwrap();
        let (_, d) = calls
            .iter()
            .find(|(r, _)| r["id"] == id)
            .ok_or(ApiError::Status {
                status: 404,
                retry_after: None,
            })?;
        let mut d = d.clone();
        if !analysis {
            d.remove("platform_analysis");
            d.remove("client_analysis");
        }
        Ok(d)
    }
    fn page_size(&self) -> u64 {
        2
    }
}

fn ended(minutes_ago: i64) -> String {
    rfc3339(OffsetDateTime::now_utc() - time::Duration::minutes(minutes_ago))
}

impl Fake {
    fn add(&self, id: &str, status: &str, ended_minutes_ago: i64, analysis: Option<Value>) {
        let row = json!({"id": id, "status": status, "call_duration": 60,
                "call_attempt_time": ended(ended_minutes_ago + 1), "agent": {"id": "ag-1"}});
        let mut details = json!({"id": id, "call_status": status, "call_direction": "outbound",
                "to_number": "+100", "transcription_url": [{"bot": "Hello"}]});
        if let Some(a) = analysis {
            details["platform_analysis"] = a;
        }
        self.calls.lock().unwrap().push((
            row.as_object().cloned().unwrap(),
            details.as_object().cloned().unwrap(),
        ));
    }
    fn set_analysis(&self, id: &str, a: Value) {
        for (r, d) in self.calls.lock().unwrap().iter_mut() {
            if r["id"] == id {
                d.insert("platform_analysis".into(), a.clone());
            }
        }
    }
    fn asked_for(&self, id: &str) -> usize {
        self.asked
            .lock()
            .unwrap()
            .iter()
            .filter(|(i, _)| i == id)
            .count()
    }
}

struct Setup {
    fake: Arc<Fake>,
    recorder: Arc<Recorder>,
    fanout: Arc<Fanout>,
    metrics: Arc<Metrics>,
    reconciler: Reconciler,
}

fn setup(family: Family) -> Setup {
    setup_with(family, None)
}

fn setup_with(family: Family, spool: Option<Arc<crate::spool::Spool>>) -> Setup {
    let fake = Arc::new(Fake::default());
    let recorder = Arc::new(Recorder::default());
    let metrics = Arc::new(Metrics::new());
    let handle = SinkHandle {
        name: "rec".into(),
        kind: "null",
        required: true,
        timeout: Duration::from_secs(5),
        filters: None,
        on_unavailable: if spool.is_some() {
            OnUnavailable::Spool
        } else {
            OnUnavailable::Fail
        },
        sink: recorder.clone(),
    };
    let mut fanout = Fanout::new(
        vec![handle],
        Ledger::new(Duration::from_secs(7200), 1000),
        metrics.clone(),
    );
    if let Some(spool) = spool {
        fanout = fanout.with_spool(spool);
    }
    let fanout = Arc::new(fanout);
    let reconciler = Reconciler::new(
        fake.clone(),
        fanout.clone(),
        fanout.ledger(),
        metrics.clone(),
        EventSettings::default(),
        PassSettings {
            settle: Duration::from_secs(25 * 60),
            agent_ids: vec![],
            family,
            analysis: true,
            ledger_window: Duration::from_secs(7200),
            lookback: Duration::from_secs(3600),
        },
        Duration::from_secs(5),
    );
    Setup {
        fake,
        recorder,
        fanout,
        metrics,
        reconciler,
    }
}

fn opts(dry_run: bool) -> PassOptions {
    PassOptions {
        lookback: Duration::from_secs(3600),
        dry_run,
    }
}

/// What a webhook delivered earlier: the normaliser's event through the same fan-out.
async fn webhook(s: &Setup, body: Value) -> String {
    let ev = crate::event::normalize(
        &body,
        BTreeMap::new(),
        &EventSettings::default(),
        "t".into(),
    )
    .unwrap();
    let id = ev.id.clone();
    let d = s
        .fanout
        .deliver(ev, tokio::time::Instant::now() + Duration::from_secs(5))
        .await;
    assert!(d.accepted());
    id
}

fn published(s: &Setup) -> Vec<(String, String, Option<String>)> {
    s.recorder
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.origin.is_some())
        .map(|e| {
            (
                e.subject.clone(),
                e.data.kind.to_string(),
                e.data.status.clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn one_pass_backfills_exactly_what_is_missing_and_a_second_pass_nothing() {
    let s = setup(Family::Callback);
    let a = json!({"summary": "ok"});
    s.fake.add("delivered", "completed", 40, Some(a.clone()));
    s.fake.add("status-only", "completed", 40, Some(a.clone()));
    s.fake.add("lost", "completed", 40, Some(a.clone()));
    s.fake.add("lost-failed", "failed", 40, None);
    s.fake.add("ongoing", "ongoing", 40, None);
    s.fake.add("recent", "completed", 5, Some(a.clone()));
    s.fake.add("erroring", "completed", 40, Some(a));
    s.fake.failing.lock().unwrap().insert("erroring".into());
    let cb = |id: &str, kind: &str| crate::event::samples::sample_payload(id, kind, "completed");
    webhook(&s, cb("delivered", "status")).await;
    webhook(&s, cb("delivered", "analysis")).await;
    let status_id = webhook(&s, cb("status-only", "status")).await;

    let r = s.reconciler.pass(opts(false)).await;
    assert!(r.complete, "{r:?}");
    assert_eq!(r.calls_checked, 7);
    assert_eq!(
        (r.already_delivered, r.not_ended, r.settling),
        (1, 1, 1),
        "{r:?}"
    );
    assert_eq!(r.api_errors.len(), 1, "{r:?}");
    assert!(r.api_errors[0].starts_with("call erroring:"), "{r:?}");
    let mut got = published(&s);
    got.sort();
    let st = Some("completed".to_string());
    assert_eq!(
        got,
        vec![
            ("lost".into(), "analysis".into(), st.clone()),
            ("lost".into(), "status".into(), st.clone()),
            ("lost-failed".into(), "status".into(), Some("failed".into())),
            ("status-only".into(), "analysis".into(), st.clone()),
        ]
    );
    // Each backfilled event has the webhook's id.
    let lost_status = s
        .recorder
        .0
        .lock()
        .unwrap()
        .iter()
        .find(|e| e.subject == "lost" && e.origin.is_some() && e.data.kind.as_str() == "status")
        .cloned()
        .unwrap();
    let would = crate::event::normalize(
        &cb("lost", "status"),
        BTreeMap::new(),
        &EventSettings::default(),
        "t".into(),
    )
    .unwrap();
    assert_eq!(lost_status.id, would.id);
    assert!(!r.published.iter().any(|b| b.event_id == status_id));
    // No details for what was delivered, still running or too recent; with analysis for the rest.
    for id in ["delivered", "ongoing", "recent"] {
        assert_eq!(s.fake.asked_for(id), 0, "{id}");
    }
    assert!(s
        .fake
        .asked
        .lock()
        .unwrap()
        .iter()
        .filter(|(i, _)| i == "lost")
        .all(|(_, a)| *a));
    assert_eq!(s.metrics.reconcile_calls_checked.get(), 7);
    assert_eq!(
        s.metrics
            .reconcile_backfilled
            .with_label_values(&["status"])
            .get(),
        2
    );
    assert_eq!(
        s.metrics
            .reconcile_backfilled
            .with_label_values(&["analysis"])
            .get(),
        2
    );
    assert!(s.metrics.reconcile_last_pass.get() > 0.0);

    // The API recovers: the next pass picks up the erroring call and nothing else.
    s.fake.failing.lock().unwrap().clear();
    let before = s.recorder.0.lock().unwrap().len();
    let r = s.reconciler.pass(opts(false)).await;
    assert_eq!(r.published.len(), 2, "{r:?}");
    assert!(r.published.iter().all(|b| b.call_id == "erroring"));
    assert_eq!(s.recorder.0.lock().unwrap().len(), before + 2);
    // And then nothing at all, without a details request for delivered calls.
    let asked = s.fake.asked.lock().unwrap().len();
    let r = s.reconciler.pass(opts(false)).await;
    assert!(r.published.is_empty() && r.failed.is_empty(), "{r:?}");
    assert_eq!(r.already_delivered, 5, "{r:?}");
    assert_eq!((r.not_ended, r.settling), (1, 1));
    assert_eq!(s.fake.asked.lock().unwrap().len(), asked);
}

#[tokio::test]
async fn a_late_analysis_is_picked_up_by_a_later_pass() {
    let s = setup(Family::Callback);
    s.fake.add("late", "completed", 40, None);
    let r = s.reconciler.pass(opts(false)).await;
    assert_eq!(
        published(&s),
        vec![("late".into(), "status".into(), Some("completed".into()))]
    );
    assert_eq!(r.published.len(), 1);
    // Still no analysis: asked again (with send_analysis), nothing published.
    let r = s.reconciler.pass(opts(false)).await;
    assert!(r.published.is_empty(), "{r:?}");
    assert_eq!(s.fake.asked_for("late"), 2);
    s.fake
        .set_analysis("late", json!({"summary": "late but here"}));
    let r = s.reconciler.pass(opts(false)).await;
    assert_eq!(r.published.len(), 1, "{r:?}");
    assert!(r.published[0].ty.ends_with(".call.analysis.v1"));
    let evs = s.recorder.0.lock().unwrap().clone();
    assert_eq!(evs.len(), 2, "the status was not published again");
    assert_eq!(
        evs[1].data.analysis.as_ref().unwrap()["summary"],
        "late but here"
    );
}

#[tokio::test]
async fn a_dry_run_publishes_nothing_and_says_what_it_would() {
    let s = setup(Family::AgentEvent);
    s.fake
        .add("lost", "completed", 40, Some(json!({"summary": "ok"})));
    let r = s.reconciler.pass(opts(true)).await;
    assert!(r.dry_run);
    assert_eq!(r.published.len(), 2, "{r:?}");
    assert!(s.recorder.0.lock().unwrap().is_empty());
    assert_eq!(
        s.metrics.reconcile_last_pass.get(),
        0.0,
        "a dry run is not a pass"
    );
    let ae = crate::event::samples::sample_agent_event("lost", "call_completed", "completed");
    let would =
        crate::event::normalize(&ae, BTreeMap::new(), &EventSettings::default(), "t".into())
            .unwrap();
    assert_eq!(r.published[0].event_id, would.id);
    // The real pass publishes exactly those.
    let real = s.reconciler.pass(opts(false)).await;
    assert_eq!(real.published, r.published);
}

#[tokio::test]
async fn a_delivery_by_the_other_family_counts() {
    let s = setup(Family::Callback);
    s.fake
        .add("c", "completed", 40, Some(json!({"summary": "ok"})));
    webhook(
        &s,
        crate::event::samples::sample_agent_event("c", "call_completed", "completed"),
    )
    .await;
    webhook(
        &s,
        crate::event::samples::sample_agent_event("c", "platform_analysis_completed", ""),
    )
    .await;
    webhook(
        &s,
        crate::event::samples::sample_agent_event("c", "client_analysis_completed", ""),
    )
    .await;
    let r = s.reconciler.pass(opts(false)).await;
    assert_eq!(r.already_delivered, 1, "{r:?}");
    assert!(r.published.is_empty());
    assert_eq!(s.fake.asked_for("c"), 0);
}

#[tokio::test]
async fn an_unconfirmed_backfill_is_counted_and_published_by_the_next_pass() {
    let s = setup(Family::Callback);
    s.fake.add("c", "failed", 40, None);
    s.down(true);
    let r = s.reconciler.pass(opts(false)).await;
    assert_eq!(r.failed.len(), 1, "{r:?}");
    assert!(
        r.failed[0].error.as_deref().unwrap().contains("rec"),
        "{r:?}"
    );
    assert!(r.published.is_empty());
    assert_eq!(s.metrics.reconcile_publish_failed.get(), 1);
    s.down(false);
    let r = s.reconciler.pass(opts(false)).await;
    assert_eq!(r.published.len(), 1, "{r:?}");
    assert_eq!(s.recorder.0.lock().unwrap().len(), 1);
}

/// A spooling sink that is down: the backfill is spooled once, not once per pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooled_backfill_is_not_spooled_again_by_the_next_pass() {
    let dir = tempfile::tempdir().unwrap();
    let spool = crate::spool::Spool::open(&crate::spool::settings::SpoolSettings {
        path: dir.path().join("spool.redb"),
        max_bytes: 1 << 20,
        max_dead_letters: 10_000,
    })
    .unwrap();
    let s = setup_with(Family::Callback, Some(spool.clone()));
    s.fake.add("c", "failed", 40, None);
    s.down(true);
    let r = s.reconciler.pass(opts(false)).await;
    assert_eq!(r.published.len(), 1, "spooled counts as stored: {r:?}");
    let depth = || spool.status_of(&["rec".to_string()]).unwrap()[0].depth;
    assert_eq!(depth(), 1);
    let r = s.reconciler.pass(opts(false)).await;
    assert!(r.published.is_empty(), "{r:?}");
    assert_eq!(r.already_delivered, 1);
    assert_eq!(depth(), 1, "not spooled a second time");
    s.down(false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while s.recorder.0.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "the spool drains");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = s.reconciler.pass(opts(false)).await;
    assert!(r.published.is_empty(), "{r:?}");
    assert_eq!(s.recorder.0.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn agent_ids_list_each_agent_and_nothing_else() {
    let mut s = setup(Family::Callback);
    s.reconciler.settings.agent_ids = vec!["ag-1".into(), "ag-2".into()];
    s.fake.add("mine", "failed", 40, None);
    s.fake.add("also-mine", "failed", 40, None);
    s.fake.add("other", "failed", 40, None);
    for (r, _) in s.fake.calls.lock().unwrap().iter_mut() {
        let agent = match r["id"].as_str().unwrap() {
            "mine" => "ag-1",
            "also-mine" => "ag-2",
            _ => "ag-3",
        };
        r.insert("agent".into(), json!({"id": agent}));
    }
    let r = s.reconciler.pass(opts(false)).await;
    assert_eq!(r.calls_checked, 2, "{r:?}");
    let mut calls: Vec<String> = r.published.iter().map(|b| b.call_id.clone()).collect();
    calls.sort();
    assert_eq!(calls, ["also-mine", "mine"]);
    assert_eq!(
        *s.fake.agents_asked.lock().unwrap(),
        [Some("ag-1".to_string()), Some("ag-2".to_string())]
    );
}

#[tokio::test]
async fn a_failed_listing_is_an_incomplete_pass() {
    let s = setup(Family::Callback);
    s.fake.add("c", "completed", 40, None);
    *s.fake.listing_fails.lock().unwrap() = true;
    let r = s.reconciler.pass(opts(false)).await;
    assert!(!r.complete);
    assert_eq!(r.api_errors.len(), 1);
    assert_eq!(s.metrics.reconcile_last_pass.get(), 0.0);
    assert!(s.recorder.0.lock().unwrap().is_empty());
}

#[test]
fn a_call_ends_at_its_attempt_time_plus_its_duration() {
    let row = json!({"call_attempt_time": "2026-11-27T10:00:00Z", "created_at": "2026-11-27T09:00:00Z", "call_duration": 90});
    let t = ended_at(row.as_object().unwrap()).unwrap();
    assert_eq!(rfc3339(t), "2026-11-27T10:01:30Z");
    let row = json!({"created_at": "2026-11-27T09:00:00Z"});
    assert_eq!(
        rfc3339(ended_at(row.as_object().unwrap()).unwrap()),
        "2026-11-27T09:00:00Z"
    );
    assert!(ended_at(json!({"created_at": "yesterday"}).as_object().unwrap()).is_none());
}
