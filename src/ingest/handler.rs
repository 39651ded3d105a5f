//! The webhook handler and the probes (`/healthz`, `/readyz`; the operator routes are in
//! `crate::admin`). The webhook's checks before the fan-out are its gates (gates.rs); what
//! follows them here is the fan-out and the answer.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::{json, Value};
use tracing::Instrument;

use super::auth::Authenticator;
use super::error::ApiError;
use super::response::DeliveryBody;
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
        redact_data(&mut v);
    }
    v.to_string()
}

/// Redacts the `data` of an event's JSON as [`LOGGABLE_DATA`] says (the logs, the console).
pub fn redact_data(v: &mut Value) {
    if let Some(data) = v.get_mut("data").and_then(Value::as_object_mut) {
        for (field, value) in data.iter_mut() {
            if !value.is_null() && !LOGGABLE_DATA.contains(&field.as_str()) {
                *value = Value::from("[redacted]");
            }
        }
    }
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

/// Reads every sink's readiness and updates the `callbridge_sink_ready` gauge with it (the
/// probes here and the admin listener's `/metrics`).
pub(crate) fn refresh_readiness<'a>(
    fanout: &'a Fanout,
    metrics: &Metrics,
) -> Vec<(&'a str, bool, bool)> {
    let readiness = fanout.readiness();
    for (name, _, ready) in &readiness {
        metrics
            .sink_ready
            .with_label_values(&[name])
            .set(i64::from(*ready));
    }
    readiness
}

/// `GET /readyz`: 200 when this process can answer a webhook 200 now, else 503; the body says
/// why per sink (`crate::health`).
pub async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    refresh_readiness(&state.fanout, &state.metrics);
    let verdict = crate::health::readiness(&state.fanout).await;
    if verdict.ready {
        HttpResponse::Ok().json(verdict)
    } else {
        HttpResponse::ServiceUnavailable().json(verdict)
    }
}

pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

pub async fn method_not_allowed() -> Result<HttpResponse, ApiError> {
    Err(ApiError::MethodNotAllowed)
}
