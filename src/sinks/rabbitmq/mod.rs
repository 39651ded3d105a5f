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

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::tcp::{AMQPUriTcpExt, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};

use super::{Outgoing, Receipt, Sink, SinkError};
use crate::config::{check_template, Issues};
use crate::template::Template;

/// CloudEvents attributes travel as AMQP headers with this prefix in binary mode: the prefix of
/// the official CloudEvents AMQP binding (application properties), so AMQP 1.0 consumers of the
/// same queues (RabbitMQ 4 maps 0-9-1 headers to application properties) read them natively.
pub const HEADER_PREFIX: &str = "cloudEvents_";
/// `content_type` of a structured-mode message.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
/// `app_id` of every message.
pub const APP_ID: &str = "callbridge";

/// How long one connection attempt (TCP, TLS, AMQP handshake, topology, channels) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Heartbeat asked for when the URL does not say: a silently dead peer (no RST) is noticed
/// within about two intervals instead of RabbitMQ's default 60 s.
const DEFAULT_HEARTBEAT_SECS: u16 = 10;
/// Reconnect backoff: doubles from the first to the cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// How often the supervisor re-checks the connection status besides its events.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// AMQP short strings (routing keys, message ids) hold at most 255 bytes.
const SHORTSTR_MAX: usize = 255;

fn default_channels() -> usize {
    32
}

/// Publishes each event to an exchange, with publisher confirms.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RabbitmqSinkSettings {
    pub name: String,
    #[serde(default = "crate::config::default_true")]
    pub required: bool,
    #[serde(default = "crate::config::default_sink_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// `amqp://user:password@host:5672/vhost` (or `amqps://`). A secret because it holds the
    /// password; put that in `${RABBITMQ_PASSWORD}`-style variables, never in the file.
    pub url: SecretString,
    /// The exchange every event is published to; `""` is the default exchange (the routing key
    /// is then a queue name).
    pub exchange: String,
    /// Routing key template, e.g. `calls.{kind}.{status}`, so consumers can bind to the subset
    /// they need (`calls.status.*`, `calls.analysis.#`).
    pub routing_key: String,
    #[serde(default)]
    pub format: RabbitmqFormat,
    /// Declare the exchange at every (re)connect. Without it the exchange must already exist
    /// (checked at connect; the sink stays not ready until it does).
    #[serde(default)]
    pub declare: Option<ExchangeDeclare>,
    /// Queues to declare and bind at every (re)connect, for simple setups where the bridge owns
    /// the topology. Consumers may equally declare their own.
    #[serde(default)]
    pub queues: Vec<QueueBinding>,
    /// Channels on the connection, i.e. publishes in flight at once (one per channel, see the
    /// module documentation). More requests wait for a free channel within their timeout.
    #[serde(default = "default_channels")]
    pub channels: usize,
}

/// How the event is laid out in the message (CloudEvents AMQP binding modes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RabbitmqFormat {
    /// Body = `data` (JSON); attributes as `cloudEvents_*` headers. Consumers that only want
    /// the call record read the body as is.
    #[default]
    Binary,
    /// Body = the whole event as JSON (`application/cloudevents+json`).
    Structured,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeDeclare {
    /// `topic` (default: routing keys are dotted and consumers bind with wildcards), `direct`,
    /// `fanout` or `headers`.
    #[serde(default)]
    pub exchange_type: ExchangeType,
    /// A durable exchange survives a broker restart; the default.
    #[serde(default = "crate::config::default_true")]
    pub durable: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeType {
    #[default]
    Topic,
    Direct,
    Fanout,
    Headers,
}

impl ExchangeType {
    fn kind(self) -> ExchangeKind {
        match self {
            ExchangeType::Topic => ExchangeKind::Topic,
            ExchangeType::Direct => ExchangeKind::Direct,
            ExchangeType::Fanout => ExchangeKind::Fanout,
            ExchangeType::Headers => ExchangeKind::Headers,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueBinding {
    pub name: String,
    /// Binding key on the exchange, e.g. `calls.#` (topic) or an exact routing key (direct).
    pub binding_key: String,
    /// A durable queue (with persistent messages, which the sink always sends) survives a
    /// broker restart; the default.
    #[serde(default = "crate::config::default_true")]
    pub durable: bool,
}

impl RabbitmqSinkSettings {
    /// Checks that types cannot express; every problem is named by its field path.
    pub fn validate(&self, path: &str, issues: &mut Issues) {
        if let Err(e) = parse_url(self.url.expose_secret()) {
            issues.error(format!("{path}.url"), e);
        }
        check_template(&self.routing_key, &format!("{path}.routing_key"), issues);
        if self.routing_key.len() > SHORTSTR_MAX {
            issues.error(
                format!("{path}.routing_key"),
                format!("longer than {SHORTSTR_MAX} bytes"),
            );
        }
        if let Err(e) = check_name(&self.exchange) {
            issues.error(format!("{path}.exchange"), e);
        }
        if self.declare.is_some() {
            if self.exchange.is_empty() {
                issues.error(
                    format!("{path}.declare"),
                    "the default exchange (\"\") cannot be declared; name an exchange",
                );
            } else if self.exchange.starts_with("amq.") {
                issues.error(
                    format!("{path}.declare"),
                    "exchange names starting with \"amq.\" are reserved by the broker",
                );
            }
        }
        if !self.queues.is_empty() && self.exchange.is_empty() {
            issues.error(
                format!("{path}.queues"),
                "queues cannot be bound to the default exchange (\"\"); name an exchange",
            );
        }
        let mut seen = HashSet::new();
        for (i, q) in self.queues.iter().enumerate() {
            let qpath = format!("{path}.queues[{i}]");
            if q.name.is_empty() {
                issues.error(format!("{qpath}.name"), "must not be empty");
            } else if let Err(e) = check_name(&q.name) {
                issues.error(format!("{qpath}.name"), e);
            } else if q.name.starts_with("amq.") {
                issues.error(
                    format!("{qpath}.name"),
                    "queue names starting with \"amq.\" are reserved by the broker",
                );
            } else if !seen.insert(q.name.as_str()) {
                issues.error(
                    format!("{qpath}.name"),
                    format!("duplicate queue {:?}", q.name),
                );
            }
            if q.binding_key.len() > SHORTSTR_MAX {
                issues.error(
                    format!("{qpath}.binding_key"),
                    format!("longer than {SHORTSTR_MAX} bytes"),
                );
            }
        }
        if self.channels == 0 || self.channels > 1024 {
            issues.error(
                format!("{path}.channels"),
                format!("must be between 1 and 1024, got {}", self.channels),
            );
        }
    }
}

/// Exchange and queue names: at most 255 bytes of letters, digits, `-`, `_`, `.` and `:`.
fn check_name(name: &str) -> Result<(), String> {
    if name.len() > SHORTSTR_MAX {
        return Err(format!("longer than {SHORTSTR_MAX} bytes"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        return Err(format!(
            "{name:?} contains {c:?}; use letters, digits, '-', '_', '.' or ':'"
        ));
    }
    Ok(())
}

/// Parses the AMQP URL. Errors never repeat the URL (it holds the password).
fn parse_url(raw: &str) -> Result<AMQPUri, String> {
    if !(raw.starts_with("amqp://") || raw.starts_with("amqps://")) {
        return Err("must start with amqp:// or amqps://".into());
    }
    let mut uri = AMQPUri::from_str(raw).map_err(|e| {
        if e.contains(raw) {
            "not a valid AMQP URL".to_string()
        } else {
            format!("not a valid AMQP URL: {e}")
        }
    })?;
    // amq-protocol-uri 8 reads the host with `Url::domain()`, which is None for an IP literal,
    // and then falls back to "localhost": amqp://10.0.0.5 would silently connect to localhost.
    if let Some(host) = ip_host(raw) {
        uri.authority.host = host;
    }
    if uri.authority.host.is_empty() {
        return Err("has no host".into());
    }
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(DEFAULT_HEARTBEAT_SECS);
    }
    if uri.query.connection_timeout.is_none() {
        uri.query.connection_timeout = Some(CONNECT_TIMEOUT.as_millis() as u64);
    }
    Ok(uri)
}

/// The host of `scheme://[userinfo@]host[:port][/...]` when it is an IP literal.
fn ip_host(raw: &str) -> Option<String> {
    let rest = raw.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = hostport.strip_prefix('[') {
        let addr = v6.split(']').next()?;
        return addr
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|a| a.to_string());
    }
    let host = hostport.split(':').next()?;
    host.parse::<std::net::Ipv4Addr>()
        .ok()
        .map(|a| a.to_string())
}

/// `amqp://user@host:port/vhost`: for logs and errors, without the password.
fn redacted(uri: &AMQPUri) -> String {
    let scheme = match uri.scheme {
        AMQPScheme::AMQP => "amqp",
        AMQPScheme::AMQPS => "amqps",
    };
    format!(
        "{scheme}://{}@{}:{}/{}",
        uri.authority.userinfo.username,
        uri.authority.host,
        uri.authority.port,
        uri.vhost.replace('/', "%2f")
    )
}

#[derive(Debug, thiserror::Error)]
#[error("{context}")]
struct ConnectError {
    context: String,
    #[source]
    source: Option<lapin::Error>,
}

impl ConnectError {
    fn new(context: impl Into<String>, source: lapin::Error) -> Self {
        ConnectError {
            context: context.into(),
            source: Some(source),
        }
    }
    fn plain(context: impl Into<String>) -> Self {
        ConnectError {
            context: context.into(),
            source: None,
        }
    }
    fn detail(&self) -> String {
        match &self.source {
            Some(s) => format!("{}: {s}", self.context),
            None => self.context.clone(),
        }
    }
}

/// What the supervisor needs to (re)build a connection.
struct Topology {
    exchange: String,
    declare: Option<ExchangeDeclare>,
    queues: Vec<QueueBinding>,
    channels: usize,
}

/// One live connection and its channel pool.
struct Link {
    connection: Connection,
    socket: SocketSlot,
    /// Idle channels, each in confirm mode with nothing in flight.
    idle: Mutex<Vec<Channel>>,
    /// One permit per idle channel; closed when the link dies so waiters fail at once.
    permits: Arc<Semaphore>,
    /// Set when the pool cannot be refilled: the supervisor replaces the connection.
    broken: AtomicBool,
}

impl Link {
    fn healthy(&self) -> bool {
        self.connection.status().connected() && !self.broken.load(Ordering::Acquire)
    }
}

/// A duplicate of a connection's socket, so the supervisor can shut it down. lapin runs one I/O
/// thread per connection and has no handshake timeout: an attempt abandoned on a black-holed
/// path (or a stalled connection) would keep its thread until the peer closed the socket — one
/// more thread per retry. `shutdown` acts on the socket itself, so lapin's copy fails at once.
#[derive(Clone, Default)]
struct SocketSlot(Arc<Mutex<Option<std::net::TcpStream>>>);

impl SocketSlot {
    /// Called by lapin's connector with the fresh stream (plain, or TLS mid-handshake).
    fn keep(&self, stream: &lapin::tcp::HandshakeResult) {
        let tcp = match stream {
            Ok(s) => s,
            Err(lapin::tcp::HandshakeError::WouldBlock(mid)) => mid.get_ref(),
            Err(_) => return,
        };
        #[cfg(unix)]
        {
            use std::os::fd::AsFd;
            if let Ok(fd) = tcp.as_fd().try_clone_to_owned() {
                *self.0.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(std::net::TcpStream::from(fd));
            }
        }
        #[cfg(not(unix))]
        let _ = tcp;
    }

    fn kill(&self) {
        if let Some(s) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// State shared by the sink, its supervisor and in-flight publishes.
struct Shared {
    sink: String,
    endpoint: String,
    link: RwLock<Option<Arc<Link>>>,
    last_error: Mutex<String>,
    /// Publishers poke the supervisor when they see a dead channel or connection.
    wake: Notify,
    shutdown: AtomicBool,
    stop: Notify,
    /// Connection attempts so far (successful or not): `start` waits for the first.
    attempts: watch::Sender<u64>,
}

impl Shared {
    fn current(&self) -> Option<Arc<Link>> {
        self.link.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn install(&self, link: Option<Arc<Link>>) {
        *self.link.write().unwrap_or_else(|e| e.into_inner()) = link;
    }

    fn set_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = e;
    }

    fn not_connected(&self) -> SinkError {
        let last = self
            .last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let why = if last.is_empty() {
            "connecting".to_string()
        } else {
            last
        };
        SinkError::NotConnected(format!("rabbitmq {}: {why}", self.endpoint))
    }
}

pub struct RabbitmqSink {
    exchange: String,
    routing: Template,
    format: RabbitmqFormat,
    timeout: Duration,
    shared: Arc<Shared>,
}

impl RabbitmqSink {
    /// Starts the sink. The connection is made (and remade) in the background; this waits for
    /// the first attempt only (at most [`CONNECT_TIMEOUT`]) so that a reachable broker is ready
    /// before the first webhook, while a broker that is down only makes the sink not ready.
    pub async fn start(settings: &RabbitmqSinkSettings) -> Result<RabbitmqSink, SinkError> {
        let uri = parse_url(settings.url.expose_secret()).map_err(|e| SinkError::Broker {
            message: format!("url: {e}"),
            source: None,
        })?;
        let routing = Template::parse(&settings.routing_key).map_err(|e| SinkError::Broker {
            message: format!("routing_key: {e}"),
            source: Some(Box::new(e)),
        })?;
        let shared = Arc::new(Shared {
            sink: settings.name.clone(),
            endpoint: redacted(&uri),
            link: RwLock::new(None),
            last_error: Mutex::new(String::new()),
            wake: Notify::new(),
            shutdown: AtomicBool::new(false),
            stop: Notify::new(),
            attempts: watch::channel(0).0,
        });
        let topology = Topology {
            exchange: settings.exchange.clone(),
            declare: settings.declare.clone(),
            queues: settings.queues.clone(),
            channels: settings.channels.max(1),
        };
        let mut attempts = shared.attempts.subscribe();
        tokio::spawn(supervise(shared.clone(), uri, topology));
        let _ = tokio::time::timeout(CONNECT_TIMEOUT, attempts.wait_for(|n| *n > 0)).await;
        Ok(RabbitmqSink {
            exchange: settings.exchange.clone(),
            routing,
            format: settings.format,
            timeout: Duration::from_millis(settings.timeout_ms),
            shared,
        })
    }

    /// Body and properties of the message for `event`.
    fn message(&self, out: &Outgoing) -> (bytes::Bytes, BasicProperties) {
        build_message(self.format, out)
    }

    async fn publish_inner(&self, out: &Outgoing, routing_key: &str) -> Result<(), SinkError> {
        let link = self
            .shared
            .current()
            .ok_or_else(|| self.shared.not_connected())?;
        let permit = link
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| self.shared.not_connected())?;
        let channel = link.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let Some(channel) = channel else {
            // Cannot happen (a permit per idle channel); never publish without a channel.
            permit.forget();
            link.broken.store(true, Ordering::Release);
            self.shared.wake.notify_one();
            return Err(self.shared.not_connected());
        };
        let mut lease = Lease {
            link: link.clone(),
            shared: self.shared.clone(),
            channel: Some(channel.clone()),
            permit: Some(permit),
            reusable: false,
        };
        if !channel.status().connected() {
            self.shared.wake.notify_one();
            return Err(self.shared.not_connected());
        }

        let (body, properties) = self.message(out);
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

/// A channel borrowed from the pool for one publish. Dropped on every path, including when the
/// fan-out's timeout cancels the publish: only a channel whose publish finished cleanly goes back
/// to the pool; any other is dropped (lapin closes it) and replaced in the background.
struct Lease {
    link: Arc<Link>,
    shared: Arc<Shared>,
    channel: Option<Channel>,
    permit: Option<OwnedSemaphorePermit>,
    reusable: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let (Some(channel), Some(permit)) = (self.channel.take(), self.permit.take()) else {
            return;
        };
        if self.reusable && channel.status().connected() {
            self.link
                .idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(channel);
            drop(permit);
            return;
        }
        permit.forget();
        drop(channel);
        if !self.link.healthy() {
            self.shared.wake.notify_one();
            return;
        }
        let link = self.link.clone();
        let shared = self.shared.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(async move {
                    match tokio::time::timeout(CONNECT_TIMEOUT, open_confirm_channel(&link)).await
                    {
                        Ok(Ok(ch)) => {
                            link.idle
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(ch);
                            link.permits.add_permits(1);
                        }
                        Ok(Err(e)) => {
                            tracing::warn!(sink = %shared.sink, error = %e.detail(), "cannot replace a rabbitmq channel; reconnecting");
                            link.broken.store(true, Ordering::Release);
                            shared.wake.notify_one();
                        }
                        Err(_) => {
                            tracing::warn!(sink = %shared.sink, "replacing a rabbitmq channel timed out; reconnecting");
                            link.broken.store(true, Ordering::Release);
                            shared.wake.notify_one();
                        }
                    }
                });
            }
            Err(_) => {
                self.link.broken.store(true, Ordering::Release);
                self.shared.wake.notify_one();
            }
        }
    }
}

async fn open_confirm_channel(link: &Link) -> Result<Channel, ConnectError> {
    let ch = link
        .connection
        .create_channel()
        .await
        .map_err(|e| ConnectError::new("cannot open a channel", e))?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| ConnectError::new("cannot enable publisher confirms", e))?;
    Ok(ch)
}

/// Builds the message: properties shared by both formats, body and headers by format.
fn build_message(format: RabbitmqFormat, out: &Outgoing) -> (bytes::Bytes, BasicProperties) {
    let ev = &out.event;
    let timestamp =
        time::OffsetDateTime::parse(&ev.time, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
            .unix_timestamp()
            .max(0) as u64;
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(ShortString::from(ev.id.as_str()))
        .with_type(ShortString::from(ev.ty.as_str()))
        .with_timestamp(timestamp)
        .with_app_id(ShortString::from(APP_ID));
    // W3C trace context for consumers' tracing libraries, in both modes.
    let mut headers = FieldTable::default();
    if let Some(t) = &ev.traceparent {
        headers.insert(
            ShortString::from("traceparent"),
            AMQPValue::LongString(LongString::from(t.as_str())),
        );
    }
    match format {
        RabbitmqFormat::Structured => {
            let props = props.with_content_type(ShortString::from(STRUCTURED_CONTENT_TYPE));
            let props = if ev.traceparent.is_some() {
                props.with_headers(headers)
            } else {
                props
            };
            (out.structured.clone(), props)
        }
        RabbitmqFormat::Binary => {
            let mut put = |name: &str, value: &str| {
                headers.insert(
                    ShortString::from(format!("{HEADER_PREFIX}{name}")),
                    AMQPValue::LongString(LongString::from(value)),
                );
            };
            put("specversion", &ev.specversion);
            put("id", &ev.id);
            put("source", &ev.source);
            put("type", &ev.ty);
            put("subject", &ev.subject);
            put("time", &ev.time);
            put("partitionkey", &ev.partitionkey);
            if let Some(s) = &ev.callstatus {
                put("callstatus", s);
            }
            if let Some(t) = &ev.traceparent {
                put("traceparent", t);
            }
            (
                out.data.clone(),
                props
                    .with_content_type(ShortString::from(ev.datacontenttype.as_str()))
                    .with_headers(headers),
            )
        }
    }
}

#[async_trait]
impl Sink for RabbitmqSink {
    fn destination(&self, event: &crate::event::Event) -> String {
        format!("{} {}", self.exchange, self.routing.render(event))
    }

    #[tracing::instrument(skip_all, fields(sink = %self.shared.sink, event_id = %event.event.id))]
    async fn publish(&self, event: &Outgoing) -> Result<Receipt, SinkError> {
        let routing_key = self.routing.render(&event.event);
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
        self.shared.current().is_some_and(|l| {
            l.healthy() && !l.connection.status().blocked() && !l.permits.is_closed()
        })
    }

    async fn close(&self) {
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.stop.notify_one();
        if let Some(link) = self.shared.current() {
            self.shared.install(None);
            link.permits.close();
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                link.connection.close(200, "callbridge shutting down"),
            )
            .await;
            link.socket.kill();
        }
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

/// Connects, watches, and reconnects with capped exponential backoff until shutdown.
async fn supervise(shared: Arc<Shared>, uri: AMQPUri, topology: Topology) {
    let mut backoff = BACKOFF_FIRST;
    loop {
        if shared.shutdown.load(Ordering::Acquire) {
            return;
        }
        let socket = SocketSlot::default();
        let attempt = connect(&shared, &uri, &topology, socket.clone());
        let result = match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
            Ok(r) => r,
            Err(_) => Err(ConnectError::plain(format!(
                "connecting timed out after {} ms",
                CONNECT_TIMEOUT.as_millis()
            ))),
        };
        if result.is_err() {
            // Ends lapin's I/O thread of the abandoned attempt (it has no handshake timeout).
            socket.kill();
        }
        match result {
            Ok(link) => {
                backoff = BACKOFF_FIRST;
                let link = Arc::new(link);
                shared.set_error(String::new());
                if shared.shutdown.load(Ordering::Acquire) {
                    link.socket.kill();
                    return;
                }
                shared.install(Some(link.clone()));
                shared.attempts.send_modify(|n| *n += 1);
                tracing::info!(sink = %shared.sink, endpoint = %shared.endpoint, channels = topology.channels, "rabbitmq connected");
                let reason = watch(&shared, &link).await;
                shared.install(None);
                link.permits.close();
                shared.set_error(reason.clone());
                if shared.shutdown.load(Ordering::Acquire) {
                    return;
                }
                tracing::warn!(sink = %shared.sink, endpoint = %shared.endpoint, reason = %reason, "rabbitmq connection dropped; reconnecting");
                if link.connection.status().connected() {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        link.connection.close(320, "callbridge reconnecting"),
                    )
                    .await;
                }
                // A stalled connection would keep its I/O thread until the heartbeat gives up.
                link.socket.kill();
                drop(link);
            }
            Err(e) => {
                let detail = e.detail();
                tracing::warn!(sink = %shared.sink, endpoint = %shared.endpoint, error = %detail, retry_in_ms = backoff.as_millis() as u64, "rabbitmq connect failed");
                shared.set_error(detail);
                shared.attempts.send_modify(|n| *n += 1);
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shared.stop.notified() => return,
        }
        backoff = (backoff * 2).min(BACKOFF_CAP);
    }
}

/// Returns (with the reason) once the link is unusable.
async fn watch(shared: &Shared, link: &Link) -> String {
    let mut events = link.connection.events_listener();
    let mut tick = tokio::time::interval(WATCH_INTERVAL);
    loop {
        tokio::select! {
            ev = events.next() => match ev {
                // lapin reports channel errors here too. The broker closes a channel only when
                // something unexpected happened (an exchange deleted under us, ...): reconnect,
                // which re-declares the topology or, without `declare`, checks it again.
                Some(lapin::Event::Error(e)) if link.connection.status().connected() => {
                    return format!("channel error ({e}); reconnecting to check the topology")
                }
                Some(lapin::Event::Error(e)) => return format!("connection lost: {e}"),
                Some(_) => {}
                None => return "connection lost: event stream ended".into(),
            },
            _ = shared.wake.notified() => {}
            _ = shared.stop.notified() => return "shutting down".into(),
            _ = tick.tick() => {}
        }
        if link.broken.load(Ordering::Acquire) {
            return "connection stalled: the channel pool could not be refilled".into();
        }
        if !link.connection.status().connected() {
            return format!(
                "connection lost (state {:?})",
                link.connection.status().state()
            );
        }
    }
}

// The connector's signature (and its large `HandshakeError`) is lapin's.
#[allow(clippy::result_large_err)]
async fn connect(
    shared: &Shared,
    uri: &AMQPUri,
    t: &Topology,
    socket: SocketSlot,
) -> Result<Link, ConnectError> {
    let props = ConnectionProperties::default()
        .with_connection_name(LongString::from(format!("callbridge {}", shared.sink)));
    let slot = socket.clone();
    let tls = OwnedTLSConfig::default();
    let connection = Connection::connector(
        uri.clone(),
        Box::new(move |uri| {
            let stream = AMQPUriTcpExt::connect_with_config(uri, tls.as_ref());
            slot.keep(&stream);
            stream
        }),
        props,
    )
    .await
    .map_err(|e| ConnectError::new("cannot connect", e))?;

    let setup = connection
        .create_channel()
        .await
        .map_err(|e| ConnectError::new("cannot open a channel", e))?;
    match &t.declare {
        Some(d) => setup
            .exchange_declare(
                &t.exchange,
                d.exchange_type.kind(),
                ExchangeDeclareOptions {
                    durable: d.durable,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                ConnectError::new(format!("cannot declare exchange {:?}", t.exchange), e)
            })?,
        None if !t.exchange.is_empty() => setup
            .exchange_declare(
                &t.exchange,
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                ConnectError::new(
                    format!(
                        "exchange {:?} does not exist (declare it, or set declare:)",
                        t.exchange
                    ),
                    e,
                )
            })?,
        None => {}
    }
    for q in &t.queues {
        setup
            .queue_declare(
                &q.name,
                QueueDeclareOptions {
                    durable: q.durable,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(|e| ConnectError::new(format!("cannot declare queue {:?}", q.name), e))?;
        setup
            .queue_bind(
                &q.name,
                &t.exchange,
                &q.binding_key,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                ConnectError::new(
                    format!("cannot bind queue {:?} with {:?}", q.name, q.binding_key),
                    e,
                )
            })?;
    }
    let _ = setup.close(200, "topology declared").await;

    let link = Link {
        connection,
        socket,
        idle: Mutex::new(Vec::with_capacity(t.channels)),
        permits: Arc::new(Semaphore::new(0)),
        broken: AtomicBool::new(false),
    };
    for _ in 0..t.channels {
        let ch = open_confirm_channel(&link).await?;
        link.idle.lock().unwrap_or_else(|e| e.into_inner()).push(ch);
    }
    link.permits.add_permits(t.channels);
    Ok(link)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn load(sink_yaml: &str) -> Result<Settings, Vec<String>> {
        let yaml = format!("auth: {{mode: none}}\nsinks:\n  - {sink_yaml}\n");
        Settings::from_yaml_with_env(&yaml, "test", false)
            .map(|(s, _)| s)
            .map_err(|e| match e {
                crate::config::ConfigError::Invalid(v) => v.iter().map(|i| i.to_string()).collect(),
                other => vec![other.to_string()],
            })
    }

    #[test]
    fn minimal_config_takes_defaults() {
        let s = load("{name: mq, type: rabbitmq, url: \"amqp://u:p@127.0.0.1:5672/%2f\", exchange: calls, routing_key: \"calls.{kind}.{status}\"}").unwrap();
        let crate::config::SinkSettings::Rabbitmq(r) = &s.sinks[0] else {
            panic!("not a rabbitmq sink")
        };
        assert_eq!(r.format, RabbitmqFormat::Binary);
        assert!(r.required);
        assert_eq!(r.timeout_ms, 5000);
        assert_eq!(r.channels, 32);
        assert!(r.declare.is_none() && r.queues.is_empty());
    }

    #[test]
    fn every_problem_is_named_by_path_and_the_password_never_shows() {
        let errs = load(
            "{name: mq, type: rabbitmq, url: \"http://u:hunter2@h\", exchange: \"bad name\", \
             routing_key: \"calls.{nope}\", declare: {exchange_type: topic}, channels: 0, \
             queues: [{name: q, binding_key: \"#\"}, {name: q, binding_key: \"#\"}]}",
        )
        .unwrap_err();
        for p in [
            "sinks[0].url",
            "sinks[0].exchange",
            "sinks[0].routing_key",
            "sinks[0].channels",
            "sinks[0].queues[1].name",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(&format!("{p}:"))),
                "{p} missing in {errs:?}"
            );
        }
        assert!(errs.iter().all(|e| !e.contains("hunter2")), "{errs:?}");

        let errs = load("{name: mq, type: rabbitmq, url: \"amqp://h\", exchange: \"\", routing_key: q, declare: {}, queues: [{name: q, binding_key: q}]}").unwrap_err();
        assert!(
            errs.iter().any(|e| e.starts_with("sinks[0].declare:")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.starts_with("sinks[0].queues:")),
            "{errs:?}"
        );

        let errs = load("{name: mq, type: rabbitmq, url: \"amqp://h\", exchange: x, routing_key: q, formt: binary}").unwrap_err();
        assert!(errs[0].contains("formt"), "{errs:?}");
    }

    #[test]
    fn the_documented_example_is_valid() {
        let doc = include_str!("../../../docs/rabbitmq.md");
        let yaml = doc
            .split("```yaml\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("docs/rabbitmq.md has a yaml example");
        std::env::set_var("RABBITMQ_PASSWORD", "from-env");
        let (s, _) =
            Settings::from_yaml_with_env(&format!("auth: {{mode: none}}\n{yaml}"), "docs", false)
                .unwrap_or_else(|e| panic!("{e}"));
        let crate::config::SinkSettings::Rabbitmq(r) = &s.sinks[0] else {
            panic!("not a rabbitmq sink")
        };
        assert_eq!(r.queues.len(), 2);
        assert!(r.queues[1].durable, "durable by default");
        assert_eq!(
            r.declare.as_ref().map(|d| d.exchange_type),
            Some(ExchangeType::Topic)
        );
        let uri = parse_url(r.url.expose_secret()).unwrap();
        assert_eq!(uri.authority.userinfo.password, "from-env");
    }

    #[test]
    fn url_keeps_ip_hosts_and_redacts_the_password() {
        let uri = parse_url("amqp://guest:s3cret@127.0.0.1:5673/%2f").unwrap();
        assert_eq!(uri.authority.host, "127.0.0.1");
        assert_eq!(uri.authority.port, 5673);
        assert_eq!(uri.query.heartbeat, Some(DEFAULT_HEARTBEAT_SECS));
        let shown = redacted(&uri);
        assert_eq!(shown, "amqp://guest@127.0.0.1:5673/%2f");
        assert!(!shown.contains("s3cret"));
        assert_eq!(
            parse_url("amqps://u:p@[::1]/v").unwrap().authority.host,
            "::1"
        );
        assert_eq!(
            parse_url("amqp://u:p@rabbit.internal?heartbeat=30")
                .unwrap()
                .authority
                .host,
            "rabbit.internal"
        );
        assert_eq!(
            parse_url("amqp://rabbit?heartbeat=30")
                .unwrap()
                .query
                .heartbeat,
            Some(30)
        );
    }

    #[test]
    fn binary_and_structured_messages() {
        let ev = crate::event::test_support::sample_event();
        let out = Outgoing::new(ev.clone());

        let (body, p) = build_message(RabbitmqFormat::Binary, &out);
        assert_eq!(body, out.data);
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(
            p.message_id().as_ref().map(|s| s.as_str()),
            Some(ev.id.as_str())
        );
        assert_eq!(p.kind().as_ref().map(|s| s.as_str()), Some(ev.ty.as_str()));
        assert_eq!(p.app_id().as_ref().map(|s| s.as_str()), Some(APP_ID));
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert!(p.timestamp().unwrap_or(0) > 1_600_000_000);
        let headers = p.headers().clone().unwrap_or_default();
        let h = |k: &str| match headers.inner().get(format!("{HEADER_PREFIX}{k}").as_str()) {
            Some(AMQPValue::LongString(s)) => Some(s.to_string()),
            _ => None,
        };
        assert_eq!(h("id").as_deref(), Some(ev.id.as_str()));
        assert_eq!(h("specversion").as_deref(), Some("1.0"));
        assert_eq!(h("subject").as_deref(), Some(ev.subject.as_str()));
        assert_eq!(h("type").as_deref(), Some(ev.ty.as_str()));
        assert!(h("datacontenttype").is_none(), "travels as content_type");

        let (body, p) = build_message(RabbitmqFormat::Structured, &out);
        assert_eq!(body, out.structured);
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some(STRUCTURED_CONTENT_TYPE)
        );
        assert!(p.headers().is_none());
        assert_eq!(
            p.message_id().as_ref().map(|s| s.as_str()),
            Some(ev.id.as_str())
        );
    }
}
