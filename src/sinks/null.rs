//! The `null` sink: acknowledges without storing. It measures the ceiling of the bridge's own
//! code path in benchmarks and plays a slow broker (`latency_ms`) in drills.

use std::time::Duration;

use async_trait::async_trait;

use super::{Outgoing, Receipt, Sink, SinkError};
use crate::config::NullSinkSettings;

pub struct NullSink {
    latency: Duration,
}

impl NullSink {
    pub fn new(settings: &NullSinkSettings) -> NullSink {
        NullSink {
            latency: Duration::from_millis(settings.latency_ms),
        }
    }
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
