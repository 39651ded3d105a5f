//! The AMQP message of one event: properties shared by both modes (persistent, `message_id` =
//! event id, `type`, timestamp, `app_id`), and the body and headers of the CloudEvents mode.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;

use super::settings::RabbitmqFormat;
use crate::sinks::Outgoing;

/// CloudEvents attributes travel as AMQP headers with this prefix in binary mode: the prefix of
/// the official CloudEvents AMQP binding (application properties), so AMQP 1.0 consumers of the
/// same queues (RabbitMQ 4 maps 0-9-1 headers to application properties) read them natively.
pub const HEADER_PREFIX: &str = "cloudEvents_";
/// `content_type` of a structured-mode message.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
/// `app_id` of every message.
pub const APP_ID: &str = "callbridge";

/// Builds the message: properties shared by both formats, body and headers by format.
pub(super) fn build_message(
    format: RabbitmqFormat,
    out: &Outgoing,
) -> (bytes::Bytes, BasicProperties) {
    let ev = &out.event;
    let timestamp =
        time::OffsetDateTime::parse(&ev.time, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
            .unix_timestamp()
            .max(0) as u64;
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(ShortString::from(ev.id.as_str()))
        .with_type(ShortString::from(ev.ty.as_str()))
        .with_timestamp(timestamp)
        .with_app_id(ShortString::from(APP_ID));
    // W3C trace context for consumers' tracing libraries, in both modes.
    let mut headers = FieldTable::default();
    if let Some(t) = &ev.traceparent {
        headers.insert(
            ShortString::from("traceparent"),
            AMQPValue::LongString(LongString::from(t.as_str())),
        );
    }
    match format {
        RabbitmqFormat::Structured => {
            let props = props.with_content_type(ShortString::from(STRUCTURED_CONTENT_TYPE));
            let props = if ev.traceparent.is_some() {
                props.with_headers(headers)
            } else {
                props
            };
            (out.structured.clone(), props)
        }
        RabbitmqFormat::Binary => {
            let mut put = |name: &str, value: &str| {
                headers.insert(
                    ShortString::from(format!("{HEADER_PREFIX}{name}")),
                    AMQPValue::LongString(LongString::from(value)),
                );
            };
            put("specversion", &ev.specversion);
            put("id", &ev.id);
            put("source", &ev.source);
            put("type", &ev.ty);
            put("subject", &ev.subject);
            put("time", &ev.time);
            put("partitionkey", &ev.partitionkey);
            if let Some(s) = &ev.callstatus {
                put("callstatus", s);
            }
            if let Some(t) = &ev.traceparent {
                put("traceparent", t);
            }
            (
                out.data.clone(),
                props
                    .with_content_type(ShortString::from(ev.datacontenttype.as_str()))
                    .with_headers(headers),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_structured_messages() {
        let ev = crate::event::test_support::sample_event();
        let out = Outgoing::new(ev.clone());

        let (body, p) = build_message(RabbitmqFormat::Binary, &out);
        assert_eq!(body, out.data);
        assert_eq!(p.delivery_mode(), &Some(2));
        assert_eq!(
            p.message_id().as_ref().map(|s| s.as_str()),
            Some(ev.id.as_str())
        );
        assert_eq!(p.kind().as_ref().map(|s| s.as_str()), Some(ev.ty.as_str()));
        assert_eq!(p.app_id().as_ref().map(|s| s.as_str()), Some(APP_ID));
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        assert!(p.timestamp().unwrap_or(0) > 1_600_000_000);
        let headers = p.headers().clone().unwrap_or_default();
        let h = |k: &str| match headers.inner().get(format!("{HEADER_PREFIX}{k}").as_str()) {
            Some(AMQPValue::LongString(s)) => Some(s.to_string()),
            _ => None,
        };
        assert_eq!(h("id").as_deref(), Some(ev.id.as_str()));
        assert_eq!(h("specversion").as_deref(), Some("1.0"));
        assert_eq!(h("subject").as_deref(), Some(ev.subject.as_str()));
        assert_eq!(h("type").as_deref(), Some(ev.ty.as_str()));
        assert!(h("datacontenttype").is_none(), "travels as content_type");

        let (body, p) = build_message(RabbitmqFormat::Structured, &out);
        assert_eq!(body, out.structured);
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some(STRUCTURED_CONTENT_TYPE)
        );
        assert!(p.headers().is_none());
        assert_eq!(
            p.message_id().as_ref().map(|s| s.as_str()),
            Some(ev.id.as_str())
        );
    }
}
