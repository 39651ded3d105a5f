//! The admin plane (#28) through the real listeners: the operator routes only on the admin
//! listener, only with an admin token (never a webhook credential or signature), failed
//! attempts rate limited, bounded actions, and the CLI that finds and authenticates to it.
//! The bridge runs as the real binary wherever the listener's own behaviour is the point.

use std::time::Duration;

use crate::common::*;

/// The Standard Webhooks spec's example secret.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Signature-only webhook auth, an admin token, and `reconcile` (never run by itself).
fn signature_only_config(path: &std::path::Path, admin: &str) -> String {
    format!(
        "log: {{format: json}}\n\
         server: {{listen: \"127.0.0.1:0\", admin_listen: \"127.0.0.1:0\", deadline_ms: 3000}}\n\
         auth: {{signature: {{scheme: standard-webhooks, secrets: [{SECRET}]}}}}\n\
         admin: {admin}\n\
         idempotency: {{window_secs: 7200}}\n\
         reconcile: {{api_base: \"http://127.0.0.1:9\", api_key: platform-key, interval_secs: 0}}\n\
         sinks:\n{}",
        file_sink("archive", path, "")
    )
}

/// Issue #28, item 1: with signature-only webhook auth, `POST /reconcile` needed no
/// credential at all, and `since_secs=u64::MAX` panicked the pass. Now: 404 on the webhook
/// listener, 401 without the admin token, 400 naming the cap for a lookback past it (the
/// bridge keeps answering), on the real binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_needs_the_admin_token_on_the_admin_listener_and_its_lookback_is_capped() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = signature_only_config(
        &dir.path().join("events.jsonl"),
        &format!("{{tokens: [\"{ADMIN_TOKEN}\"]}}"),
    );
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    let client = reqwest::Client::new();
    let post = |url: String, token: Option<&'static str>| {
        let client = client.clone();
        async move {
            let mut req = client.post(url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            answer(req.send().await.unwrap()).await
        }
    };
    let (main, admin) = (bridge.base(), bridge.admin_base());

    let a = post(format!("{main}/reconcile?since_secs=60&dry_run=true"), None).await;
    assert_eq!(
        a.status, 404,
        "no operator route on the webhook listener: {}",
        a.body
    );
    let a = post(
        format!("{admin}/reconcile?since_secs=60&dry_run=true"),
        None,
    )
    .await;
    assert_eq!(a.status, 401, "{}", a.body);
    let a = post(
        format!("{admin}/reconcile?since_secs={}&dry_run=true", u64::MAX),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(a.status, 400, "{}", a.body);
    let message = a.body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("at most 7200 s"), "{}", a.body);
    let a = post(
        format!("{admin}/reconcile?since_secs=7201"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(a.status, 400, "one past the cap: {}", a.body);
    // Still up, and a pass within the cap runs (the platform is unreachable: its error is
    // reported, nothing panics).
    let a = post(
        format!("{admin}/reconcile?since_secs=7200&dry_run=true"),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["dry_run"], true);
    assert_eq!(
        answer(client.get(format!("{main}/healthz")).send().await.unwrap())
            .await
            .status,
        200
    );
    let (_, logs) = bridge.stop().await;
    assert!(!logs.contains("panicked"), "{logs}");
    assert!(logs.contains("admin: reconcile pass"), "{logs}");
    assert!(!logs.contains(ADMIN_TOKEN), "the admin token is logged");
}

/// Issue #28, item 3: the webhook credential (the key the platform puts in every callback)
/// listed and redrove dead letters. The admin listener accepts its own tokens only — not the
/// webhook key in its header, nor as a bearer token, nor the webhook bearer token — and any
/// of several (rotation).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_credentials_are_refused_on_the_admin_listener_and_each_admin_token_works() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = config_with_sinks(&file_sink("archive", &dir.path().join("e.jsonl"), "")).replace(
        &format!("admin: {{tokens: [\"{ADMIN_TOKEN}\"]}}"),
        &format!("admin: {{tokens: [\"{ADMIN_TOKEN}\", \"second-admin-token-rotated\"]}}"),
    );
    let app = spawn(&format!(
        "spool: {{path: \"{}\"}}\n{yaml}",
        dir.path().join("spool.redb").display()
    ))
    .await;
    let get = |headers: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let mut req = app.client.get(format!("{}/spool/dead", app.admin));
            for (k, v) in headers {
                req = req.header(k, v);
            }
            answer(req.send().await.unwrap()).await
        }
    };
    for refused in [
        vec![("X-API-Key", KEY.to_string())],
        vec![("Authorization", format!("Bearer {KEY}"))],
        vec![("Authorization", "Bearer test-token".to_string())],
        vec![("Authorization", format!("Bearer {ADMIN_TOKEN}x"))],
        vec![],
    ] {
        let a = get(refused.clone()).await;
        assert_eq!(a.status, 401, "{refused:?}: {}", a.body);
    }
    for token in [ADMIN_TOKEN, "second-admin-token-rotated"] {
        let a = get(vec![("Authorization", format!("Bearer {token}"))]).await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["dead_letters"], serde_json::json!([]));
    }
    app.stop().await;
}

/// Failed admin authentication is rate limited per address (429 + `Retry-After`), then even
/// the right token is refused until the budget refills; each failure is logged without what
/// was presented. The real binary, so the log is its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_admin_authentication_is_rate_limited_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = signature_only_config(
        &dir.path().join("events.jsonl"),
        &format!("{{tokens: [\"{ADMIN_TOKEN}\"], failed_auth_per_minute: 3}}"),
    );
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    let client = reqwest::Client::new();
    let url = format!("{}/spool", bridge.admin_base());
    let with = |token: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move { answer(client.get(url).bearer_auth(token).send().await.unwrap()).await }
    };
    assert_eq!(
        with(ADMIN_TOKEN).await.status,
        404,
        "authenticated: no spool configured"
    );
    for _ in 0..3 {
        assert_eq!(with("guessed-token-1").await.status, 401);
    }
    let limited = with("guessed-token-1").await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    let retry: u64 = limited
        .retry_after
        .as_deref()
        .and_then(|r| r.parse().ok())
        .expect("Retry-After");
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(
        with(ADMIN_TOKEN).await.status,
        429,
        "the address is refused whatever it presents"
    );
    // The webhook listener is not affected.
    assert_eq!(
        answer(
            client
                .get(format!("{}/healthz", bridge.base()))
                .send()
                .await
                .unwrap()
        )
        .await
        .status,
        200
    );
    let (_, logs) = bridge.stop().await;
    assert_eq!(
        logs.matches("admin authentication failed").count(),
        4,
        "{logs}"
    );
    assert!(
        !logs.contains("guessed-token-1"),
        "a presented token is logged"
    );
    assert!(!logs.contains(ADMIN_TOKEN), "the admin token is logged");
}

/// A non-loopback admin listener without `admin.tokens` refuses to start (and `validate`
/// says why); the sample key of the sender's docs is never an admin token, nor is a webhook
/// credential.
#[test]
fn a_non_loopback_admin_listener_without_tokens_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    // The sample key guards a loopback webhook listener (allowed there, with a warning).
    let config = |admin_listen: &str, admin: &str| {
        format!(
            "server: {{listen: \"127.0.0.1:0\", admin_listen: \"{admin_listen}\"}}\n\
             auth: {{api_keys: {{keys: [sk_live_1234567890abcdef, a-webhook-key-also-admin]}}}}\n{admin}\
             sinks: [{{name: a, type: file, path: \"{}\"}}]\n",
            dir.path().join("e.jsonl").display()
        )
    };
    let run = |yaml: &str, cmd: &str| {
        std::fs::write(&cfg, yaml).unwrap();
        let out = bin().args([cmd, "--config"]).arg(&cfg).output().unwrap();
        (
            out.status.code(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let open = config("0.0.0.0:0", "");
    for cmd in ["validate", "serve"] {
        let (code, text) = run(&open, cmd);
        assert_eq!(code, Some(1), "{cmd}: {text}");
        assert!(
            text.contains("server.admin_listen") && text.contains("admin.tokens"),
            "{cmd}: {text}"
        );
    }
    let sample = config("0.0.0.0:0", "admin: {tokens: [sk_live_1234567890abcdef]}\n");
    let (code, text) = run(&sample, "validate");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("admin.tokens[0]") && text.contains("sample key"),
        "{text}"
    );
    let reused = config(
        "127.0.0.1:0",
        "admin: {tokens: [a-webhook-key-also-admin]}\n",
    );
    let (code, text) = run(&reused, "validate");
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("also a webhook credential"), "{text}");
    // Loopback without tokens: allowed, with a warning.
    let (code, text) = run(&config("127.0.0.1:0", ""), "validate");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("no admin tokens"), "{text}");
}

/// A bridge whose only required sink (Kafka, never reached) takes events up to 1000 bytes, so
/// every event is answered 413 and kept as a dead letter; `max_dead_letters` as given.
fn too_large_config(dir: &std::path::Path, max_dead_letters: u64) -> String {
    format!(
        "log: {{format: json}}\n\
         spool: {{path: \"{}\", max_dead_letters: {max_dead_letters}}}\n{}",
        dir.join("spool.redb").display(),
        config_with_sinks(
            "  - {name: small, type: kafka, brokers: \"127.0.0.1:9\", topic: calls, \
             librdkafka: {\"message.max.bytes\": 1000}}\n"
        )
    )
}

fn big_payload(call: &str) -> serde_json::Value {
    let mut p = status_payload(call, "completed");
    p["data"]["transcript"] = serde_json::Value::from("x".repeat(2000));
    p
}

/// Issue #28, item 6: one dead letter per sink per delivery (a resent body added copies), no
/// cap, no purge, every letter in one answer. Now: deduplicated by (sink, event id), counted
/// against `spool.max_dead_letters` (at the cap a new one is not kept and is counted as
/// discarded), listed page by page, purged with `callbridge dlq purge`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_deduplicated_capped_paginated_and_purged() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = too_large_config(dir.path(), 3);
    let cfg = dir.path().join("callbridge.yaml");
    std::fs::write(&cfg, &yaml).unwrap();
    let app = spawn(&yaml).await;
    let first = unique("dlq-dedup");
    for _ in 0..3 {
        let a = app.post(&big_payload(&first)).await;
        assert_eq!(a.status, 413, "{}", a.body);
    }
    let page = app.admin_get("/spool/dead").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        page.body["dead_letters"].as_array().unwrap().len(),
        1,
        "one per event and sink: {}",
        page.body
    );
    for n in 0..3 {
        let a = app.post(&big_payload(&unique(&format!("dlq-{n}")))).await;
        assert_eq!(a.status, 413, "{}", a.body);
    }
    // The cap (3): the fourth distinct event is not kept, and says so.
    let status = app.admin_get("/spool").await;
    let small = status.body["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["sink"] == "small")
        .cloned()
        .unwrap_or_else(|| panic!("{}", status.body));
    assert_eq!(
        (
            small["dead_letters"].as_u64(),
            small["dead_letters_discarded"].as_u64()
        ),
        (Some(3), Some(1)),
        "{small}"
    );
    assert!(app
        .metrics()
        .await
        .lines()
        .any(|l| l == "callbridge_spool_dead_letters_discarded{sink=\"small\"} 1"));

    // Pages of two.
    let p1 = app.admin_get("/spool/dead?limit=2").await;
    let next = p1.body["next"].as_str().expect("a next page").to_string();
    assert_eq!(p1.body["dead_letters"].as_array().unwrap().len(), 2);
    let p2 = app
        .admin_get(&format!("/spool/dead?limit=2&after={next}"))
        .await;
    assert_eq!(
        p2.body["dead_letters"].as_array().unwrap().len(),
        1,
        "{}",
        p2.body
    );
    assert!(p2.body["next"].is_null(), "{}", p2.body);
    let mut seen: Vec<String> = [&p1, &p2]
        .iter()
        .flat_map(|p| p.body["dead_letters"].as_array().unwrap().clone())
        .map(|d| d["event_id"].as_str().unwrap().to_string())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3, "no letter twice across pages");
    assert_eq!(app.admin_get("/spool/dead?limit=0").await.status, 400);
    assert_eq!(app.admin_get("/spool/dead?limit=1001").await.status, 400);
    assert_eq!(
        app.admin_get("/spool/dead?after=nonsense").await.status,
        400
    );
    assert_eq!(
        app.admin_get("/spool/dead?sink=other").await.body["dead_letters"],
        serde_json::json!([])
    );
    // Over HTTP too: a redrive or purge that matches nothing moves and removes nothing.
    let r = app.admin_post("/spool/redrive?sink=other").await;
    assert_eq!(
        (r.status, &r.body["redriven"]),
        (200, &serde_json::json!(0)),
        "{}",
        r.body
    );
    let r = app.admin_post("/spool/dead/purge?before_ms=1").await;
    assert_eq!(
        (r.status, &r.body["purged"]),
        (200, &serde_json::json!(0)),
        "{}",
        r.body
    );

    // Purge through the CLI (the token from the config): older than a day first (none), then
    // the sink's.
    let cli = |args: &[&str]| {
        let mut cmd = bin();
        cmd.arg("dlq")
            .args(args)
            .args(["--url", &app.admin, "--config"])
            .arg(&cfg);
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).to_string(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        }
    };
    let (code, out, err) = cli(&["purge"]).await;
    assert_eq!(code, Some(1), "nothing named: refused\n{out}{err}");
    let (code, out, err) = cli(&["purge", "--before", "1d"]).await;
    assert_eq!((code, out.trim()), (Some(0), "purged: 0"), "{err}");
    let (code, out, err) = cli(&["list"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("small ")).count(),
        3,
        "{out}"
    );
    let (code, out, err) = cli(&["purge", "--sink", "small"]).await;
    assert_eq!((code, out.trim()), (Some(0), "purged: 3"), "{err}");
    let status = app.admin_get("/spool").await;
    assert_eq!(
        status.body["sinks"][0]["dead_letters"], 0,
        "{}",
        status.body
    );
    // Room again: the next refused event is kept.
    assert_eq!(
        app.post(&big_payload(&unique("dlq-after"))).await.status,
        413
    );
    assert_eq!(
        app.admin_get("/spool/dead").await.body["dead_letters"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    app.stop().await;
}

/// The CLI finds the admin listener, sends `--token` / `CALLBRIDGE_ADMIN_TOKEN` as a bearer
/// token (the config it reads has no admin token here), and refuses to send a token over plain
/// http to an address that is not loopback — before connecting anywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_sends_its_token_and_never_over_plain_http_to_a_remote_address() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = too_large_config(dir.path(), 100);
    let app = spawn(&yaml).await;
    assert_eq!(
        app.post(&big_payload(&unique("cli-token"))).await.status,
        413
    );
    // The CLI's own config: the same, without the admin token.
    let cfg = dir.path().join("cli.yaml");
    std::fs::write(
        &cfg,
        yaml.replace(&format!("admin: {{tokens: [\"{ADMIN_TOKEN}\"]}}\n"), ""),
    )
    .unwrap();
    let run = |args: Vec<String>, env: Option<&'static str>| {
        let mut cmd = bin();
        cmd.args(["dlq", "list"])
            .args(args)
            .arg("--config")
            .arg(&cfg);
        cmd.env_remove("CALLBRIDGE_ADMIN_TOKEN");
        if let Some(t) = env {
            cmd.env("CALLBRIDGE_ADMIN_TOKEN", t);
        }
        async move {
            let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).to_string(),
                String::from_utf8_lossy(&out.stderr).to_string(),
            )
        }
    };
    let url = || vec!["--url".to_string(), app.admin.clone()];
    let (code, _, err) = run(url(), None).await;
    assert_eq!(code, Some(1), "no token: {err}");
    assert!(err.contains("401"), "{err}");
    let (code, out, err) = run(url(), Some(ADMIN_TOKEN)).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out.lines().filter(|l| l.starts_with("small ")).count(),
        1,
        "{out}"
    );
    let mut with_flag = url();
    with_flag.extend(["--token".to_string(), ADMIN_TOKEN.to_string()]);
    let (code, _, err) = run(with_flag, None).await;
    assert_eq!(code, Some(0), "{err}");

    // A remote address over plain http (TEST-NET-1: nothing answers there): refused at once
    // with the reason, not after a connection attempt.
    let started = std::time::Instant::now();
    let (code, _, err) = run(
        vec!["--url".into(), "http://192.0.2.10:9090".into()],
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("refusing to send the admin token over plain http to 192.0.2.10"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused before connecting"
    );
    app.stop().await;
}
