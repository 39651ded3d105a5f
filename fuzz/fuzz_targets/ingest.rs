//! The ingest path from raw bytes: headers and body → signature check → JSON → normalise →
//! serialise (structured and every binary binding), as a request goes through
//! `ingest::gates` minus the network.
//!
//! Input layout: the first line is the query string, then `name: value` header lines, an empty
//! line, and the body. Input without an empty line is all body (so plain JSON files are seeds).
//!
//! Beyond "no panic, no hang", it asserts what the sinks rely on: the structured event is JSON
//! naming the event's id, `data` is JSON, and NATS header values are printable ASCII.
#![no_main]

use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
use callbridge::ingest::auth::settings::AuthSettings;
use callbridge::event::binding::{Format, Headers, Outgoing};
use callbridge::event::EventSettings;
use callbridge::ingest::auth::Authenticator;
use callbridge::ingest::gates::parse_body;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

struct Fixed {
    auth: Authenticator,
    hmac: Authenticator,
    settings: EventSettings,
}

fn fixed() -> &'static Fixed {
    static F: OnceLock<Fixed> = OnceLock::new();
    F.get_or_init(|| {
        let auth: AuthSettings = serde_json::from_str(
            r#"{"signature": {"scheme": "standard-webhooks",
                "secrets": ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"]}}"#,
        )
        .expect("auth settings");
        let hmac: AuthSettings = serde_json::from_str(
            r#"{"api_keys": {"keys": ["k"]}, "signature": {"scheme": "hmac",
                "secrets": ["s"], "header": "X-Hub-Signature-256", "prefix": "sha256=",
                "timestamp_header": "X-Timestamp"}}"#,
        )
        .expect("hmac settings");
        Fixed {
            auth: Authenticator::new(&auth),
            hmac: Authenticator::new(&hmac),
            settings: EventSettings::default(),
        }
    })
}

fn split(data: &[u8]) -> (&str, HeaderMap, &[u8]) {
    let mut headers = HeaderMap::new();
    let Some(end) = data.windows(2).position(|w| w == b"\n\n") else {
        return ("", headers, data);
    };
    let head = std::str::from_utf8(&data[..end]).unwrap_or("");
    let body = &data[end + 2..];
    let mut lines = head.split('\n');
    let query = lines.next().unwrap_or("");
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            if let (Ok(k), Ok(v)) = (
                HeaderName::from_bytes(k.trim().as_bytes()),
                HeaderValue::from_str(v.trim()),
            ) {
                headers.append(k, v);
            }
        }
    }
    (query, headers, body)
}

fuzz_target!(|data: &[u8]| {
    let f = fixed();
    let (query, headers, body) = split(data);
    // Whatever the headers say, verification answers (almost always a refusal) without panicking.
    let _ = f.auth.check(&headers);
    let _ = f.auth.check_signature_headers(&headers);
    let _ = f.auth.verify_signature(&headers, body);
    let _ = f.hmac.check(&headers);
    let _ = f.hmac.verify_signature(&headers, body);

    let Ok(event) = parse_body(query, body, &f.settings, "2026-01-01T00:00:00Z".into()) else {
        return;
    };
    let id = event.id.clone();
    let out = Outgoing::new(event);
    let structured: serde_json::Value =
        serde_json::from_slice(&out.structured).expect("structured event is JSON");
    assert_eq!(structured["id"].as_str(), Some(id.as_str()));
    serde_json::from_slice::<serde_json::Value>(&out.data).expect("data is JSON");
    for binding in [Headers::KAFKA, Headers::NATS, Headers::AMQP] {
        for format in [Format::Structured, Format::Binary] {
            let m = binding.encode(format, &out);
            assert!(!m.payload.is_empty());
        }
    }
    for (name, value) in Headers::NATS.encode(Format::Binary, &out).attributes {
        assert!(
            value.bytes().all(|b| b.is_ascii_graphic() && b != b'"'),
            "{name}: {value:?}"
        );
    }
});
