//! The AsyncAPI protocol bindings of a channel and an operation (Kafka topic and key, AMQP
//! exchange and routing key).

use serde_json::{json, Value};

use super::servers::amqp_vhost;
use super::wire::{samples, Protocol};
use crate::event::{EventKind, EventSettings};
use crate::sinks::rabbitmq;

pub(super) const KAFKA_BINDING: &str = "0.5.0";
pub(super) const AMQP_BINDING: &str = "0.3.0";

/// A Kafka channel names its topic; an AMQP one its exchange and routing key.
pub(super) fn channel_bindings(
    protocol: Protocol<'_>,
    name: &str,
    per_call: bool,
) -> Option<Value> {
    match protocol {
        Protocol::Kafka(..) if !per_call => {
            Some(json!({"kafka": {"topic": name, "bindingVersion": KAFKA_BINDING}}))
        }
        Protocol::Amqp(r) => {
            let vhost = amqp_vhost(r);
            if r.exchange.is_empty() {
                return Some(json!({"amqp": {
                    "is": "queue",
                    "queue": {"name": name, "vhost": vhost},
                    "bindingVersion": AMQP_BINDING,
                }}));
            }
            let mut exchange = json!({"name": r.exchange, "vhost": vhost});
            if let Some(d) = &r.declare {
                exchange["type"] = serde_json::to_value(d.exchange_type).unwrap_or(Value::Null);
                exchange["durable"] = json!(d.durable);
                exchange["autoDelete"] = json!(false);
            }
            Some(json!({"amqp": {
                "is": "routingKey",
                "exchange": exchange,
                "bindingVersion": AMQP_BINDING,
            }}))
        }
        _ => None,
    }
}

pub(super) fn operation_bindings(
    protocol: Protocol<'_>,
    settings: &EventSettings,
) -> Option<Value> {
    match protocol {
        Protocol::Amqp(r) => {
            let [full, ..] = samples(EventKind::Status, settings);
            let (_, props) = rabbitmq::message::build_message(r.format, &full, 0);
            Some(json!({"amqp": {
                "deliveryMode": props.delivery_mode().unwrap_or(1),
                // Every publish is mandatory: an unroutable message comes back and fails it.
                "mandatory": true,
                "timestamp": props.timestamp().is_some(),
                "bindingVersion": AMQP_BINDING,
            }}))
        }
        _ => None,
    }
}
