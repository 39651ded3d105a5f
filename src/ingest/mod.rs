//! HTTP ingest: authentication, body limits, parsing, and the answer.
//!
//! The request path: auth (401; a signature's headers and timestamp too) → body up to
//! `max_body_bytes` (413) → the signature over the raw body (401) → JSON object whatever the
//! Content-Type (400) → normalise (400 naming the field) → fan-out → 200 or 503.

pub mod auth;
pub mod error;
pub mod handler;
pub mod ratelimit;
pub mod response;
pub mod signature;

pub use error::ApiError;
pub use handler::AppState;
