//! The overview's figures and their last 15 minutes: a snapshot of the counters every
//! [`INTERVAL`] into a bounded ring, and what two snapshots say (events per second, latency
//! percentiles, outcomes).
//!
//! The counters are read from the metrics registry (`callbridge_sink_publish_total`, the
//! publish latency histogram, the idempotency hits) without creating series, so the console
//! never changes what `/metrics` shows.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::core::Collector;
use serde::Serialize;

use crate::fanout::{Fanout, IN_PROGRESS};
use crate::metrics::Metrics;

/// How often a snapshot is taken.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Snapshots kept: 15 minutes of them.
pub const KEPT: usize = 90;

/// One sink's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SinkCounters {
    /// Publish outcomes by their label (`acked`, `spooled`, a failure code, ...).
    pub outcomes: BTreeMap<String, u64>,
    /// Redeliveries answered from the ledger (not published again).
    pub duplicates: u64,
    /// The latency histogram: (upper bound in seconds, cumulative count), ascending.
    pub buckets: Vec<(f64, u64)>,
    pub spool_depth: u64,
}

/// Outcomes that are no failure; every other label counts as failed.
const NOT_FAILED: [&str; 6] = [
    "acked",
    "replayed",
    "spooled",
    "skipped",
    "spool_already_acked",
    IN_PROGRESS,
];

impl SinkCounters {
    fn outcome(&self, label: &str) -> u64 {
        self.outcomes.get(label).copied().unwrap_or(0)
    }

    pub fn acked(&self) -> u64 {
        self.outcome("acked") + self.outcome("replayed")
    }

    pub fn spooled(&self) -> u64 {
        self.outcome("spooled")
    }

    pub fn duplicate(&self) -> u64 {
        self.duplicates + self.outcome("spool_already_acked")
    }

    pub fn failed(&self) -> u64 {
        self.outcomes
            .iter()
            .filter(|(k, _)| !NOT_FAILED.contains(&k.as_str()))
            .map(|(_, n)| n)
            .sum()
    }

    /// Events the sink handled (what events per second counts).
    pub fn handled(&self) -> u64 {
        self.acked() + self.spooled() + self.failed() + self.duplicate()
    }
}

/// Every sink's counters at `at_ms`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub at_ms: u64,
    pub sinks: BTreeMap<String, SinkCounters>,
}

/// `q` (0..1) of the latencies between two cumulative histograms, in milliseconds,
/// interpolated within its bucket (as Prometheus' `histogram_quantile`); None without samples.
pub fn quantile_ms(newer: &[(f64, u64)], older: &[(f64, u64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, u64)> = newer
        .iter()
        .map(|(le, n)| {
            let before = older.iter().find(|(l, _)| l == le).map_or(0, |(_, m)| *m);
            (*le, n.saturating_sub(before))
        })
        .collect();
    let total = delta.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower = 0.0;
    let mut below = 0u64;
    for (le, n) in &delta {
        if *n as f64 >= rank {
            if le.is_infinite() {
                return Some(lower * 1e3);
            }
            let inside = (n - below) as f64;
            let frac = if inside > 0.0 {
                (rank - below as f64) / inside
            } else {
                0.0
            };
            return Some((lower + (le - lower) * frac) * 1e3);
        }
        lower = *le;
        below = *n;
    }
    None
}

/// The ring of snapshots, oldest first, at most `cap`.
#[derive(Debug)]
pub struct Ring {
    cap: usize,
    snapshots: VecDeque<Snapshot>,
}

impl Ring {
    pub fn new(cap: usize) -> Ring {
        Ring {
            cap: cap.max(1),
            snapshots: VecDeque::with_capacity(cap.max(1)),
        }
    }

    pub fn push(&mut self, s: Snapshot) {
        if self.snapshots.len() == self.cap {
            self.snapshots.pop_front();
        }
        self.snapshots.push_back(s);
    }

    pub fn len(&self) -> usize {
        self.snapshots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.snapshots.is_empty()
    }

    /// The newest snapshot taken at least `age_ms` before `now_ms` (else the oldest one).
    pub fn at_least_ago(&self, now_ms: u64, age_ms: u64) -> Option<&Snapshot> {
        self.snapshots
            .iter()
            .rev()
            .find(|s| now_ms.saturating_sub(s.at_ms) >= age_ms)
            .or_else(|| self.snapshots.front())
    }

    /// Per interval between consecutive snapshots, per sink: events per second, spool depth
    /// and p99 latency (ms) — the charts' points.
    pub fn history(&self) -> Vec<HistoryPoint> {
        self.snapshots
            .iter()
            .zip(self.snapshots.iter().skip(1))
            .map(|(old, new)| HistoryPoint {
                at_ms: new.at_ms,
                sinks: new
                    .sinks
                    .iter()
                    .map(|(name, c)| {
                        let before = old.sinks.get(name).cloned().unwrap_or_default();
                        (name.clone(), point(c, &before, new.at_ms, old.at_ms))
                    })
                    .collect(),
            })
            .collect()
    }
}

/// One sink in one interval of the history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SinkPoint {
    pub events_per_sec: f64,
    pub failed_per_sec: f64,
    pub spool_depth: u64,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryPoint {
    pub at_ms: u64,
    pub sinks: BTreeMap<String, SinkPoint>,
}

/// What a sink did between `old` (at `old_ms`) and `new` (at `new_ms`).
pub fn point(new: &SinkCounters, old: &SinkCounters, new_ms: u64, old_ms: u64) -> SinkPoint {
    let secs = (new_ms.saturating_sub(old_ms) as f64 / 1e3).max(1e-3);
    SinkPoint {
        events_per_sec: new.handled().saturating_sub(old.handled()) as f64 / secs,
        failed_per_sec: new.failed().saturating_sub(old.failed()) as f64 / secs,
        spool_depth: new.spool_depth,
        p99_ms: quantile_ms(&new.buckets, &old.buckets, 0.99),
    }
}

/// Label pairs and values of a vector metric, read without creating series.
fn series(c: &dyn Collector) -> Vec<prometheus::proto::Metric> {
    c.collect()
        .into_iter()
        .flat_map(|mut f| f.take_metric().into_iter())
        .collect()
}

fn label<'a>(m: &'a prometheus::proto::Metric, name: &str) -> &'a str {
    m.get_label()
        .iter()
        .find(|l| l.name() == name)
        .map_or("", |l| l.value())
}

/// The counters now, for every sink of `fanout`.
pub fn snapshot(fanout: &Fanout, metrics: &Metrics, at_ms: u64) -> Snapshot {
    let mut sinks: BTreeMap<String, SinkCounters> = fanout
        .sinks()
        .iter()
        .map(|s| (s.name.clone(), SinkCounters::default()))
        .collect();
    for m in series(&metrics.sink_outcomes) {
        if let Some(c) = sinks.get_mut(label(&m, "sink")) {
            let v = m.get_counter().get_value() as u64;
            *c.outcomes
                .entry(label(&m, "outcome").to_string())
                .or_default() += v;
        }
    }
    for m in series(&metrics.idempotency_hits) {
        if let Some(c) = sinks.get_mut(label(&m, "sink")) {
            c.duplicates += m.get_counter().get_value() as u64;
        }
    }
    for m in series(&metrics.publish_seconds) {
        if let Some(c) = sinks.get_mut(label(&m, "sink")) {
            let h = m.get_histogram();
            c.buckets = h
                .get_bucket()
                .iter()
                .map(|b| (b.upper_bound(), b.cumulative_count()))
                .chain(std::iter::once((f64::INFINITY, h.get_sample_count())))
                .collect();
        }
    }
    if let Some(spool) = fanout.spool() {
        for (sink, depth) in spool.depths() {
            if let Some(c) = sinks.get_mut(&sink) {
                c.spool_depth = depth;
            }
        }
    }
    Snapshot { at_ms, sinks }
}

/// The ring and the task that fills it.
pub struct Sampler {
    ring: Mutex<Ring>,
}

impl Default for Sampler {
    fn default() -> Self {
        Sampler {
            ring: Mutex::new(Ring::new(KEPT)),
        }
    }
}

impl Sampler {
    pub fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Snapshots every [`INTERVAL`] on the current runtime until the process ends (the first
    /// one at once, so the overview has a baseline).
    pub fn start(self: &Arc<Self>, fanout: Arc<Fanout>, metrics: Arc<Metrics>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(me) = me.upgrade() else { return };
                let s = snapshot(&fanout, &metrics, crate::delivery::now_ms());
                me.ring().push(s);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(acked: u64, failed: u64, depth: u64) -> SinkCounters {
        let mut c = SinkCounters::default();
        c.outcomes.insert("acked".into(), acked);
        c.outcomes.insert("timeout".into(), failed);
        c.outcomes.insert("skipped".into(), 7);
        c.spool_depth = depth;
        c
    }

    fn snap(at_ms: u64, acked: u64) -> Snapshot {
        Snapshot {
            at_ms,
            sinks: [("k".to_string(), counters(acked, 0, 0))].into(),
        }
    }

    #[test]
    fn the_ring_keeps_the_newest_cap_snapshots() {
        let mut r = Ring::new(3);
        for i in 0..5 {
            r.push(snap(i * 10_000, i));
        }
        assert_eq!(r.len(), 3);
        let h = r.history();
        assert_eq!(h.len(), 2, "points between consecutive snapshots");
        assert_eq!(h[0].at_ms, 30_000);
        assert_eq!(h[1].at_ms, 40_000);
        assert!((h[1].sinks["k"].events_per_sec - 0.1).abs() < 1e-9);
    }

    #[test]
    fn a_baseline_is_the_newest_snapshot_old_enough_else_the_oldest() {
        let mut r = Ring::new(10);
        assert!(r.at_least_ago(0, 0).is_none());
        for t in [0, 10_000, 20_000, 30_000] {
            r.push(snap(t, t / 1000));
        }
        assert_eq!(r.at_least_ago(35_000, 10_000).unwrap().at_ms, 20_000);
        assert_eq!(r.at_least_ago(35_000, 60_000).unwrap().at_ms, 0);
    }

    #[test]
    fn outcomes_fall_into_acked_spooled_duplicate_and_failed() {
        let mut c = counters(5, 2, 0);
        c.outcomes.insert("replayed".into(), 1);
        c.outcomes.insert("spooled".into(), 3);
        c.outcomes.insert("spool_already_acked".into(), 1);
        c.outcomes.insert("dead_lettered".into(), 1);
        c.duplicates = 4;
        assert_eq!(c.acked(), 6);
        assert_eq!(c.spooled(), 3);
        assert_eq!(c.duplicate(), 5);
        assert_eq!(c.failed(), 3, "timeout and dead_lettered");
        assert_eq!(c.handled(), 17, "skipped is not handled");
        let p = point(&c, &counters(0, 0, 0), 12_000, 10_000);
        assert!((p.events_per_sec - 17.0 / 2.0).abs() < 1e-9);
        assert!((p.failed_per_sec - 1.5).abs() < 1e-9);
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket_of_the_window() {
        // 100 samples in (0, 10 ms], 100 in (10 ms, 20 ms] since the older snapshot.
        let older = [(0.01, 50), (0.02, 50), (f64::INFINITY, 50)];
        let newer = [(0.01, 150), (0.02, 250), (f64::INFINITY, 250)];
        let p50 = quantile_ms(&newer, &older, 0.5).unwrap();
        assert!((p50 - 10.0).abs() < 1e-9, "{p50}");
        let p99 = quantile_ms(&newer, &older, 0.99).unwrap();
        assert!((p99 - 19.8).abs() < 1e-9, "{p99}");
        assert_eq!(
            quantile_ms(&older, &older, 0.5),
            None,
            "no samples in the window"
        );
        let over = [(0.01, 0), (f64::INFINITY, 10)];
        assert_eq!(
            quantile_ms(&over, &[], 0.5),
            Some(10.0),
            "past the last bound: it"
        );
    }
}
