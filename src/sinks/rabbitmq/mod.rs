//! The `rabbitmq` sink: AMQP 0-9-1 with publisher confirms, mandatory routing and reconnects.
//!
//! **What "acknowledged" means.** Every channel is in confirm mode and every message is published
//! `mandatory` and persistent. `publish` returns a receipt only for a confirm `Ack` of a message
//! the broker did not return: it then has the message in every queue it routes to (on disk for
//! a durable queue). A `Nack` (e.g. a full queue with `x-overflow: reject-publish`) or a
//! `basic.return` (no queue bound for the routing key; RabbitMQ still *acks* those) is a
//! [`SinkError::Rejected`] naming the reason.
//!
//! **Why many publishes in flight per channel, and how returns find their publish.** One
//! unconfirmed publish per channel made attribution trivial but cost 3–4× in throughput against
//! pipelined confirms. AMQP 0-9-1 gives a `basic.return` no delivery tag, and lapin hands each
//! return to whichever confirm it resolves next (for a multiple ack, in hash-set order), so
//! with several publishes in flight a return often arrives on the wrong confirm and the
//! returned message's own confirm reads as a clean `Ack`. So every message carries a unique
//! sequence number (`x-callbridge-seq`, returned with the message), one task per channel owns
//! all its confirms (`channel.rs`), and `settle.rs` decides each publish only when no return
//! of it can still be out of sight — the rule and why it is exact are written there, and a
//! model test drives it through thousands of simulated lapin schedules. In doubt (lapin failed
//! a publish, a return without a readable number) nothing is reported delivered and the
//! channel is retired. `channels` channels (default 8) with up to `max_in_flight_per_channel`
//! (default 128) publishes each share one connection.
//!
//! **Connection loss.** lapin does not reconnect, and a confirm may stay pending forever on a dead
//! connection (lapin #246, #409). A supervisor task owns the connection: it watches the
//! connection's events and status, marks the sink not ready as soon as it is lost, fails every
//! waiting publisher at once (each channel's task answers all of its publishes), and reconnects
//! with capped exponential backoff, re-declaring the topology. Every publish is bounded by the
//! sink's timeout (and the fan-out's deadline); a confirm outstanding longer than the timeout
//! retires its channel (failing what is still in flight on it), which also catches a silent
//! partition: the replacement channel cannot be opened, so the connection is dropped.

mod channel;
pub mod message;
mod pool;
pub mod preflight;
mod settings;
mod settle;
mod socket;
mod supervisor;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::ExposeSecret;

pub use message::{APP_ID, SEQ_HEADER};
pub use settings::{ExchangeDeclare, ExchangeType, QueueBinding, RabbitmqSinkSettings};

use super::{BuildError, Outgoing, Receipt, Sink, SinkError};
use crate::event::binding::Format;
use crate::template::{Template, AMQP_ROUTING_KEY};
use channel::{Ended, Message, PublishFailure};
use pool::PipeSettings;
use settings::SHORTSTR_MAX;
use settle::Verdict;
use supervisor::{Shared, Topology};

/// How long one connection attempt (TCP, TLS, AMQP handshake, topology, channels) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct RabbitmqSink {
    exchange: Arc<str>,
    routing: Template,
    format: Format,
    timeout: Duration,
    shared: Arc<Shared>,
}

impl RabbitmqSink {
    /// Starts the sink. The connection is made (and remade) in the background; this waits for
    /// the first attempt only (at most [`CONNECT_TIMEOUT`]) so that a reachable broker is ready
    /// before the first webhook, while a broker that is down only makes the sink not ready.
    async fn start(settings: &RabbitmqSinkSettings) -> Result<RabbitmqSink, BuildError> {
        let uri = settings::parse_url(settings.url.expose_secret()).map_err(|message| {
            BuildError::Settings {
                field: "url",
                message,
            }
        })?;
        let routing =
            Template::parse(&settings.routing_key).map_err(|source| BuildError::Template {
                field: "routing_key",
                source,
            })?;
        let topology = Topology {
            exchange: settings.exchange.clone(),
            declare: settings.declare.clone(),
            queues: settings.queues.clone(),
            pipes: PipeSettings {
                channels: settings.channels.max(1),
                max_in_flight: settings.max_in_flight_per_channel.max(1),
                overdue: Duration::from_millis(settings.timeout_ms),
            },
        };
        let shared = supervisor::start(&settings.name, uri, topology).await;
        Ok(RabbitmqSink {
            exchange: Arc::from(settings.exchange.as_str()),
            routing,
            format: settings.format,
            timeout: Duration::from_millis(settings.timeout_ms),
            shared,
        })
    }

    async fn publish_inner(&self, out: &Outgoing, routing_key: &str) -> Result<(), SinkError> {
        let link = self
            .shared
            .current()
            .ok_or_else(|| self.shared.not_connected())?;
        let seq = self.shared.next_seq();
        let (body, properties) = message::build_message(self.format, out, seq);
        fits_frame(&link.connection, &properties)?;
        let reply = link
            .publish(Message {
                exchange: self.exchange.clone(),
                routing_key: routing_key.to_string(),
                body,
                properties,
                seq,
            })
            .await
            .ok_or_else(|| self.shared.not_connected())?;
        match reply {
            Ok(Verdict::Delivered) => Ok(()),
            Ok(Verdict::Unroutable(r)) => Err(SinkError::Rejected(format!(
                "unroutable: {} {} exchange={:?} routing_key={:?}",
                r.reply_text, r.reply_code, self.exchange, routing_key
            ))),
            Ok(Verdict::Nacked) => Err(SinkError::Rejected(format!(
                "nacked by the broker (e.g. a full queue with x-overflow: reject-publish) \
                 exchange={:?} routing_key={routing_key:?}",
                self.exchange
            ))),
            Ok(Verdict::Doubt(why)) => Err(SinkError::Broker {
                message: format!(
                    "rabbitmq outcome unknown ({why}); not reported as delivered, the channel \
                     is retired"
                ),
                source: None,
            }),
            Ok(Verdict::Failed(PublishFailure::Lapin(e))) => Err(self.lapin_error("publish", e)),
            Ok(Verdict::Failed(PublishFailure::NotConfirmMode)) => Err(SinkError::Broker {
                message: "channel is not in confirm mode".into(),
                source: None,
            }),
            Err(Ended { lost: true, reason }) => Err(SinkError::NotConnected(reason)),
            Err(Ended {
                lost: false,
                reason,
            }) => Err(SinkError::Broker {
                message: format!(
                    "rabbitmq channel retired before the confirm ({reason}); outcome unknown"
                ),
                source: None,
            }),
        }
    }

    fn lapin_error(&self, what: &str, e: lapin::Error) -> SinkError {
        use lapin::ErrorKind as K;
        match e.kind() {
            K::InvalidChannelState(..)
            | K::InvalidConnectionState(..)
            | K::IOError(_)
            | K::MissingHeartbeatError => {
                self.shared.wake.notify_one();
                SinkError::NotConnected(format!(
                    "rabbitmq {} during {what}: {e}",
                    self.shared.endpoint
                ))
            }
            _ => SinkError::broker(format!("rabbitmq {what} failed"), e),
        }
    }
}

/// The content header frame (properties and headers) must fit in the negotiated `frame_max`.
fn fits_frame(
    connection: &lapin::Connection,
    properties: &lapin::BasicProperties,
) -> Result<(), SinkError> {
    let frame_max = connection.configuration().frame_max() as usize;
    let size = message::header_frame_size(properties);
    if frame_max > 0 && size > frame_max {
        return Err(SinkError::TooLarge(format!(
            "message properties and headers of {size} bytes exceed the connection's frame_max \
             of {frame_max} bytes"
        )));
    }
    Ok(())
}

#[async_trait]
impl Sink for RabbitmqSink {
    fn check_size(&self, event: &Outgoing) -> Result<(), SinkError> {
        match self.shared.current() {
            Some(link) => fits_frame(
                &link.connection,
                &message::build_message(self.format, event, 0).1,
            ),
            None => Ok(()),
        }
    }

    fn destination(&self, event: &crate::event::Event) -> String {
        format!(
            "{} {}",
            self.exchange,
            self.routing.render_escaped(event, &AMQP_ROUTING_KEY)
        )
    }

    #[tracing::instrument(skip_all, fields(sink = %self.shared.sink, event_id = %event.event.id))]
    async fn publish(&self, event: &Outgoing) -> Result<Receipt, SinkError> {
        // Each value is one word (`.`, `#`, `*` escaped) and the key at most 255 bytes.
        let routing_key = self.routing.render_escaped(&event.event, &AMQP_ROUTING_KEY);
        if routing_key.len() > SHORTSTR_MAX || event.event.id.len() > SHORTSTR_MAX {
            return Err(SinkError::Rejected(format!(
                "routing key or event id longer than {SHORTSTR_MAX} bytes (routing_key={routing_key:?})"
            )));
        }
        // The fan-out bounds this too; bounding it here keeps the sink safe on its own.
        match tokio::time::timeout(self.timeout, self.publish_inner(event, &routing_key)).await {
            Ok(Ok(())) => Ok(Receipt::Rabbitmq {
                exchange: self.exchange.to_string(),
                routing_key,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(SinkError::Timeout(self.timeout.as_millis() as u64)),
        }
    }

    fn is_ready(&self) -> bool {
        self.shared.current().is_some_and(|l| l.ready())
    }

    async fn close(&self) {
        self.shared.close().await;
    }
}

impl fmt::Debug for RabbitmqSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RabbitmqSink")
            .field("endpoint", &self.shared.endpoint)
            .field("exchange", &self.exchange)
            .field("routing_key", &self.routing.as_str())
            .finish()
    }
}
