//! The settler against a simulated lapin 3 and a simulated RabbitMQ, over thousands of seeded
//! random schedules that obey only what the broker promises: a message's `basic.return` comes
//! before its own ack. Everything else is random: windows of 1 to 128 publishes in flight,
//! single acks in any order, coalesced `multiple` acks (resolved by lapin one tag at a time in
//! a shuffled "hash-set" order, while our driver polls in between), returns stacked up, nacks.
//! lapin is modelled as its source reads: one FIFO of returns, each resolution pops its head.

use std::collections::{BTreeSet, HashMap, VecDeque};

use super::*;

/// SplitMix64: small, seeded, good enough to pick schedules.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Fate {
    Routable,
    Unroutable,
    Nacked,
}

enum Frame {
    Return(Seq),
    Confirm {
        tag: usize,
        ack: bool,
        multiple: bool,
    },
}

/// Our model of lapin 3's acknowledgements and returned messages for one channel.
#[derive(Default)]
struct Lapin {
    /// Frames received, not yet handled (handled strictly in order).
    frames: VecDeque<Frame>,
    /// The resolutions of the frame being handled, one at a time (lapin's hash-set order).
    steps: VecDeque<(usize, bool)>,
    /// `ReturnedMessages::waiting_messages`: returned messages by their header's seq.
    fifo: VecDeque<Seq>,
    pending: BTreeSet<usize>,
    /// Resolved promises our driver has not taken yet.
    resolved: HashMap<usize, Resolution<Seq, ()>>,
    /// Confirms that carried another publish's return.
    misattached: u64,
}

impl Lapin {
    /// One step of lapin's I/O thread; false when idle.
    fn step(&mut self, rng: &mut Rng) -> bool {
        if let Some((tag, ack)) = self.steps.pop_front() {
            // complete_pending: pop the FIFO's head into whichever confirm resolves now.
            let returned = self.fifo.pop_front();
            if returned.is_some_and(|seq| seq != seq_of(tag)) {
                self.misattached += 1;
            }
            let returned = returned.map(|seq| Returned {
                seq: Some(seq),
                info: seq,
            });
            let resolution = if ack {
                Resolution::Ack(returned)
            } else {
                Resolution::Nack(returned)
            };
            self.resolved.insert(tag, resolution);
            return true;
        }
        let Some(frame) = self.frames.pop_front() else {
            return false;
        };
        match frame {
            Frame::Return(seq) => self.fifo.push_back(seq),
            Frame::Confirm { tag, ack, multiple } => {
                let mut tags: Vec<usize> = if multiple {
                    self.pending.range(..=tag).copied().collect()
                } else {
                    vec![tag]
                };
                for i in (1..tags.len()).rev() {
                    tags.swap(i, rng.below(i + 1));
                }
                for t in tags {
                    self.pending.remove(&t);
                    self.steps.push_back((t, ack));
                }
            }
        }
        true
    }
}

fn seq_of(tag: usize) -> Seq {
    1_000_003 + 7 * tag as u64
}

/// How a driver turns lapin's resolutions into verdicts.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Driver {
    /// The real one: `Settler::collect`.
    Settler,
    /// Ablation: the settler, but each publish decided as soon as it is seen (no pass after).
    NoPassAfter,
    /// Ablation: the settler, but a confirm carrying another's return is decided at once.
    NoWait,
    /// Ablation: trust lapin's attachment, as a one-publish-per-channel sink could.
    TrustLapin,
}

#[derive(Default, Debug)]
struct Tally {
    publishes: u64,
    returned: u64,
    nacked: u64,
    delivered: u64,
    /// A returned or nacked publish reported delivered: data loss. Must stay 0.
    false_success: u64,
    /// A routable, acked publish not reported delivered.
    doubt: u64,
    /// Confirms that carried another publish's return (lapin's misattribution happened).
    misattached: u64,
}

/// One random schedule: `n` publishes on one channel, start to end.
fn schedule(seed: u64, driver: Driver, tally: &mut Tally) {
    let mut rng = Rng(seed);
    let n = 20 + rng.below(250);
    let window = 1 + rng.below(128);
    let unroutable_pct = [0, 5, 10, 30, 60][rng.below(5)];
    let nack_pct = [0, 0, 3, 10][rng.below(4)];
    let multiple_pct = [0, 20, 50, 90][rng.below(4)];
    let poll_interleave_pct = [0, 10, 40][rng.below(3)];

    let mut fates = Vec::with_capacity(n);
    let mut lapin = Lapin::default();
    let mut settler: Settler<Seq, ()> = Settler {
        no_wait: driver == Driver::NoWait,
        ..Settler::default()
    };
    let mut verdicts: HashMap<usize, Verdict<Seq, ()>> = HashMap::new();
    // Broker side: published, return sent, confirm sent.
    let mut published = 0usize;
    let mut returned_sent = vec![false; n + 1];
    let mut confirmed = vec![false; n + 1];
    let mut unconfirmed: BTreeSet<usize> = BTreeSet::new();
    // Unroutable publishes not returned yet; publishes that may be confirmed (maybe already
    // confirmed by a multiple ack: skipped when picked).
    let mut returnable: Vec<usize> = Vec::new();
    let mut ready: Vec<usize> = Vec::new();
    let tag_of = |seq: Seq| ((seq - 1_000_003) / 7) as usize;

    let record = |vs: Vec<(Seq, Verdict<Seq, ()>)>,
                  verdicts: &mut HashMap<usize, Verdict<Seq, ()>>| {
        for (seq, v) in vs {
            assert!(verdicts.insert(tag_of(seq), v).is_none(), "decided twice");
        }
    };

    let drive = |lapin: &mut Lapin,
                 settler: &mut Settler<Seq, ()>,
                 rng: &mut Rng,
                 verdicts: &mut HashMap<usize, Verdict<Seq, ()>>| {
        // Each poll may let lapin's thread run first: the non-atomic view of a multiple ack.
        let poll = |seq: Seq, lapin: &mut Lapin, rng: &mut Rng| {
            while rng.chance(poll_interleave_pct) {
                if !lapin.step(rng) {
                    break;
                }
            }
            lapin.resolved.remove(&tag_of(seq))
        };
        match driver {
            Driver::Settler | Driver::NoWait => {
                let vs = settler.collect(|seq| poll(seq, lapin, rng));
                record(vs, verdicts);
            }
            Driver::NoPassAfter => {
                let seqs: Vec<Seq> = settler.outstanding.values().copied().collect();
                for seq in seqs {
                    if let Some(r) = poll(seq, lapin, rng) {
                        settler.observe(seq, r);
                        let vs = settler.settle();
                        record(vs, verdicts);
                    }
                }
            }
            Driver::TrustLapin => {
                let seqs: Vec<Seq> = settler.outstanding.values().copied().collect();
                for seq in seqs {
                    if let Some(r) = poll(seq, lapin, rng) {
                        let order = settler.entries[&seq].order;
                        settler.outstanding.remove(&order);
                        settler.entries.remove(&seq);
                        let v = match r {
                            Resolution::Ack(None) => Verdict::Delivered,
                            Resolution::Ack(Some(r)) => Verdict::Unroutable(r.info),
                            Resolution::Nack(_) => Verdict::Nacked,
                            Resolution::Failed(e) => Verdict::Failed(e),
                        };
                        verdicts.insert(tag_of(seq), v);
                    }
                }
            }
        }
    };

    loop {
        let all_published = published == n;
        let broker_done = all_published && unconfirmed.is_empty();
        let lapin_idle = lapin.frames.is_empty() && lapin.steps.is_empty();
        if broker_done && lapin_idle {
            break;
        }
        match rng.below(10) {
            // Publish: register in delivery-tag order, as the channel lock guarantees.
            0..=2 if !all_published && unconfirmed.len() < window => {
                published += 1;
                let tag = published;
                let fate = if rng.chance(unroutable_pct) {
                    Fate::Unroutable
                } else if rng.chance(nack_pct) {
                    Fate::Nacked
                } else {
                    Fate::Routable
                };
                fates.push(fate);
                if fate == Fate::Unroutable {
                    returnable.push(tag);
                } else {
                    ready.push(tag);
                }
                settler.register(seq_of(tag));
                lapin.pending.insert(tag);
                unconfirmed.insert(tag);
            }
            // The broker returns an unroutable message (before its ack, never after).
            3 if !returnable.is_empty() => {
                let t = returnable.swap_remove(rng.below(returnable.len()));
                returned_sent[t] = true;
                ready.push(t);
                lapin.frames.push_back(Frame::Return(seq_of(t)));
            }
            // The broker confirms: single (any order) or multiple (all unconfirmed up to t).
            4 | 5 if !ready.is_empty() => {
                let t = ready.swap_remove(rng.below(ready.len()));
                if confirmed[t] {
                    continue; // covered by an earlier multiple ack
                }
                let is_ready = |u: usize| fates[u - 1] != Fate::Unroutable || returned_sent[u];
                let ack = fates[t - 1] != Fate::Nacked;
                let multiple = rng.chance(multiple_pct)
                    && unconfirmed
                        .range(..=t)
                        .all(|&u| is_ready(u) && (fates[u - 1] != Fate::Nacked) == ack);
                let covered: Vec<usize> = if multiple {
                    unconfirmed.range(..=t).copied().collect()
                } else {
                    vec![t]
                };
                for u in covered {
                    unconfirmed.remove(&u);
                    confirmed[u] = true;
                }
                lapin.frames.push_back(Frame::Confirm {
                    tag: t,
                    ack,
                    multiple,
                });
            }
            6 | 7 => {
                lapin.step(&mut rng);
            }
            _ => drive(&mut lapin, &mut settler, &mut rng, &mut verdicts),
        }
    }
    // Everything handled by lapin: the driver's next call sees and decides everything.
    drive(&mut lapin, &mut settler, &mut rng, &mut verdicts);
    if driver == Driver::Settler {
        assert_eq!(settler.len(), 0, "seed {seed}: publishes left undecided");
        assert_eq!(settler.late_returns(), 0, "seed {seed}");
        assert!(settler.broken().is_none(), "seed {seed}");
    }
    assert!(confirmed[1..].iter().all(|c| *c));

    for (i, fate) in fates.iter().enumerate() {
        let tag = i + 1;
        tally.publishes += 1;
        let verdict = verdicts.get(&tag);
        match fate {
            Fate::Unroutable => {
                tally.returned += 1;
                match verdict {
                    Some(Verdict::Unroutable(info)) if driver == Driver::Settler => {
                        assert_eq!(*info, seq_of(tag), "seed {seed}: someone else's return")
                    }
                    Some(Verdict::Delivered) => tally.false_success += 1,
                    _ => {}
                }
            }
            Fate::Nacked => {
                tally.nacked += 1;
                match verdict {
                    Some(Verdict::Delivered) => tally.false_success += 1,
                    Some(Verdict::Nacked) => {}
                    other if driver == Driver::Settler => {
                        panic!("seed {seed}: nacked tag {tag} got {other:?}")
                    }
                    _ => {}
                }
            }
            Fate::Routable => match verdict {
                Some(Verdict::Delivered) => tally.delivered += 1,
                _ => tally.doubt += 1,
            },
        }
    }
    tally.misattached += lapin.misattached;
}

/// Runs the schedules of `seeds`; an ablation stops at its first false success.
fn run(driver: Driver, seeds: std::ops::Range<u64>) -> Tally {
    let mut tally = Tally::default();
    for seed in seeds {
        schedule(seed, driver, &mut tally);
        if driver != Driver::Settler && tally.false_success > 0 {
            eprintln!("{driver:?}: first false success at seed {seed}");
            break;
        }
    }
    tally
}

/// The settler over 2000 random schedules: a returned or nacked publish is never reported
/// delivered, every routable acked publish is, and each return goes to its own publish.
#[test]
fn model_returned_publishes_never_succeed_and_acked_ones_do() {
    let tally = run(Driver::Settler, 0..2000);
    eprintln!("settler: {tally:?}");
    assert_eq!(tally.false_success, 0, "{tally:?}");
    assert_eq!(
        tally.doubt, 0,
        "no routable publish fails when nothing breaks: {tally:?}"
    );
    assert!(
        tally.returned > 10_000 && tally.delivered > 100_000,
        "{tally:?}"
    );
}

/// The model is strong enough to see lapin's misattribution: trusting the confirm a return is
/// attached to (what a pipelined sink without the header would do) reports returned
/// publishes delivered.
#[test]
fn model_catches_trusting_lapins_attachment() {
    let tally = run(Driver::TrustLapin, 0..300);
    eprintln!("trust lapin: {tally:?}");
    assert!(tally.false_success > 0, "{tally:?}");
}

/// Deciding a publish as soon as it is seen resolved, without the full pass after it, is
/// caught: a multiple ack's earlier resolution (carrying the return) can be missed when the
/// pass had already polled that confirm.
#[test]
fn model_catches_deciding_without_a_pass_after() {
    let tally = run(Driver::NoPassAfter, 0..3000);
    eprintln!("no pass after: {tally:?}");
    assert!(tally.false_success > 0, "{tally:?}");
}

/// Deciding a confirm that carried another publish's return at once (instead of waiting for
/// everything outstanding then) is caught: its own return may still be queued in lapin.
#[test]
fn model_catches_not_waiting_after_a_foreign_return() {
    let tally = run(Driver::NoWait, 0..3000);
    eprintln!("no wait: {tally:?}");
    assert!(tally.false_success > 0, "{tally:?}");
}

fn ret(seq: Option<Seq>) -> Option<Returned<Seq>> {
    Some(Returned {
        seq,
        info: seq.unwrap_or(0),
    })
}

/// Return(2), then `ack multiple 2` resolved as 1 (carrying 2's return) then 2 (carrying
/// nothing), with 2 polled first: 2 is unroutable, 1 delivered.
#[test]
fn a_return_carried_by_a_lower_tag_of_a_multiple_ack() {
    let mut s: Settler<Seq, ()> = Settler::default();
    s.register(10);
    s.register(11);
    let mut resolved: HashMap<Seq, Resolution<Seq, ()>> = HashMap::new();
    // The pass polls 10 before lapin resolves anything, then 11 after lapin resolved both.
    let mut first = true;
    let vs = s.collect(|seq| {
        if first {
            first = false;
            resolved.insert(10, Resolution::Ack(ret(Some(11))));
            resolved.insert(11, Resolution::Ack(None));
            return None;
        }
        resolved.remove(&seq)
    });
    let vs: HashMap<_, _> = vs.into_iter().collect();
    assert_eq!(vs[&11], Verdict::Unroutable(11));
    assert_eq!(vs[&10], Verdict::Delivered);
}

/// Return(1), Return(2), single ack 2 (carries 1's return), then ack 1 (carries 2's): 2 waits
/// for 1, then both are unroutable.
#[test]
fn stacked_returns_swapped_by_out_of_order_acks() {
    let mut s: Settler<Seq, ()> = Settler::default();
    s.register(1);
    s.register(2);
    let vs = s.collect(|seq| (seq == 2).then(|| Resolution::Ack(ret(Some(1)))));
    assert!(vs.is_empty(), "2 carried 1's return: it waits for 1");
    let vs: HashMap<_, _> = s
        .collect(|seq| (seq == 1).then(|| Resolution::Ack(ret(Some(2)))))
        .into_iter()
        .collect();
    assert_eq!(vs[&1], Verdict::Unroutable(1));
    assert_eq!(vs[&2], Verdict::Unroutable(2));
}

/// A return nobody can be sure to own breaks the accounting: nothing undecided succeeds.
#[test]
fn an_unreadable_return_leaves_nothing_delivered() {
    let mut s: Settler<Seq, ()> = Settler::default();
    for seq in 1..=3 {
        s.register(seq);
    }
    let vs: HashMap<_, _> = s
        .collect(|seq| match seq {
            1 => Some(Resolution::Ack(ret(None))),
            2 => Some(Resolution::Ack(None)),
            _ => None,
        })
        .into_iter()
        .collect();
    assert!(s.broken().is_some());
    assert!(matches!(vs[&1], Verdict::Doubt(_)));
    assert!(matches!(vs[&2], Verdict::Doubt(_)));
    assert_eq!(s.drain(), vec![3]);
}

/// A failed publish (lapin error) leaves the others in doubt too: its confirm may take a
/// return we never see.
#[test]
fn a_failed_publish_leaves_the_others_in_doubt() {
    let mut s: Settler<Seq, &'static str> = Settler::default();
    s.register(1);
    s.register(2);
    let vs: HashMap<_, _> = s
        .collect(|seq| match seq {
            1 => Some(Resolution::Failed("channel closed")),
            _ => Some(Resolution::Ack(None)),
        })
        .into_iter()
        .collect();
    assert_eq!(vs[&1], Verdict::Failed("channel closed"));
    assert!(matches!(vs[&2], Verdict::Doubt(_)));
}
