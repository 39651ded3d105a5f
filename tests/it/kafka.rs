//! The `kafka` sink against a real Kafka-protocol broker (tansu) and librdkafka's mock cluster.
//!
//! Broker: `CALLBRIDGE_TEST_KAFKA` (host:port, set by `scripts/test`) or, when unset, a private
//! tansu from `~/.cargo/bin` on a free port, stopped when this test binary exits.

use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::ClientConfig;
use serde_json::Value;

const SEEDS: [&str; 4] = [
    "analysis-callback.payload.json",
    "curl-test.payload.json",
    "registered-with-params.payload.json",
    "status-example.payload.json",
];

// ---------------------------------------------------------------------------------------------
// Broker process helpers

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A tansu process (in its own process group) that dies with the test binary at the latest.
struct Tansu {
    child: std::process::Child,
}

impl Tansu {
    /// Starts tansu listening on `listen`, advertising `advertised` (a proxy port, or the same).
    fn start(listen: u16, advertised: u16) -> Tansu {
        use std::os::unix::process::CommandExt;
        let bin = std::env::var("HOME")
            .map(|h| format!("{h}/.cargo/bin/tansu"))
            .expect("HOME");
        assert!(
            std::path::Path::new(&bin).exists(),
            "{bin} missing: run scripts/test (installs it) or set CALLBRIDGE_TEST_KAFKA"
        );
        // The watchdog shell stops tansu when this test process exits, however it exits.
        let script = format!(
            "\"{bin}\" broker --listener-url tcp://127.0.0.1:{listen} \
             --advertised-listener-url tcp://127.0.0.1:{advertised} \
             --storage-engine memory://tansu/ >/dev/null 2>&1 & t=$!; \
             while kill -0 {parent} 2>/dev/null && kill -0 $t 2>/dev/null; do sleep 0.5; done; kill $t",
            parent = std::process::id()
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn tansu");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", listen)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not open port {listen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Tansu { child }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        use nix::sys::signal::{killpg, Signal};
        let _ = killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// The shared broker for the happy-path tests.
fn broker() -> &'static str {
    static BROKER: OnceLock<(String, Option<Tansu>)> = OnceLock::new();
    &BROKER
        .get_or_init(|| match std::env::var("CALLBRIDGE_TEST_KAFKA") {
            Ok(addr) if !addr.is_empty() => (addr, None),
            _ => {
                let port = free_port();
                let t = Tansu::start(port, port);
                (format!("127.0.0.1:{port}"), Some(t))
            }
        })
        .0
}

async fn create_topics(brokers: &str, names: &[&str], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&topics, &opts)
        .await
        .expect("create topics");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("create topic {t}: {e}"));
    }
}

fn consumer(brokers: &str, topic: &str) -> StreamConsumer {
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("cb-test-group"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    c
}

/// One consumed record, owned.
#[derive(Debug, Clone)]
struct Record {
    topic: String,
    partition: i32,
    offset: i64,
    key: String,
    headers: Vec<(String, String)>,
    value: Value,
}

impl Record {
    fn from(m: &BorrowedMessage<'_>) -> Record {
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            String::from_utf8(h.value.unwrap_or_default().to_vec()).unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        Record {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
            key: String::from_utf8(m.key().unwrap_or_default().to_vec()).unwrap(),
            headers,
            value: serde_json::from_slice(m.payload().unwrap_or_default()).expect("JSON value"),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads `n` records (or panics after 30 s).
async fn consume(c: &StreamConsumer, n: usize) -> Vec<Record> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while out.len() < n {
        let m = tokio::time::timeout_at(deadline, c.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} records arrived", out.len()))
            .expect("consume");
        out.push(Record::from(&m));
    }
    out
}

fn kafka_sink(name: &str, brokers: &str, extra: &str) -> String {
    format!("  - {{name: {name}, type: kafka, brokers: \"{brokers}\", timeout_ms: 2500{extra}}}\n")
}

// ---------------------------------------------------------------------------------------------
// Against tansu

/// Every seed payload, binary mode: key = call id, `ce_*` headers, value = `data`, ce_id = the
/// event id of the 200 answer.
#[tokio::test]
async fn seed_payloads_arrive_in_binary_mode() {
    let brokers = broker();
    let topic = unique("cb-binary");
    create_topics(brokers, &[&topic], 3).await;
    let app = spawn(&config_with_sinks(&kafka_sink(
        "events",
        brokers,
        &format!(", topic: {topic}"),
    )))
    .await;
    let c = consumer(brokers, &topic);

    let mut answers = Vec::new();
    for seed in SEEDS {
        let payload = fixture(seed);
        let started = Instant::now();
        let a = app.post(&payload).await;
        assert_eq!(a.status, 200, "{seed}: {}", a.body);
        let receipt = &a.body["sinks"]["events"]["receipt"];
        assert_eq!(receipt["topic"], topic.as_str(), "{}", a.body);
        assert!(receipt["offset"].as_i64().unwrap() >= 0, "{}", a.body);
        eprintln!("{seed}: 200 in {:?}", started.elapsed());
        answers.push((payload, a.body));
    }

    let records = consume(&c, SEEDS.len()).await;
    for (payload, body) in &answers {
        let id = body["event_id"].as_str().unwrap();
        let r = records
            .iter()
            .find(|r| r.header("ce_id") == Some(id))
            .unwrap_or_else(|| panic!("no record with ce_id {id}: {records:?}"));
        let call_id = payload["data"]["call_id"].as_str().unwrap();
        let receipt = &body["sinks"]["events"]["receipt"];
        assert_eq!(r.partition as i64, receipt["partition"].as_i64().unwrap());
        assert_eq!(r.offset, receipt["offset"].as_i64().unwrap());
        assert_eq!(r.key, call_id);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("ce_specversion"), Some("1.0"));
        assert_eq!(r.header("ce_source"), Some("/callbridge"));
        assert_eq!(r.header("ce_subject"), Some(call_id));
        assert_eq!(r.header("ce_partitionkey"), Some(call_id));
        let kind = if payload["data"].get("analysis").is_some() {
            "analysis"
        } else {
            "status"
        };
        assert_eq!(
            r.header("ce_type"),
            Some(&*format!("ai.ringg.call.{kind}.v1"))
        );
        assert!(
            r.header("ce_time").is_some_and(|t| t.ends_with('Z')),
            "{r:?}"
        );
        if let Some(status) = payload["data"]["status"].as_str() {
            assert_eq!(r.header("ce_callstatus"), Some(status));
        }
        assert!(r
            .headers
            .iter()
            .all(|(k, _)| k == "content-type" || k.starts_with("ce_")));
        // Binary mode: the value is `data` alone.
        assert_eq!(r.value["call_id"], call_id);
        assert_eq!(r.value["kind"], kind);
        assert!(r.value.get("specversion").is_none(), "{:?}", r.value);
    }
    app.stop().await;
}

/// One call's statuses land in one partition, in the order they were acknowledged.
#[tokio::test]
async fn one_calls_statuses_arrive_in_order_in_one_partition() {
    let brokers = broker();
    let topic = unique("cb-order");
    create_topics(brokers, &[&topic], 4).await;
    let app = spawn(&config_with_sinks(&kafka_sink(
        "events",
        brokers,
        &format!(", topic: {topic}"),
    )))
    .await;
    let c = consumer(brokers, &topic);
    let call_a = unique("call-a");
    let call_b = unique("call-b");
    let statuses = ["registered", "ongoing", "completed"];
    for status in statuses {
        for call in [&call_a, &call_b] {
            let a = app.post(&status_payload(call, status)).await;
            assert_eq!(a.status, 200, "{}", a.body);
        }
    }
    let records = consume(&c, 6).await;
    for call in [&call_a, &call_b] {
        let mine: Vec<&Record> = records.iter().filter(|r| &r.key == call).collect();
        assert_eq!(mine.len(), 3, "{records:?}");
        assert!(mine.iter().all(|r| r.partition == mine[0].partition));
        let got: Vec<&str> = mine
            .iter()
            .map(|r| r.value["status"].as_str().unwrap())
            .collect();
        assert_eq!(got, statuses);
        assert!(mine.windows(2).all(|w| w[0].offset < w[1].offset));
    }
    app.stop().await;
}

/// Structured mode: the whole event as the value, CloudEvents JSON content type.
#[tokio::test]
async fn structured_mode_carries_the_whole_event() {
    let brokers = broker();
    let topic = unique("cb-structured");
    create_topics(brokers, &[&topic], 1).await;
    let app = spawn(&config_with_sinks(&kafka_sink(
        "events",
        brokers,
        &format!(", topic: {topic}, format: structured, key: \"{{agent_id}}\""),
    )))
    .await;
    let c = consumer(brokers, &topic);
    let payload = fixture("status-example.payload.json");
    let a = app.post(&payload).await;
    assert_eq!(a.status, 200, "{}", a.body);
    let r = &consume(&c, 1).await[0];
    assert_eq!(
        r.header("content-type"),
        Some("application/cloudevents+json; charset=UTF-8")
    );
    assert_eq!(r.headers.len(), 1, "{r:?}");
    assert_eq!(r.value["id"], a.body["event_id"]);
    assert_eq!(r.value["specversion"], "1.0");
    assert_eq!(r.value["data"]["call_id"], payload["data"]["call_id"]);
    let agent = r.value["data"]["agent_id"].as_str().unwrap_or("unknown");
    assert_eq!(r.key, agent);
    app.stop().await;
}

/// The sender's trace context reaches the record in both modes: the W3C `traceparent` header,
/// and in binary mode the CloudEvents `ce_traceparent` too (tracing off: passed through).
#[tokio::test]
async fn traceparent_reaches_the_record() {
    let brokers = broker();
    let topic = unique("cb-trace");
    create_topics(brokers, &[&topic], 1).await;
    let app = spawn(&config_with_sinks(&format!(
        "{}{}",
        kafka_sink("bin", brokers, &format!(", topic: {topic}")),
        kafka_sink(
            "st",
            brokers,
            &format!(", topic: {topic}, format: structured")
        )
    )))
    .await;
    let c = consumer(brokers, &topic);
    let a = app
        .post_traced(&status_payload(&unique("trace"), "completed"), TRACEPARENT)
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let records = consume(&c, 2).await;
    for r in &records {
        assert_eq!(r.header("traceparent"), Some(TRACEPARENT), "{r:?}");
    }
    assert!(records
        .iter()
        .any(|r| r.header("ce_traceparent") == Some(TRACEPARENT)));
    assert!(records
        .iter()
        .any(|r| r.value["traceparent"] == TRACEPARENT));
    app.stop().await;
}

/// `topic: prefix.{kind}` puts status and analysis events on different topics.
#[tokio::test]
async fn topic_template_routes_by_kind() {
    let brokers = broker();
    let prefix = unique("cb-route");
    let status_topic = format!("{prefix}.status");
    let analysis_topic = format!("{prefix}.analysis");
    create_topics(brokers, &[&status_topic, &analysis_topic], 1).await;
    let app = spawn(&config_with_sinks(&kafka_sink(
        "events",
        brokers,
        &format!(", topic: \"{prefix}.{{kind}}\""),
    )))
    .await;
    let status = app.post(&fixture("curl-test.payload.json")).await;
    let analysis = app.post(&fixture("analysis-callback.payload.json")).await;
    assert_eq!(status.status, 200, "{}", status.body);
    assert_eq!(analysis.status, 200, "{}", analysis.body);
    assert_eq!(
        status.body["sinks"]["events"]["receipt"]["topic"],
        status_topic.as_str()
    );
    let s = &consume(&consumer(brokers, &status_topic), 1).await[0];
    let an = &consume(&consumer(brokers, &analysis_topic), 1).await[0];
    assert_eq!(s.topic, status_topic);
    assert_eq!(s.header("ce_id"), status.body["event_id"].as_str());
    assert_eq!(an.topic, analysis_topic);
    assert_eq!(an.header("ce_id"), analysis.body["event_id"].as_str());
    assert_eq!(an.value["kind"], "analysis");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Outages

async fn wait_ready(app: &TestApp, want: bool) {
    eventually(
        Duration::from_secs(15),
        &format!("readyz = {want}"),
        || async { ((app.get("/readyz").await.status == 200) == want).then_some(()) },
    )
    .await;
}

/// Mock cluster down: 503 within the deadline naming the sink, the file sink still acks,
/// /readyz false; cluster back: ready again and the next webhook is 200.
#[tokio::test]
async fn broker_down_is_503_in_time_and_recovers() {
    let mock = MockCluster::new(1).expect("mock cluster");
    let brokers = mock.bootstrap_servers();
    let topic = unique("cb-mock");
    mock.create_topic(&topic, 1, 1).expect("mock topic");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let sinks = format!(
        "{}  - {{name: archive, type: file, path: \"{}\"}}\n",
        kafka_sink("bus", &brokers, &format!(", topic: {topic}")),
        file.display()
    );
    let app = spawn(&config_with_sinks(&sinks)).await;
    wait_ready(&app, true).await;
    let a = app.post(&status_payload(&unique("call"), "ongoing")).await;
    assert_eq!(a.status, 200, "{}", a.body);

    mock.broker_down(1).expect("broker down");
    let started = Instant::now();
    let a = app
        .post(&status_payload(&unique("call"), "completed"))
        .await;
    let took = started.elapsed();
    eprintln!("broker down: {} in {took:?}: {}", a.status, a.body);
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(
        took < Duration::from_millis(3000 + 500),
        "deadline is 3 s: {took:?}"
    );
    assert!(a.retry_after.is_some());
    let bus = &a.body["sinks"]["bus"];
    assert_eq!(bus["ok"], false, "{}", a.body);
    assert!(bus["error"]["message"].as_str().is_some(), "{}", a.body);
    assert!(
        a.body["error"]["message"].as_str().unwrap().contains("bus"),
        "names the sink: {}",
        a.body
    );
    assert_eq!(a.body["sinks"]["archive"]["ok"], true, "{}", a.body);
    assert_eq!(read_lines(&file).len(), 2);
    wait_ready(&app, false).await;

    mock.broker_up(1).expect("broker up");
    wait_ready(&app, true).await;
    let started = Instant::now();
    let a = app
        .post(&status_payload(&unique("call"), "completed"))
        .await;
    eprintln!("broker back: {} in {:?}", a.status, started.elapsed());
    assert_eq!(a.status, 200, "{}", a.body);
    app.stop().await;
}

/// Nothing listens: startup still succeeds, /readyz says no, webhooks get 503 in time.
#[tokio::test]
async fn dead_port_does_not_block_startup() {
    let port = free_port();
    let started = Instant::now();
    let app = spawn(&config_with_sinks(&kafka_sink(
        "bus",
        &format!("127.0.0.1:{port}"),
        ", topic: t",
    )))
    .await;
    assert!(started.elapsed() < Duration::from_secs(2));
    wait_ready(&app, false).await;
    let started = Instant::now();
    let a = app.post(&status_payload(&unique("call"), "ongoing")).await;
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(started.elapsed() < Duration::from_millis(3500));
    assert_eq!(a.body["sinks"]["bus"]["ok"], false);
    app.stop().await;
}

/// The idempotent-producer pitfall: a record times out while the connection is cut; once it is
/// back, the bridge must deliver again (by replacing the poisoned producer), not fail forever.
#[tokio::test]
async fn outage_with_timed_out_record_heals() {
    let (tansu_port, proxy_port) = (free_port(), free_port());
    let _tansu = Tansu::start(tansu_port, proxy_port);
    let proxy = proxy::TcpProxy::start_on(proxy_port, ([127, 0, 0, 1], tansu_port).into()).await;
    let brokers = format!("127.0.0.1:{proxy_port}");
    let topic = unique("cb-heal");
    create_topics(&brokers, &[&topic], 1).await;
    let app = spawn(&config_with_sinks(&kafka_sink(
        "bus",
        &brokers,
        &format!(", topic: {topic}"),
    )))
    .await;
    let a = app
        .post(&status_payload(&unique("call"), "registered"))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);

    proxy.cut();
    let a = app.post(&status_payload(&unique("call"), "ongoing")).await;
    assert_eq!(a.status, 503, "{}", a.body);
    eprintln!("cut: {}", a.body["sinks"]["bus"]["error"]);
    proxy.restore();
    wait_ready(&app, true).await;

    for status in ["completed", "failed"] {
        let started = Instant::now();
        let a = app.post(&status_payload(&unique("call"), status)).await;
        eprintln!("after restore: {} in {:?}", a.status, started.elapsed());
        assert_eq!(a.status, 200, "{}", a.body);
    }
    // The cut-off record may or may not have been stored (at-least-once); the later ones must be.
    let c = consumer(&brokers, &topic);
    let mut seen = Vec::new();
    while !(seen.contains(&"completed".to_string()) && seen.contains(&"failed".to_string())) {
        let r = &consume(&c, 1).await[0];
        seen.push(r.value["status"].as_str().unwrap().to_string());
    }
    assert_eq!(seen[0], "registered", "{seen:?}");
    app.stop().await;
}

/// A topic the cluster does not have: 503 within the deadline, naming the sink and the topic.
#[tokio::test]
async fn unknown_topic_is_503_in_time() {
    let mock = MockCluster::new(1).expect("mock cluster");
    let brokers = mock.bootstrap_servers();
    let topic = unique("cb-missing");
    mock.topic_error(
        &topic,
        rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART,
    )
    .expect("topic error");
    let app = spawn(&config_with_sinks(&kafka_sink(
        "bus",
        &brokers,
        &format!(", topic: {topic}"),
    )))
    .await;
    let started = Instant::now();
    let a = app.post(&status_payload(&unique("call"), "ongoing")).await;
    let took = started.elapsed();
    eprintln!("unknown topic: {} in {took:?}: {}", a.status, a.body);
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(took < Duration::from_millis(3500), "{took:?}");
    assert_eq!(a.body["sinks"]["bus"]["ok"], false);
    let why = a.body["sinks"]["bus"]["error"]["message"].as_str().unwrap();
    assert!(why.contains(&topic), "{why}");
    assert!(
        a.body["error"]["message"].as_str().unwrap().contains("bus"),
        "{}",
        a.body
    );
    app.stop().await;
}

/// A full local queue is back-pressure: the publish waits for room, then fails with
/// `queue_full` before the deadline instead of growing memory.
#[tokio::test]
async fn full_local_queue_waits_then_503() {
    let mock = MockCluster::new(1).expect("mock cluster");
    let brokers = mock.bootstrap_servers();
    let topic = unique("cb-full");
    mock.create_topic(&topic, 1, 1).expect("mock topic");
    mock.broker_down(1).expect("broker down");
    let app = spawn(&config_with_sinks(&kafka_sink(
        "bus",
        &brokers,
        &format!(", topic: {topic}, librdkafka: {{\"queue.buffering.max.messages\": 1}}"),
    )))
    .await;
    let first_payload = status_payload(&unique("call"), "ongoing");
    let first = app.post(&first_payload);
    let second = async {
        // Let the first record take the only slot.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = Instant::now();
        let a = app.post(&status_payload(&unique("call"), "ongoing")).await;
        (a, started.elapsed())
    };
    let (first, (second, took)) = tokio::join!(first, second);
    eprintln!("queue full: {} in {took:?}: {}", second.status, second.body);
    assert_eq!(first.status, 503, "{}", first.body);
    assert_eq!(second.status, 503, "{}", second.body);
    assert_eq!(second.body["sinks"]["bus"]["error"]["code"], "queue_full");
    assert!(
        took >= Duration::from_millis(1000),
        "it waited for room: {took:?}"
    );
    assert!(took < Duration::from_millis(3500), "{took:?}");
    app.stop().await;
}

/// A fence injected into a Produce response: that webhook gets 503 naming the error, the
/// sender's retry of it gets 200 (librdkafka recovers on the mock cluster; on tansu it does not,
/// see `outage_with_timed_out_record_heals`).
#[tokio::test]
async fn injected_fence_is_503_then_retry_succeeds() {
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let mock = MockCluster::new(1).expect("mock cluster");
    let brokers = mock.bootstrap_servers();
    let topic = unique("cb-fenced");
    mock.create_topic(&topic, 1, 1).expect("mock topic");
    let app = spawn(&config_with_sinks(&kafka_sink(
        "bus",
        &brokers,
        &format!(", topic: {topic}"),
    )))
    .await;
    let payload = status_payload(&unique("call"), "ongoing");
    mock.request_errors(
        RDKafkaApiKey::Produce,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_PRODUCER_FENCED],
    );
    let a = app.post(&payload).await;
    eprintln!("fenced: {} {}", a.status, a.body);
    assert_eq!(a.status, 503, "{}", a.body);
    let why = a.body["sinks"]["bus"]["error"]["message"].as_str().unwrap();
    assert!(why.contains("ProducerFenced"), "{why}");
    let started = Instant::now();
    let retry = app.post(&payload).await;
    eprintln!(
        "retry after fence: {} in {:?}",
        retry.status,
        started.elapsed()
    );
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(retry.body["event_id"], a.body["event_id"]);
    app.stop().await;
}
