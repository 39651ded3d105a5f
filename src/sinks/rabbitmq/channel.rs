//! One confirm-mode channel with many publishes in flight, and the task that settles them.
//!
//! **Why a lock around queuing the frames.** A confirm is tied to its publish by delivery tag:
//! lapin numbers a publish when `basic_publish` registers its confirm and the broker numbers it
//! by the order its frames arrive. lapin 3.7 does both — `Acknowledgements::register_pending`
//! and `Frames::push_frames` — synchronously in the *first poll* of the `basic_publish` future
//! (nothing before them awaits). Two publishers on one channel in different threads could
//! interleave those two steps, giving each the other's tag: one's nack reported as the other's.
//! So a publish polls its `basic_publish` future once under the channel's lock: tags are
//! assigned and frames queued in one order, and the lock is released before the frames are
//! even written. This leans on lapin's code as read in 3.7 (hence `lapin = "~3.7"` in
//! Cargo.toml): the race is a few hundred nanoseconds wide and no test can force it (moving
//! the poll out of the lock passed the integration tests twice), so re-read `basic_publish`
//! before upgrading lapin.
//!
//! **Why one task owns every confirm.** lapin hands a `basic.return` to whatever confirm it
//! resolves next, so deciding one publish needs what the channel's *other* confirms carried
//! (see `settle.rs` for the rule and why it is exact). The publish future is handed to the
//! channel's task in the same critical section as its first poll, so a publisher that is
//! cancelled (timeout, deadline) never drops a confirm: a dropped confirm would still take a
//! return inside lapin, out of our sight. The task polls all of them, feeds the [`Settler`],
//! and answers each publisher through a oneshot. A publisher that gave up simply is not
//! listening; its confirm still counts and still holds its place in the in-flight cap.
//!
//! **Why channels are retired.** When the accounting cannot be trusted (lapin failed a
//! publish, a return without a readable sequence number) or a confirm is overdue (longer than
//! the sink's timeout: a stalled channel or connection), the channel takes no more publishes,
//! every publish still on it fails (never a false success), and the pool opens a replacement.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lapin::message::BasicReturnMessage;
use lapin::options::BasicPublishOptions;
use lapin::publisher_confirm::{Confirmation, PublisherConfirm};
use lapin::{BasicProperties, Channel};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use super::message;
use super::settle::{Resolution, Returned, Seq, Settler, Verdict};

/// What the answer says about a returned message.
#[derive(Debug, PartialEq)]
pub(super) struct ReturnInfo {
    pub(super) reply_code: u16,
    pub(super) reply_text: String,
}

/// Why lapin did not give a publish a confirm outcome.
#[derive(Debug)]
pub(super) enum PublishFailure {
    Lapin(lapin::Error),
    /// A confirm-mode channel answered `NotRequested`: the channel is not what we opened.
    NotConfirmMode,
}

pub(super) type Outcome = Verdict<ReturnInfo, PublishFailure>;

/// A publish that got no verdict because its channel ended.
#[derive(Debug)]
pub(super) struct Ended {
    /// The connection is gone (as opposed to this channel being retired).
    pub(super) lost: bool,
    pub(super) reason: String,
}

/// What one publish hears back from the channel's task.
pub(super) type Reply = Result<Outcome, Ended>;

/// One message to publish, owned: the channel's task may outlive the publisher.
pub(super) struct Message {
    pub(super) exchange: Arc<str>,
    pub(super) routing_key: String,
    pub(super) body: Bytes,
    pub(super) properties: BasicProperties,
    pub(super) seq: Seq,
}

type SendFuture = Pin<Box<dyn Future<Output = lapin::Result<PublisherConfirm>> + Send>>;

enum Stage {
    /// `basic_publish` queued the frames; waiting for them to be written.
    Sending(SendFuture),
    Confirming(PublisherConfirm),
    Done,
}

struct Slot {
    stage: Stage,
    reply: Option<oneshot::Sender<Reply>>,
    since: Instant,
    /// The publish's place in the channel's in-flight cap, freed once it is decided.
    _permit: OwnedSemaphorePermit,
}

/// Why a channel stopped taking publishes.
#[derive(Debug, Clone)]
enum Closing {
    Retired(String),
    Lost(String),
}

struct State {
    settler: Settler<ReturnInfo, PublishFailure>,
    slots: HashMap<Seq, Slot>,
    /// The task's waker: publishes poll their first step with it, so lapin wakes the task.
    waker: Option<Waker>,
    closing: Option<Closing>,
    late_returns: u64,
}

/// How a channel's task ended.
pub(super) enum End {
    /// Retired on its own: the pool replaces it.
    Retired,
    /// Stopped by the pool (connection lost, shutdown).
    Stopped,
}

pub(super) struct Pipe {
    channel: Channel,
    sink: Arc<str>,
    state: Mutex<State>,
    /// The in-flight cap; closed when the channel stops taking publishes.
    permits: Arc<Semaphore>,
    /// A confirm outstanding longer than this retires the channel.
    overdue: Duration,
}

/// A publish the channel did not take (it is retiring or stopped): the message comes back
/// untouched, for another channel.
pub(super) struct NotTaken(pub(super) Message);

impl Pipe {
    pub(super) fn new(
        channel: Channel,
        sink: Arc<str>,
        max_in_flight: usize,
        overdue: Duration,
    ) -> Pipe {
        Pipe {
            channel,
            sink,
            state: Mutex::new(State {
                settler: Settler::default(),
                slots: HashMap::new(),
                waker: None,
                closing: None,
                late_returns: 0,
            }),
            permits: Arc::new(Semaphore::new(max_in_flight)),
            overdue,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Room for more publishes now (0 when full or closing): the pool picks the emptiest.
    pub(super) fn room(&self) -> usize {
        if self.permits.is_closed() {
            0
        } else {
            self.permits.available_permits()
        }
    }

    pub(super) fn is_open(&self) -> bool {
        !self.permits.is_closed() && self.channel.status().connected()
    }

    /// Publishes `m` and waits for its verdict. `Err(NotTaken)` when the channel stopped taking
    /// publishes before this one was sent.
    pub(super) async fn publish(&self, m: Message) -> Result<Reply, NotTaken> {
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return Err(NotTaken(m));
        };
        let rx = {
            let mut st = self.lock();
            if st.closing.is_some() {
                return Err(NotTaken(m));
            }
            let Message {
                exchange,
                routing_key,
                body,
                properties,
                seq,
            } = m;
            let channel = self.channel.clone();
            let mut send: SendFuture = Box::pin(async move {
                channel
                    .basic_publish(
                        &exchange,
                        &routing_key,
                        BasicPublishOptions {
                            mandatory: true,
                            immediate: false,
                        },
                        &body,
                        properties,
                    )
                    .await
            });
            // The first poll numbers the publish and queues its frames (see the module
            // documentation); with the task's waker, so lapin wakes the task when they are out.
            let waker = st.waker.clone().unwrap_or_else(futures::task::noop_waker);
            let stage = match send.as_mut().poll(&mut Context::from_waker(&waker)) {
                Poll::Pending => Stage::Sending(send),
                Poll::Ready(Ok(confirm)) => Stage::Confirming(confirm),
                // Whether lapin numbered it is unknown: the task sees the failure and retires
                // the channel.
                Poll::Ready(Err(e)) => Stage::Sending(Box::pin(std::future::ready(Err(e)))),
            };
            let (tx, rx) = oneshot::channel();
            st.settler.register(seq);
            st.slots.insert(
                seq,
                Slot {
                    stage,
                    reply: Some(tx),
                    since: Instant::now(),
                    _permit: permit,
                },
            );
            // Only needed when the task has not run yet or the send is already over; waking it
            // for every publish would make it poll every confirm once per publish.
            if !matches!(
                st.slots.get(&seq).map(|s| &s.stage),
                Some(Stage::Sending(_))
            ) {
                waker.wake_by_ref();
            }
            rx
        };
        Ok(rx.await.unwrap_or_else(|_| {
            Err(Ended {
                lost: true,
                reason: "the channel's task ended".into(),
            })
        }))
    }

    /// Stops taking publishes and fails every one in flight as not connected (the connection
    /// is gone or the sink is shutting down): each waiting publisher is answered at once.
    pub(super) fn stop(&self, reason: &str) {
        let mut st = self.lock();
        st.closing
            .get_or_insert_with(|| Closing::Lost(reason.to_string()));
        self.permits.close();
        if let Some(w) = st.waker.take() {
            w.wake();
        }
    }

    /// The channel's task: settles its publishes until the channel is retired or stopped.
    pub(super) async fn run(self: Arc<Self>) -> End {
        let period =
            (self.overdue / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let end = std::future::poll_fn(|cx| self.poll_run(cx, &mut tick)).await;
        if matches!(end, End::Retired) {
            // Closing explicitly (not only by dropping) tells the broker at once; on a
            // stalled connection this gives up quickly and the pool notices the stall.
            let _ = tokio::time::timeout(
                Duration::from_secs(1),
                self.channel.close(200, "callbridge: channel retired"),
            )
            .await;
        }
        end
    }

    fn poll_run(&self, cx: &mut Context<'_>, tick: &mut tokio::time::Interval) -> Poll<End> {
        let mut ticked = false;
        while tick.poll_tick(cx).is_ready() {
            ticked = true;
        }
        let mut guard = self.lock();
        let State {
            settler,
            slots,
            waker,
            closing,
            late_returns,
        } = &mut *guard;
        if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            *waker = Some(cx.waker().clone());
        }
        let verdicts = settler.collect(|seq| slots.get_mut(&seq).and_then(|s| poll_slot(s, cx)));
        for (seq, verdict) in verdicts {
            if let Some(reply) = slots.remove(&seq).and_then(|mut s| s.reply.take()) {
                let _ = reply.send(Ok(verdict));
            }
        }
        if settler.late_returns() > *late_returns {
            // Only a publish that failed can see its return after being decided; should a
            // delivered one ever, the argument in settle.rs is wrong: say so loudly.
            *late_returns = settler.late_returns();
            tracing::error!(sink = %self.sink, channel = self.channel.id(), late_returns = *late_returns, "rabbitmq return for a publish already decided");
        }
        if closing.is_none() {
            if let Some(why) = settler.broken() {
                *closing = Some(Closing::Retired(why.to_string()));
            } else if ticked && !self.channel.status().connected() {
                // Closed by the broker or with its connection (also ends the tasks of an
                // attempt abandoned half-way): the pool replaces it if the connection lives.
                *closing = Some(Closing::Retired("the channel is closed".into()));
            } else if ticked {
                let oldest = slots.values().map(|s| s.since).min();
                if oldest.is_some_and(|t| t.elapsed() > self.overdue) {
                    *closing = Some(Closing::Retired(format!(
                        "a publisher confirm outstanding for over {} ms",
                        self.overdue.as_millis()
                    )));
                }
            }
        }
        let Some(closing) = closing.clone() else {
            return Poll::Pending;
        };
        self.permits.close();
        let (lost, reason, end) = match closing {
            Closing::Retired(r) => (false, r, End::Retired),
            Closing::Lost(r) => (true, r, End::Stopped),
        };
        let left = settler.drain();
        if !lost {
            tracing::warn!(sink = %self.sink, channel = self.channel.id(), reason = %reason, failed_in_flight = left.len(), "rabbitmq channel retired");
        }
        for seq in left {
            if let Some(reply) = slots.remove(&seq).and_then(|mut s| s.reply.take()) {
                let _ = reply.send(Err(Ended {
                    lost,
                    reason: reason.clone(),
                }));
            }
        }
        slots.clear();
        *waker = None;
        Poll::Ready(end)
    }
}

/// Advances one publish; `Some` once lapin resolved it.
fn poll_slot(
    slot: &mut Slot,
    cx: &mut Context<'_>,
) -> Option<Resolution<ReturnInfo, PublishFailure>> {
    loop {
        match &mut slot.stage {
            Stage::Sending(send) => match send.as_mut().poll(cx) {
                Poll::Pending => return None,
                Poll::Ready(Ok(confirm)) => slot.stage = Stage::Confirming(confirm),
                Poll::Ready(Err(e)) => {
                    slot.stage = Stage::Done;
                    return Some(Resolution::Failed(PublishFailure::Lapin(e)));
                }
            },
            Stage::Confirming(confirm) => {
                let Poll::Ready(result) = Pin::new(confirm).poll(cx) else {
                    return None;
                };
                slot.stage = Stage::Done;
                return Some(match result {
                    Ok(Confirmation::Ack(r)) => Resolution::Ack(r.map(|m| returned(*m))),
                    Ok(Confirmation::Nack(r)) => Resolution::Nack(r.map(|m| returned(*m))),
                    Ok(Confirmation::NotRequested) => {
                        Resolution::Failed(PublishFailure::NotConfirmMode)
                    }
                    Err(e) => Resolution::Failed(PublishFailure::Lapin(e)),
                });
            }
            Stage::Done => return None,
        }
    }
}

fn returned(m: BasicReturnMessage) -> Returned<ReturnInfo> {
    Returned {
        seq: message::seq_of(&m.delivery.properties),
        info: ReturnInfo {
            reply_code: m.reply_code,
            reply_text: m.reply_text.to_string(),
        },
    }
}
