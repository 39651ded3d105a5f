//! The connection's supervisor: connects (declaring the topology and filling the channel
//! pool), watches the connection, and on loss fails waiting publishers at once and reconnects
//! with capped exponential backoff, until shutdown.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::tcp::{AMQPUriTcpExt, OwnedTLSConfig};
use lapin::types::{FieldTable, LongString};
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties, ExchangeKind};
use tokio::sync::{watch, Notify};

use super::pool::{Link, PipeSettings};
use super::settings::{redacted, ExchangeDeclare, QueueBinding};
use super::socket::{ConnectError, SocketSlot};
use super::CONNECT_TIMEOUT;
use crate::sinks::SinkError;

/// Reconnect backoff: doubles from the first to the cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// How often the supervisor re-checks the connection status besides its events.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);

/// What the supervisor needs to (re)build a connection.
pub(super) struct Topology {
    pub(super) exchange: String,
    pub(super) declare: Option<ExchangeDeclare>,
    pub(super) queues: Vec<QueueBinding>,
    pub(super) pipes: PipeSettings,
}

/// State shared by the sink, its supervisor and in-flight publishes.
pub(super) struct Shared {
    /// The sink's name, for logs.
    pub(super) sink: String,
    /// The broker's URL without the password, for logs and errors.
    pub(super) endpoint: String,
    link: RwLock<Option<Arc<Link>>>,
    last_error: Mutex<String>,
    /// Publishers poke the supervisor when they see a dead channel or connection.
    pub(super) wake: Arc<Notify>,
    shutdown: AtomicBool,
    stop: Notify,
    /// Connection attempts so far (successful or not): `start` waits for the first.
    attempts: watch::Sender<u64>,
    /// The next publish's sequence number (`x-callbridge-seq`): unique for the sink's life,
    /// across channels and reconnects.
    seq: AtomicU64,
}

/// Starts the supervisor of a new connection to `uri` and waits for its first attempt only (at
/// most [`CONNECT_TIMEOUT`]), so a reachable broker is ready before the first webhook while a
/// broker that is down only leaves the sink not ready.
pub(super) async fn start(sink: &str, uri: AMQPUri, topology: Topology) -> Arc<Shared> {
    let shared = Arc::new(Shared {
        sink: sink.to_string(),
        endpoint: redacted(&uri),
        link: RwLock::new(None),
        last_error: Mutex::new(String::new()),
        wake: Arc::new(Notify::new()),
        shutdown: AtomicBool::new(false),
        stop: Notify::new(),
        attempts: watch::channel(0).0,
        seq: AtomicU64::new(1),
    });
    let mut attempts = shared.attempts.subscribe();
    tokio::spawn(supervise(shared.clone(), uri, topology));
    let _ = tokio::time::timeout(CONNECT_TIMEOUT, attempts.wait_for(|n| *n > 0)).await;
    shared
}

impl Shared {
    /// A sequence number no other publish of this sink has.
    pub(super) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// The live connection, if any.
    pub(super) fn current(&self) -> Option<Arc<Link>> {
        self.link.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn install(&self, link: Option<Arc<Link>>) {
        *self.link.write().unwrap_or_else(|e| e.into_inner()) = link;
    }

    fn set_error(&self, e: String) {
        *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) = e;
    }

    /// The answer while there is no usable connection, with the last reason known.
    pub(super) fn not_connected(&self) -> SinkError {
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

    /// Stops the supervisor and closes the connection (shutdown, after the last request).
    pub(super) async fn close(&self) {
        self.shutdown.store(true, Ordering::Release);
        self.stop.notify_one();
        if let Some(link) = self.current() {
            self.install(None);
            link.close("the sink is shutting down");
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                link.connection.close(200, "callbridge shutting down"),
            )
            .await;
            link.socket.kill();
        }
    }
}

/// Connects, watches, and reconnects with capped exponential backoff until shutdown.
async fn supervise(shared: Arc<Shared>, uri: AMQPUri, topology: Topology) {
    let mut backoff = BACKOFF_FIRST;
    // Failed attempts repeat for as long as the broker is down: summarised (the first of a run
    // of failures is logged at once, its repeats at most once per interval with their count).
    let throttle = crate::sinks::throttle::Throttle::default();
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
                // The next outage's first failure is news again.
                throttle.reset();
                shared.set_error(String::new());
                if shared.shutdown.load(Ordering::Acquire) {
                    link.close("the sink is shutting down");
                    link.socket.kill();
                    return;
                }
                shared.install(Some(link.clone()));
                shared.attempts.send_modify(|n| *n += 1);
                tracing::info!(sink = %shared.sink, endpoint = %shared.endpoint, channels = topology.pipes.channels, max_in_flight_per_channel = topology.pipes.max_in_flight, "rabbitmq connected");
                let reason = watch(&shared, &link).await;
                shared.install(None);
                link.close(&format!("rabbitmq {}: {reason}", shared.endpoint));
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
                if let Some(repeats) = throttle.admit("connect failed") {
                    tracing::warn!(sink = %shared.sink, endpoint = %shared.endpoint, error = %detail, retry_in_ms = backoff.as_millis() as u64, repeats, "rabbitmq connect failed");
                }
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
            return "connection stalled: a retired channel could not be replaced".into();
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
    shared: &Arc<Shared>,
    uri: &AMQPUri,
    t: &Topology,
    socket: SocketSlot,
) -> Result<Arc<Link>, ConnectError> {
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
        let name = q.declared_name();
        setup
            .queue_declare(
                &name,
                QueueDeclareOptions {
                    durable: q.durable,
                    ..Default::default()
                },
                q.arguments(),
            )
            .await
            .map_err(|e| ConnectError::new(format!("cannot declare queue {name:?}"), e))?;
        setup
            .queue_bind(
                &name,
                &t.exchange,
                &q.binding_key,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| {
                ConnectError::new(
                    format!("cannot bind queue {name:?} with {:?}", q.binding_key),
                    e,
                )
            })?;
    }
    let _ = setup.close(200, "topology declared").await;

    let link = Link::new(connection, socket, &shared.sink, &shared.wake, t.pipes);
    if let Err(e) = link.fill().await {
        link.close("connecting failed");
        return Err(e);
    }
    Ok(link)
}
