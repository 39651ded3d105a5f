//! The index's and the audit's metrics, registered into the bridge's registry.

use std::sync::Arc;

use prometheus::{Gauge, IntCounterVec, IntGauge, Opts};

use crate::metrics::Metrics;

pub struct DeliveryMetrics {
    /// Records dropped from the index, by reason (`age`, `cap`).
    pub evicted: IntCounterVec,
    /// Events in the index.
    pub events: IntGauge,
    pub verified: IntCounterVec,
    pub missing: IntCounterVec,
    pub unverifiable: IntCounterVec,
    /// 200s the audit did not read back, by reason (`sampled_out`, `queue_full`).
    pub skipped: IntCounterVec,
    /// Seconds since the oldest 200 the audit has yet to read back was answered (0: none).
    pub oldest_unaudited: Gauge,
}

fn counter(name: &str, help: &str, label: &str) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric")
}

impl DeliveryMetrics {
    /// The metrics, registered in `registry`.
    pub fn register(registry: &Metrics) -> Arc<DeliveryMetrics> {
        let m = DeliveryMetrics::unregistered();
        for c in [
            Box::new(m.evicted.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.events.clone()),
            Box::new(m.verified.clone()),
            Box::new(m.missing.clone()),
            Box::new(m.unverifiable.clone()),
            Box::new(m.skipped.clone()),
            Box::new(m.oldest_unaudited.clone()),
        ] {
            registry.register(c);
        }
        Arc::new(m)
    }

    /// The metrics in no registry (tests, benchmarks).
    pub fn unregistered() -> DeliveryMetrics {
        DeliveryMetrics {
            evicted: counter(
                "callbridge_deliveries_evicted_total",
                "Events dropped from the delivery index, by reason (age, cap)",
                "reason",
            ),
            events: IntGauge::new(
                "callbridge_deliveries_events",
                "Events held in the delivery index",
            )
            .expect("valid metric"),
            verified: counter(
                "callbridge_audit_verified_total",
                "Copies the audit read back from the broker by their receipt, with the event's id",
                "sink",
            ),
            missing: counter(
                "callbridge_audit_missing_total",
                "Copies answered 200 that the broker no longer holds at their receipt",
                "sink",
            ),
            unverifiable: counter(
                "callbridge_audit_unverifiable_total",
                "Copies the audit cannot read back (nothing stored to read, no read by receipt, \
                 or retention may have removed them)",
                "sink",
            ),
            skipped: counter(
                "callbridge_audit_skipped_total",
                "200s the audit did not read back, by reason (sampled_out, queue_full)",
                "reason",
            ),
            oldest_unaudited: Gauge::new(
                "callbridge_audit_oldest_unaudited_seconds",
                "Age of the oldest 200 whose copies the audit has yet to read back (0: none)",
            )
            .expect("valid metric"),
        }
    }
}
