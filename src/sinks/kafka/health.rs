//! Readiness: whether a broker answered recently, kept current by a background task that
//! fetches cluster metadata (and by librdkafka's `ALL_BROKERS_DOWN` callback), which also
//! replaces a producer that died while idle.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Weak;
use std::time::Duration;

use rdkafka::producer::Producer;

use super::Inner;

/// Shared by the sink, its producers' contexts and the health task.
pub(super) struct Health {
    pub(super) sink: String,
    /// Whether a broker answered recently.
    pub(super) reachable: AtomicBool,
    /// librdkafka repeats its complaints every few milliseconds while brokers are down.
    pub(super) throttle: crate::sinks::throttle::Throttle,
}

/// Keeps `reachable` current and replaces producers that died while idle.
pub(super) async fn health_loop(inner: Weak<Inner>) {
    // The first probe's outcome is logged whatever it is; after that only changes.
    let mut first = true;
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let slot = match strong.usable().await {
            Ok(s) => s,
            Err(_) => strong.current(),
        };
        let health = strong.health.clone();
        let was = health.reachable.load(Ordering::Acquire);
        drop(strong);
        let probe = tokio::task::spawn_blocking(move || {
            let r = slot
                .producer
                .client()
                .fetch_metadata(None, Duration::from_secs(2))
                .map(|m| m.brokers().len());
            drop(slot);
            r
        })
        .await;
        let now = matches!(probe, Ok(Ok(n)) if n > 0);
        health.reachable.store(now, Ordering::Release);
        if now != was || std::mem::take(&mut first) {
            match &probe {
                Ok(Err(e)) if !now => {
                    tracing::warn!(sink = %health.sink, error = %e, "kafka sink not ready")
                }
                _ => tracing::info!(sink = %health.sink, ready = now, "kafka sink readiness"),
            }
        }
        tokio::time::sleep(if now {
            Duration::from_secs(3)
        } else {
            Duration::from_millis(500)
        })
        .await;
    }
}
