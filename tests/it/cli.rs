//! The binary: validate, send-test, schema, and a graceful SIGTERM with requests in flight.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::common::*;

/// Runs `callbridge validate` on `yaml` (written to a file) with `envs`.
fn validate(yaml: &str, envs: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("callbridge.yaml");
    std::fs::write(&cfg, yaml).unwrap();
    bin()
        .args(["validate", "--config"])
        .arg(&cfg)
        .envs(envs.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn validate_accepts_the_embedded_default_and_a_good_file() {
    let out = bin().arg("validate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("sample key"),
        "warns about the docs' key: {stderr}"
    );

    let out = validate(
        &config_with_sinks("  - {name: a, type: file, path: /tmp/x.jsonl}\n"),
        &[],
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
}

/// The docs' public sample key guards only a loopback listener: the embedded default on every
/// interface (as the container image runs it) refuses to start until a key is given, and a key
/// variable set but empty is an error, not a silent fallback to the sample key.
#[test]
fn the_sample_key_is_refused_off_loopback_and_an_empty_key_is_an_error() {
    let run = |cmd: &str, envs: &[(&str, &str)]| {
        let out = bin().arg(cmd).envs(envs.iter().copied()).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let everywhere = ("CALLBRIDGE_LISTEN", "0.0.0.0:0");
    for cmd in ["validate", "serve"] {
        let (code, stderr) = run(cmd, &[everywhere]);
        assert_eq!(code, Some(1), "{cmd}: {stderr}");
        assert!(
            stderr.contains("auth.api_keys.keys[0]")
                && stderr.contains("accepted only on a loopback listener")
                && stderr.contains("CALLBRIDGE_API_KEY"),
            "{cmd}: {stderr}"
        );
    }
    let (code, stderr) = run("validate", &[everywhere, ("CALLBRIDGE_API_KEY", "")]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("auth.api_keys.keys[0]") && stderr.contains("must not be empty"),
        "{stderr}"
    );
    let (code, stderr) = run(
        "validate",
        &[everywhere, ("CALLBRIDGE_API_KEY", "a-real-key")],
    );
    assert_eq!(code, Some(0), "{stderr}");
    assert!(!stderr.contains("sample key"), "{stderr}");
}

#[test]
fn validate_names_every_error_by_field_path() {
    let out = validate(
        r#"
server: {deadline_ms: 12000, listen: "nowhere"}
auth: {api_keys: {keys: []}}
sinks:
  - {name: a, type: file, path: /tmp/x, events: [call.everything]}
  - {name: a, type: file, path: /tmp/y}
"#,
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for path in [
        "server.deadline_ms:",
        "server.listen:",
        "auth.api_keys.keys:",
        "sinks[0] (a).events[0]:",
        "sinks[1] (a).name:",
    ] {
        assert!(stderr.contains(path), "{path} missing from:\n{stderr}");
    }

    // Shape errors: every section and every sink reports its own, with the nearest known key.
    let out = validate(
        "auth: {mode: none}\nserver: {listn: x}\nlog: {format: jsn}\nsinks:\n  - {name: a, type: file, path: /tmp/x}\n  - {name: b, type: file, pth: /tmp/y}\n  - {name: bus, type: kafak}\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in [
        "server.listn: unknown field `listn`",
        "(did you mean `listen`?)",
        "log.format: unknown variant `jsn`",
        "sinks[1] (b).pth: unknown field `pth`",
        "(did you mean `path`?)",
        "sinks[2] (bus).type: unknown variant `kafak`",
        "(did you mean `kafka`?)",
        "4 error(s)",
    ] {
        assert!(stderr.contains(line), "{line} missing from:\n{stderr}");
    }
}

/// The configuration example in the README is a real, valid configuration.
#[test]
fn the_readme_config_example_validates() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = &readme[readme.find("## Configure").expect("section")..];
    let start = section.find("```yaml\n").expect("yaml block") + "```yaml\n".len();
    let yaml = &section[start..start + section[start..].find("```").unwrap()];
    let out = validate(
        yaml,
        &[
            ("CALLBRIDGE_API_KEY", "k"),
            ("CALLBRIDGE_BEARER_TOKEN", "t"),
            ("KAFKA_BROKERS", "kafka:9092"),
            ("KAFKA_USER", "u"),
            ("KAFKA_PASSWORD", "p"),
            ("RABBITMQ_USER", "u"),
            ("RABBITMQ_PASSWORD", "p"),
        ],
    );
    assert!(
        out.status.success(),
        "README example: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn schema_prints_the_committed_schema() {
    let out = bin().arg("schema").output().unwrap();
    assert!(out.status.success());
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/schema/call-event.v1.json"),
    )
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), committed);
}

/// Runs `callbridge send-test` with `args`, off the async runtime (it blocks until answered).
async fn send_test(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || bin().arg("send-test").args(args).output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_test_posts_the_sample_payload_like_the_sender() {
    let (app, path, _dir) = spawn_archive().await;
    let url = format!("{}/callback", app.base);
    let out = send_test(&[
        "--url",
        &url,
        "--api-key",
        KEY,
        "--kind",
        "analysis",
        "--call-id",
        "st-1",
    ])
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("200 "));
    let lines = read_lines(&path);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["subject"], "st-1");
    assert_eq!(lines[0]["data"]["kind"], "analysis");

    let out = send_test(&["--url", &url, "--api-key", "wrong"]).await;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a refused post fails the command"
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("401 "));
    app.stop().await;
}

/// Every agent event kind, with a bearer token as subscriptions send it: each one normalised
/// into the event kind the docs give it; a wrong token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_test_sends_agent_events_with_a_bearer_token() {
    let (app, path, _dir) = spawn_archive().await;
    let url = format!("{}/callback", app.base);
    let kinds = [
        ("call-started", "started", None),
        ("call-completed", "status", Some("failed")),
        ("recording-completed", "recording", None),
        ("platform-analysis-completed", "analysis", None),
        ("client-analysis-completed", "analysis", None),
        ("all-processing-completed", "processed", Some("failed")),
    ];
    for (i, (kind, _, _)) in kinds.iter().enumerate() {
        let call_id = format!("st-agent-{i}");
        let out = send_test(&[
            "--url",
            &url,
            "--bearer",
            "test-token",
            "--kind",
            kind,
            "--status",
            "failed",
            "--call-id",
            &call_id,
        ])
        .await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.starts_with("200 "),
            "{kind}: {stdout}"
        );
    }
    let lines = read_lines(&path);
    assert_eq!(lines.len(), kinds.len());
    for (i, (kind, event_kind, status)) in kinds.iter().enumerate() {
        let line = &lines[i];
        assert_eq!(line["subject"], format!("st-agent-{i}"), "{kind}");
        assert_eq!(line["data"]["kind"], *event_kind, "{kind}: {line}");
        if let Some(status) = status {
            assert_eq!(line["data"]["status"], *status, "{kind}: {line}");
        }
    }
    let out = send_test(&["--url", &url, "--bearer", "wrong", "--kind", "call-started"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("401 "));
    app.stop().await;
}

/// SIGTERM while requests are in flight: every one is answered 200, the events are on disk,
/// and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_in_flight_requests_finish() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let yaml = format!(
        "log: {{format: json}}\n{}",
        config_with_sinks(&format!(
            "  - {{name: slow, type: null, latency_ms: 1500}}\n{}",
            file_sink("archive", &path, "")
        ))
    );
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    let base = bridge.base();
    let client = reqwest::Client::new();

    let posts: Vec<_> = (0..4)
        .map(|i| {
            let client = client.clone();
            let url = format!("{base}/callback");
            tokio::spawn(async move {
                let resp = client
                    .post(url)
                    .header("X-API-Key", KEY)
                    .body(status_payload(&format!("sigterm-{i}"), "completed").to_string())
                    .send()
                    .await
                    .unwrap();
                resp.status().as_u16()
            })
        })
        .collect();
    eventually(Duration::from_secs(10), "4 requests in flight", || {
        let client = client.clone();
        let base = base.clone();
        async move {
            let m = client
                .get(format!("{base}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            // the /metrics request itself is in flight too
            m.lines()
                .any(|l| l == "callbridge_http_requests_in_flight 5")
                .then_some(())
        }
    })
    .await;
    bridge.terminate();
    for p in posts {
        assert_eq!(p.await.unwrap(), 200, "in-flight request answered 200");
    }
    let (status, _) = bridge.wait().await;
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(read_lines(&path).len(), 4);
}
