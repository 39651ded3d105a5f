//! The first webhook family: the per-call `callback_url` (`{"status", "data", "message"}`).
//!
//! Strict where the contract is clear (the envelope, `data.call_id`, field types) and lenient
//! where the sender may evolve: unknown statuses are forwarded unchanged and unknown fields are
//! kept in `data.extra`, because a 4xx makes the sender drop the event for good.

use std::collections::BTreeMap;

use serde_json::Value;

use super::fields::{type_name, Fields, CODE, IDENT};
use super::EventSettings;
use super::{envelope, id, AnalysisSource, CallData, Event, EventKind, Family, InvalidPayload};

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
    let top = super::as_object(body)?;

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
        Some(Value::Object(d)) => Fields::new(d, "data."),
        Some(other) => {
            return Err(InvalidPayload::new(
                "data",
                format!("expected an object, got {}", type_name(other)),
            ))
        }
        None => return Err(InvalidPayload::new("data", "required")),
    };
    let top = Fields::new(top, "");

    let call_id = data.id("call_id")?;
    let analysis = data.object("analysis")?;
    let kind = if analysis.is_some() {
        EventKind::Analysis
    } else {
        EventKind::Status
    };
    let status = data.shaped("status", CODE)?;
    if kind == EventKind::Status && status.is_none() {
        return Err(InvalidPayload::new(
            "data.status",
            "required on a status webhook (a webhook without data.analysis)",
        ));
    }

    let mut d = CallData::new(kind, Family::Callback, call_id);
    d.analysis_source = analysis.as_ref().map(|_| AnalysisSource::Callback);
    d.analysis = analysis;
    d.status = status;
    d.retry = data.count("retry")?;
    d.direction = data.shaped("call_direction", CODE)?;
    d.duration_seconds = data.seconds("call_duration")?;
    d.recording_url = data.string("recording_url")?;
    d.agent_id = data.shaped("agent_id", IDENT)?;
    d.from_number = data.string("from_number")?;
    d.to_number = data.string("to_number")?;
    d.custom_args = data.object("custom_args_values")?;
    d.set_transcript(data.map.get("transcript"), "data.transcript")?;
    // Some senders put `message` inside data; the top-level one wins.
    d.message = match top.string("message")? {
        Some(m) => Some(m),
        None => data.string("message")?,
    };
    d.callback_params = params;
    d.extra = data.rest(&KNOWN_DATA_FIELDS);
    let envelope_extra = top.rest(&["status", "data", "message"]);
    if !envelope_extra.is_empty() {
        d.extra
            .insert("_envelope".into(), Value::Object(envelope_extra));
    }

    let retry_part = d.retry.unwrap_or(0).to_string();
    let event_id = id::derive(&[
        "callback",
        &d.call_id,
        kind.as_str(),
        d.status.as_deref().unwrap_or(""),
        &retry_part,
    ]);
    Ok(envelope(event_id, d, settings, time))
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
