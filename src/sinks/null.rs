//! The `null` sink: acknowledges without storing. It measures the ceiling of the bridge's own
//! code path in benchmarks and plays a slow broker (`latency_ms`) in drills.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::{BuildError, Outgoing, Receipt, Sink, SinkCommon, SinkError, SinkSpec};
use crate::config::validate::{default_sink_timeout_ms, default_true, Issues};

/// Acknowledges at once (after `latency_ms`) without storing anything: the ceiling of the
/// bridge's own code path in benchmarks, and a slow sink in drills.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NullSinkSettings {
    pub name: String,
    #[serde(default = "default_true")]
    pub required: bool,
    #[serde(default = "default_sink_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default)]
    pub events: Option<Vec<String>>,
    /// Simulated broker latency.
    #[serde(default)]
    pub latency_ms: u64,
}

#[async_trait]
impl SinkSpec for NullSinkSettings {
    fn kind(&self) -> &'static str {
        "null"
    }

    fn common(&self) -> SinkCommon<'_> {
        SinkCommon::new(&self.name, self.required, self.timeout_ms, &self.events)
    }

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
