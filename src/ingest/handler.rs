//! The webhook handler and the small operational endpoints. The webhook's checks before the
//! fan-out are its gates (gates.rs); what follows them here is the fan-out and the answer.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use tracing::Instrument;

use super::auth::Authenticator;
use super::error::ApiError;
use super::response::delivery_body;
use crate::event::{Event, EventKind, EventSettings, KNOWN_STATUSES};
use crate::fanout::{Fanout, SinkOutcome, IN_PROGRESS};
use crate::metrics::Metrics;

/// Everything a request needs, shared by all HTTP workers.
pub struct AppState {
    /// Every check a webhook passes before the fan-out, in order (gates.rs).
    pub gates: super::gates::Gates,
    /// The webhook credentials (the gates hold the same); the operator routes check them too.
    pub auth: Arc<Authenticator>,
    pub fanout: Arc<Fanout>,
    pub metrics: Arc<Metrics>,
    pub event: EventSettings,
    /// Answer within this, whatever the brokers do (below the sender's 10 s timeout).
    pub deadline: Duration,
    pub retry_after_secs: u64,
    /// `log.redact_pii`: keep everything in `data` that is not an identifier out of logs.
    pub redact_pii: bool,
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
    let (mut event, _admitted) = state
        .gates
        .webhook(&req, payload, &state.event, deadline)
        .await?
        .into_parts();

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
        Ok(HttpResponse::Ok().json(delivery_body(&delivery, "accepted")))
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

/// `GET /readyz`: 200 when this process can answer a webhook 200 now, else 503; the body says
/// why per sink (`crate::health`).
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    refresh_readiness(&state);
    let verdict = crate::health::readiness(&state.fanout).await;
    if verdict.ready {
        HttpResponse::Ok().json(verdict)
    } else {
        HttpResponse::ServiceUnavailable().json(verdict)
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
