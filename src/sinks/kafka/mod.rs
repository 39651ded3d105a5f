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
//! * **Diagnosis**: a record that times out while a broker answers gets its 503 explained from
//!   the topic's metadata (missing topic, no leader, in-sync replicas short): `diagnose.rs`.
//! * **Self-healing**: an idempotent producer can end up unable to deliver ever again (a fatal
//!   error; or, on brokers without KIP-360 epoch bumps (tansu 0.6 was one), `PRODUCER_FENCED` after
//!   a record timed out). A delivery error that can poison the session marks the producer
//!   *tainted*; the next publish (or the health task) swaps in a fresh producer. Retired producers
//!   are dropped on a plain thread because librdkafka's teardown blocks.
//!
//! Binary mode follows the CloudEvents Kafka protocol binding: value = `data` JSON,
//! `content-type` header = `datacontenttype`, every other attribute as a `ce_<name>` header.
//! Structured mode: value = the whole event, `content-type: application/cloudevents+json`.

mod diagnose;
mod health;
pub mod preflight;
mod producer;
mod settings;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::Producer;

use super::{BuildError, Outgoing, Receipt, Sink, SinkError};
use crate::event::binding::{Format, Headers, Message};
use crate::event::Event;
use crate::template::{Template, KAFKA_TOPIC};
use diagnose::diagnose;
use health::{health_loop, Health};
use producer::{delivered, enqueue, new_slot, poisons_session, Slot};

pub use settings::KafkaSinkSettings;

/// librdkafka's default `message.max.bytes`.
const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// The bytes librdkafka counts against `message.max.bytes` for one record: value, key, and
/// each header's name and value (with a few bytes of framing each).
fn record_size(message: &Message<'_>, key: &str) -> usize {
    let header = |name: &str, value: &str| name.len() + value.len() + 4;
    message.payload.len()
        + key.len()
        + message.traceparent.map_or(0, |t| header("traceparent", t))
        + message
            .content_type
            .map_or(0, |c| header("content-type", c))
        + message
            .attributes
            .iter()
            .map(|(n, v)| header(n, v))
            .sum::<usize>()
}

pub struct KafkaSink {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    topic: Template,
    key: Template,
    format: Format,
    timeout: Duration,
    /// How long a publish waits for room in a full local queue: `message.timeout.ms`, so the
    /// `queue_full` verdict comes before the fan-out's own timeout.
    queue_timeout: Duration,
    config: ClientConfig,
    /// The producer's `message.max.bytes`: librdkafka refuses a larger record at once.
    max_message_bytes: usize,
    health: Arc<Health>,
    /// Asks the cluster why records time out, once at a time for the whole sink.
    diagnoser: Arc<diagnose::Diagnoser>,
    slot: RwLock<Arc<Slot>>,
    next_generation: AtomicU64,
}

impl KafkaSink {
    /// Creates the producer and starts the health task. Does not wait for a broker: a cluster
    /// that is down at startup leaves the sink not-ready, and publishes fail until it is back.
    fn start(settings: &KafkaSinkSettings) -> Result<KafkaSink, BuildError> {
        let template = |field, source| BuildError::Template { field, source };
        let topic = Template::parse(&settings.topic).map_err(|e| template("topic", e))?;
        settings::check_topic_literals(&topic).map_err(|message| BuildError::Settings {
            field: "topic",
            message,
        })?;
        let key = Template::parse(&settings.key).map_err(|e| template("key", e))?;
        let health = Arc::new(Health {
            sink: settings.name.clone(),
            reachable: AtomicBool::new(false),
            throttle: Default::default(),
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
            max_message_bytes: config
                .get("message.max.bytes")
                .and_then(|v| v.parse().ok())
                .unwrap_or(DEFAULT_MESSAGE_MAX_BYTES),
            config,
            health,
            diagnoser: Arc::default(),
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

impl Inner {
    fn fits(&self, message: &Message<'_>, key: &str) -> Result<(), SinkError> {
        let size = record_size(message, key);
        if size > self.max_message_bytes {
            return Err(SinkError::TooLarge(format!(
                "record of {size} bytes (value {}, key and headers) exceeds the producer's \
                 message.max.bytes of {} bytes",
                message.payload.len(),
                self.max_message_bytes
            )));
        }
        Ok(())
    }
}

/// The record's headers: the W3C `traceparent`, the `content-type`, then (binary mode) every
/// attribute as a `ce_*` header. Public so that `callbridge asyncapi` documents what is sent.
pub fn headers(message: &Message<'_>) -> OwnedHeaders {
    let traceparent = message.traceparent.map(|t| ("traceparent", t));
    let content_type = message.content_type.map(|c| ("content-type", c));
    let attributes = message
        .attributes
        .iter()
        .map(|(name, value)| (*name, value.as_ref()));
    traceparent
        .into_iter()
        .chain(content_type)
        .chain(attributes)
        .fold(OwnedHeaders::new_with_capacity(13), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        })
}

#[async_trait]
impl Sink for KafkaSink {
    fn destination(&self, event: &Event) -> String {
        self.inner.topic.render_escaped(event, &KAFKA_TOPIC)
    }

    #[tracing::instrument(skip_all, fields(sink = %self.inner.name, event_id = %event.event.id))]
    async fn publish(&self, event: &Outgoing) -> Result<Receipt, SinkError> {
        let inner = &self.inner;
        let started = Instant::now();
        let ev = &event.event;
        // Legal topic characters only, at most 249: a sender's value can neither reach
        // librdkafka's `CString::new(topic).unwrap()` with a NUL nor make an illegal name.
        let topic = inner.topic.render_escaped(ev, &KAFKA_TOPIC);
        let key = inner.key.render(ev);
        let message = Headers::KAFKA.encode(inner.format, event);
        inner.fits(&message, &key)?;
        let headers = headers(&message);
        let payload = message.payload;
        let slot = inner.usable().await?;
        let health = inner.health.clone();
        let diagnoser = inner.diagnoser.clone();
        let queue_timeout = inner.queue_timeout;
        // What is left of our timeout after librdkafka's own gives up: half of it may go to
        // asking the cluster why.
        let diagnose_budget =
            (inner.timeout.saturating_sub(queue_timeout) / 2).max(Duration::from_millis(100));
        let t = topic.clone();
        // The delivery report is awaited in its own task: if the fan-out stops waiting (its
        // budget can be shorter than ours), the report is still seen and a poisoned producer
        // still gets replaced. The task ends by `message.timeout.ms` at the latest.
        let delivery = tokio::spawn(async move {
            let report = enqueue(&slot, &t, &key, &payload, headers, queue_timeout).await;
            drop(payload);
            let result = match report {
                Ok(report) => delivered(report).await,
                Err(e) => Err((e, None)),
            };
            let mut why = None;
            if let Err((e, partition)) = &result {
                let code = e.rdkafka_error_code();
                if code.is_some_and(poisons_session) {
                    slot.state.tainted.store(true, Ordering::Release);
                }
                if code == Some(RDKafkaErrorCode::AllBrokersDown) {
                    health.reachable.store(false, Ordering::Release);
                }
                if code == Some(RDKafkaErrorCode::MessageTimedOut)
                    && health.reachable.load(Ordering::Acquire)
                {
                    why = diagnose(&diagnoser, slot.clone(), t, *partition, diagnose_budget).await;
                }
            }
            (result.map_err(|(e, _)| e), why)
        });
        let (result, why) = delivery.await.map_err(|e| SinkError::Broker {
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
                    Some(RDKafkaErrorCode::MessageTimedOut) if why.is_some() => SinkError::broker(
                        format!(
                            "record for topic {topic} not acknowledged within {waited} ms: \
                                 {} (it may still have been stored; dedupe by ce_id)",
                            why.unwrap_or_default()
                        ),
                        e,
                    ),
                    Some(RDKafkaErrorCode::MessageTimedOut) => SinkError::broker(
                        format!(
                            "record for topic {topic} not acknowledged within {waited} ms although \
                             a broker is reachable: does the topic exist, is its leader up? \
                             (it may still have been stored; dedupe by ce_id)"
                        ),
                        e,
                    ),
                    Some(
                        c @ (RDKafkaErrorCode::MessageSizeTooLarge
                        | RDKafkaErrorCode::InvalidMessageSize),
                    ) => SinkError::TooLarge(format!(
                        "topic {topic} refused the record ({c}): above the producer's or the \
                         topic's message.max.bytes"
                    )),
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

    fn check_size(&self, event: &Outgoing) -> Result<(), SinkError> {
        let inner = &self.inner;
        let message = Headers::KAFKA.encode(inner.format, event);
        inner.fits(&message, &inner.key.render(&event.event))
    }

    fn max_message_bytes(&self) -> Option<usize> {
        Some(self.inner.max_message_bytes)
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

    fn settings(yaml: &str) -> KafkaSinkSettings {
        serde_yaml::from_str(yaml).expect("kafka sink settings")
    }

    /// A producer that hit a fatal error (librdkafka's test hook raises one) is replaced by the
    /// next publish, which then succeeds.
    #[tokio::test]
    async fn fatal_producer_is_replaced() {
        let mock = rdkafka::mocking::MockCluster::new(1).unwrap();
        mock.create_topic("fatal", 1, 1).unwrap();
        let s = settings(&format!(
            "{{name: k, brokers: \"{}\", topic: fatal, timeout_ms: 3000}}",
            mock.bootstrap_servers()
        ));
        let sink = KafkaSink::start(&s).unwrap();
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
        let s = settings("{name: k, brokers: \"127.0.0.1:1\", topic: t}");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _g = rt.enter();
        let sink = KafkaSink::start(&s).unwrap();
        let mut ev = crate::event::test_support::sample_event();
        ev.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        let out = Outgoing::new(ev.clone());
        let h = headers(&Headers::KAFKA.encode(sink.inner.format, &out));
        use rdkafka::message::Headers as _;
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
