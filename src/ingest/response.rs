//! The body of a delivery answer: `{"status", "event_id", "sinks": {NAME: {...}}}`, one entry
//! per sink in configuration order. The fan-out reports what happened; this module decides how
//! the sender sees it: sink names, outcomes, receipts and error codes with a message in our
//! words, never a file path or the broker's own text (whoever can post a webhook would learn
//! our infrastructure from them; the log line of the failure has them).

use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::fanout::{Delivery, SinkOutcome, SinkReport, IN_PROGRESS};
use crate::sinks::Receipt;

/// The per-sink entry of the HTTP answer.
#[derive(Debug, Serialize)]
pub struct SinkStatus<'a> {
    pub ok: bool,
    pub required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt: Option<PublicReceipt<'a>>,
    /// Set when the receipt comes from an earlier delivery of the same event.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
    /// An optional sink still publishing when the answer went out; it finishes in the
    /// background.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
    /// Not confirmed by the sink yet, but durably in the spool: the bridge delivers it.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub spooled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<SinkErrorBody>,
}

/// A receipt as the sender sees it: a file sink's without its path (the offset still
/// identifies the line); every other kind whole (topics, exchanges, streams are what the sender
/// routes to, not our machine's layout).
#[derive(Debug)]
pub struct PublicReceipt<'a>(pub &'a Receipt);

impl Serialize for PublicReceipt<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Receipt::File { offset, .. } => json!({ "offset": offset }).serialize(serializer),
            other => other.serialize(serializer),
        }
    }
}

/// Why a sink holds no receipt: a machine-readable code and what it means, in our words.
#[derive(Debug, Serialize)]
pub struct SinkErrorBody {
    pub code: &'static str,
    pub message: String,
}

impl<'a> SinkStatus<'a> {
    pub fn of(report: &'a SinkReport) -> SinkStatus<'a> {
        let mut s = SinkStatus {
            ok: report.is_ok(),
            required: report.required,
            receipt: None,
            duplicate: false,
            skipped: false,
            pending: false,
            spooled: false,
            latency_ms: None,
            error: None,
        };
        match &report.outcome {
            SinkOutcome::Acked { receipt, latency } => {
                s.receipt = Some(PublicReceipt(receipt));
                s.latency_ms = Some((latency.as_secs_f64() * 1e6).round() / 1e3);
            }
            SinkOutcome::AlreadyAcked { receipt } => {
                s.receipt = Some(PublicReceipt(receipt));
                s.duplicate = true;
            }
            SinkOutcome::Skipped => s.skipped = true,
            SinkOutcome::Pending => s.pending = true,
            SinkOutcome::Spooled { cause, .. } => {
                s.spooled = true;
                // Why it was not published now (none: queued behind the call's earlier events).
                s.error = cause.as_ref().map(|e| SinkErrorBody {
                    code: e.code(),
                    message: e.public_message(),
                });
            }
            SinkOutcome::InProgress => {
                s.error = Some(SinkErrorBody {
                    code: IN_PROGRESS,
                    message: "another delivery of this event is still in progress".into(),
                })
            }
            SinkOutcome::Failed { error } => {
                s.error = Some(SinkErrorBody {
                    code: error.code(),
                    message: error.public_message(),
                })
            }
        }
        s
    }
}

pub fn delivery_body(delivery: &Delivery, status: &str) -> Value {
    let sinks: Map<String, Value> = delivery
        .reports
        .iter()
        .map(|r| (r.name.clone(), json!(SinkStatus::of(r))))
        .collect();
    json!({
        "status": status,
        "event_id": delivery.event_id,
        "sinks": sinks,
    })
}
