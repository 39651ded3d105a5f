//! `POST /reconcile`: one pass now, bounded — one at a time (409 while one runs), a lookback
//! no longer than the ledger remembers (400 beyond it), on its own task so a client that hangs
//! up cannot cancel a pass half-way through a publish.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::AdminState;
use crate::ingest::error::ApiError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileQuery {
    /// How far back to look; default: the configured `lookback_secs`.
    since_secs: Option<u64>,
    #[serde(default)]
    dry_run: bool,
}

/// The answer is the pass's report (what `callbridge reconcile` prints).
pub async fn reconcile(
    req: HttpRequest,
    state: web::Data<AdminState>,
    query: web::Query<ReconcileQuery>,
) -> Result<HttpResponse, ApiError> {
    state.authenticate(&req)?;
    let reconciler = state
        .reconciler
        .clone()
        .ok_or(ApiError::NotConfigured("reconcile"))?;
    let max = reconciler.max_lookback();
    let lookback = match query.since_secs {
        None => reconciler.lookback(),
        Some(s) if s > max.as_secs() => {
            return Err(ApiError::InvalidParameter {
                field: "since_secs",
                message: format!(
                    "at most {} s (idempotency.window_secs: deliveries older than that are \
                     forgotten, so a longer pass would publish them again), got {s}",
                    max.as_secs()
                ),
            })
        }
        Some(s) => Duration::from_secs(s),
    };
    let opts = crate::reconcile::PassOptions {
        lookback,
        dry_run: query.dry_run,
    };
    let pass = reconciler.clone();
    let report = state
        .publisher
        .spawn(async move { pass.try_pass(opts).await })
        .await
        .map_err(|e| ApiError::Internal(e.to_string(), 1))?;
    let Some(report) = report else {
        tracing::info!(
            since_secs = lookback.as_secs(),
            "admin: reconcile refused, a pass is running"
        );
        return Err(ApiError::ReconcileRunning);
    };
    tracing::info!(
        since_secs = lookback.as_secs(),
        dry_run = report.dry_run,
        calls_checked = report.calls_checked,
        published = report.published.len(),
        failed = report.failed.len(),
        api_errors = report.api_errors.len(),
        "admin: reconcile pass"
    );
    Ok(HttpResponse::Ok().json(report))
}
