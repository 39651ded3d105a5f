//! The audit: `audit.delay_secs` after a 200, each acknowledged copy is read back from its
//! broker by its receipt and judged *verified*, *missing* or *unverifiable*.
//!
//! **Never in the way.** The fan-out offers a 200's copies with `try_send` to a bounded queue
//! ([`Queue::offer`]); sampled out or a full queue is counted and skipped, never waited for.
//! One task takes the queue in order, waits until each job is due and reads up to
//! [`CONCURRENT_JOBS`] jobs at once, each copy through its sink's [`Reader`].
//!
//! **Judging** is each reader's pure function of what the broker answered (`kafka::verdict`,
//! `jetstream::verdict`, `file::verdict`), so what counts as missing is unit-tested without
//! brokers. A read that fails (broker unreachable) is retried; after [`ATTEMPTS`] the copy is
//! *unverifiable* with the error, never *missing*: missing means the broker answered and the
//! copy is not there.

pub mod file;
pub mod jetstream;
pub mod kafka;
pub mod rabbitmq;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{now_ms, AuditResult, Deliveries, DeliveryMetrics, Verdict};
use crate::sinks::kafka::KafkaSinkSettings;
use crate::sinks::nats::NatsSinkSettings;
use crate::sinks::Receipt;

/// `audit`: reading each 200's copies back from the brokers.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuditSettings {
    /// On by default: every copy answered 200 is read back from its broker by its receipt
    /// (Kafka partition and offset, JetStream sequence, file offset) and counted verified or
    /// missing. `false` turns it off.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Seconds after the answer a copy is read back.
    #[serde(default = "default_delay_secs")]
    pub delay_secs: u64,
    /// Read back one 200 in this many (1: every one). Bounds the audit's own load on the
    /// brokers at high rates.
    #[serde(default = "default_sample")]
    pub sample: u32,
    /// Most 200s waiting to be read back; beyond it a 200 is not audited
    /// (`callbridge_audit_skipped_total{reason="queue_full"}`), never waited for.
    #[serde(default = "default_queue")]
    pub queue: usize,
}

fn default_true() -> bool {
    true
}
fn default_delay_secs() -> u64 {
    5
}
fn default_sample() -> u32 {
    1
}
fn default_queue() -> usize {
    10_000
}

impl Default for AuditSettings {
    fn default() -> Self {
        AuditSettings {
            enabled: true,
            delay_secs: default_delay_secs(),
            sample: default_sample(),
            queue: default_queue(),
        }
    }
}

impl AuditSettings {
    /// `validate`'s findings: (field, message).
    pub fn check(&self) -> Vec<(&'static str, &'static str)> {
        let mut out = Vec::new();
        if self.sample == 0 {
            out.push(("audit.sample", "must be at least 1 (1: every 200)"));
        }
        if self.enabled && self.queue == 0 {
            out.push(("audit.queue", "must be greater than 0"));
        }
        out
    }
}

/// Jobs read back at once.
pub const CONCURRENT_JOBS: usize = 8;
/// Tries of a read that fails before the copy is called unverifiable.
pub const ATTEMPTS: u32 = 3;
/// Wait after a failed read, doubled each time.
const RETRY_FIRST: Duration = Duration::from_millis(500);
/// Longest one read may take, whatever the reader does inside: a read that hangs (a broker
/// connection dead without a reset) fails there, instead of holding one of the
/// [`CONCURRENT_JOBS`] slots — and with them the whole audit — for ever.
pub const READ_DEADLINE: Duration = Duration::from_secs(10);

/// Whether the `n`th 200 (counted from 0) is audited at 1 in `sample`.
pub fn sampled(n: u64, sample: u32) -> bool {
    sample <= 1 || n % u64::from(sample) == 0
}

/// What a reader found for one copy.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    pub verdict: Verdict,
    pub detail: Option<String>,
}

impl Finding {
    pub fn verified() -> Finding {
        Finding {
            verdict: Verdict::Verified,
            detail: None,
        }
    }
    pub fn missing(why: impl Into<String>) -> Finding {
        Finding {
            verdict: Verdict::Missing,
            detail: Some(why.into()),
        }
    }
    pub fn unverifiable(why: impl Into<String>) -> Finding {
        Finding {
            verdict: Verdict::Unverifiable,
            detail: Some(why.into()),
        }
    }
}

/// A read that failed: the broker did not answer the question (not: the copy is absent).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("kafka")]
    Kafka(#[source] rdkafka::error::KafkaError),
    #[error("nats")]
    Nats(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("{0}")]
    Other(String),
}

/// Reads one sink's copies back.
#[async_trait]
pub trait Reader: Send + Sync {
    /// The copy of `event_id` at `receipt`, stored `age` ago.
    async fn read(
        &self,
        event_id: &str,
        receipt: &Receipt,
        age: Duration,
    ) -> Result<Finding, ReadError>;
}

/// Where the audit reads a sink's copies: the sink's settings (connection, credentials).
pub enum Source<'a> {
    Kafka(&'a KafkaSinkSettings),
    Nats(&'a NatsSinkSettings),
    /// Read back when the sink declares an audit queue.
    Rabbitmq(&'a crate::sinks::rabbitmq::RabbitmqSinkSettings),
    File,
    /// The null sink.
    None,
}

/// The copies the receipt alone says cannot be read back.
pub fn receipt_finding(receipt: &Receipt) -> Option<Finding> {
    match receipt {
        Receipt::Null { .. } => Some(Finding::unverifiable("the null sink stores nothing")),
        Receipt::NatsCore { .. } => Some(Finding::unverifiable(
            "core NATS stores nothing to read back",
        )),
        _ => None,
    }
}

/// Each sink's reader, by sink name.
#[derive(Default, Clone)]
pub struct Readers {
    by_sink: HashMap<String, Arc<dyn Reader>>,
}

impl Readers {
    /// A reader for every sink whose copies can be read back.
    pub fn build<'a>(sources: impl IntoIterator<Item = (String, Source<'a>)>) -> Readers {
        let mut by_sink: HashMap<String, Arc<dyn Reader>> = HashMap::new();
        for (name, source) in sources {
            let reader: Arc<dyn Reader> = match source {
                Source::Kafka(s) => match kafka::KafkaReader::new(s) {
                    Ok(r) => Arc::new(r),
                    Err(e) => {
                        tracing::warn!(sink = %name, error = %crate::sinks::error_chain(&e), "no audit reader for the sink; its copies are unverifiable");
                        continue;
                    }
                },
                Source::Nats(s) if s.jetstream.enabled => {
                    Arc::new(jetstream::JetStreamReader::new(s.clone()))
                }
                Source::Rabbitmq(s) => match rabbitmq::RabbitmqReader::new(s) {
                    Some(r) => Arc::new(r),
                    None => continue,
                },
                Source::File => Arc::new(file::FileReader),
                Source::Nats(_) | Source::None => continue,
            };
            by_sink.insert(name, reader);
        }
        Readers { by_sink }
    }

    /// `sink` read by `reader` (tests).
    pub fn with(mut self, sink: &str, reader: Arc<dyn Reader>) -> Readers {
        self.by_sink.insert(sink.to_string(), reader);
        self
    }

    /// What the audit finds of one copy: the receipt's own answer, else its reader's (retried
    /// while the read fails).
    pub async fn judge(
        &self,
        sink: &str,
        event_id: &str,
        receipt: &Receipt,
        answered_ms: u64,
    ) -> Finding {
        if let Some(f) = receipt_finding(receipt) {
            return f;
        }
        let Some(reader) = self.by_sink.get(sink) else {
            return Finding::unverifiable(match receipt {
                Receipt::Rabbitmq { .. } => {
                    "RabbitMQ has no read by receipt, and the sink declares no audit queue"
                }
                _ => "no reader for this sink",
            });
        };
        let mut wait = RETRY_FIRST;
        let mut last = None;
        for attempt in 1..=ATTEMPTS {
            let age = Duration::from_millis(now_ms().saturating_sub(answered_ms));
            let read = tokio::time::timeout(READ_DEADLINE, reader.read(event_id, receipt, age))
                .await
                .unwrap_or(Err(ReadError::Timeout(READ_DEADLINE.as_millis() as u64)));
            match read {
                Ok(f) => return f,
                Err(e) => {
                    tracing::debug!(sink, attempt, error = %crate::sinks::error_chain(&e), "audit read failed");
                    last = Some(crate::sinks::error_chain(&e));
                }
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        Finding::unverifiable(format!(
            "the broker could not be read: {}",
            last.unwrap_or_default()
        ))
    }
}

/// One 200's copies to read back.
struct Job {
    id: u64,
    event_id: String,
    answered_ms: u64,
    due: tokio::time::Instant,
    copies: Vec<(String, Receipt)>,
}

/// The 200s offered and not yet read back: their answer times, for the oldest one's age.
#[derive(Default)]
struct Unaudited {
    by_job: Mutex<BTreeMap<u64, u64>>,
}

impl Unaudited {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, u64>> {
        self.by_job.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seconds since the oldest one was answered, at `now_ms` (0 when none waits).
    fn oldest_age_secs(&self, now_ms: u64) -> f64 {
        let oldest = self.lock().values().min().copied();
        oldest.map_or(0.0, |t| now_ms.saturating_sub(t) as f64 / 1000.0)
    }
}

/// The fan-out's side of the audit: offers a 200's copies, never waits.
pub struct Queue {
    tx: mpsc::Sender<Job>,
    sample: u32,
    delay: Duration,
    offered: AtomicU64,
    unaudited: Arc<Unaudited>,
    metrics: Arc<DeliveryMetrics>,
}

impl Queue {
    /// Offers the copies of a 200 (sampled, and only when the queue has room).
    pub fn offer(&self, event_id: &str, copies: Vec<(String, Receipt)>) {
        let n = self.offered.fetch_add(1, Ordering::Relaxed);
        if !sampled(n, self.sample) {
            self.metrics
                .skipped
                .with_label_values(&["sampled_out"])
                .inc();
            return;
        }
        let answered_ms = now_ms();
        let job = Job {
            id: n,
            event_id: event_id.to_string(),
            answered_ms,
            due: tokio::time::Instant::now() + self.delay,
            copies,
        };
        self.unaudited.lock().insert(n, answered_ms);
        if let Err(e) = self.tx.try_send(job) {
            self.unaudited.lock().remove(&n);
            let reason = match e {
                mpsc::error::TrySendError::Full(_) => "queue_full",
                mpsc::error::TrySendError::Closed(_) => "stopped",
            };
            self.metrics.skipped.with_label_values(&[reason]).inc();
        }
    }
}

/// The audit's task, to start once the index it writes to exists.
pub struct Worker {
    rx: mpsc::Receiver<Job>,
    readers: Readers,
    unaudited: Arc<Unaudited>,
    metrics: Arc<DeliveryMetrics>,
}

/// The queue for the fan-out and the worker reading it.
pub fn channel(
    settings: &AuditSettings,
    readers: Readers,
    metrics: Arc<DeliveryMetrics>,
) -> (Queue, Worker) {
    let (tx, rx) = mpsc::channel(settings.queue.max(1));
    let unaudited = Arc::new(Unaudited::default());
    (
        Queue {
            tx,
            sample: settings.sample,
            delay: Duration::from_secs(settings.delay_secs),
            offered: AtomicU64::new(0),
            unaudited: unaudited.clone(),
            metrics: metrics.clone(),
        },
        Worker {
            rx,
            readers,
            unaudited,
            metrics,
        },
    )
}

impl Worker {
    /// Runs until the index is dropped.
    pub fn spawn(self, deliveries: Weak<Deliveries>) -> tokio::task::JoinHandle<()> {
        let Worker {
            rx,
            readers,
            unaudited,
            metrics,
        } = self;
        let gauge = {
            let (unaudited, metrics, deliveries) =
                (unaudited.clone(), metrics.clone(), deliveries.clone());
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let Some(d) = deliveries.upgrade() else {
                        return;
                    };
                    metrics.events.set(d.len() as i64);
                    drop(d);
                    metrics
                        .oldest_unaudited
                        .set(unaudited.oldest_age_secs(now_ms()));
                }
            }
        };
        tokio::spawn(async move {
            let gauge = tokio::spawn(gauge);
            let jobs =
                futures::stream::unfold(
                    rx,
                    |mut rx| async move { rx.recv().await.map(|j| (j, rx)) },
                );
            jobs.map(|job| {
                let (readers, unaudited, metrics, deliveries) = (
                    readers.clone(),
                    unaudited.clone(),
                    metrics.clone(),
                    deliveries.clone(),
                );
                async move {
                    tokio::time::sleep_until(job.due).await;
                    let (r, j) = (&readers, &job);
                    let judged = futures::future::join_all(j.copies.iter().map(
                        |(sink, receipt)| async move {
                            let f = r.judge(sink, &j.event_id, receipt, j.answered_ms).await;
                            (sink, receipt, f)
                        },
                    ))
                    .await;
                    unaudited.lock().remove(&job.id);
                    let Some(d) = deliveries.upgrade() else {
                        return;
                    };
                    for (sink, receipt, f) in judged {
                        record(&d, &metrics, &job.event_id, sink, receipt, f);
                    }
                }
            })
            .buffer_unordered(CONCURRENT_JOBS)
            .for_each(|()| async {})
            .await;
            gauge.abort();
        })
    }
}

fn record(
    d: &Deliveries,
    metrics: &DeliveryMetrics,
    event_id: &str,
    sink: &str,
    receipt: &Receipt,
    f: Finding,
) {
    let counter = match f.verdict {
        Verdict::Verified => &metrics.verified,
        Verdict::Missing => &metrics.missing,
        Verdict::Unverifiable => &metrics.unverifiable,
    };
    counter.with_label_values(&[sink]).inc();
    if f.verdict == Verdict::Missing {
        tracing::error!(
            sink,
            event_id,
            detail = f.detail.as_deref().unwrap_or(""),
            "audit: a copy answered 200 is not in the broker"
        );
    }
    d.audited(
        event_id,
        sink,
        receipt,
        AuditResult {
            verdict: f.verdict,
            at_ms: now_ms(),
            detail: f.detail.map(String::into_boxed_str),
        },
    );
}

#[cfg(test)]
mod tests;
