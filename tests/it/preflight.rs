//! `callbridge validate --connect` against the real brokers: the binary is run on configs that
//! name resources of the test's own (unique topics, exchanges, queues, streams), and its report
//! and exit code are checked.
//!
//! RabbitMQ bindings are read from the management API; the machine's shared broker does not run
//! that plugin (and is never reconfigured), so the test that needs it starts a private RabbitMQ
//! node with the management plugin on free loopback ports (the Debian package ships the plugin),
//! killed with its process group when the test ends.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::kafka::{broker as kafka_broker, create_topics};
use async_nats::jetstream;
use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const NATS_URL: &str = "nats://127.0.0.1:4222";

/// What one `validate --connect` run printed and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    took: Duration,
}

impl Run {
    /// The report line of `sink` about `destination` (e.g. `topic x.status`); panics with the
    /// whole report when there is none.
    fn line(&self, sink: &str, destination: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.contains(&format!(" {sink} (")) && l.contains(&format!(" {destination}: ")))
            .unwrap_or_else(|| panic!("no line for {sink} {destination} in:\n{}", self.stdout))
    }

    fn lines_of(&self, sink: &str) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.contains(&format!(" {sink} (")))
            .collect()
    }
}

/// Runs `callbridge validate --connect` on `sinks` (YAML list items), off the async runtime.
async fn validate_connect(sinks: &str) -> Run {
    let yaml = config_with_sinks(sinks);
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("callbridge.yaml");
        std::fs::write(&cfg, yaml).unwrap();
        let started = Instant::now();
        let out = bin()
            .args(["validate", "--connect", "--config"])
            .arg(&cfg)
            .output()
            .unwrap();
        let run = Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            took: started.elapsed(),
        };
        eprintln!("{}", run.stdout);
        run
    })
    .await
    .unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

// ---------------------------------------------------------------------------------------------
// Kafka

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_kafka_topic_is_reported_and_fails() {
    let brokers = kafka_broker().await;
    let prefix = unique("pf").replace('-', "_");
    let present = format!("{prefix}.status");
    create_topics(brokers, &[&present], 2).await;
    let run = validate_connect(&format!(
        "  - {{name: bus, type: kafka, brokers: \"{brokers}\", topic: \"{prefix}.{{kind}}\", \
         events: [call.status, call.analysis]}}\n"
    ))
    .await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let ok = run.line("bus", &format!("topic {present}"));
    assert!(
        ok.starts_with("ok ")
            && ok.contains("2 partitions, each with a leader; 1 of 1 replicas in sync")
            && ok.contains("min.insync.replicas 1")
            && ok.ends_with("[call.status (any status)]"),
        "{ok}"
    );
    let missing = run.line("bus", &format!("topic {prefix}.analysis"));
    assert!(
        missing.starts_with("MISSING ")
            && missing.contains("does not exist")
            && missing.ends_with("[call.analysis (any status)]"),
        "{missing}"
    );
    assert_eq!(
        run.lines_of("bus").len(),
        2,
        "only the kinds the filter keeps"
    );
    assert!(run.stdout.contains("summary: 1 sink(s): 1 ok, 1 missing"));
    // Checking did not create the topic.
    let again = validate_connect(&format!(
        "  - {{name: bus, type: kafka, brokers: \"{brokers}\", topic: \"{prefix}.analysis\"}}\n"
    ))
    .await;
    assert_eq!(again.code, Some(1), "{}", again.stdout);
}

// ---------------------------------------------------------------------------------------------
// RabbitMQ

/// A private RabbitMQ node with the management plugin, on free loopback ports.
struct ManagedRabbit {
    _dir: tempfile::TempDir,
    amqp: u16,
    management: u16,
    /// The watchdog shell; the node runs in its process group.
    child: Child,
}

impl ManagedRabbit {
    const SERVER: &'static str = "/usr/lib/rabbitmq/bin/rabbitmq-server";

    async fn start() -> ManagedRabbit {
        assert!(
            Path::new(Self::SERVER).exists(),
            "{} is missing: install Debian's rabbitmq-server (scripts/test does)",
            Self::SERVER
        );
        let dir = tempfile::Builder::new()
            .prefix("cb-rabbit-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        let (amqp, dist, management) = (free_port(), free_port(), free_port());
        std::fs::write(d.join("plugins"), "[rabbitmq_management].\n").unwrap();
        std::fs::write(
            d.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.default = 127.0.0.1:{amqp}\nmanagement.tcp.ip = 127.0.0.1\n\
                 management.tcp.port = {management}\nloopback_users = none\n"
            ),
        )
        .unwrap();
        std::fs::create_dir_all(d.join("home")).unwrap();
        // The watchdog ends the node when this test process exits, however it exits.
        let script = format!(
            "\"{server}\" >>\"{d}/out.log\" 2>&1 & k=$!; \
             while kill -0 {parent} 2>/dev/null && kill -0 $k 2>/dev/null; do sleep 0.5; done; \
             kill -9 $k 2>/dev/null",
            server = Self::SERVER,
            d = d.display(),
            parent = std::process::id()
        );
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("HOME", d.join("home"))
            .env("RABBITMQ_NODENAME", format!("cbpf{amqp}@localhost"))
            .env("RABBITMQ_DIST_PORT", dist.to_string())
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("plugins"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", d.join("advanced.config"))
            .env("RABBITMQ_CONF_ENV_FILE", d.join("env.conf"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("spawn a rabbitmq node");
        let node = ManagedRabbit {
            _dir: dir,
            amqp,
            management,
            child,
        };
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{management}/api/overview");
        eventually(
            Duration::from_secs(90),
            "the private rabbitmq node's management API",
            || async {
                let r = client
                    .get(&url)
                    .basic_auth("guest", Some("guest"))
                    .send()
                    .await
                    .ok()?;
                r.status().is_success().then_some(())
            },
        )
        .await;
        node
    }

    fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp)
    }
}

impl Drop for ManagedRabbit {
    fn drop(&mut self) {
        use nix::sys::signal::{killpg, Signal};
        let _ = killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

/// An exchange with one durable queue bound `binding`, declared by the test (not the config).
async fn topology(url: &str, exchange: &str, queue: &str, binding: &str) -> (Connection, Channel) {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .expect("rabbitmq");
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        exchange,
        ExchangeKind::Topic,
        ExchangeDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.queue_declare(queue, QueueDeclareOptions::default(), FieldTable::default())
        .await
        .unwrap();
    ch.queue_bind(
        queue,
        exchange,
        binding,
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    (conn, ch)
}

async fn remove(ch: &Channel, exchange: &str, queue: &str) {
    let _ = ch.queue_delete(queue, QueueDeleteOptions::default()).await;
    let _ = ch
        .exchange_delete(exchange, ExchangeDeleteOptions::default())
        .await;
}

/// The bindings come from the management API: a key no queue is bound for is reported
/// unroutable (exit 1), and nothing reaches the bound queue — neither while checking nor after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_bindings_from_the_management_api_and_nothing_is_enqueued() {
    let node = ManagedRabbit::start().await;
    let exchange = unique("pf-x");
    let queue = format!("{exchange}.status");
    let (conn, ch) = topology(&node.amqp_url(), &exchange, &queue, "calls.status.#").await;
    let watch = conn.create_channel().await.unwrap();
    let mut consumer = watch
        .basic_consume(
            &queue,
            "preflight-watch",
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();

    let run = validate_connect(&format!(
        "  - {{name: mq, type: rabbitmq, url: \"{}\", exchange: \"{exchange}\", \
         routing_key: \"calls.{{kind}}.{{status}}\", management_url: \"http://127.0.0.1:{}\", \
         events: [call.status, call.started]}}\n",
        node.amqp_url(),
        node.management
    ))
    .await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("bindings read from the management API (topic exchange, 1 binding(s))"),
        "{}",
        run.stdout
    );
    for status in ["registered", "completed", "retry", "unknown"] {
        let l = run.line(
            "mq",
            &format!("exchange {exchange} key calls.status.{status}"),
        );
        assert!(
            l.starts_with("ok ")
                && l.contains(&format!("queue {queue} is bound with \"calls.status.#\"")),
            "{l}"
        );
        let l = run.line(
            "mq",
            &format!("exchange {exchange} key calls.started.{status}"),
        );
        assert!(l.starts_with("MISSING ") && l.contains("unroutable"), "{l}");
    }
    assert!(run
        .line(
            "mq",
            &format!("exchange {exchange} key calls.started.unknown")
        )
        .ends_with("[call.started without status]"));
    assert_eq!(
        run.lines_of("mq").len(),
        1 + 16,
        "a note and 2 kinds x 8 keys"
    );

    // No probe message: none delivered to the consumer, none left in the queue.
    let delivered = tokio::time::timeout(Duration::from_secs(1), consumer.next()).await;
    assert!(
        delivered.is_err(),
        "a message reached the bound queue: {delivered:?}"
    );
    let q = ch
        .queue_declare(
            &queue,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0);
    remove(&ch, &exchange, &queue).await;
}

/// Without the management API (the shared broker has none): the exchange is checked passively,
/// keys the config's own bindings match are ok, others cannot be verified (a warning, exit 0);
/// an exchange that does not exist (and is not declared by the bridge) fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_without_management_judges_by_the_configs_bindings() {
    let exchange = unique("pf-x");
    let queue = format!("{exchange}.status");
    let (_conn, ch) = topology(AMQP_URL, &exchange, &queue, "calls.status.#").await;
    let dead = free_port();
    let sink = |name: &str, exchange: &str| {
        format!(
            "  - {{name: {name}, type: rabbitmq, url: \"{AMQP_URL}\", exchange: \"{exchange}\", \
             routing_key: \"calls.{{kind}}.{{status}}\", \
             management_url: \"http://127.0.0.1:{dead}\", events: [call.status, call.started], \
             queues: [{{name: \"{queue}\", binding_key: \"calls.status.#\"}}]}}\n"
        )
    };
    let run = validate_connect(&sink("mq", &exchange)).await;
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert!(
        run.stdout.contains("bindings cannot be verified over AMQP")
            && run.stdout.contains(&format!("127.0.0.1:{dead}")),
        "{}",
        run.stdout
    );
    let l = run.line(
        "mq",
        &format!("exchange {exchange} key calls.status.completed"),
    );
    assert!(
        l.starts_with("ok ") && l.contains("bound by this config with \"calls.status.#\""),
        "{l}"
    );
    let l = run.line(
        "mq",
        &format!("exchange {exchange} key calls.started.unknown"),
    );
    assert!(
        l.starts_with("warning ") && l.contains("bindings cannot be verified"),
        "{l}"
    );

    let gone = unique("pf-gone");
    let run = validate_connect(&sink("mq", &gone)).await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    let l = run.line("mq", &format!("exchange {gone} key calls.status.completed"));
    assert!(
        l.starts_with("MISSING ") && l.contains(&format!("exchange {gone} does not exist")),
        "{l}"
    );
    let q = ch
        .queue_declare(
            &queue,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0, "nothing was published");
    remove(&ch, &exchange, &queue).await;
}

/// Why the RabbitMQ check does not probe with a publish (docs/rabbitmq.md): in transaction mode
/// RabbitMQ routes a `mandatory` publish at once but sends its `basic.return` only at
/// `tx.commit`. Rolled back, an unroutable probe and a routable one look the same (no return),
/// and committing would enqueue the routable one. Should a RabbitMQ version ever return at
/// publish time, this test fails and the probe becomes possible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_returns_a_transactional_publish_only_at_commit() {
    let exchange = unique("pf-tx");
    let queue = format!("{exchange}.status");
    let (conn, ch) = topology(AMQP_URL, &exchange, &queue, "calls.status.#").await;
    let watch = conn.create_channel().await.unwrap();
    let mut consumer = watch
        .basic_consume(
            &queue,
            "tx-watch",
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    // Returns seen on a channel without publisher confirms: lapin keeps them until drained.
    let publish = |key: &'static str, commit: bool| {
        let conn = &conn;
        let exchange = &exchange;
        async move {
            let tx = conn.create_channel().await.unwrap();
            tx.tx_select().await.unwrap();
            tx.basic_publish(
                exchange,
                key,
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                b"probe",
                BasicProperties::default(),
            )
            .await
            .unwrap();
            // Long enough for a return sent at publish time to arrive.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let before = tx.wait_for_confirms().await.unwrap().len();
            if commit {
                tx.tx_commit().await.unwrap();
            } else {
                tx.tx_rollback().await.unwrap();
            }
            let after = tx.wait_for_confirms().await.unwrap().len();
            let _ = tx.close(200, "done").await;
            (before, after)
        }
    };
    assert_eq!(
        publish("calls.started.unknown", false).await,
        (0, 0),
        "unroutable, rolled back: no return at all"
    );
    assert_eq!(
        publish("calls.status.completed", false).await,
        (0, 0),
        "routable, rolled back: the same"
    );
    assert_eq!(
        publish("calls.started.unknown", true).await,
        (0, 1),
        "unroutable, committed: returned at commit only"
    );
    let delivered = tokio::time::timeout(Duration::from_secs(1), consumer.next()).await;
    assert!(
        delivered.is_err(),
        "a rolled-back probe was delivered: {delivered:?}"
    );
    let q = ch
        .queue_declare(
            &queue,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0);
    remove(&ch, &exchange, &queue).await;
}

// ---------------------------------------------------------------------------------------------
// NATS

async fn js() -> jetstream::Context {
    jetstream::new(async_nats::connect(NATS_URL).await.expect("nats"))
}

async fn memory_stream(js: &jetstream::Context, name: &str, subjects: &[String]) {
    js.create_stream(jetstream::stream::Config {
        name: name.to_string(),
        subjects: subjects.to_vec(),
        storage: jetstream::stream::StorageType::Memory,
        ..Default::default()
    })
    .await
    .expect("create stream");
}

/// A stream capturing only `<prefix>.status.>`: every status subject is ok, every other kind's
/// subject is reported, exit 1; a sink expecting another stream is told which one captures it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jetstream_stream_capturing_only_status_subjects() {
    let js = js().await;
    let u = unique("pf").replace('-', "_");
    let (stream, prefix) = (format!("CB_{u}"), format!("cbpf.{u}"));
    memory_stream(&js, &stream, &[format!("{prefix}.status.>")]).await;
    let run = validate_connect(&format!(
        "  - {{name: js, type: nats, url: \"{NATS_URL}\", subject: \"{prefix}.{{kind}}.{{status}}\"}}\n\
         \x20 - {{name: named, type: nats, url: \"{NATS_URL}\", \
         subject: \"{prefix}.{{kind}}.{{status}}\", events: [call.status.completed], \
         jetstream: {{stream: OTHER_{u}}}}}\n"
    ))
    .await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    for status in ["registered", "completed", "unknown"] {
        let l = run.line("js", &format!("subject {prefix}.status.{status}"));
        assert!(
            l.starts_with("ok ") && l.contains(&format!("stream {stream} captures it")),
            "{l}"
        );
    }
    for kind in ["started", "recording", "analysis", "processed", "other"] {
        let l = run.line("js", &format!("subject {prefix}.{kind}.unknown"));
        assert!(
            l.starts_with("MISSING ") && l.contains("no stream captures this subject"),
            "{l}"
        );
    }
    assert_eq!(run.lines_of("js").len(), 6 * 8);
    let l = run.line("named", &format!("subject {prefix}.status.completed"));
    assert!(
        l.starts_with("MISSING ")
            && l.contains(&format!("captured by stream {stream}, not by OTHER_{u}")),
        "{l}"
    );
    let _ = js.delete_stream(&stream).await;
}

// ---------------------------------------------------------------------------------------------
// Everything together

/// Every sink can store every event it would be sent: exit 0, no warning.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_whose_every_event_is_stored_exits_0() {
    let brokers = kafka_broker().await;
    let u = unique("pf").replace('-', "_");
    let topic = format!("{u}.all");
    create_topics(brokers, &[&topic], 1).await;
    let js = js().await;
    let (stream, prefix) = (format!("CB_{u}"), format!("cbpf.{u}"));
    memory_stream(&js, &stream, &[format!("{prefix}.>")]).await;
    let exchange = unique("pf-x");
    let queue = format!("{exchange}.all");
    let dir = tempfile::tempdir().unwrap();
    let run = validate_connect(&format!(
        "  - {{name: bus, type: kafka, brokers: \"{brokers}\", topic: \"{topic}\"}}\n\
         \x20 - {{name: mq, type: rabbitmq, url: \"{AMQP_URL}\", exchange: \"{exchange}\", \
         routing_key: \"calls.{{kind}}.{{status}}\", management_url: \"http://127.0.0.1:{}\", \
         declare: {{exchange_type: topic}}, queues: [{{name: \"{queue}\", binding_key: \"calls.#\"}}]}}\n\
         \x20 - {{name: stream, type: nats, url: \"{NATS_URL}\", subject: \"{prefix}.{{kind}}.{{status}}\", \
         jetstream: {{stream: {stream}}}}}\n{}",
        free_port(),
        file_sink("archive", &dir.path().join("new/events.jsonl"), "")
    ))
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    assert!(
        run.line("bus", &format!("topic {topic}"))
            .ends_with("[every event]"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains(&format!(
        "exchange {exchange} does not exist yet; the bridge declares it"
    )));
    let archive = run.line(
        "archive",
        &format!("file {}", dir.path().join("new/events.jsonl").display()),
    );
    assert!(
        archive.starts_with("ok ") && archive.contains("startup creates"),
        "{archive}"
    );
    assert!(!dir.path().join("new").exists(), "checking created nothing");
    assert!(
        run.stdout.contains("summary: 4 sink(s): ")
            && run
                .stdout
                .contains(" 0 missing, 0 warning(s); every required sink can store"),
        "{}",
        run.stdout
    );
    let oks = run.stdout.lines().filter(|l| l.starts_with("ok ")).count();
    assert_eq!(
        oks,
        1 + 48 + 48 + 1,
        "a topic, 48 keys, 48 subjects, a file"
    );
    let _ = js.delete_stream(&stream).await;
}

/// What optional sinks cannot store, core NATS and per-call templates are warnings: exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_sinks_core_nats_and_per_call_templates_are_warnings() {
    let brokers = kafka_broker().await;
    let u = unique("pf").replace('-', "_");
    let dir = tempfile::tempdir().unwrap();
    let run = validate_connect(&format!(
        "  - {{name: maybe, type: kafka, brokers: \"{brokers}\", topic: \"{u}.nope\", required: false}}\n\
         \x20 - {{name: live, type: nats, url: \"{NATS_URL}\", subject: \"cbpf.{u}.{{kind}}\", \
         jetstream: {{enabled: false}}, events: [call.status]}}\n\
         \x20 - {{name: percall, type: nats, url: \"{NATS_URL}\", subject: \"cbpf.{u}.{{kind}}.{{call_id}}\", \
         events: [call.status, call.analysis]}}\n{}",
        file_sink("archive", &dir.path().join("events.jsonl"), "")
    ))
    .await;
    assert_eq!(run.code, Some(0), "{}", run.stdout);
    let l = run.line("maybe", &format!("topic {u}.nope"));
    assert!(
        l.starts_with("warning ") && l.contains("optional sink") && l.contains("does not exist"),
        "{l}"
    );
    let l = run.line("live", &format!("subject cbpf.{u}.status"));
    assert!(
        l.starts_with("warning ") && l.contains("only the subscribers connected"),
        "{l}"
    );
    let l = run.line("percall", &format!("subject cbpf.{u}.analysis.{{call_id}}"));
    assert!(
        l.starts_with("warning ") && l.contains("per-call values: cannot be checked ahead"),
        "{l}"
    );
    assert!(run.stdout.contains(" 0 missing,"), "{}", run.stdout);
}

/// A broker that is not there: every destination missing, the reason named, within the
/// per-sink timeout, and no password printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_brokers_fail_in_time_and_no_password_is_printed() {
    let (amqp, nats) = (free_port(), free_port());
    let run = validate_connect(&format!(
        "  - {{name: mq, type: rabbitmq, url: \"amqp://guest:s3cret-pf@127.0.0.1:{amqp}/%2f\", \
         exchange: calls, routing_key: \"calls.{{kind}}\"}}\n\
         \x20 - {{name: js, type: nats, url: \"nats://u:s3cret-pf@127.0.0.1:{nats}\", subject: \"calls.{{kind}}\"}}\n"
    ))
    .await;
    assert_eq!(run.code, Some(1), "{}", run.stdout);
    assert!(run.took < Duration::from_secs(12), "took {:?}", run.took);
    let l = run.line("mq", "exchange calls key calls.status");
    assert!(
        l.starts_with("MISSING ") && l.contains("cannot connect"),
        "{l}"
    );
    let l = run.line("js", "subject calls.status");
    assert!(
        l.starts_with("MISSING ") && l.contains("cannot connect"),
        "{l}"
    );
    assert!(!run.stdout.contains("s3cret"), "{}", run.stdout);
}
