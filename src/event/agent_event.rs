//! The second webhook family: agent event subscriptions (flat JSON with `event_type`).
//!
//! | `event_type`                  | kind        | notes                                   |
//! |-------------------------------|-------------|-----------------------------------------|
//! | `call_started`                | `started`   | `sub_status`, version slug/description  |
//! | `call_completed`              | `status`    | `status` (completed, failed, retry)     |
//! | `recording_completed`         | `recording` | `recording_url`, `recording_duration`   |
//! | `platform_analysis_completed` | `analysis`  | `analysis_source: platform`             |
//! | `client_analysis_completed`   | `analysis`  | `analysis_source: client`               |
//! | `all_processing_completed`    | `processed` | the whole consolidated record           |
//! | anything else                 | `other`     | forwarded unchanged, counted            |
//!
//! The event id is derived from `call_id` + `event_type` (the platform's own idempotency key for
//! this family) + `status` + `retry_count`: the platform's retries (10 s, 1 min, 2 min) repeat
//! all four and map onto one event, while a second `call_completed` for the same call (status
//! `retry`, then `completed`; another `retry_count`) is a new event, not a "duplicate".

use std::collections::BTreeMap;

use serde_json::Value;

use super::fields::{type_name, Fields, CODE, IDENT};
use super::EventSettings;
use super::{envelope, id, AnalysisSource, CallData, Event, EventKind, Family, InvalidPayload};

/// The event types the platform documents.
pub const KNOWN_EVENT_TYPES: [&str; 6] = [
    "call_started",
    "call_completed",
    "recording_completed",
    "platform_analysis_completed",
    "client_analysis_completed",
    "all_processing_completed",
];

/// Fields that map onto named fields of the canonical record.
const KNOWN_FIELDS: [&str; 29] = [
    "event_type",
    "call_id",
    "call_sid",
    "agent_id",
    "workspace_id",
    "custom_args_values",
    "agent_name",
    "version_id",
    "call_cost",
    "overall_latency_seconds",
    "first_utterance_seconds",
    "tool_call_logs",
    "sub_status",
    "version_slug",
    "version_description",
    "call_duration",
    "call_type",
    "status",
    "to_number",
    "from_number",
    "transcript",
    "retry_count",
    "agent_message_count",
    "user_message_count",
    "bulk_list_id",
    "called_on",
    "recording_url",
    "recording_duration",
    "analysis_data",
];

fn kind_of(event_type: &str) -> (EventKind, Option<AnalysisSource>) {
    match event_type {
        "call_started" => (EventKind::Started, None),
        "call_completed" => (EventKind::Status, None),
        "recording_completed" => (EventKind::Recording, None),
        "platform_analysis_completed" => (EventKind::Analysis, Some(AnalysisSource::Platform)),
        "client_analysis_completed" => (EventKind::Analysis, Some(AnalysisSource::Client)),
        "all_processing_completed" => (EventKind::Processed, None),
        _ => (EventKind::Other, None),
    }
}

/// Turns an agent event into the canonical event.
pub fn normalize_agent_event(
    body: &Value,
    params: BTreeMap<String, String>,
    settings: &EventSettings,
    time: String,
) -> Result<Event, InvalidPayload> {
    let map = super::as_object(body)?;
    let f = Fields::new(map, "");
    let event_type = match map.get("event_type") {
        Some(Value::String(s)) if !s.trim().is_empty() => {
            CODE.check(s)
                .map_err(|m| InvalidPayload::new("event_type", m))?;
            s.clone()
        }
        Some(Value::String(_)) => {
            return Err(InvalidPayload::new("event_type", "must not be empty"))
        }
        Some(other) => {
            return Err(InvalidPayload::new(
                "event_type",
                format!("expected a string, got {}", type_name(other)),
            ))
        }
        None => return Err(InvalidPayload::new("event_type", "required")),
    };
    let call_id = f.id("call_id")?;
    let (kind, analysis_source) = kind_of(&event_type);

    let mut d = CallData::new(kind, Family::AgentEvent, call_id);
    d.status = f.shaped("status", CODE)?;
    if kind == EventKind::Status && d.status.is_none() {
        return Err(InvalidPayload::new("status", "required on call_completed"));
    }
    d.event_type = Some(event_type.clone());
    d.call_sid = f.string("call_sid")?;
    d.agent_id = f.shaped("agent_id", IDENT)?;
    d.workspace_id = f.string("workspace_id")?;
    d.custom_args = f.object("custom_args_values")?;
    d.agent_name = f.string("agent_name")?;
    d.version_id = f.string("version_id")?;
    d.call_cost = f.number("call_cost")?;
    d.overall_latency_seconds = f.seconds("overall_latency_seconds")?;
    d.first_utterance_seconds = f.seconds("first_utterance_seconds")?;
    d.tool_call_logs = f.array("tool_call_logs")?;
    d.sub_status = f.string("sub_status")?;
    d.version_slug = f.string("version_slug")?;
    d.version_description = f.string("version_description")?;
    d.duration_seconds = f.seconds("call_duration")?;
    d.direction = f.shaped("call_type", CODE)?;
    d.to_number = f.string("to_number")?;
    d.from_number = f.string("from_number")?;
    d.set_transcript(map.get("transcript"), "transcript")?;
    d.retry = f.count("retry_count")?;
    d.agent_message_count = f.count("agent_message_count")?;
    d.user_message_count = f.count("user_message_count")?;
    d.bulk_list_id = f.string("bulk_list_id")?;
    d.called_at = f.string("called_on")?;
    d.recording_url = f.string("recording_url")?;
    d.recording_duration_seconds = f.seconds("recording_duration")?;
    d.analysis = f.object("analysis_data")?;
    d.analysis_source = analysis_source;
    d.callback_params = params;
    d.extra = f.rest(&KNOWN_FIELDS);

    let retry = d.retry.unwrap_or(0).to_string();
    let status = d.status.as_deref().unwrap_or("");
    let event_id = id::derive(&["agent_event", &d.call_id, &event_type, status, &retry]);
    Ok(envelope(event_id, d, settings, time))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn norm(body: Value) -> Result<Event, InvalidPayload> {
        normalize_agent_event(
            &body,
            BTreeMap::new(),
            &EventSettings::default(),
            "t".into(),
        )
    }

    #[test]
    fn each_event_type_maps_to_its_kind() {
        let expected = [
            ("call_started", "started", None),
            ("call_completed", "status", None),
            ("recording_completed", "recording", None),
            (
                "platform_analysis_completed",
                "analysis",
                Some(AnalysisSource::Platform),
            ),
            (
                "client_analysis_completed",
                "analysis",
                Some(AnalysisSource::Client),
            ),
            ("all_processing_completed", "processed", None),
            ("call_transferred", "other", None),
        ];
        let mut ids = std::collections::HashSet::new();
        for (et, kind, source) in expected {
            let ev =
                norm(json!({"event_type": et, "call_id": "c1", "status": "completed"})).unwrap();
            assert_eq!(ev.data.kind.as_str(), kind, "{et}");
            assert_eq!(ev.ty, format!("ai.ringg.call.{kind}.v1"));
            assert_eq!(ev.data.analysis_source, source, "{et}");
            assert_eq!(ev.data.event_type.as_deref(), Some(et));
            assert_eq!(ev.data.family, Family::AgentEvent);
            assert!(ids.insert(ev.id), "one id per event type");
        }
    }

    #[test]
    fn the_id_is_call_id_event_type_status_and_retry_count() {
        let a = norm(json!({"event_type": "call_completed", "call_id": "c1", "status": "completed", "retry_count": 0})).unwrap();
        // the rest of the payload is not part of the key, so a retry with new fields is one event
        let b = norm(json!({"event_type": "call_completed", "call_id": "c1", "status": "completed", "call_cost": 0.2})).unwrap();
        assert_eq!(a.id, b.id, "retry_count absent = 0");
        for other in [
            json!({"event_type": "call_completed", "call_id": "c2", "status": "completed"}),
            json!({"event_type": "call_started", "call_id": "c1", "status": "completed"}),
            // a second call_completed for one call: first `retry`, then `completed`
            json!({"event_type": "call_completed", "call_id": "c1", "status": "retry"}),
            json!({"event_type": "call_completed", "call_id": "c1", "status": "completed", "retry_count": 1}),
        ] {
            assert_ne!(a.id, norm(other.clone()).unwrap().id, "{other}");
        }
    }

    #[test]
    fn pinned_agent_event_id_never_changes() {
        // Computed independently from the derivation in docs/events.md. Changing the derivation
        // re-publishes every in-window retry: see docs/events.md.
        let ev = norm(json!({"event_type": "call_completed", "call_id": "c1", "status": "completed", "retry_count": 2})).unwrap();
        assert_eq!(ev.id, "1797182e-344e-808a-8a4d-332bb4b77b0c");
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (json!({"event_type": 3, "call_id": "c"}), "event_type"),
            (json!({"event_type": "", "call_id": "c"}), "event_type"),
            (json!({"event_type": "call_started"}), "call_id"),
            (
                json!({"event_type": "call_started", "call_id": ""}),
                "call_id",
            ),
            (
                json!({"event_type": "call_completed", "call_id": "c"}),
                "status",
            ),
            (
                json!({"event_type": "call_completed", "call_id": "c", "status": "completed", "retry_count": -1}),
                "retry_count",
            ),
            (
                json!({"event_type": "call_completed", "call_id": "c", "status": "completed", "transcript": [{"bot": 1}]}),
                "transcript[0]",
            ),
            (
                json!({"event_type": "recording_completed", "call_id": "c", "recording_duration": "long"}),
                "recording_duration",
            ),
            (
                json!({"event_type": "platform_analysis_completed", "call_id": "c", "analysis_data": []}),
                "analysis_data",
            ),
            (
                json!({"event_type": "call_started", "call_id": "c", "tool_call_logs": {}}),
                "tool_call_logs",
            ),
            (
                json!({"event_type": "call_started", "call_id": "c", "call_cost": "1.0"}),
                "call_cost",
            ),
        ];
        for (body, field) in cases {
            let e = norm(body.clone()).expect_err(&body.to_string());
            assert_eq!(e.field, field, "{body}: {e}");
        }
    }

    #[test]
    fn nulls_and_unknown_fields() {
        let ev = norm(
            json!({"event_type": "call_started", "call_id": "c", "call_cost": null,
                             "sub_status": "ACCEPTED", "campaign": {"id": 7}}),
        )
        .unwrap();
        assert_eq!(ev.data.call_cost, None);
        assert_eq!(ev.data.sub_status.as_deref(), Some("ACCEPTED"));
        assert_eq!(ev.data.status, None);
        assert_eq!(ev.callstatus, None);
        assert_eq!(ev.data.extra["campaign"], json!({"id": 7}));
    }
}
