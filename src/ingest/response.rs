//! The body of a delivery answer: `{"status", "event_id", "sinks": {NAME: {...}}}`, one entry
//! per sink in configuration order. The fan-out reports what happened; this module decides how
//! the sender sees it: sink names, outcomes, receipts and error codes with a message in our
//! words, never a file path or the broker's own text (whoever can post a webhook would learn
//! our infrastructure from them; the log line of the failure has them).

use serde::Serialize;
use serde_json::{json, Value};

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
    serde_json::to_value(DeliveryBody::new(delivery, status)).unwrap_or_default()
}

/// The answer's body as a borrowing view of the delivery, serialised straight into the response
/// (no intermediate JSON tree: the accepted answer is written once per webhook).
#[derive(Debug, Serialize)]
pub struct DeliveryBody<'a> {
    status: &'a str,
    event_id: &'a str,
    sinks: Sinks<'a>,
}

impl<'a> DeliveryBody<'a> {
    pub fn new(delivery: &'a Delivery, status: &'a str) -> DeliveryBody<'a> {
        DeliveryBody {
            status,
            event_id: &delivery.event_id,
            sinks: Sinks(&delivery.reports),
        }
    }
}

/// `{NAME: SinkStatus}` in the reports' (configuration) order.
#[derive(Debug)]
struct Sinks<'a>(&'a [SinkReport]);

impl Serialize for Sinks<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for r in self.0 {
            map.serialize_entry(&r.name, &SinkStatus::of(r))?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::sinks::SinkError;

    fn report(name: &str, required: bool, outcome: SinkOutcome) -> SinkReport {
        SinkReport {
            name: name.into(),
            kind: "kafka",
            required,
            outcome,
        }
    }

    #[test]
    fn the_answer_lists_every_sink_in_order_with_its_status() {
        let delivery = Delivery {
            event_id: "ev-1".into(),
            reports: vec![
                report(
                    "kafka",
                    true,
                    SinkOutcome::Acked {
                        receipt: Receipt::Kafka {
                            topic: "calls".into(),
                            partition: 2,
                            offset: 7,
                        },
                        latency: Duration::from_micros(2_500),
                    },
                ),
                report("audit", false, SinkOutcome::Skipped),
                report(
                    "amqp",
                    true,
                    SinkOutcome::Failed {
                        error: SinkError::TooLarge("over the frame".into()),
                    },
                ),
            ],
        };
        let written = serde_json::to_string(&DeliveryBody::new(&delivery, "accepted")).unwrap();
        let value: Value = serde_json::from_str(&written).unwrap();
        assert_eq!(
            value.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["status", "event_id", "sinks"]
        );
        assert_eq!(value["status"], "accepted");
        assert_eq!(value["event_id"], "ev-1");
        let sinks = value["sinks"].as_object().unwrap();
        assert_eq!(sinks.keys().collect::<Vec<_>>(), ["kafka", "audit", "amqp"]);
        assert_eq!(sinks["kafka"]["ok"], true);
        assert_eq!(sinks["kafka"]["latency_ms"], 2.5);
        assert_eq!(sinks["kafka"]["receipt"]["offset"], 7);
        assert_eq!(
            sinks["audit"],
            json!({"ok": true, "required": false, "skipped": true})
        );
        assert_eq!(sinks["amqp"]["ok"], false);
        assert_eq!(sinks["amqp"]["error"]["code"], "too_large");
        // The error answer is the same body as a JSON tree.
        assert_eq!(delivery_body(&delivery, "accepted"), value);
    }
}
