//! The canonical event: one CloudEvents 1.0 envelope, versioned (`.v1`), whatever the sender.
//!
//! Consumers see the same shape for every webhook: the envelope attributes (`id`, `type`,
//! `subject` = call id, ...) and `data`, the call record normalised from the sender's payload.
//! The JSON Schema in `docs/schema/call-event.v1.json` is generated from these types.

pub mod agent_event;
pub mod binding;
pub mod callback;
mod fields;
pub mod id;
pub mod samples;
pub mod transcript;

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use agent_event::normalize_agent_event;
pub use callback::normalize_callback;
pub use transcript::Turn;

/// CloudEvents spec version we emit.
pub const SPEC_VERSION: &str = "1.0";
/// Major version of `data`'s shape; part of every `type`.
pub const SCHEMA_VERSION: &str = "v1";

/// A canonical call event (CloudEvents 1.0, structured JSON form).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(title = "callbridge call event v1")]
pub struct Event {
    /// Always `1.0`.
    pub specversion: String,
    /// Deterministic: the same webhook (by any replica, on any retry) gets the same id, so it
    /// doubles as the deduplication key downstream. See docs/events.md for the derivation.
    pub id: String,
    /// Configured `event.source`, e.g. `/callbridge`.
    pub source: String,
    /// `<type_prefix>.call.<kind>.v1`, e.g. `ai.ringg.call.status.v1`.
    #[serde(rename = "type")]
    pub ty: String,
    /// The call id, so consumers can filter one call's events without parsing `data`.
    pub subject: String,
    /// When the bridge received the webhook (RFC 3339, UTC).
    pub time: String,
    /// Always `application/json`.
    pub datacontenttype: String,
    /// Extension: the call status, when the webhook carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callstatus: Option<String>,
    /// Extension (CloudEvents partitioning): the call id, so one call's events stay in order.
    pub partitionkey: String,
    /// Extension: `reconcile` on an event the bridge backfilled from the platform's call API
    /// because its webhook never arrived (docs/reconcile.md); absent on events from webhooks.
    /// Consumers that care where an event came from read it without parsing `data`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Extension (CloudEvents distributed tracing): W3C trace context of the publish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    pub data: CallData,
}

/// What happened to the call. Part of the CloudEvents `type`, of routing templates and of sinks'
/// `events` filters, and the same whichever webhook family reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The call started (agent event `call_started`).
    Started,
    /// The call's status changed (callback webhook with `data.status`; agent event
    /// `call_completed`).
    Status,
    /// The recording is ready (agent event `recording_completed`).
    Recording,
    /// An analysis is ready (callback webhook with `data.analysis`; agent events
    /// `platform_analysis_completed`, `client_analysis_completed`); see `analysis_source`.
    Analysis,
    /// Everything about the call is final (agent event `all_processing_completed`).
    Processed,
    /// An agent event type this version does not know, forwarded unchanged (see `event_type`).
    Other,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::Started,
        EventKind::Status,
        EventKind::Recording,
        EventKind::Analysis,
        EventKind::Processed,
        EventKind::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Status => "status",
            EventKind::Recording => "recording",
            EventKind::Analysis => "analysis",
            EventKind::Processed => "processed",
            EventKind::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which of the platform's two webhook mechanisms delivered the event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// The per-call `callback_url` (`{"status": "success", "data": {...}}`).
    Callback,
    /// An agent event subscription (flat JSON with `event_type`).
    AgentEvent,
}

/// Who produced an analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AnalysisSource {
    /// `data.analysis` of a callback webhook.
    Callback,
    /// `platform_analysis_completed`: the platform's own analysis.
    Platform,
    /// `client_analysis_completed`: the customer's configured prompts.
    Client,
}

/// Call statuses either family documents. Others are forwarded unchanged (and counted).
pub const KNOWN_STATUSES: [&str; 7] = [
    "registered",
    "ongoing",
    "completed",
    "failed",
    "error",
    "cancelled",
    // agent event `call_completed` only
    "retry",
];

/// The normalised call record. Every field is always present (null when the webhook did not
/// carry it), so consumers can rely on the shape whichever family sent the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CallData {
    /// The same as the kind in `type`.
    pub kind: EventKind,
    pub family: Family,
    /// The agent event's `event_type` as sent; null for callback webhooks.
    pub event_type: Option<String>,
    pub call_id: String,
    /// `inbound`, `outbound`, `webcall`, ... as sent (`call_direction` or `call_type`).
    pub direction: Option<String>,
    /// The call status (`registered`, `ongoing`, `completed`, `failed`, `error`, `cancelled`,
    /// `retry`, or any newer status, unchanged).
    pub status: Option<String>,
    /// `call_started`'s `sub_status`, e.g. `ACCEPTED`.
    pub sub_status: Option<String>,
    /// Call duration in seconds (`call_duration`).
    pub duration_seconds: Option<f64>,
    pub recording_url: Option<String>,
    /// `recording_duration`, in seconds.
    pub recording_duration_seconds: Option<f64>,
    /// The transcript exactly as sent: a string (callback family) or an array of turns.
    pub transcript: Option<Value>,
    /// The transcript normalised to turns, whatever its shape on the wire.
    pub transcript_turns: Option<Vec<Turn>>,
    pub agent_id: Option<String>,
    pub agent_name: Option<String>,
    pub version_id: Option<String>,
    pub version_slug: Option<String>,
    pub version_description: Option<String>,
    pub workspace_id: Option<String>,
    /// The telephony provider's call id.
    pub call_sid: Option<String>,
    /// Which attempt of the call this is (`retry` or `retry_count`).
    pub retry: Option<u64>,
    pub from_number: Option<String>,
    pub to_number: Option<String>,
    /// When the call was placed (`called_on`), as sent.
    pub called_at: Option<String>,
    /// The customer's own `custom_args_values` from the call request.
    pub custom_args: Option<Map<String, Value>>,
    /// Analysis results (`data.analysis` or `analysis_data`); null when the event has none.
    pub analysis: Option<Map<String, Value>>,
    pub analysis_source: Option<AnalysisSource>,
    /// `call_cost`, in the platform's billing currency.
    pub call_cost: Option<f64>,
    pub overall_latency_seconds: Option<f64>,
    pub first_utterance_seconds: Option<f64>,
    pub agent_message_count: Option<u64>,
    pub user_message_count: Option<u64>,
    pub bulk_list_id: Option<String>,
    pub tool_call_logs: Option<Vec<Value>>,
    /// Query parameters of the webhook URL (the sender's `callback_args.params`).
    pub callback_params: BTreeMap<String, String>,
    /// The sender's descriptive `message`.
    pub message: Option<String>,
    /// Fields the sender sent that this version does not know, kept verbatim. Callback family:
    /// unknown `data.*` fields by name, unknown top-level fields under `_envelope`.
    pub extra: Map<String, Value>,
}

impl CallData {
    /// A record with only what every event has; normalisers fill in the rest.
    pub fn new(kind: EventKind, family: Family, call_id: String) -> CallData {
        CallData {
            kind,
            family,
            event_type: None,
            call_id,
            direction: None,
            status: None,
            sub_status: None,
            duration_seconds: None,
            recording_url: None,
            recording_duration_seconds: None,
            transcript: None,
            transcript_turns: None,
            agent_id: None,
            agent_name: None,
            version_id: None,
            version_slug: None,
            version_description: None,
            workspace_id: None,
            call_sid: None,
            retry: None,
            from_number: None,
            to_number: None,
            called_at: None,
            custom_args: None,
            analysis: None,
            analysis_source: None,
            call_cost: None,
            overall_latency_seconds: None,
            first_utterance_seconds: None,
            agent_message_count: None,
            user_message_count: None,
            bulk_list_id: None,
            tool_call_logs: None,
            callback_params: BTreeMap::new(),
            message: None,
            extra: Map::new(),
        }
    }

    /// Sets `transcript` and `transcript_turns` from the value as sent.
    pub(crate) fn set_transcript(
        &mut self,
        value: Option<&Value>,
        field: &str,
    ) -> Result<(), InvalidPayload> {
        match value {
            None | Some(Value::Null) => Ok(()),
            Some(v) => {
                self.transcript_turns = Some(transcript::turns(v, field)?);
                self.transcript = Some(v.clone());
                Ok(())
            }
        }
    }
}

/// Why a payload cannot become an event. Always names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidPayload {
    /// JSON path of the field at fault, e.g. `data.call_id`.
    pub field: String,
    pub message: String,
}

impl InvalidPayload {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The `event` section of the configuration: what every event's envelope says about its origin.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventSettings {
    /// CloudEvents `source` of every event.
    #[serde(default = "default_source")]
    pub source: String,
    /// Prefix of the CloudEvents `type` (`<prefix>.call.status.v1`).
    #[serde(default = "default_type_prefix")]
    pub type_prefix: String,
}

impl Default for EventSettings {
    fn default() -> Self {
        Self {
            source: default_source(),
            type_prefix: default_type_prefix(),
        }
    }
}

fn default_source() -> String {
    "/callbridge".into()
}
fn default_type_prefix() -> String {
    "ai.ringg".into()
}

/// Builds the envelope around `data`.
pub(crate) fn envelope(
    id: String,
    data: CallData,
    settings: &EventSettings,
    time: String,
) -> Event {
    Event {
        specversion: SPEC_VERSION.into(),
        id,
        source: settings.source.clone(),
        ty: event_type(settings, data.kind),
        subject: data.call_id.clone(),
        time,
        datacontenttype: "application/json".into(),
        callstatus: data.status.clone(),
        partitionkey: data.call_id.clone(),
        origin: None,
        traceparent: None,
        data,
    }
}

/// The largest event a body of `body_bytes` can make: `data` keeps the transcript as sent and
/// as turns (about twice the body at worst), plus the envelope and headers (a few KiB at most).
/// Compared with each required sink's limit at startup and by `validate`.
pub fn worst_case_event_bytes(body_bytes: usize) -> usize {
    body_bytes.saturating_mul(2).saturating_add(4096)
}

/// `<prefix>.call.<kind>.v1`
pub fn event_type(settings: &EventSettings, kind: EventKind) -> String {
    format!("{}.call.{}.{}", settings.type_prefix, kind, SCHEMA_VERSION)
}

impl Event {
    /// `call.<kind>` — the name used by sinks' `events` filters.
    pub fn filter_name(&self) -> String {
        format!("call.{}", self.data.kind)
    }
}

/// An entry of a sink's `events` list: `call.status`, `call.status.completed`, `call.analysis`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter {
    kind: EventKind,
    status: Option<String>,
}

impl EventFilter {
    pub fn parse(s: &str) -> Result<EventFilter, String> {
        let expected = "expected call.<kind> or call.<kind>.<status> \
                        (kinds: started, status, recording, analysis, processed, other)";
        let mut parts = s.splitn(3, '.');
        if parts.next() != Some("call") {
            return Err(format!("{s:?}: {expected}"));
        }
        let kind = parts
            .next()
            .and_then(EventKind::parse)
            .ok_or_else(|| format!("{s:?}: {expected}"))?;
        let status = match parts.next() {
            Some("") => return Err(format!("{s:?}: empty status")),
            Some(st) => Some(st.to_string()),
            None => None,
        };
        Ok(EventFilter { kind, status })
    }

    pub fn matches(&self, event: &Event) -> bool {
        self.kind == event.data.kind
            && match &self.status {
                None => true,
                Some(s) => event.data.status.as_deref() == Some(s.as_str()),
            }
    }
}

/// The body as a JSON object: both webhook families send one.
pub(crate) fn as_object(body: &Value) -> Result<&Map<String, Value>, InvalidPayload> {
    body.as_object()
        .ok_or_else(|| InvalidPayload::new("(body)", "expected a JSON object"))
}

/// Turns any supported webhook payload into the canonical event. The payload's shape decides
/// the family.
pub fn normalize(
    body: &Value,
    params: BTreeMap<String, String>,
    settings: &EventSettings,
    time: String,
) -> Result<Event, InvalidPayload> {
    let top = as_object(body)?;
    if top.contains_key("event_type") {
        normalize_agent_event(body, params, settings, time)
    } else if top.contains_key("status") || top.contains_key("data") {
        normalize_callback(body, params, settings, time)
    } else {
        Err(InvalidPayload::new(
            "(body)",
            "expected a call callback ({\"status\": \"success\", \"data\": {...}}) \
             or an agent event ({\"event_type\": ..., \"call_id\": ...})",
        ))
    }
}

/// The JSON Schema of the event, as committed in `docs/schema/call-event.v1.json`.
pub fn json_schema() -> Value {
    let schema = schemars::schema_for!(Event);
    serde_json::to_value(schema).unwrap_or(Value::Null)
}

/// The schema as pretty JSON with a trailing newline, exactly as committed.
pub fn json_schema_pretty() -> String {
    let mut s = serde_json::to_string_pretty(&json_schema()).unwrap_or_default();
    s.push('\n');
    s
}

#[cfg(test)]
pub mod test_support {
    use super::*;

    pub fn sample_event() -> Event {
        let body: Value =
            serde_json::from_str(include_str!("../../tests/fixtures/curl-test.payload.json"))
                .expect("fixture parses");
        normalize_callback(
            &body,
            BTreeMap::new(),
            &EventSettings::default(),
            "2026-01-01T00:00:00Z".into(),
        )
        .expect("fixture normalises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_kind_and_status() {
        let ev = test_support::sample_event();
        assert!(EventFilter::parse("call.status").unwrap().matches(&ev));
        assert!(EventFilter::parse("call.status.completed")
            .unwrap()
            .matches(&ev));
        assert!(!EventFilter::parse("call.status.failed")
            .unwrap()
            .matches(&ev));
        assert!(!EventFilter::parse("call.analysis").unwrap().matches(&ev));
        for bad in ["status", "call", "call.nope", "call.status.", "x.status"] {
            assert!(EventFilter::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn committed_schema_is_current() {
        let committed = include_str!("../../docs/schema/call-event.v1.json");
        assert!(
            committed == json_schema_pretty(),
            "docs/schema/call-event.v1.json is stale: run `cargo run -- schema > docs/schema/call-event.v1.json`"
        );
    }
}
