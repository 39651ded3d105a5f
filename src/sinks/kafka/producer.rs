//! The producer's lifecycle: one librdkafka producer at a time (a slot), marked tainted when it
//! may never deliver again and replaced by the next publish; enqueueing with back-pressure and
//! awaiting the delivery report.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::future_producer::Delivery;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};

use super::health::Health;
use super::settings::redact_config_error;
use super::Inner;
use crate::sinks::{BuildError, SinkError};

/// One producer instance and whether it can still deliver.
pub(super) struct Slot {
    pub(super) producer: FutureProducer<Ctx>,
    pub(super) generation: u64,
    pub(super) state: Arc<SlotState>,
}

#[derive(Default)]
pub(super) struct SlotState {
    /// Set when this instance may never deliver again; the next publish replaces it.
    pub(super) tainted: AtomicBool,
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
pub(super) struct Ctx {
    health: Arc<Health>,
    state: Arc<SlotState>,
}

impl ClientContext for Ctx {
    /// Each kind of message (level and facility) at most once per [`crate::sinks::throttle::INTERVAL`], with
    /// the number held back since.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        let sink = self.health.sink.as_str();
        if matches!(level, RDKafkaLogLevel::Debug) {
            tracing::debug!(sink, fac, "librdkafka: {msg}");
            return;
        }
        let Some(repeats) = self.health.throttle.admit(&format!("log/{level:?}/{fac}")) else {
            return;
        };
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(sink, fac, repeats, "librdkafka: {msg}"),
            RDKafkaLogLevel::Warning => tracing::warn!(sink, fac, repeats, "librdkafka: {msg}"),
            _ => tracing::info!(sink, fac, repeats, "librdkafka: {msg}"),
        }
    }

    /// `ALL_BROKERS_DOWN` is a state change: logged when the sink goes from reachable to not
    /// (the health task logs the way back); other errors are summarised like the logs.
    fn error(&self, error: KafkaError, reason: &str) {
        let sink = self.health.sink.as_str();
        match error.rdkafka_error_code() {
            Some(RDKafkaErrorCode::AllBrokersDown) => {
                if self.health.reachable.swap(false, Ordering::AcqRel) {
                    tracing::warn!(sink, reason, "kafka: all brokers down");
                }
            }
            Some(RDKafkaErrorCode::Fatal) => {
                self.state.tainted.store(true, Ordering::Release);
                tracing::error!(
                    sink,
                    reason,
                    "kafka producer hit a fatal error; replacing it"
                );
            }
            code => {
                let kind = format!("error/{code:?}");
                if let Some(repeats) = self.health.throttle.admit(&kind) {
                    tracing::warn!(sink, error = %error, reason, repeats, "kafka client error");
                }
            }
        }
    }
}

/// Delivery errors after which an idempotent producer session may be unable to deliver again.
pub(super) fn poisons_session(code: RDKafkaErrorCode) -> bool {
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

pub(super) fn new_slot(
    config: &ClientConfig,
    health: &Arc<Health>,
    generation: u64,
) -> Result<Slot, BuildError> {
    let state = Arc::new(SlotState::default());
    let ctx = Ctx {
        health: health.clone(),
        state: state.clone(),
    };
    let producer: FutureProducer<Ctx> =
        config
            .create_with_context(ctx)
            .map_err(|e| BuildError::Broker {
                context: format!(
                    "cannot create the librdkafka producer: {}",
                    redact_config_error(&e)
                ),
                source: None,
            })?;
    Ok(Slot {
        producer,
        generation,
        state,
    })
}

impl Inner {
    pub(super) fn current(&self) -> Arc<Slot> {
        match self.slot.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The producer to publish with, replacing the current one first if it is tainted. Creating
    /// a librdkafka producer blocks (threads, sockets, config parsing), so a replacement runs on
    /// the blocking pool, never on a runtime worker.
    pub(super) async fn usable(self: &Arc<Self>) -> Result<Arc<Slot>, SinkError> {
        let slot = self.current();
        let fatal = slot.producer.client().fatal_error();
        if !slot.state.tainted.load(Ordering::Acquire) && fatal.is_none() {
            return Ok(slot);
        }
        let inner = self.clone();
        let why = fatal.map(|(c, m)| format!("{c}: {m}"));
        tokio::task::spawn_blocking(move || inner.replace(slot.generation, why))
            .await
            .map_err(|e| SinkError::broker("cannot replace the kafka producer", e))?
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
}

/// Enqueues one record, waiting for room while the local queue is full (back-pressure, never
/// unbounded memory). librdkafka copies the record, so the caller's buffers may go at once.
pub(super) async fn enqueue(
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

/// Awaits the delivery report of an enqueued record; a failure carries the partition the
/// record was meant for, when the partitioner had chosen one.
pub(super) async fn delivered(
    report: DeliveryFuture,
) -> Result<Delivery, (KafkaError, Option<i32>)> {
    use rdkafka::Message;
    match report.await {
        Ok(Ok(delivery)) => Ok(delivery),
        Ok(Err((e, record))) => Err((e, Some(record.partition()).filter(|p| *p >= 0))),
        // The producer was torn down before reporting: the outcome is unknown.
        Err(_canceled) => Err((KafkaError::Canceled, None)),
    }
}
