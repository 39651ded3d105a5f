//! The spool's operator routes: its status, the dead letters (paged), redrive and purge.
//!
//! Each one is authenticated (`admin.tokens`), runs its storage work on the blocking pool,
//! and logs what it did (sink, counts), never the credential.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::AdminState;
use crate::ingest::error::ApiError;
use crate::spool::dead::{DeadCursor, PurgeFilter};
use crate::spool::{Spool, SpoolError};

/// Dead letters per page when `limit` is not given, and the most a page may ask for.
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;

/// Authenticates, then the spool (404 when none is configured).
fn spool_of(req: &HttpRequest, state: &AdminState) -> Result<Arc<Spool>, ApiError> {
    state.authenticate(req)?;
    state
        .fanout
        .spool()
        .cloned()
        .ok_or(ApiError::NotConfigured("spool"))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SpoolError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(ApiError::Spool),
        Err(e) => Err(ApiError::Internal(e.to_string(), 1)),
    }
}

/// `GET /spool`: per sink the events waiting, their bytes, the oldest one's age and the dead
/// letters (kept and discarded), from the spool's counters.
pub async fn status(
    req: HttpRequest,
    state: web::Data<AdminState>,
) -> Result<HttpResponse, ApiError> {
    let spool = spool_of(&req, &state)?;
    let spooling: Vec<String> = state
        .fanout
        .sinks()
        .iter()
        .filter(|s| s.on_unavailable == crate::sinks::OnUnavailable::Spool)
        .map(|s| s.name.clone())
        .collect();
    let queues = blocking(move || spool.status_of(&spooling)).await?;
    tracing::info!(sinks = queues.len(), "admin: spool status");
    Ok(HttpResponse::Ok().json(json!({ "sinks": queues })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadQuery {
    sink: Option<String>,
    limit: Option<usize>,
    /// The `next` of the previous page.
    after: Option<String>,
}

/// `GET /spool/dead?sink=&limit=&after=`: one page of dead letters (sink, seq, reason, call
/// and event ids) and the cursor of the next (`next`, null on the last page).
pub async fn dead_letters(
    req: HttpRequest,
    state: web::Data<AdminState>,
    query: web::Query<DeadQuery>,
) -> Result<HttpResponse, ApiError> {
    let spool = spool_of(&req, &state)?;
    let DeadQuery { sink, limit, after } = query.into_inner();
    let limit = limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::InvalidParameter {
            field: "limit",
            message: format!("between 1 and {MAX_PAGE}, got {limit}"),
        });
    }
    let after = match after.as_deref() {
        None => None,
        Some(a) => Some(
            DeadCursor::parse(a).ok_or_else(|| ApiError::InvalidParameter {
                field: "after",
                message: "expected the `next` of a previous page (<sink>:<seq>)".into(),
            })?,
        ),
    };
    let sink_filter = sink.clone();
    let page =
        blocking(move || spool.dead_letter_page(sink_filter.as_deref(), after.as_ref(), limit))
            .await?;
    tracing::info!(
        sink = sink.as_deref().unwrap_or("*"),
        listed = page.dead_letters.len(),
        more = page.next.is_some(),
        "admin: dead letters listed"
    );
    Ok(HttpResponse::Ok().json(page))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedriveQuery {
    sink: Option<String>,
    seq: Option<u64>,
}

/// `POST /spool/redrive?sink=&seq=`: dead letters back into their queues.
pub async fn redrive(
    req: HttpRequest,
    state: web::Data<AdminState>,
    query: web::Query<RedriveQuery>,
) -> Result<HttpResponse, ApiError> {
    let spool = spool_of(&req, &state)?;
    let RedriveQuery { sink, seq } = query.into_inner();
    let which = sink.clone();
    let n = blocking(move || spool.redrive(which.as_deref(), seq)).await?;
    tracing::info!(
        sink = sink.as_deref().unwrap_or("*"),
        seq = ?seq,
        redriven = n,
        "admin: dead letters redriven"
    );
    Ok(HttpResponse::Ok().json(json!({ "redriven": n })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeQuery {
    sink: Option<String>,
    /// Unix milliseconds: only dead letters that died before it.
    before_ms: Option<u64>,
}

/// `POST /spool/dead/purge?sink=&before_ms=`: removes dead letters for good.
pub async fn purge(
    req: HttpRequest,
    state: web::Data<AdminState>,
    query: web::Query<PurgeQuery>,
) -> Result<HttpResponse, ApiError> {
    let spool = spool_of(&req, &state)?;
    let PurgeQuery { sink, before_ms } = query.into_inner();
    let filter = PurgeFilter {
        sink: sink.clone(),
        before_ms,
        ..PurgeFilter::default()
    };
    let per_sink = blocking(move || spool.purge(&filter)).await?;
    let purged: u64 = per_sink.iter().map(|(_, n)| n).sum();
    for (s, n) in &per_sink {
        tracing::info!(sink = %s, purged = n, before_ms = ?before_ms, "admin: dead letters purged");
    }
    if per_sink.is_empty() {
        tracing::info!(
            sink = sink.as_deref().unwrap_or("*"),
            before_ms = ?before_ms,
            purged = 0,
            "admin: dead letters purged"
        );
    }
    let by_sink: serde_json::Map<String, serde_json::Value> =
        per_sink.into_iter().map(|(s, n)| (s, json!(n))).collect();
    Ok(HttpResponse::Ok().json(json!({ "purged": purged, "sinks": by_sink })))
}
