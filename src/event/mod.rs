//! The canonical event: one CloudEvents 1.0 envelope, versioned (`.v1`), whatever the sender.
//!
//! Consumers see the same shape for every webhook: the envelope attributes (`id`, `type`,
//! `subject` = call id, ...) and `data`, the call record normalised from the sender's payload.
//! The JSON Schema in `docs/schema/call-event.v1.json` is generated from these types.

pub mod callback;
pub mod id;

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use callback::normalize_callback;

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
    /// Extension (CloudEvents distributed tracing): W3C trace context of the publish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    pub data: CallData,
}

/// What happened to the call. Part of the CloudEvents `type` and of routing templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The call's status changed (`data.status`).
    Status,
    /// The call's analysis is ready (`data.analysis`).
    Analysis,
}

impl EventKind {
    pub const ALL: [EventKind; 2] = [EventKind::Status, EventKind::Analysis];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Status => "status",
            EventKind::Analysis => "analysis",
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

/// The call statuses the sender documents. Others are forwarded unchanged (and counted).
pub const KNOWN_STATUSES: [&str; 6] = [
    "registered",
    "ongoing",
    "completed",
    "failed",
    "error",
    "cancelled",
];

/// The normalised call record. Every field is always present (null when the sender omitted it),
/// so consumers can rely on the shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CallData {
    /// `status` or `analysis`; the same as the kind in `type`.
    pub kind: EventKind,
    pub call_id: String,
    /// `inbound`, `outbound`, ... as the sender says (`call_direction`).
    pub direction: Option<String>,
    /// The call status (`registered`, `ongoing`, `completed`, `failed`, `error`, `cancelled`,
    /// or any newer status the sender adds, unchanged).
    pub status: Option<String>,
    /// Call duration in seconds (`call_duration`).
    pub duration_seconds: Option<f64>,
    pub recording_url: Option<String>,
    /// The transcript exactly as sent: a string, or (second webhook family) an array of turns.
    pub transcript: Option<Value>,
    pub agent_id: Option<String>,
    /// Which attempt of the call this is (`retry`).
    pub retry: Option<u64>,
    pub from_number: Option<String>,
    pub to_number: Option<String>,
    /// The customer's own `custom_args_values` from the call request.
    pub custom_args: Option<Map<String, Value>>,
    /// The analysis results of an analysis webhook; null on status events.
    pub analysis: Option<Map<String, Value>>,
    /// Query parameters of the webhook URL (the sender's `callback_args.params`).
    pub callback_params: BTreeMap<String, String>,
    /// The sender's descriptive `message`.
    pub message: Option<String>,
    /// Fields the sender sent that this version does not know, kept verbatim: unknown `data.*`
    /// fields by name, unknown top-level fields under `_envelope`.
    pub extra: Map<String, Value>,
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
        let expected = "expected call.<kind> or call.<kind>.<status> (kinds: status, analysis)";
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

/// Turns any supported webhook payload into the canonical event. The payload's shape decides
/// the family.
pub fn normalize(
    body: &Value,
    params: BTreeMap<String, String>,
    settings: &crate::config::EventSettings,
    time: String,
) -> Result<Event, callback::InvalidPayload> {
    normalize_callback(body, params, settings, time)
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
    use crate::config::EventSettings;

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
