//! Ingest over HTTP: auth, content types, limits, the bad-input corpus, JSON errors.

use crate::common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_accepts_every_listed_key_and_bearer_and_refuses_the_rest() {
    let (app, path, _dir) = spawn_archive().await;
    let url = format!("{}/callback", app.base);
    let body = status_payload(&unique("auth"), "ongoing").to_string();

    let send = |headers: Vec<(&'static str, &'static str)>| {
        let mut req = app.client.post(&url).body(body.clone());
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move { answer(req.send().await.unwrap()).await }
    };

    let missing = send(vec![]).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.body["error"]["code"], "unauthorized");
    assert!(missing.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("X-API-Key"));
    for bad in [
        vec![("X-API-Key", "wrong")],
        vec![("X-API-Key", "test-key-1x")],
        vec![("Authorization", "Bearer wrong")],
        vec![("Authorization", "Bearer test-key-1")],
    ] {
        let a = send(bad.clone()).await;
        assert_eq!(a.status, 401, "{bad:?}");
        assert_eq!(a.body["error"]["code"], "unauthorized");
    }
    assert!(
        read_lines(&path).is_empty(),
        "nothing published without auth"
    );

    // rotation: both keys work; header name is case-insensitive; bearer tokens work
    assert_eq!(send(vec![("x-api-key", "test-key-2")]).await.status, 200);
    assert_eq!(send(vec![("X-API-KEY", KEY)]).await.status, 200);
    assert_eq!(
        send(vec![("Authorization", "Bearer test-token")])
            .await
            .status,
        200
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_is_json_whatever_the_content_type_says() {
    let (app, path, _dir) = spawn_archive().await;
    for (i, ct) in [
        None,
        Some("text/plain"),
        Some("application/json"),
        Some("application/json; charset=utf-8"),
        Some("application/x-www-form-urlencoded"),
    ]
    .into_iter()
    .enumerate()
    {
        let mut req = app
            .client
            .post(format!("{}/callback", app.base))
            .header("X-API-Key", KEY)
            .body(status_payload(&format!("{}-{i}", unique("ct")), "ongoing").to_string());
        if let Some(ct) = ct {
            req = req.header("Content-Type", ct);
        }
        let a = answer(req.send().await.unwrap()).await;
        assert_eq!(a.status, 200, "content type {ct:?}: {}", a.body);
        assert_eq!(a.body["status"], "accepted");
    }
    assert_eq!(read_lines(&path).len(), 5);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_params_are_kept_and_put_patch_accepted() {
    let (app, path, _dir) = spawn_archive().await;
    let call = unique("params");
    let a = app
        .post_raw(
            "/callback?source=api&version=v1",
            status_payload(&call, "ongoing").to_string(),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let lines = read_lines(&path);
    assert_eq!(
        lines[0]["data"]["callback_params"],
        json!({"source": "api", "version": "v1"})
    );
    assert_eq!(lines[0]["id"], a.body["event_id"]);

    for method in [reqwest::Method::PUT, reqwest::Method::PATCH] {
        let resp = app
            .client
            .request(method.clone(), format!("{}/callback", app.base))
            .header("X-API-Key", KEY)
            .body(status_payload(&unique("m"), "ongoing").to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{method}");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_is_413_declared_or_streamed() {
    let (app, path, _dir) = spawn_archive_with(", max_body_bytes: 2048").await;
    let mut big = status_payload(&unique("big"), "completed");
    big["data"]["transcript"] = Value::from("x".repeat(4096));
    let a = app.post(&big).await;
    assert_eq!(a.status, 413);
    assert_eq!(a.body["error"]["code"], "payload_too_large");

    // without Content-Length (chunked), the limit still holds
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = big
        .to_string()
        .into_bytes()
        .chunks(512)
        .map(|c| Ok(c.to_vec()))
        .collect();
    let stream = futures::stream::iter(chunks);
    let a = app
        .post_raw("/callback", reqwest::Body::wrap_stream(stream))
        .await;
    assert_eq!(a.status, 413);

    // just under the limit is fine
    let mut ok = status_payload(&unique("ok"), "completed");
    ok["data"]["transcript"] = Value::from("y".repeat(1000));
    assert_eq!(app.post(&ok).await.status, 200);
    assert_eq!(read_lines(&path).len(), 1);
    app.stop().await;
}

/// At least 20 kinds of bad input; each is a 4xx with the JSON error, and nothing is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_corpus_is_refused_and_publishes_nothing() {
    let (app, path, _dir) = spawn_archive().await;
    let good = status_payload("bad-corpus", "completed");
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        v.to_string()
    };
    let corpus: Vec<(&str, String, &str)> = vec![
        ("empty body", String::new(), "invalid_json"),
        ("not json", "hello".into(), "invalid_json"),
        (
            "truncated json",
            r#"{"status": "success", "data": {"#.into(),
            "invalid_json",
        ),
        ("trailing garbage", format!("{good} x"), "invalid_json"),
        (
            "lone surrogate",
            r#"{"status": "\ud800"}"#.into(),
            "invalid_json",
        ),
        ("array", "[]".into(), "invalid_payload"),
        ("string", "\"success\"".into(), "invalid_payload"),
        ("number", "42".into(), "invalid_payload"),
        ("null", "null".into(), "invalid_payload"),
        (
            "missing status",
            with(&|v| {
                v.as_object_mut().unwrap().remove("status");
            }),
            "invalid_payload",
        ),
        (
            "status error",
            with(&|v| v["status"] = json!("error")),
            "invalid_payload",
        ),
        (
            "status not string",
            with(&|v| v["status"] = json!(true)),
            "invalid_payload",
        ),
        (
            "missing data",
            with(&|v| {
                v.as_object_mut().unwrap().remove("data");
            }),
            "invalid_payload",
        ),
        (
            "data array",
            with(&|v| v["data"] = json!([])),
            "invalid_payload",
        ),
        (
            "missing call_id",
            with(&|v| {
                v["data"].as_object_mut().unwrap().remove("call_id");
            }),
            "invalid_payload",
        ),
        (
            "empty call_id",
            with(&|v| v["data"]["call_id"] = json!("")),
            "invalid_payload",
        ),
        (
            "numeric call_id",
            with(&|v| v["data"]["call_id"] = json!(123)),
            "invalid_payload",
        ),
        (
            "missing data.status",
            with(&|v| {
                v["data"].as_object_mut().unwrap().remove("status");
            }),
            "invalid_payload",
        ),
        (
            "status object",
            with(&|v| v["data"]["status"] = json!({})),
            "invalid_payload",
        ),
        (
            "duration string",
            with(&|v| v["data"]["call_duration"] = json!("120.5")),
            "invalid_payload",
        ),
        (
            "negative duration",
            with(&|v| v["data"]["call_duration"] = json!(-3)),
            "invalid_payload",
        ),
        (
            "fractional retry",
            with(&|v| v["data"]["retry"] = json!(0.5)),
            "invalid_payload",
        ),
        (
            "custom args list",
            with(&|v| v["data"]["custom_args_values"] = json!(["a"])),
            "invalid_payload",
        ),
        (
            "analysis string",
            with(&|v| v["data"]["analysis"] = json!("great")),
            "invalid_payload",
        ),
        (
            "transcript number",
            with(&|v| v["data"]["transcript"] = json!(1)),
            "invalid_payload",
        ),
        (
            "agent_id number",
            with(&|v| v["data"]["agent_id"] = json!(1)),
            "invalid_payload",
        ),
        // Fields that become destination names and broker headers: a length cap and a
        // character set each (issue 14, class 1).
        (
            "status of 5 KiB",
            with(&|v| v["data"]["status"] = json!("x".repeat(5000))),
            "invalid_payload",
        ),
        (
            "status with NUL",
            with(&|v| v["data"]["status"] = json!("completed\u{0}")),
            "invalid_payload",
        ),
        (
            "status with a space",
            with(&|v| v["data"]["status"] = json!("in progress")),
            "invalid_payload",
        ),
        (
            "status with a line break",
            with(&|v| v["data"]["status"] = json!("completed\r\nX-Evil: 1")),
            "invalid_payload",
        ),
        (
            "non-ASCII status",
            with(&|v| v["data"]["status"] = json!("terminé")),
            "invalid_payload",
        ),
        (
            "call_id of 257 bytes",
            with(&|v| v["data"]["call_id"] = json!("c".repeat(257))),
            "invalid_payload",
        ),
        (
            "call_id with NUL",
            with(&|v| v["data"]["call_id"] = json!("call\u{0}id")),
            "invalid_payload",
        ),
        (
            "call_id with a line break",
            with(&|v| v["data"]["call_id"] = json!("call\nid")),
            "invalid_payload",
        ),
        (
            "agent_id of 10 KiB",
            with(&|v| v["data"]["agent_id"] = json!("a".repeat(10240))),
            "invalid_payload",
        ),
        (
            "call_direction with a tab",
            with(&|v| v["data"]["call_direction"] = json!("out\tbound")),
            "invalid_payload",
        ),
        (
            "agent event_type of 1 KiB",
            json!({"event_type": "e".repeat(1024), "call_id": "c"}).to_string(),
            "invalid_payload",
        ),
        (
            "agent event_type with NUL",
            json!({"event_type": "call_started\u{0}", "call_id": "c"}).to_string(),
            "invalid_payload",
        ),
        (
            "agent status with '#' and a space",
            json!({"event_type": "call_completed", "call_id": "c", "status": "done #1"})
                .to_string(),
            "invalid_payload",
        ),
    ];
    assert!(corpus.len() >= 20);
    for (name, body, code) in &corpus {
        let a = app.post_raw("/callback", body.clone()).await;
        assert_eq!(a.status, 400, "{name}: {}", a.body);
        assert_eq!(a.body["error"]["code"], *code, "{name}: {}", a.body);
        let msg = a.body["error"]["message"].as_str().unwrap_or_default();
        assert!(!msg.is_empty(), "{name}");
        if *code == "invalid_payload" {
            let field = a.body["error"]["field"].as_str().unwrap();
            assert!(
                msg.starts_with(field),
                "{name}: message names the field: {msg}"
            );
        }
    }

    let a = app
        .post_raw("/callback", b"{\"status\": \"\xff\"}".to_vec())
        .await;
    assert_eq!(a.status, 400, "invalid utf-8: {}", a.body);
    assert_eq!(a.body["error"]["code"], "invalid_json");

    assert!(read_lines(&path).is_empty(), "bad input published nothing");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_answer_json() {
    let (app, _path, _dir) = spawn_archive().await;
    let a = app.get("/callback").await;
    assert_eq!(a.status, 405);
    assert_eq!(a.body["error"]["code"], "method_not_allowed");
    let a = app.get("/nope").await;
    assert_eq!(a.status, 404);
    assert_eq!(a.body["error"]["code"], "not_found");
    let a = app.get("/healthz").await;
    assert_eq!(a.status, 200);
    let a = app.get("/readyz").await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body["sinks"]["archive"]["ready"], true);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_status_is_forwarded_and_counted() {
    let (app, path, _dir) = spawn_archive().await;
    let a = app.post(&status_payload(&unique("unk"), "voicemail")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(read_lines(&path)[0]["data"]["status"], "voicemail");
    let m = app.metrics().await;
    assert!(m.contains("callbridge_unknown_status_total 1"), "{m}");
    app.stop().await;
}

/// A client that announces 1 MiB and sends 10 bytes gets its answer (503 + Retry-After, connection closed)
/// within the deadline (3 s in the test config) instead of holding the request forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_is_answered_within_the_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (app, path, _dir) = spawn_archive().await;
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /callback HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {KEY}\r\n\
         Content-Length: 1048576\r\n\r\n{{\"data\": {{"
    );
    conn.write_all(head.as_bytes()).await.expect("send head");
    let started = std::time::Instant::now();
    let mut got = Vec::new();
    // Bounded by the deadline plus a margin; without a body timeout this read never ends.
    let read = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "connection still held after {:?}",
        started.elapsed()
    );
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 503"), "answer: {text}");
    assert!(
        text.to_lowercase().contains("retry-after:"),
        "answer: {text}"
    );
    assert!(text.contains("body_timeout"), "answer: {text}");
    assert!(read_lines(&path).is_empty());
    app.stop().await;
}

/// Opens a raw connection and sends a webhook's head and the first half of its body: the
/// request is admitted and held (reading its body) until `finish`.
async fn held_request(app: &TestApp, body: &str) -> (tokio::net::TcpStream, String) {
    use tokio::io::AsyncWriteExt;
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let (first, rest) = body.split_at(body.len() / 2);
    let head = format!(
        "POST /callback HTTP/1.1\r\nHost: {addr}\r\nX-API-Key: {KEY}\r\nConnection: close\r\n\
         Content-Length: {}\r\n\r\n{first}",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.expect("send head");
    (conn, rest.to_string())
}

/// Sends the rest of a held request's body and returns the answer's status line.
async fn finish(mut conn: tokio::net::TcpStream, rest: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(rest.as_bytes()).await.expect("send rest");
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.expect("answer");
    answer.lines().next().unwrap_or_default().to_string()
}

/// Waits until `n` webhook requests are in flight (the gauge also counts the scrape itself).
async fn await_in_flight(app: &TestApp, n: usize) {
    let line = format!("callbridge_http_requests_in_flight {}", n + 1);
    eventually(std::time::Duration::from_secs(5), &line, || async {
        app.metrics().await.lines().any(|l| l == line).then_some(())
    })
    .await;
}

/// More concurrent requests than `max_in_flight`: the excess is shed at once with 503 +
/// Retry-After, the admitted ones succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_in_flight_limit_are_shed_with_retry_after() {
    let (app, path, _dir) = spawn_archive_with(", max_in_flight: 2").await;
    let a = status_payload(&unique("held-a"), "completed").to_string();
    let b = status_payload(&unique("held-b"), "completed").to_string();
    let held = [held_request(&app, &a).await, held_request(&app, &b).await];
    await_in_flight(&app, 2).await;
    let (shed, took) = app
        .post_timed(&status_payload(&unique("excess"), "completed"))
        .await;
    assert_eq!(shed.status, 503, "{}", shed.body);
    assert_eq!(shed.body["error"]["code"], "overloaded");
    assert_eq!(shed.retry_after.as_deref(), Some("60"));
    assert!(
        took < std::time::Duration::from_secs(3),
        "shed within the deadline: {took:?}"
    );
    for (conn, rest) in held {
        assert_eq!(finish(conn, rest).await, "HTTP/1.1 200 OK");
    }
    assert_eq!(
        read_lines(&path).len(),
        2,
        "the admitted ones, not the shed one"
    );
    assert!(app
        .metrics()
        .await
        .contains(r#"callbridge_http_shed_total{limit="requests"} 1"#));
    // Capacity is back once they are answered.
    assert_eq!(
        app.post(&status_payload(&unique("after"), "completed"))
            .await
            .status,
        200
    );
    app.stop().await;
}

/// Body bytes in flight are bounded too, counted as they arrive: while half of one body is
/// held, a second body whose bytes do not fit in what is left of `max_in_flight_bytes` is shed
/// (503, connection closed); the first completes, and the second fits once it is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_bytes_over_the_in_flight_limit_are_shed() {
    let (app, path, _dir) =
        spawn_archive_with(", max_body_bytes: 4096, max_in_flight_bytes: 4096").await;
    let mut big = status_payload(&unique("big-held"), "completed");
    big["data"]["transcript"] = Value::from("x".repeat(2500));
    let held = held_request(&app, &big.to_string()).await;
    await_in_flight(&app, 1).await;
    let mut second = status_payload(&unique("big-shed"), "completed");
    second["data"]["transcript"] = Value::from("y".repeat(2500));
    let shed = app.post(&second).await;
    assert_eq!(shed.status, 503, "{}", shed.body);
    assert_eq!(shed.body["error"]["code"], "overloaded");
    assert!(shed.retry_after.is_some());
    assert_eq!(finish(held.0, held.1).await, "HTTP/1.1 200 OK");
    assert_eq!(
        app.post(&second).await.status,
        200,
        "fits once the first is answered"
    );
    assert_eq!(read_lines(&path).len(), 2);
    app.stop().await;
}

/// The peak resident memory of a process, from /proc (kB).
fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// 16 concurrent hostile bodies of just under 1 MiB of tiny JSON values (each costs tens of
/// MiB once parsed and normalised): with the default in-flight limits, the excess is shed with
/// 503 + Retry-After, the admitted ones are published, and the process stays well inside the
/// Helm chart's 256 MiB memory limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_hostile_megabyte_bodies_stay_inside_the_pod_memory_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    let yaml = format!(
        "server: {{listen: \"127.0.0.1:0\"}}\nlog: {{format: json}}\n\
         auth: {{api_keys: {{keys: [\"{KEY}\"]}}}}\n\
         sinks:\n{}",
        file_sink("archive", &path, "")
    );
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    let url = format!("{}/callback", bridge.base());
    let client = reqwest::Client::new();
    let bodies: Vec<String> = (0..16)
        .map(|i| {
            let mut v = status_payload(&unique(&format!("hostile{i}")), "completed");
            v["data"]["filler"] = Value::Array(vec![Value::from(0); 500_000]);
            v.to_string()
        })
        .collect();
    assert!(bodies[0].len() < 1024 * 1024, "under max_body_bytes");
    let answers = futures::future::join_all(bodies.into_iter().map(|body| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let r = client
                .post(&url)
                .header("X-API-Key", KEY)
                .body(body)
                .send()
                .await
                .expect("answered");
            let retry_after = r.headers().contains_key("retry-after");
            (r.status().as_u16(), retry_after)
        }
    }))
    .await;
    let accepted = answers.iter().filter(|(s, _)| *s == 200).count();
    for (status, retry_after) in &answers {
        assert!(
            *status == 200 || (*status == 503 && *retry_after),
            "{answers:?}"
        );
    }
    assert!(accepted >= 1, "{answers:?}");
    assert!(accepted < 16, "some were shed: {answers:?}");
    let peak_mb = peak_rss_kb(bridge.pid()) / 1024;
    bridge.terminate();
    eprintln!("16 hostile bodies: {accepted} accepted, peak rss {peak_mb} MiB");
    assert!(
        peak_mb < 256,
        "peak rss {peak_mb} MiB, the pod's limit is 256 MiB"
    );
    assert_eq!(read_lines(&path).len(), accepted);
}
