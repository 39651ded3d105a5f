//! The webhook handler and the small operational endpoints.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::header::CONTENT_LENGTH;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::StreamExt;
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::auth::Authenticator;
use super::error::ApiError;
use super::ratelimit::Client;
use super::response::DeliveryBody;
use crate::config::security::RateLimitKey;
use crate::event::{self, Event, EventKind, EventSettings, KNOWN_STATUSES};
use crate::fanout::{Fanout, SinkOutcome, IN_PROGRESS};
use crate::metrics::Metrics;

/// Everything a request needs, shared by all HTTP workers.
pub struct AppState {
    pub auth: Authenticator,
    pub fanout: Arc<Fanout>,
    pub metrics: Arc<Metrics>,
    pub event: EventSettings,
    pub max_body_bytes: usize,
    /// Answer within this, whatever the brokers do (below the sender's 10 s timeout).
    pub deadline: Duration,
    pub retry_after_secs: u64,
    /// `log.redact_pii`: keep everything in `data` that is not an identifier out of logs.
    pub redact_pii: bool,
    /// `server.rate_limit`: a request budget per client address or credential.
    pub rate_limit: Option<super::ratelimit::RateLimiter>,
    /// `server.max_in_flight`: one permit per webhook request being handled.
    pub requests: Arc<tokio::sync::Semaphore>,
    /// `server.max_in_flight_bytes`: one permit per body byte admitted.
    pub body_bytes: Arc<tokio::sync::Semaphore>,
    /// `reconcile` when configured: `POST /reconcile` runs a pass (`callbridge reconcile`).
    pub reconciler: Option<Arc<crate::reconcile::Reconciler>>,
    /// Publishing runs on this runtime (where the broker clients live), as its own task, so a
    /// sender that hangs up mid-request cannot cancel a publish half-way.
    pub publisher: tokio::runtime::Handle,
}

pub async fn webhook(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // The request span; it continues the sender's trace when a `traceparent` came with it.
    let span = tracing::info_span!(
        "webhook",
        otel.kind = "server",
        otel.name = %format!("{} {}", req.method(), req.match_pattern().unwrap_or_default()),
        http.request.method = %req.method(),
        event_id = tracing::field::Empty,
        call_id = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    crate::telemetry::continue_trace(&span, req.headers());
    handle(req, payload, state).instrument(span).await
}

async fn handle(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::from_std(started + state.deadline);

    rate_limit(&req, &state, RateLimitKey::Address)?;
    state.auth.check(req.headers())?;
    rate_limit(&req, &state, RateLimitKey::Credential)?;
    // A stale or unsigned request is refused before its body is read.
    state.auth.check_signature_headers(req.headers())?;
    let _admitted = admit(&req, &state)?;
    // The deadline covers the body too: a client that announces more than it sends is answered
    // (503 + Retry-After, connection closed) when the deadline passes, never held.
    let body = tokio::time::timeout_at(deadline, read_body(&req, payload, state.max_body_bytes))
        .await
        .map_err(|_| ApiError::BodyTimeout {
            deadline_ms: state.deadline.as_millis() as u64,
            retry_after_secs: state.retry_after_secs,
        })??;
    // On the raw bytes, before anything parses them.
    state.auth.verify_signature(req.headers(), &body)?;
    let mut event = parse(&req, &body, &state.event)?;
    // The raw body is not needed once normalised: free it before the (long) fan-out wait.
    drop(body);

    let span = tracing::Span::current();
    span.record("event_id", event.id.as_str());
    span.record("call_id", event.subject.as_str());
    event.traceparent = crate::telemetry::outgoing_traceparent(&span, req.headers());
    if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::debug!(event = %loggable(&event, state.redact_pii), "normalised event");
    }
    state.metrics.events.with_label_values(&[&event.ty]).inc();
    if let Some(st) = event.data.status.as_deref() {
        if !KNOWN_STATUSES.contains(&st) {
            state.metrics.unknown_status.inc();
            tracing::warn!(status = st, "unknown call status, forwarded unchanged");
        }
    }
    if event.data.kind == EventKind::Other {
        state.metrics.unknown_event_type.inc();
        tracing::warn!(event_type = ?event.data.event_type, "unknown agent event type, forwarded as kind other");
    }

    let fanout = state.fanout.clone();
    let delivery = state
        .publisher
        .spawn(async move { fanout.deliver(event, deadline).await }.instrument(span.clone()))
        .await
        .map_err(|e| ApiError::Internal(e.to_string(), state.retry_after_secs))?;

    let accepted = delivery.accepted();
    span.record("outcome", if accepted { "accepted" } else { "failed" });
    tracing::info!(
        outcome = if accepted { "accepted" } else { "failed" },
        sinks = %sink_summary(&delivery),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "webhook handled"
    );
    if accepted {
        Ok(HttpResponse::Ok().json(DeliveryBody::new(&delivery, "accepted")))
    } else if delivery.too_large() {
        Err(ApiError::EventTooLarge { delivery })
    } else {
        Err(ApiError::NotDelivered {
            delivery,
            retry_after_secs: state.retry_after_secs,
        })
    }
}

/// The fields of `data` that identify or describe a call without saying anything about the
/// people on it; with `log.redact_pii` (the default) every other field of `data` — numbers,
/// transcripts, analysis, custom arguments, callback parameters, recording URLs, unknown extras —
/// is logged as `[redacted]`. An allowlist, so a field the platform adds tomorrow is redacted too.
const LOGGABLE_DATA: [&str; 24] = [
    "kind",
    "family",
    "event_type",
    "call_id",
    "direction",
    "status",
    "sub_status",
    "duration_seconds",
    "recording_duration_seconds",
    "agent_id",
    "agent_name",
    "version_id",
    "version_slug",
    "workspace_id",
    "call_sid",
    "retry",
    "called_at",
    "analysis_source",
    "call_cost",
    "overall_latency_seconds",
    "first_utterance_seconds",
    "agent_message_count",
    "user_message_count",
    "bulk_list_id",
];

/// The event as JSON for a debug log line, redacted as [`LOGGABLE_DATA`] says when `redact`.
fn loggable(event: &Event, redact: bool) -> String {
    let mut v = serde_json::to_value(event).unwrap_or_default();
    if redact {
        if let Some(data) = v.get_mut("data").and_then(Value::as_object_mut) {
            for (field, value) in data.iter_mut() {
                if !value.is_null() && !LOGGABLE_DATA.contains(&field.as_str()) {
                    *value = Value::from("[redacted]");
                }
            }
        }
    }
    v.to_string()
}

/// `name=acked(3.1ms) other=timeout` for the one log line per request.
fn sink_summary(d: &crate::fanout::Delivery) -> String {
    let mut s = String::new();
    for r in &d.reports {
        let _ = match &r.outcome {
            SinkOutcome::Acked { latency, .. } => {
                write!(s, "{}=acked({:.1}ms) ", r.name, latency.as_secs_f64() * 1e3)
            }
            SinkOutcome::AlreadyAcked { .. } => write!(s, "{}=already_acked ", r.name),
            SinkOutcome::Skipped => write!(s, "{}=skipped ", r.name),
            SinkOutcome::Pending => write!(s, "{}=pending ", r.name),
            SinkOutcome::Spooled { .. } => write!(s, "{}=spooled ", r.name),
            SinkOutcome::InProgress => write!(s, "{}={IN_PROGRESS} ", r.name),
            SinkOutcome::Failed { error } => write!(s, "{}={} ", r.name, error.code()),
        };
    }
    s.trim_end().to_string()
}

/// `server.rate_limit`, at the step of the request path its key belongs to: by address before
/// authentication (also slows down guessing credentials), by credential after it (only a
/// credential that authenticated counts; signature-only requests count by address).
fn rate_limit(req: &HttpRequest, state: &AppState, step: RateLimitKey) -> Result<(), ApiError> {
    let Some(limiter) = state.rate_limit.as_ref().filter(|l| l.by == step) else {
        return Ok(());
    };
    let credential = match step {
        RateLimitKey::Address => None,
        RateLimitKey::Credential => state.auth.matched_credential(req.headers()),
    };
    let client = match (credential, req.peer_addr()) {
        (Some(c), _) => Client::Credential(c),
        (None, Some(addr)) => Client::Address(addr.ip()),
        // No peer address (not over TCP): nothing to key by.
        (None, None) => return Ok(()),
    };
    limiter.check(&client).map_err(|limited| {
        state.metrics.shed.with_label_values(&["rate"]).inc();
        ApiError::RateLimited(limited)
    })
}

/// Takes this request's share of the in-flight limits, or sheds it (503 + `Retry-After`) at
/// once: a request slot, and its body bytes (the announced Content-Length; `max_body_bytes`
/// when none is announced). Released when the answer is built.
fn admit(
    req: &HttpRequest,
    state: &AppState,
) -> Result<(OwnedSemaphorePermit, OwnedSemaphorePermit), ApiError> {
    let shed = |limit| {
        state.metrics.shed.with_label_values(&[limit]).inc();
        tracing::warn!(limit, "in-flight limit reached, request shed");
        ApiError::Overloaded {
            limit,
            retry_after_secs: state.retry_after_secs,
        }
    };
    let request = state
        .requests
        .clone()
        .try_acquire_owned()
        .map_err(|_| shed("requests"))?;
    let bytes = declared_length(req)
        .unwrap_or(state.max_body_bytes)
        .min(state.max_body_bytes);
    // A body over max_body_bytes is refused (413) right after; validation caps the total at u32.
    let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
    let body = state
        .body_bytes
        .clone()
        .try_acquire_many_owned(bytes)
        .map_err(|_| shed("bytes"))?;
    Ok((request, body))
}

fn declared_length(req: &HttpRequest) -> Option<usize> {
    req.headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
}

/// Reads the body up to `limit` bytes. The Content-Length is checked first so an oversized body
/// is refused without reading it.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let declared = declared_length(req);
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut buf = web::BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(ApiError::BodyRead)?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

/// JSON whatever the Content-Type says (the sender sets none by default), then normalise.
fn parse(req: &HttpRequest, body: &[u8], settings: &EventSettings) -> Result<Event, ApiError> {
    let now = time::OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default();
    parse_body(req.query_string(), body, settings, now)
}

/// The parsing half of the request path, free of HTTP types: the query string and the raw body
/// to a normalised event. Public for the fuzzer (fuzz/), which drives exactly this.
pub fn parse_body(
    query: &str,
    body: &[u8],
    settings: &EventSettings,
    now: String,
) -> Result<Event, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(ApiError::InvalidJson)?;
    let params: BTreeMap<String, String> =
        serde_urlencoded::from_str(query).map_err(ApiError::InvalidQuery)?;
    event::normalize(&value, params, settings, now).map_err(ApiError::InvalidPayload)
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Reads every sink's readiness and updates the `callbridge_sink_ready` gauge with it.
fn refresh_readiness(state: &AppState) -> Vec<(&str, bool, bool)> {
    let readiness = state.fanout.readiness();
    for (name, _, ready) in &readiness {
        state
            .metrics
            .sink_ready
            .with_label_values(&[name])
            .set(i64::from(*ready));
    }
    readiness
}

/// `GET /spool`: what waits in the spool per sink (depth, bytes, oldest age, dead letters), as
/// `callbridge spool status` prints it; 404 when no spool is configured.
pub async fn spool_status(state: web::Data<AppState>) -> HttpResponse {
    let Some(spool) = state.fanout.spool().cloned() else {
        return HttpResponse::NotFound().json(serde_json::json!({"error": "no spool configured"}));
    };
    let spooling: Vec<String> = state
        .fanout
        .sinks()
        .iter()
        .filter(|s| s.on_unavailable == crate::sinks::OnUnavailable::Spool)
        .map(|s| s.name.clone())
        .collect();
    match tokio::task::spawn_blocking(move || spool.status_of(&spooling)).await {
        Ok(Ok(queues)) => HttpResponse::Ok().json(serde_json::json!({ "sinks": queues })),
        Ok(Err(e)) => HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"error": crate::sinks::error_chain(&e)})),
        Err(e) => {
            HttpResponse::ServiceUnavailable().json(serde_json::json!({"error": e.to_string()}))
        }
    }
}

/// `GET /spool/dead`: the dead letters (sink, seq, reason, call and event ids). Authenticated
/// like a webhook: the reasons name destinations.
pub async fn dead_letters(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    state.auth.check(req.headers())?;
    // Signed like a webhook with an empty body.
    state.auth.verify_signature(req.headers(), b"")?;
    let Some(spool) = state.fanout.spool().cloned() else {
        return Ok(
            HttpResponse::NotFound().json(serde_json::json!({"error": "no spool configured"}))
        );
    };
    Ok(
        match tokio::task::spawn_blocking(move || spool.dead_letters()).await {
            Ok(Ok(dead)) => HttpResponse::Ok().json(serde_json::json!({ "dead_letters": dead })),
            Ok(Err(e)) => HttpResponse::ServiceUnavailable()
                .json(serde_json::json!({"error": crate::sinks::error_chain(&e)})),
            Err(e) => {
                HttpResponse::ServiceUnavailable().json(serde_json::json!({"error": e.to_string()}))
            }
        },
    )
}

#[derive(serde::Deserialize)]
pub struct RedriveQuery {
    sink: Option<String>,
    seq: Option<u64>,
}

/// `POST /spool/redrive?sink=S&seq=N`: dead letters back into their queues (authenticated).
pub async fn redrive(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<RedriveQuery>,
) -> Result<HttpResponse, ApiError> {
    state.auth.check(req.headers())?;
    // Signed like a webhook with an empty body (its body is not read).
    state.auth.verify_signature(req.headers(), b"")?;
    let Some(spool) = state.fanout.spool().cloned() else {
        return Ok(
            HttpResponse::NotFound().json(serde_json::json!({"error": "no spool configured"}))
        );
    };
    let RedriveQuery { sink, seq } = query.into_inner();
    Ok(
        match tokio::task::spawn_blocking(move || spool.redrive(sink.as_deref(), seq)).await {
            Ok(Ok(n)) => HttpResponse::Ok().json(serde_json::json!({ "redriven": n })),
            Ok(Err(e)) => HttpResponse::ServiceUnavailable()
                .json(serde_json::json!({"error": crate::sinks::error_chain(&e)})),
            Err(e) => {
                HttpResponse::ServiceUnavailable().json(serde_json::json!({"error": e.to_string()}))
            }
        },
    )
}

#[derive(Debug, serde::Deserialize)]
pub struct ReconcileQuery {
    /// How far back to look; default: the configured `lookback_secs`.
    since_secs: Option<u64>,
    #[serde(default)]
    dry_run: bool,
}

/// `POST /reconcile`: one pass now, answered with its report (what `callbridge reconcile`
/// prints). Authenticated like the webhooks: it publishes.
pub async fn reconcile(
    req: HttpRequest,
    state: web::Data<AppState>,
    query: web::Query<ReconcileQuery>,
) -> Result<HttpResponse, ApiError> {
    state.auth.check(req.headers())?;
    let Some((reconciler, lookback)) = state.reconciler.clone().map(|r| {
        let lookback = r.lookback();
        (r, lookback)
    }) else {
        return Ok(HttpResponse::NotFound()
            .json(json!({"error": "no `reconcile` section in this configuration"})));
    };
    let opts = crate::reconcile::PassOptions {
        lookback: query
            .since_secs
            .map(Duration::from_secs)
            .unwrap_or(lookback),
        dry_run: query.dry_run,
    };
    // On the publishing runtime, as its own task: a client that hangs up cannot cancel a pass
    // half-way through a publish.
    let report = state
        .publisher
        .spawn(async move { reconciler.pass(opts).await })
        .await
        .map_err(|e| ApiError::Internal(e.to_string(), state.retry_after_secs))?;
    Ok(HttpResponse::Ok().json(report))
}

pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    let mut sinks = serde_json::Map::new();
    for (name, required, ready) in refresh_readiness(&state) {
        sinks.insert(
            name.to_string(),
            json!({"ready": ready, "required": required}),
        );
    }
    let ready = state.fanout.ready();
    let body = json!({"ready": ready, "sinks": sinks});
    if ready {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    refresh_readiness(&state);
    state.metrics.observe_ledger(state.fanout.ledger_stats());
    if let Some(spool) = state.fanout.spool() {
        state.metrics.spool_bytes.set(spool.bytes() as i64);
        for sink in state.fanout.sinks() {
            let depth = spool
                .depths()
                .into_iter()
                .find(|(s, _)| *s == sink.name)
                .map_or(0, |(_, d)| d);
            state
                .metrics
                .spool_depth
                .with_label_values(&[&sink.name])
                .set(depth as i64);
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(state.metrics.render())
}

pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

pub async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}
