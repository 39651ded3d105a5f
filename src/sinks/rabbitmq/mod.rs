//! The `rabbitmq` sink: AMQP 0-9-1 with publisher confirms, mandatory routing and reconnects.
//!
//! **What "acknowledged" means.** Every channel is in confirm mode and every message is published
//! `mandatory` and persistent. `publish` returns a receipt only for a confirm `Ack` that carries no
//! returned message: the broker then has the message in every queue it routes to (on disk for a
//! durable queue). A `Nack` (e.g. a full queue with `x-overflow: reject-publish`) or a
//! `basic.return` (no queue bound for the routing key; RabbitMQ still *acks* those) is a
//! [`SinkError::Rejected`] naming the reason.
//!
//! **Why a pool of channels, one publish in flight on each.** AMQP 0-9-1 gives a `basic.return`
//! no delivery tag: a client can only attribute it to a publish because it arrives just before
//! that publish's ack. lapin keeps returns in one FIFO per channel and hands the oldest to
//! *whichever* confirm resolves next (for a multiple-ack, in hash-set order), so with several
//! publishes in flight on one channel a return can be attached to another message: the unroutable
//! one would then be answered 200 — data loss. lapin also assigns the delivery tag and queues the
//! frames in two steps, so concurrent publishers on one channel can be numbered out of order.
//! One in-flight publish per channel removes both problems; many channels (`channels`, default 32)
//! on one connection keep many publishes in flight at once, each awaiting its own confirm without
//! any lock.
//!
//! **Connection loss.** lapin does not reconnect, and a confirm may stay pending forever on a dead
//! connection (lapin #246, #409). A supervisor task owns the connection: it watches the
//! connection's events and status, marks the sink not ready as soon as it is lost, fails every
//! waiting publisher at once, and reconnects with capped exponential backoff, re-declaring the
//! topology. Every publish is bounded by the sink's timeout (and the fan-out's deadline); a
//! channel whose publish did not finish cleanly is never reused (dropping it closes it), so no
//! pending confirm or returned message can leak into a later publish.

mod message;
mod pool;
mod settings;
mod settle;
mod supervisor;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::BasicPublishOptions;
use lapin::publisher_confirm::Confirmation;
use secrecy::ExposeSecret;

pub use message::APP_ID;
pub use settings::{ExchangeDeclare, ExchangeType, QueueBinding, RabbitmqSinkSettings};

use super::{BuildError, Outgoing, Receipt, Sink, SinkError};
use crate::event::binding::Format;
use crate::template::{Template, AMQP_ROUTING_KEY};
use settings::SHORTSTR_MAX;
use supervisor::{Shared, Topology};

/// How long one connection attempt (TCP, TLS, AMQP handshake, topology, channels) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct RabbitmqSink {
    exchange: String,
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
            channels: settings.channels.max(1),
        };
        let shared = supervisor::start(&settings.name, uri, topology).await;
        Ok(RabbitmqSink {
            exchange: settings.exchange.clone(),
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
        let (mut lease, channel) = link
            .lease(&self.shared)
            .await
            .ok_or_else(|| self.shared.not_connected())?;

        let (body, properties) = message::build_message(self.format, out);
        fits_frame(&link.connection, &properties)?;
        let confirm = channel
            .basic_publish(
                &self.exchange,
                routing_key,
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                &body,
                properties,
            )
            .await
            .map_err(|e| self.lapin_error("publish", e))?;
        let confirmation = confirm
            .await
            .map_err(|e| self.lapin_error("publisher confirm", e))?;
        let ours = |m: &lapin::message::BasicReturnMessage| {
            m.delivery
                .properties
                .message_id()
                .as_ref()
                .map(|s| s.as_str())
                == Some(out.event.id.as_str())
        };
        match confirmation {
            Confirmation::Ack(None) => {
                lease.reusable = true;
                Ok(())
            }
            Confirmation::Ack(Some(returned)) => {
                // One publish in flight per channel: the return is ours. Should it not be, the
                // channel's bookkeeping is off; retire it and fail this publish (never a 200).
                lease.reusable = ours(&returned);
                if !lease.reusable {
                    tracing::error!(sink = %self.shared.sink, "returned message belongs to another publish; retiring the channel");
                }
                Err(SinkError::Rejected(format!(
                    "unroutable: {} {} exchange={:?} routing_key={:?}",
                    returned.reply_text, returned.reply_code, self.exchange, routing_key
                )))
            }
            Confirmation::Nack(returned) => {
                lease.reusable = returned.as_deref().is_none_or(ours);
                Err(SinkError::Rejected(format!(
                    "nacked by the broker (e.g. a full queue with x-overflow: reject-publish) \
                     exchange={:?} routing_key={routing_key:?}",
                    self.exchange
                )))
            }
            Confirmation::NotRequested => Err(SinkError::Broker {
                message: "channel is not in confirm mode".into(),
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
                &message::build_message(self.format, event).1,
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
                exchange: self.exchange.clone(),
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
