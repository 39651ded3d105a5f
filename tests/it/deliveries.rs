//! The delivery index and its audit against real brokers: every answer on record with its
//! receipts, the lookup and the CLI, and the audit reading each 200's copies back — after
//! deleting a Kafka record range and a JetStream message behind the bridge's back it reports
//! exactly those events missing, by id, and nothing else.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

use crate::common::*;

/// `config` with the given `audit` and `deliveries` sections in front.
fn with_sections(sections: &str, config: &str) -> String {
    format!("{sections}\n{config}")
}

/// The audit's report since an hour ago, per sink name.
async fn audit_of(app: &TestApp, sink: &str) -> Value {
    let r = app.admin_get("/deliveries/audit?since=1h").await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["sinks"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["sink"] == sink).cloned())
        .unwrap_or(Value::Null)
}

/// Waits until the audit has judged `n` copies at `sink`, and returns its report.
async fn audited(app: &TestApp, sink: &str, n: u64) -> Value {
    eventually(Duration::from_secs(30), "the audit's verdicts", || async {
        let a = audit_of(app, sink).await;
        let judged = ["verified", "missing", "unverifiable"]
            .iter()
            .map(|k| a[*k].as_u64().unwrap_or(0))
            .sum::<u64>();
        (judged >= n).then_some(a)
    })
    .await
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_on_record_and_found_by_call_event_sink_and_outcome() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    let config = with_sections(
        "audit: {delay_secs: 0}",
        &config_with_sinks(&file_sink("archive", &path, "")),
    );
    let app = spawn(&config).await;
    let call = unique("deliveries");
    let mut ids = Vec::new();
    for status in ["registered", "ongoing", "completed"] {
        let r = app.post(&status_payload(&call, status)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        ids.push(r.event_id().to_string());
    }
    // The sender retries the last one: the same record, a second answer.
    let again = app.post(&status_payload(&call, "completed")).await;
    assert_eq!(again.event_id(), ids[2]);

    let r = app.admin_get(&format!("/deliveries?call_id={call}")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let records = r.body["deliveries"].as_array().cloned().unwrap_or_default();
    let got: Vec<&str> = records
        .iter()
        .filter_map(|d| d["event_id"].as_str())
        .collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());
    let last = &records[2];
    assert_eq!(last["call_id"], call.as_str());
    assert_eq!(last["kind"], "status");
    assert_eq!(last["status"], "completed");
    assert_eq!(last["answer"], "accepted");
    let answers: Vec<u64> = last["attempts"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x["http_status"].as_u64()).collect())
        .unwrap_or_default();
    assert_eq!(answers, [200, 200]);
    let archive = &last["sinks"][0];
    assert_eq!(archive["sink"], "archive");
    assert_eq!(
        archive["outcome"], "acked",
        "the acknowledgement, not the retry's duplicate"
    );
    assert_eq!(
        archive["receipt"]["path"],
        path.display().to_string().as_str()
    );
    assert!(archive["receipt"]["offset"].as_u64().is_some(), "{archive}");

    // By event id; by sink and outcome since a time; pages with their cursor.
    let r = app
        .admin_get(&format!("/deliveries?event_id={}", ids[1]))
        .await;
    assert_eq!(r.body["deliveries"][0]["status"], "ongoing");
    assert_eq!(r.body["deliveries"].as_array().map(Vec::len), Some(1));
    let r = app
        .admin_get(&format!(
            "/deliveries?call_id={call}&sink=archive&outcome=acked&since=1h&limit=2"
        ))
        .await;
    assert_eq!(
        r.body["deliveries"].as_array().map(Vec::len),
        Some(2),
        "{}",
        r.body
    );
    let next = r.body["next"].as_u64().expect("a next page");
    let r = app
        .admin_get(&format!(
            "/deliveries?call_id={call}&sink=archive&outcome=acked&limit=2&after={next}"
        ))
        .await;
    assert_eq!(r.body["deliveries"][0]["event_id"], ids[2].as_str());
    assert!(r.body.get("next").is_none(), "{}", r.body);
    let r = app
        .admin_get(&format!(
            "/deliveries?call_id={call}&sink=archive&outcome=failed"
        ))
        .await;
    assert_eq!(
        r.body["deliveries"].as_array().map(Vec::len),
        Some(0),
        "{}",
        r.body
    );

    // Bad parameters are a 400 that says which; no credential, a 401.
    for (q, says) in [
        ("callid=x", "unknown parameter"),
        ("outcome=lost", "outcome"),
        ("limit=0", "limit"),
        ("since=soon", "since"),
    ] {
        let r = app.admin_get(&format!("/deliveries?{q}")).await;
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert!(
            r.body["error"].as_str().is_some_and(|e| e.contains(says)),
            "{q}: {}",
            r.body
        );
    }
    // Operator routes: not on the webhook listener; on the admin listener only with its token.
    assert_eq!(app.get("/deliveries").await.status, 404);
    for path in ["/deliveries", "/deliveries/audit"] {
        let status = reqwest::Client::new()
            .get(format!("{}{path}", app.admin))
            .bearer_auth("test-token")
            .send()
            .await
            .expect("request sent")
            .status();
        assert_eq!(status, 401, "{path} with a webhook token");
    }

    // The file's lines read back at their offsets: verified, none missing.
    let a = audited(&app, "archive", 3).await;
    assert_eq!(
        (
            a["answered"].as_u64(),
            a["verified"].as_u64(),
            a["missing"].as_u64()
        ),
        (Some(3), Some(3), Some(0)),
        "{a}"
    );
    let m = app.metrics().await;
    assert!(
        m.contains(r#"callbridge_audit_verified_total{sink="archive"} 3"#),
        "{m}"
    );
    assert!(!m.contains("callbridge_audit_missing_total{"), "{m}");
    assert!(
        m.contains("callbridge_audit_oldest_unaudited_seconds"),
        "{m}"
    );
    assert!(m.contains("callbridge_deliveries_events"), "{m}");

    // The CLI prints the call's timeline from the running bridge.
    let out = bin()
        .args([
            "deliveries",
            &call,
            "--url",
            &app.admin,
            "--token",
            ADMIN_TOKEN,
        ])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.starts_with(&format!("call {call}: 3 event(s)\n")),
        "{text}"
    );
    for id in &ids {
        assert!(text.contains(&format!("event {id}")), "{text}");
    }
    assert!(text.contains("answered: 200 at"), "{text}");
    assert!(text.contains("audit: verified"), "{text}");
    let out = bin()
        .args([
            "audit",
            "--since",
            "1h",
            "--url",
            &app.admin,
            "--token",
            ADMIN_TOKEN,
        ])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "no missing copy: exit 0; {text}");
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("archive"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(row, ["archive", "3", "3", "0", "0", "0"], "{text}");
    let out = bin()
        .args(["deliveries", &call, "--url", &app.admin, "--token", "wrong"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    app.stop().await;
}

#[tokio::test]
async fn with_the_audit_off_nothing_is_read_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    let config = with_sections(
        "audit: {enabled: false}",
        &config_with_sinks(&file_sink("archive", &path, "")),
    );
    let app = spawn(&config).await;
    let r = app.post(&status_payload(&unique("off"), "completed")).await;
    assert_eq!(r.status, 200);
    let a = audit_of(&app, "archive").await;
    assert_eq!(
        (a["answered"].as_u64(), a["unaudited"].as_u64()),
        (Some(1), Some(1)),
        "{a}"
    );
    app.stop().await;
}

#[tokio::test]
async fn with_the_index_off_nothing_is_kept_and_the_lookup_answers_404() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    let config = with_sections(
        "deliveries: {enabled: false}",
        &config_with_sinks(&file_sink("archive", &path, "")),
    );
    let app = spawn(&config).await;
    let r = app
        .post(&status_payload(&unique("idx-off"), "completed"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        std::fs::read_to_string(&path)
            .expect("the file sink wrote")
            .contains(r.event_id()),
        "the event is delivered as ever"
    );
    for route in ["/deliveries", "/deliveries/audit"] {
        let l = app.admin_get(route).await;
        assert_eq!(l.status, 404, "{route}: {}", l.body);
    }
    let m = app.metrics().await;
    assert!(!m.contains("callbridge_deliveries_events"), "no index: {m}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_index_outlives_a_restart_in_the_spools_database() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    let config = format!(
        "spool: {{path: \"{}\"}}\n{}",
        dir.path().join("spool.redb").display(),
        with_sections(
            "audit: {delay_secs: 0}",
            &config_with_sinks(&file_sink("archive", &path, ""))
        )
    );
    let call = unique("restart");
    // The first bridge on a runtime of its own: dropping it ends the spool's replayers, which
    // hold the spool's file, as a process exit does.
    let id = {
        let (config, call) = (config.clone(), call.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async {
                let app = spawn(&config).await;
                let r = app.post(&status_payload(&call, "completed")).await;
                assert_eq!(r.status, 200);
                audited(&app, "archive", 1).await;
                app.stop().await;
                r.event_id().to_string()
            })
        })
        .join()
        .expect("the first bridge ran")
    };

    let app = spawn(&config).await;
    let r = app.admin_get(&format!("/deliveries?call_id={call}")).await;
    assert_eq!(
        r.body["deliveries"][0]["event_id"],
        id.as_str(),
        "{}",
        r.body
    );
    assert_eq!(
        r.body["deliveries"][0]["sinks"][0]["audit"]["verdict"], "verified",
        "{}",
        r.body
    );
    app.stop().await;
}

/// Deletes every record of partition 0 of `topic` before `before`.
async fn delete_records(brokers: &str, topic: &str, before: i64) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(before))
        .expect("offset");
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let done = admin
        .delete_records(&tpl, &opts)
        .await
        .expect("delete records");
    for e in done.elements() {
        assert!(e.error().is_ok(), "delete records: {:?}", e.error());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_finds_exactly_the_deleted_kafka_records_missing() {
    let brokers = crate::kafka::broker().await;
    let topic = unique("cb-audit");
    crate::kafka::create_topics(brokers, &[&topic], 1).await;
    let sink = format!(
        "  - {{name: events, type: kafka, brokers: \"{brokers}\", topic: {topic}, timeout_ms: 2500}}\n"
    );
    let app = spawn(&with_sections(
        "audit: {delay_secs: 5}",
        &config_with_sinks(&sink),
    ))
    .await;
    let call = unique("audit-kafka");
    let mut ids = Vec::new();
    for status in [
        "registered",
        "ongoing",
        "completed",
        "failed",
        "retry",
        "error",
    ] {
        let r = app.post(&status_payload(&call, status)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.body["sinks"]["events"]["receipt"]["offset"].as_u64(),
            Some(ids.len() as u64)
        );
        ids.push(r.event_id().to_string());
        if ids.len() == 3 {
            // After their 200s, behind the bridge's back: the first three records go.
            delete_records(brokers, &topic, 3).await;
            let a = audit_of(&app, "events").await;
            assert_eq!(
                a["unaudited"].as_u64(),
                Some(3),
                "deleted before the audit: {a}"
            );
        }
    }

    let a = audited(&app, "events", 6).await;
    assert_eq!(
        strings(&a["missing_ids"]),
        ids[..3],
        "exactly the deleted ones, by id: {a}"
    );
    assert_eq!(
        (
            a["verified"].as_u64(),
            a["missing"].as_u64(),
            a["unverifiable"].as_u64()
        ),
        (Some(3), Some(3), Some(0)),
        "{a}"
    );
    let r = app
        .admin_get(&format!(
            "/deliveries?call_id={call}&sink=events&outcome=missing"
        ))
        .await;
    let missing: Vec<&str> = r.body["deliveries"]
        .as_array()
        .map(|d| d.iter().filter_map(|x| x["event_id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        missing,
        ids[..3].iter().map(String::as_str).collect::<Vec<_>>()
    );
    let detail = r.body["deliveries"][0]["sinks"][0]["audit"]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(detail.contains("starts at offset 3"), "{detail}");
    let m = app.metrics().await;
    assert!(
        m.contains(r#"callbridge_audit_missing_total{sink="events"} 3"#),
        "{m}"
    );
    assert!(
        m.contains(r#"callbridge_audit_verified_total{sink="events"} 3"#),
        "{m}"
    );
    let out = bin()
        .args([
            "audit",
            "--since",
            "1h",
            "--url",
            &app.admin,
            "--token",
            ADMIN_TOKEN,
        ])
        .output()
        .expect("runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "a missing copy: exit 1; {text}");
    assert!(
        text.contains(&format!(
            "missing at events: {} {} {}",
            ids[0], ids[1], ids[2]
        )),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_finds_exactly_the_purged_jetstream_message_missing() {
    let js = crate::nats::js().await;
    let (stream, prefix) = crate::nats::names("audit");
    crate::nats::stream_for(&js, &stream, &format!("{prefix}.>")).await;
    let sink = crate::nats::bus_via(
        crate::nats::NATS_URL,
        &format!("{prefix}.{{kind}}.{{call_id}}"),
        &stream,
        "    timeout_ms: 2000\n",
    );
    let app = spawn(&with_sections(
        "audit: {delay_secs: 5}",
        &config_with_sinks(&sink),
    ))
    .await;
    let call = unique("audit-js");
    let mut ids = Vec::new();
    let mut seqs = Vec::new();
    for status in ["registered", "ongoing", "completed", "failed"] {
        let r = app.post(&status_payload(&call, status)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        ids.push(r.event_id().to_string());
        seqs.push(
            r.body["sinks"]["bus"]["receipt"]["sequence"]
                .as_u64()
                .expect("a sequence"),
        );
        if ids.len() == 2 {
            // After its 200, behind the bridge's back: the second message goes.
            let s = js.get_stream(&stream).await.expect("stream");
            assert!(
                s.delete_message(seqs[1]).await.expect("deleted"),
                "the message was there"
            );
            let a = audit_of(&app, "bus").await;
            assert_eq!(
                a["unaudited"].as_u64(),
                Some(2),
                "deleted before the audit: {a}"
            );
        }
    }

    let a = audited(&app, "bus", 4).await;
    assert_eq!(strings(&a["missing_ids"]), [ids[1].clone()], "{a}");
    assert_eq!(
        (a["verified"].as_u64(), a["missing"].as_u64()),
        (Some(3), Some(1)),
        "{a}"
    );
    let r = app
        .admin_get(&format!("/deliveries?event_id={}", ids[1]))
        .await;
    assert_eq!(
        r.body["deliveries"][0]["sinks"][0]["audit"]["detail"],
        format!("no message at sequence {}", seqs[1]).as_str()
    );
    app.stop().await;
    let _ = js.delete_stream(&stream).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_from_the_spool_updates_the_record_and_is_audited() {
    let js = crate::nats::js().await;
    let (stream, prefix, proxy, url) = crate::nats::proxied_stream(&js, "dlv-spool").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = crate::nats::bus_via(
        &url,
        &format!("{prefix}.{{kind}}.{{call_id}}"),
        &stream,
        "    timeout_ms: 1500\n    on_unavailable: spool\n",
    );
    let config = format!(
        "spool: {{path: \"{}\"}}\naudit: {{delay_secs: 0}}\n{}",
        dir.path().join("spool.redb").display(),
        config_with_sinks(&sink)
    );
    let app = spawn(&config).await;
    proxy.cut();
    app.await_connected("bus", false).await;
    let call = unique("dlv-spool");
    let r = app.post(&status_payload(&call, "completed")).await;
    assert_eq!(r.body["sinks"]["bus"]["spooled"], true, "{}", r.body);
    let id = r.event_id().to_string();
    let r = app.admin_get(&format!("/deliveries?event_id={id}")).await;
    let bus = &r.body["deliveries"][0]["sinks"][0];
    assert_eq!(bus["outcome"], "spooled", "{bus}");
    let seq = bus["spool_seq"].as_u64().expect("the spool sequence");
    assert!(bus["error"].as_str().is_some(), "why it was spooled: {bus}");

    proxy.restore();
    let app_ref = &app;
    let bus = eventually(Duration::from_secs(30), "the replay on record", || {
        let id = id.clone();
        async move {
            let r = app_ref
                .admin_get(&format!("/deliveries?event_id={id}"))
                .await;
            let bus = r.body["deliveries"][0]["sinks"][0].clone();
            (bus["outcome"] == "replayed" && bus.get("audit").is_some()).then_some(bus)
        }
    })
    .await;
    assert_eq!(bus["spool_seq"].as_u64(), Some(seq), "{bus}");
    assert_eq!(bus["receipt"]["stream"], stream.as_str(), "{bus}");
    assert_eq!(bus["audit"]["verdict"], "verified", "{bus}");
    let records = app.admin_get(&format!("/deliveries?call_id={call}")).await;
    assert_eq!(
        records.body["deliveries"].as_array().map(Vec::len),
        Some(1),
        "the same record"
    );
    app.stop().await;
    let _ = js.delete_stream(&stream).await;
}

#[test]
fn validate_checks_the_sections() {
    use callbridge::config::{ConfigError, Env, Settings};
    let sinks = "sinks: [{name: n, type: null}]\nauth: {mode: none}\n";
    let yaml = format!(
        "deliveries: {{max_events: 1000, max_age_secs: 1800}}\nidempotency: {{expected_rate_per_sec: 10}}\n{sinks}"
    );
    let (_, warnings) = Settings::from_yaml(&yaml, "test", &Env::empty()).expect("valid");
    let w = warnings
        .iter()
        .find(|w| w.path == "deliveries.max_events")
        .unwrap_or_else(|| panic!("a warning: {warnings:?}"));
    assert!(w.message.contains("holds 100 s"), "{w:?}");
    let yaml = format!("audit: {{sample: 0}}\ndeliveries: {{max_events: 0}}\n{sinks}");
    match Settings::from_yaml(&yaml, "test", &Env::empty()) {
        Err(ConfigError::Invalid(issues)) => {
            let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
            assert!(paths.contains(&"audit.sample"), "{paths:?}");
            assert!(paths.contains(&"deliveries.max_events"), "{paths:?}");
        }
        other => panic!("refused: {:?}", other.map(|_| ())),
    }
    let yaml = format!("audit: {{sampel: 2}}\n{sinks}");
    assert!(
        Settings::from_yaml(&yaml, "test", &Env::empty()).is_err(),
        "unknown keys are refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_finds_exactly_the_events_purged_from_the_rabbitmq_audit_queue_missing() {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions, QueuePurgeOptions};
    let url = crate::rabbitmq::AMQP_URL;
    let exchange = unique("cb-audit");
    let (real, audit) = (unique("cb-audit-real"), unique("cb-audit-q"));
    let sink = format!(
        "  - {{name: mq, type: rabbitmq, url: \"{url}\", exchange: \"{exchange}\", \
         declare: {{exchange_type: topic, durable: false}}, \
         routing_key: \"calls.{{kind}}.{{status}}\", timeout_ms: 2000, queues: [\
         {{name: \"{real}\", binding_key: \"calls.#\", durable: false}}, \
         {{name: \"{audit}\", binding_key: \"#\", durable: false, max_length: 1000, audit: true, \
         replica: r1}}]}}\n"
    );
    // The audit queue is declared under the replica's name.
    let audit = format!("{audit}.r1");
    let app = spawn(&with_sections(
        "audit: {delay_secs: 5}",
        &config_with_sinks(&sink),
    ))
    .await;
    app.await_ready(true).await;
    let call = unique("audit-mq");
    let mut ids = Vec::new();
    for status in ["registered", "ongoing"] {
        let r = app.post(&status_payload(&call, status)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        ids.push(r.event_id().to_string());
    }
    // After those two 200s, behind the bridge's back: the audit queue is emptied.
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .expect("connects");
    let ch = conn.create_channel().await.expect("channel");
    let purged = ch
        .queue_purge(&audit, QueuePurgeOptions::default())
        .await
        .expect("purged");
    assert_eq!(purged, 2, "both were in the audit queue");
    let a = audit_of(&app, "mq").await;
    assert_eq!(
        a["unaudited"].as_u64(),
        Some(2),
        "purged before the audit: {a}"
    );
    for status in ["completed", "failed"] {
        let r = app.post(&status_payload(&call, status)).await;
        assert_eq!(r.status, 200, "{}", r.body);
        ids.push(r.event_id().to_string());
    }

    let a = audited(&app, "mq", 4).await;
    assert_eq!(
        strings(&a["missing_ids"]),
        ids[..2],
        "exactly the purged ones: {a}"
    );
    assert_eq!(
        (a["verified"].as_u64(), a["missing"].as_u64()),
        (Some(2), Some(2)),
        "{a}"
    );
    app.stop().await;
    for q in [&real, &audit] {
        let _ = ch.queue_delete(q, QueueDeleteOptions::default()).await;
    }
    let _ = ch
        .exchange_delete(&exchange, ExchangeDeleteOptions::default())
        .await;
}

/// Two replicas of the bridge on one exchange, each with the same audit queue in its config:
/// each declares and reads its own (`<name>.<replica>`), so neither takes the other's copies,
/// and each verifies exactly its own events, none missing. With one shared queue, each reader
/// would consume the other's messages and call its own copies missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_rabbitmq_each_audit_their_own_queue_and_miss_nothing() {
    use lapin::options::{ExchangeDeleteOptions, QueueDeclareOptions, QueueDeleteOptions};
    let url = crate::rabbitmq::AMQP_URL;
    let exchange = unique("cb-audit-rep");
    let audit = unique("cb-audit-rep-q");
    let sink = |replica: &str| {
        format!(
            "  - {{name: mq, type: rabbitmq, url: \"{url}\", exchange: \"{exchange}\", \
             declare: {{exchange_type: topic, durable: false}}, \
             routing_key: \"calls.{{kind}}.{{status}}\", timeout_ms: 2000, queues: [\
             {{name: \"{audit}\", binding_key: \"#\", durable: false, max_length: 1000, \
             audit: true, replica: {replica}}}]}}\n"
        )
    };
    let mut apps = Vec::new();
    for replica in ["pod-a", "pod-b"] {
        let app = spawn(&with_sections(
            "audit: {delay_secs: 1}",
            &config_with_sinks(&sink(replica)),
        ))
        .await;
        app.await_ready(true).await;
        apps.push(app);
    }
    // Interleaved, so each replica's queue holds the other's messages too (both are bound to
    // the exchange with `#`).
    let call = unique("audit-rep");
    for status in ["registered", "ongoing", "completed"] {
        for (i, app) in apps.iter().enumerate() {
            let r = app
                .post(&status_payload(&format!("{call}-{i}"), status))
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
        }
    }
    for app in &apps {
        let a = audited(app, "mq", 3).await;
        assert_eq!(
            (
                a["answered"].as_u64(),
                a["verified"].as_u64(),
                a["missing"].as_u64()
            ),
            (Some(3), Some(3), Some(0)),
            "each replica verifies its own: {a}"
        );
        assert!(strings(&a["missing_ids"]).is_empty(), "{a}");
    }
    // Each replica's own queue exists under its name.
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .expect("connects");
    let ch = conn.create_channel().await.expect("channel");
    for replica in ["pod-a", "pod-b"] {
        ch.queue_declare(
            &format!("{audit}.{replica}"),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .expect("the replica's audit queue exists");
    }
    for app in apps {
        app.stop().await;
    }
    for replica in ["pod-a", "pod-b"] {
        let _ = ch
            .queue_delete(&format!("{audit}.{replica}"), QueueDeleteOptions::default())
            .await;
    }
    let _ = ch
        .exchange_delete(&exchange, ExchangeDeleteOptions::default())
        .await;
}

/// The Kafka reader keeps up with a burst: each read assigns one partition at one offset, and
/// with librdkafka's default `fetch.wait.max.ms` (500 ms) each waited for the previous fetch
/// at a partition's end — 200 copies took more than 30 s (seen failing), now about 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_audit_keeps_up_with_a_burst_over_three_partitions() {
    let brokers = crate::kafka::broker().await;
    let topic = unique("cb-audit-rate");
    crate::kafka::create_topics(brokers, &[&topic], 3).await;
    let sink = format!(
        "  - {{name: events, type: kafka, brokers: \"{brokers}\", topic: {topic}, timeout_ms: 2500}}\n"
    );
    let app = spawn(&with_sections(
        "audit: {delay_secs: 0}",
        &config_with_sinks(&sink),
    ))
    .await;
    for i in 0..200 {
        let r = app
            .post(&status_payload(&unique(&format!("rate{i}")), "completed"))
            .await;
        assert_eq!(r.status, 200);
    }
    let t = std::time::Instant::now();
    let a = audited(&app, "events", 200).await;
    assert_eq!(
        (a["verified"].as_u64(), a["missing"].as_u64()),
        (Some(200), Some(0)),
        "in {:?}: {a}",
        t.elapsed()
    );
    app.stop().await;
}
