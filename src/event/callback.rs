//! The first webhook family: the per-call `callback_url` (`{"status", "data", "message"}`).
//!
//! Strict where the contract is clear (the envelope, `data.call_id`, field types) and lenient
//! where the sender may evolve: unknown statuses are forwarded unchanged and unknown fields are
//! kept in `data.extra`, because a 4xx makes the sender drop the event for good.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{id, CallData, Event, EventKind, SPEC_VERSION};
use crate::config::EventSettings;

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

/// Fields of `data` that map onto named fields of the canonical record.
const KNOWN_DATA_FIELDS: [&str; 13] = [
    "call_id",
    "call_direction",
    "status",
    "call_duration",
    "recording_url",
    "transcript",
    "agent_id",
    "retry",
    "from_number",
    "to_number",
    "custom_args_values",
    "analysis",
    "message",
];

/// Turns a callback-family payload into the canonical event.
///
/// `params` are the webhook URL's query parameters; `time` is the receive time (RFC 3339).
pub fn normalize_callback(
    body: &Value,
    params: BTreeMap<String, String>,
    settings: &EventSettings,
    time: String,
) -> Result<Event, InvalidPayload> {
    let top = body
        .as_object()
        .ok_or_else(|| InvalidPayload::new("(body)", "expected a JSON object"))?;

    match top.get("status") {
        Some(Value::String(s)) if s == "success" => {}
        Some(Value::String(s)) => {
            return Err(InvalidPayload::new(
                "status",
                format!("expected \"success\", got {s:?}"),
            ))
        }
        Some(other) => {
            return Err(InvalidPayload::new(
                "status",
                format!("expected the string \"success\", got {}", type_name(other)),
            ))
        }
        None => {
            return Err(InvalidPayload::new(
                "status",
                "required (expected \"success\")",
            ))
        }
    }
    let data = match top.get("data") {
        Some(Value::Object(d)) => d,
        Some(other) => {
            return Err(InvalidPayload::new(
                "data",
                format!("expected an object, got {}", type_name(other)),
            ))
        }
        None => return Err(InvalidPayload::new("data", "required")),
    };

    let call_id = match data.get("call_id") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.clone(),
        Some(Value::String(_)) => {
            return Err(InvalidPayload::new("data.call_id", "must not be empty"))
        }
        Some(other) => {
            return Err(InvalidPayload::new(
                "data.call_id",
                format!("expected a string, got {}", type_name(other)),
            ))
        }
        None => return Err(InvalidPayload::new("data.call_id", "required")),
    };

    let analysis = opt_object(data, "analysis")?;
    let kind = if analysis.is_some() {
        EventKind::Analysis
    } else {
        EventKind::Status
    };
    let status = opt_string(data, "status")?;
    if kind == EventKind::Status && status.is_none() {
        return Err(InvalidPayload::new(
            "data.status",
            "required on a status webhook (a webhook without data.analysis)",
        ));
    }
    let retry = opt_count(data, "retry")?;
    let transcript = match data.get("transcript") {
        None | Some(Value::Null) => None,
        Some(v @ (Value::String(_) | Value::Array(_))) => Some(v.clone()),
        Some(other) => {
            return Err(InvalidPayload::new(
                "data.transcript",
                format!(
                    "expected a string or an array of turns, got {}",
                    type_name(other)
                ),
            ))
        }
    };
    let message = match top.get("message") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(InvalidPayload::new(
                "message",
                format!("expected a string, got {}", type_name(other)),
            ))
        }
    };

    let mut extra: Map<String, Value> = data
        .iter()
        .filter(|(k, _)| !KNOWN_DATA_FIELDS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let envelope_extra: Map<String, Value> = top
        .iter()
        .filter(|(k, _)| !["status", "data", "message"].contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !envelope_extra.is_empty() {
        extra.insert("_envelope".into(), Value::Object(envelope_extra));
    }

    let retry_part = retry.unwrap_or(0).to_string();
    let event_id = id::derive(&[
        "callback",
        &call_id,
        kind.as_str(),
        status.as_deref().unwrap_or(""),
        &retry_part,
    ]);

    let data = CallData {
        kind,
        call_id: call_id.clone(),
        direction: opt_string(data, "call_direction")?,
        status: status.clone(),
        duration_seconds: opt_seconds(data, "call_duration")?,
        recording_url: opt_string(data, "recording_url")?,
        transcript,
        agent_id: opt_string(data, "agent_id")?,
        retry,
        from_number: opt_string(data, "from_number")?,
        to_number: opt_string(data, "to_number")?,
        custom_args: opt_object(data, "custom_args_values")?,
        analysis,
        callback_params: params,
        message: match data.get("message") {
            // Some senders put `message` inside data; the top-level one wins.
            Some(Value::String(s)) if message.is_none() => Some(s.clone()),
            _ => message,
        },
        extra,
    };

    Ok(Event {
        specversion: SPEC_VERSION.into(),
        id: event_id,
        source: settings.source.clone(),
        ty: event_type(settings, kind),
        subject: call_id.clone(),
        time,
        datacontenttype: "application/json".into(),
        callstatus: status,
        partitionkey: call_id,
        traceparent: None,
        data,
    })
}

/// `<prefix>.call.<kind>.v1`
pub fn event_type(settings: &EventSettings, kind: EventKind) -> String {
    format!(
        "{}.call.{}.{}",
        settings.type_prefix,
        kind,
        super::SCHEMA_VERSION
    )
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn opt_string(
    data: &Map<String, Value>,
    key: &str,
) -> Result<Option<String>, InvalidPayload> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(InvalidPayload::new(
            format!("data.{key}"),
            format!("expected a string, got {}", type_name(other)),
        )),
    }
}

pub(crate) fn opt_object(
    data: &Map<String, Value>,
    key: &str,
) -> Result<Option<Map<String, Value>>, InvalidPayload> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o.clone())),
        Some(other) => Err(InvalidPayload::new(
            format!("data.{key}"),
            format!("expected an object, got {}", type_name(other)),
        )),
    }
}

/// A non-negative number of seconds (a float).
pub(crate) fn opt_seconds(
    data: &Map<String, Value>,
    key: &str,
) -> Result<Option<f64>, InvalidPayload> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f)),
            _ => Err(InvalidPayload::new(
                format!("data.{key}"),
                format!("expected a non-negative number of seconds, got {n}"),
            )),
        },
        Some(other) => Err(InvalidPayload::new(
            format!("data.{key}"),
            format!("expected a number, got {}", type_name(other)),
        )),
    }
}

/// A non-negative whole number (`1` and `1.0` both count; `1.5`, `-1` and 1e30 do not).
pub(crate) fn opt_count(
    data: &Map<String, Value>,
    key: &str,
) -> Result<Option<u64>, InvalidPayload> {
    match data.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                return Ok(Some(u));
            }
            match n.as_f64() {
                Some(f) if f >= 0.0 && f.fract() == 0.0 && f <= u32::MAX as f64 => {
                    Ok(Some(f as u64))
                }
                _ => Err(InvalidPayload::new(
                    format!("data.{key}"),
                    format!("expected a non-negative whole number, got {n}"),
                )),
            }
        }
        Some(other) => Err(InvalidPayload::new(
            format!("data.{key}"),
            format!("expected a number, got {}", type_name(other)),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn norm(body: Value) -> Result<Event, InvalidPayload> {
        normalize_callback(
            &body,
            BTreeMap::new(),
            &EventSettings::default(),
            "t".into(),
        )
    }

    fn status_body(status: &str) -> Value {
        json!({"status": "success", "data": {"call_id": "c-1", "status": status, "retry": 0}})
    }

    #[test]
    fn every_documented_status_and_an_unknown_one() {
        let mut ids = std::collections::HashSet::new();
        for st in crate::event::KNOWN_STATUSES
            .iter()
            .chain(&["voicemail_detected"])
        {
            let ev = norm(status_body(st)).unwrap();
            assert_eq!(ev.data.kind, EventKind::Status);
            assert_eq!(ev.data.status.as_deref(), Some(*st));
            assert_eq!(ev.callstatus.as_deref(), Some(*st));
            assert_eq!(ev.ty, "ai.ringg.call.status.v1");
            assert_eq!(ev.subject, "c-1");
            assert_eq!(ev.partitionkey, "c-1");
            assert!(ids.insert(ev.id), "ids differ per status");
        }
    }

    #[test]
    fn analysis_webhook_is_an_analysis_event() {
        let ev = norm(json!({"status": "success", "data": {
            "call_id": "c-1", "status": "completed", "analysis": {"summary": "ok"}}}))
        .unwrap();
        assert_eq!(ev.data.kind, EventKind::Analysis);
        assert_eq!(ev.ty, "ai.ringg.call.analysis.v1");
        assert_eq!(ev.data.analysis.unwrap()["summary"], "ok");
        let status_ev = norm(status_body("completed")).unwrap();
        assert_ne!(
            ev.id, status_ev.id,
            "analysis and status of one call differ"
        );
        // an analysis webhook need not carry a status
        let ev =
            norm(json!({"status": "success", "data": {"call_id": "c-1", "analysis": {}}})).unwrap();
        assert_eq!(ev.data.status, None);
    }

    #[test]
    fn retry_changes_the_id_and_redelivery_keeps_it() {
        let a = norm(status_body("completed")).unwrap();
        let again = norm(status_body("completed")).unwrap();
        assert_eq!(a.id, again.id);
        let mut b = status_body("completed");
        b["data"]["retry"] = json!(1);
        assert_ne!(a.id, norm(b).unwrap().id);
    }

    #[test]
    fn missing_and_mistyped_fields_name_the_field() {
        let cases = [
            (json!([]), "(body)"),
            (json!({"data": {"call_id": "c"}}), "status"),
            (
                json!({"status": "error", "data": {"call_id": "c"}}),
                "status",
            ),
            (json!({"status": 1, "data": {"call_id": "c"}}), "status"),
            (json!({"status": "success"}), "data"),
            (json!({"status": "success", "data": "x"}), "data"),
            (json!({"status": "success", "data": {}}), "data.call_id"),
            (
                json!({"status": "success", "data": {"call_id": ""}}),
                "data.call_id",
            ),
            (
                json!({"status": "success", "data": {"call_id": "  "}}),
                "data.call_id",
            ),
            (
                json!({"status": "success", "data": {"call_id": 7}}),
                "data.call_id",
            ),
            (
                json!({"status": "success", "data": {"call_id": "c"}}),
                "data.status",
            ),
            (
                json!({"status": "success", "data": {"call_id": "c", "status": 3}}),
                "data.status",
            ),
            (
                json!({"status": "success", "data": {"call_id": "c", "status": "ongoing", "call_duration": "12"}}),
                "data.call_duration",
            ),
            (
                json!({"status": "success", "data": {"call_id": "c", "status": "ongoing", "call_duration": -1}}),
                "data.call_duration",
            ),
            (
                json!({"status": "success", "data": {"call_id": "c", "status": "ongoing", "retry": 1.5}}),
                "data.retry",
            ),
            (
                json!({"status": "success", "data": {"call_id": "c", "status": "ongoing", "retry": -1}}),
                "data.retry",
            ),
            (
                json!({"status": "success", "data": {"call_id": "c", "status": "ongoing", "retry": 1e30}}),
                "data.retry",
            ),
            (
                json!({"status": "success", "data": {"call_id": "c", "status": "ongoing", "custom_args_values": []}}),
                "data.custom_args_values",
            ),
            (
                json!({"status": "success", "data": {"call_id": "c", "analysis": "good"}}),
                "data.analysis",
            ),
            (
                json!({"status": "success", "data": {"call_id": "c", "status": "ongoing", "transcript": 5}}),
                "data.transcript",
            ),
            (
                json!({"status": "success", "data": {"call_id": "c", "status": "ongoing"}, "message": {}}),
                "message",
            ),
        ];
        for (body, field) in cases {
            let err = norm(body.clone()).expect_err(&body.to_string());
            assert_eq!(err.field, field, "{body}: {err}");
        }
    }

    #[test]
    fn nulls_are_absent_and_whole_floats_count() {
        let ev = norm(json!({"status": "success", "data": {
            "call_id": "c", "status": "ongoing", "retry": 2.0, "call_duration": null,
            "call_direction": null, "transcript": null, "custom_args_values": null}}))
        .unwrap();
        assert_eq!(ev.data.retry, Some(2));
        assert_eq!(ev.data.duration_seconds, None);
        assert_eq!(ev.data.direction, None);
    }

    #[test]
    fn unicode_and_huge_numbers_survive() {
        let ev = norm(json!({"status": "success", "message": "Détails 📞", "data": {
            "call_id": "通话-१२३-😀", "status": "completed", "call_duration": 1.7976931348623157e308,
            "retry": 18446744073709551615u64, "transcript": "नमस्ते, this is Ava — ça va?",
            "custom_args_values": {"name": "Zoë", "big": 123456789012345678901234567890.0}}}))
        .unwrap();
        assert_eq!(ev.subject, "通话-१२३-😀");
        assert_eq!(ev.data.retry, Some(u64::MAX));
        assert_eq!(ev.data.duration_seconds, Some(f64::MAX));
        assert_eq!(ev.data.message.as_deref(), Some("Détails 📞"));
        assert_eq!(
            ev.data.transcript,
            Some(json!("नमस्ते, this is Ava — ça va?"))
        );
        let round: Event = serde_json::from_str(&serde_json::to_string(&ev).unwrap()).unwrap();
        assert_eq!(round, ev);
    }

    #[test]
    fn unknown_fields_are_kept() {
        let ev = norm(json!({"status": "success", "trace": "x", "data": {
            "call_id": "c", "status": "completed", "sentiment_score": 0.9, "tags": ["a"]}}))
        .unwrap();
        assert_eq!(ev.data.extra["sentiment_score"], json!(0.9));
        assert_eq!(ev.data.extra["tags"], json!(["a"]));
        assert_eq!(ev.data.extra["_envelope"], json!({"trace": "x"}));
    }

    #[test]
    fn query_params_are_kept() {
        let params = BTreeMap::from([("source".to_string(), "api".to_string())]);
        let ev = normalize_callback(
            &status_body("ongoing"),
            params,
            &EventSettings::default(),
            "t".into(),
        )
        .unwrap();
        assert_eq!(ev.data.callback_params["source"], "api");
    }
}
