//! The channels of one connection: a fixed number of confirm-mode channels, each with many
//! publishes in flight (see `channel.rs`); a publish goes to the channel with the most room,
//! and a retired channel is replaced in the background.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection};
use tokio::sync::Notify;

use super::channel::{End, Message, NotTaken, Pipe, Reply};
use super::socket::{ConnectError, SocketSlot};
use super::CONNECT_TIMEOUT;

/// How each channel is run.
#[derive(Clone, Copy)]
pub(super) struct PipeSettings {
    pub(super) channels: usize,
    pub(super) max_in_flight: usize,
    /// A confirm outstanding longer than this retires its channel (the sink's timeout).
    pub(super) overdue: Duration,
}

/// One live connection and its channels.
pub(super) struct Link {
    pub(super) connection: Connection,
    pub(super) socket: SocketSlot,
    /// The supervisor's wake-up: a broken channel asks it to replace the connection.
    wake: Weak<Notify>,
    sink: Arc<str>,
    settings: PipeSettings,
    pipes: RwLock<Vec<Arc<Pipe>>>,
    /// A channel was added or replaced, or the link closed: waiting publishers look again.
    changed: Notify,
    /// The link takes no more publishes (connection lost, shutdown).
    closed: AtomicBool,
    /// Set when a channel cannot be replaced: the supervisor replaces the connection.
    pub(super) broken: AtomicBool,
}

impl Link {
    /// A connection without channels yet; [`Link::fill`] opens them.
    pub(super) fn new(
        connection: Connection,
        socket: SocketSlot,
        sink: &str,
        wake: &Arc<Notify>,
        settings: PipeSettings,
    ) -> Arc<Link> {
        Arc::new(Link {
            connection,
            socket,
            wake: Arc::downgrade(wake),
            sink: Arc::from(sink),
            settings,
            pipes: RwLock::new(Vec::with_capacity(settings.channels)),
            changed: Notify::new(),
            closed: AtomicBool::new(false),
            broken: AtomicBool::new(false),
        })
    }

    /// Opens the link's confirm-mode channels and starts their tasks.
    pub(super) async fn fill(self: &Arc<Self>) -> Result<(), ConnectError> {
        for slot in 0..self.settings.channels {
            let ch = open_confirm_channel(&self.connection).await?;
            self.start(slot, ch);
        }
        Ok(())
    }

    /// Puts a channel in `slot` (appending the first time) and runs its task; a channel that
    /// retires itself is replaced in the same slot.
    fn start(self: &Arc<Self>, slot: usize, channel: Channel) {
        let s = self.settings;
        let pipe = Arc::new(Pipe::new(
            channel,
            self.sink.clone(),
            s.max_in_flight,
            s.overdue,
        ));
        {
            let mut pipes = self.pipes.write().unwrap_or_else(|e| e.into_inner());
            if slot < pipes.len() {
                pipes[slot] = pipe.clone();
            } else {
                pipes.push(pipe.clone());
            }
        }
        if self.closed.load(Ordering::Acquire) {
            // Closed while the channel was being opened: nothing may publish on it.
            pipe.stop("connection closed");
        }
        self.changed.notify_waiters();
        // The task holds the link weakly: a dropped connection must not be kept alive by it.
        let link = Arc::downgrade(self);
        tokio::spawn(async move {
            if let End::Retired = pipe.run().await {
                if let Some(link) = link.upgrade() {
                    link.replace(slot);
                }
            }
        });
    }

    /// Opens a replacement for the retired channel of `slot`, in the background.
    fn replace(self: &Arc<Self>, slot: usize) {
        if !self.healthy() || self.closed.load(Ordering::Acquire) {
            self.wake_supervisor();
            return;
        }
        let link = self.clone();
        tokio::spawn(async move {
            let opened =
                tokio::time::timeout(CONNECT_TIMEOUT, open_confirm_channel(&link.connection)).await;
            match opened {
                Ok(Ok(ch)) => link.start(slot, ch),
                Ok(Err(e)) => {
                    tracing::warn!(sink = %link.sink, error = %e.detail(), "cannot replace a rabbitmq channel; reconnecting");
                    link.set_broken();
                }
                Err(_) => {
                    tracing::warn!(sink = %link.sink, "replacing a rabbitmq channel timed out; reconnecting");
                    link.set_broken();
                }
            }
        });
    }

    fn set_broken(&self) {
        self.broken.store(true, Ordering::Release);
        self.wake_supervisor();
    }

    fn wake_supervisor(&self) {
        if let Some(wake) = self.wake.upgrade() {
            wake.notify_one();
        }
    }

    pub(super) fn healthy(&self) -> bool {
        self.connection.status().connected() && !self.broken.load(Ordering::Acquire)
    }

    /// Healthy, not blocked by the broker (a resource alarm), and taking publishes.
    pub(super) fn ready(&self) -> bool {
        self.healthy()
            && !self.connection.status().blocked()
            && !self.closed.load(Ordering::Acquire)
    }

    /// Takes no more publishes and fails every one in flight at once (connection lost,
    /// shutdown).
    pub(super) fn close(&self, reason: &str) {
        self.closed.store(true, Ordering::Release);
        for pipe in self.pipes.read().unwrap_or_else(|e| e.into_inner()).iter() {
            pipe.stop(reason);
        }
        self.changed.notify_waiters();
    }

    /// The open channel with the most room, if any.
    fn pick(&self) -> Option<Arc<Pipe>> {
        let pipes = self.pipes.read().unwrap_or_else(|e| e.into_inner());
        pipes
            .iter()
            .filter(|p| p.is_open())
            .max_by_key(|p| p.room())
            .cloned()
    }

    /// Publishes on the channel with the most room, waiting for one to have room (or to be
    /// replaced) within the caller's timeout. `None` once the link is closed.
    pub(super) async fn publish(&self, mut m: Message) -> Option<Reply> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.closed.load(Ordering::Acquire) {
                return None;
            }
            match self.pick() {
                Some(pipe) => match pipe.publish(m).await {
                    Ok(reply) => return Some(reply),
                    // Retired or stopped before taking it: try another channel.
                    Err(NotTaken(back)) => m = back,
                },
                None => {
                    if !self.healthy() {
                        self.wake_supervisor();
                    }
                    changed.await;
                }
            }
        }
    }
}

async fn open_confirm_channel(connection: &Connection) -> Result<Channel, ConnectError> {
    let ch = connection
        .create_channel()
        .await
        .map_err(|e| ConnectError::new("cannot open a channel", e))?;
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| ConnectError::new("cannot enable publisher confirms", e))?;
    Ok(ch)
}
