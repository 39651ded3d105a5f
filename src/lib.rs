//! # callbridge
//!
//! Takes a voice-AI platform's call webhooks and publishes each one, as a canonical CloudEvents
//! event, to every configured broker — answering **200 only when every required sink has
//! acknowledged it**, and 503 with `Retry-After` (naming the failed sinks) before the sender's
//! 10 s timeout otherwise.
//!
//! ## Layout: the tree follows the data path
//!
//! ```text
//! ingest/      HTTP: auth (401), body limit (413), JSON whatever the Content-Type (400),
//!              and the one place errors become status codes (ingest/error.rs)
//!   ↓
//! event/       the canonical event (CloudEvents 1.0 + versioned `data`), normalisation of each
//!              webhook family, deterministic ids, the JSON Schema
//!   ↓
//! fanout.rs    claim the id in the ledger → publish concurrently under timeouts → verdict
//! ledger.rs    which sinks acknowledged which event id (bounded, windowed)
//!   ↓
//! sinks/       one trait, `publish(&Outgoing) -> Result<Receipt, SinkError>`, Ok = confirmed:
//!              file.rs (fsync), null.rs (benchmarks), and the broker sinks
//! ```
//!
//! Around it: [`config`] (typed YAML, `${VAR}`, env overrides, validation with field paths),
//! [`template`] (routing templates shared by every sink), [`metrics`] (Prometheus),
//! [`telemetry`] (logs), [`app`] (the server: `Application::build(settings)` binds, `port()`
//! tells tests where).

pub mod app;
pub mod cli;
pub mod config;
pub mod event;
pub mod fanout;
pub mod ingest;
pub mod ledger;
pub mod metrics;
pub mod sinks;
pub mod telemetry;
pub mod template;

pub use app::Application;
pub use config::Settings;
