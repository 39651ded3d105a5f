//! The console (`/console/` on the admin listener) against a running bridge and the real Kafka:
//! its API refuses what it must (no session, another site, a wrong CSRF token, a signed-out
//! session, a count that changed), and in a real browser — headless Chromium over WebDriver —
//! an operator signs in, sees the counters move, finds a call and its Kafka offset, reads a
//! webhook full of markup as text, and redrives a dead letter into the topic.
//!
//! The browser test needs `chromedriver` and `chromium` (Debian's `chromium-driver` and
//! `chromium`; `scripts/browser` installs them): without them it fails, naming the script.
//! With `CALLBRIDGE_CONSOLE_SCREENSHOTS=DIR` it saves a PNG of each page there.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use rdkafka::admin::{
    AdminClient, AdminOptions, AlterConfig, NewTopic, ResourceSpecifier, TopicReplication,
};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use serde_json::{json, Value};

use crate::common::*;
use crate::kafka::{broker, consume_until, consumer, kafka_sink};

/// In every string field of the XSS webhook: a script element and an image whose error
/// handler would run — were either ever parsed as HTML.
/// No whitespace: identifiers (the call id, the status) take printable ASCII only.
const XSS: &str =
    "<script>window.__xss=1;alert(1)</script><img/src=x/onerror=window.__xss=2;alert(2)>";

/// A topic that refuses records over 10 000 bytes (so a 30 KB event is dead-lettered, 413),
/// until [`raise_limit`].
async fn small_topic(brokers: &str, prefix: &str) -> String {
    let topic = unique(prefix);
    let admin = admin(brokers);
    let new =
        NewTopic::new(&topic, 1, TopicReplication::Fixed(1)).set("max.message.bytes", "10000");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin
        .create_topics([&new], &opts)
        .await
        .expect("create topic")
    {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
    topic
}

fn admin(brokers: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client")
}

/// The cause of the dead letters fixed: the topic takes 1 MB records.
async fn raise_limit(brokers: &str, topic: &str) {
    let change =
        AlterConfig::new(ResourceSpecifier::Topic(topic)).set("max.message.bytes", "1000000");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin(brokers)
        .alter_configs([&change], &opts)
        .await
        .expect("alter topic")
    {
        r.unwrap_or_else(|(t, e)| panic!("alter topic {t:?}: {e}"));
    }
}

/// A bridge with a spool and one Kafka sink `events` on `topic`.
async fn bridge(brokers: &str, topic: &str, dir: &tempfile::TempDir) -> TestApp {
    spawn(&format!(
        "spool: {{path: \"{}\"}}\n{}",
        dir.path().join("spool.redb").display(),
        config_with_sinks(&kafka_sink("events", brokers, &format!(", topic: {topic}")))
    ))
    .await
}

/// A webhook of `call` with a 30 KB field: too large for the small topic.
fn too_large(call: &str) -> Value {
    let mut v = status_payload(call, "completed");
    v["data"]["custom_args_values"] = json!({"blob": "x".repeat(30_000)});
    v
}

/// The markup for the fields the bridge caps at 64 bytes (identifiers, the status).
const SHORT_XSS: &str = "<img/src/onerror=alert(3)>";
const CAPPED: [&str; 5] = [
    "status",
    "call_direction",
    "agent_id",
    "from_number",
    "to_number",
];

/// Puts markup in front of every string in `v` ([`SHORT_XSS`] in the capped fields, else
/// [`XSS`]); the call id stays unique.
fn markup_everywhere(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, f) in o.iter_mut() {
                match f {
                    Value::String(s) if CAPPED.contains(&k.as_str()) => {
                        *s = format!("{SHORT_XSS}{s}")
                    }
                    f => markup_everywhere(f),
                }
            }
        }
        Value::String(s) => *s = format!("{XSS}{s}"),
        Value::Array(a) => a.iter_mut().for_each(markup_everywhere),
        _ => {}
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

/// Signs in with `token`; the answer and the session cookie (`name=value`) when one was set.
async fn sign_in(app: &TestApp, token: &str) -> (reqwest::Response, Option<String>) {
    let r = no_redirects()
        .post(format!("{}/console/session", app.admin))
        .form(&[("token", token)])
        .send()
        .await
        .expect("sign in");
    let cookie = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    (r, cookie)
}

async fn get(app: &TestApp, path: &str, cookie: Option<&str>) -> Answer {
    let mut req = app.client.get(format!("{}{path}", app.admin));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    answer(req.send().await.expect("sent")).await
}

async fn post(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = app.client.post(format!("{}{path}", app.admin));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    answer(req.send().await.expect("sent")).await
}

/// What a refused request was, its headers, and its expected status.
type Refusal<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16);

async fn dead_count(app: &TestApp) -> u64 {
    let r = app.admin_get("/spool/dead").await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["dead_letters"]
        .as_array()
        .map_or(0, |a| a.len() as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_api_needs_a_session_and_refuses_cross_site_and_unconfirmed_changes() {
    let brokers = broker().await;
    let topic = small_topic(brokers, "cb-console-api").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = bridge(brokers, &topic, &dir).await;
    let call = unique("console-api");
    let r = app.post(&too_large(&call)).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(dead_count(&app).await, 1);

    // The page: locked down, its assets versioned and immutable.
    let page = app
        .client
        .get(format!("{}/console/", app.admin))
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    let h = page.headers().clone();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    let html = page.text().await.unwrap();
    assert!(
        html.contains("<body class=\"signed-out\">"),
        "no session: the sign-in form"
    );
    let js = html
        .split('"')
        .find(|s| s.starts_with("/console/assets/console-") && s.ends_with(".js"))
        .expect("the script's versioned url");
    let asset = app
        .client
        .get(format!("{}{js}", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(asset.status(), 200);
    assert!(asset.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    let stale = get(&app, "/console/assets/console-000000000000.js", None).await;
    assert_eq!(stale.status, 404);

    // No session, no token: 401; a wrong token: 401; the admin token: the API answers.
    assert_eq!(get(&app, "/console/api/overview", None).await.status, 401);
    assert_eq!(get(&app, "/console/api/dead/count", None).await.status, 401);
    let wrong = app
        .client
        .get(format!("{}/console/api/overview", app.admin))
        .bearer_auth("not-the-admin-token")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let overview = app.admin_get("/console/api/overview").await;
    assert_eq!(overview.status, 200, "{}", overview.body);
    assert_eq!(overview.body["sinks"][0]["name"], "events");
    assert_eq!(overview.body["sinks"][0]["dead_letters"], 1);
    let bad = app.admin_get("/console/api/dead?limit=0").await;
    assert_eq!(bad.status, 400);
    assert!(
        bad.body["error"].as_str().unwrap().contains("limit"),
        "{}",
        bad.body
    );

    // Signing in: a wrong token is refused, the right one makes a strict session cookie.
    let (r, cookie) = sign_in(&app, "not-the-admin-token").await;
    assert_eq!((r.status().as_u16(), cookie), (401, None));
    let (r, cookie) = sign_in(&app, ADMIN_TOKEN).await;
    assert_eq!(r.status(), 303);
    let set = cookie.expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let s = get(&app, "/console/api/session", Some(&cookie)).await;
    assert_eq!(s.status, 200, "{}", s.body);
    let csrf = s.body["csrf_token"]
        .as_str()
        .expect("csrf token")
        .to_string();
    let count = get(&app, "/console/api/dead/count?sink=events", Some(&cookie)).await;
    assert_eq!(count.body["count"], 1);

    // State changes with the cookie: from another site, without or with a wrong CSRF token,
    // or with a count the filter no longer selects — refused, and nothing changed.
    let path = "/console/api/dead/redrive?sink=events&expected=1";
    let refusals: [Refusal; 5] = [
        (
            "cross-site fetch metadata",
            vec![
                ("cookie", &cookie),
                ("x-csrf-token", &csrf),
                ("sec-fetch-site", "cross-site"),
            ],
            403,
        ),
        (
            "another origin",
            vec![
                ("cookie", &cookie),
                ("x-csrf-token", &csrf),
                ("origin", "http://evil.example"),
            ],
            403,
        ),
        ("no csrf token", vec![("cookie", &cookie)], 403),
        (
            "a wrong csrf token",
            vec![("cookie", &cookie), ("x-csrf-token", "0123abcd")],
            403,
        ),
        ("no session", vec![], 401),
    ];
    for (what, headers, status) in &refusals {
        let r = post(&app, path, headers).await;
        assert_eq!(r.status, *status, "{what}: {}", r.body);
        let p = post(&app, "/console/api/dead/purge?expected=1", headers).await;
        assert_eq!(p.status, *status, "{what} (purge): {}", p.body);
        assert_eq!(
            dead_count(&app).await,
            1,
            "{what}: nothing redriven or purged"
        );
    }
    let ok_headers = [("cookie", cookie.as_str()), ("x-csrf-token", csrf.as_str())];
    let changed = post(&app, "/console/api/dead/purge?expected=2", &ok_headers).await;
    assert_eq!(changed.status, 409, "{}", changed.body);
    assert_eq!(dead_count(&app).await, 1, "a changed count: nothing purged");
    let unconfirmed = post(&app, "/console/api/dead/purge", &ok_headers).await;
    assert_eq!(unconfirmed.status, 400, "{}", unconfirmed.body);
    // The same request, same-origin and confirmed, is done.
    let done = post(
        &app,
        "/console/api/dead/purge?sink=events&expected=1",
        &[
            ("cookie", &cookie),
            ("x-csrf-token", &csrf),
            ("sec-fetch-site", "same-origin"),
        ],
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_eq!(done.body["purged"], 1);
    assert_eq!(dead_count(&app).await, 0);

    // Signing out ends the session: the cookie opens nothing any more.
    let out = post(&app, "/console/api/signout", &ok_headers).await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert_eq!(
        get(&app, "/console/api/session", Some(&cookie))
            .await
            .status,
        401
    );
    let after = post(&app, path, &ok_headers).await;
    assert_eq!(after.status, 401, "{}", after.body);
    app.stop().await;
}

/// chromedriver's path, or a failure that says how to get it.
fn chromedriver() -> PathBuf {
    let found = std::env::var_os("CHROMEDRIVER")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|p| {
                std::env::split_paths(&p)
                    .map(|d| d.join("chromedriver"))
                    .find(|c| c.is_file())
            })
        });
    match found {
        Some(p) if p.is_file() => p,
        _ => panic!(
            "chromedriver not found (PATH or $CHROMEDRIVER): the console's browser test needs \
             Debian's chromium and chromium-driver; run scripts/browser to install them"
        ),
    }
}

/// Headless Chromium driven over WebDriver by a chromedriver of its own, on a free port.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        let driver_path = chromedriver();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (scripts/browser installs it)",
                    driver_path.display()
                )
            });
        let profile = tempfile::tempdir().expect("profile dir");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,800", "--hide-scrollbars",
                format!("--user-data-dir={}", profile.path().display()),
            ]}),
        );
        let url = format!("http://127.0.0.1:{port}");
        let mut driver = Some(driver);
        let client = eventually(
            Duration::from_secs(30),
            "chromedriver and a session",
            || {
                let caps = caps.clone();
                let url = url.clone();
                async move {
                    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                        .capabilities(caps)
                        .connect(&url)
                        .await
                        .ok()
                }
            },
        )
        .await;
        Browser {
            client,
            driver: driver.take().expect("spawned"),
            _profile: profile,
        }
    }

    /// The text of the first element `css` selects, once `ok` holds for it (30 s at most).
    async fn await_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        eventually(Duration::from_secs(30), what, || async {
            let e = self.client.find(Locator::Css(css)).await.ok()?;
            let t = e.text().await.ok()?;
            ok(&t).then_some(t)
        })
        .await
    }

    async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .expect("script runs")
    }

    async fn fill(&self, css: &str, text: &str) {
        let e = self.client.find(Locator::Css(css)).await.expect(css);
        e.clear().await.expect("clear");
        e.send_keys(text).await.expect("type");
    }

    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .expect(css)
            .click()
            .await
            .expect("click");
    }

    /// A PNG of the page into `$CALLBRIDGE_CONSOLE_SCREENSHOTS/<name>.png`, when set.
    async fn screenshot(&self, name: &str) {
        if let Some(dir) = std::env::var_os("CALLBRIDGE_CONSOLE_SCREENSHOTS") {
            let png = self.client.screenshot().await.expect("screenshot");
            let path = PathBuf::from(dir).join(format!("{name}.png"));
            std::fs::write(&path, png).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }

    /// No element, script or alert came from the bridge's data.
    async fn assert_only_text(&self) {
        let v = self
            .js("return [document.querySelectorAll('img').length, \
                 document.querySelectorAll('script').length, window.__xss === undefined];")
            .await;
        assert_eq!(
            v,
            json!([0, 1, true]),
            "images, scripts (the console's own), no handler ran"
        );
        assert!(
            self.client.get_alert_text().await.is_err(),
            "no alert is open"
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_real_browser_an_operator_signs_in_watches_finds_and_redrives() {
    let brokers = broker().await;
    let topic = small_topic(brokers, "cb-console-ui").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let app = bridge(brokers, &topic, &dir).await;
    let b = Browser::start().await;
    let c = &b.client;

    // Sign in: a wrong token is told so, the right one opens the overview.
    c.goto(&format!("{}/console/", app.admin))
        .await
        .expect("page");
    b.await_text("#signin-title", "the sign-in form", |t| t == "Sign in")
        .await;
    b.fill("#token", "not-the-admin-token").await;
    b.click("#signin-submit").await;
    b.await_text("#signin-error", "the refusal", |t| {
        t.contains("not an admin token")
    })
    .await;
    b.fill("#token", ADMIN_TOKEN).await;
    b.click("#signin-submit").await;
    let acked = "[data-sink=\"events\"] [data-field=\"acked\"]";
    b.await_text(acked, "the overview's counter", |t| t == "0")
        .await;

    // The counters move after webhooks are sent (the page polls; no reload).
    let call = unique("console-ui");
    let mut ids = Vec::new();
    for status in ["registered", "ongoing", "completed"] {
        let r = app.post(&status_payload(&call, status)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        ids.push(r.event_id().to_string());
    }
    b.await_text(acked, "acked 3 on the overview", |t| t == "3")
        .await;
    b.await_text(
        "[data-sink=\"events\"] [data-field=\"ready\"]",
        "the sink ready",
        |t| t == "ready",
    )
    .await;
    b.screenshot("overview").await;

    // Find the call: its Kafka offset is the one the broker holds the event at.
    let records = consume_until(&consumer(brokers, &topic).await, |rs| rs.len() >= 3).await;
    let stored = records
        .iter()
        .find(|r| r.header("ce_id") == Some(ids[2].as_str()))
        .expect("the completed event in the topic");
    c.goto(&format!("{}/console/#find", app.admin))
        .await
        .unwrap();
    b.fill("#find-q", &call).await;
    b.click("#find-submit").await;
    let offset = b
        .await_text(
            &format!(
                "[data-event=\"{}\"] [data-sink=\"events\"] [data-field=\"offset\"]",
                ids[2]
            ),
            "the receipt's offset",
            |t| !t.is_empty(),
        )
        .await;
    assert_eq!(offset, stored.offset.to_string());
    assert_eq!(stored.topic, topic);
    b.screenshot("find").await;

    // A webhook with markup in every string field, too large for the topic: dead-lettered.
    let mut hostile = too_large(&unique("console-xss"));
    // Every string the sender controls (the envelope's `status` must say "success").
    markup_everywhere(&mut hostile["data"]);
    markup_everywhere(&mut hostile["message"]);
    let hostile_call = hostile["data"]["call_id"].as_str().unwrap().to_string();
    let r = app.post(&hostile).await;
    assert_eq!(r.status, 413, "{}", r.body);
    let hostile_id = r.event_id().to_string();
    assert!(!hostile_id.is_empty(), "{}", r.body);
    b.fill("#find-q", &hostile_call).await;
    b.click("#find-submit").await;
    let subject = b
        .await_text(
            &format!("[data-event=\"{hostile_id}\"] [data-field=\"subject\"]"),
            "the hostile call found",
            |t| !t.is_empty(),
        )
        .await;
    assert_eq!(subject, hostile_call, "the call id shown verbatim, as text");
    let status = b
        .await_text(
            &format!("[data-event=\"{hostile_id}\"] [data-field=\"status\"]"),
            "its status",
            |t| !t.is_empty(),
        )
        .await;
    assert_eq!(status, format!("{SHORT_XSS}completed"));
    b.assert_only_text().await;

    // The dead letters page lists it; its event reads as text.
    c.goto(&format!("{}/console/#dead", app.admin))
        .await
        .unwrap();
    b.fill("#dead-sink", "events").await;
    b.click("#dead-list").await;
    let row = format!("#dead-rows tr[data-event=\"{hostile_id}\"]");
    b.await_text(&row, "the dead letter listed", |t| t.contains("too large"))
        .await;
    b.click(&format!("{row} button")).await;
    let event = b
        .await_text("#dead-detail [data-field=\"event\"]", "its event", |t| {
            t.contains("call_id")
        })
        .await;
    assert!(
        event.contains(&serde_json::to_string(&hostile_call).unwrap()),
        "{event}"
    );
    assert!(
        event.contains("[redacted]"),
        "personal data redacted (log.redact_pii)"
    );
    b.assert_only_text().await;
    b.screenshot("dead-letters").await;

    // The cause fixed, it is redriven from the page after the confirmation, and arrives.
    raise_limit(brokers, &topic).await;
    b.click("#dead-redrive").await;
    let confirm = b
        .await_text("#confirm-text", "the confirmation", |t| !t.is_empty())
        .await;
    assert!(
        confirm.starts_with("Redrive 1 dead letter(s)?"),
        "{confirm}"
    );
    assert!(confirm.contains("sink = events"), "{confirm}");
    b.click("#confirm-yes").await;
    b.await_text("#dead-status", "the redrive done", |t| t == "Redriven: 1.")
        .await;
    let arrived = consume_until(&consumer(brokers, &topic).await, |rs| {
        rs.iter()
            .any(|r| r.header("ce_id") == Some(hostile_id.as_str()))
    })
    .await;
    assert!(
        arrived
            .iter()
            .any(|r| r.header("ce_id") == Some(hostile_id.as_str())),
        "the redriven event is in the topic"
    );
    assert_eq!(dead_count(&app).await, 0);
    assert!(b.client.get_alert_text().await.is_err(), "no alert fired");

    // A phone's width: every page fits without scrolling sideways.
    c.set_window_size(390, 844).await.expect("phone width");
    for page in ["overview", "find", "dead"] {
        c.goto(&format!("{}/console/#{page}", app.admin))
            .await
            .unwrap();
        b.await_text(&format!("#page-{page} h2"), "the page", |t| !t.is_empty())
            .await;
        let fits = b
            .js("return document.documentElement.scrollWidth <= window.innerWidth;")
            .await;
        assert_eq!(fits, json!(true), "{page} fits a 390 px wide window");
    }

    b.client.clone().close().await.expect("browser closed");
    drop(b);
    app.stop().await;
}

/// Without `admin.tokens` (a loopback admin listener, every operator route open) signing in
/// needs no token — but the API still wants the session (or an `Authorization` header), and a
/// change still its CSRF token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_admin_tokens_signing_in_needs_no_token_and_changes_still_need_csrf() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn(&format!(
        "server: {{listen: \"127.0.0.1:0\", admin_listen: \"127.0.0.1:0\", deadline_ms: 3000}}\n\
         auth: {{api_keys: {{header: X-API-Key, keys: [\"{KEY}\"]}}}}\n\
         spool: {{path: \"{}\"}}\n\
         sinks:\n{}",
        dir.path().join("spool.redb").display(),
        file_sink("archive", &dir.path().join("events.jsonl"), "")
    ))
    .await;
    let page = get(&app, "/console/", None).await;
    assert!(
        page.body
            .as_str()
            .unwrap_or_default()
            .contains("leave the field empty"),
        "the form says no token is needed"
    );
    assert_eq!(get(&app, "/console/api/overview", None).await.status, 401);
    let (r, cookie) = sign_in(&app, "").await;
    assert_eq!(r.status(), 303);
    let cookie = cookie
        .expect("a session")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let s = get(&app, "/console/api/session", Some(&cookie)).await;
    assert_eq!(s.status, 200, "{}", s.body);
    let csrf = s.body["csrf_token"].as_str().unwrap().to_string();
    let o = get(&app, "/console/api/overview", Some(&cookie)).await;
    assert_eq!(o.body["sinks"][0]["name"], "archive", "{}", o.body);
    let no_csrf = post(
        &app,
        "/console/api/dead/purge?expected=0",
        &[("cookie", &cookie)],
    )
    .await;
    assert_eq!(no_csrf.status, 403, "{}", no_csrf.body);
    let with = post(
        &app,
        "/console/api/dead/purge?expected=0",
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
    )
    .await;
    assert_eq!(
        (with.status, &with.body["purged"]),
        (200, &json!(0)),
        "{}",
        with.body
    );
    app.stop().await;
}
