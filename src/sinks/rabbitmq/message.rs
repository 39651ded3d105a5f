//! The AMQP message of one event: properties shared by both modes (persistent, `message_id` =
//! event id, `type`, timestamp, `app_id`), and the body and headers of the CloudEvents mode.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::BasicProperties;

use crate::event::binding::{Format, Headers};
use crate::sinks::Outgoing;

/// `app_id` of every message.
pub const APP_ID: &str = "callbridge";

/// The header that carries each publish's sequence number (internal). AMQP gives a returned
/// message no delivery tag and lapin may hand it to another publish's confirm; the returned
/// message brings its headers back, and this number names the publish it belongs to (see
/// `settle.rs`). Not the event id: two deliveries of one event may be in flight at once.
pub const SEQ_HEADER: &str = "x-callbridge-seq";

/// Builds the message: properties shared by both modes, then the CloudEvents AMQP binding's
/// content type, body and `cloudEvents_*` headers, and the publish's sequence number
/// ([`SEQ_HEADER`]; its size does not depend on its value, so a size check may pass 0).
pub fn build_message(format: Format, out: &Outgoing, seq: u64) -> (bytes::Bytes, BasicProperties) {
    let ev = &out.event;
    let timestamp =
        time::OffsetDateTime::parse(&ev.time, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|_| time::OffsetDateTime::now_utc())
            .unix_timestamp()
            .max(0) as u64;
    let mut props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(ShortString::from(ev.id.as_str()))
        .with_type(ShortString::from(ev.ty.as_str()))
        .with_timestamp(timestamp)
        .with_app_id(ShortString::from(APP_ID));
    let message = Headers::AMQP.encode(format, out);
    if let Some(c) = message.content_type {
        props = props.with_content_type(ShortString::from(c));
    }
    let traceparent = message.traceparent.map(|t| ("traceparent", t));
    let attributes = message
        .attributes
        .iter()
        .map(|(name, value)| (*name, value.as_ref()));
    let mut headers = FieldTable::default();
    for (name, value) in traceparent.into_iter().chain(attributes) {
        headers.insert(
            ShortString::from(name),
            AMQPValue::LongString(LongString::from(value)),
        );
    }
    headers.insert(
        ShortString::from(SEQ_HEADER),
        AMQPValue::LongLongInt(seq as i64),
    );
    props = props.with_headers(headers);
    (message.payload, props)
}

/// The sequence number a (returned) message carries, if it carries a readable one.
pub(super) fn seq_of(props: &BasicProperties) -> Option<u64> {
    match props.headers().as_ref()?.inner().get(SEQ_HEADER)? {
        AMQPValue::LongLongInt(n) => Some(*n as u64),
        _ => None,
    }
}

/// The bytes of the content header frame that carries `props`: AMQP sends it as one frame, so
/// it must fit in the connection's `frame_max` (RabbitMQ closes a connection that sends a larger
/// one, failing every publish on it). Frame header 7, class 2, weight 2, body size 8, property
/// flags 2, the properties, frame end 1.
pub(super) fn header_frame_size(props: &BasicProperties) -> usize {
    let short = |s: &Option<ShortString>| s.as_ref().map_or(0, |s| 1 + s.as_str().len());
    let table = props.headers().as_ref().map_or(0, |t| {
        4 + t
            .inner()
            .iter()
            .map(|(k, v)| {
                1 + k.as_str().len()
                    + 1
                    + match v {
                        AMQPValue::LongString(s) => 4 + s.as_bytes().len(),
                        AMQPValue::ShortString(s) => 1 + s.as_str().len(),
                        AMQPValue::LongLongInt(_) => 8,
                        // Only strings are written; anything else is bounded by a few bytes.
                        _ => 16,
                    }
            })
            .sum::<usize>()
    });
    7 + 2
        + 2
        + 8
        + 2
        + short(props.content_type())
        + short(props.content_encoding())
        + table
        + props.delivery_mode().map_or(0, |_| 1)
        + props.priority().map_or(0, |_| 1)
        + short(props.correlation_id())
        + short(props.reply_to())
        + short(props.expiration())
        + short(props.message_id())
        + props.timestamp().map_or(0, |_| 8)
        + short(props.kind())
        + short(props.user_id())
        + short(props.app_id())
        + short(props.cluster_id())
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With the ingest caps (call id 256 bytes, status 64), the largest header set fits in
    /// AMQP's smallest frame (4096 bytes), whatever frame_max the broker negotiates.
    #[test]
    fn the_largest_accepted_headers_fit_the_smallest_frame() {
        let mut ev = crate::event::test_support::sample_event();
        ev.data.call_id = "é".repeat(128);
        ev.subject = ev.data.call_id.clone();
        ev.partitionkey = ev.data.call_id.clone();
        ev.callstatus = Some("s".repeat(64));
        ev.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        let out = Outgoing::new(ev);
        let (_, small) = build_message(
            Format::Binary,
            &Outgoing::new(crate::event::test_support::sample_event()),
            0,
        );
        let (_, large) = build_message(Format::Binary, &out, u64::MAX);
        let size = header_frame_size(&large);
        assert!(size > header_frame_size(&small) + 2 * 240, "{size}");
        assert!(size < 4096, "{size}");
    }

    #[test]
    fn binary_and_structured_messages() {
        let ev = crate::event::test_support::sample_event();
        let out = Outgoing::new(ev.clone());

        let (body, p) = build_message(Format::Binary, &out, 7);
        assert_eq!(seq_of(&p), Some(7));
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
        let h = |k: &str| match headers.inner().get(Headers::AMQP.name(k).as_str()) {
            Some(AMQPValue::LongString(s)) => Some(s.to_string()),
            _ => None,
        };
        assert_eq!(h("id").as_deref(), Some(ev.id.as_str()));
        assert_eq!(h("specversion").as_deref(), Some("1.0"));
        assert_eq!(h("subject").as_deref(), Some(ev.subject.as_str()));
        assert_eq!(h("type").as_deref(), Some(ev.ty.as_str()));
        assert!(h("datacontenttype").is_none(), "travels as content_type");

        let (body, p) = build_message(Format::Structured, &out, u64::MAX - 1);
        assert_eq!(body, out.structured);
        assert_eq!(
            p.content_type().as_ref().map(|s| s.as_str()),
            Some(crate::event::binding::STRUCTURED_CONTENT_TYPE)
        );
        // Only the sequence number: no CloudEvents headers in structured mode.
        let headers = p.headers().clone().unwrap_or_default();
        assert_eq!(headers.inner().len(), 1, "{headers:?}");
        assert_eq!(seq_of(&p), Some(u64::MAX - 1));
        assert_eq!(
            p.message_id().as_ref().map(|s| s.as_str()),
            Some(ev.id.as_str())
        );
    }
}
