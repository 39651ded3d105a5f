//! The CloudEvents protocol bindings, written once for every broker sink.
//!
//! An event travels in one of two modes ([`Format`]): **binary** (payload = `data`, each
//! attribute in a header of its own) or **structured** (payload = the whole event as JSON). The
//! attributes, their order, the content types and the JSON of the structured form are defined
//! here; a sink only picks its protocol's [`Headers`] — the `ce_` prefix of the Kafka binding,
//! the percent-encoded `ce-` of the NATS binding, or the `cloudEvents_` of the AMQP binding —
//! and writes the resulting [`Message`] in its client's types.

use std::borrow::Cow;
use std::fmt::Write as _;

use bytes::Bytes;
use serde::Deserialize;

use super::Event;

/// How the event is laid out in a message: the `format` of every broker sink.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Payload = `data` (JSON); the attributes as headers. Consumers that only want the call
    /// record read the payload as is, and can route on headers without parsing it.
    #[default]
    Binary,
    /// Payload = the whole event as JSON (`application/cloudevents+json`).
    Structured,
}

/// The content type of a structured-mode message.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";

/// One attribute of the envelope: its name and where the event keeps it (`None`: an extension
/// this event does not carry).
struct Attribute {
    name: &'static str,
    value: fn(&Event) -> Option<&str>,
    /// Every event has it (the extensions `callstatus`, `origin` and `traceparent` are optional).
    always: bool,
}

const fn attribute(
    name: &'static str,
    value: fn(&Event) -> Option<&str>,
    always: bool,
) -> Attribute {
    Attribute {
        name,
        value,
        always,
    }
}

/// The attribute names of [`ATTRIBUTES`] with a binding's prefix, spelled out at compile time:
/// the header names are fixed per binding, so no publish formats them.
macro_rules! prefixed {
    ($prefix:literal) => {
        [
            concat!($prefix, "specversion"),
            concat!($prefix, "id"),
            concat!($prefix, "source"),
            concat!($prefix, "type"),
            concat!($prefix, "subject"),
            concat!($prefix, "time"),
            concat!($prefix, "datacontenttype"),
            concat!($prefix, "callstatus"),
            concat!($prefix, "partitionkey"),
            concat!($prefix, "origin"),
            concat!($prefix, "traceparent"),
        ]
    };
}

/// Every attribute but `data`, in the order of the structured form (the fields of [`Event`]).
const ATTRIBUTES: [Attribute; 11] = [
    attribute("specversion", |e| Some(&e.specversion), true),
    attribute("id", |e| Some(&e.id), true),
    attribute("source", |e| Some(&e.source), true),
    attribute("type", |e| Some(&e.ty), true),
    attribute("subject", |e| Some(&e.subject), true),
    attribute("time", |e| Some(&e.time), true),
    attribute(DATACONTENTTYPE, |e| Some(&e.datacontenttype), true),
    attribute("callstatus", |e| e.callstatus.as_deref(), false),
    attribute("partitionkey", |e| Some(&e.partitionkey), true),
    attribute(ORIGIN, |e| e.origin.as_deref(), false),
    attribute("traceparent", |e| e.traceparent.as_deref(), false),
];

const DATACONTENTTYPE: &str = "datacontenttype";
/// The extension attribute that marks an event backfilled by reconciliation.
pub const ORIGIN: &str = "origin";
/// Its value on a backfilled event.
pub const ORIGIN_RECONCILE: &str = "reconcile";

/// Every attribute the event carries, by name, in the order of the structured form.
pub fn attributes(event: &Event) -> impl Iterator<Item = (&'static str, &str)> {
    ATTRIBUTES
        .iter()
        .filter_map(move |a| (a.value)(event).map(|v| (a.name, v)))
}

/// The whole event as JSON, with `data` already serialised: the bytes serde writes for
/// [`Event`], but `data` (the bulk: transcripts) is serialised once for both modes.
fn structured(event: &Event, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 512);
    out.push(b'{');
    for (name, value) in attributes(event) {
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, value);
        out.push(b',');
    }
    out.extend_from_slice(b"\"data\":");
    out.extend_from_slice(data);
    out.push(b'}');
    out
}

/// One event, serialised once and shared by every sink (the bytes are reference-counted).
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub event: Event,
    /// The whole event as JSON: CloudEvents structured mode, and the file sink's line.
    pub structured: Bytes,
    /// `data` alone as JSON: the payload of CloudEvents binary mode.
    pub data: Bytes,
}

impl Outgoing {
    /// Serialises `data` once and splices it into the structured form: the profile showed JSON
    /// escaping as the top cost of publishing.
    pub fn new(event: Event) -> Outgoing {
        // Serialising plain data structs with string keys cannot fail.
        let data = serde_json::to_vec(&event.data).unwrap_or_default();
        let structured = structured(&event, &data);
        Outgoing {
            event,
            structured: Bytes::from(structured),
            data: Bytes::from(data),
        }
    }
}

/// How one protocol binding writes attributes as headers in binary mode.
#[derive(Debug, Clone, Copy)]
pub struct Headers {
    /// Prefix of each attribute's header name.
    prefix: &'static str,
    /// Header values percent-encoded as the HTTP binding does (NATS headers are text lines).
    percent_encode: bool,
    /// `datacontenttype` travels in the protocol's own content type (Kafka's `content-type`
    /// header, AMQP's `content_type` property) instead of a prefixed header.
    own_content_type: bool,
    /// The content type a structured-mode message declares.
    structured_content_type: &'static str,
    /// Each attribute's header name (`prefix` + name), in the order of [`ATTRIBUTES`].
    names: &'static [&'static str; ATTRIBUTES.len()],
}

impl Headers {
    /// The Kafka protocol binding: `ce_<name>` headers; the structured content type names its
    /// charset, as the binding's examples do.
    pub const KAFKA: Headers = Headers {
        prefix: "ce_",
        percent_encode: false,
        own_content_type: true,
        structured_content_type: "application/cloudevents+json; charset=UTF-8",
        names: &prefixed!("ce_"),
    };

    /// The NATS protocol binding: `ce-<name>` headers, values percent-encoded, and
    /// `datacontenttype` a header like the others.
    pub const NATS: Headers = Headers {
        prefix: "ce-",
        percent_encode: true,
        own_content_type: false,
        structured_content_type: STRUCTURED_CONTENT_TYPE,
        names: &prefixed!("ce-"),
    };

    /// The AMQP protocol binding (application properties `cloudEvents_<name>`), so AMQP 1.0
    /// consumers of the same queues (RabbitMQ 4 maps 0-9-1 headers to application properties)
    /// read them natively.
    pub const AMQP: Headers = Headers {
        prefix: "cloudEvents_",
        percent_encode: false,
        own_content_type: true,
        structured_content_type: STRUCTURED_CONTENT_TYPE,
        names: &prefixed!("cloudEvents_"),
    };

    /// The header name of attribute `name`.
    pub fn name(&self, attribute: &str) -> String {
        format!("{}{attribute}", self.prefix)
    }

    /// The parts of `out`'s message in `format`.
    pub fn encode<'a>(&self, format: Format, out: &'a Outgoing) -> Message<'a> {
        let event = &out.event;
        let traceparent = event.traceparent.as_deref();
        match format {
            Format::Structured => Message {
                payload: out.structured.clone(),
                content_type: Some(self.structured_content_type),
                traceparent,
                attributes: Vec::new(),
            },
            Format::Binary => {
                // Attributes every event has first, then the extensions it carries: the order
                // Kafka headers have always had (AMQP and NATS headers are unordered maps).
                let always = ATTRIBUTES.iter().zip(self.names).filter(|(a, _)| a.always);
                let optional = ATTRIBUTES.iter().zip(self.names).filter(|(a, _)| !a.always);
                let attributes = always
                    .chain(optional)
                    .filter(|(a, _)| !(self.own_content_type && a.name == DATACONTENTTYPE))
                    .filter_map(|(a, name)| {
                        let value = (a.value)(event)?;
                        let value = if self.percent_encode {
                            percent_encode(value)
                        } else {
                            Cow::Borrowed(value)
                        };
                        Some((*name, value))
                    })
                    .collect();
                Message {
                    payload: out.data.clone(),
                    content_type: self
                        .own_content_type
                        .then_some(event.datacontenttype.as_str()),
                    traceparent,
                    attributes,
                }
            }
        }
    }
}

/// One event as a message of some protocol, before the sink writes it in its client's types.
#[derive(Debug)]
pub struct Message<'a> {
    pub payload: Bytes,
    /// The message's own content type, where the protocol has one for it: `datacontenttype` in
    /// binary mode, the structured type in structured mode. NATS in binary mode has none
    /// (`datacontenttype` is one of its attribute headers).
    pub content_type: Option<&'a str>,
    /// The W3C trace context, in a `traceparent` header of its own in both modes, for
    /// consumers' tracing libraries (binary mode also has it as an attribute).
    pub traceparent: Option<&'a str>,
    /// Binary mode: every attribute as (header name, value). Structured mode: none.
    pub attributes: Vec<(&'static str, Cow<'a, str>)>,
}

/// Percent-encodes a header value as the CloudEvents NATS (and HTTP) binding asks: space, `"`,
/// `%`, and every byte outside printable ASCII (each UTF-8 byte of a non-ASCII character) become
/// `%XX`; everything else is kept.
pub fn percent_encode(value: &str) -> Cow<'_, str> {
    let keep = |b: u8| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'%';
    if value.bytes().all(keep) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for b in value.bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::test_support::sample_event;

    const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn spliced_structured_form_equals_the_serialised_event() {
        let mut ev = sample_event();
        for (callstatus, traceparent) in [
            (None, None),
            (Some("ongoing".to_string()), Some(TRACEPARENT.to_string())),
        ] {
            ev.callstatus = callstatus;
            ev.traceparent = traceparent;
            let out = Outgoing::new(ev.clone());
            assert_eq!(out.structured, serde_json::to_vec(&ev).unwrap());
            assert_eq!(out.data, serde_json::to_vec(&ev.data).unwrap());
        }
    }

    #[test]
    fn every_attribute_of_the_structured_form_and_no_other() {
        let mut ev = sample_event();
        ev.traceparent = Some(TRACEPARENT.into());
        let structured = serde_json::to_value(&ev).unwrap();
        let names: Vec<&str> = attributes(&ev).map(|(n, _)| n).collect();
        let expected: Vec<&str> = structured
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|k| *k != "data")
            .collect();
        assert_eq!(names, expected);
    }

    #[test]
    fn structured_mode_declares_the_protocols_content_type() {
        let out = Outgoing::new(sample_event());
        for (headers, content_type) in [
            (
                Headers::KAFKA,
                "application/cloudevents+json; charset=UTF-8",
            ),
            (Headers::NATS, STRUCTURED_CONTENT_TYPE),
            (Headers::AMQP, STRUCTURED_CONTENT_TYPE),
        ] {
            let m = headers.encode(Format::Structured, &out);
            assert_eq!(m.payload, out.structured);
            assert_eq!(m.content_type, Some(content_type));
            assert!(m.attributes.is_empty());
        }
    }

    #[test]
    fn binary_mode_lists_always_present_attributes_first() {
        let mut ev = sample_event();
        ev.traceparent = Some(TRACEPARENT.into());
        let out = Outgoing::new(ev);
        let m = Headers::KAFKA.encode(Format::Binary, &out);
        assert_eq!(m.payload, out.data);
        assert_eq!(m.content_type, Some("application/json"));
        assert_eq!(m.traceparent, Some(TRACEPARENT));
        // The full order, with the headers around it, is pinned by the Kafka sink's test.
        let first_optional = m.attributes.iter().position(|(n, _)| *n == "ce_callstatus");
        assert_eq!(first_optional, Some(m.attributes.len() - 2));
        assert_eq!(m.attributes[0].0, "ce_specversion");
        let nats = Headers::NATS.encode(Format::Binary, &out);
        assert_eq!(nats.content_type, None);
        assert!(nats
            .attributes
            .iter()
            .any(|(n, v)| *n == "ce-datacontenttype" && v == "application/json"));
    }

    #[test]
    fn a_backfilled_event_carries_origin_in_every_binding_and_others_do_not() {
        let mut ev = sample_event();
        ev.origin = Some(ORIGIN_RECONCILE.into());
        let out = Outgoing::new(ev.clone());
        let structured: serde_json::Value = serde_json::from_slice(&out.structured).unwrap();
        assert_eq!(structured["origin"], "reconcile");
        assert_eq!(out.structured, serde_json::to_vec(&ev).unwrap());
        let plain = Outgoing::new(sample_event());
        for (headers, name) in [
            (Headers::KAFKA, "ce_origin"),
            (Headers::NATS, "ce-origin"),
            (Headers::AMQP, "cloudEvents_origin"),
        ] {
            let m = headers.encode(Format::Binary, &out);
            assert!(
                m.attributes
                    .iter()
                    .any(|(n, v)| *n == name && v == "reconcile"),
                "{name}: {:?}",
                m.attributes
            );
            let m = headers.encode(Format::Binary, &plain);
            assert!(!m.attributes.iter().any(|(n, _)| *n == name), "{name}");
        }
        let plain: serde_json::Value = serde_json::from_slice(&plain.structured).unwrap();
        assert!(plain.get("origin").is_none());
    }

    #[test]
    fn every_bindings_header_names_are_its_prefix_and_the_attribute() {
        for headers in [Headers::KAFKA, Headers::NATS, Headers::AMQP] {
            for (a, name) in ATTRIBUTES.iter().zip(headers.names) {
                assert_eq!(*name, headers.name(a.name));
            }
        }
    }

    #[test]
    fn percent_encoding_follows_the_binding() {
        assert_eq!(percent_encode("plain-Value_1.2:3/x"), "plain-Value_1.2:3/x");
        assert!(matches!(percent_encode("abc"), Cow::Borrowed(_)));
        assert_eq!(percent_encode("a b"), "a%20b");
        assert_eq!(percent_encode("say \"hi\""), "say%20%22hi%22");
        assert_eq!(percent_encode("100%"), "100%25");
        assert_eq!(percent_encode("tab\there"), "tab%09here");
        assert_eq!(percent_encode("line\r\nbreak"), "line%0D%0Abreak");
        assert_eq!(percent_encode("\u{7f}"), "%7F");
        // Non-ASCII: each UTF-8 byte.
        assert_eq!(percent_encode("é"), "%C3%A9");
        assert_eq!(percent_encode("Euro €"), "Euro%20%E2%82%AC");
        // Printable ASCII other than '"' and '%' stays.
        let printable: String = (0x21u8..=0x7e)
            .filter(|b| *b != b'"' && *b != b'%')
            .map(char::from)
            .collect();
        assert_eq!(percent_encode(&printable), printable);
    }
}
