//! The durable spool (`on_unavailable: spool`) against the machine's NATS JetStream, reached
//! through a cuttable proxy: an outage is answered 200 `spooled`, and every spooled event reaches
//! the stream once the sink recovers, in order per call, with the event ids the answers gave —
//! also after the bridge was SIGKILLed while holding them.

use std::time::Duration;

use crate::common::*;
use crate::nats::{bus_via, hdr, js, proxied_stream, read_stream, stored};

/// A config with one JetStream sink `bus` through `url` that spools, and the spool at `spool`.
fn spooling_config(
    url: &str,
    prefix: &str,
    stream: &str,
    spool: &std::path::Path,
    extra: &str,
) -> String {
    let sink = bus_via(
        url,
        &format!("{prefix}.{{kind}}.{{call_id}}"),
        stream,
        &format!("    timeout_ms: 1500\n    on_unavailable: spool\n{extra}"),
    );
    format!(
        "spool: {{path: \"{}\", max_bytes: 200000}}\n{}",
        spool.display(),
        config_with_sinks(&sink)
    )
}

/// The Nats-Msg-Id (= event id) of every message in the stream, in stream order.
async fn ids_in_stream(stream: &str, n: usize) -> Vec<String> {
    read_stream(&js().await, stream, n)
        .await
        .iter()
        .map(|m| hdr(m.headers.as_ref().expect("headers"), "Nats-Msg-Id").expect("msg id"))
        .collect()
}

async fn spool_bytes(app: &TestApp) -> Option<u64> {
    app.metrics().await.lines().find_map(|l| {
        l.strip_prefix("callbridge_spool_bytes ")
            .and_then(|v| v.parse().ok())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_answered_200_spooled_and_replayed_in_order_per_call() {
    let js = js().await;
    let (stream, prefix, proxy, url) = proxied_stream(&js, "spool").await;
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(&spooling_config(
        &url,
        &prefix,
        &stream,
        &dir.path().join("spool.redb"),
        "",
    ))
    .await;
    assert!(app.is_ready().await);

    proxy.cut();
    app.await_connected("bus", false).await;
    let (a, b) = (unique("spool-a"), unique("spool-b"));
    let mut ids = Vec::new();
    for (call, status) in [
        (&a, "registered"),
        (&b, "registered"),
        (&a, "ongoing"),
        (&a, "completed"),
        (&b, "failed"),
    ] {
        let (r, took) = app.post_timed(&status_payload(call, status)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let bus = &r.body["sinks"]["bus"];
        assert_eq!(
            (bus["ok"].as_bool(), bus["spooled"].as_bool()),
            (Some(true), Some(true)),
            "{}",
            r.body
        );
        assert!(
            took < Duration::from_secs(3),
            "answered within the deadline: {took:?}"
        );
        ids.push(r.event_id().to_string());
    }
    assert_eq!(
        stored(&js, &stream).await,
        0,
        "nothing reached the broker during the outage"
    );
    assert!(spool_bytes(&app).await.unwrap_or(0) > 0);
    let m = app.metrics().await;
    assert!(
        m.contains(r#"callbridge_sink_publish_total{outcome="spooled",sink="bus"} 5"#),
        "{m}"
    );
    assert!(m.contains(r#"callbridge_spool_depth{sink="bus"} 5"#), "{m}");

    proxy.restore();
    let app_ref = &app;
    eventually(
        Duration::from_secs(20),
        "the spool to drain",
        || async move { (spool_bytes(app_ref).await == Some(0)).then_some(()) },
    )
    .await;
    // Replayed oldest first: every call's statuses in the order they were answered.
    assert_eq!(ids_in_stream(&stream, 5).await, ids);

    // Drained: the next event is published directly, with a receipt.
    let r = app.post(&status_payload(&a, "completed")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body["sinks"]["bus"].get("spooled").is_none(),
        "{}",
        r.body
    );
    assert_eq!(
        r.body["sinks"]["bus"]["duplicate"], true,
        "the spooled copy's receipt: {}",
        r.body
    );
    app.stop().await;
    js.delete_stream(&stream).await.unwrap();
}

/// Readiness means "can answer 200 now": a required sink that spools, whose broker is down,
/// keeps the pod ready (in the Service) while the spool takes its events, so webhooks still
/// reach it and are answered 200 `spooled`; `/readyz` says why per sink.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spooling_sink_whose_broker_is_down_keeps_the_pod_ready() {
    let js = js().await;
    let (stream, prefix, proxy, url) = proxied_stream(&js, "spoolready").await;
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(&spooling_config(
        &url,
        &prefix,
        &stream,
        &dir.path().join("spool.redb"),
        "",
    ))
    .await;
    app.await_ready(true).await;
    let r = app.get("/readyz").await;
    assert_eq!(r.body["sinks"]["bus"]["reason"], "connected", "{}", r.body);

    proxy.cut();
    app.await_connected("bus", false).await;
    let r = app.get("/readyz").await;
    assert_eq!(
        r.status, 200,
        "ready while the spool takes events: {}",
        r.body
    );
    let bus = &r.body["sinks"]["bus"];
    assert_eq!(
        (
            bus["ready"].as_bool(),
            bus["connected"].as_bool(),
            bus["reason"].as_str()
        ),
        (Some(true), Some(false), Some("spooling")),
        "{}",
        r.body
    );
    let a = app
        .post(&status_payload(&unique("ready"), "completed"))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["sinks"]["bus"]["spooled"], true, "{}", a.body);
    assert!(app.is_ready().await, "still ready with an event spooled");

    proxy.restore();
    let js_ref = &js;
    let stream_ref = &stream;
    eventually(
        Duration::from_secs(20),
        "the spooled event in the stream",
        || async move { (stored(js_ref, stream_ref).await == 1).then_some(()) },
    )
    .await;
    assert_eq!(
        ids_in_stream(&stream, 1).await,
        vec![a.event_id().to_string()]
    );
    app.stop().await;
    js.delete_stream(&stream).await.unwrap();
}

/// `max_bytes` bounds the spool: once full, a spooling sink fails like `on_unavailable: fail`
/// (503, saying why), and what was spooled before is still delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_is_a_503_never_a_silent_drop() {
    let js = js().await;
    let (stream, prefix, proxy, url) = proxied_stream(&js, "spoolfull").await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = spooling_config(&url, &prefix, &stream, &dir.path().join("spool.redb"), "")
        .replace("max_bytes: 200000", "max_bytes: 6000");
    let app = spawn(&yaml).await;
    proxy.cut();
    app.await_connected("bus", false).await;
    let mut spooled = 0;
    let mut refused = None;
    for i in 0..20 {
        let r = app
            .post(&status_payload(&unique(&format!("full{i}")), "completed"))
            .await;
        if r.status == 200 {
            assert_eq!(r.body["sinks"]["bus"]["spooled"], true, "{}", r.body);
            spooled += 1;
        } else {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("the spool fills up");
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(
        r.body["sinks"]["bus"]["error"]["code"], "spool_failed",
        "{}",
        r.body
    );
    assert!(spooled >= 1, "some fit before it was full");
    // The next event would be refused too: the pod leaves the Service, and says why.
    let r = app.get("/readyz").await;
    assert_eq!(r.status, 503, "{}", r.body);
    let bus = &r.body["sinks"]["bus"];
    assert_eq!(
        (
            bus["ready"].as_bool(),
            bus["connected"].as_bool(),
            bus["reason"].as_str()
        ),
        (Some(false), Some(false), Some("spool_full")),
        "{}",
        r.body
    );
    assert!(
        bus["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("of 6000 bytes"),
        "{}",
        r.body
    );
    proxy.restore();
    let js_ref = &js;
    let stream_ref = &stream;
    eventually(
        Duration::from_secs(20),
        "every spooled event in the stream",
        || async move { (stored(js_ref, stream_ref).await == spooled).then_some(()) },
    )
    .await;
    // Drained and connected: ready again.
    app.await_ready(true).await;
    app.stop().await;
    js.delete_stream(&stream).await.unwrap();
}

/// SIGKILL while events wait in the spool: the next start finds them and delivers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spooled_events_survive_sigkill_and_a_damaged_tail_and_are_delivered_after_restart() {
    let js = js().await;
    let (stream, prefix, proxy, url) = proxied_stream(&js, "spoolkill").await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "log: {{format: json}}\n{}",
        spooling_config(&url, &prefix, &stream, &dir.path().join("spool.redb"), "")
    );
    proxy.cut();
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    let client = reqwest::Client::new();
    let call = unique("kill");
    let mut ids = Vec::new();
    for status in ["registered", "ongoing", "completed"] {
        let r = client
            .post(format!("{}/callback", bridge.base()))
            .header("X-API-Key", KEY)
            .body(status_payload(&call, status).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["sinks"]["bus"]["spooled"], true, "{body}");
        ids.push(body["event_id"].as_str().unwrap().to_string());
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(bridge.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let (status, _) = bridge.wait().await;
    assert!(!status.success(), "killed");
    assert_eq!(stored(&js, &stream).await, 0);
    // With no bridge running, `spool status` reads the file itself.
    let cfg = dir.path().join("callbridge.yaml");
    let out = bin()
        .args(["spool", "status", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("bus "))
        .unwrap_or_else(|| panic!("no row for bus: {text}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        (row[1], row[4]),
        ("3", "0"),
        "3 waiting, no dead letter: {text}"
    );

    // The file then grows by bytes that are no pages (as a filesystem that extended it but
    // never wrote the data leaves it): the restart cuts that tail and keeps every entry.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("spool.redb"))
            .unwrap();
        f.write_all(&[0xAB; 5000]).unwrap();
    }
    proxy.restore();
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    let js_ref = &js;
    let stream_ref = &stream;
    eventually(
        Duration::from_secs(20),
        "the spooled events after the restart",
        || async move { (stored(js_ref, stream_ref).await == 3).then_some(()) },
    )
    .await;
    assert_eq!(ids_in_stream(&stream, 3).await, ids, "in order, same ids");
    // While the bridge runs, `spool status` asks it (the file is the bridge's).
    let base = bridge.base();
    let cfg2 = cfg.clone();
    eventually(Duration::from_secs(10), "the spool to report empty", || {
        let (base, cfg) = (base.clone(), cfg2.clone());
        async move {
            let out = tokio::task::spawn_blocking(move || {
                bin()
                    .args(["spool", "status", "--url", &base, "--config"])
                    .arg(&cfg)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap();
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            (out.status.success()
                && text
                    .lines()
                    .any(|l| l.split_whitespace().take(2).eq(["bus", "0"])))
            .then_some(())
        }
    })
    .await;
    let (_, logs) = bridge.stop().await;
    assert!(logs.contains("spool open"), "{logs}");
    assert!(logs.contains("damaged tail was cut"), "{logs}");
    let kept = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("spool.redb.damaged-")
        })
        .count();
    assert_eq!(kept, 1, "the damaged file is kept for the operator");
    js.delete_stream(&stream).await.unwrap();
}

/// `callbridge replay --from FILE --to SINK` backfills a broker from the file sink's archive:
/// every event in file order with its own id; replaying again stores nothing twice (JetStream
/// drops the ids it holds); an unknown sink name is refused with the known ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_backfills_a_sink_from_the_file_archive_in_order() {
    let js = js().await;
    let (stream, prefix) = crate::nats::names("replay");
    crate::nats::stream_for(&js, &stream, &format!("{prefix}.>")).await;
    let (app, archive, dir) = spawn_archive().await;
    let mut ids = Vec::new();
    let (a, b) = (unique("replay-a"), unique("replay-b"));
    for (call, status) in [(&a, "registered"), (&b, "ongoing"), (&a, "completed")] {
        let r = app.post(&status_payload(call, status)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        ids.push(r.event_id().to_string());
    }
    app.stop().await;

    let cfg = dir.path().join("replay.yaml");
    std::fs::write(
        &cfg,
        config_with_sinks(&bus_via(
            crate::nats::NATS_URL,
            &format!("{prefix}.{{kind}}.{{call_id}}"),
            &stream,
            "",
        )),
    )
    .unwrap();
    let run = |to: &str| {
        let mut cmd = bin();
        cmd.args(["replay", "--from"])
            .arg(&archive)
            .args(["--to", to, "--config"])
            .arg(&cfg);
        async move {
            tokio::task::spawn_blocking(move || cmd.output().unwrap())
                .await
                .unwrap()
        }
    };
    for round in 0..2 {
        let out = run("bus").await;
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("read 3, published 3, skipped 0 (events filter), failed 0"),
            "round {round}: {stdout}"
        );
        assert_eq!(
            ids_in_stream(&stream, 3).await,
            ids,
            "round {round}: once each, in file order"
        );
    }
    let out = run("nosuch").await;
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no sink named") && stderr.contains("bus"),
        "{stderr}"
    );
    js.delete_stream(&stream).await.unwrap();
}

/// SIGKILL in the middle of a burst of concurrent webhooks being spooled: after the restart,
/// every event that was answered 200 reaches the stream (a request cut off by the kill was
/// never answered, so the sender retries it; whether it is there does not matter).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_burst_loses_no_event_that_was_answered_200() {
    let js = js().await;
    let (stream, prefix, proxy, url) = proxied_stream(&js, "spoolburst").await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "log: {{format: json}}\n{}",
        spooling_config(&url, &prefix, &stream, &dir.path().join("spool.redb"), "")
            .replace("max_bytes: 200000", "max_bytes: 50000000")
    );
    proxy.cut();
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    let answered = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let client = reqwest::Client::new();
    let url_post = format!("{}/callback", bridge.base());
    let workers: Vec<_> = (0..16)
        .map(|w| {
            let (client, url_post, answered) = (client.clone(), url_post.clone(), answered.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let body = status_payload(&format!("burst-{w}-{i}"), "completed").to_string();
                    let Ok(r) = client
                        .post(&url_post)
                        .header("X-API-Key", KEY)
                        .body(body)
                        .send()
                        .await
                    else {
                        return;
                    };
                    if r.status().as_u16() != 200 {
                        continue;
                    }
                    let Ok(v) = r.json::<serde_json::Value>().await else {
                        return;
                    };
                    if v["sinks"]["bus"]["spooled"] == true {
                        if let Some(id) = v["event_id"].as_str() {
                            answered.lock().unwrap().push(id.to_string());
                        }
                    }
                }
            })
        })
        .collect();
    // Kill once a good number were answered, with the others in flight.
    let a = answered.clone();
    eventually(Duration::from_secs(30), "200 answers", || {
        let a = a.clone();
        async move { (a.lock().unwrap().len() >= 200).then_some(()) }
    })
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(bridge.pid() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let _ = bridge.wait().await;
    for w in workers {
        let _ = w.await;
    }
    let answered: std::collections::HashSet<String> =
        answered.lock().unwrap().iter().cloned().collect();

    proxy.restore();
    let bridge = Bridge::start(dir.path(), &yaml, &[]);
    // Drained: every committed entry (answered, or cut off by the kill before its answer) is in
    // the stream, so its count is final before the stream is read.
    let spool_url = format!("{}/spool", bridge.base());
    let client_ref = &client;
    eventually(Duration::from_secs(60), "the spool to drain", || {
        let spool_url = spool_url.clone();
        async move {
            let v: serde_json::Value = client_ref
                .get(&spool_url)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let sinks = v["sinks"].as_array()?;
            (!sinks.is_empty() && sinks.iter().all(|q| q["depth"] == 0)).then_some(())
        }
    })
    .await;
    let total = stored(&js, &stream).await as usize;
    assert!(
        total >= answered.len(),
        "{total} stored for {} answered",
        answered.len()
    );
    let in_stream: std::collections::HashSet<String> =
        ids_in_stream(&stream, total).await.into_iter().collect();
    let missing: Vec<&String> = answered.difference(&in_stream).collect();
    assert!(
        missing.is_empty(),
        "{} of {} answered 200 are missing: {missing:?}",
        missing.len(),
        answered.len()
    );
    bridge.stop().await;
    js.delete_stream(&stream).await.unwrap();
}

/// A full disk under the spool: the append that hits `ENOSPC` fails (the event is not taken,
/// so it is answered 503), and once the disk has room again the spool works again without a
/// restart. redb refuses every operation after one I/O error until the database is reopened;
/// before the spool reopened it, one full disk left appends failing and delivered entries
/// never removed (the replayer stuck on its queue's head) until a restart — found by
/// `scripts/chaos` (`disk-full`, docs/reliability.md). The disk is a 2 MiB tmpfs of the test's
/// own: mounting it needs root, as scripts/test runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_appends_and_the_spool_works_again_once_there_is_room() {
    use callbridge::config::SpoolSettings;
    use callbridge::sinks::Outgoing;
    use callbridge::spool::Spool;

    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("disk"));

    let spool = Spool::open(&SpoolSettings {
        path: disk.0.join("spool.redb"),
        max_bytes: 1 << 30,
    })
    .expect("spool opens");
    let event = |call: &str| {
        let e = callbridge::event::normalize(
            &status_payload(call, "completed"),
            Default::default(),
            &Default::default(),
            "2026-01-01T00:00:00Z".into(),
        )
        .expect("valid payload");
        Outgoing::new(e)
    };
    spool
        .append("bus", &event(&unique("disk")))
        .await
        .expect("an append with room");

    let filler = disk.fill();
    // The database file may still have free pages: append until one needs the disk.
    let mut refused = None;
    for _ in 0..500 {
        if let Err(e) = spool.append("bus", &event(&unique("disk"))).await {
            refused = Some(callbridge::sinks::error_chain(&e));
            break;
        }
    }
    let refused = refused.expect("an append on a full disk fails");
    assert!(refused.contains("No space left"), "{refused}");
    // Readiness asks the spool: it cannot write, so a pod spooling into it is not ready.
    match spool.health().await {
        callbridge::spool::SpoolHealth::Unwritable { error } => {
            assert!(error.contains("No space left"), "{error}")
        }
        other => panic!("a full disk reads as {other:?}"),
    }

    std::fs::remove_file(&filler).unwrap();
    assert!(
        matches!(
            spool.health().await,
            callbridge::spool::SpoolHealth::Writable { .. }
        ),
        "writable again once the disk has room"
    );
    spool
        .append("bus", &event(&unique("disk")))
        .await
        .expect("an append once the disk has room again, without a restart");
    while let Some(entry) = spool.oldest("bus").await.expect("read the queue") {
        spool
            .remove("bus", &entry)
            .await
            .expect("a delivered entry is removed");
    }
    assert_eq!(spool.bytes(), 0, "every entry removed");
}

/// A 2 MiB tmpfs of the test's own, unmounted when dropped (mounting needs root, as
/// scripts/test runs).
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(at: &std::path::Path) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let mounted = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            mounted,
            "mount -t tmpfs needs root (scripts/test runs as root)"
        );
        Tmpfs(at.to_path_buf())
    }

    /// Fills the file system with a file; returns it (remove it to make room again).
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while f.write(&chunk).is_ok_and(|n| n > 0) {}
        while f.write(&chunk[..512]).is_ok_and(|n| n > 0) {}
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A spool that cannot write (its disk full) while the broker is down: the pod is unready and
/// says why, and ready again once the disk has room — without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spool_that_cannot_write_makes_the_pod_unready_until_it_can() {
    let js = js().await;
    let (stream, prefix, proxy, url) = proxied_stream(&js, "spooldisk").await;
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("disk"));
    let app = spawn(&spooling_config(
        &url,
        &prefix,
        &stream,
        &disk.0.join("spool.redb"),
        "",
    ))
    .await;
    proxy.cut();
    app.await_connected("bus", false).await;
    assert!(app.is_ready().await, "the spool has room");

    let filler = disk.fill();
    let r = app.get("/readyz").await;
    assert_eq!(r.status, 503, "{}", r.body);
    let bus = &r.body["sinks"]["bus"];
    assert_eq!(bus["reason"], "spool_unwritable", "{}", r.body);
    assert!(
        bus["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("No space left"),
        "{}",
        r.body
    );
    let a = app
        .post(&status_payload(&unique("disk"), "completed"))
        .await;
    assert_eq!(a.status, 503, "not spooled, so not 200: {}", a.body);

    std::fs::remove_file(&filler).unwrap();
    let r = app.get("/readyz").await;
    assert_eq!(r.status, 200, "room again: {}", r.body);
    assert_eq!(r.body["sinks"]["bus"]["reason"], "spooling", "{}", r.body);
    app.stop().await;
    js.delete_stream(&stream).await.unwrap();
}
