//! Sample webhooks of both families, shaped like the sender's documented examples: what
//! `callbridge send-test` posts, and what the tests and the benchmark send.

use serde_json::{json, Value};

/// The sender's documented test payload (its curl example), with the call id, status and kind
/// chosen by the user of `send-test`.
pub fn sample_payload(call_id: &str, kind: &str, status: &str) -> Value {
    let mut body = json!({
        "status": "success",
        "data": {
            "call_id": call_id,
            "call_direction": "outbound",
            "status": status,
            "call_duration": 120.5,
            "recording_url": "https://example.com/recording.mp3",
            "transcript": "Hello, this is a test call...",
            "agent_id": "830f767a-397e-4b39-82ff-235cd344e2f9",
            "retry": 0,
            "from_number": "+1987654321",
            "to_number": "+1234567890",
            "custom_args_values": {"callee_name": "John", "company_name": "Acme Corp"}
        },
        "message": "Call Details"
    });
    if kind == "analysis" {
        body["data"]["analysis"] = json!({
            "summary": "Test call: the callee confirmed the details.",
            "sentiment": "positive",
            "call_disconnect_reason": "user_hangup"
        });
        body["message"] = json!("Call Analysis");
    }
    body
}

/// An agent event subscription's payload for `event_type` (`call_started`, `call_completed`,
/// `recording_completed`, `platform_analysis_completed`, `client_analysis_completed`,
/// `all_processing_completed`), shaped like the platform's documented examples.
pub fn sample_agent_event(call_id: &str, event_type: &str, status: &str) -> Value {
    let mut body = json!({
        "event_type": event_type,
        "call_id": call_id,
        "agent_id": "830f767a-397e-4b39-82ff-235cd344e2f9",
        "workspace_id": "9a8b7c6d-5e4f-4321-8765-0fedcba98765",
        "custom_args_values": {"callee_name": "John", "company_name": "Acme Corp"}
    });
    let extra = match event_type {
        "call_started" => json!({"sub_status": "ACCEPTED"}),
        "call_completed" => json!({
            "status": status, "call_duration": 120.5, "call_type": "outbound",
            "from_number": "+1987654321", "to_number": "+1234567890", "retry_count": 0,
            "transcript": [{"bot": "Hello, this is a test call..."}, {"user": "Hi."}]
        }),
        "recording_completed" => json!({"recording_url": "https://example.com/recording.mp3"}),
        "platform_analysis_completed" | "client_analysis_completed" => json!({
            "analysis": {"summary": "Test call: the callee confirmed the details."}
        }),
        "all_processing_completed" => json!({"status": status}),
        _ => json!({}),
    };
    if let (Some(b), Value::Object(e)) = (body.as_object_mut(), extra) {
        b.extend(e);
    }
    body
}
