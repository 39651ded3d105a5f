//! Kafka: the record at the receipt's partition and offset, its `ce_id` header (or, in
//! structured mode, the value's `id`) compared with the event id.
//!
//! One consumer per sink, `assign`ed to the offset for each read (no consumer group joins, no
//! commits), with `auto.offset.reset: error`, so a read below the partition's start fails
//! instead of jumping elsewhere. The watermarks are asked first: an offset below the low one
//! was deleted (missing) unless the topic's retention passed it (unverifiable); at or beyond
//! the high one, the log was truncated (missing).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::message::{BorrowedMessage, Headers};
use rdkafka::{Message, Offset, TopicPartitionList};
use secrecy::ExposeSecret;

use super::{Finding, ReadError, Reader};
use crate::sinks::kafka::KafkaSinkSettings;
use crate::sinks::Receipt;

/// What the partition holds at the offset.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// A record, with the event id it carries (None: it carries none).
    Found(Option<String>),
    /// The partition now starts after the offset.
    Below { low: i64 },
    /// The partition ends at or before the offset.
    Beyond { high: i64 },
    /// The next record there is a later one: the offset's record is gone (compaction).
    Gap { next: i64 },
}

/// The topic's settings that may remove a record legitimately.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Retention {
    /// `retention.ms` (None: unknown or infinite).
    pub retention_ms: Option<u64>,
    /// `cleanup.policy` includes `compact`.
    pub compacted: bool,
}

/// The verdict on the copy of `expected` from what the partition holds, the copy's age and the
/// topic's retention.
pub fn verdict(expected: &str, probe: &Probe, age_ms: u64, retention: &Retention) -> Finding {
    match probe {
        Probe::Found(Some(id)) if id == expected => Finding::verified(),
        Probe::Found(Some(id)) => Finding::missing(format!("another record is there ({id})")),
        Probe::Found(None) => Finding::missing("the record there carries no event id"),
        Probe::Below { low } => match retention.retention_ms {
            Some(r) if age_ms >= r => Finding::unverifiable(format!(
                "the topic's retention ({r} ms) has passed; the partition starts at {low}"
            )),
            _ if retention.compacted => {
                Finding::unverifiable(format!("compacted topic; the partition starts at {low}"))
            }
            _ => Finding::missing(format!(
                "deleted: the partition starts at offset {low}, within the topic's retention"
            )),
        },
        Probe::Beyond { high } => Finding::missing(format!(
            "the partition ends at offset {high}: the log was truncated"
        )),
        Probe::Gap { next } if retention.compacted => {
            Finding::unverifiable(format!("compacted topic: the next record is at {next}"))
        }
        Probe::Gap { next } => Finding::missing(format!(
            "no record at the offset (the next one is at {next})"
        )),
    }
}

/// The event id a record carries: its `ce_id` header, else a structured value's `id`.
fn event_id(m: &BorrowedMessage<'_>) -> Option<String> {
    let header = m.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key == "ce_id")
            .and_then(|h| h.value)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    });
    header.or_else(|| {
        let v: serde_json::Value = serde_json::from_slice(m.payload()?).ok()?;
        v.get("id")?.as_str().map(str::to_string)
    })
}

/// The librdkafka properties of the sink that apply to any client: how to reach and
/// authenticate to the brokers.
fn client_config(s: &KafkaSinkSettings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", s.brokers.join(","));
    for (k, v) in &s.librdkafka {
        let shared = [
            "security.",
            "sasl.",
            "ssl.",
            "socket.",
            "broker.",
            "client.",
        ];
        if shared.iter().any(|p| k.starts_with(p)) {
            c.set(k, v.expose_secret());
        }
    }
    c.set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
    c
}

/// A consumer that reads what it is assigned, no more: no group joins, no commits, and an
/// error (not a jump) at an offset out of range.
fn consumer_config(s: &KafkaSinkSettings) -> ClientConfig {
    let mut c = client_config(s);
    c.set("group.id", format!("callbridge-audit-{}", s.name))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "error")
        .set("enable.partition.eof", "false")
        // Each read assigns one partition at one offset. librdkafka keeps one fetch request
        // in flight per broker, and one at a partition's end waits up to `fetch.wait.max.ms`
        // (500 ms by default) for data: the next read's assignment waited for it, so the
        // audit read a few copies a second and fell behind any real rate. And a read needs
        // one message, not librdkafka's default prefetch of 100 000.
        .set("fetch.wait.max.ms", "10")
        .set("queued.min.messages", "16");
    c
}

/// How long one read may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a topic's retention settings are reused.
const RETENTION_TTL: Duration = Duration::from_secs(60);

/// The audit's clients keep librdkafka's own complaints (a broker down, a reconnect) at debug
/// level: the sink already reports the broker's state, and a read that fails is an
/// *unverifiable* verdict, not a log line per attempt (no log storm during an outage).
pub struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, msg: &str) {
        tracing::debug!(fac, "librdkafka (audit): {msg}");
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::debug!(error = %error, "librdkafka (audit): {reason}");
    }
}

impl ConsumerContext for Quiet {}

pub struct KafkaReader {
    consumer: std::sync::Arc<Mutex<BaseConsumer<Quiet>>>,
    admin: AdminClient<Quiet>,
    retention: Mutex<HashMap<String, (Instant, Retention)>>,
}

impl KafkaReader {
    pub fn new(s: &KafkaSinkSettings) -> Result<KafkaReader, rdkafka::error::KafkaError> {
        Ok(KafkaReader {
            consumer: std::sync::Arc::new(Mutex::new(
                consumer_config(s).create_with_context(Quiet)?,
            )),
            admin: client_config(s).create_with_context(Quiet)?,
            retention: Mutex::new(HashMap::new()),
        })
    }

    async fn probe(&self, topic: &str, partition: i32, offset: i64) -> Result<Probe, ReadError> {
        let consumer = self.consumer.clone();
        let topic = topic.to_string();
        tokio::task::spawn_blocking(move || {
            let c = consumer.lock().unwrap_or_else(|p| p.into_inner());
            probe(&c, &topic, partition, offset)
        })
        .await
        .map_err(|e| ReadError::Other(e.to_string()))?
    }

    async fn retention(&self, topic: &str) -> Result<Retention, ReadError> {
        if let Some((at, r)) = self.lock_retention().get(topic) {
            if at.elapsed() < RETENTION_TTL {
                return Ok(r.clone());
            }
        }
        let opts = AdminOptions::new().request_timeout(Some(READ_TIMEOUT));
        let results = self
            .admin
            .describe_configs([&ResourceSpecifier::Topic(topic)], &opts)
            .await
            .map_err(ReadError::Kafka)?;
        let mut r = Retention::default();
        for res in results {
            let res = res.map_err(|e| ReadError::Other(format!("describe configs: {e:?}")))?;
            let value = |name: &str| res.get(name).and_then(|e| e.value.clone());
            r.retention_ms = value("retention.ms")
                .and_then(|v| v.parse::<i64>().ok())
                .and_then(|v| u64::try_from(v).ok());
            r.compacted = value("cleanup.policy").is_some_and(|p| p.contains("compact"));
        }
        self.lock_retention()
            .insert(topic.to_string(), (Instant::now(), r.clone()));
        Ok(r)
    }

    fn lock_retention(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Retention)>> {
        self.retention.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What `c` finds at the offset (blocking).
fn probe(
    c: &BaseConsumer<Quiet>,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Probe, ReadError> {
    let (low, high) = c
        .fetch_watermarks(topic, partition, READ_TIMEOUT)
        .map_err(ReadError::Kafka)?;
    if offset < low {
        return Ok(Probe::Below { low });
    }
    if offset >= high {
        return Ok(Probe::Beyond { high });
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .map_err(ReadError::Kafka)?;
    c.assign(&tpl).map_err(ReadError::Kafka)?;
    let deadline = Instant::now() + READ_TIMEOUT;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match c.poll(left) {
            Some(Ok(m)) if m.topic() == topic && m.partition() == partition => {
                if m.offset() == offset {
                    return Ok(Probe::Found(event_id(&m)));
                }
                if m.offset() > offset {
                    return Ok(Probe::Gap { next: m.offset() });
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(ReadError::Kafka(e)),
            None => break,
        }
    }
    Err(ReadError::Timeout(READ_TIMEOUT.as_millis() as u64))
}

#[async_trait]
impl Reader for KafkaReader {
    async fn read(
        &self,
        event_id: &str,
        receipt: &Receipt,
        age: Duration,
    ) -> Result<Finding, ReadError> {
        let Receipt::Kafka {
            topic,
            partition,
            offset,
        } = receipt
        else {
            return Err(ReadError::Other("not a Kafka receipt".into()));
        };
        let probe = self.probe(topic, *partition, *offset).await?;
        let retention = match probe {
            Probe::Below { .. } | Probe::Gap { .. } => self.retention(topic).await?,
            _ => Retention::default(),
        };
        Ok(verdict(
            event_id,
            &probe,
            age.as_millis() as u64,
            &retention,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Verdict;

    fn v(probe: Probe, age_ms: u64, retention_ms: Option<u64>, compacted: bool) -> Verdict {
        verdict(
            "e1",
            &probe,
            age_ms,
            &Retention {
                retention_ms,
                compacted,
            },
        )
        .verdict
    }

    #[test]
    fn the_same_id_at_the_offset_is_verified_and_any_other_is_missing() {
        assert_eq!(
            v(Probe::Found(Some("e1".into())), 0, None, false),
            Verdict::Verified
        );
        assert_eq!(
            v(Probe::Found(Some("e2".into())), 0, None, false),
            Verdict::Missing
        );
        assert_eq!(v(Probe::Found(None), 0, None, false), Verdict::Missing);
    }

    #[test]
    fn below_the_start_is_missing_within_retention_and_unverifiable_past_it() {
        let below = || Probe::Below { low: 10 };
        assert_eq!(v(below(), 999, Some(1000), false), Verdict::Missing);
        assert_eq!(v(below(), 1000, Some(1000), false), Verdict::Unverifiable);
        assert_eq!(v(below(), 5, None, false), Verdict::Missing);
        assert_eq!(v(below(), 5, None, true), Verdict::Unverifiable);
        assert_eq!(v(below(), 5, Some(1000), true), Verdict::Unverifiable);
    }

    #[test]
    fn a_truncated_log_is_missing_and_a_gap_is_missing_unless_compacted() {
        assert_eq!(
            v(Probe::Beyond { high: 3 }, 0, Some(0), true),
            Verdict::Missing
        );
        assert_eq!(v(Probe::Gap { next: 4 }, 0, None, false), Verdict::Missing);
        assert_eq!(
            v(Probe::Gap { next: 4 }, 0, None, true),
            Verdict::Unverifiable
        );
    }

    #[test]
    fn a_missing_verdict_says_why() {
        let f = verdict("e1", &Probe::Below { low: 7 }, 0, &Retention::default());
        assert!(
            f.detail
                .as_deref()
                .is_some_and(|d| d.contains("starts at offset 7")),
            "{f:?}"
        );
    }
}
