//! Reconciliation against a fake of the platform's call API (in this test process, following
//! the documented shapes: `X-API-KEY`, `/calling/history` paged by `limit`/`offset` with
//! `total`, `/calling/call-details?id=…&send_analysis=true`), publishing to a file sink and a
//! real NATS JetStream stream, both read back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::common::*;
use crate::nats::{hdr, js, names, nats_sink, read_stream, stream_for, NATS_URL};
use callbridge::config::{Env, Settings};
use callbridge::event::{normalize, EventSettings};

const PLATFORM_KEY: &str = "platform-key-3f9c1e77";

/// One call the fake platform knows.
#[derive(Clone)]
struct Call {
    row: Value,
    details: Value,
    /// `platform_analysis`, sent only with `send_analysis=true`.
    analysis: Option<Value>,
}

#[derive(Default)]
struct PlatformState {
    calls: Vec<Call>,
    /// Call ids whose details answer this status.
    failing: HashMap<String, u16>,
    /// The next this many requests answer 429 with `Retry-After: 1`.
    rate_limit_next: u32,
    /// Every request: (path, query) of those with the right key.
    requests: Vec<(String, BTreeMap<String, String>)>,
    /// Requests without the right key.
    unauthorized: u32,
}

struct FakePlatform {
    base: String,
    state: Arc<Mutex<PlatformState>>,
    handle: actix_web::dev::ServerHandle,
}

impl FakePlatform {
    async fn start() -> FakePlatform {
        let state = Arc::new(Mutex::new(PlatformState::default()));
        let data = web::Data::from(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/ca/api/v0/calling/history", web::get().to(history))
                .route("/ca/api/v0/calling/call-details", web::get().to(details))
        })
        .workers(1)
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        FakePlatform {
            base: format!("http://127.0.0.1:{port}/ca/api/v0"),
            state,
            handle,
        }
    }

    fn add(&self, call: Call) {
        self.state.lock().unwrap().calls.push(call);
    }

    fn details_asked(&self, id: &str) -> Vec<BTreeMap<String, String>> {
        self.state
            .lock()
            .unwrap()
            .requests
            .iter()
            .filter(|(p, q)| {
                p.ends_with("call-details") && q.get("id").map(String::as_str) == Some(id)
            })
            .map(|(_, q)| q.clone())
            .collect()
    }
}

/// The documented auth and the rate limiter, before either endpoint answers.
fn gate(req: &HttpRequest, state: &Mutex<PlatformState>) -> Option<HttpResponse> {
    let mut s = state.lock().unwrap();
    let key = req.headers().get("x-api-key").and_then(|v| v.to_str().ok());
    if key != Some(PLATFORM_KEY) {
        s.unauthorized += 1;
        return Some(HttpResponse::Unauthorized().json(json!({"detail": "invalid api key"})));
    }
    let query: BTreeMap<String, String> =
        serde_urlencoded::from_str(req.query_string()).unwrap_or_default();
    s.requests.push((req.path().to_string(), query));
    if s.rate_limit_next > 0 {
        s.rate_limit_next -= 1;
        return Some(
            HttpResponse::TooManyRequests()
                .insert_header(("Retry-After", "1"))
                .json(json!({"detail": "slow down"})),
        );
    }
    None
}

fn parse_time(s: &str) -> OffsetDateTime {
    OffsetDateTime::parse(s, &Rfc3339).unwrap()
}

async fn history(req: HttpRequest, state: web::Data<Mutex<PlatformState>>) -> HttpResponse {
    if let Some(r) = gate(&req, &state) {
        return r;
    }
    let q: BTreeMap<String, String> = serde_urlencoded::from_str(req.query_string()).unwrap();
    let limit: usize = q.get("limit").map_or(10, |l| l.parse().unwrap());
    let offset: usize = q.get("offset").map_or(0, |o| o.parse().unwrap());
    let (start, end) = (parse_time(&q["start_date"]), parse_time(&q["end_date"]));
    let s = state.lock().unwrap();
    let matching: Vec<&Value> = s
        .calls
        .iter()
        .map(|c| &c.row)
        .filter(|r| {
            let created = parse_time(r["created_at"].as_str().unwrap());
            created >= start && created <= end
        })
        .filter(|r| {
            q.get("agent_id")
                .is_none_or(|a| r["agent"]["id"] == a.as_str())
        })
        .collect();
    let page: Vec<&Value> = matching.iter().skip(offset).take(limit).copied().collect();
    HttpResponse::Ok().json(json!({
        "calls": page, "limit": limit, "offset": offset, "count": page.len(), "total": matching.len()
    }))
}

async fn details(req: HttpRequest, state: web::Data<Mutex<PlatformState>>) -> HttpResponse {
    if let Some(r) = gate(&req, &state) {
        return r;
    }
    let q: BTreeMap<String, String> = serde_urlencoded::from_str(req.query_string()).unwrap();
    let id = q.get("id").cloned().unwrap_or_default();
    let stalls = state.lock().unwrap().failing.get(&id) == Some(&0);
    if stalls {
        // 0: never answer in time.
        tokio::time::sleep(Duration::from_secs(5)).await;
        return HttpResponse::Ok().json(json!({"status": "success", "data": {}}));
    }
    let s = state.lock().unwrap();
    if let Some(code) = s.failing.get(&id) {
        return HttpResponse::build(actix_web::http::StatusCode::from_u16(*code).unwrap())
            .json(json!({"detail": "boom"}));
    }
    let Some(call) = s.calls.iter().find(|c| c.row["id"] == id.as_str()) else {
        return HttpResponse::NotFound().json(json!({"detail": "no such call"}));
    };
    let mut data = call.details.clone();
    if q.get("send_analysis").map(String::as_str) == Some("true") {
        if let Some(a) = &call.analysis {
            data["platform_analysis"] = a.clone();
            data["client_analysis"] = Value::Null;
        }
    }
    HttpResponse::Ok().json(json!({"status": "success", "data": data}))
}

fn ago(minutes: i64) -> String {
    (OffsetDateTime::now_utc() - time::Duration::minutes(minutes))
        .replace_nanosecond(0)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

/// A call that ended `ended_minutes_ago` (it lasted one minute), as both endpoints show it.
fn call(id: &str, status: &str, ended_minutes_ago: i64, analysis: Option<Value>) -> Call {
    let started = ago(ended_minutes_ago + 1);
    Call {
        row: json!({"id": id, "to_number": "+1234567890", "name": "John", "status": status,
            "transcript": "Hello", "created_at": started, "call_attempt_time": started,
            "agent": {"id": "830f767a-397e-4b39-82ff-235cd344e2f9", "agent_name": "Ava"},
            "call_duration": 60, "call_cost": 2, "call_type": "outbound"}),
        details: json!({"id": id, "call_direction": "outbound", "call_status": status,
            "call_sub_status": "ACCEPTED", "from_number": "+1987654321", "to_number": "+1234567890",
            "callee_name": "John", "agent_id": "830f767a-397e-4b39-82ff-235cd344e2f9",
            "initiation_time": started, "recording_url": "https://r.example/x.mp3",
            "transcription_url": [{"bot": "Hello"}, {"user": "Hi"}]}),
        analysis,
    }
}

/// The id the status / analysis webhook of `call_id` had (the callback family, retry 0).
fn webhook_id(call_id: &str, kind: &str, status: &str) -> String {
    let body = callbridge::cli::sample_payload(call_id, kind, status);
    normalize(
        &body,
        BTreeMap::new(),
        &EventSettings::default(),
        "t".into(),
    )
    .unwrap()
    .id
}

/// A bridge with a file sink and a JetStream sink (both required) and `reconcile` pointed at
/// the fake, its key from the environment. No periodic passes unless `interval` says so.
async fn bridge(
    platform: &FakePlatform,
    interval: u64,
    tag: &str,
) -> (TestApp, std::path::PathBuf, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let (stream, prefix) = names(tag);
    stream_for(&js().await, &stream, &format!("{prefix}.>")).await;
    let sinks = format!(
        "{}{}",
        file_sink("archive", &path, ""),
        nats_sink(
            "bus",
            NATS_URL,
            &format!("{prefix}.{{kind}}.{{call_id}}"),
            &format!("    timeout_ms: 2000\n    jetstream: {{stream: {stream}}}\n"),
        )
    );
    let yaml = format!(
        "{}idempotency: {{window_secs: 7200}}\n\
         reconcile:\n  api_base: \"{}\"\n  api_key: \"${{PLATFORM_KEY}}\"\n  interval_secs: {interval}\n  \
         lookback_secs: 3600\n  settle_secs: 1500\n  page_size: 2\n  requests_per_sec: 50\n  \
         timeout_ms: 2000\n  max_attempts: 2\n",
        config_with_sinks(&sinks),
        platform.base
    );
    let (settings, _) =
        Settings::from_yaml(&yaml, "test", &Env::vars([("PLATFORM_KEY", PLATFORM_KEY)]))
            .unwrap_or_else(|e| panic!("{e}"));
    let app = spawn_settings(settings).await;
    app.await_ready(true).await;
    (app, path, stream, dir)
}

async fn pass(app: &TestApp, dry_run: bool) -> Value {
    let resp = app
        .client
        .post(format!("{}/reconcile?dry_run={dry_run}", app.base))
        .header("X-API-Key", KEY)
        .send()
        .await
        .unwrap();
    let a = answer(resp).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body
}

fn published(report: &Value) -> HashSet<(String, String)> {
    report["published"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["call_id"].as_str().unwrap().to_string(),
                b["event_id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_webhooks_are_backfilled_once_with_their_ids_and_late_webhooks_are_duplicates() {
    let platform = FakePlatform::start().await;
    let (app, path, stream, _dir) = bridge(&platform, 0, "reconcile").await;
    let id = |n: &str| unique(&format!("rc-{n}"));
    let (hooked, hooked_status, lost, lost_failed, late, broken, recent, running) = (
        id("hooked"),
        id("hooked-status"),
        id("lost"),
        id("lost-failed"),
        id("late"),
        id("broken"),
        id("recent"),
        id("running"),
    );
    let analysis = || Some(json!({"summary": "renewal confirmed", "sentiment": "positive"}));
    platform.add(call(&hooked, "completed", 40, analysis()));
    platform.add(call(&hooked_status, "completed", 40, analysis()));
    platform.add(call(&lost, "completed", 45, analysis()));
    platform.add(call(&lost_failed, "failed", 50, None));
    platform.add(call(&late, "completed", 40, None));
    platform.add(call(&broken, "completed", 40, analysis()));
    // Started 30 minutes ago (inside the window), but lasted 28: ended 2 minutes ago.
    let mut long = call(&recent, "completed", 2, analysis());
    long.row["created_at"] = json!(ago(30));
    long.row["call_attempt_time"] = json!(ago(30));
    long.row["call_duration"] = json!(28 * 60);
    platform.add(long);
    platform.add(call(&running, "ongoing", 40, None));
    platform
        .state
        .lock()
        .unwrap()
        .failing
        .insert(broken.clone(), 500);

    // What the webhooks did deliver.
    for body in [
        callbridge::cli::sample_payload(&hooked, "status", "completed"),
        callbridge::cli::sample_payload(&hooked, "analysis", "completed"),
        callbridge::cli::sample_payload(&hooked_status, "status", "completed"),
    ] {
        assert_eq!(app.post(&body).await.status, 200);
    }
    assert_eq!(read_lines(&path).len(), 3);

    // Pass 1: every missing event, with the webhook's id; the broken call is counted, the rest
    // of the pass proceeds.
    let r = pass(&app, false).await;
    assert_eq!(r["complete"], true, "{r}");
    assert_eq!(r["calls_checked"], 8, "{r}");
    assert_eq!(
        (
            r["already_delivered"].as_u64(),
            r["settling"].as_u64(),
            r["not_ended"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{r}"
    );
    let errors = r["api_errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{r}");
    assert!(errors[0].as_str().unwrap().contains(&broken), "{r}");
    let expected: HashSet<(String, String)> = [
        (
            hooked_status.clone(),
            webhook_id(&hooked_status, "analysis", "completed"),
        ),
        (lost.clone(), webhook_id(&lost, "status", "completed")),
        (lost.clone(), webhook_id(&lost, "analysis", "completed")),
        (
            lost_failed.clone(),
            webhook_id(&lost_failed, "status", "failed"),
        ),
        (late.clone(), webhook_id(&late, "status", "completed")),
    ]
    .into();
    assert_eq!(published(&r), expected, "{r}");
    // Pagination: 8 calls in pages of 2, each page asked for once.
    let offsets: Vec<String> = platform
        .state
        .lock()
        .unwrap()
        .requests
        .iter()
        .filter(|(p, _)| p.ends_with("history"))
        .map(|(_, q)| q["offset"].clone())
        .collect();
    assert_eq!(offsets, ["0", "2", "4", "6"]);
    // No details for what was delivered, still running or too recent; analysis asked for.
    for c in [&hooked, &recent, &running] {
        assert!(platform.details_asked(c).is_empty(), "{c}");
    }
    assert!(platform
        .details_asked(&lost)
        .iter()
        .all(|q| q.get("send_analysis").map(String::as_str) == Some("true")));
    assert_eq!(platform.details_asked(&broken).len(), 2, "max_attempts: 2");
    assert_eq!(
        platform.state.lock().unwrap().unauthorized,
        0,
        "every request carried the key"
    );

    // Both sinks hold each backfilled event once, marked as backfilled.
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 3 + expected.len());
    let backfilled: Vec<&Value> = lines
        .iter()
        .filter(|l| l["origin"] == "reconcile")
        .collect();
    let ids: HashSet<(String, String)> = backfilled
        .iter()
        .map(|l| {
            (
                l["subject"].as_str().unwrap().to_string(),
                l["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(ids, expected);
    let lost_status = backfilled
        .iter()
        .find(|l| l["id"] == webhook_id(&lost, "status", "completed").as_str())
        .unwrap();
    assert_eq!(lost_status["type"], "ai.ringg.call.status.v1");
    assert_eq!(lost_status["callstatus"], "completed");
    assert_eq!(lost_status["data"]["family"], "callback");
    assert_eq!(
        lost_status["data"]["transcript_turns"][1]["speaker"],
        "user"
    );
    let lost_analysis = backfilled
        .iter()
        .find(|l| l["id"] == webhook_id(&lost, "analysis", "completed").as_str())
        .unwrap();
    assert_eq!(
        lost_analysis["data"]["analysis"]["summary"],
        "renewal confirmed"
    );
    let js = js().await;
    let msgs = read_stream(&js, &stream, 3 + expected.len()).await;
    let on_bus: Vec<(String, Option<String>)> = msgs
        .iter()
        .map(|m| {
            let h = m.headers.as_ref().unwrap();
            (hdr(h, "Nats-Msg-Id").unwrap(), hdr(h, "ce-origin"))
        })
        .collect();
    let bus_ids: HashSet<&str> = on_bus.iter().map(|(i, _)| i.as_str()).collect();
    assert_eq!(bus_ids.len(), on_bus.len(), "nothing twice on the bus");
    for (_, event_id) in &expected {
        let (_, origin) = on_bus
            .iter()
            .find(|(i, _)| i == event_id)
            .expect("backfilled on the bus");
        assert_eq!(origin.as_deref(), Some("reconcile"));
    }

    // A webhook arriving after the backfill is a duplicate at every sink and publishes nothing.
    let a = app
        .post(&callbridge::cli::sample_payload(
            &lost,
            "status",
            "completed",
        ))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.event_id(), webhook_id(&lost, "status", "completed"));
    assert_eq!(a.body["sinks"]["archive"]["duplicate"], true, "{}", a.body);
    assert_eq!(a.body["sinks"]["bus"]["duplicate"], true, "{}", a.body);
    assert_eq!(read_lines(&path).len(), 3 + expected.len());

    // Pass 2: the analysis arrived late, the API recovered: exactly those.
    platform.state.lock().unwrap().failing.clear();
    for c in platform.state.lock().unwrap().calls.iter_mut() {
        if c.row["id"] == late.as_str() {
            c.analysis = analysis();
        }
    }
    let r = pass(&app, false).await;
    let expected2: HashSet<(String, String)> = [
        (late.clone(), webhook_id(&late, "analysis", "completed")),
        (broken.clone(), webhook_id(&broken, "status", "completed")),
        (broken.clone(), webhook_id(&broken, "analysis", "completed")),
    ]
    .into();
    assert_eq!(published(&r), expected2, "{r}");
    assert!(r["api_errors"].as_array().unwrap().is_empty(), "{r}");

    // Pass 3: nothing left to publish, and no details request for any delivered call.
    let asked = platform.state.lock().unwrap().requests.len();
    let r = pass(&app, false).await;
    assert!(published(&r).is_empty(), "{r}");
    assert_eq!(r["already_delivered"], 6, "{r}");
    let after = platform.state.lock().unwrap().requests.len();
    assert_eq!(after - asked, 4, "four history pages, no details");
    let total = 3 + expected.len() + expected2.len();
    assert_eq!(read_lines(&path).len(), total);
    let file_ids: Vec<String> = read_lines(&path)
        .iter()
        .map(|l| l["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        file_ids.iter().collect::<HashSet<_>>().len(),
        total,
        "no id twice in the file"
    );
    read_stream(&js, &stream, total).await;

    let m = app.metrics().await;
    assert_eq!(metric(&m, "callbridge_reconcile_calls_checked_total"), 24.0);
    assert_eq!(
        metric(
            &m,
            "callbridge_reconcile_events_backfilled_total{kind=\"status\"}"
        ),
        4.0
    );
    assert_eq!(
        metric(
            &m,
            "callbridge_reconcile_events_backfilled_total{kind=\"analysis\"}"
        ),
        4.0
    );
    assert_eq!(
        metric(
            &m,
            "callbridge_reconcile_api_errors_total{reason=\"server_error\"}"
        ),
        2.0
    );
    let last = metric(
        &m,
        "callbridge_reconcile_last_complete_pass_timestamp_seconds",
    );
    assert!(
        last > (callbridge::reconcile::pass::unix_now() - 60) as f64,
        "{last}"
    );

    js.delete_stream(&stream).await.unwrap();
    app.stop().await;
    platform.handle.stop(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_publishes_nothing_and_a_429_is_waited_out() {
    let platform = FakePlatform::start().await;
    let (app, path, stream, _dir) = bridge(&platform, 0, "reconcile-dry").await;
    let lost = unique("rc-dry");
    platform.add(call(&lost, "completed", 40, Some(json!({"summary": "ok"}))));
    platform.state.lock().unwrap().rate_limit_next = 1;
    let started = Instant::now();
    let r = pass(&app, true).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 honoured"
    );
    assert_eq!(r["dry_run"], true);
    assert_eq!(r["complete"], true, "{r}");
    let expected: HashSet<(String, String)> = [
        (lost.clone(), webhook_id(&lost, "status", "completed")),
        (lost.clone(), webhook_id(&lost, "analysis", "completed")),
    ]
    .into();
    assert_eq!(published(&r), expected, "{r}");
    assert!(read_lines(&path).is_empty(), "a dry run publishes nothing");
    let js = js().await;
    read_stream(&js, &stream, 0).await;
    let m = app.metrics().await;
    assert_eq!(
        metric(
            &m,
            "callbridge_reconcile_api_errors_total{reason=\"rate_limited\"}"
        ),
        1.0
    );
    assert_eq!(
        metric(
            &m,
            "callbridge_reconcile_last_complete_pass_timestamp_seconds"
        ),
        0.0
    );

    // Unauthenticated, no pass.
    let resp = app
        .client
        .post(format!("{}/reconcile", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // The real pass publishes what the dry run listed.
    let r = pass(&app, false).await;
    assert_eq!(published(&r), expected);
    assert_eq!(read_lines(&path).len(), 2);
    js.delete_stream(&stream).await.unwrap();
    app.stop().await;
    platform.handle.stop(true).await;
}

/// The running bridge's own passes: the first one at startup, then every interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bridge_reconciles_by_itself() {
    let platform = FakePlatform::start().await;
    let lost = unique("rc-sched");
    platform.add(call(&lost, "failed", 40, None));
    let (app, path, stream, _dir) = bridge(&platform, 1, "reconcile-sched").await;
    let want = webhook_id(&lost, "status", "failed");
    eventually(Duration::from_secs(20), "the backfilled event", || {
        let path = path.clone();
        let want = want.clone();
        async move {
            read_lines(&path)
                .iter()
                .any(|l| l["id"] == want.as_str())
                .then_some(())
        }
    })
    .await;
    // More passes run, and publish it no second time.
    let first = platform.state.lock().unwrap().requests.len();
    eventually(Duration::from_secs(20), "another pass", || async {
        (platform.state.lock().unwrap().requests.len() > first + 1).then_some(())
    })
    .await;
    assert_eq!(read_lines(&path).len(), 1);
    js().await.delete_stream(&stream).await.unwrap();
    app.stop().await;
    platform.handle.stop(true).await;
}

/// `callbridge reconcile` asks the running bridge (the real binary) for a pass; the platform
/// key is in no log line even at debug level, through retries and failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_a_pass_on_the_running_bridge_and_never_logs_the_key() {
    let platform = FakePlatform::start().await;
    let (lost, broken) = (unique("rc-cli"), unique("rc-cli-broken"));
    platform.add(call(&lost, "completed", 40, Some(json!({"summary": "ok"}))));
    platform.add(call(&broken, "failed", 40, None));
    platform
        .state
        .lock()
        .unwrap()
        .failing
        .insert(broken.clone(), 503);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let yaml = format!(
        "log: {{format: json, level: debug}}\nidempotency: {{window_secs: 7200}}\n{}\
         reconcile: {{api_base: \"{}\", api_key: \"${{PLATFORM_KEY}}\", interval_secs: 0, \
         requests_per_sec: 50, max_attempts: 2}}\n",
        config_with_sinks(&file_sink("archive", &path, "")),
        platform.base
    );
    let bridge = Bridge::start(dir.path(), &yaml, &[("PLATFORM_KEY", PLATFORM_KEY)]);
    let cfg = dir.path().join("callbridge.yaml");
    let run = |args: Vec<String>| {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || {
            bin()
                .arg("reconcile")
                .args(args)
                .arg("--config")
                .arg(cfg)
                .env("PLATFORM_KEY", PLATFORM_KEY)
                .output()
                .unwrap()
        })
    };
    let args = |extra: &[&str]| {
        let mut a: Vec<String> = ["--since", "1h", "--url", &bridge.base()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };

    let out = run(args(&["--dry-run"])).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "an API error: exit 1\n{stdout}");
    for kind in ["status", "analysis"] {
        let line = format!("would publish {}", webhook_id(&lost, kind, "completed"));
        assert!(stdout.contains(&line), "{line}\n{stdout}");
    }
    assert!(
        stdout.contains(&format!("api error: call {broken}")),
        "{stdout}"
    );
    assert!(stdout.contains("(dry run: nothing published)"), "{stdout}");
    assert!(read_lines(&path).is_empty());

    platform.state.lock().unwrap().failing.clear();
    let out = run(args(&[])).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "published {}",
            webhook_id(&broken, "status", "failed")
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("published 3, 0 not confirmed, 0 api errors"),
        "{stdout}"
    );
    assert_eq!(read_lines(&path).len(), 3);
    let out = run(args(&[])).await.unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("published 0,"));

    // No bridge at that address: refused, with the way out named.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let nowhere = format!("http://127.0.0.1:{}", closed.local_addr().unwrap().port());
    drop(closed);
    let out = run(vec!["--url".into(), nowhere]).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--standalone"));

    let (_, logs) = bridge.stop().await;
    assert!(logs.contains("platform api request failed"), "{logs}");
    assert!(logs.contains("reconcile pass done"));
    assert!(!logs.contains(PLATFORM_KEY), "the platform key is logged");

    // Standalone, the ledger is empty: the whole window would be published again.
    let out = run(vec!["--standalone".into(), "--dry-run".into()])
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("would publish 3,"), "{stdout}");
    platform.handle.stop(true).await;
}

/// The configuration in docs/reconcile.md is valid (with a sink and auth around it).
#[test]
fn the_documented_examples_validate() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let file = "docs/reconcile.md";
    let text = std::fs::read_to_string(root.join(file)).unwrap();
    let section = &text[text.find("## Configuration").expect("section")..];
    let start = section.find("```yaml\n").expect("yaml block") + "```yaml\n".len();
    let yaml = &section[start..start + section[start..].find("```").unwrap()];
    let whole =
        format!("auth: {{mode: none}}\nsinks: [{{name: a, type: file, path: /tmp/x}}]\n{yaml}");
    let (s, warnings) = Settings::from_yaml(&whole, file, &Env::vars([("RINGG_API_KEY", "k")]))
        .unwrap_or_else(|e| panic!("{file}: {e}"));
    assert!(s.reconcile.is_some(), "{file}");
    assert!(
        !warnings.iter().any(|w| w.path.starts_with("reconcile")),
        "{file}: {warnings:?}"
    );
}

/// A request that takes longer than `timeout_ms` is a `timeout`, tried `max_attempts` times,
/// each counted; the key travels in `X-API-KEY`, a wrong one is `unauthorized` and not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_a_wrong_key_are_counted_by_reason() {
    use callbridge::reconcile::client::{ApiError, CallSource, PlatformClient};
    let platform = FakePlatform::start().await;
    let slow = unique("rc-slow");
    platform.add(call(&slow, "completed", 40, None));
    platform
        .state
        .lock()
        .unwrap()
        .failing
        .insert(slow.clone(), 0);
    let settings = |key: &str| {
        let yaml = format!(
            "auth: {{mode: none}}\nsinks: [{{name: a, type: file, path: /tmp/x}}]\n\
             idempotency: {{window_secs: 3600}}\n\
             reconcile: {{api_base: \"{}\", api_key: {key}, timeout_ms: 300, max_attempts: 2, \
             requests_per_sec: 50}}\n",
            platform.base
        );
        Settings::from_yaml(&yaml, "test", &Env::empty())
            .unwrap()
            .0
            .reconcile
            .unwrap()
    };
    let metrics = Arc::new(callbridge::metrics::Metrics::new());
    let client = PlatformClient::new(&settings(PLATFORM_KEY), metrics.clone()).unwrap();
    let started = Instant::now();
    let err = client.details(&slow, true).await.unwrap_err();
    assert!(matches!(err, ApiError::Timeout(300)), "{err}");
    assert!(
        started.elapsed() >= Duration::from_millis(600 + 500),
        "two attempts and a backoff"
    );
    assert_eq!(platform.details_asked(&slow).len(), 2);
    assert_eq!(
        metrics
            .reconcile_api_errors
            .with_label_values(&["timeout"])
            .get(),
        2
    );

    let client = PlatformClient::new(&settings("wrong-key"), metrics.clone()).unwrap();
    let err = client.details(&slow, false).await.unwrap_err();
    assert_eq!(err.reason(), "unauthorized");
    assert_eq!(
        platform.state.lock().unwrap().unauthorized,
        1,
        "not retried"
    );
    assert!(!err.to_string().contains("wrong-key"));
    platform.handle.stop(true).await;
}

/// `requests_per_sec` paces every request, whatever answers them: 6 requests at 5 a second take
/// at least a second (the first goes at once, no burst).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_paced_by_the_rate_limit() {
    use callbridge::reconcile::client::{CallSource, PlatformClient};
    let platform = FakePlatform::start().await;
    let c = unique("rc-paced");
    platform.add(call(&c, "failed", 40, None));
    let yaml = format!(
        "auth: {{mode: none}}\nsinks: [{{name: a, type: file, path: /tmp/x}}]\n\
         idempotency: {{window_secs: 3600}}\n\
         reconcile: {{api_base: \"{}\", api_key: {PLATFORM_KEY}, requests_per_sec: 5}}\n",
        platform.base
    );
    let settings = Settings::from_yaml(&yaml, "test", &Env::empty())
        .unwrap()
        .0
        .reconcile
        .unwrap();
    let client =
        PlatformClient::new(&settings, Arc::new(callbridge::metrics::Metrics::new())).unwrap();
    let started = Instant::now();
    for _ in 0..6 {
        client.details(&c, false).await.unwrap();
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(990), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    platform.handle.stop(true).await;
}

/// With the shared ledger (`idempotency.store: nats-kv`), a pass on one replica sees what
/// another replica (or an earlier process) delivered: nothing is published again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_shared_ledger_a_pass_sees_what_another_replica_delivered() {
    let platform = FakePlatform::start().await;
    let (elsewhere, lost) = (unique("rc-elsewhere"), unique("rc-lost-shared"));
    platform.add(call(&elsewhere, "failed", 40, None));
    platform.add(call(&lost, "failed", 40, None));
    let bucket = unique("rcledger").replace('-', "_");
    let dir = tempfile::tempdir().unwrap();
    let replica = |n: &str, reconcile: bool| {
        let path = dir.path().join(format!("{n}.jsonl"));
        let mut yaml = format!(
            "{}idempotency: {{store: nats-kv, url: \"{NATS_URL}\", bucket: {bucket}, window_secs: 7200}}\n",
            config_with_sinks(&file_sink("archive", &path, ""))
        );
        if reconcile {
            yaml.push_str(&format!(
                "reconcile: {{api_base: \"{}\", api_key: {PLATFORM_KEY}, interval_secs: 0, requests_per_sec: 50}}\n",
                platform.base
            ));
        }
        (yaml, path)
    };
    let (yaml_a, _path_a) = replica("a", false);
    let (yaml_b, path_b) = replica("b", true);
    let a = spawn(&yaml_a).await;
    let b = spawn(&yaml_b).await;
    let hook = callbridge::cli::sample_payload(&elsewhere, "status", "failed");
    assert_eq!(a.post(&hook).await.status, 200);

    let r = pass(&b, false).await;
    assert_eq!(
        published(&r),
        [(lost.clone(), webhook_id(&lost, "status", "failed"))].into(),
        "{r}"
    );
    assert_eq!(r["already_delivered"], 1, "{r}");
    let lines = read_lines(&path_b);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["subject"], lost.as_str());
    a.stop().await;
    b.stop().await;
    platform.handle.stop(true).await;
}

/// Reconcile client settings for `api_base` (the fake's key, one attempt).
fn client_settings(api_base: &str) -> callbridge::reconcile::ReconcileSettings {
    let yaml = format!(
        "auth: {{mode: none}}\nsinks: [{{name: a, type: file, path: /tmp/x}}]\n\
         idempotency: {{window_secs: 3600}}\n\
         reconcile: {{api_base: \"{api_base}\", api_key: {PLATFORM_KEY}, max_attempts: 1, \
         timeout_ms: 5000, requests_per_sec: 50}}\n"
    );
    Settings::from_yaml(&yaml, "test", &Env::empty())
        .unwrap()
        .0
        .reconcile
        .unwrap()
}

/// A server on its own port answering every request with `answer`; it counts the requests it
/// got and those that carried `X-API-KEY`.
async fn serve_any(
    answer: fn(&HttpRequest) -> HttpResponse,
) -> (u16, Arc<Mutex<(u32, u32)>>, actix_web::dev::ServerHandle) {
    let seen = Arc::new(Mutex::new((0u32, 0u32)));
    let data = web::Data::from(seen.clone());
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = HttpServer::new(move || {
        App::new().app_data(data.clone()).default_service(web::to(
            move |req: HttpRequest, seen: web::Data<Mutex<(u32, u32)>>| async move {
                let mut s = seen.lock().unwrap();
                s.0 += 1;
                if req.headers().contains_key("x-api-key") {
                    s.1 += 1;
                }
                answer(&req)
            },
        ))
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    (port, seen, handle)
}

/// Issue #28, item 8: the platform API answering with a redirect to another port (another
/// origin) does not get the key sent there: the redirect is not followed, and the answer is a
/// `client_error`, not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_client_follows_no_redirect_with_the_key() {
    use callbridge::reconcile::client::{ApiError, CallSource, PlatformClient};
    let (elsewhere, elsewhere_seen, elsewhere_handle) =
        serve_any(|_| HttpResponse::Ok().json(json!({"data": {"id": "stolen"}}))).await;
    static TARGET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TARGET
        .set(format!(
            "http://127.0.0.1:{elsewhere}/ca/api/v0/calling/call-details?id=x"
        ))
        .unwrap();
    let (api, api_seen, api_handle) = serve_any(|_| {
        HttpResponse::Found()
            .insert_header(("Location", TARGET.get().unwrap().as_str()))
            .finish()
    })
    .await;
    let metrics = Arc::new(callbridge::metrics::Metrics::new());
    let client = PlatformClient::new(
        &client_settings(&format!("http://127.0.0.1:{api}/ca/api/v0")),
        metrics.clone(),
    )
    .unwrap();
    let err = client.details("x", false).await.unwrap_err();
    assert!(
        matches!(err, ApiError::Status { status: 302, .. }),
        "the redirect is the answer: {err}"
    );
    assert_eq!(err.reason(), "client_error");
    assert_eq!(
        *api_seen.lock().unwrap(),
        (1, 1),
        "asked once, with the key"
    );
    assert_eq!(
        *elsewhere_seen.lock().unwrap(),
        (0, 0),
        "the other origin got no request, hence no key"
    );
    api_handle.stop(true).await;
    elsewhere_handle.stop(true).await;
}

/// Issue #28, item 8: an answer larger than any the API sends is refused once the cap is
/// reached, whether it announces its length or streams without end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_client_refuses_an_oversized_answer() {
    use callbridge::reconcile::client::{ApiError, CallSource, PlatformClient, MAX_ANSWER_BYTES};
    // Endless: a JSON string that never closes, 64 KiB a chunk.
    let (endless, _, endless_handle) = serve_any(|_| {
        let chunk = web::Bytes::from(vec![b'x'; 64 * 1024]);
        let head = futures::stream::once(async {
            Ok::<_, std::io::Error>(web::Bytes::from_static(b"{\"data\": \""))
        });
        let tail = futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
        HttpResponse::Ok()
            .content_type("application/json")
            .streaming(futures::StreamExt::chain(head, tail))
    })
    .await;
    // Announced: a whole body one byte over the cap.
    let (announced, _, announced_handle) = serve_any(|_| {
        let mut body = vec![b' '; MAX_ANSWER_BYTES + 1];
        body[..2].copy_from_slice(b"{}");
        HttpResponse::Ok()
            .content_type("application/json")
            .body(body)
    })
    .await;
    for port in [endless, announced] {
        let metrics = Arc::new(callbridge::metrics::Metrics::new());
        let client = PlatformClient::new(
            &client_settings(&format!("http://127.0.0.1:{port}/ca/api/v0")),
            metrics.clone(),
        )
        .unwrap();
        let err = client.details("x", false).await.unwrap_err();
        assert!(
            matches!(err, ApiError::TooLarge { limit } if limit == MAX_ANSWER_BYTES),
            "{err}"
        );
        assert_eq!(
            metrics
                .reconcile_api_errors
                .with_label_values(&["too_large"])
                .get(),
            1
        );
    }
    endless_handle.stop(false).await;
    announced_handle.stop(false).await;
}
