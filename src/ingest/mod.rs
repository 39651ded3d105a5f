//! HTTP ingest: authentication, body limits, parsing, and the answer.
//!
//! The request path, written once as a sequence in `gates.rs`: rate limit (429) → credential
//! (401) → a signature's headers and timestamp (401) → a request slot (503) → the body up to
//! `max_body_bytes` (413), its bytes counted as they arrive (503) → the signature over the raw
//! body (401) → the processing budget (503) → JSON object whatever the Content-Type (400) →
//! normalise (400 naming the field); then (handler.rs) fan-out → 200 or 503.

pub mod auth;
pub mod error;
pub mod gates;
pub mod handler;
pub mod ratelimit;
pub mod response;
pub mod settings;
pub mod signature;

pub use error::ApiError;
pub use handler::AppState;
