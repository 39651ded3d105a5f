//! The body of a delivery answer: `{"status", "event_id", "sinks": {NAME: {...}}}`.

use serde_json::{json, Map, Value};

use crate::fanout::Delivery;

pub fn delivery_body(delivery: &Delivery, status: &str) -> Value {
    let sinks: Map<String, Value> = delivery
        .reports
        .iter()
        .map(|r| (r.name.clone(), json!(r.status())))
        .collect();
    json!({
        "status": status,
        "event_id": delivery.event_id,
        "sinks": sinks,
    })
}
