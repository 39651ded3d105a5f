//! The channel pool of one connection: idle confirm-mode channels, one permit per idle
//! channel, and the lease that holds a channel for exactly one publish (see the module
//! documentation of the sink for why one publish per channel).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::supervisor::{ConnectError, Shared, SocketSlot};
use super::CONNECT_TIMEOUT;

/// One live connection and its channel pool.
pub(super) struct Link {
    pub(super) connection: Connection,
    pub(super) socket: SocketSlot,
    /// Idle channels, each in confirm mode with nothing in flight.
    idle: Mutex<Vec<Channel>>,
    /// One permit per idle channel; closed when the link dies so waiters fail at once.
    pub(super) permits: Arc<Semaphore>,
    /// Set when the pool cannot be refilled: the supervisor replaces the connection.
    pub(super) broken: AtomicBool,
}

impl Link {
    /// A connection with an empty pool; [`Link::fill`] opens its channels.
    pub(super) fn new(connection: Connection, socket: SocketSlot, channels: usize) -> Link {
        Link {
            connection,
            socket,
            idle: Mutex::new(Vec::with_capacity(channels)),
            permits: Arc::new(Semaphore::new(0)),
            broken: AtomicBool::new(false),
        }
    }

    /// Opens `channels` confirm-mode channels and makes them available.
    pub(super) async fn fill(&self, channels: usize) -> Result<(), ConnectError> {
        for _ in 0..channels {
            let ch = open_confirm_channel(self).await?;
            self.give_back(ch);
        }
        self.permits.add_permits(channels);
        Ok(())
    }

    pub(super) fn healthy(&self) -> bool {
        self.connection.status().connected() && !self.broken.load(Ordering::Acquire)
    }

    /// Healthy, not blocked by the broker (a resource alarm), and its pool still open.
    pub(super) fn ready(&self) -> bool {
        self.healthy() && !self.connection.status().blocked() && !self.permits.is_closed()
    }

    fn give_back(&self, channel: Channel) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(channel);
    }

    /// Borrows an idle channel for one publish, waiting for one to be free: the lease (which
    /// returns or replaces the channel when dropped) and the channel to publish on. `None` when
    /// the connection is gone (or its pool is off): the caller answers `not_connected`.
    pub(super) async fn lease(self: &Arc<Self>, shared: &Arc<Shared>) -> Option<(Lease, Channel)> {
        let permit = self.permits.clone().acquire_owned().await.ok()?;
        let channel = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let Some(channel) = channel else {
            // Cannot happen (a permit per idle channel); never publish without a channel.
            permit.forget();
            self.broken.store(true, Ordering::Release);
            shared.wake.notify_one();
            return None;
        };
        let lease = Lease {
            link: self.clone(),
            shared: shared.clone(),
            channel: Some(channel.clone()),
            permit: Some(permit),
            reusable: false,
        };
        if !channel.status().connected() {
            shared.wake.notify_one();
            return None;
        }
        Some((lease, channel))
    }
}

/// A channel borrowed from the pool for one publish. Dropped on every path, including when the
/// fan-out's timeout cancels the publish: only a channel whose publish finished cleanly goes back
/// to the pool; any other is dropped (lapin closes it) and replaced in the background.
pub(super) struct Lease {
    link: Arc<Link>,
    shared: Arc<Shared>,
    channel: Option<Channel>,
    permit: Option<OwnedSemaphorePermit>,
    /// Set by the publisher once its publish finished cleanly: the channel may serve again.
    pub(super) reusable: bool,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let (Some(channel), Some(permit)) = (self.channel.take(), self.permit.take()) else {
            return;
        };
        if self.reusable && channel.status().connected() {
            self.link.give_back(channel);
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
                            link.give_back(ch);
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
