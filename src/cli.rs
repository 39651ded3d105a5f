//! What the subcommands do, kept in the library so tests can call it.

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

/// The answer to a `send-test` post.
pub struct SendTestResult {
    pub status: u16,
    pub body: String,
}

/// Posts the sample payload the way the sender does: JSON body, API key header, and (like the
/// sender by default) no Content-Type unless `content_type` is given.
pub async fn send_test(
    url: &str,
    header: &str,
    api_key: Option<&str>,
    payload: &Value,
    timeout: std::time::Duration,
) -> Result<SendTestResult, reqwest::Error> {
    let client = reqwest::Client::builder().timeout(timeout).build()?;
    let mut req = client.post(url).body(payload.to_string());
    if let Some(k) = api_key {
        req = req.header(header, k);
    }
    let resp = req.send().await?;
    let status = resp.status().as_u16();
    let body = resp.text().await?;
    Ok(SendTestResult { status, body })
}
