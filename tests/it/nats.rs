//! The `nats` sink against the machine's NATS server (127.0.0.1:4222, JetStream enabled).
//!
//! Every test uses its own stream and subject prefix (`unique`), reads what arrived back with a
//! JetStream consumer (or a core subscriber), and deletes its stream at the end.

use std::time::{Duration, Instant};

use crate::common::proxy::TcpProxy;
use crate::common::*;
use async_nats::header::{self, HeaderMap};
use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use futures::StreamExt;
use serde_json::Value;

pub(crate) const NATS_URL: &str = "nats://127.0.0.1:4222";
const NATS_ADDR: &str = "127.0.0.1:4222";

pub(crate) async fn js() -> jetstream::Context {
    let client = async_nats::connect(NATS_URL)
        .await
        .expect("the machine's NATS runs on 127.0.0.1:4222 (scripts/test starts it)");
    jetstream::new(client)
}

/// A stream name and a subject prefix no other test (or run) uses.
pub(crate) fn names(tag: &str) -> (String, String) {
    let u = unique(tag).replace('-', "_");
    (format!("CB_{u}"), format!("cbtest.{u}"))
}

/// A `nats` sink entry of a config's `sinks` list; `extra` holds more keys, one per line
/// (`"    timeout_ms: 500\n"`).
pub(crate) fn nats_sink(name: &str, url: &str, subject: &str, extra: &str) -> String {
    format!(
        "  - name: {name}\n    type: nats\n    url: \"{url}\"\n    subject: \"{subject}\"\n{extra}"
    )
}

/// A JetStream sink named `name` that ensures its own memory stream over `<prefix>.>`.
fn jetstream_sink(name: &str, prefix: &str, stream: &str, extra: &str) -> String {
    nats_sink(
        name,
        NATS_URL,
        &format!("{prefix}.{{kind}}.{{call_id}}"),
        &format!(
            "    timeout_ms: 2000\n{extra}    jetstream:\n      stream: {stream}\n      ensure_stream: {{subjects: [\"{prefix}.>\"], storage: memory}}\n"
        ),
    )
}

/// A JetStream sink named `bus` publishing through `url` into an existing `stream`.
pub(crate) fn bus_via(url: &str, subject: &str, stream: &str, extra: &str) -> String {
    nats_sink(
        "bus",
        url,
        subject,
        &format!("{extra}    jetstream: {{stream: {stream}}}\n"),
    )
}

/// The bridge with one JetStream sink named `bus` (see [`jetstream_sink`]).
async fn spawn_bus(prefix: &str, stream: &str, extra: &str) -> TestApp {
    spawn(&config_with_sinks(&jetstream_sink(
        "bus", prefix, stream, extra,
    )))
    .await
}

/// A stream of this test's own (created here, not by the sink), and a TCP proxy in front of
/// the server: the sink reaches NATS only through the proxy. Returns the stream's name, the
/// subject prefix and the proxy's URL.
pub(crate) async fn proxied_stream(
    js: &jetstream::Context,
    tag: &str,
) -> (String, String, TcpProxy, String) {
    let (stream, prefix) = names(tag);
    stream_for(js, &stream, &format!("{prefix}.>")).await;
    let proxy = TcpProxy::start(NATS_ADDR.parse().expect("address")).await;
    let url = format!("nats://127.0.0.1:{}", proxy.port());
    (stream, prefix, proxy, url)
}

/// How many messages the stream holds.
pub(crate) async fn stored(js: &jetstream::Context, stream: &str) -> u64 {
    let mut s = js.get_stream(stream).await.expect("stream exists");
    s.info().await.expect("stream info").state.messages
}

/// Every message in the stream, read with an ephemeral pull consumer; `expected` bounds the
/// fetch, and the stream's message count is checked against it first.
pub(crate) async fn read_stream(
    js: &jetstream::Context,
    stream: &str,
    expected: usize,
) -> Vec<jetstream::Message> {
    assert_eq!(
        stored(js, stream).await,
        expected as u64,
        "messages in {stream}"
    );
    let s = js.get_stream(stream).await.expect("stream exists");
    let consumer = s
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut out = Vec::new();
    let mut batch = consumer
        .fetch()
        .max_messages(expected)
        .expires(Duration::from_secs(3))
        .messages()
        .await
        .expect("fetch");
    while let Some(m) = batch.next().await {
        out.push(m.expect("message"));
        if out.len() == expected {
            break;
        }
    }
    assert_eq!(out.len(), expected);
    out
}

pub(crate) fn hdr(h: &HeaderMap, name: &str) -> Option<String> {
    h.iter()
        .find(|(k, _)| k.to_string().eq_ignore_ascii_case(name))
        .and_then(|(_, v)| v.first())
        .map(|v| v.as_str().to_string())
}

/// The subject token the sink makes of a value (mirrors the documented rule).
fn token(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn ce_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(u8::from_str_radix(&v[i + 1..i + 3], 16).expect("hex"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("utf-8")
}

/// The sender's trace context reaches the message: the W3C `traceparent` header and the
/// CloudEvents `ce-traceparent` (tracing off: passed through unchanged).
#[tokio::test]
async fn traceparent_reaches_the_message() {
    let js = js().await;
    let (stream, prefix) = names("trace");
    let app = spawn_bus(&prefix, &stream, "").await;
    let a = app
        .post_traced(&status_payload(&unique("trace"), "completed"), TRACEPARENT)
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let msgs = read_stream(&js, &stream, 1).await;
    let h = msgs[0].headers.clone().unwrap_or_default();
    assert_eq!(hdr(&h, "traceparent").as_deref(), Some(TRACEPARENT));
    assert_eq!(
        hdr(&h, "ce-traceparent").map(|v| ce_decode(&v)).as_deref(),
        Some(TRACEPARENT)
    );
    app.stop().await;
    let _ = js.delete_stream(&stream).await;
}

#[tokio::test]
async fn every_seed_payload_arrives_with_ce_headers_msg_id_and_data() {
    let js = js().await;
    let (stream, prefix) = names("seed");
    let app = spawn_bus(&prefix, &stream, "").await;

    let fixtures = [
        "curl-test.payload.json",
        "status-example.payload.json",
        "analysis-callback.payload.json",
        "registered-with-params.payload.json",
    ];
    let mut sent = Vec::new();
    for (i, f) in fixtures.iter().enumerate() {
        let payload = fixture(f);
        let a = app.post(&payload).await;
        assert_eq!(a.status, 200, "{f}: {}", a.body);
        let receipt = &a.body["sinks"]["bus"]["receipt"];
        assert_eq!(receipt["stream"], stream.as_str(), "{}", a.body);
        assert_eq!(receipt["sequence"], (i + 1) as u64, "{}", a.body);
        assert_eq!(receipt["duplicate"], false, "{}", a.body);
        sent.push((payload, a.body["event_id"].as_str().unwrap().to_string()));
    }

    let msgs = read_stream(&js, &stream, fixtures.len()).await;
    for (m, (payload, event_id)) in msgs.iter().zip(&sent) {
        let h = m.headers.as_ref().expect("headers");
        let call_id = payload["data"]["call_id"].as_str().unwrap();
        let data: Value = serde_json::from_slice(&m.payload).expect("payload is the data JSON");
        let kind = data["kind"].as_str().unwrap();
        assert_eq!(
            m.subject.as_str(),
            format!("{prefix}.{kind}.{}", token(call_id))
        );
        assert_eq!(h.get(header::NATS_MESSAGE_ID).unwrap().as_str(), event_id);
        assert_eq!(hdr(h, "ce-id").as_deref(), Some(event_id.as_str()));
        assert_eq!(hdr(h, "ce-specversion").as_deref(), Some("1.0"));
        assert_eq!(
            hdr(h, "ce-type").unwrap(),
            format!("ai.ringg.call.{kind}.v1")
        );
        assert_eq!(hdr(h, "ce-source").as_deref(), Some("/callbridge"));
        assert_eq!(hdr(h, "ce-subject").as_deref(), Some(call_id));
        assert_eq!(hdr(h, "ce-partitionkey").as_deref(), Some(call_id));
        assert_eq!(
            hdr(h, "ce-datacontenttype").as_deref(),
            Some("application/json")
        );
        assert!(hdr(h, "ce-time").is_some_and(|t| t.starts_with("20")));
        assert_eq!(
            hdr(h, "ce-callstatus").map(|s| ce_decode(&s)).as_deref(),
            payload["data"]["status"].as_str()
        );
        assert!(
            hdr(h, "content-type").is_none(),
            "binary mode: no Content-Type"
        );
        // Payload = data, normalised from the sender's payload.
        assert_eq!(data["call_id"], payload["data"]["call_id"]);
        assert_eq!(data["status"], payload["data"]["status"]);
        assert_eq!(data["custom_args"], payload["data"]["custom_args_values"]);
        assert_eq!(data["agent_id"], payload["data"]["agent_id"]);
    }
    // The non-ASCII custom arg survives in the payload untouched.
    let registered: Value = serde_json::from_slice(&msgs[3].payload).unwrap();
    assert_eq!(registered["custom_args"]["callee_name"], "Zoë");

    app.stop().await;
    js.delete_stream(&stream).await.expect("delete stream");
}

#[tokio::test]
async fn structured_mode_carries_the_whole_event() {
    let js = js().await;
    let (stream, prefix) = names("structured");
    let app = spawn_bus(&prefix, &stream, "    format: structured\n").await;
    let call_id = unique("structured");
    let a = app.post(&status_payload(&call_id, "completed")).await;
    assert_eq!(a.status, 200, "{}", a.body);

    let msgs = read_stream(&js, &stream, 1).await;
    let h = msgs[0].headers.as_ref().unwrap();
    assert_eq!(
        hdr(h, "content-type").as_deref(),
        Some("application/cloudevents+json")
    );
    assert_eq!(
        h.get(header::NATS_MESSAGE_ID).unwrap().as_str(),
        a.body["event_id"].as_str().unwrap()
    );
    assert!(
        hdr(h, "ce-id").is_none(),
        "structured mode: attributes are in the payload"
    );
    let ev: Value = serde_json::from_slice(&msgs[0].payload).unwrap();
    assert_eq!(ev["specversion"], "1.0");
    assert_eq!(ev["id"], a.body["event_id"]);
    assert_eq!(ev["subject"], call_id.as_str());
    assert_eq!(ev["data"]["call_id"], call_id.as_str());
    assert_eq!(ev["data"]["status"], "completed");

    app.stop().await;
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn same_webhook_twice_is_one_message_even_across_bridge_instances() {
    let js = js().await;
    let (stream, prefix) = names("dedupe");
    let yaml = config_with_sinks(&jetstream_sink("bus", &prefix, &stream, ""));
    let payload = status_payload(&unique("dedupe"), "completed");

    // First bridge: publishes; a repeat is answered from its own ledger.
    let first = spawn(&yaml).await;
    let a = first.post(&payload).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let r = &a.body["sinks"]["bus"]["receipt"];
    assert_eq!(
        (r["sequence"].as_u64(), r["duplicate"].as_bool()),
        (Some(1), Some(false))
    );
    let again = first.post(&payload).await;
    assert_eq!(again.status, 200);
    assert_eq!(
        again.body["sinks"]["bus"]["duplicate"], true,
        "{}",
        again.body
    );
    first.stop().await;

    // Second bridge: empty memory, publishes again; the stream's dedupe says duplicate.
    let second = spawn(&yaml).await;
    let b = second.post(&payload).await;
    assert_eq!(b.status, 200, "{}", b.body);
    assert_eq!(b.body["event_id"], a.body["event_id"]);
    let r = &b.body["sinks"]["bus"]["receipt"];
    assert_eq!(r["duplicate"], true, "{}", b.body);
    assert_eq!(
        r["sequence"], 1,
        "the PubAck names the stored copy: {}",
        b.body
    );
    second.stop().await;

    let msgs = read_stream(&js, &stream, 1).await;
    assert_eq!(
        msgs[0]
            .headers
            .as_ref()
            .unwrap()
            .get(header::NATS_MESSAGE_ID)
            .unwrap()
            .as_str(),
        a.body["event_id"].as_str().unwrap()
    );
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn no_stream_for_the_subject_is_503_naming_the_sink() {
    let (_, prefix) = names("nostream");
    let sink = nats_sink(
        "orphan",
        NATS_URL,
        &format!("{prefix}.{{kind}}"),
        "    timeout_ms: 2000\n",
    );
    let app = spawn(&config_with_sinks(&sink)).await;
    let (a, took) = app
        .post_timed(&status_payload(&unique("nostream"), "completed"))
        .await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(a.retry_after.is_some());
    let s = &a.body["sinks"]["orphan"];
    assert_eq!(s["ok"], false, "{}", a.body);
    assert_eq!(s["error"]["code"], "rejected", "{}", a.body);
    assert!(took < Duration::from_secs(2), "no responders is immediate");
    app.stop().await;
}

#[tokio::test]
async fn core_mode_delivers_to_a_live_subscriber() {
    let client = async_nats::connect(NATS_URL).await.unwrap();
    let (_, prefix) = names("core");
    let mut sub = client.subscribe(format!("{prefix}.>")).await.unwrap();
    client.flush().await.unwrap();
    let sink = nats_sink(
        "live",
        NATS_URL,
        &format!("{prefix}.{{kind}}.{{call_id}}"),
        "    jetstream: {enabled: false}\n",
    );
    let app = spawn(&config_with_sinks(&sink)).await;
    let call_id = unique("core call.id");
    let a = app.post(&status_payload(&call_id, "ongoing")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let expected_subject = format!("{prefix}.status.{}", token(&call_id));
    assert_eq!(
        a.body["sinks"]["live"]["receipt"],
        serde_json::json!({"subject": expected_subject, "persisted": false})
    );
    let m = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("delivered")
        .unwrap();
    assert_eq!(m.subject.as_str(), expected_subject);
    let h = m.headers.as_ref().unwrap();
    assert_eq!(hdr(h, "ce-id").as_deref(), a.body["event_id"].as_str());
    assert_eq!(
        hdr(h, "ce-subject").map(|s| ce_decode(&s)),
        Some(call_id.clone())
    );
    assert_eq!(hdr(h, "ce-subject").unwrap(), call_id.replace(' ', "%20"));
    let data: Value = serde_json::from_slice(&m.payload).unwrap();
    assert_eq!(data["status"], "ongoing");
    app.stop().await;
}

#[tokio::test]
async fn call_ids_with_dots_spaces_and_wildcards_stay_one_token() {
    let js = js().await;
    let (stream, prefix) = names("sanitise");
    let app = spawn_bus(&prefix, &stream, "").await;
    let call_id = "a.b c*>%Zoë";
    let a = app.post(&status_payload(call_id, "completed")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let msgs = read_stream(&js, &stream, 1).await;
    assert_eq!(
        msgs[0].subject.as_str(),
        format!("{prefix}.status.a%2Eb%20c%2A%3E%25Zo%C3%AB")
    );
    let h = msgs[0].headers.as_ref().unwrap();
    assert_eq!(hdr(h, "ce-subject").unwrap(), "a.b%20c*>%25Zo%C3%AB");
    app.stop().await;
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn an_existing_stream_that_misses_the_subjects_fails_startup() {
    let js = js().await;
    let (stream, prefix) = names("misfit");
    stream_for(&js, &stream, &format!("{prefix}.other.>")).await;
    let settings = settings(&config_with_sinks(&jetstream_sink(
        "bus", &prefix, &stream, "",
    )));
    let err = match callbridge::Application::build(settings).await {
        Ok(_) => panic!("startup must fail"),
        Err(e) => format!("{:#}", anyhow::Error::from(e)),
    };
    assert!(
        err.contains("bus") && err.contains(&stream) && err.contains("do not cover"),
        "{err}"
    );
    // The bridge never modifies an existing stream.
    let info = js
        .get_stream(&stream)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.config.subjects, vec![format!("{prefix}.other.>")]);
    js.delete_stream(&stream).await.unwrap();
}

/// Creates a memory stream capturing `subjects` (a filter), as an operator would.
pub(crate) async fn stream_for(js: &jetstream::Context, stream: &str, subjects: &str) {
    js.create_stream(jetstream::stream::Config {
        name: stream.to_string(),
        subjects: vec![subjects.to_string()],
        storage: jetstream::stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_server_that_stops_answering_is_a_timeout_503_within_the_timeout() {
    let js = js().await;
    let (stream, prefix, proxy, url) = proxied_stream(&js, "hole").await;
    let sink = bus_via(
        &url,
        &format!("{prefix}.{{kind}}"),
        &stream,
        "    timeout_ms: 500\n",
    );
    let app = spawn(&config_with_sinks(&sink)).await;
    let a = app.post(&status_payload(&unique("hole"), "ongoing")).await;
    assert_eq!(a.status, 200, "{}", a.body);

    proxy.freeze();
    let (b, took) = app
        .post_timed(&status_payload(&unique("hole"), "completed"))
        .await;
    assert_eq!(b.status, 503, "{}", b.body);
    assert_eq!(
        b.body["sinks"]["bus"]["error"]["code"], "timeout",
        "{}",
        b.body
    );
    assert!(
        took >= Duration::from_millis(450) && took < Duration::from_millis(1500),
        "answered after {took:?}"
    );
    app.stop().await;
    assert_eq!(stored(&js, &stream).await, 1);
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn pending_pubacks_are_bounded_by_max_in_flight() {
    let js = js().await;
    let (stream, prefix, proxy, url) = proxied_stream(&js, "inflight").await;
    let sink = bus_via(
        &url,
        &format!("{prefix}.{{kind}}"),
        &stream,
        "    timeout_ms: 1000\n    max_in_flight: 1\n",
    );
    let app = spawn(&config_with_sinks(&sink)).await;
    proxy.freeze();
    let p1 = status_payload(&unique("inflight"), "completed");
    let p2 = status_payload(&unique("inflight"), "completed");
    let started = Instant::now();
    let (a, b) = tokio::join!(app.post(&p1), app.post(&p2));
    let mut codes = vec![
        a.body["sinks"]["bus"]["error"]["code"]
            .as_str()
            .unwrap()
            .to_string(),
        b.body["sinks"]["bus"]["error"]["code"]
            .as_str()
            .unwrap()
            .to_string(),
    ];
    codes.sort();
    assert_eq!(codes, ["queue_full", "timeout"], "{} / {}", a.body, b.body);
    assert_eq!((a.status, b.status), (503, 503));
    assert!(started.elapsed() < Duration::from_millis(2000));
    app.stop().await;
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn a_durable_pull_consumer_reads_and_acks() {
    // The flow docs/nats.md shows downstream services.
    let js = js().await;
    let (stream, prefix) = names("durable");
    let app = spawn_bus(&prefix, &stream, "").await;
    let mut ids = Vec::new();
    for status in ["registered", "ongoing", "completed"] {
        let a = app.post(&status_payload(&unique("durable"), status)).await;
        assert_eq!(a.status, 200, "{}", a.body);
        ids.push(a.body["event_id"].as_str().unwrap().to_string());
    }
    app.stop().await;

    let s = js.get_stream(&stream).await.unwrap();
    let consumer = s
        .get_or_create_consumer(
            "billing",
            pull::Config {
                durable_name: Some("billing".into()),
                filter_subject: format!("{prefix}.status.>"),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < ids.len() {
        let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
            .await
            .expect("message in time")
            .unwrap()
            .unwrap();
        let event_id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned())
            .unwrap();
        let data: Value = serde_json::from_slice(&msg.payload).unwrap();
        assert_eq!(data["kind"], "status");
        msg.ack().await.unwrap();
        seen.push(event_id);
    }
    assert_eq!(seen, ids, "stream order = publish order");
    drop(messages);
    let s = &s;
    let info = eventually(
        Duration::from_secs(5),
        "acks to be recorded",
        || async move {
            let i = s.consumer_info("billing").await.ok()?;
            (i.num_ack_pending == 0 && i.ack_floor.stream_sequence == 3).then_some(i)
        },
    )
    .await;
    assert_eq!(info.num_pending, 0);
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn a_cut_connection_answers_503_fast_and_recovers() {
    let js = js().await;
    // Create the stream directly: the sink reaches NATS only through the proxy.
    let (stream, prefix, proxy, url) = proxied_stream(&js, "cut").await;
    let sink = bus_via(
        &url,
        &format!("{prefix}.{{kind}}.{{call_id}}"),
        &stream,
        "    timeout_ms: 2000\n",
    );
    let app = spawn(&config_with_sinks(&sink)).await;
    assert!(app.is_ready().await);
    let a = app.post(&status_payload(&unique("cut"), "ongoing")).await;
    assert_eq!(a.status, 200, "{}", a.body);

    proxy.cut();
    app.await_ready(false).await;
    let (b, took) = app
        .post_timed(&status_payload(&unique("cut"), "completed"))
        .await;
    assert_eq!(b.status, 503, "{}", b.body);
    assert_eq!(
        b.body["sinks"]["bus"]["error"]["code"], "not_connected",
        "{}",
        b.body
    );
    assert!(
        took < Duration::from_secs(1),
        "fails fast while disconnected"
    );

    proxy.restore();
    app.await_ready(true).await;
    let c = app.post(&status_payload(&unique("cut"), "completed")).await;
    assert_eq!(c.status, 200, "{}", c.body);
    assert_eq!(
        c.body["sinks"]["bus"]["receipt"]["sequence"], 2,
        "{}",
        c.body
    );

    app.stop().await;
    read_stream(&js, &stream, 2).await;
    js.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn startup_survives_an_unreachable_server() {
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let sink = nats_sink(
        "bus",
        &format!("nats://127.0.0.1:{port}"),
        "calls.{kind}",
        "    jetstream: {stream: NEVER, ensure_stream: {subjects: [\"calls.>\"]}}\n",
    );
    let started = Instant::now();
    let app = spawn(&config_with_sinks(&sink)).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "startup is bounded"
    );
    let r = app.get("/readyz").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.body["sinks"]["bus"]["ready"], false, "{}", r.body);
    assert_eq!(
        r.body["sinks"]["bus"]["reason"], "not_connected",
        "no spool: a sink that cannot reach its broker makes the pod unready: {}",
        r.body
    );
    let (a, took) = app
        .post_timed(&status_payload(&unique("down"), "completed"))
        .await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(
        a.body["sinks"]["bus"]["error"]["code"], "not_connected",
        "{}",
        a.body
    );
    assert!(took < Duration::from_secs(1));
    app.stop().await;
}

/// A status of several KiB in a `{status}` subject used to make a subject beyond the server's
/// control line, and nats-server closed the connection every publish shares. Now such a
/// status is a 400 naming the field, and the requests sent with it all succeed; the longest
/// call id the bridge accepts, every byte escaped, becomes one token of at most 128 bytes.
#[tokio::test]
async fn a_hostile_status_or_call_id_never_breaks_the_shared_connection() {
    let js = js().await;
    let (stream, prefix) = names("hostile");
    let subject = format!("{prefix}.{{kind}}.{{status}}.{{call_id}}");
    let app = spawn(&config_with_sinks(&nats_sink(
        "bus",
        NATS_URL,
        &subject,
        &format!(
            "    timeout_ms: 2000\n    jetstream:\n      stream: {stream}\n      ensure_stream: {{subjects: [\"{prefix}.>\"], storage: memory}}\n"
        ),
    )))
    .await;
    app.await_ready(true).await;

    let hostile = status_payload(&unique("hostile"), &"x".repeat(5000));
    let long_id = "é".repeat(128); // 256 bytes, 768 once escaped
    let long = status_payload(&long_id, "completed");
    let normal: Vec<Value> = (0..8)
        .map(|i| status_payload(&unique(&format!("normal{i}")), "completed"))
        .collect();
    let (h, l, normal) = tokio::join!(
        app.post(&hostile),
        app.post(&long),
        futures::future::join_all(normal.iter().map(|b| app.post(b)))
    );
    // The requests beside it first: they are what a broken connection used to fail.
    for a in normal.iter().chain([&l]) {
        assert_eq!(a.status, 200, "{}", a.body);
    }
    assert_eq!(h.status, 400, "{}", h.body);
    assert_eq!(h.body["error"]["field"], "data.status");
    let msgs = read_stream(&js, &stream, 9).await;
    let long_subject = msgs
        .iter()
        .map(|m| m.subject.as_str())
        .find(|s| s.contains("%C3%A9"))
        .expect("the long call id's message");
    let last = long_subject.rsplit('.').next().unwrap_or_default();
    assert_eq!(last.len(), 128, "{long_subject}");
    assert!(
        last.starts_with("%C3%A9%C3%A9") && last.contains('~'),
        "{last}"
    );
    assert!(app.is_ready().await);
    app.stop().await;
    js.delete_stream(&stream).await.unwrap();
}

/// The bytes of `data` the bridge makes of `body` (the binary-mode payload).
fn data_len(body: &Value) -> usize {
    let event = callbridge::event::normalize(
        body,
        Default::default(),
        &Default::default(),
        "2026-01-01T00:00:00Z".into(),
    )
    .expect("a valid payload");
    serde_json::to_vec(&event.data)
        .expect("data serialises")
        .len()
}

/// nats-server's `max_payload` counts headers and payload. An event whose payload alone fits
/// but not with its headers used to be sent, and the server closed the connection every
/// publish shares. Now it is refused before sending: 413 (the sender's to fix, the same on a
/// retry), published nowhere, while requests sent with it succeed on the same connection. An
/// event whose payload alone is too large is a 413 too.
#[tokio::test]
async fn max_payload_counts_headers_and_a_too_large_event_is_413() {
    let js = js().await;
    let max = async_nats::connect(NATS_URL)
        .await
        .expect("connects")
        .server_info()
        .max_payload;
    let (stream, prefix) = names("maxpayload");
    let app = spawn(&config_with_server(
        &format!(
            ", max_body_bytes: {}, max_in_flight_bytes: {}",
            max * 4,
            max * 8
        ),
        &jetstream_sink("bus", &prefix, &stream, ""),
    ))
    .await;
    app.await_ready(true).await;

    // A payload a little under max_payload: it fits alone, not with the ~400 bytes of headers.
    let mut edge = status_payload(&unique("edge"), "completed");
    edge["data"]["custom_args_values"] = serde_json::json!({"blob": ""});
    let base = data_len(&edge);
    edge["data"]["custom_args_values"]["blob"] = Value::from("x".repeat(max - 64 - base));
    assert_eq!(data_len(&edge), max - 64);
    let mut over = edge.clone();
    over["data"]["call_id"] = Value::from(unique("over"));
    over["data"]["custom_args_values"]["blob"] = Value::from("x".repeat(max + 10));

    let normal: Vec<Value> = (0..6)
        .map(|i| status_payload(&unique(&format!("beside{i}")), "completed"))
        .collect();
    let (e, o, normal) = tokio::join!(
        app.post(&edge),
        app.post(&over),
        futures::future::join_all(normal.iter().map(|b| app.post(b)))
    );
    for a in &normal {
        assert_eq!(a.status, 200, "{}", a.body);
    }
    // Counting the payload alone, `edge` was sent, the server closed the connection and the
    // answer was a 503 timeout, on every retry.
    for a in [&e, &o] {
        assert_eq!(a.status, 413, "{}", a.body);
        assert!(a.retry_after.is_none());
        assert_eq!(a.body["error"]["code"], "event_too_large");
        assert_eq!(a.body["sinks"]["bus"]["error"]["code"], "too_large");
    }
    assert_eq!(app.post(&edge).await.status, 413, "a retry is a 413 again");
    assert!(app.is_ready().await, "the connection was never closed");
    assert_eq!(
        stored(&js, &stream).await,
        6,
        "the large events were published nowhere"
    );
    app.stop().await;
    js.delete_stream(&stream).await.unwrap();
}

/// An optional JetStream sink behind a frozen connection does not delay the answer: the
/// required file sink decides, the answer is 200 well before the optional sink's 2.5 s
/// timeout, and the optional sink is reported pending; its outcome is still counted later.
#[tokio::test]
async fn a_stalled_optional_sink_does_not_delay_the_200() {
    let js = js().await;
    let (stream, prefix, proxy, url) = proxied_stream(&js, "optstall").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("events.jsonl");
    let sinks = format!(
        "{}{}",
        file_sink("archive", &path, ""),
        bus_via(
            &url,
            &format!("{prefix}.{{kind}}"),
            &stream,
            "    required: false\n    timeout_ms: 2500\n",
        )
    );
    let app = spawn(&config_with_sinks(&sinks)).await;
    let warm = app
        .post(&status_payload(&unique("optstall"), "ongoing"))
        .await;
    assert_eq!(warm.status, 200, "{}", warm.body);

    proxy.freeze();
    let (a, took) = app
        .post_timed(&status_payload(&unique("optstall"), "completed"))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["sinks"]["archive"]["ok"], true, "{}", a.body);
    assert_eq!(a.body["sinks"]["bus"]["pending"], true, "{}", a.body);
    assert!(
        took < Duration::from_millis(1500),
        "answered after {took:?}: the optional sink's 2.5 s timeout held it"
    );
    assert_eq!(read_lines(&path).len(), 2);
    // In the background, the optional publish still gets its outcome recorded.
    let app = &app;
    eventually(
        Duration::from_secs(10),
        "the optional outcome",
        || async move {
            let m = app.metrics().await;
            m.lines()
                .any(|l| {
                    l.starts_with(
                        "callbridge_sink_publish_total{outcome=\"in_doubt\",sink=\"bus\"}",
                    )
                })
                .then_some(())
        },
    )
    .await;
    proxy.restore();
    app.handle.stop(true).await;
    js.delete_stream(&stream).await.unwrap();
}

/// Issue #28, item 7: a stream whose `max_msg_size` is below the event (the server's
/// `max_payload` is not) refuses it at publish time: `too_large` (413, as for the size check
/// before publishing), never a 503 retried in vain; a small event still passes.
#[tokio::test]
async fn a_message_the_stream_refuses_for_its_size_is_413() {
    let js = js().await;
    let (stream, prefix) = names("msgsize");
    js.create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{prefix}.>")],
        storage: jetstream::stream::StorageType::Memory,
        max_message_size: 4000,
        ..Default::default()
    })
    .await
    .unwrap();
    let app = spawn(&config_with_sinks(&bus_via(
        NATS_URL,
        &format!("{prefix}.{{kind}}"),
        &stream,
        "    timeout_ms: 2000\n",
    )))
    .await;
    let mut big = status_payload(&unique("msgsize"), "completed");
    big["data"]["custom_args_values"] = serde_json::json!({"blob": "x".repeat(8000)});
    let a = app.post(&big).await;
    assert_eq!(a.status, 413, "{}", a.body);
    assert_eq!(a.body["sinks"]["bus"]["error"]["code"], "too_large");
    let small = app
        .post(&status_payload(&unique("msgsize"), "completed"))
        .await;
    assert_eq!(small.status, 200, "{}", small.body);
    assert_eq!(stored(&js, &stream).await, 1, "only the small one");
    app.stop().await;
    js.delete_stream(&stream).await.unwrap();
}
