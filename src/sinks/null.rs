//! The `null` sink: acknowledges without storing. It measures the ceiling of the bridge's own
//! code path in benchmarks and plays a slow broker (`latency_ms`) in drills.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{BuildError, Outgoing, Receipt, Sink, SinkError, SinkSpec};
use crate::validate::Issues;

sink_settings! {
    "null",
    /// Acknowledges at once (after `latency_ms`) without storing anything: the ceiling of the
    /// bridge's own code path in benchmarks, and a slow sink in drills.
    pub struct NullSinkSettings {
        /// Simulated broker latency.
        #[serde(default)]
        pub latency_ms: u64,
    }
}

#[async_trait]
impl SinkSpec for NullSinkSettings {
    fn validate(&self, path: &str, issues: &mut Issues) {
        issues.warn(
            path,
            "a null sink acknowledges without storing anything (benchmarks and drills only)",
        );
    }

    async fn build(&self) -> Result<Arc<dyn Sink>, BuildError> {
        Ok(Arc::new(NullSink {
            latency: Duration::from_millis(self.latency_ms),
        }))
    }
}

pub struct NullSink {
    latency: Duration,
}

#[async_trait]
impl Sink for NullSink {
    async fn publish(&self, _event: &Outgoing) -> Result<Receipt, SinkError> {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        Ok(Receipt::Null { stored: false })
    }
}
