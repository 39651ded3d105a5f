//! callbridge's benchmark harness: how fast a truthful 200 is, against the limits measured in
//! the same run on the same machine.
//!
//! Run it with `scripts/bench` (which builds the release binary and starts
//! Apache Kafka, RabbitMQ and NATS). Scenarios:
//! 1. `direct-*`: each broker alone, published to directly with the client library and the
//!    acknowledgement the sink uses (rdkafka delivery report with acks=all + idempotence, lapin
//!    publisher confirm with mandatory + persistent, pipelined: many unconfirmed publishes per
//!    channel; async-nats JetStream PubAck with Nats-Msg-Id): the broker's acknowledged limit
//!    here.
//! 2. `bridge-null`: the bridge with a `null` sink (HTTP + auth + parse + normalise + ledger),
//!    the ceiling of our own code path.
//! 3. `bridge-<broker>` and `bridge-all`: the bridge with each sink alone, then all three.
//! 4. `bare`: a bare actix-web handler that parses the same JSON (`harness/bare.rs`), the floor
//!    under the bridge's own cost; `bare-wrk` and `bridge-null-wrk` measure both again with a
//!    light load generator, wrk (`harness/wrk.rs`), when it is installed.
//! 5. `bridge-spool`: a JetStream sink with `on_unavailable: spool` whose broker is down, so
//!    every event is spooled (fsynced, group commit) and answered 200; then the broker comes up
//!    and the drain is timed (`harness/spool.rs`).
//! 6. `bridge-null-kv`: `bridge-null` with the shared ledger on a NATS key-value bucket
//!    (`harness/kv.rs`): its cost per event and the bucket's bytes per event.
//!
//! Each scenario runs at fixed concurrency levels for a fixed duration, with unique call ids and
//! the sender's ~1 KB payload, and records throughput and latency percentiles (HdrHistogram). For
//! bridge scenarios it samples the bridge's peak RSS and CPU seconds, and afterwards **verifies**
//! that every event answered 200 is in each broker; a run that lost events fails.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde_json::Value;

#[path = "harness/bare.rs"]
mod bare;
#[path = "harness/cpu.rs"]
mod cpu;
#[path = "harness/kv.rs"]
mod kv;
#[path = "harness/spool.rs"]
mod spool;
#[path = "harness/wrk.rs"]
mod wrk;

/// Concurrency levels of the wrk passes (a subset: each point costs a full duration).
const WRK_CONCURRENCY: [usize; 2] = [16, 64];

#[derive(Debug, Clone)]
struct Opts {
    duration: Duration,
    concurrency: Vec<usize>,
    out_md: PathBuf,
    out_svg: PathBuf,
    bridge_bin: PathBuf,
    kafka: String,
    amqp: String,
    nats: String,
    only: Option<Vec<String>>,
    /// `--kafka-no-idempotence`: a diagnostic for the direct baseline only (the sink always
    /// uses the idempotent producer).
    kafka_idempotence: bool,
    /// `--rabbit-channels N`: the RabbitMQ sink's `channels` (default: the sink's default).
    rabbit_channels: Option<usize>,
    /// `--rabbit-in-flight N`: the sink's `max_in_flight_per_channel` (default: the sink's).
    rabbit_in_flight: Option<usize>,
    /// `--rabbit-direct-channels N`: channels of the direct baseline, every worker publishing
    /// on them concurrently (pipelined confirms).
    rabbit_direct_channels: usize,
    /// `--compare-bridge PATH`: run every bridge scenario with this binary as well, as
    /// `<scenario>@baseline`, in the same run (e.g. the build before a change).
    compare_bridge: Option<PathBuf>,
}

fn opts() -> Result<Opts> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut o = Opts {
        duration: Duration::from_secs(8),
        concurrency: vec![1, 16, 64, 256],
        out_md: root.join("docs/benchmarks.md"),
        out_svg: root.join("docs/benchmarks.svg"),
        bridge_bin: root.join("target/release/callbridge"),
        kafka: std::env::var("CALLBRIDGE_TEST_KAFKA").unwrap_or_default(),
        amqp: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
        nats: "nats://127.0.0.1:4222".into(),
        only: None,
        kafka_idempotence: true,
        rabbit_channels: None,
        rabbit_in_flight: None,
        rabbit_direct_channels: 4,
        compare_bridge: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().context(format!("{a} needs a value"));
        match a.as_str() {
            "--duration" => o.duration = Duration::from_secs_f64(val()?.parse()?),
            "--concurrency" => {
                o.concurrency = val()?
                    .split(',')
                    .map(|c| c.parse())
                    .collect::<Result<_, _>>()?
            }
            "--out" => o.out_md = val()?.into(),
            "--svg" => o.out_svg = val()?.into(),
            "--bridge" => o.bridge_bin = val()?.into(),
            "--only" => o.only = Some(val()?.split(',').map(String::from).collect()),
            "--kafka-no-idempotence" => o.kafka_idempotence = false,
            "--rabbit-channels" => o.rabbit_channels = Some(val()?.parse()?),
            "--rabbit-in-flight" => o.rabbit_in_flight = Some(val()?.parse()?),
            "--rabbit-direct-channels" => o.rabbit_direct_channels = val()?.parse()?,
            "--compare-bridge" => o.compare_bridge = Some(val()?.into()),
            "--bench" => {} // passed by `cargo bench`
            other => bail!("unknown argument {other}"),
        }
    }
    if o.kafka.is_empty() {
        bail!("CALLBRIDGE_TEST_KAFKA is not set: run scripts/bench (it starts Apache Kafka)");
    }
    Ok(o)
}

/// One measured point: a scenario at one concurrency.
#[derive(Debug, Clone)]
struct Point {
    scenario: String,
    concurrency: usize,
    ok: u64,
    failed: u64,
    secs: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    /// Cores used per process group during the point (`cpu.rs`).
    cpu: cpu::Split,
}

impl Point {
    /// A point from its latency histogram (microseconds).
    fn from_histogram(
        scenario: &str,
        concurrency: usize,
        h: &Histogram<u64>,
        failed: u64,
        secs: f64,
        cpu: cpu::Split,
    ) -> Point {
        let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
        Point {
            scenario: scenario.into(),
            concurrency,
            ok: h.len(),
            failed,
            secs,
            p50_ms: q(0.5),
            p99_ms: q(0.99),
            p999_ms: q(0.999),
            cpu,
        }
    }

    /// The concurrency column: requests in flight, or "open loop" for a fixed-rate point.
    fn level(&self) -> String {
        match self.concurrency {
            0 => "open loop".into(),
            c => c.to_string(),
        }
    }

    fn rate(&self) -> f64 {
        self.ok as f64 / self.secs
    }
}

#[derive(Debug, Default, Clone)]
struct ProcStats {
    peak_rss_mib: f64,
    /// At the end of the scenario: anonymous memory (heap, stacks) and file-backed pages (the
    /// binary's and libraries' code actually touched), the two parts of RSS.
    anon_mib: f64,
    file_mib: f64,
    cpu_secs: f64,
}

/// The sender's test payload (the one `callbridge send-test` posts), its transcript padded so
/// the body is ~1 KB, with a unique call id.
fn payload(call_id: &str) -> String {
    let mut body = callbridge::cli::sample_payload(call_id, "status", "completed");
    body["data"]["transcript"] = Value::from("Hello, this is a test call... ".repeat(18));
    body.to_string()
}

/// Runs `conc` workers for `duration`, each calling `op(worker, seq)` back to back.
async fn drive<F, Fut>(scenario: &str, conc: usize, duration: Duration, op: F) -> Point
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let cpu_before = cpu::snapshot();
    let tasks: Vec<_> = (0..conc)
        .map(|w| {
            let op = op.clone();
            let stop = stop.clone();
            let failed = failed.clone();
            tokio::spawn(async move {
                let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    if op(w, seq).await {
                        let _ = h.record(t.elapsed().as_micros() as u64);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    seq += 1;
                }
                h
            })
        })
        .collect();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let cpu = cpu::split(&cpu_before, &cpu::snapshot());
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for t in tasks {
        if let Ok(h) = t.await {
            let _ = all.add(h);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let point = Point::from_histogram(
        scenario,
        conc,
        &all,
        failed.load(Ordering::Relaxed),
        secs,
        cpu,
    );
    eprintln!(
        "{:<18} c={:<4} {:>9.0}/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  failed {}",
        point.scenario,
        conc,
        point.rate(),
        point.p50_ms,
        point.p99_ms,
        point.p999_ms,
        point.failed
    );
    point
}

/// Open loop: one request every `1 / rate` s whatever the answers do, each latency measured
/// from the moment the request was *due* — a slow answer neither delays the next request nor
/// hides behind it (no coordinated omission). This is how "p99 at half the peak rate" is
/// measured: a closed loop at some concurrency only ever sees the rate its own waiting allows.
/// The point's `concurrency` is 0 (its rate is fixed, not its requests in flight).
async fn drive_rate<F, Fut>(scenario: &str, rate: f64, duration: Duration, op: F) -> Point
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send + 'static,
{
    let op = Arc::new(op);
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut failed = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    // A late tick fires at once: the requests stay due when they were due.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut inflight = tokio::task::JoinSet::new();
    let started = Instant::now();
    let cpu_before = cpu::snapshot();
    let mut seq = 0u64;
    let mut record = |r: Result<(bool, Duration), tokio::task::JoinError>| match r {
        Ok((true, took)) => {
            let _ = h.record(took.as_micros() as u64);
        }
        _ => failed += 1,
    };
    while started.elapsed() < duration {
        let due = tick.tick().await;
        let op = op.clone();
        inflight.spawn(async move { (op(0, seq).await, due.elapsed()) });
        seq += 1;
        while let Some(r) = inflight.try_join_next() {
            record(r);
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let cpu = cpu::split(&cpu_before, &cpu::snapshot());
    while let Some(r) = inflight.join_next().await {
        record(r);
    }
    let point = Point::from_histogram(scenario, 0, &h, failed, secs, cpu);
    eprintln!(
        "{:<18} {:>6.0}/s offered {:>9.0}/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  failed {}",
        point.scenario, rate, point.rate(), point.p50_ms, point.p99_ms, point.p999_ms, point.failed
    );
    point
}

// ---------------------------------------------------------------------------------------------
// Direct baselines
// ---------------------------------------------------------------------------------------------

mod direct {
    use super::*;
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::ClientConfig;

    pub async fn kafka_topic(brokers: &str, topic: &str) -> Result<()> {
        let admin: AdminClient<_> = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .create()?;
        let res = admin
            .create_topics(
                &[NewTopic::new(topic, 3, TopicReplication::Fixed(1))],
                &AdminOptions::new(),
            )
            .await?;
        for r in res {
            if let Err((t, e)) = r {
                bail!("create topic {t}: {e}");
            }
        }
        Ok(())
    }

    pub async fn kafka(o: &Opts, conc: usize, topic: &str) -> Result<Point> {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &o.kafka)
            .set("acks", "all")
            .set(
                "enable.idempotence",
                if o.kafka_idempotence { "true" } else { "false" },
            )
            .set("linger.ms", "2")
            .set("queue.buffering.max.messages", "100000")
            .set("queue.buffering.max.kbytes", "65536")
            .set("message.timeout.ms", "3800")
            .create()?;
        let body = Arc::new(payload("direct-kafka"));
        let topic = topic.to_string();
        Ok(drive("direct-kafka", conc, o.duration, move |w, seq| {
            let producer = producer.clone();
            let body = body.clone();
            let topic = topic.clone();
            async move {
                let key = format!("k-{w}-{seq}");
                producer
                    .send(
                        FutureRecord::to(&topic).key(&key).payload(body.as_bytes()),
                        Duration::from_secs(5),
                    )
                    .await
                    .is_ok()
            }
        })
        .await)
    }

    /// The broker's best acknowledged rate: `rabbit_direct_channels` confirm-mode channels,
    /// every worker publishing on them at once (many unconfirmed publishes per channel, as
    /// pipelining clients do), mandatory + persistent; an `Ack` without a return counts. No
    /// return attribution is needed here: everything is routable.
    ///
    /// `rate`: open loop at that rate instead of `conc` in flight (`direct-rabbitmq-open`).
    /// `ce`: each message as the sink sends it — the CloudEvents binary binding's properties
    /// and `cloudEvents_*` headers and the sink's sequence header, built per publish by the
    /// sink's own `build_message` (`direct-rabbitmq-ce`): the broker's best rate for the
    /// bridge's messages, where the plain baseline is its best rate for a bare body.
    pub async fn rabbitmq(
        o: &Opts,
        conc: usize,
        rate: Option<f64>,
        ce: bool,
        exchange: &str,
        queue: &str,
    ) -> Result<Point> {
        use lapin::options::*;
        use lapin::{BasicProperties, Connection, ConnectionProperties};
        let conn = Connection::connect(&o.amqp, ConnectionProperties::default()).await?;
        let mut pool = Vec::new();
        let channels = match rate {
            Some(_) => o.rabbit_direct_channels.max(1),
            None => conc.min(o.rabbit_direct_channels.max(1)),
        };
        for _ in 0..channels {
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            pool.push(ch);
        }
        super::declare_rabbit(&pool[0], exchange, queue).await?;
        let pool = Arc::new(pool);
        let body = Arc::new(payload("direct-rabbitmq"));
        let event = Arc::new(callbridge::sinks::Outgoing::new(
            callbridge::event::normalize(
                &serde_json::from_str(&body)?,
                Default::default(),
                &Default::default(),
                "2026-01-01T00:00:00Z".into(),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        ));
        let exchange = exchange.to_string();
        let op = move |w: usize, seq: u64| {
            let pool = pool.clone();
            let body = body.clone();
            let event = event.clone();
            let exchange = exchange.clone();
            async move {
                let ch = &pool[(w + seq as usize) % pool.len()];
                let (bytes, props) = if ce {
                    callbridge::sinks::rabbitmq::message::build_message(
                        Default::default(),
                        &event,
                        seq,
                    )
                } else {
                    (
                        bytes::Bytes::copy_from_slice(body.as_bytes()),
                        BasicProperties::default(),
                    )
                };
                let props = props
                    .with_delivery_mode(2)
                    .with_message_id(format!("d-{w}-{seq}").into());
                let confirm = ch
                    .basic_publish(
                        &exchange,
                        "calls.status.completed",
                        BasicPublishOptions {
                            mandatory: true,
                            immediate: false,
                        },
                        &bytes,
                        props,
                    )
                    .await;
                match confirm {
                    Ok(c) => matches!(
                        c.await,
                        Ok(lapin::publisher_confirm::Confirmation::Ack(None))
                    ),
                    Err(_) => false,
                }
            }
        };
        let name = if ce {
            "direct-rabbitmq-ce"
        } else {
            "direct-rabbitmq"
        };
        let point = match rate {
            Some(r) => drive_rate(&format!("{name}-open"), r, o.duration, op).await,
            None => drive(name, conc, o.duration, op).await,
        };
        let _ = conn.close(200, "bye").await;
        Ok(point)
    }

    /// The RabbitMQ sink itself, driven in-process without HTTP (opt-in: `--only
    /// sink-rabbitmq`): what the sink costs against `direct-rabbitmq`, apart from the HTTP
    /// path and the load generator. Each publish normalises a fresh webhook, as the bridge does.
    pub async fn sink_rabbitmq(
        o: &Opts,
        conc: usize,
        exchange: &str,
        queue: &str,
    ) -> Result<Point> {
        use callbridge::sinks::rabbitmq::RabbitmqSinkSettings;
        use callbridge::sinks::{Outgoing, SinkSpec};
        let conn =
            lapin::Connection::connect(&o.amqp, lapin::ConnectionProperties::default()).await?;
        super::declare_rabbit(&conn.create_channel().await?, exchange, queue).await?;
        let _ = conn.close(200, "bye").await;
        let yaml = super::sink_yaml("rabbitmq", o, &super::Names::with_exchange(exchange));
        let entry = yaml
            .trim()
            .trim_start_matches("- ")
            .replace("type: rabbitmq, ", "");
        let settings: RabbitmqSinkSettings = serde_yaml::from_str(&entry)?;
        let sink = settings.build().await.map_err(|e| anyhow::anyhow!("{e}"))?;
        let started = Instant::now();
        while !sink.is_ready() {
            if started.elapsed() > Duration::from_secs(10) {
                bail!("the rabbitmq sink did not connect");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let sink: Arc<dyn callbridge::sinks::Sink> = sink;
        let run = std::process::id();
        let point = drive("sink-rabbitmq", conc, o.duration, {
            let sink = sink.clone();
            move |w, seq| {
                let sink = sink.clone();
                async move {
                    let body: Value = match serde_json::from_str(&payload(&format!(
                        "sink-{run}-{conc}-{w}-{seq}"
                    ))) {
                        Ok(b) => b,
                        Err(_) => return false,
                    };
                    let Ok(event) = callbridge::event::normalize(
                        &body,
                        Default::default(),
                        &Default::default(),
                        "2026-01-01T00:00:00Z".into(),
                    ) else {
                        return false;
                    };
                    sink.publish(&Outgoing::new(event)).await.is_ok()
                }
            }
        })
        .await;
        sink.close().await;
        Ok(point)
    }

    pub async fn nats(o: &Opts, conc: usize, stream: &str, subject: &str) -> Result<Point> {
        let client = async_nats::connect(&o.nats).await?;
        let js = async_nats::jetstream::new(client);
        super::ensure_stream(&js, stream, subject).await?;
        let body = bytes::Bytes::from(payload("direct-nats"));
        let subject = subject.to_string();
        Ok(drive("direct-nats", conc, o.duration, move |w, seq| {
            let js = js.clone();
            let body = body.clone();
            let subject = subject.clone();
            async move {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", format!("d-{w}-{seq}").as_str());
                match js.publish_with_headers(subject, headers, body).await {
                    Ok(ack) => ack.await.is_ok(),
                    Err(_) => false,
                }
            }
        })
        .await)
    }
}

async fn declare_rabbit(ch: &lapin::Channel, exchange: &str, queue: &str) -> Result<()> {
    use lapin::options::*;
    use lapin::types::FieldTable;
    ch.exchange_declare(
        exchange,
        lapin::ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(
        queue,
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        queue,
        exchange,
        "#",
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

async fn ensure_stream(
    js: &async_nats::jetstream::Context,
    stream: &str,
    subject: &str,
) -> Result<()> {
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: stream.to_string(),
        subjects: vec![format!("{subject}.>"), subject.to_string()],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Counting what arrived (verification)
// ---------------------------------------------------------------------------------------------

async fn kafka_count(brokers: &str, topic: &str) -> Result<u64> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::ClientConfig;
    let brokers = brokers.to_string();
    let topic = topic.to_string();
    tokio::task::spawn_blocking(move || -> Result<u64> {
        let c: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("group.id", "callbridge-bench-count")
            .create()?;
        let md = c.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        let mut total = 0u64;
        for t in md.topics() {
            for p in t.partitions() {
                let (lo, hi) = c.fetch_watermarks(&topic, p.id(), Duration::from_secs(10))?;
                total += (hi - lo).max(0) as u64;
            }
        }
        Ok(total)
    })
    .await?
}

/// Reads the whole topic back and names the acknowledged events that are not in it, with the
/// receipts the bridge gave for them, and any (partition, offset) the broker handed out twice.
async fn kafka_diagnose(brokers: &str, topic: &str, acked: &[(String, String)]) -> Result<String> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::Message;
    let c: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("bench-diagnose-{topic}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    c.subscribe(&[topic])?;
    let total = kafka_count(brokers, topic).await?;
    let mut keys = std::collections::HashSet::new();
    let mut positions = std::collections::HashSet::new();
    while (keys.len() as u64) < total {
        match tokio::time::timeout(Duration::from_secs(10), c.recv()).await {
            Ok(Ok(m)) => {
                positions.insert((m.partition(), m.offset()));
                keys.insert(String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned());
            }
            _ => break,
        }
    }
    eprintln!(
        "diagnose: read {} distinct keys at {} positions (watermarks say {total})",
        keys.len(),
        positions.len()
    );
    let mut seen: BTreeMap<(i64, i64), String> = BTreeMap::new();
    let mut missing = 0;
    let mut duplicates = 0;
    for (call_id, body) in acked {
        let v: Value = serde_json::from_str(body).unwrap_or_default();
        let r = &v["sinks"]["kafka"]["receipt"];
        let pos = (
            r["partition"].as_i64().unwrap_or(-1),
            r["offset"].as_i64().unwrap_or(-1),
        );
        if let Some(other) = seen.insert(pos, call_id.clone()) {
            duplicates += 1;
            eprintln!("diagnose: offset {pos:?} acknowledged for both {other} and {call_id}");
        }
        if !keys.contains(call_id) {
            missing += 1;
            if missing <= 10 {
                eprintln!("diagnose: missing {call_id}, acknowledged at {r}");
            }
        }
    }
    eprintln!("diagnose: {missing} acknowledged events missing from {topic}");
    Ok(format!(
        "{missing} events the bridge answered 200 for are missing from the topic although each \
         has a delivery report with a distinct (partition, offset); {duplicates} offsets were \
         handed out twice"
    ))
}

async fn rabbit_count(amqp: &str, queue: &str) -> Result<u64> {
    use lapin::options::QueueDeclareOptions;
    let conn = lapin::Connection::connect(amqp, lapin::ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let q = ch
        .queue_declare(
            queue,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await?;
    let n = q.message_count() as u64;
    let _ = ch
        .queue_delete(queue, lapin::options::QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "bye").await;
    Ok(n)
}

async fn nats_count(nats: &str, stream: &str) -> Result<u64> {
    let js = async_nats::jetstream::new(async_nats::connect(nats).await?);
    let mut s = js.get_stream(stream).await?;
    let n = s.info().await?.state.messages;
    let _ = js.delete_stream(stream).await;
    Ok(n)
}

// ---------------------------------------------------------------------------------------------
// The bridge under load
// ---------------------------------------------------------------------------------------------

struct Bridge {
    child: Child,
    port: u16,
    /// The admin listener's port (`/metrics`).
    admin_port: u16,
    _dir: tempfile::TempDir,
}

impl Bridge {
    fn start(bin: &Path, sinks_yaml: &str) -> Result<Bridge> {
        Bridge::start_with(bin, "", sinks_yaml)
    }

    /// Like [`Bridge::start`], with more top-level sections (`top_yaml`, e.g. the spool).
    fn start_with(bin: &Path, top_yaml: &str, sinks_yaml: &str) -> Result<Bridge> {
        let dir = tempfile::tempdir()?;
        let cfg = dir.path().join("bench.yaml");
        std::fs::write(
            &cfg,
            format!(
                "server: {{listen: \"127.0.0.1:0\", admin_listen: \"127.0.0.1:0\"}}\nlog: {{format: json, level: warn}}\n\
                 auth: {{api_keys: {{keys: [bench-key]}}}}\n{top_yaml}\
                 sinks:\n{sinks_yaml}"
            ),
        )?;
        let mut child = Command::new(bin)
            .args(["serve", "--config"])
            .arg(&cfg)
            .env("RUST_LOG", "warn,callbridge::app=info")
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut sent = false;
            let port_of = |line: &str| {
                serde_json::from_str::<Value>(line).ok().and_then(|v| {
                    v["addr"]
                        .as_str()
                        .and_then(|a| a.rsplit(':').next())
                        .and_then(|p| p.parse::<u16>().ok())
                })
            };
            // The admin listener is logged before the webhook listener's `listening`.
            let mut admin_port = None;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if !sent && line.contains("\"message\":\"admin listener") {
                    admin_port = port_of(&line);
                } else if !sent && line.contains("\"message\":\"listening\"") {
                    let _ = tx.send(port_of(&line).zip(admin_port));
                    sent = true;
                } else if !sent || line.contains("\"level\":\"ERROR\"") {
                    eprintln!("bridge: {line}");
                }
            }
        });
        let (port, admin_port) = rx
            .recv_timeout(Duration::from_secs(60))
            .context("bridge did not start")?
            .context("no port in the listening or admin listener line")?;
        Ok(Bridge {
            child,
            port,
            admin_port,
            _dir: dir,
        })
    }

    /// Peak RSS (VmHWM) and CPU seconds (utime + stime) so far.
    fn stats(&self) -> ProcStats {
        let pid = self.child.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kb = |field: &str| -> f64 {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0)
        };
        ProcStats {
            peak_rss_mib: kb("VmHWM:") / 1024.0,
            anon_mib: kb("RssAnon:") / 1024.0,
            file_mib: kb("RssFile:") / 1024.0,
            cpu_secs: cpu::cpu_secs(pid).unwrap_or(0.0),
        }
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Every event answered 200: its call id and the answer (with the receipts), for diagnosis.
type Acked = Arc<std::sync::Mutex<Vec<(String, String)>>>;

async fn load_bridge(
    port: u16,
    scenario: &str,
    conc: usize,
    duration: Duration,
    run: usize,
    acked: Acked,
) -> Point {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(conc)
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client");
    let op = bridge_op(client, port, format!("{scenario}-{run}-{conc}"), acked);
    drive(scenario, conc, duration, op).await
}

/// Prints the first few failed requests of the run (what a `failed` column counts).
fn report_failure(what: impl FnOnce() -> String) {
    static SHOWN: AtomicU64 = AtomicU64::new(0);
    if SHOWN.fetch_add(1, Ordering::Relaxed) < 5 {
        eprintln!("failed request: {}", what());
    }
}

/// Every concurrency level of the run against the bridge on `port`, a point each; returns how
/// many events were answered 200 in all.
async fn load_levels(
    o: &Opts,
    port: u16,
    scenario: &str,
    acked: &Acked,
    points: &mut Vec<Point>,
) -> u64 {
    let mut ok = 0;
    for (run, &c) in o.concurrency.iter().enumerate() {
        let p = load_bridge(port, scenario, c, o.duration, run, acked.clone()).await;
        ok += p.ok;
        points.push(p);
    }
    ok
}

/// One webhook to the bridge on `port` with a unique call id (`tag`, worker, sequence); true
/// when answered 200 (the answer is kept in `acked` to verify against the brokers).
fn bridge_op(
    client: reqwest::Client,
    port: u16,
    tag: String,
    acked: Acked,
) -> impl Fn(usize, u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>>
       + Send
       + Sync
       + 'static {
    let url = Arc::new(format!("http://127.0.0.1:{port}/callback"));
    move |w, seq| {
        let client = client.clone();
        let url = url.clone();
        let call_id = format!("{tag}-{w}-{seq}");
        let body = payload(&call_id);
        let acked = acked.clone();
        Box::pin(async move {
            let resp = match client
                .post(url.as_str())
                .header("X-API-Key", "bench-key")
                .body(body)
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    report_failure(|| format!("no answer: {e}"));
                    return false;
                }
            };
            if resp.status().as_u16() != 200 {
                let code = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                report_failure(|| {
                    format!("{code}: {}", text.chars().take(300).collect::<String>())
                });
                return false;
            }
            let text = resp.text().await.unwrap_or_default();
            if let Ok(mut a) = acked.lock() {
                a.push((call_id, text));
            }
            true
        })
    }
}

struct Names {
    kafka_topic: String,
    exchange: String,
    queue: String,
    stream: String,
    subject: String,
}

impl Names {
    /// Names around an existing exchange (only `exchange` is meant to be used).
    fn with_exchange(exchange: &str) -> Names {
        let mut n = Names::new("sink");
        n.exchange = exchange.to_string();
        n
    }

    fn new(tag: &str) -> Names {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        Names {
            kafka_topic: format!("bench-{tag}-{n}"),
            exchange: format!("bench-{tag}-{n}"),
            queue: format!("bench-{tag}-{n}"),
            stream: format!("BENCH_{}_{n}", tag.replace('-', "_").to_uppercase()),
            subject: format!("bench.{tag}.{n}"),
        }
    }
}

fn sink_yaml(kind: &str, o: &Opts, n: &Names) -> String {
    match kind {
        "null" => "  - {name: noop, type: \"null\"}\n".into(),
        "kafka" => format!(
            "  - {{name: kafka, type: kafka, brokers: \"{}\", topic: {}}}\n",
            o.kafka, n.kafka_topic
        ),
        "rabbitmq" => {
            // Only what was asked for: a build before `max_in_flight_per_channel` refuses it.
            let mut extra = String::new();
            if let Some(c) = o.rabbit_channels {
                extra.push_str(&format!(", channels: {c}"));
            }
            if let Some(m) = o.rabbit_in_flight {
                extra.push_str(&format!(", max_in_flight_per_channel: {m}"));
            }
            format!(
                "  - {{name: rabbitmq, type: rabbitmq, url: \"{}\", exchange: {}, routing_key: \"calls.{{kind}}.{{status}}\"{extra}}}\n",
                o.amqp, n.exchange
            )
        }
        "nats" => format!(
            "  - {{name: nats, type: nats, url: \"{}\", subject: \"{}.{{kind}}\", jetstream: {{enabled: true, stream: {}}}}}\n",
            o.nats, n.subject, n.stream
        ),
        _ => String::new(),
    }
}

async fn bridge_scenario(
    o: &Opts,
    bin: &Path,
    name: &str,
    sinks: &[&str],
    points: &mut Vec<Point>,
) -> Result<(ProcStats, Vec<String>)> {
    let n = Names::new(&name.replace('@', "-"));
    if sinks.contains(&"kafka") {
        direct::kafka_topic(&o.kafka, &n.kafka_topic).await?;
    }
    if sinks.contains(&"rabbitmq") {
        let conn =
            lapin::Connection::connect(&o.amqp, lapin::ConnectionProperties::default()).await?;
        declare_rabbit(&conn.create_channel().await?, &n.exchange, &n.queue).await?;
        let _ = conn.close(200, "bye").await;
    }
    if sinks.contains(&"nats") {
        ensure_stream(
            &async_nats::jetstream::new(async_nats::connect(&o.nats).await?),
            &n.stream,
            &n.subject,
        )
        .await?;
    }
    let yaml: String = sinks.iter().map(|k| sink_yaml(k, o, &n)).collect();
    let bridge = Bridge::start(bin, &yaml)?;
    let acked_events: Acked = Arc::default();
    let mut acked = load_levels(o, bridge.port, name, &acked_events, points).await;
    if name == "bridge-all" {
        // The latency target is at half the peak rate: offered open loop at exactly that.
        if let Some(peak) = best(points, name) {
            let client = reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()?;
            let op = bridge_op(
                client,
                bridge.port,
                format!("{name}-open"),
                acked_events.clone(),
            );
            let p = drive_rate(&format!("{name}-open"), peak.rate() / 2.0, o.duration, op).await;
            acked += p.ok;
            points.push(p);
        }
    }
    if name == "bridge-null" && wrk::available() {
        for c in WRK_CONCURRENCY {
            points.push(wrk::run(
                "bridge-null-wrk",
                bridge.port,
                c,
                o.duration,
                &payload("__CALL_ID__"),
            )?);
        }
    }
    let stats = bridge.stats();
    bridge.stop();

    let mut verdicts = Vec::new();
    for s in sinks {
        let count = match *s {
            "kafka" => kafka_count(&o.kafka, &n.kafka_topic).await?,
            "rabbitmq" => rabbit_count(&o.amqp, &n.queue).await?,
            "nats" => nats_count(&o.nats, &n.stream).await?,
            _ => continue,
        };
        let ok = count >= acked;
        verdicts.push(format!(
            "{name}: {s} holds {count} messages for {acked} events answered 200 — {}",
            if ok { "verified" } else { "LOST EVENTS" }
        ));
        if !ok && *s == "kafka" {
            let events = acked_events.lock().map(|a| a.clone()).unwrap_or_default();
            let diagnosis = kafka_diagnose(&o.kafka, &n.kafka_topic, &events).await?;
            verdicts.push(format!("{name}: {diagnosis}"));
        }
    }
    Ok((stats, verdicts))
}

// ---------------------------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------------------------

fn best(points: &[Point], scenario: &str) -> Option<Point> {
    points
        .iter()
        .filter(|p| p.scenario == scenario)
        .max_by(|a, b| a.rate().total_cmp(&b.rate()))
        .cloned()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!("{cores} cores ({cpu}), {mem:.0} GiB RAM; brokers on loopback: Apache Kafka 4.1 (one KRaft node), RabbitMQ, NATS JetStream (file storage)")
}

fn report(
    o: &Opts,
    points: &[Point],
    stats: &BTreeMap<String, ProcStats>,
    verdicts: &[String],
) -> Result<()> {
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut md = String::new();
    md.push_str("# Benchmarks\n\n");
    md.push_str("<!-- generated by scripts/bench (benches/harness.rs); edit the harness, not this table -->\n\n");
    md.push_str(&format!("Measured {date} on {}.\n", machine()));
    md.push_str(&format!(
        "Load generator, bridge and brokers share the machine. {} s per point; concurrency = requests in flight; 1 KB sender payload, unique call ids.\n\n",
        o.duration.as_secs_f64()
    ));
    md.push_str("| scenario | concurrency | acked/s | p50 ms | p99 ms | p99.9 ms | failed |\n|---|---:|---:|---:|---:|---:|---:|\n");
    for p in points {
        md.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |\n",
            p.scenario,
            p.level(),
            p.rate(),
            p.p50_ms,
            p.p99_ms,
            p.p999_ms,
            p.failed
        ));
    }
    md.push_str(
        "\n## Bridge process\n\n| scenario | peak RSS MiB | at the end: anon / file MiB | CPU seconds |\n|---|---:|---:|---:|\n",
    );
    for (k, s) in stats {
        md.push_str(&format!(
            "| {k} | {:.1} | {:.1} / {:.1} | {:.1} |\n",
            s.peak_rss_mib, s.anon_mib, s.file_mib, s.cpu_secs
        ));
    }
    md.push_str(
        "\n## Where the CPU went (cores used during each scenario's best point, of 2)\n\n\
         | scenario | c | acked/s | load generator | bridge | rabbitmq | kafka | nats | other | machine |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut seen: Vec<&str> = Vec::new();
    for p in points {
        if seen.contains(&p.scenario.as_str()) {
            continue;
        }
        seen.push(&p.scenario);
        let Some(b) = best(points, &p.scenario) else {
            continue;
        };
        let c = |g: &str| b.cpu.get(g).copied().unwrap_or(f64::NAN);
        md.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            b.scenario,
            b.level(),
            b.rate(),
            c("load generator"),
            c("bridge"),
            c("rabbitmq"),
            c("kafka"),
            c("nats"),
            c("other"),
            c("machine"),
        ));
    }
    md.push_str("\n## Ratios (same run)\n\n");
    let slowest_direct = ["direct-kafka", "direct-rabbitmq", "direct-nats"]
        .iter()
        .filter_map(|s| best(points, s))
        .min_by(|a, b| a.rate().total_cmp(&b.rate()));
    if let (Some(all), Some(slow)) = (best(points, "bridge-all"), slowest_direct.as_ref()) {
        md.push_str(&format!(
            "- all-three acked throughput / slowest broker's direct rate ({}): **{:.2}** ({:.0}/s at c={} vs {:.0}/s at c={}); target ≥ 0.8\n",
            slow.scenario, all.rate() / slow.rate(), all.rate(), all.concurrency, slow.rate(), slow.concurrency
        ));
    }
    if let (Some(null), Some(all)) = (best(points, "bridge-null"), best(points, "bridge-all")) {
        md.push_str(&format!(
            "- bridge with null sink / bridge with all three: **{:.2}** ({:.0}/s vs {:.0}/s)\n",
            null.rate() / all.rate(),
            null.rate(),
            all.rate()
        ));
    }
    for (bridge, bare, generator) in [
        ("bridge-null", "bare", "the harness's generator"),
        ("bridge-null-wrk", "bare-wrk", "wrk"),
    ] {
        if let (Some(b), Some(d)) = (best(points, bridge), best(points, bare)) {
            md.push_str(&format!(
                "- bridge with null sink / bare actix-web handler parsing the same JSON ({generator}): **{:.2}** ({:.0}/s vs {:.0}/s); target ≥ 0.5\n",
                b.rate() / d.rate(),
                b.rate(),
                d.rate()
            ));
        }
    }
    for s in ["kafka", "rabbitmq", "nats"] {
        if let (Some(b), Some(d)) = (
            best(points, &format!("bridge-{s}")),
            best(points, &format!("direct-{s}")),
        ) {
            md.push_str(&format!(
                "- bridge-{s} / direct-{s}: **{:.2}** ({:.0}/s vs {:.0}/s)\n",
                b.rate() / d.rate(),
                b.rate(),
                d.rate()
            ));
        }
    }
    if let (Some(b), Some(d)) = (
        best(points, "bridge-rabbitmq"),
        best(points, "direct-rabbitmq-ce"),
    ) {
        md.push_str(&format!(
            "- bridge-rabbitmq / direct-rabbitmq-ce (the broker's best rate for the same messages: the CloudEvents headers and the sequence header): **{:.2}** ({:.0}/s vs {:.0}/s)\n",
            b.rate() / d.rate(),
            b.rate(),
            d.rate()
        ));
    }
    let mut baselines: Vec<&str> = points
        .iter()
        .filter_map(|p| p.scenario.strip_suffix("@baseline"))
        .collect();
    baselines.dedup();
    for s in baselines {
        if let (Some(now), Some(before)) = (best(points, s), best(points, &format!("{s}@baseline")))
        {
            md.push_str(&format!(
                "- {s} / {s}@baseline (`--compare-bridge`): **{:.2}** ({:.0}/s at c={} vs {:.0}/s at c={})\n",
                now.rate() / before.rate(),
                now.rate(),
                now.concurrency,
                before.rate(),
                before.concurrency
            ));
        }
    }
    if let Some(open) = points.iter().find(|p| p.scenario == "bridge-all-open") {
        let alone = points
            .iter()
            .find(|p| p.scenario == "direct-rabbitmq-open")
            .map(|d| {
                format!(
                    "; RabbitMQ alone at the same rate (`direct-rabbitmq-open`): p99 {:.2} ms",
                    d.p99_ms
                )
            })
            .unwrap_or_default();
        md.push_str(&format!(
            "- bridge-all p99 at half its peak rate, offered open loop (`bridge-all-open`, {:.0}/s): **{:.2} ms** (target ≤ 10 ms){alone}\n",
            open.rate(),
            open.p99_ms
        ));
    }
    if let Some(all) = best(points, "bridge-all") {
        let half = all.rate() / 2.0;
        if let Some(p) = points
            .iter()
            .filter(|p| p.scenario == "bridge-all" && p.rate() >= half)
            .min_by_key(|p| p.concurrency)
        {
            md.push_str(&format!(
                "- bridge-all p99 at the lowest concurrency reaching half the peak rate (closed loop, c={}, {:.0}/s): {:.2} ms\n",
                p.concurrency, p.rate(), p.p99_ms
            ));
        }
    }
    md.push_str("\n## Verification\n\n");
    for v in verdicts {
        md.push_str(&format!("- {v}\n"));
    }
    md.push_str("\n![throughput and p99 against concurrency](benchmarks.svg)\n");
    if let Ok(extra) = std::fs::read_to_string(o.out_md.with_file_name("benchmarks-notes.md")) {
        md.push('\n');
        md.push_str(&extra);
    }
    std::fs::write(&o.out_md, md)?;
    plot(&o.out_svg, points)?;
    eprintln!("wrote {} and {}", o.out_md.display(), o.out_svg.display());
    Ok(())
}

fn plot(path: &Path, points: &[Point]) -> Result<()> {
    use plotters::prelude::*;
    // Against concurrency: the open-loop points (fixed rate, concurrency 0) are in the table only.
    let points: Vec<Point> = points
        .iter()
        .filter(|p| p.concurrency > 0)
        .cloned()
        .collect();
    let points = points.as_slice();
    let root = SVGBackend::new(path, (1100, 460)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(550);
    let mut scenarios: Vec<&str> = points.iter().map(|p| p.scenario.as_str()).collect();
    scenarios.dedup();
    let max_rate = points.iter().map(Point::rate).fold(1.0, f64::max) * 1.1;
    let max_p99 = points.iter().map(|p| p.p99_ms).fold(1.0, f64::max) * 1.1;
    let max_c = points.iter().map(|p| p.concurrency).max().unwrap_or(1) as f64;
    let x = (1.0f64..max_c * 1.2).log_scale();
    for (area, title, ymax, rate) in [
        (&left, "acked/s", max_rate, true),
        (&right, "p99 ms", max_p99, false),
    ] {
        let mut chart = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(x.clone(), 0.0..ymax)?;
        chart.configure_mesh().x_desc("concurrency").draw()?;
        for (i, s) in scenarios.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            let series: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| p.scenario == *s)
                .map(|p| (p.concurrency as f64, if rate { p.rate() } else { p.p99_ms }))
                .collect();
            chart
                .draw_series(LineSeries::new(series.clone(), color.stroke_width(2)))?
                .label(*s)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
            chart.draw_series(
                series
                    .iter()
                    .map(|&(a, b)| Circle::new((a, b), 3, color.filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn main() -> Result<()> {
    if std::env::args().any(|a| a == "--serve-bare") {
        return bare::serve();
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> Result<()> {
    let o = opts()?;
    let want = |s: &str| o.only.as_ref().is_none_or(|l| l.iter().any(|x| x == s));
    let mut points = Vec::new();
    let mut stats = BTreeMap::new();
    let mut verdicts = Vec::new();

    let direct = |b: &str| want("direct") || want(&format!("direct-{b}"));
    if direct("kafka") {
        for &c in &o.concurrency {
            let n = Names::new("direct");
            direct::kafka_topic(&o.kafka, &n.kafka_topic).await?;
            let p = direct::kafka(&o, c, &n.kafka_topic).await?;
            let count = kafka_count(&o.kafka, &n.kafka_topic).await?;
            verdicts.push(format!(
                "direct-kafka c={c}: the topic holds {count} records for {} delivery reports — {}",
                p.ok,
                if count >= p.ok {
                    "verified"
                } else {
                    "LOST RECORDS (the broker acknowledged records it does not hold)"
                }
            ));
            points.push(p);
        }
    }
    if direct("rabbitmq") {
        for &c in &o.concurrency {
            let n = Names::new("direct");
            points.push(direct::rabbitmq(&o, c, None, false, &n.exchange, &n.queue).await?);
            let _ = rabbit_count(&o.amqp, &n.queue).await;
        }
        for &c in &o.concurrency {
            let n = Names::new("direct-ce");
            points.push(direct::rabbitmq(&o, c, None, true, &n.exchange, &n.queue).await?);
            let _ = rabbit_count(&o.amqp, &n.queue).await;
        }
    }
    // Opt-in only: a diagnostic, not part of the published table.
    if o.only
        .as_ref()
        .is_some_and(|l| l.iter().any(|x| x == "sink-rabbitmq"))
    {
        for &c in &o.concurrency {
            let n = Names::new("sink");
            points.push(direct::sink_rabbitmq(&o, c, &n.exchange, &n.queue).await?);
            let _ = rabbit_count(&o.amqp, &n.queue).await;
        }
    }
    if direct("nats") {
        for &c in &o.concurrency {
            let n = Names::new("direct");
            points.push(direct::nats(&o, c, &n.stream, &n.subject).await?);
            let _ = nats_count(&o.nats, &n.stream).await;
        }
    }
    if want("bare") {
        let server = bare::Bare::start()?;
        for &c in &o.concurrency {
            points.push(load_bridge(server.port, "bare", c, o.duration, 0, Acked::default()).await);
        }
        if wrk::available() {
            for c in WRK_CONCURRENCY {
                points.push(wrk::run(
                    "bare-wrk",
                    server.port,
                    c,
                    o.duration,
                    &payload("__CALL_ID__"),
                )?);
            }
        }
    }
    for (name, sinks) in [
        ("bridge-null", vec!["null"]),
        ("bridge-kafka", vec!["kafka"]),
        ("bridge-rabbitmq", vec!["rabbitmq"]),
        ("bridge-nats", vec!["nats"]),
        ("bridge-all", vec!["kafka", "rabbitmq", "nats"]),
    ] {
        if !want(name) && !want("bridge") {
            continue;
        }
        let (s, v) = bridge_scenario(&o, &o.bridge_bin, name, &sinks, &mut points).await?;
        stats.insert(name.to_string(), s);
        verdicts.extend(v);
        if let Some(before) = &o.compare_bridge {
            let name = format!("{name}@baseline");
            let (s, v) = bridge_scenario(&o, before, &name, &sinks, &mut points).await?;
            stats.insert(name, s);
            verdicts.extend(v);
        }
    }
    // RabbitMQ alone, open loop at the rate bridge-all-open was offered: the broker's own
    // latency at that rate, beside the bridge's.
    if let Some(open) = points
        .iter()
        .find(|p| p.scenario == "bridge-all-open")
        .cloned()
    {
        let n = Names::new("direct-open");
        let rate = open.ok as f64 / open.secs;
        points.push(direct::rabbitmq(&o, 0, Some(rate), false, &n.exchange, &n.queue).await?);
        let _ = rabbit_count(&o.amqp, &n.queue).await;
    }
    if want("bridge-null-kv") || want("bridge") {
        let (s, v) = kv::scenario(&o, &o.bridge_bin, &mut points).await?;
        stats.insert("bridge-null-kv".to_string(), s);
        verdicts.extend(v);
    }
    if want("bridge-spool") || want("bridge") {
        let (s, v) = spool::scenario(&o, &o.bridge_bin, &mut points).await?;
        stats.insert("bridge-spool".to_string(), s);
        verdicts.extend(v);
    }
    report(&o, &points, &stats, &verdicts)?;
    let lost: Vec<&String> = verdicts.iter().filter(|v| v.contains("LOST")).collect();
    if !lost.is_empty() {
        bail!(
            "events were lost (the report says where):\n{}",
            lost.iter()
                .map(|v| v.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    Ok(())
}
