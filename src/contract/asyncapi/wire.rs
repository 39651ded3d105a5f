//! How each sink writes a message, read off the sinks' own encoders: the headers, AMQP
//! properties, record key and content type of one synthetic event, and what each header carries.

use lapin::types::AMQPValue;
use serde_json::{json, Value};

use crate::event::binding::{Format, Headers, Outgoing, ORIGIN_RECONCILE};
use crate::event::{EventKind, EventSettings};
use crate::preflight::{self, Producible};
use crate::sinks::kafka::KafkaSinkSettings;
use crate::sinks::nats::NatsSinkSettings;
use crate::sinks::rabbitmq::RabbitmqSinkSettings;
use crate::sinks::{kafka, nats, rabbitmq};
use crate::template::Template;

/// How one sink writes its messages.
#[derive(Clone, Copy)]
pub(super) enum Protocol<'a> {
    Kafka(&'a KafkaSinkSettings, &'a Template),
    Amqp(&'a RabbitmqSinkSettings),
    Nats(&'a NatsSinkSettings),
    File,
}

/// A message's wire form for one synthetic event: headers, protocol properties (AMQP), the
/// record key (Kafka), the payload's content type.
#[derive(Default)]
pub(super) struct Wire {
    pub(super) headers: Vec<(String, Value)>,
    pub(super) properties: Vec<(String, Value)>,
    pub(super) key: Option<String>,
    pub(super) content_type: Option<String>,
}

impl Protocol<'_> {
    pub(super) fn format(self) -> Format {
        match self {
            Protocol::Kafka(k, _) => k.format,
            Protocol::Amqp(r) => r.format,
            Protocol::Nats(n) => n.format,
            Protocol::File => Format::Structured,
        }
    }

    /// The message the sink writes for `out` (`variant` numbers AMQP's publish sequence).
    pub(super) fn wire(self, out: &Outgoing, variant: u64) -> Wire {
        match self {
            Protocol::Kafka(k, key) => {
                use rdkafka::message::Headers as _;
                let h = kafka::headers(&Headers::KAFKA.encode(k.format, out));
                let headers: Vec<(String, Value)> = h
                    .iter()
                    .map(|h| {
                        let v = String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned();
                        (h.key.to_string(), Value::String(v))
                    })
                    .collect();
                let content_type = headers
                    .iter()
                    .find(|(n, _)| n == "content-type")
                    .and_then(|(_, v)| v.as_str().map(str::to_string));
                Wire {
                    headers,
                    properties: Vec::new(),
                    key: Some(key.render(&out.event)),
                    content_type,
                }
            }
            Protocol::Amqp(r) => {
                let (_, props) = rabbitmq::message::build_message(r.format, out, variant);
                let value = |v: &AMQPValue| match v {
                    AMQPValue::LongString(s) => {
                        Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned())
                    }
                    AMQPValue::ShortString(s) => Value::String(s.as_str().to_string()),
                    AMQPValue::LongLongInt(n) => json!(n),
                    other => Value::String(format!("{other:?}")),
                };
                let headers = props
                    .headers()
                    .as_ref()
                    .map(|t| {
                        t.inner()
                            .iter()
                            .map(|(k, v)| (k.as_str().to_string(), value(v)))
                            .collect()
                    })
                    .unwrap_or_default();
                let short = |s: &Option<lapin::types::ShortString>| {
                    s.as_ref().map(|s| Value::String(s.as_str().to_string()))
                };
                let properties = [
                    ("content_type", short(props.content_type())),
                    ("delivery_mode", props.delivery_mode().map(|m| json!(m))),
                    ("message_id", short(props.message_id())),
                    ("timestamp", props.timestamp().map(|t| json!(t))),
                    ("type", short(props.kind())),
                    ("app_id", short(props.app_id())),
                ]
                .into_iter()
                .filter_map(|(n, v)| v.map(|v| (n.to_string(), v)))
                .collect::<Vec<_>>();
                let content_type = properties
                    .iter()
                    .find(|(n, _)| n == "content_type")
                    .and_then(|(_, v)| v.as_str().map(str::to_string));
                Wire {
                    headers,
                    properties,
                    key: None,
                    content_type,
                }
            }
            Protocol::Nats(n) => {
                let js = n.jetstream.enabled.then_some(n.jetstream.stream.as_deref());
                let (h, _) = nats::message(n.format, js, out);
                let mut headers: Vec<(String, Value)> = h
                    .iter()
                    .filter_map(|(name, values)| {
                        let v = values.first()?.as_str().to_string();
                        Some((name.to_string(), Value::String(v)))
                    })
                    .collect();
                // A hash map: in a stable order for the document.
                headers.sort_by(|a, b| a.0.cmp(&b.0));
                let content_type = match n.format {
                    Format::Binary => Some(out.event.datacontenttype.clone()),
                    Format::Structured => headers
                        .iter()
                        .find(|(n, _)| n == "Content-Type")
                        .and_then(|(_, v)| v.as_str().map(str::to_string)),
                };
                Wire {
                    headers,
                    properties: Vec::new(),
                    key: None,
                    content_type,
                }
            }
            Protocol::File => Wire {
                content_type: Some("application/cloudevents+json".into()),
                ..Wire::default()
            },
        }
    }
}

/// What each attribute header (any binding's prefix) and each other header carries.
pub(super) fn describe_header(name: &str) -> String {
    let attribute = ["ce_", "ce-", "cloudEvents_"]
        .iter()
        .find_map(|p| name.strip_prefix(p));
    let encoded = if name.starts_with("ce-") {
        " Percent-encoded (the CloudEvents NATS binding): decode before use."
    } else {
        ""
    };
    let what = match attribute {
        Some("specversion") => "CloudEvents `specversion`.",
        Some("id") => {
            "CloudEvents `id`: the event id, the same on every redelivery of the same webhook: \
             deduplicate on it."
        }
        Some("source") => "CloudEvents `source` (the configured `event.source`).",
        Some("type") => "CloudEvents `type`: `<type_prefix>.call.<kind>.v1`.",
        Some("subject") => "CloudEvents `subject`: the call id.",
        Some("time") => "CloudEvents `time`: when the bridge received the webhook (RFC 3339).",
        Some("datacontenttype") => "CloudEvents `datacontenttype` of the payload.",
        Some("callstatus") => "Extension `callstatus`: the call status, on events that have one.",
        Some("partitionkey") => "Extension `partitionkey`: the call id.",
        Some("origin") => {
            "Extension `origin`: `reconcile` on an event backfilled from the platform's call \
             API because its webhook never arrived; absent on events from webhooks."
        }
        Some("traceparent") => "Extension `traceparent`: W3C trace context, when traced.",
        _ => match name {
            "traceparent" => {
                "W3C trace context of the publish (for tracing libraries), when traced."
            }
            "content-type" | "Content-Type" => "The payload's content type.",
            "Nats-Msg-Id" => {
                "The event id: JetStream drops a second message with the same id within the \
                 stream's duplicate window."
            }
            "Nats-Expected-Stream" => {
                "The stream the message must be stored in (the server refuses the publish \
                 otherwise)."
            }
            rabbitmq::SEQ_HEADER => {
                "Internal: the bridge's sequence number of this publish, with which it matches \
                 a returned message to its publish. Not the event id; ignore it."
            }
            _ => "",
        },
    };
    format!("{what}{encoded}")
}

/// What each AMQP message property carries.
pub(super) fn describe_property(name: &str) -> String {
    match name {
        "content_type" => "The payload's content type.",
        "delivery_mode" => "2: persistent.",
        "message_id" => "The event id (CloudEvents `id`): deduplicate on it.",
        "timestamp" => "CloudEvents `time`, in whole seconds since the Unix epoch.",
        "type" => "CloudEvents `type`.",
        "app_id" => "The publishing application.",
        _ => "",
    }
    .to_string()
}

/// Three synthetic events of `kind`: two with every optional attribute, differing in every
/// value an event can differ in, and one with none of them.
pub(super) fn samples(kind: EventKind, settings: &EventSettings) -> [Outgoing; 3] {
    let make = |variant: usize, full: bool| {
        let status = full.then_some(["completed", "failed"][variant]);
        let mut e = preflight::synthetic_event(Producible { kind, status }, settings);
        e.id = format!("00000000-0000-8000-8000-00000000000{variant}");
        e.time = ["2026-01-01T00:00:00Z", "2026-02-03T04:05:06Z"][variant].into();
        let call = format!("contract-call-{variant}");
        e.data.call_id = call.clone();
        e.subject = call.clone();
        e.partitionkey = call;
        if full {
            e.origin = Some(ORIGIN_RECONCILE.into());
            e.traceparent = Some(format!(
                "00-0af7651916cd43dd8448eb211c80319{variant}-b7ad6b7169203331-01"
            ));
        }
        Outgoing::new(e)
    };
    [make(0, true), make(1, true), make(0, false)]
}
