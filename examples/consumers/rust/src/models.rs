// Example code that deserializes and serializes the model.
// extern crate serde;
// #[macro_use]
// extern crate serde_derive;
// extern crate serde_json;
//
// use generated_module::CallData;
//
// fn main() {
//     let json = r#"{"answer": 42}"#;
//     let model: CallData = serde_json::from_str(&json).unwrap();
// }

use serde::{Serialize, Deserialize};
use std::collections::HashMap;

/// A canonical call event (CloudEvents 1.0, structured JSON form).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallbridgeCallEventV1 {
    /// Extension: the call status, when the webhook carries one.
    pub callstatus: Option<String>,

    pub data: CallData,

    /// Always `application/json`.
    pub datacontenttype: String,

    /// Deterministic: the same webhook (by any replica, on any retry) gets the same id, so it
    /// doubles as the deduplication key downstream. See docs/events.md for the derivation.
    pub id: String,

    /// Extension: `reconcile` on an event the bridge backfilled from the platform's call API
    /// because its webhook never arrived (docs/reconcile.md); absent on events from webhooks.
    /// Consumers that care where an event came from read it without parsing `data`.
    pub origin: Option<String>,

    /// Extension (CloudEvents partitioning): the call id, so one call's events stay in order.
    pub partitionkey: String,

    /// Configured `event.source`, e.g. `/callbridge`.
    pub source: String,

    /// Always `1.0`.
    pub specversion: String,

    /// The call id, so consumers can filter one call's events without parsing `data`.
    pub subject: String,

    /// When the bridge received the webhook (RFC 3339, UTC).
    pub time: String,

    /// Extension (CloudEvents distributed tracing): W3C trace context of the publish.
    pub traceparent: Option<String>,

    /// `<type_prefix>.call.<kind>.v1`, e.g. `ai.ringg.call.status.v1`.
    #[serde(rename = "type")]
    pub callbridge_call_event_v1_type: String,
}

/// The normalised call record. Every field is always present (null when the webhook did not
/// carry it), so consumers can rely on the shape whichever family sent the event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallData {
    pub agent_id: Option<String>,

    pub agent_message_count: Option<i64>,

    pub agent_name: Option<String>,

    /// Analysis results (`data.analysis` or `analysis_data`); null when the event has none.
    pub analysis: Option<HashMap<String, Option<serde_json::Value>>>,

    pub analysis_source: Option<AnalysisSourceEnum>,

    pub bulk_list_id: Option<String>,

    /// `call_cost`, in the platform's billing currency.
    pub call_cost: Option<f64>,

    pub call_id: String,

    /// The telephony provider's call id.
    pub call_sid: Option<String>,

    /// Query parameters of the webhook URL (the sender's `callback_args.params`).
    pub callback_params: HashMap<String, String>,

    /// When the call was placed (`called_on`), as sent.
    pub called_at: Option<String>,

    /// The customer's own `custom_args_values` from the call request.
    pub custom_args: Option<HashMap<String, Option<serde_json::Value>>>,

    /// `inbound`, `outbound`, `webcall`, ... as sent (`call_direction` or `call_type`).
    pub direction: Option<String>,

    /// Call duration in seconds (`call_duration`).
    pub duration_seconds: Option<f64>,

    /// The agent event's `event_type` as sent; null for callback webhooks.
    pub event_type: Option<String>,

    /// Fields the sender sent that this version does not know, kept verbatim. Callback family:
    /// unknown `data.*` fields by name, unknown top-level fields under `_envelope`.
    pub extra: HashMap<String, Option<serde_json::Value>>,

    pub family: Family,

    pub first_utterance_seconds: Option<f64>,

    pub from_number: Option<String>,

    /// The same as the kind in `type`.
    pub kind: Kind,

    /// The sender's descriptive `message`.
    pub message: Option<String>,

    pub overall_latency_seconds: Option<f64>,

    /// `recording_duration`, in seconds.
    pub recording_duration_seconds: Option<f64>,

    pub recording_url: Option<String>,

    /// Which attempt of the call this is (`retry` or `retry_count`).
    pub retry: Option<i64>,

    /// The call status (`registered`, `ongoing`, `completed`, `failed`, `error`, `cancelled`,
    /// `retry`, or any newer status, unchanged).
    pub status: Option<String>,

    /// `call_started`'s `sub_status`, e.g. `ACCEPTED`.
    pub sub_status: Option<String>,

    pub to_number: Option<String>,

    pub tool_call_logs: Option<Vec<Option<serde_json::Value>>>,

    /// The transcript exactly as sent: a string (callback family) or an array of turns.
    pub transcript: Option<serde_json::Value>,

    /// The transcript normalised to turns, whatever its shape on the wire.
    pub transcript_turns: Option<Vec<TranscriptTurnElement>>,

    pub user_message_count: Option<i64>,

    pub version_description: Option<String>,

    pub version_id: Option<String>,

    pub version_slug: Option<String>,

    pub workspace_id: Option<String>,
}

/// `data.analysis` of a callback webhook.
///
/// `platform_analysis_completed`: the platform's own analysis.
///
/// `client_analysis_completed`: the customer's configured prompts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnalysisSourceEnum {
    Callback,

    Client,

    Platform,
}

/// Which of the platform's two webhook mechanisms delivered the event.
///
/// The per-call `callback_url` (`{"status": "success", "data": {...}}`).
///
/// An agent event subscription (flat JSON with `event_type`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    #[serde(rename = "agent_event")]
    AgentEvent,

    Callback,
}

/// The same as the kind in `type`.
///
/// What happened to the call. Part of the CloudEvents `type`, of routing templates and of
/// sinks'
/// `events` filters, and the same whichever webhook family reported it.
///
/// The call started (agent event `call_started`).
///
/// The call's status changed (callback webhook with `data.status`; agent event
/// `call_completed`).
///
/// The recording is ready (agent event `recording_completed`).
///
/// An analysis is ready (callback webhook with `data.analysis`; agent events
/// `platform_analysis_completed`, `client_analysis_completed`); see `analysis_source`.
///
/// Everything about the call is final (agent event `all_processing_completed`).
///
/// An agent event type this version does not know, forwarded unchanged (see `event_type`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Analysis,

    Other,

    Processed,

    Recording,

    Started,

    Status,
}

/// One turn of the conversation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TranscriptTurnElement {
    /// `agent` (sent as `bot`, `assistant` or `agent`), `user` (`user`, `customer`, `human`),
    /// any other role lowercased as sent, or null when the transcript was one plain string.
    pub speaker: Option<String>,

    pub text: String,
}
