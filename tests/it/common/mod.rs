//! Helpers shared by the integration tests: spawn the app on port 0, post webhooks, read files.

pub mod bridge;
pub mod proxy;

pub use bridge::{bin, Bridge};

use std::path::Path;
use std::time::Duration;

use callbridge::config::{Env, Settings};
use callbridge::Application;
use serde_json::Value;

/// A sender's trace context; the broker tests check it reaches the messages.
pub const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The key every test config accepts.
pub const KEY: &str = "test-key-1";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub handle: actix_web::dev::ServerHandle,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Parses a YAML config (against an empty environment: no overrides, no `${VAR}` values) or
/// panics with the validation errors.
pub fn settings(yaml: &str) -> Settings {
    match Settings::from_yaml(yaml, "test", &Env::empty()) {
        Ok((s, _)) => s,
        Err(e) => panic!("test config invalid: {e}"),
    }
}

/// A config with the standard test auth, listening on port 0 with a 3 s deadline, and the given
/// sinks (YAML list items).
pub fn config_with_sinks(sinks_yaml: &str) -> String {
    config_with_server("", sinks_yaml)
}

/// Like [`config_with_sinks`], with more `server` keys (`", max_body_bytes: 2048"`).
pub fn config_with_server(server_extra: &str, sinks_yaml: &str) -> String {
    format!(
        "server: {{listen: \"127.0.0.1:0\", deadline_ms: 3000{server_extra}}}\n\
         auth: {{api_keys: {{header: X-API-Key, keys: [\"{KEY}\", \"test-key-2\"]}}, bearer: {{tokens: [\"test-token\"]}}}}\n\
         sinks:\n{sinks_yaml}"
    )
}

/// A `file` sink entry of a config's `sinks` list, with more keys (`", required: false"`).
pub fn file_sink(name: &str, path: &Path, extra: &str) -> String {
    format!(
        "  - {{name: {name}, type: file, path: \"{}\"{extra}}}\n",
        path.display()
    )
}

/// An app with one file sink named `archive`; returns the app, the file, and the directory
/// guard that keeps the file alive.
pub async fn spawn_archive() -> (TestApp, std::path::PathBuf, tempfile::TempDir) {
    spawn_archive_with("").await
}

/// Like [`spawn_archive`], with more `server` keys (see [`config_with_server`]).
pub async fn spawn_archive_with(
    server_extra: &str,
) -> (TestApp, std::path::PathBuf, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    let yaml = config_with_server(server_extra, &file_sink("archive", &path, ""));
    (spawn(&yaml).await, path, dir)
}

pub async fn spawn(yaml: &str) -> TestApp {
    spawn_settings(settings(yaml)).await
}

pub async fn spawn_settings(mut s: Settings) -> TestApp {
    s.server.workers = 2;
    let app = Application::build(s).await.expect("app builds");
    let port = app.port();
    let handle = app.handle();
    let task = tokio::spawn(app.run_until_stopped());
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client"),
        handle,
        task,
    }
}

pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Value,
}

impl Answer {
    /// The event id the answer names (empty if it names none).
    pub fn event_id(&self) -> &str {
        self.body["event_id"].as_str().unwrap_or_default()
    }
}

impl TestApp {
    /// Posts a raw body with the standard key and no Content-Type, as the sender does by default.
    pub async fn post_raw(&self, path_and_query: &str, body: impl Into<reqwest::Body>) -> Answer {
        let resp = self
            .client
            .post(format!("{}{}", self.base, path_and_query))
            .header("X-API-Key", KEY)
            .body(body)
            .send()
            .await
            .expect("request sent");
        answer(resp).await
    }

    pub async fn post(&self, body: &Value) -> Answer {
        self.post_raw("/callback", body.to_string()).await
    }

    /// [`TestApp::post`], and how long the answer took.
    pub async fn post_timed(&self, body: &Value) -> (Answer, Duration) {
        let started = std::time::Instant::now();
        let a = self.post(body).await;
        (a, started.elapsed())
    }

    /// Posts with a W3C `traceparent`, as a traced sender would.
    pub async fn post_traced(&self, body: &Value, traceparent: &str) -> Answer {
        let resp = self
            .client
            .post(format!("{}/callback", self.base))
            .header("X-API-Key", KEY)
            .header("traceparent", traceparent)
            .body(body.to_string())
            .send()
            .await
            .expect("request sent");
        answer(resp).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        let resp = self
            .client
            .get(format!("{}{}", self.base, path))
            .send()
            .await
            .expect("request sent");
        answer(resp).await
    }

    /// `/readyz` answers 200: every required sink can reach its destination.
    pub async fn is_ready(&self) -> bool {
        self.get("/readyz").await.status == 200
    }

    /// Waits (up to 30 s) until `/readyz` says `ready`, as sinks connect or lose their broker.
    pub async fn await_ready(&self, ready: bool) {
        let what = if ready { "ready" } else { "not ready" };
        eventually(Duration::from_secs(30), what, || async move {
            (self.is_ready().await == ready).then_some(())
        })
        .await;
    }

    /// Waits (up to 30 s) until the sink's `callbridge_sink_ready` gauge says it reaches its
    /// destination (`true`) or not: the broker's state, whatever readiness makes of it.
    pub async fn await_connected(&self, sink: &str, connected: bool) {
        let line = format!(
            "callbridge_sink_ready{{sink=\"{sink}\"}} {}",
            u8::from(connected)
        );
        let line = &line;
        eventually(Duration::from_secs(30), line, || async move {
            self.metrics()
                .await
                .lines()
                .any(|l| l == line)
                .then_some(())
        })
        .await;
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics body")
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
    }
}

pub async fn answer(resp: reqwest::Response) -> Answer {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap_or_default().to_string());
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Answer {
        status,
        retry_after,
        body,
    }
}

/// A payload fixture from tests/fixtures.
pub fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// The sender's curl test payload with a unique call id (and the given status).
pub fn status_payload(call_id: &str, status: &str) -> Value {
    let mut v = fixture("curl-test.payload.json");
    v["data"]["call_id"] = Value::from(call_id);
    v["data"]["status"] = Value::from(status);
    v
}

/// A call id no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The JSON lines of a file sink's file (empty if it does not exist).
pub fn read_lines(path: &Path) -> Vec<Value> {
    match std::fs::read_to_string(path) {
        Ok(s) => s
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is JSON"))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Polls `f` until it returns Some, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
