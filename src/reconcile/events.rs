//! The events a call's webhooks would have carried, rebuilt from the platform's call API.
//!
//! Ids are derived exactly as the webhook normalisers derive them (`crate::event::id`), from
//! the call id, the kind (or agent `event_type`), the status and the retry count. The API gives
//! the first three; it documents no retry count, so one is read from the details (`retry` or
//! `retry_count`) when the platform sends it and is 0 otherwise — a call the platform retried
//! then gets an id no webhook had (docs/reconcile.md lists every such case).
//!
//! Each expected event also carries the ids under which a webhook of *either* family would have
//! delivered the same fact, so a deployment that receives both families never backfills what
//! the other family already delivered.

use serde_json::{Map, Value};

use crate::event::binding::ORIGIN_RECONCILE;
use crate::event::{
    envelope, id, AnalysisSource, CallData, Event, EventKind, EventSettings, Family,
};

/// Statuses after which a call attempt is over: the ones whose webhook reconciliation checks.
pub const TERMINAL_STATUSES: [&str; 5] = ["completed", "failed", "error", "cancelled", "retry"];

/// What reconciliation knows of one call: its history row, and its details once fetched.
#[derive(Debug, Clone, Copy)]
pub struct CallFacts<'a> {
    pub call_id: &'a str,
    pub status: &'a str,
    pub row: &'a Map<String, Value>,
    pub details: Option<&'a Map<String, Value>>,
}

impl CallFacts<'_> {
    /// The attempt number, when the platform sends one; 0 (the first attempt) otherwise.
    pub fn retry(&self) -> u64 {
        let from = |m: &Map<String, Value>| {
            ["retry", "retry_count"]
                .iter()
                .find_map(|k| m.get(*k).and_then(Value::as_u64))
        };
        self.details
            .and_then(from)
            .or_else(|| from(self.row))
            .unwrap_or(0)
    }

    fn str(&self, details_key: &str, row_key: &str) -> Option<String> {
        let get = |m: &Map<String, Value>, k: &str| {
            m.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        self.details
            .and_then(|d| get(d, details_key))
            .or_else(|| get(self.row, row_key))
    }

    fn number(&self, key: &str) -> Option<f64> {
        self.details
            .and_then(|d| d.get(key))
            .or_else(|| self.row.get(key))
            .and_then(Value::as_f64)
            .filter(|n| n.is_finite() && *n >= 0.0)
    }

    /// An analysis object the details carry (`platform_analysis` / `client_analysis`).
    pub fn analysis(&self, key: &str) -> Option<&Map<String, Value>> {
        self.details?.get(key)?.as_object()
    }
}

/// One event reconciliation would publish, and every id under which a webhook would have
/// delivered the same fact.
#[derive(Debug, Clone)]
pub struct Expected {
    pub event: Event,
    /// Includes `event.id`.
    pub delivered_as: Vec<String>,
}

fn callback_id(call: &str, kind: &str, status: &str, retry: &str) -> String {
    id::derive(&["callback", call, kind, status, retry])
}

fn agent_id(call: &str, event_type: &str, status: &str, retry: &str) -> String {
    id::derive(&["agent_event", call, event_type, status, retry])
}

/// Every id under which a webhook delivered this call's terminal status.
pub fn status_ids(call: &str, status: &str, retry: u64) -> Vec<String> {
    let r = retry.to_string();
    vec![
        callback_id(call, "status", status, &r),
        agent_id(call, "call_completed", status, &r),
    ]
}

/// Every id under which a webhook delivered an analysis of this call (either family, with or
/// without the status the analysis may repeat).
pub fn analysis_ids(call: &str, status: &str, retry: u64) -> Vec<String> {
    let r = retry.to_string();
    let mut ids = Vec::with_capacity(6);
    for st in [status, ""] {
        ids.push(callback_id(call, "analysis", st, &r));
        ids.push(agent_id(call, "platform_analysis_completed", st, &r));
        ids.push(agent_id(call, "client_analysis_completed", st, &r));
    }
    ids
}

/// The call record as the webhook would have carried it, as far as the API tells.
fn data(facts: &CallFacts<'_>, kind: EventKind, family: Family) -> CallData {
    let mut d = CallData::new(kind, family, facts.call_id.to_string());
    d.status = Some(facts.status.to_string());
    d.retry = Some(facts.retry());
    d.direction = facts.str("call_direction", "call_type");
    d.sub_status = facts.str("call_sub_status", "call_sub_status");
    d.from_number = facts.str("from_number", "inbound_from");
    d.to_number = facts.str("to_number", "to_number");
    d.agent_id = facts.str("agent_id", "agent_id").or_else(|| {
        facts
            .row
            .get("agent")
            .and_then(|a| a.get("id"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    d.agent_name = facts
        .row
        .get("agent")
        .and_then(|a| a.get("agent_name"))
        .and_then(Value::as_str)
        .map(str::to_string);
    d.recording_url = facts.str("recording_url", "audio_recording");
    d.duration_seconds = facts.number("call_duration");
    d.call_cost = facts.number("call_cost");
    d.called_at = facts.str("initiation_time", "call_attempt_time");
    d.bulk_list_id = facts.str("bulk_list_id", "bulk_list_id");
    // Despite its name, `transcription_url` is the transcript (turns keyed by speaker); the
    // history row has a plain `transcript`.
    let transcript = facts
        .details
        .and_then(|m| m.get("transcription_url"))
        .filter(|v| !v.is_null())
        .or_else(|| facts.row.get("transcript"));
    if let Some(t) = transcript {
        if d.set_transcript(Some(t), "transcription_url").is_err() {
            // A shape the normaliser does not know: kept verbatim, not lost.
            d.extra.insert("transcription_url".into(), t.clone());
        }
    }
    const MAPPED: [&str; 22] = [
        "id",
        "call_status",
        "status",
        "call_direction",
        "call_type",
        "call_sub_status",
        "from_number",
        "inbound_from",
        "to_number",
        "agent_id",
        "agent",
        "recording_url",
        "audio_recording",
        "call_duration",
        "call_cost",
        "initiation_time",
        "call_attempt_time",
        "bulk_list_id",
        "transcription_url",
        "transcript",
        "platform_analysis",
        "client_analysis",
    ];
    let rest = facts.details.unwrap_or(facts.row);
    for (k, v) in rest {
        if !MAPPED.contains(&k.as_str()) && !v.is_null() {
            d.extra.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    if family == Family::AgentEvent {
        d.event_type = Some(
            match kind {
                EventKind::Status => "call_completed",
                _ => "",
            }
            .to_string(),
        );
    }
    d
}

fn finish(id: String, data: CallData, settings: &EventSettings, time: &str) -> Event {
    let mut ev = envelope(id, data, settings, time.to_string());
    ev.origin = Some(ORIGIN_RECONCILE.to_string());
    ev
}

/// The terminal status event of the call, in `family`'s shape and with its id.
pub fn status_event(
    facts: &CallFacts<'_>,
    family: Family,
    settings: &EventSettings,
    time: &str,
) -> Expected {
    let retry = facts.retry();
    let delivered_as = status_ids(facts.call_id, facts.status, retry);
    let id = match family {
        Family::Callback => delivered_as[0].clone(),
        Family::AgentEvent => delivered_as[1].clone(),
    };
    let mut d = data(facts, EventKind::Status, family);
    if family == Family::Callback {
        d.message = Some("Call Details".into());
    }
    Expected {
        event: finish(id, d, settings, time),
        delivered_as,
    }
}

/// The analysis events the details hold (none without `platform_analysis`/`client_analysis`):
/// the callback family has one (`data.analysis`: the platform's analysis, the client's under
/// `extra.client_analysis` when both exist, or the client's alone); the agent event family
/// has one per analysis.
pub fn analysis_events(
    facts: &CallFacts<'_>,
    family: Family,
    settings: &EventSettings,
    time: &str,
) -> Vec<Expected> {
    let retry = facts.retry();
    let r = retry.to_string();
    let all = analysis_ids(facts.call_id, facts.status, retry);
    let platform = facts.analysis("platform_analysis");
    let client = facts.analysis("client_analysis");
    match family {
        Family::Callback => {
            let Some(analysis) = platform.or(client) else {
                return Vec::new();
            };
            let mut d = data(facts, EventKind::Analysis, family);
            d.analysis = Some(analysis.clone());
            d.analysis_source = Some(AnalysisSource::Callback);
            d.message = Some("Call Analysis".into());
            if let (Some(_), Some(c)) = (platform, client) {
                d.extra
                    .insert("client_analysis".into(), Value::Object(c.clone()));
            }
            let id = callback_id(facts.call_id, "analysis", facts.status, &r);
            vec![Expected {
                event: finish(id, d, settings, time),
                delivered_as: all,
            }]
        }
        Family::AgentEvent => {
            let mut out = Vec::new();
            for (analysis, source, event_type) in [
                (
                    platform,
                    AnalysisSource::Platform,
                    "platform_analysis_completed",
                ),
                (client, AnalysisSource::Client, "client_analysis_completed"),
            ] {
                let Some(analysis) = analysis else { continue };
                let mut d = data(facts, EventKind::Analysis, family);
                // The agent family's analysis events carry no status.
                d.status = None;
                d.event_type = Some(event_type.into());
                d.analysis = Some(analysis.clone());
                d.analysis_source = Some(source);
                let id = agent_id(facts.call_id, event_type, "", &r);
                // Its own ids, and a callback analysis (which carries both analyses).
                let delivered_as = all
                    .iter()
                    .filter(|i| {
                        **i == id
                            || **i == agent_id(facts.call_id, event_type, facts.status, &r)
                            || **i == callback_id(facts.call_id, "analysis", facts.status, &r)
                            || **i == callback_id(facts.call_id, "analysis", "", &r)
                    })
                    .cloned()
                    .collect();
                out.push(Expected {
                    event: finish(id, d, settings, time),
                    delivered_as,
                });
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    fn details() -> Map<String, Value> {
        obj(json!({
            "id": "c-1", "call_direction": "outbound", "call_status": "completed",
            "call_sub_status": "ACCEPTED", "from_number": "+1987654321", "to_number": "+1234567890",
            "callee_name": "John", "agent_id": "830f767a-397e-4b39-82ff-235cd344e2f9",
            "initiation_time": "2026-11-27T10:00:00Z", "recording_url": "https://r/1.mp3",
            "transcription_url": [{"bot": "Hello"}, {"user": "Hi"}],
            "platform_analysis": {"summary": "ok"}, "client_analysis": {"lead": "hot"}
        }))
    }

    /// The backfilled status event has the id the webhook of each family had (retry 0).
    #[test]
    fn ids_match_what_each_webhook_family_would_have_had() {
        let s = EventSettings::default();
        let row = obj(json!({"id": "c-1", "status": "completed", "call_duration": 12}));
        let d = details();
        let facts = CallFacts {
            call_id: "c-1",
            status: "completed",
            row: &row,
            details: Some(&d),
        };
        let cb = crate::event::samples::sample_payload("c-1", "status", "completed");
        let webhook = crate::event::normalize(&cb, BTreeMap::new(), &s, "t".into()).unwrap();
        let ours = status_event(&facts, Family::Callback, &s, "t");
        assert_eq!(ours.event.id, webhook.id);
        assert_eq!(ours.event.ty, webhook.ty);
        assert_eq!(ours.event.callstatus, webhook.callstatus);
        assert_eq!(ours.event.origin.as_deref(), Some("reconcile"));
        assert_eq!(webhook.origin, None);

        let ae = crate::event::samples::sample_agent_event("c-1", "call_completed", "completed");
        let webhook = crate::event::normalize(&ae, BTreeMap::new(), &s, "t".into()).unwrap();
        let ours = status_event(&facts, Family::AgentEvent, &s, "t");
        assert_eq!(ours.event.id, webhook.id);
        assert_eq!(
            ours.event.data.event_type.as_deref(),
            Some("call_completed")
        );
        assert!(ours
            .delivered_as
            .contains(&status_event(&facts, Family::Callback, &s, "t").event.id));

        let ca = crate::event::samples::sample_payload("c-1", "analysis", "completed");
        let webhook = crate::event::normalize(&ca, BTreeMap::new(), &s, "t".into()).unwrap();
        let ours = analysis_events(&facts, Family::Callback, &s, "t");
        assert_eq!(ours.len(), 1);
        assert_eq!(ours[0].event.id, webhook.id);
        assert_eq!(
            ours[0].event.data.analysis.as_ref().unwrap()["summary"],
            "ok"
        );
        assert_eq!(ours[0].event.data.extra["client_analysis"]["lead"], "hot");

        let pa =
            crate::event::samples::sample_agent_event("c-1", "platform_analysis_completed", "");
        let webhook = crate::event::normalize(&pa, BTreeMap::new(), &s, "t".into()).unwrap();
        let ours = analysis_events(&facts, Family::AgentEvent, &s, "t");
        assert_eq!(ours.len(), 2);
        assert_eq!(ours[0].event.id, webhook.id);
        assert_eq!(
            ours[0].event.data.analysis_source,
            Some(AnalysisSource::Platform)
        );
        assert_eq!(
            ours[1].event.data.analysis_source,
            Some(AnalysisSource::Client)
        );
        assert_ne!(ours[0].event.id, ours[1].event.id);
        // A callback analysis delivered counts for both.
        let cb_analysis = analysis_events(&facts, Family::Callback, &s, "t")[0]
            .event
            .id
            .clone();
        assert!(ours.iter().all(|e| e.delivered_as.contains(&cb_analysis)));
    }

    #[test]
    fn the_record_is_filled_from_details_then_the_row() {
        let s = EventSettings::default();
        let row = obj(
            json!({"id": "c-1", "status": "failed", "call_duration": 12.5,
            "call_cost": 3, "agent": {"id": "a-9", "agent_name": "Ava"}, "transcript": "Hi"}),
        );
        let facts = CallFacts {
            call_id: "c-1",
            status: "failed",
            row: &row,
            details: None,
        };
        let ev = status_event(&facts, Family::Callback, &s, "t").event;
        assert_eq!(ev.data.duration_seconds, Some(12.5));
        assert_eq!(ev.data.agent_id.as_deref(), Some("a-9"));
        assert_eq!(ev.data.agent_name.as_deref(), Some("Ava"));
        assert_eq!(ev.data.transcript, Some(json!("Hi")));
        assert_eq!(ev.data.retry, Some(0));
        let d = details();
        let facts = CallFacts {
            details: Some(&d),
            ..facts
        };
        let ev = status_event(&facts, Family::Callback, &s, "t").event;
        assert_eq!(ev.data.direction.as_deref(), Some("outbound"));
        assert_eq!(ev.data.sub_status.as_deref(), Some("ACCEPTED"));
        assert_eq!(ev.data.transcript_turns.as_ref().unwrap().len(), 2);
        assert_eq!(ev.data.extra["callee_name"], "John");
        assert!(ev.data.extra.get("platform_analysis").is_none());
        assert_eq!(ev.data.called_at.as_deref(), Some("2026-11-27T10:00:00Z"));
    }

    #[test]
    fn a_retry_count_from_the_api_is_part_of_the_id() {
        let row = obj(json!({"id": "c-1"}));
        let d = obj(json!({"retry_count": 2}));
        let facts = CallFacts {
            call_id: "c-1",
            status: "completed",
            row: &row,
            details: Some(&d),
        };
        assert_eq!(facts.retry(), 2);
        let ev = status_event(&facts, Family::Callback, &EventSettings::default(), "t").event;
        assert_eq!(ev.id, status_ids("c-1", "completed", 2)[0]);
        assert_ne!(ev.id, status_ids("c-1", "completed", 0)[0]);
        assert!(
            analysis_events(&facts, Family::Callback, &EventSettings::default(), "t").is_empty()
        );
    }
}
