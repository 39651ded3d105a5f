//! The `kafka` sink: rdkafka's `FutureProducer`, acknowledged by the delivery report.
//!
//! * **Ack**: `acks=all` + `enable.idempotence=true`, so a delivery report without error means the
//!   record is on every in-sync replica, once, in order per partition. The receipt is
//!   `{topic, partition, offset}`.
//! * **Deadline**: `message.timeout.ms` is derived from the sink's `timeout_ms` (a margin below it),
//!   so librdkafka gives up on a record — and tells us why — before the fan-out stops waiting.
//! * **Back-pressure**: the local queue is bounded (`queue.buffering.max.*`); when it is full a
//!   publish waits for room until its time is up, then fails with `queue_full`.
//! * **Readiness**: a background task fetches cluster metadata (every second while the sink is not
//!   ready, every few seconds while it is) and librdkafka's `ALL_BROKERS_DOWN` error callback marks
//!   the sink not-ready at once.
//! * **Self-healing**: an idempotent producer can end up unable to deliver ever again (a fatal
//!   error; or, on brokers without KIP-360 epoch bumps such as tansu 0.6, `PRODUCER_FENCED` after
//!   a record timed out). A delivery error that can poison the session marks the producer
//!   *tainted*; the next publish (or the health task) swaps in a fresh producer. Retired producers
//!   are dropped on a plain thread because librdkafka's teardown blocks.
//!
//! Binary mode follows the CloudEvents Kafka protocol binding: value = `data` JSON,
//! `content-type` header = `datacontenttype`, every other attribute as a `ce_<name>` header.
//! Structured mode: value = the whole event, `content-type: application/cloudevents+json`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{Outgoing, Receipt, Sink, SinkError};
use crate::config::{check_template, Issues};
use crate::event::Event;
use crate::template::Template;

/// `content-type` of a structured-mode record (CloudEvents Kafka binding).
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json; charset=UTF-8";

/// Settings of one `type: kafka` sink.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkSettings {
    pub name: String,
    /// A failed required sink fails the webhook (503); an optional one is only reported.
    #[serde(default = "crate::config::default_true")]
    pub required: bool,
    /// How long a publish may wait for its delivery report. `message.timeout.ms` is derived from
    /// it so librdkafka reports the real failure before this runs out.
    #[serde(default = "crate::config::default_sink_timeout_ms")]
    pub timeout_ms: u64,
    /// Which events this sink wants (`call.status`, `call.analysis.completed`, ...).
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// Bootstrap brokers, `host:port` — a comma-separated string or a list (the string form can be
    /// set from one environment variable).
    #[serde(deserialize_with = "de_brokers")]
    pub brokers: Vec<String>,
    /// Topic template, e.g. `calls.{kind}` to split status and analysis events.
    pub topic: String,
    /// Record key template. The default keeps every event of one call in one partition, so
    /// consumers see a call's statuses in order.
    #[serde(default = "default_key")]
    pub key: String,
    /// CloudEvents binding mode of the record.
    #[serde(default)]
    pub format: KafkaFormat,
    /// Raw librdkafka properties (SASL, TLS, compression, tuning), applied over our defaults.
    /// Values may come from `${ENV}` and are treated as secrets (never logged or printed).
    /// Dotted keys may be written flat (`"sasl.username": x`) or nested (`sasl: {username: x}`).
    #[serde(default, deserialize_with = "de_librdkafka")]
    pub librdkafka: BTreeMap<String, SecretString>,
}

/// How the event is laid out in the record (CloudEvents Kafka protocol binding).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KafkaFormat {
    /// Value = `data` JSON; attributes as `ce_*` headers. Lets consumers route on headers without
    /// parsing the value.
    #[default]
    Binary,
    /// Value = the whole event JSON.
    Structured,
}

fn default_key() -> String {
    "{call_id}".into()
}

fn de_brokers<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let list = match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s.split(',').map(str::to_string).collect::<Vec<_>>(),
        OneOrMany::Many(v) => v,
    };
    Ok(list
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

/// Accepts scalar values (YAML may type `linger.ms: 5` as a number) and nested maps, which are
/// flattened back into librdkafka's dotted names.
fn de_librdkafka<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, SecretString>, D::Error> {
    let raw = serde_json::Map::<String, Value>::deserialize(d)?;
    let mut out = BTreeMap::new();
    flatten_props("", &Value::Object(raw), &mut out).map_err(serde::de::Error::custom)?;
    Ok(out)
}

fn flatten_props(
    prefix: &str,
    value: &Value,
    out: &mut BTreeMap<String, SecretString>,
) -> Result<(), String> {
    let scalar = match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_props(&key, v, out)?;
            }
            return Ok(());
        }
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Null | Value::Array(_) => {
            return Err(format!(
                "librdkafka.{prefix}: expected a string, number or boolean"
            ))
        }
    };
    if out.insert(prefix.to_string(), scalar.into()).is_some() {
        return Err(format!("librdkafka.{prefix}: set twice"));
    }
    Ok(())
}

/// Properties we derive from other settings; setting them in `librdkafka` would be ambiguous.
const DERIVED: [&str; 3] = [
    "bootstrap.servers",
    "metadata.broker.list",
    "message.timeout.ms",
];

impl KafkaSinkSettings {
    /// Margin between librdkafka's own give-up time and ours, so its verdict arrives first.
    /// librdkafka scans for timed-out records about once a second, hence the large margin.
    fn message_timeout_ms(&self) -> u64 {
        let margin = (self.timeout_ms * 2 / 5).clamp(1, 1200);
        self.timeout_ms.saturating_sub(margin).max(1)
    }

    /// The full librdkafka configuration: our defaults, then the user's properties, then the
    /// derived ones.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        for (k, v) in [
            // The guarantees: every in-sync replica, exactly one copy per producer session, in order.
            ("acks", "all"),
            ("enable.idempotence", "true"),
            // Small batches: latency matters more than throughput for a webhook answer.
            ("linger.ms", "2"),
            // Bounded memory: beyond this, publishes wait for room (back-pressure).
            ("queue.buffering.max.messages", "100000"),
            ("queue.buffering.max.kbytes", "65536"),
            // Fail fast on a dead connection and reconnect quickly.
            ("socket.connection.setup.timeout.ms", "5000"),
            ("reconnect.backoff.ms", "50"),
            ("reconnect.backoff.max.ms", "1000"),
            ("client.id", "callbridge"),
        ] {
            c.set(k, v);
        }
        for (k, v) in &self.librdkafka {
            c.set(k, v.expose_secret());
        }
        c.set("bootstrap.servers", self.brokers.join(","));
        c.set("message.timeout.ms", self.message_timeout_ms().to_string());
        c.set_log_level(RDKafkaLogLevel::Warning);
        c
    }

    /// Checks that the types alone cannot express. Never connects.
    pub fn validate(&self, path: &str, issues: &mut Issues) {
        if self.brokers.is_empty() {
            issues.error(
                format!("{path}.brokers"),
                "at least one host:port is required",
            );
        }
        for (i, b) in self.brokers.iter().enumerate() {
            if b.rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                issues.error(
                    format!("{path}.brokers[{i}]"),
                    format!("expected host:port, got {b:?}"),
                );
            }
        }
        check_template(&self.topic, &format!("{path}.topic"), issues);
        check_template(&self.key, &format!("{path}.key"), issues);
        for (k, v) in &self.librdkafka {
            let field = format!("{path}.librdkafka.{k}");
            let v = v.expose_secret();
            if DERIVED.contains(&k.as_str()) {
                issues.error(
                    field,
                    "set by callbridge (use brokers / timeout_ms instead)",
                );
            } else if k == "acks" || k == "request.required.acks" {
                if !matches!(v, "all" | "-1") {
                    issues.error(
                        field,
                        "a 200 promises the event is on every in-sync replica: only all/-1",
                    );
                }
            } else if k == "enable.idempotence" && v == "false" {
                issues.warn(
                    field,
                    "without idempotence a broker retry may duplicate or reorder a call's events",
                );
            } else if k == "transactional.id" {
                issues.error(field, "transactions are not supported by this sink");
            } else if k == "delivery.timeout.ms" {
                issues.error(
                    field,
                    "alias of message.timeout.ms, derived from timeout_ms",
                );
            }
        }
        // librdkafka checks every property name and value locally.
        if let Err(e) = self.client_config().create_native_config() {
            issues.error(format!("{path}.librdkafka"), redact_config_error(&e));
        }
    }
}

/// librdkafka's config errors quote the value; it may be a secret.
fn redact_config_error(e: &KafkaError) -> String {
    match e {
        KafkaError::ClientConfig(_, desc, key, value) => {
            let desc = if value.is_empty() {
                desc.clone()
            } else {
                desc.replace(value.as_str(), "[REDACTED]")
            };
            format!("property {key:?} rejected by librdkafka: {desc}")
        }
        other => other.to_string(),
    }
}

/// Shared by the sink, its producers' contexts and the health task.
struct Health {
    sink: String,
    /// Whether a broker answered recently.
    reachable: AtomicBool,
}

/// One producer instance and whether it can still deliver.
struct Slot {
    producer: FutureProducer<Ctx>,
    generation: u64,
    state: Arc<SlotState>,
}

#[derive(Default)]
struct SlotState {
    /// Set when this instance may never deliver again; the next publish replaces it.
    tainted: AtomicBool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        // librdkafka's teardown purges, flushes (up to 500 ms) and joins threads: never on the
        // async runtime.
        let producer = self.producer.clone();
        let spawned = std::thread::Builder::new()
            .name("kafka-retire".into())
            .spawn(move || drop(producer));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot spawn a thread to retire a kafka producer");
        }
    }
}

/// librdkafka callbacks: logs into `tracing`, broker-down and fatal errors into our state.
struct Ctx {
    health: Arc<Health>,
    state: Arc<SlotState>,
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        let sink = self.health.sink.as_str();
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(sink, fac, "librdkafka: {msg}"),
            RDKafkaLogLevel::Warning => tracing::warn!(sink, fac, "librdkafka: {msg}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(sink, fac, "librdkafka: {msg}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(sink, fac, "librdkafka: {msg}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let sink = self.health.sink.as_str();
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => {
                self.health.reachable.store(false, Ordering::Release);
                tracing::warn!(sink, reason, "kafka: all brokers down");
            }
            Some(RDKafkaErrorCode::Fatal) => {
                self.state.tainted.store(true, Ordering::Release);
                tracing::error!(
                    sink,
                    reason,
                    "kafka producer hit a fatal error; replacing it"
                );
            }
            _ => tracing::warn!(sink, error = %error, reason, "kafka client error"),
        }
    }
}

pub struct KafkaSink {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    topic: Template,
    key: Template,
    format: KafkaFormat,
    timeout: Duration,
    /// How long a publish waits for room in a full local queue: `message.timeout.ms`, so the
    /// `queue_full` verdict comes before the fan-out's own timeout.
    queue_timeout: Duration,
    config: ClientConfig,
    health: Arc<Health>,
    slot: RwLock<Arc<Slot>>,
    next_generation: AtomicU64,
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaBuildError {
    #[error("invalid template")]
    Template(#[source] crate::template::TemplateError),
    #[error("cannot create the librdkafka producer: {0}")]
    Producer(String),
}

/// Delivery errors after which an idempotent producer session may be unable to deliver again.
fn poisons_session(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        RDKafkaErrorCode::MessageTimedOut
            | RDKafkaErrorCode::ProducerFenced
            | RDKafkaErrorCode::InvalidProducerEpoch
            | RDKafkaErrorCode::InvalidProducerIdMapping
            | RDKafkaErrorCode::UnknownProducerId
            | RDKafkaErrorCode::OutOfOrderSequenceNumber
            | RDKafkaErrorCode::Fatal
    )
}

impl KafkaSink {
    /// Creates the producer and starts the health task. Does not wait for a broker: a cluster
    /// that is down at startup leaves the sink not-ready, and publishes fail until it is back.
    pub fn build(settings: &KafkaSinkSettings) -> Result<KafkaSink, KafkaBuildError> {
        let topic = Template::parse(&settings.topic).map_err(KafkaBuildError::Template)?;
        let key = Template::parse(&settings.key).map_err(KafkaBuildError::Template)?;
        let health = Arc::new(Health {
            sink: settings.name.clone(),
            reachable: AtomicBool::new(false),
        });
        let config = settings.client_config();
        let first = new_slot(&config, &health, 0)?;
        let inner = Arc::new(Inner {
            name: settings.name.clone(),
            topic,
            key,
            format: settings.format,
            timeout: Duration::from_millis(settings.timeout_ms),
            queue_timeout: Duration::from_millis(settings.message_timeout_ms()),
            config,
            health,
            slot: RwLock::new(Arc::new(first)),
            next_generation: AtomicU64::new(1),
        });
        tokio::spawn(health_loop(Arc::downgrade(&inner)));
        tracing::info!(
            sink = %settings.name,
            brokers = %settings.brokers.join(","),
            topic = %settings.topic,
            format = ?settings.format,
            "kafka sink configured"
        );
        Ok(KafkaSink { inner })
    }
}

fn new_slot(
    config: &ClientConfig,
    health: &Arc<Health>,
    generation: u64,
) -> Result<Slot, KafkaBuildError> {
    let state = Arc::new(SlotState::default());
    let ctx = Ctx {
        health: health.clone(),
        state: state.clone(),
    };
    let producer: FutureProducer<Ctx> = config
        .create_with_context(ctx)
        .map_err(|e| KafkaBuildError::Producer(redact_config_error(&e)))?;
    Ok(Slot {
        producer,
        generation,
        state,
    })
}

impl Inner {
    fn current(&self) -> Arc<Slot> {
        match self.slot.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The producer to publish with, replacing the current one first if it is tainted.
    fn usable(&self) -> Result<Arc<Slot>, SinkError> {
        let slot = self.current();
        let fatal = slot.producer.client().fatal_error();
        if !slot.state.tainted.load(Ordering::Acquire) && fatal.is_none() {
            return Ok(slot);
        }
        self.replace(slot.generation, fatal.map(|(c, m)| format!("{c}: {m}")))
    }

    /// Swaps in a fresh producer unless another caller already replaced `generation`.
    fn replace(&self, generation: u64, why: Option<String>) -> Result<Arc<Slot>, SinkError> {
        let mut guard = match self.slot.write() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if guard.generation != generation {
            return Ok(guard.clone());
        }
        let next = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let slot = new_slot(&self.config, &self.health, next).map_err(|e| SinkError::Broker {
            message: "cannot replace the kafka producer".into(),
            source: Some(Box::new(e)),
        })?;
        tracing::warn!(
            sink = %self.name,
            old = generation,
            new = next,
            reason = why.as_deref().unwrap_or("a delivery error may have poisoned the session"),
            "replacing the kafka producer"
        );
        *guard = Arc::new(slot);
        Ok(guard.clone())
    }

    fn headers(&self, event: &Event) -> OwnedHeaders {
        let mut h = OwnedHeaders::new_with_capacity(13);
        // W3C trace context for consumers' tracing libraries, in both modes.
        if let Some(t) = &event.traceparent {
            h = h.insert(Header {
                key: "traceparent",
                value: Some(t.as_str()),
            });
        }
        match self.format {
            KafkaFormat::Structured => h.insert(Header {
                key: "content-type",
                value: Some(STRUCTURED_CONTENT_TYPE),
            }),
            KafkaFormat::Binary => {
                let mut attrs: Vec<(&str, &str)> = vec![
                    ("content-type", &event.datacontenttype),
                    ("ce_specversion", &event.specversion),
                    ("ce_id", &event.id),
                    ("ce_source", &event.source),
                    ("ce_type", &event.ty),
                    ("ce_subject", &event.subject),
                    ("ce_time", &event.time),
                    ("ce_partitionkey", &event.partitionkey),
                ];
                if let Some(s) = &event.callstatus {
                    attrs.push(("ce_callstatus", s));
                }
                if let Some(t) = &event.traceparent {
                    attrs.push(("ce_traceparent", t));
                }
                attrs.into_iter().fold(h, |h, (key, value)| {
                    h.insert(Header {
                        key,
                        value: Some(value),
                    })
                })
            }
        }
    }
}

/// Keeps `reachable` current and replaces producers that died while idle.
async fn health_loop(inner: Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let slot = strong.usable().unwrap_or_else(|_| strong.current());
        let health = strong.health.clone();
        let was = health.reachable.load(Ordering::Acquire);
        drop(strong);
        let probe = tokio::task::spawn_blocking(move || {
            let r = slot
                .producer
                .client()
                .fetch_metadata(None, Duration::from_secs(2))
                .map(|m| m.brokers().len());
            drop(slot);
            r
        })
        .await;
        let now = matches!(probe, Ok(Ok(n)) if n > 0);
        health.reachable.store(now, Ordering::Release);
        if now != was {
            match &probe {
                Ok(Err(e)) if !now => {
                    tracing::warn!(sink = %health.sink, error = %e, "kafka sink not ready")
                }
                _ => tracing::info!(sink = %health.sink, ready = now, "kafka sink readiness"),
            }
        }
        tokio::time::sleep(if now {
            Duration::from_secs(3)
        } else {
            Duration::from_millis(500)
        })
        .await;
    }
}

/// Enqueues one record, waiting for room while the local queue is full (back-pressure, never
/// unbounded memory). librdkafka copies the record, so the caller's buffers may go at once.
async fn enqueue(
    slot: &Slot,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: OwnedHeaders,
    queue_timeout: Duration,
) -> Result<DeliveryFuture, KafkaError> {
    let give_up = tokio::time::Instant::now() + queue_timeout;
    let mut record = FutureRecord::to(topic)
        .key(key.as_bytes())
        .payload(payload)
        .headers(headers);
    loop {
        match slot.producer.send_result(record) {
            Ok(report) => return Ok(report),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                if tokio::time::Instant::now() < give_up =>
            {
                record = back;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Awaits the delivery report of an enqueued record.
async fn delivered(report: DeliveryFuture) -> Result<Delivery, KafkaError> {
    match report.await {
        Ok(Ok(delivery)) => Ok(delivery),
        Ok(Err((e, _))) => Err(e),
        // The producer was torn down before reporting: the outcome is unknown.
        Err(_canceled) => Err(KafkaError::Canceled),
    }
}

#[async_trait]
impl Sink for KafkaSink {
    fn destination(&self, event: &Event) -> String {
        self.inner.topic.render(event)
    }

    #[tracing::instrument(skip_all, fields(sink = %self.inner.name, event_id = %event.event.id))]
    async fn publish(&self, event: &Outgoing) -> Result<Receipt, SinkError> {
        let inner = &self.inner;
        let started = Instant::now();
        let ev = &event.event;
        let topic = inner.topic.render(ev);
        let key = inner.key.render(ev);
        let payload = match inner.format {
            KafkaFormat::Binary => event.data.clone(),
            KafkaFormat::Structured => event.structured.clone(),
        };
        let headers = inner.headers(ev);
        let slot = inner.usable()?;
        let health = inner.health.clone();
        let queue_timeout = inner.queue_timeout;
        let t = topic.clone();
        // The delivery report is awaited in its own task: if the fan-out stops waiting (its
        // budget can be shorter than ours), the report is still seen and a poisoned producer
        // still gets replaced. The task ends by `message.timeout.ms` at the latest.
        let delivery = tokio::spawn(async move {
            let report = enqueue(&slot, &t, &key, &payload, headers, queue_timeout).await;
            drop(payload);
            let result = match report {
                Ok(report) => delivered(report).await,
                Err(e) => Err(e),
            };
            if let Err(e) = &result {
                let code = e.rdkafka_error_code();
                if code.is_some_and(poisons_session) {
                    slot.state.tainted.store(true, Ordering::Release);
                }
                if code == Some(RDKafkaErrorCode::AllBrokersDown) {
                    health.reachable.store(false, Ordering::Release);
                }
            }
            result
        });
        let result = delivery.await.map_err(|e| SinkError::Broker {
            message: "the kafka delivery task failed".into(),
            source: Some(Box::new(e)),
        })?;
        match result {
            Ok(d) => {
                tracing::debug!(
                    topic,
                    partition = d.partition,
                    offset = d.offset,
                    "delivered"
                );
                Ok(Receipt::Kafka {
                    topic,
                    partition: d.partition,
                    offset: d.offset,
                })
            }
            Err(e) => {
                let waited = started.elapsed().as_millis();
                Err(match e.rdkafka_error_code() {
                    Some(RDKafkaErrorCode::QueueFull) => SinkError::QueueFull(format!(
                        "librdkafka queue still full after {waited} ms (topic {topic})"
                    )),
                    Some(RDKafkaErrorCode::MessageTimedOut) if !self.is_ready() => {
                        SinkError::NotConnected(format!(
                            "no broker reachable: record for topic {topic} timed out after \
                             {waited} ms (it may still have been stored; dedupe by ce_id)"
                        ))
                    }
                    Some(RDKafkaErrorCode::MessageTimedOut) => SinkError::broker(
                        format!(
                            "record for topic {topic} not acknowledged within {waited} ms although \
                             a broker is reachable: does the topic exist, is its leader up? \
                             (it may still have been stored; dedupe by ce_id)"
                        ),
                        e,
                    ),
                    Some(
                        c @ (RDKafkaErrorCode::UnknownTopic
                        | RDKafkaErrorCode::UnknownTopicOrPartition),
                    ) => SinkError::Broker {
                        message: format!("topic {topic} does not exist ({c})"),
                        source: Some(Box::new(e)),
                    },
                    _ => SinkError::broker(format!("delivery to topic {topic} failed"), e),
                })
            }
        }
    }

    fn is_ready(&self) -> bool {
        self.inner.health.reachable.load(Ordering::Acquire)
    }

    async fn close(&self) {
        let slot = self.inner.current();
        let name = self.inner.name.clone();
        let timeout = self.inner.timeout;
        let _ = tokio::task::spawn_blocking(move || {
            if let Err(e) = slot.producer.flush(timeout) {
                tracing::warn!(sink = %name, error = %e, "kafka flush at shutdown failed");
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, SinkSettings};
    use crate::Settings;

    fn load(sink: &str) -> Result<(Settings, Vec<crate::config::ConfigIssue>), ConfigError> {
        let yaml = format!("auth: {{mode: none}}\nsinks:\n  - {sink}\n");
        // With env overrides on, as `callbridge run` loads it.
        Settings::from_yaml_with_env(&yaml, "test", true)
    }

    fn kafka(s: &Settings) -> &KafkaSinkSettings {
        match &s.sinks[0] {
            SinkSettings::Kafka(k) => k,
            other => panic!("not kafka: {other:?}"),
        }
    }

    fn errors(sink: &str) -> Vec<String> {
        match load(sink) {
            Err(ConfigError::Invalid(v)) => v.iter().map(|i| i.to_string()).collect(),
            Err(e) => vec![e.to_string()],
            Ok(_) => vec![],
        }
    }

    #[test]
    fn defaults() {
        let (s, _) = load("{name: k, type: kafka, brokers: \"a:9092, b:9092\", topic: calls}")
            .expect("loads");
        let k = kafka(&s);
        assert_eq!(k.brokers, ["a:9092", "b:9092"]);
        assert_eq!(k.key, "{call_id}");
        assert_eq!(k.format, KafkaFormat::Binary);
        assert!(k.required);
        assert_eq!(k.timeout_ms, 5000);
        let c = k.client_config();
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("bootstrap.servers"), Some("a:9092,b:9092"));
        assert_eq!(c.get("message.timeout.ms"), Some("3800"));
    }

    /// The `config` crate treats dots in keys as paths; librdkafka's names are dotted.
    #[test]
    fn dotted_librdkafka_keys_arrive_intact() {
        std::env::set_var("CB_KAFKA_TEST_SASL_PASSWORD", "s3cret-value");
        let (s, _) = load(
            "{name: k, type: kafka, brokers: [\"a:9092\"], topic: calls, librdkafka: \
             {\"linger.ms\": \"1\", \"sasl.username\": \"x\", \"sasl.password\": \"${CB_KAFKA_TEST_SASL_PASSWORD}\", \
             \"security.protocol\": SASL_PLAINTEXT, \"sasl.mechanisms\": PLAIN, \"batch.num.messages\": 7}}",
        )
        .expect("loads");
        let k = kafka(&s);
        let keys: Vec<&str> = k.librdkafka.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "batch.num.messages",
                "linger.ms",
                "sasl.mechanisms",
                "sasl.password",
                "sasl.username",
                "security.protocol"
            ]
        );
        let c = k.client_config();
        assert_eq!(c.get("linger.ms"), Some("1"));
        assert_eq!(c.get("sasl.username"), Some("x"));
        assert_eq!(c.get("sasl.password"), Some("s3cret-value"));
        assert_eq!(c.get("batch.num.messages"), Some("7"));
        let debug = format!("{:?}", s.sinks[0]);
        assert!(!debug.contains("s3cret-value"), "{debug}");
        assert!(debug.contains("sasl.password"), "{debug}");

        // The nested form is the same thing.
        let (s, _) = load(
            "{name: k, type: kafka, brokers: \"a:9092\", topic: calls, librdkafka: {linger: {ms: 1}}}",
        )
        .expect("loads");
        assert_eq!(kafka(&s).client_config().get("linger.ms"), Some("1"));
    }

    #[test]
    fn validation_names_fields() {
        let errs = errors(
            "{name: k, type: kafka, brokers: \"nohost\", topic: \"calls.{nope}\", key: \"{callid}\", \
             librdkafka: {acks: \"1\", \"bootstrap.servers\": x, \"no.such.property\": y}}",
        );
        for expected in [
            "sinks[0].brokers[0]",
            "sinks[0].topic",
            "sinks[0].key",
            "sinks[0].librdkafka.acks",
            "sinks[0].librdkafka.bootstrap.servers",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(&format!("{expected}:"))),
                "missing {expected} in {errs:?}"
            );
        }
        let errs = errors(
            "{name: k, type: kafka, brokers: \"a:1\", topic: t, librdkafka: {\"no.such.property\": y}}",
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("sinks[0].librdkafka:") && e.contains("no.such.property")),
            "{errs:?}"
        );
        // Built with OpenSSL and zstd: TLS and zstd compression are accepted.
        let (_, warnings) = load(
            "{name: k, type: kafka, brokers: \"a:1\", topic: t, librdkafka: \
             {\"security.protocol\": SASL_SSL, \"sasl.mechanisms\": SCRAM-SHA-512, \
             \"compression.type\": zstd}}",
        )
        .expect("TLS, SCRAM and zstd are available");
        assert!(
            warnings.iter().all(|w| !w.path.starts_with("sinks")),
            "{warnings:?}"
        );
        let errs = errors("{name: k, type: kafka, brokers: \"a:1\", topic: t, format: avro}");
        assert!(errs.iter().any(|e| e.contains("avro")), "{errs:?}");
    }

    /// A producer that hit a fatal error (librdkafka's test hook raises one) is replaced by the
    /// next publish, which then succeeds.
    #[tokio::test]
    async fn fatal_producer_is_replaced() {
        let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
        mock.create_topic("fatal", 1, 1).unwrap();
        let yaml = format!(
            "{{name: k, type: kafka, brokers: \"{}\", topic: fatal, timeout_ms: 3000}}",
            mock.bootstrap_servers()
        );
        let (s, _) = load(&yaml).unwrap();
        let sink = KafkaSink::build(kafka(&s)).unwrap();
        let out = Outgoing::new(crate::event::test_support::sample_event());
        let first = sink.publish(&out).await.expect("first publish");
        let before = sink.inner.current();
        let reason = std::ffi::CString::new("test").unwrap();
        // SAFETY: a live handle; the hook only records a fatal error on it.
        unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                before.producer.client().native_ptr(),
                rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason.as_ptr(),
            );
        }
        assert!(before.producer.client().fatal_error().is_some());
        let second = sink
            .publish(&out)
            .await
            .expect("publish after a fatal error");
        let after = sink.inner.current();
        assert!(after.generation > before.generation, "producer replaced");
        match (first, second) {
            (Receipt::Kafka { offset: a, .. }, Receipt::Kafka { offset: b, .. }) => assert!(b > a),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn binary_headers_carry_every_attribute() {
        let (s, _) = load("{name: k, type: kafka, brokers: \"127.0.0.1:1\", topic: t}").unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        let sink = KafkaSink::build(kafka(&s)).unwrap();
        let mut ev = crate::event::test_support::sample_event();
        ev.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        let h = sink.inner.headers(&ev);
        use rdkafka::message::Headers;
        let got: Vec<(String, String)> = h
            .iter()
            .map(|h| {
                (
                    h.key.to_string(),
                    String::from_utf8(h.value.unwrap().to_vec()).unwrap(),
                )
            })
            .collect();
        let names: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "traceparent",
                "content-type",
                "ce_specversion",
                "ce_id",
                "ce_source",
                "ce_type",
                "ce_subject",
                "ce_time",
                "ce_partitionkey",
                "ce_callstatus",
                "ce_traceparent"
            ]
        );
        assert_eq!(
            got[0].1,
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        );
        assert_eq!(got[1].1, "application/json");
        assert_eq!(got[3].1, ev.id);
        assert!(!sink.is_ready(), "nothing listens on port 1");
    }
}
