//! Reconciliation: complete even when webhooks are lost.
//!
//! When a webhook never reached every required sink (an outage longer than the sender's retry
//! schedule, a bad deploy, a sender bug), the sender's docs say "you can still check call status
//! via the API". This module does that for the user: now and then it lists the calls that ended
//! in a window of the platform's call API, asks the idempotency ledger whether each call's
//! terminal status (and analysis) was confirmed, and publishes what was not through the normal
//! fan-out — same schema, the ids a webhook would have had, and the extension attribute
//! `origin: reconcile`. docs/reconcile.md says when to turn it on and what it costs.
//!
//! ```text
//! settings.rs   the `reconcile` config section and its checks
//! client.rs     the platform's read API: history pages, call details, rate limit, retries
//! events.rs     the events a call's webhooks would have carried, and their ids
//! pass.rs       one pass: list → skip what is unfinished or delivered → details → publish
//! scheduler.rs  the running bridge's periodic passes
//! ```

pub mod client;
pub mod events;
pub mod pass;
pub mod scheduler;
pub mod settings;

use std::sync::Arc;
use std::time::Duration;

pub use pass::{Backfill, PassOptions, PassReport, PassSettings, Reconciler};
pub use settings::ReconcileSettings;

use crate::event::EventSettings;
use crate::fanout::Fanout;
use crate::metrics::Metrics;

/// Builds the reconciler of `settings` over the bridge's fan-out, with the fan-out's ledgers
/// (this process's, then the shared one when configured) as the delivery record.
pub fn build(
    settings: &ReconcileSettings,
    fanout: Arc<Fanout>,
    metrics: Arc<Metrics>,
    event: EventSettings,
    ledger_window: Duration,
    publish_timeout: Duration,
) -> Result<Reconciler, client::ApiError> {
    let client = client::PlatformClient::new(settings, metrics.clone())?;
    let record = fanout.delivery_record();
    Ok(Reconciler::new(
        Arc::new(client),
        fanout,
        record,
        metrics,
        event,
        PassSettings {
            settle: Duration::from_secs(settings.settle_secs),
            agent_ids: settings.agent_ids.clone(),
            family: settings.family,
            analysis: settings.analysis,
            ledger_window,
            lookback: Duration::from_secs(settings.lookback_secs),
        },
        publish_timeout,
    ))
}
