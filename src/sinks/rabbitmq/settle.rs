//! Settling the publishes of one channel: which confirm outcome (and which `basic.return`)
//! belongs to which publish, when lapin may hand a return to the wrong confirm.
//!
//! This file is pure bookkeeping, without I/O or time, so that a simulated lapin can drive it
//! through thousands of random schedules (the model test below). The channel's driver
//! (`channel.rs`) feeds it what lapin resolved and acts on its verdicts.
//!
//! # The problem
//!
//! AMQP 0-9-1 gives a `basic.return` no delivery tag. RabbitMQ sends an unroutable mandatory
//! message's `basic.return` before that message's `basic.ack`, and may send acks for other
//! messages (single, out of order, or one coalesced `multiple=true` ack) in between. lapin 3
//! keeps returns in one FIFO per channel (`ReturnedMessages::waiting_messages`) and pops its
//! head into *whichever* confirm it resolves next (`Acknowledgements::complete_pending`); a
//! multiple ack resolves its tags one after another in hash-set order. So a return can arrive
//! attached to a lower tag, to a higher tag of the same multiple ack, to an unrelated single
//! ack that came first, or — when several returns are queued — to a confirm resolved after its
//! own; and the returned message's own confirm then resolves as a clean `Ack(None)`.
//!
//! # The rule, and why it is exact
//!
//! Every message carries a unique sequence number in the `x-callbridge-seq` header, and a
//! returned message carries its headers back, so a return names its publish whatever confirm it
//! is attached to. What remains is knowing, when a confirm resolves, whether its publish's
//! return may still be invisible. Facts about lapin 3 (read in its source):
//!
//! 1. A return is complete in the FIFO before its own ack frame is processed (frames of one
//!    channel are handled in order, and RabbitMQ sends the return first).
//! 2. Every confirm resolution pops at most one return, the FIFO's head, and attaches it to
//!    that confirm; pops and resolutions happen under one lock, in one order (call it lapin's
//!    order), and a confirm's promise is resolved right after its pop.
//! 3. Promises are flume channels: seeing confirm `p` resolved *happens after* every resolution
//!    lapin made before `p`'s, so a poll of any other confirm made after seeing `p` sees those.
//!
//! Hence, for a publish `p`:
//!
//! * **`p` resolved carrying nothing**: the FIFO was empty at `p`'s resolution, so `p`'s return,
//!   if any, was popped *earlier* in lapin's order, into some confirm `c` resolved before `p`.
//!   After seeing `p`, one more full pass over every confirm still outstanding sees `c` (fact 3).
//!   So `p` is decided only after such a pass: returned iff some observed confirm carried a
//!   return naming `p`. No waiting on anything else.
//! * **`p` carrying its own return**: unroutable, at once.
//! * **`p` carrying another publish's return**: `p`'s own return may still be queued behind. The
//!   FIFO can never hold more returns than there are unresolved confirms whose return already
//!   arrived (each such return was pushed while its confirm was unresolved, and every
//!   resolution pops one while the FIFO is non-empty). So once every confirm that was
//!   outstanding when `p` was seen has resolved (and a pass followed), every return queued at
//!   `p`'s resolution has been popped into a confirm we observed. Then `p` is decided exactly.
//!   Until then it waits (bounded by the publish timeout).
//! * **a nack**: rejected, whatever it carries (what it carries is recorded for its owner).
//! * **anything lapin failed (an error), or a return without a readable sequence number**: the
//!   accounting can no longer be trusted: every undecided publish fails as *in doubt* (never a
//!   false success) and the driver retires the channel.
//!
//! A return is always recorded under the publish it names, so it is found whichever confirm
//! brought it and whenever its owner resolves.

use std::collections::{BTreeMap, HashMap};

/// The per-publish sequence number carried in the `x-callbridge-seq` header.
pub(super) type Seq = u64;

/// A returned message as attached by lapin: the sequence number read from its headers (`None`
/// if it has none we can read) and what the answer reports about it.
#[derive(Debug)]
pub(super) struct Returned<R> {
    pub(super) seq: Option<Seq>,
    pub(super) info: R,
}

/// What lapin resolved one publish's confirm to.
#[derive(Debug)]
pub(super) enum Resolution<R, E> {
    Ack(Option<Returned<R>>),
    Nack(Option<Returned<R>>),
    /// lapin failed the publish or its confirm (the channel or connection closed, ...).
    Failed(E),
}

/// The outcome of one publish.
#[derive(Debug, PartialEq)]
pub(super) enum Verdict<R, E> {
    /// Acked, and certainly not returned.
    Delivered,
    /// The broker returned this very message (no queue bound for its routing key).
    Unroutable(R),
    /// The broker nacked it (e.g. a full queue with `x-overflow: reject-publish`).
    Nacked,
    /// The outcome cannot be known exactly: reported as a failure, never as delivered.
    Doubt(&'static str),
    Failed(E),
}

enum State<R, E> {
    Outstanding,
    /// Resolved by lapin and seen by us. `wait_for`, for a confirm that carried another
    /// publish's return: every confirm outstanding when it was seen was registered below it.
    Observed {
        resolution: Resolution<R, E>,
        wait_for: Option<u64>,
    },
}

struct Entry<R, E> {
    order: u64,
    state: State<R, E>,
}

/// The settlement state of one channel. Publishes are registered in delivery-tag order.
pub(super) struct Settler<R, E> {
    entries: HashMap<Seq, Entry<R, E>>,
    /// Registration number → sequence number of every publish lapin has not resolved (as far
    /// as we have seen), oldest first.
    outstanding: BTreeMap<u64, Seq>,
    /// Observed, not yet decided.
    undecided: Vec<Seq>,
    next_order: u64,
    /// Returns seen, by the publish they name, kept until that publish is decided.
    returns: HashMap<Seq, R>,
    /// Why the accounting cannot be trusted any more, if it cannot.
    broken: Option<&'static str>,
    /// Returns naming a publish already decided (which could only be one that failed).
    late_returns: u64,
    scratch: Vec<Seq>,
    /// Model-test ablation: decide a confirm carrying another's return at once (wrong).
    #[cfg(test)]
    no_wait: bool,
}

impl<R, E> Default for Settler<R, E> {
    fn default() -> Self {
        Settler {
            entries: HashMap::new(),
            outstanding: BTreeMap::new(),
            undecided: Vec::new(),
            next_order: 0,
            returns: HashMap::new(),
            broken: None,
            late_returns: 0,
            scratch: Vec::new(),
            #[cfg(test)]
            no_wait: false,
        }
    }
}

impl<R, E> Settler<R, E> {
    /// A publish whose frames were just queued: called in delivery-tag order (under the
    /// channel's lock, in the same critical section as queuing the frames), with a sequence
    /// number never used before on this channel.
    pub(super) fn register(&mut self, seq: Seq) {
        let order = self.next_order;
        self.next_order += 1;
        let previous = self.entries.insert(
            seq,
            Entry {
                order,
                state: State::Outstanding,
            },
        );
        if previous.is_some() {
            // Two publishes with one number could take each other's return: never trust it.
            self.broken
                .get_or_insert("a sequence number was used twice");
        }
        self.outstanding.insert(order, seq);
    }

    /// Publishes registered and not yet decided.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Why the channel's accounting is off, if it is: the driver retires the channel.
    pub(super) fn broken(&self) -> Option<&'static str> {
        self.broken
    }

    /// Returns that named a publish already decided, so far.
    pub(super) fn late_returns(&self) -> u64 {
        self.late_returns
    }

    /// Polls every outstanding publish (`poll` answers what lapin resolved it to, if it did),
    /// in full passes, until a pass finds nothing new: so every publish seen resolved is
    /// followed by a full pass (fact 3 of the module documentation). Then decides what can be
    /// decided. Returns the verdicts.
    pub(super) fn collect(
        &mut self,
        mut poll: impl FnMut(Seq) -> Option<Resolution<R, E>>,
    ) -> Vec<(Seq, Verdict<R, E>)> {
        loop {
            let mut scratch = std::mem::take(&mut self.scratch);
            scratch.clear();
            scratch.extend(self.outstanding.values().copied());
            let mut found = false;
            for &seq in &scratch {
                if let Some(resolution) = poll(seq) {
                    self.observe(seq, resolution);
                    found = true;
                }
            }
            self.scratch = scratch;
            if !found {
                break;
            }
        }
        self.settle()
    }

    /// Records what lapin resolved `seq` to, and the return it carries under the publish
    /// that return names.
    fn observe(&mut self, seq: Seq, resolution: Resolution<R, E>) {
        let Some(entry) = self.entries.get_mut(&seq) else {
            return;
        };
        if !matches!(entry.state, State::Outstanding) {
            return;
        }
        self.outstanding.remove(&entry.order);
        let failed = matches!(resolution, Resolution::Failed(_));
        let (resolution, carried) = match resolution {
            Resolution::Ack(Some(r)) if r.seq != Some(seq) => (Resolution::Ack(None), Some(r)),
            Resolution::Nack(Some(r)) if r.seq != Some(seq) => (Resolution::Nack(None), Some(r)),
            other => (other, None),
        };
        // Every confirm outstanding now was registered before `next_order`.
        entry.state = State::Observed {
            resolution,
            wait_for: carried.is_some().then_some(self.next_order),
        };
        self.undecided.push(seq);
        if let Some(r) = carried {
            match r.seq {
                Some(owner) if self.entries.contains_key(&owner) => {
                    self.returns.insert(owner, r.info);
                }
                Some(_) => self.late_returns += 1,
                None => {
                    self.broken
                        .get_or_insert("a returned message without a readable sequence number");
                }
            }
        }
        if failed {
            // Its confirm may live on inside lapin and take a return we would never see.
            self.broken
                .get_or_insert("lapin failed a publish on this channel");
        }
    }

    /// Decides every observed publish that can be decided (see the module documentation).
    fn settle(&mut self) -> Vec<(Seq, Verdict<R, E>)> {
        let oldest_outstanding = self.outstanding.keys().next().copied();
        let mut verdicts = Vec::new();
        let mut keep = Vec::new();
        for seq in std::mem::take(&mut self.undecided) {
            let Some(entry) = self.entries.get(&seq) else {
                continue;
            };
            let State::Observed {
                resolution,
                wait_for,
            } = &entry.state
            else {
                continue;
            };
            let decidable = match (resolution, wait_for) {
                (Resolution::Ack(Some(_)) | Resolution::Nack(_) | Resolution::Failed(_), _) => true,
                // Carried nothing: decided now (a full pass has followed).
                (Resolution::Ack(None), None) => true,
                // Carried another's return: once everything outstanding then has resolved.
                (Resolution::Ack(None), Some(w)) => oldest_outstanding.is_none_or(|o| o >= *w),
            };
            #[cfg(test)]
            let decidable = decidable || self.no_wait;
            if !decidable && self.broken.is_none() {
                keep.push(seq);
                continue;
            }
            let Some(entry) = self.entries.remove(&seq) else {
                continue;
            };
            let State::Observed { resolution, .. } = entry.state else {
                continue;
            };
            let own = self.returns.remove(&seq);
            let verdict = match (resolution, own) {
                (Resolution::Failed(e), _) => Verdict::Failed(e),
                (Resolution::Nack(_), _) => Verdict::Nacked,
                (Resolution::Ack(Some(r)), _) => Verdict::Unroutable(r.info),
                (Resolution::Ack(None), Some(info)) => Verdict::Unroutable(info),
                (Resolution::Ack(None), None) => match self.broken {
                    Some(why) => Verdict::Doubt(why),
                    None => Verdict::Delivered,
                },
            };
            verdicts.push((seq, verdict));
        }
        self.undecided = keep;
        verdicts
    }

    /// Ends the channel: every publish not yet decided, for the driver to fail (their
    /// confirms will never be seen). Returns recorded for them are dropped.
    pub(super) fn drain(&mut self) -> Vec<Seq> {
        self.outstanding.clear();
        self.undecided.clear();
        self.returns.clear();
        let mut left: Vec<(u64, Seq)> = self.entries.drain().map(|(s, e)| (e.order, s)).collect();
        left.sort_unstable();
        left.into_iter().map(|(_, s)| s).collect()
    }
}

#[cfg(test)]
mod tests;
