//! The `kafka` sink against Apache Kafka (the version pinned in `scripts/kafka/pom.xml`, KRaft
//! mode, started by `scripts/kafka/kafka`):
//! - one shared node for the happy paths: `CALLBRIDGE_TEST_KAFKA` (host:port, set by
//!   `scripts/test`) or, when unset, a private node started here;
//! - private nodes for outages (killed and restarted, or reached through the test proxy);
//! - a private three-node cluster (replication factor 3, `min.insync.replicas=2`) for the
//!   replication guarantees: one broker killed, two killed, the partition leader killed under load;
//! - librdkafka's mock cluster only for the one fault a real broker cannot be made to produce
//!   on demand (a fenced producer); those tests are named `mock_*`.
//!
//! Every broker process started here runs under a watchdog shell and dies with this test binary
//! at the latest; a broker this binary did not start is never stopped.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::*;
use futures::StreamExt;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::metadata::Metadata;
use rdkafka::mocking::MockCluster;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;

const SEEDS: [&str; 4] = [
    "analysis-callback.payload.json",
    "curl-test.payload.json",
    "registered-with-params.payload.json",
    "status-example.payload.json",
];

// ---------------------------------------------------------------------------------------------
// Broker processes

const KAFKA_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka/kafka");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A private Apache Kafka cluster laid out by `scripts/kafka/kafka configure`: node 1 is broker
/// and the only controller, nodes 2.. are brokers, so killing any of those leaves the metadata
/// quorum up (the controller fences the dead broker and shrinks the ISRs, as in production).
struct Cluster {
    dir: tempfile::TempDir,
    bootstrap: String,
    /// The watchdog shell of each node (index = node id - 1), `None` while the node is down.
    nodes: Vec<Option<Child>>,
}

impl Cluster {
    /// Lays out `n` nodes on free loopback ports without starting them; node 1 advertises
    /// `advertise` (a proxy's port) when given.
    fn configure(n: usize, advertise: Option<u16>) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("cb-kafka-")
            .tempdir()
            .expect("tempdir");
        let mut cmd = Command::new(KAFKA_SCRIPT);
        cmd.arg("configure").arg(dir.path()).arg(n.to_string());
        if let Some(port) = advertise {
            cmd.arg(port.to_string());
        }
        let out = cmd.output().expect("run scripts/kafka/kafka configure");
        assert!(
            out.status.success(),
            "kafka configure: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bootstrap = String::from_utf8_lossy(&out.stdout).trim().to_string();
        Cluster {
            dir,
            bootstrap,
            nodes: (0..n).map(|_| None).collect(),
        }
    }

    /// Lays out and starts `n` nodes.
    fn start(n: usize) -> Cluster {
        let mut c = Cluster::configure(n, None);
        c.start_all();
        c
    }

    fn node_dir(&self, node: usize) -> PathBuf {
        self.dir.path().join(format!("node-{node}"))
    }

    /// The node's own listener port.
    fn port(&self, node: usize) -> u16 {
        let p = self.node_dir(node).join("port");
        std::fs::read_to_string(&p)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("no port in {}", p.display()))
    }

    fn start_all(&mut self) {
        for node in 1..=self.nodes.len() {
            self.start_node(node);
        }
    }

    /// Starts (or restarts, on the same ports and log directory) a node that is down.
    fn start_node(&mut self, node: usize) {
        if self.nodes[node - 1].is_some() {
            return;
        }
        let dir = self.node_dir(node);
        // The watchdog ends the broker when this test process exits, however it exits.
        let script = format!(
            "\"{KAFKA_SCRIPT}\" run \"{d}\" >>\"{d}/out.log\" 2>&1 & k=$!; \
             while kill -0 {parent} 2>/dev/null && kill -0 $k 2>/dev/null; do sleep 0.5; done; \
             kill -9 $k 2>/dev/null",
            d = dir.display(),
            parent = std::process::id()
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn a kafka node");
        self.nodes[node - 1] = Some(child);
    }

    /// SIGKILL: the broker and its watchdog die at once, as in a crash.
    fn kill(&mut self, node: usize) {
        use nix::sys::signal::{killpg, Signal};
        if let Some(mut child) = self.nodes[node - 1].take() {
            let _ = killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                Signal::SIGKILL,
            );
            let _ = child.wait();
        }
    }

    /// The cluster's metadata as a client sees it (None while no broker answers).
    async fn metadata(&self) -> Option<Metadata> {
        metadata(&self.bootstrap).await
    }

    /// Waits until `want` brokers are registered and unfenced.
    async fn wait_brokers(&self, want: usize) {
        eventually(
            Duration::from_secs(90),
            &format!("{want} kafka brokers at {}", self.bootstrap),
            || async {
                let md = self.metadata().await?;
                (md.brokers().len() == want).then_some(())
            },
        )
        .await;
    }

    /// Restarts every node that is down and waits for all of them.
    async fn heal(&mut self) {
        self.start_all();
        self.wait_brokers(self.nodes.len()).await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in 1..=self.nodes.len() {
            self.kill(node);
        }
    }
}

/// Metadata for every topic, fetched on a blocking thread (None when no broker answers).
async fn metadata(bootstrap: &str) -> Option<Metadata> {
    let bootstrap = bootstrap.to_string();
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .ok()?;
        c.fetch_metadata(None, Duration::from_secs(2)).ok()
    })
    .await
    .ok()
    .flatten()
}

/// The shared node for the happy-path tests.
pub(crate) async fn broker() -> &'static str {
    static BROKER: OnceLock<(String, Option<Cluster>)> = OnceLock::new();
    if let Some((addr, _)) = BROKER.get() {
        return addr;
    }
    let (addr, own) = match std::env::var("CALLBRIDGE_TEST_KAFKA") {
        Ok(addr) if !addr.is_empty() => (addr, None),
        _ => {
            let c = Cluster::start(1);
            c.wait_brokers(1).await;
            (c.bootstrap.clone(), Some(c))
        }
    };
    // A test that lost the race drops its node; every test uses the one stored first.
    &BROKER.get_or_init(|| (addr, own)).0
}

/// Creates topics with `partitions` partitions, each replicated to the nodes in `replicas`
/// (first = preferred leader), or on one replica when `replicas` is empty.
async fn create_topics_on(brokers: &str, names: &[&str], partitions: i32, replicas: &[i32]) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let assignment: Vec<&[i32]> = (0..partitions).map(|_| replicas).collect();
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| {
            let replication = if replicas.is_empty() {
                TopicReplication::Fixed(1)
            } else {
                TopicReplication::Variable(&assignment)
            };
            NewTopic::new(n, partitions, replication)
        })
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

pub(crate) async fn create_topics(brokers: &str, names: &[&str], partitions: i32) {
    create_topics_on(brokers, names, partitions, &[]).await
}

/// A consumer assigned every partition of `topic` from the beginning: no consumer group, so
/// reading back works while brokers are down or a group coordinator is moving.
pub(crate) async fn consumer(brokers: &str, topic: &str) -> StreamConsumer {
    let md = eventually(
        Duration::from_secs(30),
        &format!("metadata of {topic}"),
        || async {
            let md = metadata(brokers).await?;
            let t = md.topics().iter().find(|t| t.name() == topic)?;
            (!t.partitions().is_empty()).then(|| t.partitions().len() as i32)
        },
    )
    .await;
    let from: Vec<(i32, Offset)> = (0..md).map(|p| (p, Offset::Beginning)).collect();
    assigned(brokers, topic, &from)
}

/// A consumer without a consumer group, reading `topic`'s partitions from the given offsets.
fn assigned(brokers: &str, topic: &str, from: &[(i32, Offset)]) -> StreamConsumer {
    let mut tpl = TopicPartitionList::new();
    for (partition, offset) in from {
        tpl.add_partition_offset(topic, *partition, *offset)
            .expect("assign offset");
    }
    let c: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("cb-test-group"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    c.assign(&tpl).expect("assign");
    c
}

/// The one record at `topic`/`partition`/`offset`, as a consumer reading that offset sees it.
async fn read_at(brokers: &str, topic: &str, partition: i32, offset: i64) -> Record {
    let c = assigned(brokers, topic, &[(partition, Offset::Offset(offset))]);
    consume(&c, 1).await.remove(0)
}

/// One consumed record, owned.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) value: Value,
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

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads `n` records (or panics after 30 s).
async fn consume(c: &StreamConsumer, n: usize) -> Vec<Record> {
    let records = consume_until(c, |rs| rs.len() >= n).await;
    assert!(
        records.len() >= n,
        "only {} of {n} records arrived",
        records.len()
    );
    records
}

/// Reads records until `done` holds for all that arrived, or 30 s pass without it; returns
/// what arrived (the caller asserts, and can say what is missing).
pub(crate) async fn consume_until(
    c: &StreamConsumer,
    done: impl Fn(&[Record]) -> bool,
) -> Vec<Record> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done(&out) {
        match tokio::time::timeout_at(deadline, c.recv()).await {
            Ok(Ok(m)) => out.push(Record::from(&m)),
            // A dead broker in the bootstrap list, a leader moving: the client retries.
            Ok(Err(e)) => eprintln!("consumer: {e}"),
            Err(_) => break,
        }
    }
    out
}

pub(crate) fn kafka_sink(name: &str, brokers: &str, extra: &str) -> String {
    format!("  - {{name: {name}, type: kafka, brokers: \"{brokers}\", timeout_ms: 2500{extra}}}\n")
}

/// The shared node, a fresh topic of `partitions` partitions, a bridge whose one kafka sink
/// `events` publishes to it (`extra`: more sink settings, YAML flow syntax), and a consumer of it.
async fn on_fresh_topic(
    prefix: &str,
    partitions: i32,
    extra: &str,
) -> (&'static str, String, TestApp, StreamConsumer) {
    let brokers = broker().await;
    let topic = unique(prefix);
    create_topics(brokers, &[&topic], partitions).await;
    let sink = kafka_sink("events", brokers, &format!(", topic: {topic}{extra}"));
    let app = spawn(&config_with_sinks(&sink)).await;
    let c = consumer(brokers, &topic).await;
    (brokers, topic, app, c)
}

/// A config whose deadline leaves room for a failover: sink timeout 8 s, answer by 9 s.
fn failover_config(brokers: &str, topic: &str) -> String {
    config_with_sinks(&format!(
        "  - {{name: bus, type: kafka, brokers: \"{brokers}\", timeout_ms: 8000, topic: {topic}}}\n"
    ))
    .replace("deadline_ms: 3000", "deadline_ms: 9000")
}

// ---------------------------------------------------------------------------------------------
// Against the shared node

/// Every seed payload, binary mode: key = call id, `ce_*` headers, value = `data`, ce_id = the
/// event id of the 200 answer.
#[tokio::test]
async fn seed_payloads_arrive_in_binary_mode() {
    let (brokers, topic, app, c) = on_fresh_topic("cb-binary", 3, "").await;

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
        // The receipt is where a consumer finds the record.
        let at = read_at(
            brokers,
            &topic,
            receipt["partition"].as_i64().unwrap() as i32,
            receipt["offset"].as_i64().unwrap(),
        )
        .await;
        assert_eq!(at.header("ce_id"), Some(id), "{at:?}");
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
    let (_, _, app, c) = on_fresh_topic("cb-order", 4, "").await;
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
    let (_, _, app, c) = on_fresh_topic(
        "cb-structured",
        1,
        ", format: structured, key: \"{agent_id}\"",
    )
    .await;
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
    let brokers = broker().await;
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
    let c = consumer(brokers, &topic).await;
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
    let brokers = broker().await;
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
    let s = &consume(&consumer(brokers, &status_topic).await, 1).await[0];
    let an = &consume(&consumer(brokers, &analysis_topic).await, 1).await[0];
    assert_eq!(s.topic, status_topic);
    assert_eq!(s.header("ce_id"), status.body["event_id"].as_str());
    assert_eq!(an.topic, analysis_topic);
    assert_eq!(an.header("ce_id"), analysis.body["event_id"].as_str());
    assert_eq!(an.value["kind"], "analysis");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Outages of a private node

/// The broker killed (SIGKILL): 503 within the deadline naming the sink, the file sink still
/// acknowledges, /readyz false; the broker restarted: ready again and the next webhook is 200.
#[tokio::test]
async fn broker_killed_is_503_in_time_and_recovers() {
    let mut kafka = Cluster::start(1);
    kafka.wait_brokers(1).await;
    let brokers = kafka.bootstrap.clone();
    let topic = unique("cb-killed");
    create_topics(&brokers, &[&topic], 1).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.jsonl");
    let sinks = format!(
        "{}{}",
        kafka_sink("bus", &brokers, &format!(", topic: {topic}")),
        file_sink("archive", &file, "")
    );
    let app = spawn(&config_with_sinks(&sinks)).await;
    app.await_ready(true).await;
    let a = app.post(&status_payload(&unique("call"), "ongoing")).await;
    assert_eq!(a.status, 200, "{}", a.body);

    kafka.kill(1);
    let started = Instant::now();
    let a = app
        .post(&status_payload(&unique("call"), "completed"))
        .await;
    let took = started.elapsed();
    eprintln!("broker killed: {} in {took:?}: {}", a.status, a.body);
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
    app.await_ready(false).await;

    kafka.heal().await;
    app.await_ready(true).await;
    let started = Instant::now();
    let call = unique("call");
    let a = app.post(&status_payload(&call, "completed")).await;
    eprintln!("broker back: {} in {:?}", a.status, started.elapsed());
    assert_eq!(a.status, 200, "{}", a.body);
    // The record acknowledged before the kill survived the restart, the new one is there too.
    let c = consumer(&brokers, &topic).await;
    let records = consume_until(&c, |rs| rs.iter().any(|r| r.key == call)).await;
    assert!(records.iter().any(|r| r.key == call), "{records:?}");
    assert_eq!(records[0].value["status"], "ongoing", "{records:?}");
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
    app.await_ready(false).await;
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
    let proxy_port = free_port();
    let mut kafka = Cluster::configure(1, Some(proxy_port));
    let proxy = proxy::TcpProxy::start_on(proxy_port, ([127, 0, 0, 1], kafka.port(1)).into()).await;
    kafka.start_all();
    let brokers = format!("127.0.0.1:{proxy_port}");
    kafka.wait_brokers(1).await;
    let topic = unique("cb-heal");
    create_topics(&brokers, &[&topic], 1).await;
    let app = spawn(&config_with_sinks(&kafka_sink(
        "bus",
        &brokers,
        &format!(", topic: {topic}"),
    )))
    .await;
    // The first record into a topic created a moment ago can race its leader's election on a
    // loaded machine (503, retried like the sender would): what matters here is what follows.
    let app_ref = &app;
    eventually(
        Duration::from_secs(30),
        "a first record stored",
        || async move {
            let a = app_ref
                .post(&status_payload(&unique("call"), "registered"))
                .await;
            (a.status == 200).then_some(())
        },
    )
    .await;

    proxy.cut();
    let a = app.post(&status_payload(&unique("call"), "ongoing")).await;
    assert_eq!(a.status, 503, "{}", a.body);
    eprintln!("cut: {}", a.body["sinks"]["bus"]["error"]);
    proxy.restore();
    app.await_ready(true).await;

    for status in ["completed", "failed"] {
        let started = Instant::now();
        let a = app.post(&status_payload(&unique("call"), status)).await;
        eprintln!("after restore: {} in {:?}", a.status, started.elapsed());
        assert_eq!(a.status, 200, "{}", a.body);
    }
    // The cut-off record may or may not have been stored (at-least-once); the later ones must be.
    let c = consumer(&brokers, &topic).await;
    let both = |rs: &[Record]| {
        ["completed", "failed"]
            .iter()
            .all(|s| rs.iter().any(|r| r.value["status"] == *s))
    };
    let seen = consume_until(&c, both).await;
    assert!(both(&seen), "{seen:?}");
    assert_eq!(seen[0].value["status"], "registered", "{seen:?}");
    app.stop().await;
}

/// A topic the cluster does not have (topics are never auto-created here): 503 within the
/// deadline, naming the sink and the topic.
#[tokio::test]
async fn unknown_topic_is_503_in_time() {
    let brokers = broker().await;
    let topic = unique("cb-missing");
    let app = spawn(&config_with_sinks(&kafka_sink(
        "bus",
        brokers,
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
    // The answer names the sink and the code; the topic and librdkafka's words are in the log.
    assert_eq!(
        a.body["sinks"]["bus"]["error"]["code"], "broker",
        "{}",
        a.body
    );
    assert!(!a.body.to_string().contains(&topic), "{}", a.body);
    assert!(
        a.body["error"]["message"].as_str().unwrap().contains("bus"),
        "{}",
        a.body
    );
    app.stop().await;
}

/// A full local queue is back-pressure: the publish waits for room, then fails with
/// `queue_full` before the deadline instead of growing memory. (No broker listens, so the one
/// queued record never leaves.)
#[tokio::test]
async fn full_local_queue_waits_then_503() {
    let app = spawn(&config_with_sinks(&kafka_sink(
        "bus",
        &format!("127.0.0.1:{}", free_port()),
        ", topic: t, librdkafka: {\"queue.buffering.max.messages\": 1}",
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

/// Mock cluster (a real broker fences a producer only in a transactional race we cannot stage
/// on demand): a fence injected into a Produce response gets that webhook 503 naming the error,
/// and the sender's retry of it gets 200 on a replaced producer.
#[tokio::test]
async fn mock_injected_fence_is_503_then_retry_succeeds() {
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
    assert_eq!(
        a.body["sinks"]["bus"]["error"]["code"], "broker",
        "{}",
        a.body
    );
    assert!(!a.body.to_string().contains("ProducerFenced"), "{}", a.body);
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

// ---------------------------------------------------------------------------------------------
// A three-node cluster: replication factor 3, min.insync.replicas 2

/// The cluster, shared by the tests below one at a time (each kills brokers), every node up.
async fn cluster() -> tokio::sync::MutexGuard<'static, Cluster> {
    static CLUSTER: OnceLock<tokio::sync::Mutex<Cluster>> = OnceLock::new();
    let mut c = CLUSTER
        .get_or_init(|| tokio::sync::Mutex::new(Cluster::start(3)))
        .lock()
        .await;
    // A test that failed half-way may have left nodes down.
    c.heal().await;
    c
}

/// A topic on all three nodes whose partitions node 2 leads (node 1 is the controller: the
/// tests kill 2 and 3, never the metadata quorum).
async fn replicated_topic(c: &Cluster, partitions: i32) -> String {
    let topic = unique("cb-replicated");
    create_topics_on(&c.bootstrap, &[&topic], partitions, &[2, 3, 1]).await;
    topic
}

/// The leader and in-sync replicas of partition 0 of `topic`.
async fn leader_and_isr(c: &Cluster, topic: &str) -> Option<(i32, Vec<i32>)> {
    let md = c.metadata().await?;
    let t = md.topics().iter().find(|t| t.name() == topic)?;
    let p = t.partitions().iter().find(|p| p.id() == 0)?;
    Some((p.leader(), p.isr().to_vec()))
}

/// The cluster, a fresh replicated topic, and a bridge publishing to it that has already
/// delivered one event (so the producer is connected before the test breaks anything).
async fn cluster_with_bridge(
    partitions: i32,
) -> (tokio::sync::MutexGuard<'static, Cluster>, String, TestApp) {
    let c = cluster().await;
    let topic = replicated_topic(&c, partitions).await;
    let app = spawn(&failover_config(&c.bootstrap, &topic)).await;
    let a = app
        .post(&status_payload(&unique("call"), "registered"))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    (c, topic, app)
}

/// Reads `topic` back until every event id in `ids` is there; panics naming the missing ones.
/// Returns every record read.
async fn assert_in_topic(brokers: &str, topic: &str, ids: &[String]) -> Vec<Record> {
    let missing = |rs: &[Record]| -> Vec<String> {
        let seen: std::collections::HashSet<&str> =
            rs.iter().filter_map(|r| r.header("ce_id")).collect();
        ids.iter()
            .filter(|id| !seen.contains(id.as_str()))
            .cloned()
            .collect()
    };
    let records = consume_until(&consumer(brokers, topic).await, |rs| missing(rs).is_empty()).await;
    assert_eq!(
        missing(&records),
        Vec::<String>::new(),
        "events answered 200 but missing from {topic} ({} records read)",
        records.len()
    );
    records
}

/// One follower killed: every event is still acknowledged by the two replicas left.
#[tokio::test]
async fn cluster_one_broker_killed_still_200() {
    let (mut c, topic, app) = cluster_with_bridge(1).await;

    c.kill(3);
    let mut ids = Vec::new();
    for status in ["ongoing", "completed", "failed"] {
        let started = Instant::now();
        let a = app.post(&status_payload(&unique("call"), status)).await;
        eprintln!("one broker down: {} in {:?}", a.status, started.elapsed());
        assert_eq!(a.status, 200, "{}", a.body);
        ids.push(a.body["event_id"].as_str().unwrap().to_string());
    }
    assert_in_topic(&c.bootstrap, &topic, &ids).await;
    app.stop().await;
}

/// Two brokers killed: the partition is left with one in-sync replica, below
/// min.insync.replicas, so nothing can be acknowledged: 503 within the deadline naming the sink.
/// Both restarted: 200 again.
#[tokio::test]
async fn cluster_two_brokers_killed_is_503_then_200_after_restart() {
    let (mut c, topic, app) = cluster_with_bridge(1).await;

    c.kill(2);
    c.kill(3);
    // The controller fences both and shrinks the ISR to node 1 alone.
    eventually(Duration::from_secs(30), "ISR = [1]", || async {
        let (leader, isr) = leader_and_isr(&c, &topic).await?;
        (leader == 1 && isr == [1]).then_some(())
    })
    .await;
    let started = Instant::now();
    let a = app.post(&status_payload(&unique("call"), "ongoing")).await;
    let took = started.elapsed();
    eprintln!("two brokers down: {} in {took:?}: {}", a.status, a.body);
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(took < Duration::from_millis(9000 + 500), "{took:?}");
    assert!(a.retry_after.is_some());
    assert_eq!(a.body["sinks"]["bus"]["ok"], false, "{}", a.body);
    // Why (not enough in-sync replicas) is in the log; the answer has the code.
    assert!(
        a.body["sinks"]["bus"]["error"]["code"].is_string(),
        "{}",
        a.body
    );
    assert!(
        !a.body.to_string().to_lowercase().contains("in-sync"),
        "{}",
        a.body
    );
    assert!(
        a.body["error"]["message"].as_str().unwrap().contains("bus"),
        "names the sink: {}",
        a.body
    );

    c.heal().await;
    // The sender retries until the replicas caught up.
    let call = unique("call");
    let a = eventually(Duration::from_secs(60), "200 after the restart", || async {
        let a = app.post(&status_payload(&call, "completed")).await;
        (a.status == 200).then_some(a)
    })
    .await;
    let id = a.body["event_id"].as_str().unwrap().to_string();
    assert_in_topic(&c.bootstrap, &topic, &[id]).await;
    app.stop().await;
}

/// The partition leader killed under concurrent load: some answers may be 503 while the
/// leadership moves, and the sender retries those, but every event answered 200 — before,
/// during or after the failover — is in the topic.
#[tokio::test]
async fn cluster_leader_killed_under_load_loses_nothing_answered_200() {
    const EVENTS: usize = 240;
    const CONCURRENCY: usize = 12;
    let mut c = cluster().await;
    let topic = replicated_topic(&c, 2).await;
    let app = spawn(&failover_config(&c.bootstrap, &topic)).await;
    let (leader, _) = leader_and_isr(&c, &topic).await.expect("leader");
    assert_eq!(leader, 2);

    // Each event: post, and on 503 post again (the sender's retry), up to 5 times.
    let answered = std::sync::atomic::AtomicUsize::new(0);
    let post_all = futures::stream::iter(0..EVENTS)
        .map(|i| {
            let (app, answered) = (&app, &answered);
            async move {
                let payload = status_payload(&unique(&format!("load-{i}")), "completed");
                let mut codes = Vec::new();
                for _ in 0..5 {
                    let a = app.post(&payload).await;
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    codes.push(a.status);
                    if a.status == 200 {
                        return (a.body["event_id"].as_str().map(str::to_string), codes);
                    }
                }
                (None, codes)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<_>>();
    let killer = async {
        eventually(Duration::from_secs(60), "a third of the load", || async {
            (answered.load(std::sync::atomic::Ordering::Relaxed) >= EVENTS / 3).then_some(())
        })
        .await;
        c.kill(2);
        eprintln!("leader (node 2) killed");
    };
    let (results, ()) = tokio::join!(post_all, killer);
    let retried = results.iter().filter(|(_, codes)| codes.len() > 1).count();
    let acked: Vec<String> = results.iter().filter_map(|(id, _)| id.clone()).collect();
    eprintln!(
        "leader killed under load: {} of {EVENTS} acknowledged, {retried} needed a retry",
        acked.len()
    );
    assert_eq!(acked.len(), EVENTS, "every event got its 200 in the end");

    let records = assert_in_topic(&c.bootstrap, &topic, &acked).await;
    eprintln!(
        "{} records for {} events ({} redelivered copies)",
        records.len(),
        EVENTS,
        records.len() - EVENTS
    );
    let (leader, _) = leader_and_isr(&c, &topic).await.expect("leader");
    assert_ne!(leader, 2, "the leadership moved");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Hostile values and sizes (issue 14)

/// A status with `.` and `_` in a `prefix.{status}` topic is escaped into legal characters
/// (`_XX`), so it names exactly one topic; a NUL in it is a 400 before any producer sees it.
#[tokio::test]
async fn sender_values_in_a_topic_are_escaped_and_nul_is_refused() {
    let brokers = broker().await;
    let prefix = unique("cb-escape");
    let escaped = format!("{prefix}.a_2Eb_5Fc");
    create_topics(brokers, &[&escaped], 1).await;
    let app = spawn(&config_with_sinks(&kafka_sink(
        "events",
        brokers,
        &format!(", topic: \"{prefix}.{{status}}\""),
    )))
    .await;
    let a = app.post(&status_payload(&unique("esc"), "a.b_c")).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(
        a.body["sinks"]["events"]["receipt"]["topic"],
        escaped.as_str()
    );
    let r = &consume(&consumer(brokers, &escaped).await, 1).await[0];
    assert_eq!(r.header("ce_callstatus"), Some("a.b_c"));

    let nul = app.post(&status_payload(&unique("esc"), "a\u{0}b")).await;
    assert_eq!(nul.status, 400, "{}", nul.body);
    assert_eq!(nul.body["error"]["field"], "data.status");
    let after = app.post(&status_payload(&unique("esc"), "a.b_c")).await;
    assert_eq!(after.status, 200, "the bridge still works: {}", after.body);
    app.stop().await;
}

/// An event above the producer's `message.max.bytes` can never be delivered: 413 naming the
/// sink (the sender's to fix), the same on a retry, and published nowhere — not to the file
/// sink either; an event that fits is still a 200.
#[tokio::test]
async fn an_event_above_message_max_bytes_is_413_and_published_nowhere() {
    let brokers = broker().await;
    let topic = unique("cb-toolarge");
    create_topics(brokers, &[&topic], 1).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("events.jsonl");
    let sinks = format!(
        "{}{}",
        kafka_sink(
            "events",
            brokers,
            &format!(", topic: {topic}, librdkafka: {{\"message.max.bytes\": 20000}}")
        ),
        file_sink("archive", &file, "")
    );
    let app = spawn(&config_with_sinks(&sinks)).await;
    let mut big = status_payload(&unique("big"), "completed");
    big["data"]["custom_args_values"] = serde_json::json!({"blob": "x".repeat(30_000)});
    for _ in 0..2 {
        let a = app.post(&big).await;
        assert_eq!(a.status, 413, "{}", a.body);
        assert!(a.retry_after.is_none());
        assert_eq!(a.body["error"]["code"], "event_too_large");
        assert_eq!(a.body["sinks"]["events"]["error"]["code"], "too_large");
        let msg = a.body["sinks"]["events"]["error"]["message"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(msg, "the event is larger than this destination accepts");
        assert_eq!(a.body["sinks"]["archive"]["ok"], false);
    }
    assert!(read_lines(&file).is_empty(), "published nowhere");
    let small = app
        .post(&status_payload(&unique("small"), "completed"))
        .await;
    assert_eq!(small.status, 200, "{}", small.body);
    let r = &consume(&consumer(brokers, &topic).await, 1).await[0];
    assert_eq!(r.header("ce_id"), small.body["event_id"].as_str());
    assert_eq!(read_lines(&file).len(), 1);
    app.stop().await;
}

/// A topic whose broker-side `max.message.bytes` is below the producer's refuses the record in
/// the delivery report: a 413 too (no retry could deliver it), not a 503.
#[tokio::test]
async fn a_record_the_topic_refuses_for_its_size_is_413() {
    let brokers = broker().await;
    let topic = unique("cb-topiclimit");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
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
    let app = spawn(&config_with_sinks(&kafka_sink(
        "events",
        brokers,
        &format!(", topic: {topic}"),
    )))
    .await;
    let mut big = status_payload(&unique("topiclimit"), "completed");
    big["data"]["custom_args_values"] = serde_json::json!({"blob": "x".repeat(30_000)});
    let a = app.post(&big).await;
    assert_eq!(a.status, 413, "{}", a.body);
    assert_eq!(a.body["sinks"]["events"]["error"]["code"], "too_large");
    let small = app
        .post(&status_payload(&unique("topiclimit"), "completed"))
        .await;
    assert_eq!(small.status, 200, "{}", small.body);
    app.stop().await;
}

/// Issue #28, item 7: a record the topic refuses for its size at publish time (its
/// `max.message.bytes` below the producer's, so the size check before publishing lets it
/// through) is kept in the dead-letter store like one the size check refuses: the delivery is
/// `too_large` (413), and the dead letter names the sink, the event and the call.
#[tokio::test]
async fn a_record_the_topic_refuses_for_its_size_is_dead_lettered() {
    use callbridge::fanout::{Fanout, SinkOutcome};
    use callbridge::sinks::SinkError;
    let brokers = broker().await;
    let topic = unique("cb-topiclimit-dlq");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
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
    let dir = tempfile::tempdir().expect("tempdir");
    let s = settings(&format!(
        "spool: {{path: \"{}\"}}\n{}",
        dir.path().join("spool.redb").display(),
        config_with_sinks(&kafka_sink("events", brokers, &format!(", topic: {topic}")))
    ));
    let sinks = callbridge::sinks::build_all(s.sinks.iter().map(|s| s.spec()))
        .await
        .expect("sinks build");
    let spool = callbridge::spool::Spool::open(s.spool.as_ref().expect("spool")).expect("spool");
    let fanout = Fanout::new(
        sinks,
        callbridge::ledger::Ledger::new(Duration::from_secs(60), 100),
        std::sync::Arc::new(callbridge::metrics::Metrics::new()),
    )
    .with_spool(spool.clone());

    let call_id = unique("topiclimit-dlq");
    let mut big = status_payload(&call_id, "completed");
    big["data"]["custom_args_values"] = serde_json::json!({"blob": "x".repeat(30_000)});
    let event = callbridge::event::normalize(
        &big,
        Default::default(),
        &Default::default(),
        "2026-01-01T00:00:00Z".into(),
    )
    .expect("normalised");
    let event_id = event.id.clone();
    let d = fanout
        .deliver(event, tokio::time::Instant::now() + Duration::from_secs(8))
        .await;
    assert!(
        matches!(
            d.reports[0].outcome,
            SinkOutcome::Failed {
                error: SinkError::TooLarge(_)
            }
        ),
        "the broker refused it for its size: {:?}",
        d.reports
    );
    assert!(d.too_large(), "answered 413");
    let dead = spool.dead_letters().expect("dead letters");
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].sink, "events");
    assert_eq!(dead[0].event_id, event_id);
    assert_eq!(dead[0].call_id, call_id);
    assert!(dead[0].reason.contains("too large"), "{}", dead[0].reason);
}
