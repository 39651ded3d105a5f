//! The admin plane: what operators use, on its own listener (`server.admin_listen`, loopback
//! by default) with its own credential (`admin.tokens`), never the webhook's.
//!
//! The webhook listener serves the webhook paths, `/healthz` and `/readyz` only; everything
//! else an operator does — the spool's status, the dead letters, redrive and purge, a
//! reconciliation pass, `/metrics` — is here, where a stranger who can reach the webhooks
//! cannot. docs/security.md has the threat table.
//!
//! ```text
//! auth.rs       Bearer tokens in constant time; failed attempts rate limited per address
//! routes.rs     the routes of the admin listener, `/metrics`
//! settings.rs   the `admin` section: the listener's tokens and their checks
//! spool.rs      spool status, dead letters (paged), redrive, purge
//! reconcile.rs  one pass at a time, a bounded lookback
//! ```

pub mod auth;
pub mod reconcile;
pub mod routes;
pub mod settings;
pub mod spool;

use std::sync::Arc;

use actix_web::HttpRequest;

pub use auth::AdminAuth;
pub use settings::AdminSettings;

use crate::fanout::Fanout;
use crate::ingest::error::ApiError;
use crate::metrics::Metrics;

/// What the admin routes share.
pub struct AdminState {
    pub auth: AdminAuth,
    pub fanout: Arc<Fanout>,
    pub metrics: Arc<Metrics>,
    /// `reconcile` when configured.
    pub reconciler: Option<Arc<crate::reconcile::Reconciler>>,
    /// Passes run on this runtime (where the broker clients live), as their own task.
    pub publisher: tokio::runtime::Handle,
}

impl AdminState {
    /// The admin credential of this request (401, or 429 once its address failed too often).
    pub fn authenticate(&self, req: &HttpRequest) -> Result<(), ApiError> {
        self.auth
            .check(req.headers(), req.peer_addr().map(|a| a.ip()))
    }
}
