//! The console: a web page on the admin listener (`/console/`) to see the flow, find a call,
//! and redrive or purge dead letters — over the delivery index and its audit, the spool,
//! readiness and the metrics. docs/console.md is the user's page.
//!
//! ```text
//! routes.rs   the page shell, the versioned assets, sign-in and sign-out, the security headers
//! guard.rs    the session cookie or an admin token; for a POST: same site, the CSRF token
//! session.rs  server-side sessions (random ids, bounded, 8 h) and their CSRF tokens
//! api.rs      the JSON the page reads: session, overview, find, dead letters, redrive, purge
//! filter.rs   the dead-letter filter from a query string (bad input: a 400 naming it)
//! sampler.rs  a snapshot of the counters every 10 s into a 15-minute ring (the charts)
//! assets/     index.html, console.js, console.css: hand-written, no framework, embedded
//! ```
//!
//! **Who may use it.** The page and its assets are public (they hold no data). Every
//! `/console/api/*` route needs a session — made by signing in with an admin token, checked by
//! the admin plane's own check with its failure budget — or an `Authorization: Bearer` admin
//! token. Without `admin.tokens` (a loopback admin listener, where every operator route is
//! open) signing in needs no token, but a session is still made: the CSRF protection below
//! needs one, and a page on another site must not drive the console from the operator's
//! browser.
//!
//! **Cross-site requests.** The session cookie is `HttpOnly; SameSite=Strict; Path=/console`
//! (`Secure` behind TLS). Every POST is refused (403) when the browser says it comes from
//! another site (`Sec-Fetch-Site`, or an `Origin` that is not this host), and a POST made with
//! the session cookie must carry the session's CSRF token in `X-CSRF-Token` (the page reads it
//! from `GET /console/api/session`).
//!
//! Dependencies: this module reads the fan-out, the delivery index, the spool, readiness and
//! the metrics; the admin plane registers it and hands it its credential check (so nothing
//! here imports `admin`).

pub mod api;
pub mod filter;
pub mod guard;
pub mod routes;
pub mod sampler;
pub mod session;

use std::net::IpAddr;
use std::sync::Arc;

use actix_web::http::header::HeaderMap;
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::fanout::Fanout;
use crate::metrics::Metrics;
use crate::spool::SpoolError;

pub use routes::configure;

/// The admin credential check: `None` when the headers carry an admin token (or none is
/// needed), else the refusal to answer (401, or 429 once the address spent its budget).
pub type Check = Arc<dyn Fn(&HeaderMap, Option<IpAddr>) -> Option<HttpResponse> + Send + Sync>;

/// What the console's routes share.
pub struct ConsoleState {
    pub check: Check,
    pub fanout: Arc<Fanout>,
    pub metrics: Arc<Metrics>,
    pub sessions: session::Sessions,
    pub sampler: Arc<sampler::Sampler>,
    /// No `admin.tokens`: signing in needs no token.
    pub open: bool,
    /// `log.redact_pii`: the event's `data` is shown redacted as the logs redact it.
    pub redact_pii: bool,
    /// The admin listener has TLS: the cookie is `Secure`, the expected origin `https://`.
    pub tls: bool,
}

impl ConsoleState {
    /// The state, and the sampler started on the current runtime.
    pub fn start(
        check: Check,
        fanout: Arc<Fanout>,
        metrics: Arc<Metrics>,
        open: bool,
        redact_pii: bool,
        tls: bool,
    ) -> ConsoleState {
        let sampler = Arc::new(sampler::Sampler::default());
        sampler.start(fanout.clone(), metrics.clone());
        ConsoleState {
            check,
            fanout,
            metrics,
            sessions: session::Sessions::default(),
            sampler,
            open,
            redact_pii,
            tls,
        }
    }
}

/// Why the console refuses a request; its answers.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("sign in at /console/ or send Authorization: Bearer <admin token>")]
    Unauthenticated,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error(
        "the filter now selects {actual} dead letters, not the {expected} confirmed; count again"
    )]
    CountChanged { expected: u64, actual: u64 },
    #[error("no {0} in this bridge")]
    NotConfigured(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("the spool: {0}")]
    Spool(#[source] SpoolError),
    #[error("a session could not be made: {0}")]
    Session(#[source] session::RandomError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ResponseError for ConsoleError {
    fn status_code(&self) -> StatusCode {
        match self {
            ConsoleError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ConsoleError::CountChanged { .. } => StatusCode::CONFLICT,
            ConsoleError::NotConfigured(_) | ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::Spool(SpoolError::Full { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            ConsoleError::Spool(_) | ConsoleError::Session(_) | ConsoleError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .insert_header(("Cache-Control", "no-store"))
            .json(json!({ "error": self.to_string() }))
    }
}
