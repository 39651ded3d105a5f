//! The `rabbitmq` sink against the machine's RabbitMQ (127.0.0.1:5672, guest/guest): every test
//! uses its own exchange and queues, consumes what arrived with its own client, and deletes its
//! topology at the end. Outages go through an in-test TCP proxy; the shared broker is never
//! stopped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::proxy::TcpProxy;
use crate::common::{
    config_with_sinks, eventually, file_sink, fixture, read_lines, spawn, status_payload, unique,
    TestApp, TRACEPARENT,
};
use callbridge::sinks::rabbitmq::RabbitmqSinkSettings;
use callbridge::sinks::{Outgoing, Sink, SinkSpec};
use lapin::message::BasicGetMessage;
use lapin::options::{
    BasicGetOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, ExchangeKind};
use serde_json::Value;

pub(crate) const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub(crate) const BROKER: &str = "127.0.0.1:5672";
const SINK: &str = "mq";

/// The test's own client and the names it must clean up.
pub(crate) struct Broker {
    _conn: Connection,
    ch: Channel,
    pub(crate) exchange: String,
    queues: Vec<String>,
}

impl Broker {
    pub(crate) async fn new(prefix: &str) -> Broker {
        let conn = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .expect("test client connects to RabbitMQ");
        let ch = conn.create_channel().await.expect("channel");
        Broker {
            _conn: conn,
            ch,
            exchange: unique(&format!("cb-test-{prefix}")),
            queues: Vec::new(),
        }
    }

    /// A broker client with its own topic exchange and one queue bound to it with
    /// `binding_key`: the topology most tests publish into.
    pub(crate) async fn with_queue(
        tag: &str,
        binding_key: &str,
        args: FieldTable,
    ) -> (Broker, String) {
        let mut b = Broker::new(tag).await;
        let queue = b.queue_name(tag);
        b.declare_exchange().await;
        b.declare_queue(&queue, binding_key, args).await;
        (b, queue)
    }

    pub(crate) fn queue_name(&mut self, what: &str) -> String {
        let q = unique(&format!("cb-test-{what}"));
        self.queues.push(q.clone());
        q
    }

    pub(crate) async fn declare_exchange(&self) {
        self.ch
            .exchange_declare(
                &self.exchange,
                ExchangeKind::Topic,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("exchange declared");
    }

    pub(crate) async fn declare_queue(&self, queue: &str, binding_key: &str, args: FieldTable) {
        self.ch
            .queue_declare(queue, QueueDeclareOptions::default(), args)
            .await
            .expect("queue declared");
        self.ch
            .queue_bind(
                queue,
                &self.exchange,
                binding_key,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("queue bound");
    }

    async fn get(&self, queue: &str) -> Option<BasicGetMessage> {
        self.ch
            .basic_get(queue, BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
    }

    /// Every message currently in the queue.
    async fn drain(&self, queue: &str) -> Vec<BasicGetMessage> {
        let mut out = Vec::new();
        while let Some(m) = self.get(queue).await {
            out.push(m);
        }
        out
    }

    /// The `message_id` (event id) of every message currently in the queue.
    pub(crate) async fn message_ids(&self, queue: &str) -> HashSet<String> {
        self.drain(queue)
            .await
            .iter()
            .map(|m| {
                prop(m.delivery.properties.message_id())
                    .expect("message_id")
                    .to_string()
            })
            .collect()
    }

    pub(crate) async fn message_count(&self, queue: &str) -> u32 {
        self.ch
            .queue_declare(
                queue,
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue exists")
            .message_count()
    }

    pub(crate) async fn cleanup(self) {
        for q in &self.queues {
            let _ = self.ch.queue_delete(q, QueueDeleteOptions::default()).await;
        }
        let _ = self
            .ch
            .exchange_delete(&self.exchange, ExchangeDeleteOptions::default())
            .await;
    }
}

/// A sink entry of the test config (YAML list item).
fn sink_yaml(url: &str, exchange: &str, extra: &str) -> String {
    format!(
        "  - {{name: {SINK}, type: rabbitmq, url: \"{url}\", exchange: \"{exchange}\", \
         routing_key: \"calls.{{kind}}.{{status}}\", timeout_ms: 2000{extra}}}\n"
    )
}

/// The bridge with the rabbitmq sink (`sink_yaml`), once it is connected.
async fn spawn_ready(url: &str, exchange: &str, extra: &str) -> TestApp {
    let app = spawn(&config_with_sinks(&sink_yaml(url, exchange, extra))).await;
    app.await_ready(true).await;
    app
}

/// A TCP proxy in front of the broker, and the AMQP URL that goes through it.
async fn proxied() -> (TcpProxy, String) {
    let proxy = TcpProxy::start(BROKER.parse().expect("address")).await;
    let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port());
    (proxy, url)
}

fn header(m: &BasicGetMessage, name: &str) -> Option<String> {
    let headers = m.delivery.properties.headers().clone()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        other => panic!("header {name} is not a long string: {other:?}"),
    }
}

fn prop(p: &Option<lapin::types::ShortString>) -> Option<&str> {
    p.as_ref().map(|s| s.as_str())
}

fn error_message(body: &Value) -> String {
    body["sinks"][SINK]["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn seed_payloads_arrive_with_routing_key_properties_and_headers() {
    let mut b = Broker::new("seed").await;
    let queue = b.queue_name("seed");
    // The bridge declares the exchange and the queue itself (`declare`, `queues`).
    let app = spawn(&config_with_sinks(&sink_yaml(
        AMQP_URL,
        &b.exchange,
        &format!(
            ", declare: {{exchange_type: topic, durable: false}}, \
             queues: [{{name: \"{queue}\", binding_key: \"calls.#\", durable: false}}]"
        ),
    )))
    .await;
    assert!(
        app.is_ready().await,
        "a reachable broker is ready at startup"
    );

    for name in [
        "curl-test.payload.json",
        "status-example.payload.json",
        "registered-with-params.payload.json",
        "analysis-callback.payload.json",
    ] {
        let payload = fixture(name);
        let a = app.post(&payload).await;
        assert_eq!(a.status, 200, "{name}: {}", a.body);
        let event_id = a.body["event_id"].as_str().expect("event_id").to_string();
        let receipt = &a.body["sinks"][SINK]["receipt"];
        assert_eq!(receipt["exchange"], b.exchange.as_str(), "{name}");

        let m = b
            .get(&queue)
            .await
            .unwrap_or_else(|| panic!("{name}: nothing arrived"));
        let p = &m.delivery.properties;
        let kind = if payload["data"]["analysis"].is_object() {
            "analysis"
        } else {
            "status"
        };
        let status = payload["data"]["status"].as_str().expect("status");
        let routing_key = format!("calls.{kind}.{status}");
        assert_eq!(m.delivery.routing_key.as_str(), routing_key, "{name}");
        assert_eq!(receipt["routing_key"], routing_key.as_str(), "{name}");
        assert_eq!(m.delivery.exchange.as_str(), b.exchange, "{name}");
        assert_eq!(prop(p.message_id()), Some(event_id.as_str()), "{name}");
        assert_eq!(p.delivery_mode(), &Some(2), "{name}: persistent");
        let ty = prop(p.kind()).expect("type property").to_string();
        assert_eq!(ty, format!("ai.ringg.call.{kind}.v1"), "{name}");
        assert_eq!(prop(p.content_type()), Some("application/json"), "{name}");
        assert_eq!(prop(p.app_id()), Some("callbridge"), "{name}");
        assert!(p.timestamp().is_some_and(|t| t > 1_600_000_000), "{name}");

        // Binary mode: attributes as cloudEvents_* headers, body = data.
        let call_id = payload["data"]["call_id"].as_str().expect("call_id");
        assert_eq!(
            header(&m, "cloudEvents_id").as_deref(),
            Some(event_id.as_str())
        );
        assert_eq!(
            header(&m, "cloudEvents_specversion").as_deref(),
            Some("1.0")
        );
        assert_eq!(header(&m, "cloudEvents_type").as_deref(), Some(ty.as_str()));
        assert_eq!(
            header(&m, "cloudEvents_source").as_deref(),
            Some("/callbridge")
        );
        assert_eq!(header(&m, "cloudEvents_subject").as_deref(), Some(call_id));
        assert_eq!(
            header(&m, "cloudEvents_partitionkey").as_deref(),
            Some(call_id)
        );
        assert!(header(&m, "cloudEvents_time").is_some(), "{name}");
        let data: Value = serde_json::from_slice(&m.delivery.data).expect("body is JSON");
        assert_eq!(data["call_id"], call_id, "{name}");
        assert_eq!(data["kind"], kind, "{name}");
        assert_eq!(data["status"], status, "{name}");
        assert!(
            data.get("specversion").is_none(),
            "binary body is data only"
        );
    }
    assert!(
        b.get(&queue).await.is_none(),
        "exactly one message per webhook"
    );
    app.stop().await;
    b.cleanup().await;
}

#[tokio::test]
async fn structured_mode_carries_the_whole_event() {
    let (b, queue) = Broker::with_queue("structured", "calls.#", FieldTable::default()).await;
    let app = spawn_ready(AMQP_URL, &b.exchange, ", format: structured").await;

    let call_id = unique("structured");
    let a = app.post(&status_payload(&call_id, "ongoing")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let m = b.get(&queue).await.expect("message arrived");
    let p = &m.delivery.properties;
    assert_eq!(m.delivery.routing_key.as_str(), "calls.status.ongoing");
    assert_eq!(prop(p.content_type()), Some("application/cloudevents+json"));
    assert_eq!(prop(p.message_id()), a.body["event_id"].as_str());
    assert_eq!(p.delivery_mode(), &Some(2));
    assert!(
        header(&m, "cloudEvents_id").is_none(),
        "structured mode has no ce headers"
    );
    let ev: Value = serde_json::from_slice(&m.delivery.data).expect("body is JSON");
    assert_eq!(ev["specversion"], "1.0");
    assert_eq!(ev["id"], a.body["event_id"]);
    assert_eq!(ev["subject"], call_id.as_str());
    assert_eq!(ev["data"]["status"], "ongoing");
    assert_eq!(prop(p.kind()), ev["type"].as_str());
    app.stop().await;
    b.cleanup().await;
}

/// The sender's trace context reaches the message: the W3C `traceparent` header and the
/// CloudEvents `cloudEvents_traceparent` (tracing off: passed through unchanged).
#[tokio::test]
async fn traceparent_reaches_the_message() {
    let (b, queue) = Broker::with_queue("trace", "calls.#", FieldTable::default()).await;
    let app = spawn_ready(AMQP_URL, &b.exchange, "").await;
    let a = app
        .post_traced(&status_payload(&unique("trace"), "completed"), TRACEPARENT)
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let m = b.get(&queue).await.expect("message arrived");
    assert_eq!(header(&m, "traceparent").as_deref(), Some(TRACEPARENT));
    assert_eq!(
        header(&m, "cloudEvents_traceparent").as_deref(),
        Some(TRACEPARENT)
    );
    app.stop().await;
    b.cleanup().await;
}

/// The sender's retry after a partial failure goes only where it is needed: the file sink that
/// acknowledged the first delivery is not written again; RabbitMQ, which failed, gets the event.
#[tokio::test]
async fn a_redelivery_after_a_broker_outage_publishes_only_to_the_sink_that_failed() {
    let (b, queue) = Broker::with_queue("redeliver", "calls.#", FieldTable::default()).await;
    let (proxy, url) = proxied().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let app = spawn(&config_with_sinks(&format!(
        "{}{}",
        file_sink("archive", &file, ""),
        sink_yaml(&url, &b.exchange, "")
    )))
    .await;
    app.await_ready(true).await;

    proxy.cut();
    let webhook = status_payload(&unique("redeliver"), "completed");
    let first = app.post(&webhook).await;
    assert_eq!(first.status, 503, "{}", first.body);
    assert_eq!(first.body["sinks"]["archive"]["ok"], true);
    assert_eq!(first.body["sinks"][SINK]["ok"], false);
    assert_eq!(read_lines(&file).len(), 1);

    proxy.restore();
    app.await_ready(true).await;
    let retry = app.post(&webhook).await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(retry.body["event_id"], first.body["event_id"]);
    assert_eq!(
        retry.body["sinks"]["archive"]["duplicate"], true,
        "{}",
        retry.body
    );
    assert!(
        retry.body["sinks"][SINK]["duplicate"].is_null(),
        "{}",
        retry.body
    );
    assert_eq!(
        read_lines(&file).len(),
        1,
        "the file sink was not written again"
    );
    let delivered = b.drain(&queue).await;
    assert_eq!(delivered.len(), 1);
    assert_eq!(
        prop(delivered[0].delivery.properties.message_id()),
        first.body["event_id"].as_str()
    );
    app.stop().await;
    b.cleanup().await;
}

#[tokio::test]
async fn unroutable_event_is_503_and_nothing_is_delivered() {
    // Bound, but not for the keys the bridge will use.
    let (b, queue) = Broker::with_queue("unroutable", "other.#", FieldTable::default()).await;
    let app = spawn_ready(AMQP_URL, &b.exchange, "").await;

    let a = app
        .post(&status_payload(&unique("unroutable"), "completed"))
        .await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(a.retry_after.is_some());
    assert_eq!(a.body["sinks"][SINK]["ok"], false);
    assert_eq!(a.body["sinks"][SINK]["error"]["code"], "rejected");
    // The broker's reply (NO_ROUTE) and the routing key are in the log, not the answer.
    let msg = error_message(&a.body);
    assert_eq!(msg, "the destination refused the event");
    assert!(!a.body.to_string().contains("NO_ROUTE"), "{}", a.body);
    assert!(
        !a.body.to_string().contains("calls.status.completed"),
        "{}",
        a.body
    );
    assert_eq!(b.message_count(&queue).await, 0, "nothing was delivered");
    assert!(
        app.is_ready().await,
        "an unroutable event does not make the sink unready"
    );
    app.stop().await;
    b.cleanup().await;
}

#[tokio::test]
async fn full_queue_with_reject_publish_is_nacked_and_503() {
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(1));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let (b, queue) = Broker::with_queue("full", "calls.#", args).await;
    let app = spawn_ready(AMQP_URL, &b.exchange, "").await;

    let first = app
        .post(&status_payload(&unique("full"), "completed"))
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    let second = app
        .post(&status_payload(&unique("full"), "completed"))
        .await;
    assert_eq!(second.status, 503, "{}", second.body);
    assert!(second.retry_after.is_some());
    assert_eq!(second.body["sinks"][SINK]["error"]["code"], "rejected");
    assert_eq!(
        error_message(&second.body),
        "the destination refused the event"
    );
    let got = b.drain(&queue).await;
    assert_eq!(got.len(), 1, "only the first event is in the queue");
    assert_eq!(
        prop(got[0].delivery.properties.message_id()),
        first.body["event_id"].as_str()
    );
    // With room again, publishing works as before: a nack does not break the sink.
    let third = app
        .post(&status_payload(&unique("full"), "completed"))
        .await;
    assert_eq!(third.status, 200, "{}", third.body);
    app.stop().await;
    b.cleanup().await;
}

#[tokio::test]
async fn concurrent_routable_and_unroutable_publishes_are_told_apart() {
    // Many publishes in flight at once, half of them unroutable: each answer must match what the
    // broker did with that very message (a return attributed to the wrong publish would be a
    // 200 for an event that went nowhere).
    let (b, queue) =
        Broker::with_queue("mixed", "calls.status.completed", FieldTable::default()).await;
    let app = spawn_ready(AMQP_URL, &b.exchange, ", channels: 8").await;

    let n = 96;
    let started = Instant::now();
    let answers = futures::future::join_all((0..n).map(|i| {
        let status = if i % 2 == 0 { "completed" } else { "failed" };
        let payload = status_payload(&unique("mixed"), status);
        let app = &app;
        async move { (status, app.post(&payload).await) }
    }))
    .await;
    let elapsed = started.elapsed();
    let mut expected = HashSet::new();
    for (status, a) in &answers {
        if *status == "completed" {
            assert_eq!(a.status, 200, "{}", a.body);
            expected.insert(a.body["event_id"].as_str().expect("id").to_string());
        } else {
            assert_eq!(a.status, 503, "{}", a.body);
            assert_eq!(
                a.body["sinks"][SINK]["error"]["code"], "rejected",
                "{}",
                a.body
            );
        }
    }
    let got = b.message_ids(&queue).await;
    assert_eq!(got, expected, "exactly the acknowledged events arrived");
    eprintln!("{n} webhooks (half unroutable) at concurrency {n} over 8 channels: {elapsed:?}");
    app.stop().await;
    b.cleanup().await;
}

#[tokio::test]
async fn connection_cut_is_503_within_the_deadline_then_recovers_without_restart() {
    let (b, queue) = Broker::with_queue("cut", "calls.#", FieldTable::default()).await;
    let (proxy, url) = proxied().await;
    let app = spawn_ready(&url, &b.exchange, "").await;

    let before = app.post(&status_payload(&unique("cut"), "completed")).await;
    assert_eq!(before.status, 200, "{}", before.body);

    proxy.cut();
    let (during, took) = app
        .post_timed(&status_payload(&unique("cut"), "completed"))
        .await;
    assert_eq!(during.status, 503, "{}", during.body);
    assert!(during.retry_after.is_some());
    assert!(
        took < Duration::from_millis(3000 + 500),
        "answered after {took:?}, past the 3 s deadline"
    );
    let readyz_body = app.get("/readyz").await;
    app.await_ready(false).await;
    // The password never appears in what the bridge says.
    assert!(
        !during.body.to_string().contains("guest:guest"),
        "{}",
        during.body
    );
    assert!(!readyz_body.body.to_string().contains("guest:guest"));

    proxy.restore();
    app.await_ready(true).await;
    let after = app.post(&status_payload(&unique("cut"), "completed")).await;
    assert_eq!(after.status, 200, "{}", after.body);

    let ids = b.message_ids(&queue).await;
    assert!(ids.contains(before.event_id()));
    assert!(ids.contains(after.event_id()));
    eprintln!("503 during the cut after {took:?}: {}", during.body);
    app.stop().await;
    b.cleanup().await;
}

#[tokio::test]
async fn broker_down_at_startup_does_not_prevent_startup() {
    let (b, queue) = Broker::with_queue("startup", "calls.#", FieldTable::default()).await;
    let (proxy, url) = proxied().await;
    proxy.cut();
    let started = Instant::now();
    let app = spawn(&config_with_sinks(&sink_yaml(&url, &b.exchange, ""))).await;
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "startup waited too long"
    );
    assert!(!app.is_ready().await);
    let a = app
        .post(&status_payload(&unique("startup"), "completed"))
        .await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert_eq!(a.body["sinks"][SINK]["error"]["code"], "not_connected");

    proxy.restore();
    app.await_ready(true).await;
    let a = app
        .post(&status_payload(&unique("startup"), "completed"))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(b.message_count(&queue).await, 1);
    app.stop().await;
    b.cleanup().await;
}

#[tokio::test]
async fn silent_partition_times_out_within_the_deadline_then_reconnects() {
    // No RST, no FIN: the publish's confirm never comes (the lapin #246/#409 situation). The
    // request must still be answered in time, and the stalled connection must be replaced.
    let (b, queue) = Broker::with_queue("frozen", "calls.#", FieldTable::default()).await;
    let (proxy, url) = proxied().await;
    let app = spawn_ready(&url, &b.exchange, "").await;
    let before = app
        .post(&status_payload(&unique("frozen"), "completed"))
        .await;
    assert_eq!(before.status, 200, "{}", before.body);

    proxy.freeze();
    let (during, took) = app
        .post_timed(&status_payload(&unique("frozen"), "completed"))
        .await;
    assert_eq!(during.status, 503, "{}", during.body);
    assert_eq!(during.body["sinks"][SINK]["error"]["code"], "timeout");
    assert!(
        took < Duration::from_millis(3000 + 500),
        "answered after {took:?}, past the 3 s deadline"
    );
    // The stalled channel cannot be replaced, so the connection is given up: not ready.
    let stalled = Instant::now();
    app.await_ready(false).await;
    let noticed = stalled.elapsed();

    proxy.restore();
    app.await_ready(true).await;
    let after = app
        .post(&status_payload(&unique("frozen"), "completed"))
        .await;
    assert_eq!(after.status, 200, "{}", after.body);
    let ids = b.message_ids(&queue).await;
    assert!(ids.contains(before.event_id()));
    assert!(ids.contains(after.event_id()));
    eprintln!("silent partition: 503 after {took:?}, not ready {noticed:?} later");
    app.stop().await;
    b.cleanup().await;
}

#[tokio::test]
async fn exchange_deleted_at_runtime_is_declared_again() {
    // Someone deletes the exchange (and with it the bindings) under a running bridge that owns
    // its topology: the next publish fails, and the sink re-declares everything by itself.
    let mut b = Broker::new("redeclare").await;
    let queue = b.queue_name("redeclare");
    let app = spawn_ready(
        AMQP_URL,
        &b.exchange,
        &format!(
            ", declare: {{durable: false}}, \
             queues: [{{name: \"{queue}\", binding_key: \"calls.#\", durable: false}}]"
        ),
    )
    .await;
    let first = app
        .post(&status_payload(&unique("redeclare"), "completed"))
        .await;
    assert_eq!(first.status, 200, "{}", first.body);

    b.ch.exchange_delete(&b.exchange, ExchangeDeleteOptions::default())
        .await
        .expect("exchange deleted");
    let during = app
        .post(&status_payload(&unique("redeclare"), "completed"))
        .await;
    assert_eq!(during.status, 503, "{}", during.body);
    assert!(
        !during.body.to_string().contains("NOT_FOUND"),
        "the broker's words stay in the log: {}",
        during.body
    );

    let app = &app;
    let again = eventually(
        Duration::from_secs(30),
        "a 200 after re-declaring",
        || async move {
            let a = app
                .post(&status_payload(&unique("redeclare"), "completed"))
                .await;
            (a.status == 200).then_some(a)
        },
    )
    .await;
    let ids = b.message_ids(&queue).await;
    assert!(ids.contains(first.event_id()));
    assert!(ids.contains(again.event_id()));
    assert!(app.is_ready().await);
    b.cleanup().await;
}

#[tokio::test]
async fn confirm_lost_with_the_connection_is_503_at_once_not_a_hang() {
    // The broker stores the message but its confirm never reaches the bridge, then the
    // connection dies: the outcome is unknown, so the answer is 503 — and it comes as soon as
    // the connection is gone, not when the timeout expires. The sender's retry then delivers
    // the event again under the same message_id, which consumers deduplicate on.
    let (b, queue) = Broker::with_queue("lost", "calls.#", FieldTable::default()).await;
    let (proxy, url) = proxied().await;
    let app = spawn_ready(&url, &b.exchange, "").await;

    proxy.stall_replies();
    let payload = status_payload(&unique("lost"), "completed");
    let publish = async {
        let a = app.post(&payload).await;
        (a, Instant::now())
    };
    let sever = async {
        let b = &b;
        let queue = &queue;
        eventually(
            Duration::from_secs(10),
            "the message stored",
            || async move { (b.message_count(queue).await == 1).then_some(()) },
        )
        .await;
        proxy.cut();
        Instant::now()
    };
    let ((answer, answered_at), cut_at) = tokio::join!(publish, sever);
    assert_eq!(answer.status, 503, "{}", answer.body);
    let after_cut = answered_at.saturating_duration_since(cut_at);
    assert!(
        after_cut < Duration::from_millis(1000),
        "answered {after_cut:?} after the connection died (the timeout is 2 s)"
    );
    assert_ne!(answer.body["sinks"][SINK]["error"]["code"], "timeout");

    proxy.restore();
    app.await_ready(true).await;
    let retry = app.post(&payload).await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(retry.body["event_id"], answer.body["event_id"]);
    let got = b.drain(&queue).await;
    assert_eq!(
        got.len(),
        2,
        "stored once before the cut, once by the retry"
    );
    for m in &got {
        assert_eq!(
            prop(m.delivery.properties.message_id()),
            answer.body["event_id"].as_str()
        );
    }
    eprintln!(
        "confirm lost: 503 {after_cut:?} after the cut: {}",
        answer.body
    );
    app.stop().await;
    b.cleanup().await;
}

/// A status holding the routing key's separator and wildcards (`.`, `#`, `*`) stays one word:
/// a queue bound for one word after `calls.status` gets it, and one bound for more words
/// (`calls.status.a.#`, which the raw value would have matched) gets nothing.
#[tokio::test]
async fn separators_and_wildcards_in_a_status_stay_one_routing_key_word() {
    let (mut b, one_word) =
        Broker::with_queue("oneword", "calls.status.*", FieldTable::default()).await;
    let more_words = b.queue_name("morewords");
    b.declare_queue(&more_words, "calls.status.a.#", FieldTable::default())
        .await;
    let app = spawn_ready(AMQP_URL, &b.exchange, "").await;

    let a = app.post(&status_payload(&unique("words"), "a.b#c*d")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.body["sinks"][SINK]["receipt"]["routing_key"],
        "calls.status.a%2Eb%23c%2Ad"
    );
    let got = b.drain(&one_word).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].delivery.routing_key.as_str(),
        "calls.status.a%2Eb%23c%2Ad"
    );
    assert_eq!(
        header(&got[0], "cloudEvents_callstatus").as_deref(),
        Some("a.b#c*d"),
        "the header keeps the value as sent"
    );
    assert_eq!(b.message_count(&more_words).await, 0, "no extra words");
    app.stop().await;
    b.cleanup().await;
}

/// A call id of the longest accepted size, every byte escaped, renders a routing key within
/// AMQP's 255 bytes (shortened with a hash), so the event is delivered instead of refused.
#[tokio::test]
async fn the_longest_call_id_in_a_routing_key_is_shortened_and_delivered() {
    let (b, queue) = Broker::with_queue("longkey", "calls.#", FieldTable::default()).await;
    let app = spawn(&config_with_sinks(&format!(
        "  - {{name: {SINK}, type: rabbitmq, url: \"{AMQP_URL}\", exchange: \"{}\", \
         routing_key: \"calls.{{kind}}.{{call_id}}\", timeout_ms: 2000}}\n",
        b.exchange
    )))
    .await;
    app.await_ready(true).await;
    let call_id = format!("{}é", "#.".repeat(127)); // 256 bytes
    let a = app.post(&status_payload(&call_id, "completed")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let got = b.drain(&queue).await;
    assert_eq!(got.len(), 1);
    let key = got[0].delivery.routing_key.as_str();
    assert!(key.starts_with("calls.status.%23%2E"), "{key}");
    assert_eq!(key.matches('.').count(), 2, "{key}");
    assert!(key.len() <= 255);
    app.stop().await;
    b.cleanup().await;
}

/// AMQP sends an event's properties and headers in one content header frame, which must fit in
/// the connection's `frame_max`, or RabbitMQ closes the connection every publish shares. With
/// the smallest frame AMQP allows (4096, asked for in the URL), an event with the longest call
/// id and status the bridge accepts, in headers twice, is delivered and the connection stays up.
#[tokio::test]
async fn the_largest_accepted_headers_fit_the_smallest_frame_max() {
    let (b, queue) = Broker::with_queue("framemax", "calls.#", FieldTable::default()).await;
    let url = format!("{AMQP_URL}?frame_max=4096");
    let app = spawn_ready(&url, &b.exchange, "").await;
    let call_id = "é".repeat(128); // 256 bytes: the longest call id
    let status = "s".repeat(64); // the longest status
    let normal: Vec<serde_json::Value> = (0..4)
        .map(|i| status_payload(&unique(&format!("framemax{i}")), "completed"))
        .collect();
    let large = status_payload(&call_id, &status);
    let (large, normal) = tokio::join!(
        app.post(&large),
        futures::future::join_all(normal.iter().map(|p| app.post(p)))
    );
    assert_eq!(large.status, 200, "{}", large.body);
    for a in &normal {
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let got = b.drain(&queue).await;
    assert_eq!(got.len(), 5);
    assert!(got
        .iter()
        .any(|m| header(m, "cloudEvents_subject").as_deref() == Some(call_id.as_str())));
    assert!(app.is_ready().await, "the connection stayed up");
    app.stop().await;
    b.cleanup().await;
}

#[tokio::test]
async fn a_retry_while_the_confirm_is_outstanding_does_not_publish_again() {
    // The broker stores the message but its confirm is held: the first answer is a timeout 503,
    // and the publish stays in flight. The sender's retry meanwhile must not store a second
    // copy: it is answered 503 in_progress.
    let (b, queue) = Broker::with_queue("indoubt", "calls.#", FieldTable::default()).await;
    let (proxy, url) = proxied().await;
    let app = spawn_ready(&url, &b.exchange, "").await;

    proxy.stall_replies();
    let payload = status_payload(&unique("indoubt"), "completed");
    let first = app.post(&payload).await;
    assert_eq!(first.status, 503, "{}", first.body);
    assert_eq!(first.body["sinks"][SINK]["error"]["code"], "timeout");
    let (b2, queue2) = (&b, &queue);
    eventually(
        Duration::from_secs(10),
        "the message stored",
        || async move { (b2.message_count(queue2).await == 1).then_some(()) },
    )
    .await;

    let retry = app.post(&payload).await;
    assert_eq!(retry.status, 503, "{}", retry.body);
    assert_eq!(
        retry.body["sinks"][SINK]["error"]["code"], "in_progress",
        "{}",
        retry.body
    );
    assert_eq!(retry.body["event_id"], first.body["event_id"]);
    assert_eq!(
        b.message_count(&queue).await,
        1,
        "not published a second time while the first publish's outcome is unknown"
    );
    proxy.restore();
    app.stop().await;
    b.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// Many publishes in flight per channel, straight to the sink (no HTTP in the way): hundreds at
// once on each channel, returns and nacks interleaved with acks, and a connection killed under
// load. Each checks that what the sink reported delivered is exactly what the queues hold.
// ---------------------------------------------------------------------------------------------

/// The rabbitmq sink built from its settings, as the bridge builds it, once it is ready.
async fn direct_sink(url: &str, exchange: &str, extra: &str) -> Arc<dyn Sink> {
    let yaml = format!(
        "{{name: {SINK}, url: \"{url}\", exchange: \"{exchange}\", \
         routing_key: \"calls.{{kind}}.{{status}}\"{extra}}}"
    );
    let settings: RabbitmqSinkSettings = serde_yaml::from_str(&yaml).expect("sink settings");
    let sink = settings.build().await.expect("sink builds");
    eventually(Duration::from_secs(10), "the sink ready", || {
        let ready = sink.is_ready();
        async move { ready.then_some(()) }
    })
    .await;
    sink
}

/// The event of a status webhook for a new call.
fn status_event(prefix: &str, status: &str) -> Outgoing {
    let event = callbridge::event::normalize(
        &status_payload(&unique(prefix), status),
        Default::default(),
        &Default::default(),
        "2026-01-01T00:00:00Z".into(),
    )
    .expect("event");
    Outgoing::new(event)
}

/// What each publish was meant to do, and what the sink said.
#[derive(Default, Debug)]
struct Outcomes {
    /// Event ids reported delivered, by the status they were sent with.
    delivered: HashMap<String, HashSet<String>>,
    /// Unroutable publishes answered `rejected` + "unroutable".
    unroutable_rejected: usize,
    /// Publishes answered `rejected` + "nack".
    nacked: usize,
    /// Anything else, by error code (for the routable ones: a conservative failure).
    other: HashMap<String, usize>,
    /// The most publishes the test had waiting on the sink at once.
    peak_in_flight: usize,
}

/// Publishes `events` (status → how many) in a shuffled order, `concurrency` at once, and
/// sorts the answers. `retry` makes a publish that failed for a transient reason try again,
/// as a sender would, until it is delivered or rejected.
async fn publish_mix(
    sink: &Arc<dyn Sink>,
    events: &[(&str, usize)],
    concurrency: usize,
    retry: bool,
    mut after: impl FnMut(usize) + Send,
) -> Outcomes {
    use futures::StreamExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut all: Vec<(String, Outgoing)> = events
        .iter()
        .flat_map(|(status, n)| (0..*n).map(move |_| status.to_string()))
        .map(|status| {
            let out = status_event("pipelined", &status);
            (status, out)
        })
        .collect();
    // Interleave the kinds: a deterministic shuffle (the order matters only for mixing).
    let len = all.len();
    for i in (1..len).rev() {
        let j = (i.wrapping_mul(2_654_435_761) ^ (i >> 3)) % (i + 1);
        all.swap(i, j);
    }
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut answers = futures::stream::iter(all.into_iter().map(|(status, out)| {
        let sink = sink.clone();
        let in_flight = in_flight.clone();
        let peak = peak.clone();
        async move {
            let started = Instant::now();
            loop {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                let result = sink.publish(&out).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                let transient = result.as_ref().is_err_and(|e| e.is_transient());
                if retry && transient && started.elapsed() < Duration::from_secs(60) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                return (status, out.event.id.clone(), result);
            }
        }
    }))
    .buffer_unordered(concurrency);
    let mut o = Outcomes::default();
    let mut done = 0;
    while let Some((status, id, result)) = answers.next().await {
        done += 1;
        after(done);
        match result {
            Ok(_) => {
                o.delivered.entry(status).or_default().insert(id);
            }
            Err(e) if e.code() == "rejected" && e.to_string().contains("unroutable") => {
                assert_eq!(status, "failed", "{id} ({status}) reported unroutable: {e}");
                o.unroutable_rejected += 1;
            }
            Err(e) if e.code() == "rejected" && e.to_string().contains("nack") => {
                o.nacked += 1;
            }
            Err(e) => {
                eprintln!("{status} {id}: {}", e.detail());
                *o.other.entry(e.code().to_string()).or_default() += 1;
            }
        }
    }
    o.peak_in_flight = peak.load(Ordering::SeqCst);
    o
}

/// Several channels, hundreds of publishes in flight on each, ~8 % unroutable and ~5 % for a
/// queue that holds 40 (`x-max-length` + `x-overflow: reject-publish`), interleaved: every
/// unroutable one is rejected as unroutable, every nack is for the full queue, and each queue
/// holds exactly the events the sink reported delivered to it. A return attributed to the
/// wrong publish (lapin hands returns to whichever confirm resolves next) would show as an
/// unroutable event reported delivered, or a delivered one reported unroutable.
async fn pipelined_mix(channels: usize, per_channel: usize, total: usize) {
    let (mut b, routed) =
        Broker::with_queue("pipelined", "calls.status.completed", FieldTable::default()).await;
    let full = b.queue_name("pipelined-full");
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(40));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    b.declare_queue(&full, "calls.status.busy", args).await;
    let sink = direct_sink(
        AMQP_URL,
        &b.exchange,
        &format!(
            ", timeout_ms: 30000, channels: {channels}, max_in_flight_per_channel: {per_channel}"
        ),
    )
    .await;

    let unroutable = total * 8 / 100;
    let busy = total * 5 / 100;
    let routable = total - unroutable - busy;
    let started = Instant::now();
    let o = publish_mix(
        &sink,
        &[
            ("completed", routable),
            ("failed", unroutable),
            ("busy", busy),
        ],
        channels * per_channel,
        false,
        |_| {},
    )
    .await;
    let elapsed = started.elapsed();
    eprintln!(
        "{total} publishes over {channels} channels × {per_channel}: {elapsed:?}, peak {} in \
         flight, {} unroutable, {} nacked, other {:?}",
        o.peak_in_flight, o.unroutable_rejected, o.nacked, o.other
    );
    assert_eq!(o.unroutable_rejected, unroutable, "{o:?}");
    assert!(o.other.is_empty(), "no publish failed otherwise: {o:?}");
    let delivered_routed = o.delivered.get("completed").cloned().unwrap_or_default();
    let delivered_full = o.delivered.get("busy").cloned().unwrap_or_default();
    assert_eq!(delivered_routed.len(), routable, "{o:?}");
    assert_eq!(delivered_full.len(), 40, "the full queue took 40");
    assert_eq!(o.nacked, busy - 40, "{o:?}");
    assert!(o.peak_in_flight > channels * per_channel / 2, "{o:?}");
    assert_eq!(b.message_ids(&routed).await, delivered_routed);
    assert_eq!(b.message_ids(&full).await, delivered_full);
    sink.close().await;
    b.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_publishes_on_four_channels_with_returns_and_nacks_are_told_apart() {
    pipelined_mix(4, 256, 6000).await;
}

/// The worst case for attribution: every publish on one channel, 512 in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_publishes_on_one_channel_with_returns_and_nacks_are_told_apart() {
    pipelined_mix(1, 512, 4000).await;
}

/// The connection is reset (through the proxy) while hundreds of publishes are in flight on
/// each channel, ~8 % of them unroutable; publishes that fail for a transient reason are tried
/// again, as a sender would. In the end the events reported delivered are exactly those in the
/// queue (some twice: stored before the reset, their confirm lost, then stored by the retry),
/// and every unroutable one was rejected, none reported delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_reset_under_pipelined_load_loses_nothing_reported_delivered() {
    let (b, queue) =
        Broker::with_queue("pipecut", "calls.status.completed", FieldTable::default()).await;
    let (proxy, url) = proxied().await;
    let sink = direct_sink(
        &url,
        &b.exchange,
        ", timeout_ms: 5000, channels: 4, max_in_flight_per_channel: 128",
    )
    .await;
    let total = 5000;
    let unroutable = total * 8 / 100;
    let proxy = Arc::new(proxy);
    let p2 = proxy.clone();
    let mut cut = false;
    let o = publish_mix(
        &sink,
        &[("completed", total - unroutable), ("failed", unroutable)],
        512,
        true,
        move |done| {
            // Reset every connection a third of the way in, and let it come back shortly after.
            if done == total / 3 && !cut {
                cut = true;
                p2.cut();
                let p3 = p2.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    p3.restore();
                });
            }
        },
    )
    .await;
    eprintln!(
        "reset under load: {} delivered, {} unroutable, other {:?}, peak {} in flight",
        o.delivered.get("completed").map_or(0, |d| d.len()),
        o.unroutable_rejected,
        o.other,
        o.peak_in_flight
    );
    assert!(!o.delivered.contains_key("failed"), "{o:?}");
    assert_eq!(o.unroutable_rejected, unroutable, "{o:?}");
    assert!(
        o.other.is_empty(),
        "every transient failure was retried: {o:?}"
    );
    let delivered = o.delivered.get("completed").cloned().unwrap_or_default();
    assert_eq!(delivered.len(), total - unroutable);
    let stored = b.drain(&queue).await;
    let ids: HashSet<String> = stored
        .iter()
        .map(|m| {
            prop(m.delivery.properties.message_id())
                .expect("message_id")
                .to_string()
        })
        .collect();
    assert_eq!(
        ids, delivered,
        "the queue holds exactly what was reported delivered"
    );
    eprintln!(
        "{} messages stored for {} events: {} stored twice (confirm lost in the reset)",
        stored.len(),
        ids.len(),
        stored.len() - ids.len()
    );
    sink.close().await;
    b.cleanup().await;
}

/// Runs `callbridge dlq ARGS --url BASE --config CFG` off the runtime; its stdout.
async fn dlq_cli(args: &[&str], base: &str, cfg: &std::path::Path) -> String {
    let mut cmd = crate::common::bin();
    cmd.arg("dlq")
        .args(args)
        .args(["--url", base, "--config"])
        .arg(cfg);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A spooled event the broker refuses for good when it is replayed (no queue bound for its
/// key) lands in the dead-letter store instead of blocking the queue; `callbridge dlq list`
/// shows it through the running bridge with the reason, and once the operator binds a queue,
/// `dlq redrive` delivers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unroutable_spooled_event_is_dead_lettered_listed_and_redriven() {
    let (mut b, _) = Broker::with_queue("dlq", "other.#", FieldTable::default()).await;
    let (proxy, url) = proxied().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "spool: {{path: \"{}\"}}\n{}",
        dir.path().join("spool.redb").display(),
        config_with_sinks(&sink_yaml(&url, &b.exchange, ", on_unavailable: spool"))
    );
    let cfg = dir.path().join("callbridge.yaml");
    std::fs::write(&cfg, &yaml).unwrap();
    let app = spawn(&yaml).await;
    app.await_ready(true).await;

    proxy.cut();
    app.await_connected(SINK, false).await;
    let r = app.post(&status_payload(&unique("dlq"), "completed")).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["sinks"][SINK]["spooled"], true, "{}", r.body);
    let id = r.event_id().to_string();

    proxy.restore();
    let (base, cfg_ref, id_ref) = (app.base.clone(), &cfg, &id);
    let line = eventually(Duration::from_secs(20), "the dead letter", || {
        let base = base.clone();
        async move {
            let out = dlq_cli(&["list"], &base, cfg_ref).await;
            out.lines()
                .find(|l| l.contains(id_ref.as_str()))
                .map(str::to_string)
        }
    })
    .await;
    assert!(
        line.starts_with(SINK) && line.contains("unroutable"),
        "{line}"
    );

    // The operator binds a queue for the routing key, then redrives.
    let fixed = b.queue_name("dlq-fixed");
    b.declare_queue(&fixed, "calls.#", FieldTable::default())
        .await;
    let out = dlq_cli(&["redrive", "--sink", SINK], &base, &cfg).await;
    assert_eq!(out.trim(), "redriven: 1", "{out}");
    let b_ref = &b;
    let fixed_ref = &fixed;
    eventually(
        Duration::from_secs(20),
        "the redriven event in the queue",
        || async move { (b_ref.message_count(fixed_ref).await == 1).then_some(()) },
    )
    .await;
    let out = dlq_cli(&["list"], &base, &cfg).await;
    assert!(!out.contains(&id), "{out}");
    app.stop().await;
    b.cleanup().await;
}
